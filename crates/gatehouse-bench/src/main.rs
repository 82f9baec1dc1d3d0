//! Gatehouse's load benchmark.
//!
//! Run: `bench/run.sh` (or `cargo build --release -p gatehouse -p
//! gatehouse-bench && target/release/gatehouse-bench`). It starts the real
//! `gatehouse serve` (release build, default Argon2 cost) and, in the same
//! run, a bare axum server answering a constant JSON body, loads both over
//! loopback and prints every figure with its goal and ratio. Numbers are
//! printed, never asserted: the figures go in `docs/PERFORMANCE.md`.

mod delegation;
mod engines;
mod load;
#[cfg(feature = "pg-drivers")]
mod pg_drivers;
mod proc;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use gatehouse_core::password::{Argon2Cost, PasswordPolicy};
use load::{FixedGet, FixedPost, Workload};
use proc::{Process, rss_kib};

pub const CONNECTIONS: usize = 64;

/// How long each measured phase runs: `BENCH_SECONDS`, 5 s by default.
fn phase() -> Duration {
    Duration::from_secs(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("baseline") => return baseline().await,
        // `gatehouse-bench pg-drivers URL` (bench/pg-drivers.sh starts a
        // cluster and builds with `--features pg-drivers`).
        #[cfg(feature = "pg-drivers")]
        Some("pg-drivers") if args.len() == 3 => {
            return pg_drivers::run(&args[2], phase()).await;
        }
        #[cfg(not(feature = "pg-drivers"))]
        Some("pg-drivers") => {
            bail!("built without `--features pg-drivers` (bench/pg-drivers.sh builds it)")
        }
        // `gatehouse-bench engines URL` (bench/engines.sh starts a cluster).
        Some("engines") if args.len() == 3 => {
            return engines::run(&args[2], phase()).await;
        }
        Some("delegation") => {
            return delegation::run(phase()).await;
        }
        // `gatehouse-bench load ADDR TOKEN SECONDS`: whoami load on a running
        // server, for profiling it with perf.
        Some("load") if args.len() == 5 => {
            let addr: SocketAddr = args[2].parse()?;
            let n = CONNECTIONS;
            let w: Vec<FixedGet> = (0..n)
                .map(|_| FixedGet {
                    path: "/_matrix/client/v3/account/whoami".into(),
                    bearer: Some(args[3].clone()),
                })
                .collect();
            let r = load::run(addr, w, Duration::from_secs(args[4].parse()?), None).await?;
            println!("{:.0} req/s, {} errors", r.rate(), r.errors);
            return Ok(());
        }
        _ => {}
    }
    let duration = phase();
    let secs = duration.as_secs();
    let gatehouse = proc::sibling_binary("gatehouse")?;
    let me = std::env::current_exe()?;
    let data = tempfile::tempdir()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("Gatehouse benchmark — {cores} cores, {CONNECTIONS} connections, {secs} s per phase");
    println!("binary: {}", gatehouse.display());

    let env = proc::bench_env(data.path());
    proc::admin(
        &gatehouse,
        &env,
        &["user", "create", "bench", "--password", "bench-password"],
    )?;

    // Start-up: exec → first /versions answer, on an existing database.
    let mut starts = Vec::new();
    for _ in 0..7 {
        let t0 = Instant::now();
        let mut p = Process::spawn(&gatehouse, &["serve"], &env)?;
        get_until_ok(p.addr, "/_matrix/client/versions").await?;
        starts.push(t0.elapsed());
        p.stop();
    }
    starts.sort();
    let start_ms = starts[starts.len() / 2].as_secs_f64() * 1000.0;

    let server = Process::spawn(&gatehouse, &["serve"], &env)?;
    let base = Process::spawn(&me, &["baseline"], &[])?;
    get_until_ok(server.addr, "/_matrix/client/versions").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle_rss = rss_kib(server.pid);

    let token = login(server.addr).await?;
    let whoami = |_target: SocketAddr, bearer: Option<String>, n: usize| -> Vec<FixedGet> {
        (0..n)
            .map(|_| FixedGet {
                path: "/_matrix/client/v3/account/whoami".into(),
                bearer: bearer.clone(),
            })
            .collect()
    };

    // Throughput: whoami against the constant-JSON baseline.
    let _ = load::run(
        base.addr,
        whoami(base.addr, None, CONNECTIONS),
        Duration::from_secs(1),
        None,
    )
    .await?;
    let mut b = load::run(
        base.addr,
        whoami(base.addr, None, CONNECTIONS),
        duration,
        None,
    )
    .await?;
    let _ = load::run(
        server.addr,
        whoami(server.addr, Some(token.clone()), CONNECTIONS),
        Duration::from_secs(1),
        None,
    )
    .await?;
    let sampler = proc::RssSampler::start(server.pid);
    let mut w = load::run(
        server.addr,
        whoami(server.addr, Some(token.clone()), CONNECTIONS),
        duration,
        None,
    )
    .await?;
    if std::env::var("BENCH_ONLY").as_deref() == Ok("whoami") {
        println!(
            "baseline {:.0} req/s, whoami {:.0} req/s: {:.2}×",
            b.rate(),
            w.rate(),
            w.rate() / b.rate()
        );
        return Ok(());
    }

    // Latency under a login storm, against the same paced load when idle.
    let paced = |addr| whoami(addr, Some(token.clone()), 4);
    let pace = Some(Duration::from_millis(5));
    let mut idle = load::run(server.addr, paced(server.addr), duration, pace).await?;
    let storm_body = Bytes::from(
        serde_json::json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bench"}, "password": "bench-password"})
            .to_string(),
    );
    let storm: Vec<FixedPost> = (0..cores * 8)
        .map(|_| FixedPost {
            path: "/_matrix/client/v3/login".into(),
            body: storm_body.clone(),
        })
        .collect();
    let (storm_report, under_storm) = tokio::join!(
        load::run(server.addr, storm, duration, None),
        load::run(server.addr, paced(server.addr), duration, pace)
    );
    let (storm_report, mut under_storm) = (storm_report?, under_storm?);
    let hash_ms = one_hash_ms();

    // An unknown user must cost what a wrong password costs.
    let wrong_ms = median_login_ms(server.addr, "bench", "not-the-password").await?;
    let unknown_ms = median_login_ms(server.addr, "nobody-at-all", "not-the-password").await?;
    let ceiling = cores as f64 / (hash_ms / 1000.0);
    let parallel_ceiling = parallel_hashes_per_second(cores);

    // Refresh: one rotating chain per connection.
    let mut chains = Vec::new();
    for _ in 0..CONNECTIONS {
        chains.push(RefreshChain {
            token: login_refreshable(server.addr).await?,
        });
    }
    let mut r = load::run(server.addr, chains, duration, None).await?;

    // Registration with the dummy stage (each one hashes a new password).
    let registrations: Vec<Register> = (0..cores * 8)
        .map(|conn| Register { conn, next: 0 })
        .collect();
    let mut reg = load::run(server.addr, registrations, duration, None).await?;
    let uia_ms = uia_round_trip_ms(server.addr).await?;
    let load_rss = sampler.stop();

    let ratio = w.rate() / b.rate();
    println!();
    row("figure", "value".into(), "goal / ratio".into());
    row(
        "baseline (axum, constant JSON) req/s",
        format!("{:.0}", b.rate()),
        format!(
            "p50 {:.2} ms, p99 {:.2} ms",
            b.percentile_ms(0.5),
            b.percentile_ms(0.99)
        ),
    );
    row(
        "whoami req/s",
        format!("{:.0}", w.rate()),
        format!("{ratio:.2}× baseline (goal ≥ 0.8)"),
    );
    row(
        "whoami p50 / p99 ms",
        format!("{:.2} / {:.2}", w.percentile_ms(0.5), w.percentile_ms(0.99)),
        String::new(),
    );
    row(
        "one argon2id hash (default cost) ms",
        format!("{hash_ms:.1}"),
        format!("ceiling {ceiling:.1} logins/s on {cores} cores"),
    );
    row(
        "login/s (storm)",
        format!("{:.1}", storm_report.rate()),
        format!(
            "{:.2}× ceiling (goal ≥ 0.9), {} errors",
            storm_report.rate() / ceiling,
            storm_report.errors
        ),
    );
    row(
        &format!("  vs {cores} hashes in parallel/s"),
        format!("{parallel_ceiling:.1}"),
        format!(
            "{:.2}× (reference: memory bandwidth is shared)",
            storm_report.rate() / parallel_ceiling
        ),
    );
    let (p_idle, p_storm) = (idle.percentile_ms(0.99), under_storm.percentile_ms(0.99));
    row(
        "whoami p99 idle / under storm ms",
        format!("{p_idle:.2} / {p_storm:.2}"),
        format!("{:.2}× idle (goal ≤ 3)", p_storm / p_idle),
    );
    row(
        "login failure ms: wrong password / unknown user",
        format!("{wrong_ms:.1} / {unknown_ms:.1}"),
        format!("{:.2}× (goal ≈ 1)", unknown_ms / wrong_ms),
    );
    row(
        "refresh/s",
        format!("{:.0}", r.rate()),
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, {} errors",
            r.percentile_ms(0.5),
            r.percentile_ms(0.99),
            r.errors
        ),
    );
    row(
        "registration/s (m.login.dummy)",
        format!("{:.1}", reg.rate()),
        format!(
            "{:.2}× hashing ceiling, p50 {:.1} ms, {} errors",
            reg.rate() / ceiling,
            reg.percentile_ms(0.5),
            reg.errors
        ),
    );
    row(
        "UIA registration round trip ms",
        format!("{uia_ms:.1}"),
        "401 challenge + dummy stage, median of 20".into(),
    );
    row(
        "idle RSS MiB",
        format!("{:.1}", idle_rss as f64 / 1024.0),
        "goal ≤ 15".into(),
    );
    row(
        "peak RSS under load MiB",
        format!("{:.1}", load_rss as f64 / 1024.0),
        String::new(),
    );
    row(
        "exec → first /versions ms (median of 7)",
        format!("{start_ms:.1}"),
        "goal ≤ 20".into(),
    );
    if w.errors > 0 || b.errors > 0 || idle.errors > 0 || under_storm.errors > 0 {
        bail!(
            "unexpected errors: whoami {} baseline {} paced {} / {}",
            w.errors,
            b.errors,
            idle.errors,
            under_storm.errors
        );
    }
    Ok(())
}

