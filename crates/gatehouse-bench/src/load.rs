//! A closed-loop HTTP/1.1 load generator over keep-alive connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use tokio::net::TcpStream;

/// What one request looks like; `next` may change it from the last response
/// (a refresh chain feeds each new refresh token into the next request).
pub trait Workload: Send + 'static {
    fn request(&mut self, host: &str) -> Request<Full<Bytes>>;
    fn response(&mut self, _status: u16, _body: &[u8]) {}
}

/// The same GET with the same headers each time.
pub struct FixedGet {
    pub path: String,
    pub bearer: Option<String>,
}

impl Workload for FixedGet {
    fn request(&mut self, host: &str) -> Request<Full<Bytes>> {
        let mut b = Request::get(self.path.as_str()).header("host", host);
        if let Some(t) = &self.bearer {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(Full::new(Bytes::new())).expect("valid request")
    }
}

/// A POST of a fixed JSON body.
pub struct FixedPost {
    pub path: String,
    pub body: Bytes,
}

impl Workload for FixedPost {
    fn request(&mut self, host: &str) -> Request<Full<Bytes>> {
        Request::post(self.path.as_str())
            .header("host", host)
            .header("content-type", "application/json")
            .body(Full::new(self.body.clone()))
            .expect("valid request")
    }
}

/// Latencies and counts of one run.
#[derive(Default)]
pub struct Report {
    pub latencies_us: Vec<u32>,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Report {
    /// Adds another run of the same workload (rates become the combined rate).
    pub fn merge(&mut self, other: Report) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.elapsed += other.elapsed;
    }
    pub fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64()
    }
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let idx = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[idx]) / 1000.0
    }
}

/// Runs `connections` connections, each driving its own workload in a
/// closed loop (or paced, one request per `pace`) for `duration`.
pub async fn run<W: Workload>(
    addr: SocketAddr,
    workloads: Vec<W>,
    duration: Duration,
    pace: Option<Duration>,
) -> Result<Report> {
    let start = Instant::now();
    let deadline = start + duration;
    let host = Arc::new(addr.to_string());
    let mut tasks = Vec::new();
    for mut w in workloads {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            let connect = async || -> Result<_> {
                let stream = TcpStream::connect(addr).await.context("connect")?;
                stream.set_nodelay(true)?;
                let io = hyper_util::rt::TokioIo::new(stream);
                let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(conn);
                Ok(sender)
            };
            let mut sender = connect().await?;
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut next = Instant::now();
            while Instant::now() < deadline {
                if let Some(p) = pace {
                    tokio::time::sleep_until(next.into()).await;
                    next += p;
                }
                let t0 = Instant::now();
                // A connection the server closed counts as an error, and
                // the client reconnects (as a real one would).
                let answered = async {
                    let resp = sender.send_request(w.request(&host)).await?;
                    let status = resp.status().as_u16();
                    let body = resp.into_body().collect().await?.to_bytes();
                    anyhow::Ok((status, body))
                }
                .await;
                let Ok((status, body)) = answered else {
                    errors += 1;
                    sender = connect().await?;
                    continue;
                };
                let us = t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                if (200..300).contains(&status) {
                    lat.push(us);
                } else {
                    errors += 1;
                }
                w.response(status, &body);
            }
            anyhow::Ok((lat, errors))
        }));
    }
    let mut report = Report::default();
    for t in tasks {
        let (lat, errors) = t.await??;
        report.latencies_us.extend(lat);
        report.errors += errors;
    }
    report.elapsed = start.elapsed();
    Ok(report)
}
