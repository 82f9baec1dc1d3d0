//! The accept loop of the client API: the axum router served by hyper's
//! HTTP/1 connection builder, with the connection limits `axum::serve` does
//! not offer. HTTP/1.1 only, as before (axum's `http2` feature is off);
//! hyper-util's `auto` builder would also add h2c, whose protocol detection
//! has no timeout at all (hyperium/hyper#3962).
//!
//! * **Header read timeout** — hyper's own
//!   ([`hyper::server::conn::http1::Builder::header_read_timeout`], with a
//!   [`TokioTimer`]). Since hyper 1.4 its clock starts whenever the
//!   connection begins waiting for a request head — when the connection
//!   opens, and again after each response on a keep-alive connection — and
//!   stops once the head is parsed; when it runs out the connection is
//!   closed, without a response. So it also bounds how long an idle
//!   keep-alive connection is kept, and a connection that sends nothing.
//!   (Checked in hyper 1.12's `proto/h1/conn.rs`, `poll_read_head`;
//!   `tests/slow_clients.rs` pins it.)
//! * **Idle timeout** — hyper has none, so a small watchdog per connection:
//!   once no request has been in flight (from the service call until its
//!   response body is dropped, i.e. written out) for `idle_timeout`, the
//!   connection is shut down gracefully (hyper closes an idle connection at
//!   once). Between requests the smaller of the two timeouts applies.
//! * **Connections per address** — counted here, keyed like the rate limits
//!   (an IPv6 client by its /64); over the cap a new connection is closed as
//!   soon as it is accepted.
//!
//! Graceful shutdown works as with `axum::serve`: the listener closes, every
//! connection is asked to finish (in-flight requests complete, idle
//! connections close) and `serve` returns when all have.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::serve::Listener;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::config::Config;
use crate::ratelimit::address_key;

/// The limits every connection is served under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a request head may take to arrive, counted from when the
    /// server starts waiting for it (see the module documentation).
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Connections open at once per client address; `None`: no cap.
    pub max_per_address: Option<usize>,
}

impl ConnectionLimits {
    /// The limits of the `[http]` section. Behind a reverse proxy
    /// (`trust_x_forwarded_for`) every connection comes from the proxy, so
    /// connections are not capped per address there.
    pub fn from_config(config: &Config) -> Self {
        let http = &config.http;
        Self {
            header_read_timeout: Duration::from_millis(http.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(http.idle_timeout_ms),
            max_per_address: (http.max_connections_per_address > 0
                && !config.trust_x_forwarded_for)
                .then_some(http.max_connections_per_address),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then waits for
/// the open connections to finish. Handlers can extract
/// `ConnectInfo<SocketAddr>` (the TCP peer), as with
/// `into_make_service_with_connect_info`.
pub async fn serve(
    mut listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let per_address = limits
        .max_per_address
        .map(|max| Arc::new(PerAddress::new(max)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        // axum's `Listener` impl retries failed accepts (and logs them).
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = Listener::accept(&mut listener) => accepted,
        };
        // Reap the connections that ended, so the set does not grow.
        while connections.try_join_next().is_some() {}
        let slot = match &per_address {
            None => None,
            Some(limiter) => match limiter.try_open(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(%peer, "too many connections from this address; closed");
                    drop(stream);
                    continue;
                }
            },
        };
        connections.spawn(serve_connection(
            builder.clone(),
            stream,
            peer,
            app.clone(),
            limits,
            stop_rx.clone(),
            slot,
        ));
    }
    drop(listener);
    // Ignored error: no connection left to tell.
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    builder: http1::Builder,
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
    // Held for as long as the connection is open.
    _slot: Option<Slot>,
) {
    let (in_flight, in_flight_rx) = watch::channel(0usize);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let request = InFlight::start(&in_flight);
        let app = app.clone();
        async move {
            let response = app.oneshot(req).await?;
            // The request stays in flight until hyper drops the body,
            // once it is written out (or the connection is gone).
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _in_flight = &request;
                    frame
                }))
            }))
        }
    });
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let mut idle = pin!(idle_watchdog(in_flight_rx, limits.idle_timeout));
    let mut stop = pin!(async move {
        // An error (the sender gone) means stop as well.
        let _ = stop.wait_for(|stop| *stop).await;
    });
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut idle, if !closing => {
                tracing::debug!(%peer, "idle connection closed");
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut stop, if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Completes once no request has been in flight for `idle`.
async fn idle_watchdog(mut in_flight: watch::Receiver<usize>, idle: Duration) {
    loop {
        // The count now, not its changes: a whole request can come and go
        // before this is first polled.
        let changed = if *in_flight.borrow_and_update() > 0 {
            Ok(in_flight.changed().await)
        } else {
            tokio::time::timeout(idle, in_flight.changed()).await
        };
        match changed {
            Err(_elapsed) => return,
            Ok(Ok(())) => {}
            // The connection is gone; nothing left to watch.
            Ok(Err(_closed)) => std::future::pending().await,
        }
    }
}

/// One request in flight on a connection, counted until dropped.
struct InFlight(watch::Sender<usize>);

impl InFlight {
    fn start(count: &watch::Sender<usize>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Open connections per client address key. Only addresses with an open
/// connection have an entry, so the map is as large as the connections.
struct PerAddress {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// An open connection counted in [`PerAddress`]; dropping it uncounts it.
struct Slot {
    limiter: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    fn new(max: usize) -> Self {
        Self {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for a new connection from `ip`, or `None` past the cap.
    fn try_open(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let key = address_key(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.get(&key).copied().unwrap_or(0);
        if count >= self.max {
            return None;
        }
        open.insert(key, count + 1);
        Some(Slot {
            limiter: Arc::clone(self),
            key,
        })
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .limiter
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_address_and_released() {
        let limiter = Arc::new(PerAddress::new(2));
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        let first = limiter.try_open(a).unwrap();
        let second = limiter.try_open(a).unwrap();
        assert!(limiter.try_open(a).is_none());
        let other = limiter.try_open(b).unwrap();
        assert_eq!(limiter.entries(), 2);
        drop(first);
        let third = limiter.try_open(a).unwrap();
        drop((second, third, other));
        assert_eq!(limiter.entries(), 0, "no entry is left at zero");
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_clock_runs_only_with_no_request_in_flight() {
        let (count, watched) = watch::channel(0usize);
        let idle = Duration::from_secs(1);
        let start = tokio::time::Instant::now();
        idle_watchdog(watched.clone(), idle).await;
        assert_eq!(start.elapsed(), idle);
        // A request in flight holds it off however long it takes.
        let request = InFlight::start(&count);
        let watchdog = tokio::spawn(idle_watchdog(watched, idle));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!watchdog.is_finished());
        drop(request);
        let start = tokio::time::Instant::now();
        watchdog.await.unwrap();
        assert_eq!(start.elapsed(), idle);
        assert_eq!(*count.borrow(), 0);
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let limiter = Arc::new(PerAddress::new(1));
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _slot = limiter.try_open(one).unwrap();
        assert!(limiter.try_open(same_64).is_none());
        assert!(limiter.try_open(other_64).is_some());
    }
}