pub fn row(name: &str, value: String, note: String) {
    println!("{name:<44} {value:>12}  {note}");
}

/// Time of one verification at the default cost, measured in this process.
fn one_hash_ms() -> f64 {
    let policy = PasswordPolicy::new(Argon2Cost::default(), "").expect("default cost is valid");
    let hash = policy.hash("bench-password");
    // The same operation the server's hashing threads run: a verification
    // reusing its working memory.
    let mut memory = gatehouse_core::password::MemoryBlocks::default();
    let _ = policy.verify_with("bench-password", Some(&hash), &mut memory);
    let mut times: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            let _ = policy.verify_with("bench-password", Some(&hash), &mut memory);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// What the hardware does with every core hashing at once (the cores share
/// memory bandwidth, which a single-hash measurement does not see).
fn parallel_hashes_per_second(cores: usize) -> f64 {
    const EACH: usize = 9;
    let policy = PasswordPolicy::new(Argon2Cost::default(), "").expect("default cost is valid");
    let hash = policy.hash("bench-password");
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..cores {
            scope.spawn(|| {
                let mut memory = gatehouse_core::password::MemoryBlocks::default();
                for _ in 0..EACH {
                    let _ = policy.verify_with("bench-password", Some(&hash), &mut memory);
                }
            });
        }
    });
    (cores * EACH) as f64 / start.elapsed().as_secs_f64()
}

