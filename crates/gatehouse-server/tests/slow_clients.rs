//! Clients that hold connections open: a request head that never ends, a
//! connection that never sends anything, an idle keep-alive connection, and
//! one address opening connection after connection. Real sockets on
//! 127.0.0.1, with short limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use gatehouse_core::SystemClock;
use gatehouse_server::listener::{self, ConnectionLimits};
use gatehouse_server::{AppState, Config, router};
use gatehouse_store::SqliteStore;
use gatehouse_store::sqlite::Durability;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const VERSIONS: &[u8] = b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n";

struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// A server whose `[http]` section is `header_ms`, `idle_ms`, `cap`.
async fn start(header_ms: u64, idle_ms: u64, cap: usize) -> TestServer {
    let mut config = Config::default();
    config.http.header_read_timeout_ms = header_ms;
    config.http.idle_timeout_ms = idle_ms;
    config.http.max_connections_per_address = cap;
    config.validate().unwrap();
    let limits = ConnectionLimits::from_config(&config);
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"), Durability::Normal).unwrap();
    let app = router(AppState::new(
        config,
        Arc::new(store),
        Arc::new(SystemClock),
    ));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(listener::serve(tcp, app, limits, async {
        let _ = stopped.await;
    }));
    TestServer {
        addr,
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

/// Reads one response (head and `Content-Length` body): status and JSON.
async fn read_response(stream: &mut TcpStream) -> (u16, serde_json::Value) {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before a response: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .expect("a Content-Length");
        while buf.len() < head_end + length {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-body");
            buf.extend_from_slice(&chunk[..n]);
        }
        let json = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
        (status, json)
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a response in time")
}

/// What the server sent until it closed the connection, or `None` if it
/// is still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let drain = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(within, drain).await.ok().map(|()| got)
}

async fn versions(stream: &mut TcpStream) -> (u16, serde_json::Value) {
    stream.write_all(VERSIONS).await.unwrap();
    read_response(stream).await
}

#[tokio::test]
async fn a_normal_request_gets_its_json() {
    let server = start(300, 500, 4).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let (status, json) = versions(&mut s).await;
    assert_eq!(status, 200);
    let list = json["versions"].as_array().expect("a versions array");
    assert!(list.iter().any(|v| v.is_string()), "{json}");
    // Keep-alive: a second request on the same connection.
    let (status, again) = versions(&mut s).await;
    assert_eq!((status, again), (200, json));
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off() {
    let server = start(300, 5000, 4).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let got = read_until_closed(&mut s, Duration::from_secs(2))
        .await
        .expect("closed within 2 s");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "closed by the timeout, not at once"
    );
    assert!(!got.starts_with(b"HTTP/1.1 200"), "not served");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_cut_off() {
    // hyper's header timer starts when the connection opens, not at its
    // first byte.
    let server = start(300, 5000, 4).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(2))
        .await
        .expect("closed within 2 s");
    assert!(got.is_empty());
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    // A long header timeout: the idle timeout is what closes it.
    let server = start(5000, 300, 4).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(versions(&mut s).await.0, 200);
    let started = Instant::now();
    let got = read_until_closed(&mut s, Duration::from_secs(2))
        .await
        .expect("closed within 2 s");
    assert!(got.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn the_header_timeout_also_bounds_the_wait_for_the_next_request() {
    // What `listener` relies on from hyper (>= 1.4): its header read timer
    // starts when it begins waiting for a head, keep-alive waits included.
    let server = start(300, 5000, 4).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(versions(&mut s).await.0, 200);
    let got = read_until_closed(&mut s, Duration::from_secs(2))
        .await
        .expect("closed within 2 s, well before the idle timeout");
    assert!(got.is_empty());
}

#[tokio::test]
async fn a_busy_keep_alive_connection_stays_open() {
    // Each request restarts both clocks: 6 requests 200 ms apart outlast
    // the 400 ms limits.
    let server = start(400, 400, 4).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..6 {
        assert_eq!(versions(&mut s).await.0, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn connections_are_capped_per_address() {
    let server = start(5000, 5000, 4).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        assert_eq!(versions(&mut s).await.0, 200);
        open.push(s);
    }
    // The fifth is closed as soon as it is accepted; a request on it (if
    // the write even succeeds) gets nothing.
    let mut fifth = TcpStream::connect(server.addr).await.unwrap();
    let _ = fifth.write_all(VERSIONS).await;
    let got = read_until_closed(&mut fifth, Duration::from_secs(2))
        .await
        .expect("the fifth connection is closed");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    // The four are still served.
    for s in &mut open {
        assert_eq!(versions(s).await.0, 200);
    }
    // Once one closes, its slot is free again.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let _ = s.write_all(VERSIONS).await;
        let served = tokio::time::timeout(Duration::from_millis(300), async {
            let mut first = [0u8; 12];
            s.read_exact(&mut first).await.is_ok() && &first == b"HTTP/1.1 200"
        })
        .await
        .unwrap_or(false);
        if served {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed after a close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let mut server = start(5000, 5000, 4).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(versions(&mut idle).await.0, 200);
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    let body = br#"{"type": "m.login.password"}"#;
    busy.write_all(
        format!(
            "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    busy.write_all(&body[..5]).await.unwrap();
    // Let the request reach its handler, then shut down.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.stop.take().unwrap().send(()).unwrap();
    // The idle connection is closed; the busy one is not (yet).
    let got = read_until_closed(&mut idle, Duration::from_secs(2))
        .await
        .expect("idle connection closed at shutdown");
    assert!(got.is_empty());
    assert!(!server.task.is_finished());
    busy.write_all(&body[5..]).await.unwrap();
    let (status, json) = read_response(&mut busy).await;
    assert!((400..500).contains(&status), "{status} {json}");
    assert!(json["errcode"].is_string(), "{json}");
    read_until_closed(&mut busy, Duration::from_secs(2))
        .await
        .expect("closed after its response");
    tokio::time::timeout(Duration::from_secs(2), server.task)
        .await
        .expect("serve returns once every connection is done")
        .unwrap();
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "no longer listening"
    );
}
