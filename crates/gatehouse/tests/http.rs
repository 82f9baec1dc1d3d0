//! HTTP-level behaviour: errors for every malformed request, CORS, body
//! limits, rate limits, metrics, and what the logs must never contain.

mod common;

use common::{Server, assert_error, s};
use serde_json::json;

#[tokio::test]
async fn malformed_requests_get_matrix_errors() {
    let server = Server::start(&[]);
    let login = server.url("/_matrix/client/v3/login");
    let raw = |body: &'static str| {
        server
            .http
            .post(&login)
            .header("content-type", "application/json")
            .body(body)
    };
    assert_error(&server.send(raw("{not json")).await, 400, "M_NOT_JSON");
    assert_error(&server.send(raw("")).await, 400, "M_NOT_JSON");
    assert_error(&server.send(raw("[1,2]")).await, 400, "M_BAD_JSON");
    assert_error(&server.send(raw("\"x\"")).await, 400, "M_BAD_JSON");
    assert_error(
        &server
            .send(server.http.post(&login).body(vec![0xff, 0xfe]))
            .await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &server.get("/_matrix/client/v3/nowhere", None).await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_error(&server.get("/", None).await, 404, "M_UNRECOGNIZED");
    assert_error(
        &server.send(server.http.delete(&login)).await,
        405,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &server.get("/_matrix/client/v3/refresh", None).await,
        405,
        "M_UNRECOGNIZED",
    );
    let big = format!(
        "{{\"type\":\"m.login.password\",\"password\":\"{}\"}}",
        "x".repeat(100_000)
    );
    assert_error(
        &server.send(server.http.post(&login).body(big)).await,
        413,
        "M_TOO_LARGE",
    );
    // A body that lies about (omits) its length is still cut off.
    let stream = futures_stream(200_000);
    assert_error(
        &server.send(server.http.post(&login).body(stream)).await,
        413,
        "M_TOO_LARGE",
    );
}