/// Registers `b{conn}x{n}` accounts one after another (unique names).
struct Register {
    conn: usize,
    next: u64,
}

impl Workload for Register {
    fn request(&mut self, host: &str) -> hyper::Request<http_body_util::Full<Bytes>> {
        self.next += 1;
        let body = serde_json::json!({
            "username": format!("b{}x{}", self.conn, self.next),
            "password": "bench-password",
            "inhibit_login": true,
            "auth": {"type": "m.login.dummy"},
        });
        hyper::Request::post("/_matrix/client/v3/register")
            .header("host", host)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from(body.to_string())))
            .expect("valid request")
    }
}

/// One registration through UIA as clients do it: the request without
/// `auth` (a 401 challenge opens a session), then again with the dummy
/// stage and the session (which hashes the password and creates the
/// account). Median of 20, sequential.
async fn uia_round_trip_ms(addr: SocketAddr) -> Result<f64> {
    let mut times = Vec::new();
    for i in 0..20 {
        let body = serde_json::json!({"username": format!("uia{i}"), "password": "bench-password", "inhibit_login": true});
        let t = Instant::now();
        let challenge = post_json(addr, "/_matrix/client/v3/register", body.clone())
            .await
            .expect_err("401 challenge");
        let session = challenge
            .to_string()
            .split("\"session\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .context("session in challenge")?
            .to_owned();
        let mut done = body;
        done["auth"] = serde_json::json!({"type": "m.login.dummy", "session": session});
        post_json(addr, "/_matrix/client/v3/register", done).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

struct RefreshChain {
    token: String,
}

impl Workload for RefreshChain {
    fn request(&mut self, host: &str) -> hyper::Request<http_body_util::Full<Bytes>> {
        hyper::Request::post("/_matrix/client/v3/refresh")
            .header("host", host)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from(format!(
                "{{\"refresh_token\":\"{}\"}}",
                self.token
            ))))
            .expect("valid request")
    }
    fn response(&mut self, status: u16, body: &[u8]) {
        if status == 200
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
            && let Some(t) = v["refresh_token"].as_str()
        {
            self.token = t.to_owned();
        }
    }
}

async fn post_json(
    addr: SocketAddr,
    path: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut w = FixedPost {
        path: path.into(),
        body: Bytes::from(body.to_string()),
    };
    let resp = sender.send_request(w.request(&addr.to_string())).await?;
    let status = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).context("JSON response")?;
    if !status.is_success() {
        bail!("{path}: {status} {v}");
    }
    Ok(v)
}

/// Median time of 15 sequential failed logins (each answered 403).
async fn median_login_ms(addr: SocketAddr, user: &str, password: &str) -> Result<f64> {
    let body = serde_json::json!({"type": "m.login.password", "user": user, "password": password});
    let mut times = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let err = post_json(addr, "/_matrix/client/v3/login", body.clone())
            .await
            .expect_err("login must fail");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if !err.to_string().contains("M_FORBIDDEN") {
            bail!("expected M_FORBIDDEN, got {err}");
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

pub async fn login(addr: SocketAddr) -> Result<String> {
    let v = post_json(addr, "/_matrix/client/v3/login", serde_json::json!({"type": "m.login.password", "user": "bench", "password": "bench-password"})).await?;
    Ok(v["access_token"]
        .as_str()
        .context("access_token")?
        .to_owned())
}

async fn login_refreshable(addr: SocketAddr) -> Result<String> {
    let v = post_json(
        addr,
        "/_matrix/client/v3/login",
        serde_json::json!({"type": "m.login.password", "user": "bench", "password": "bench-password", "refresh_token": true}),
    )
    .await?;
    Ok(v["refresh_token"]
        .as_str()
        .context("refresh_token")?
        .to_owned())
}

pub async fn get_until_ok(addr: SocketAddr, path: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if get_once(addr, path).await.is_ok_and(|status| status == 200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{path} never answered");
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn get_once(addr: SocketAddr, path: &str) -> Result<u16> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut w = FixedGet {
        path: path.into(),
        bearer: None,
    };
    let resp = sender.send_request(w.request(&addr.to_string())).await?;
    Ok(resp.status().as_u16())
}

/// The baseline: the cheapest possible axum JSON endpoint, same runtime shape.
async fn baseline() -> Result<()> {
    let app = axum::Router::new()
        .route(
            "/_matrix/client/v3/account/whoami",
            axum::routing::get(|| async {
                axum::Json(serde_json::json!({"user_id": "@bench:localhost", "device_id": "ABCDEFGHIJ", "is_guest": false}))
            }),
        )
        // The same request as an introspection (a form POST, read whole),
        // with a constant answer of the same shape: what HTTP and the load
        // generator cost, without anything Gatehouse does.
        .route(
            "/oauth2/introspect",
            axum::routing::post(|_body: Bytes| async {
                axum::Json(serde_json::json!({
                    "active": true,
                    "scope": "urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ",
                    "username": "bench",
                    "sub": "@bench:localhost",
                    "device_id": "ABCDEFGHIJ",
                    "token_type": "access_token",
                }))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("Gatehouse listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