fn futures_stream(n: usize) -> reqwest::Body {
    // A chunked body: no Content-Length header is sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::spawn(async move {
        let _ = tx.send(Ok(b"{\"type\":\"".to_vec())).await;
        for _ in 0..(n / 10_000) {
            if tx.send(Ok(vec![b'a'; 10_000])).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(b"\"}".to_vec())).await;
    });
    reqwest::Body::wrap_stream(tokio_stream_from(rx))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn cors_on_every_response_and_options_answered() {
    let server = Server::start(&[]);
    for req in [
        server.http.get(server.url("/_matrix/client/versions")),
        server.http.get(server.url("/_matrix/client/v3/unknown")),
        server.http.request(
            reqwest::Method::OPTIONS,
            server.url("/_matrix/client/v3/login"),
        ),
        server
            .http
            .request(
                reqwest::Method::OPTIONS,
                server.url("/_matrix/client/v3/account/whoami"),
            )
            .header("Origin", "https://app.example")
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "authorization"),
    ] {
        let resp = req.send().await.unwrap();
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(
            h["access-control-allow-methods"],
            "GET, POST, PUT, DELETE, OPTIONS"
        );
        assert_eq!(
            h["access-control-allow-headers"],
            "X-Requested-With, Content-Type, Authorization"
        );
    }
    // OPTIONS runs no endpoint logic: no token needed, no 401.
    let resp = server
        .http
        .request(
            reqwest::Method::OPTIONS,
            server.url("/_matrix/client/v3/logout"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn login_rate_limits_per_address_and_per_account() {
    let server = Server::start(&[
        ("GATEHOUSE_TRUST_X_FORWARDED_FOR", "true"),
        (
            "GATEHOUSE_RATE_LIMITS__LOGIN_PER_ADDRESS__PER_SECOND",
            "0.5",
        ),
        ("GATEHOUSE_RATE_LIMITS__LOGIN_PER_ADDRESS__BURST_COUNT", "3"),
        (
            "GATEHOUSE_RATE_LIMITS__FAILED_LOGINS_PER_ACCOUNT__PER_SECOND",
            "0.5",
        ),
        (
            "GATEHOUSE_RATE_LIMITS__FAILED_LOGINS_PER_ACCOUNT__BURST_COUNT",
            "2",
        ),
    ]);
    server.create_user("alice", "pw", &[]);
    let attempt = |ip: &'static str, pw: &'static str| {
        server
            .http
            .post(server.url("/_matrix/client/v3/login"))
            .header("X-Forwarded-For", ip)
            .json(&json!({"type": "m.login.password", "user": "alice", "password": pw}))
    };
    // Only the entry the proxy appended counts: a forged first entry
    // does not give a fresh address.
    let forged = |n: usize| {
        server
            .http
            .post(server.url("/_matrix/client/v3/login"))
            .header("X-Forwarded-For", format!("192.0.2.{n}, 10.0.9.9"))
            .json(&json!({"type": "m.login.password", "user": "alice", "password": "pw"}))
    };
    for n in 0..3 {
        assert_eq!(server.send(forged(n)).await.0, 200);
    }
    assert_error(&server.send(forged(3)).await, 429, "M_LIMIT_EXCEEDED");
    // Per address: three attempts, then 429 with Retry-After.
    for _ in 0..3 {
        assert_eq!(server.send(attempt("10.0.0.1", "pw")).await.0, 200);
    }
    let resp = attempt("10.0.0.1", "pw").send().await.unwrap();
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    let ms = body["retry_after_ms"].as_u64().unwrap();
    assert!(
        (1..=2000).contains(&ms) && retry_after == ms.div_ceil(1000),
        "{ms} ms vs Retry-After {retry_after}"
    );
    // Failures, per address and account: two wrong passwords from one
    // address, then even the right password from it is held back — but
    // the owner, elsewhere, is not locked out by them.
    assert_error(
        &server.send(attempt("10.0.0.2", "bad")).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.send(attempt("10.0.0.2", "bad")).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.send(attempt("10.0.0.2", "pw")).await,
        429,
        "M_LIMIT_EXCEEDED",
    );
    assert_eq!(
        server.send(attempt("10.0.0.4", "pw")).await.0,
        200,
        "another address is not held back by them"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        server.send(attempt("10.0.0.2", "pw")).await.0,
        200,
        "the bucket drains"
    );
}

#[tokio::test]
async fn metrics_are_served_only_where_configured() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let server = Server::start(&[("GATEHOUSE_METRICS_LISTEN", &addr)]);
    server.create_user("alice", "pw", &[]);
    server.login("alice", "pw", json!({})).await;
    let _ = server
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "user": "alice", "password": "no"}),
        )
        .await;
    assert_error(&server.get("/metrics", None).await, 404, "M_UNRECOGNIZED");
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("gatehouse_logins_total{outcome=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("gatehouse_logins_total{outcome=\"failed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("route=\"/_matrix/client/v3/login\""),
        "{text}"
    );
    assert!(text.contains("status=\"403\""), "{text}");
    assert!(
        text.contains("gatehouse_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let server = Server::start(&[("GATEHOUSE_LOG_FILTER", "trace")]);
    let password = "correct-horse-battery-staple";
    server.create_user("alice", password, &[]);
    let login = server
        .login("alice", password, json!({"refresh_token": true}))
        .await;
    let _ = server
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "user": "alice", "password": "wrong-password-xyz"}),
        )
        .await;
    let (_, r) = server
        .post(
            "/_matrix/client/v3/refresh",
            json!({"refresh_token": s(&login, "refresh_token")}),
        )
        .await;
    server.whoami(&s(&r, "access_token")).await;
    let at = s(&r, "access_token");
    let _ = server
        .send(
            server
                .http
                .post(server.url(&format!("/_matrix/client/api/v1/logout?access_token={at}")))
                .json(&json!({})),
        )
        .await;
    let logs = server.logs();
    assert!(logs.contains("session started"), "logging works: {logs}");
    for secret in [
        password,
        "wrong-password-xyz",
        &s(&login, "access_token"),
        &s(&login, "refresh_token"),
        &at,
    ] {
        assert!(!logs.contains(secret), "secret leaked into logs");
    }
    for fragment in ["ghat_", "ghrt_"] {
        assert!(
            !logs.contains(fragment),
            "a token prefix appears in the logs"
        );
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let server = Server::start(&[
        ("GATEHOUSE_LOG_FORMAT", "json"),
        ("GATEHOUSE_LOG_FILTER", "debug"),
    ]);
    server.create_user("alice", "pw", &[]);
    server.login("alice", "pw", json!({})).await;
    let logs = server.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{logs}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(
        logs.contains("\"route\":\"/_matrix/client/v3/login\""),
        "request logs carry the route: {logs}"
    );
}

/// Limits that count only an outcome (a failed login) are reserved before
/// the work: thirty wrong passwords sent at once against a burst of 3 get
/// three 403s, and the rest 429 — not thirty password checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_failed_logins_cannot_pass_the_burst_together() {
    let server = Server::start(&[
        ("GATEHOUSE_TRUST_X_FORWARDED_FOR", "true"),
        // Attempts (not failures) per account are out of the way: what is
        // tested is the failure count, which is known only after the check.
        (
            "GATEHOUSE_RATE_LIMITS__LOGIN_PER_ACCOUNT__PER_SECOND",
            "1000",
        ),
        (
            "GATEHOUSE_RATE_LIMITS__LOGIN_PER_ACCOUNT__BURST_COUNT",
            "1000",
        ),
        (
            "GATEHOUSE_RATE_LIMITS__FAILED_LOGINS_PER_ACCOUNT__PER_SECOND",
            "0.001",
        ),
        (
            "GATEHOUSE_RATE_LIMITS__FAILED_LOGINS_PER_ACCOUNT__BURST_COUNT",
            "3",
        ),
    ]);
    server.create_user("alice", "pw", &[]);
    let attempts = (0..30).map(|_| {
        // All from one address (its own limits raised by base_env): the
        // failures are counted per address and account.
        server.send(
            server
                .http
                .post(server.url("/_matrix/client/v3/login"))
                .header("X-Forwarded-For", "10.1.0.1")
                .json(&json!({"type": "m.login.password", "user": "alice", "password": "bad"})),
        )
    });
    let answers = futures_util::future::join_all(attempts).await;
    let checked = answers.iter().filter(|(status, _)| *status == 403).count();
    let limited = answers.iter().filter(|(status, _)| *status == 429).count();
    println!(
        "30 parallel wrong passwords, burst 3: {checked} checked (403), {limited} limited (429)"
    );
    assert_eq!(checked, 3, "{answers:?}");
    assert_eq!(limited, 27);
    // A right password from that address, while its failures stay
    // counted, is held back too; from another address it is not.
    let right = |ip: &'static str| {
        server.send(
            server
                .http
                .post(server.url("/_matrix/client/v3/login"))
                .header("X-Forwarded-For", ip)
                .json(&json!({"type": "m.login.password", "user": "alice", "password": "pw"})),
        )
    };
    assert_error(&right("10.1.0.1").await, 429, "M_LIMIT_EXCEEDED");
    assert_eq!(right("10.1.0.2").await.0, 200);
}

/// A malformed query string is a Matrix error like any other defect, not
/// the framework's `text/plain`.
#[tokio::test]
async fn query_string_errors_are_matrix_json() {
    let server = Server::start(&[("GATEHOUSE_REGISTRATION__ENABLED", "true")]);
    for (method, path) in [
        ("POST", "/_matrix/client/v3/register?kind=user&kind=guest"),
        (
            "GET",
            "/_matrix/client/v3/register/available?username=a&username=b",
        ),
        (
            "GET",
            "/_matrix/client/v1/register/m.login.registration_token/validity?token=a&token=b",
        ),
    ] {
        let req = match method {
            "POST" => server.http.post(server.url(path)).json(&json!({})),
            _ => server.http.get(server.url(path)),
        };
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(kind, "application/json", "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["errcode"], "M_INVALID_PARAM", "{path}: {body}");
    }
    // Registration open, but with no token stage: no token is valid.
    let (status, v) = server
        .get(
            "/_matrix/client/v1/register/m.login.registration_token/validity?token=nope",
            None,
        )
        .await;
    assert_eq!((status, v), (200, json!({"valid": false})));
}

/// The emailed validation link is read by a person: a mangled one gets the
/// HTML page, never the framework's `text/plain`.
#[tokio::test]
async fn a_mangled_validation_link_gets_a_page() {
    let server = Server::start(&[]);
    let resp = server
        .http
        .get(server.url("/_gatehouse/threepid/validate?sid=a&sid=b"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/html"), "{kind}");
    let page = resp.text().await.unwrap();
    assert!(page.contains("Link not valid"), "{page}");
}
