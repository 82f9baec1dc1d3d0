//! `gatehouse-bench delegation`: what delegation costs, against baselines
//! measured in the same run. Started by `bench/delegation.sh`, which brings
//! up a delegating stack (Synapse + Gatehouse) and a Synapse with its own
//! authentication, and passes their addresses in the environment:
//!
//! * `GATEHOUSE_URL`, `HS_SECRET_FILE`: the delegated Gatehouse and the
//!   shared secret (for introspection);
//! * `SYNAPSE_DELEGATED_URL`, `SYNAPSE_OWN_URL`: the two Synapses;
//! * `SYNAPSE_DELEGATED_PID`: the delegating Synapse's process, whose CPU
//!   time per login is what delegation adds to a login;
//! * `OWN_TOKEN`, `OWN_ROOM`, `DELEGATED_ROOM`: an access token of the
//!   own-auth Synapse and a room on each (the delegated user is `bench`,
//!   password `bench-password`, logged in here).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::Full;

use crate::load::{self, FixedGet, FixedPost, Workload};
use crate::proc::{self, Process};

fn env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set (run bench/delegation.sh)"))
}

fn addr_of(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .context("an http:// URL")?
        .trim_end_matches('/');
    Ok(rest.parse()?)
}

/// A POST to the introspection endpoint, as Synapse sends it.
struct Introspect {
    body: Bytes,
    authorization: String,
}

impl Workload for Introspect {
    fn request(&mut self, host: &str) -> hyper::Request<Full<Bytes>> {
        hyper::Request::post("/oauth2/introspect")
            .header("host", host)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", self.authorization.as_str())
            .header("x-mas-supports-device-id", "1")
            .body(Full::new(self.body.clone()))
            .expect("valid request")
    }
}

/// Rounds of each A/B pair: the two sides of a ratio alternate, so a machine
/// that drifts (other work, CPU frequency) weighs on both alike.
const ROUNDS: usize = 3;

/// Runs `a` and `b` alternately, `ROUNDS` times each, and merges the reports.
async fn alternate<A: Workload, B: Workload>(
    (addr_a, make_a): (SocketAddr, &dyn Fn() -> Vec<A>),
    (addr_b, make_b): (SocketAddr, &dyn Fn() -> Vec<B>),
    duration: Duration,
) -> Result<(load::Report, load::Report)> {
    let _ = load::run(addr_a, make_a(), Duration::from_secs(1), None).await?;
    let _ = load::run(addr_b, make_b(), Duration::from_secs(1), None).await?;
    let (mut a, mut b) = (load::Report::default(), load::Report::default());
    for _ in 0..ROUNDS {
        a.merge(load::run(addr_a, make_a(), duration, None).await?);
        b.merge(load::run(addr_b, make_b(), duration, None).await?);
    }
    Ok((a, b))
}

/// CPU seconds (user + system) a process has used so far, from `/proc`.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th of the whole line.
    let rest = stat.rsplit_once(')').context("a /proc stat line")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

pub async fn run(duration: Duration) -> Result<()> {
    let gatehouse = addr_of(&env("GATEHOUSE_URL")?)?;
    let secret = std::fs::read_to_string(env("HS_SECRET_FILE")?)?
        .trim()
        .to_owned();
    let delegated = addr_of(&env("SYNAPSE_DELEGATED_URL")?)?;
    let synapse_pid: u32 = env("SYNAPSE_DELEGATED_PID")?.trim().parse()?;
    let own = addr_of(&env("SYNAPSE_OWN_URL")?)?;
    let own_token = env("OWN_TOKEN")?;
    let (own_room, delegated_room) = (env("OWN_ROOM")?, env("DELEGATED_ROOM")?);
    let connections = crate::CONNECTIONS;
    println!(
        "Delegation benchmark — {} s per phase, each pair alternated {ROUNDS} times",
        duration.as_secs()
    );

    let token = crate::login(gatehouse).await?;

    // Introspection against the bare axum baseline.
    let me = std::env::current_exe()?;
    let base = Process::spawn(&me, &["baseline"], &[])?;
    crate::get_until_ok(base.addr, "/_matrix/client/versions")
        .await
        .ok();
    let baseline_load = || {
        (0..connections)
            .map(|_| FixedGet {
                path: "/_matrix/client/v3/account/whoami".into(),
                bearer: None,
            })
            .collect::<Vec<_>>()
    };
    let introspect = |n: usize| {
        (0..n)
            .map(|_| Introspect {
                body: Bytes::from(format!("token={token}&token_type_hint=access_token")),
                authorization: format!("Bearer {secret}"),
            })
            .collect::<Vec<_>>()
    };
    // Against the same request answered by bare axum: the goal's ratio.
    let (mut b, mut i) = alternate(
        (base.addr, &|| introspect(connections)),
        (gatehouse, &|| introspect(connections)),
        duration,
    )
    .await?;
    // And against the cheapest GET, the baseline of `bench/run.sh`.
    let mut g = load::Report::default();
    for _ in 0..ROUNDS {
        g.merge(load::run(base.addr, baseline_load(), duration, None).await?);
    }
    // Latency at a steady rate a homeserver could send: Synapse introspects
    // only tokens it has not cached, from one process, a few connections at
    // a time. 8 connections, one request every 4 ms each: 2 000/s.
    let mut paced = load::run(
        gatehouse,
        introspect(PACED_CONNECTIONS),
        duration,
        Some(PACED_INTERVAL),
    )
    .await?;

    // A room request on Synapse: delegated auth against its own auth.
    let synapse_connections = 8;
    let room = |room: &str, bearer: &str| {
        (0..synapse_connections)
            .map(|_| FixedGet {
                path: format!("/_matrix/client/v3/rooms/{room}/joined_members"),
                bearer: Some(bearer.to_owned()),
            })
            .collect::<Vec<_>>()
    };
    // A heavier request, where the per-request cost of delegation weighs less.
    let messages = |room: &str, bearer: &str| {
        (0..synapse_connections)
            .map(|_| FixedGet {
                path: format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=20"),
                bearer: Some(bearer.to_owned()),
            })
            .collect::<Vec<_>>()
    };
    let (mut o, mut d) = alternate(
        (own, &|| room(&own_room, &own_token)),
        (delegated, &|| room(&delegated_room, &token)),
        duration,
    )
    .await?;
    let (mut om, mut dm) = alternate(
        (own, &|| messages(&own_room, &own_token)),
        (delegated, &|| messages(&delegated_room, &token)),
        duration,
    )
    .await?;

    // Login: through delegation (each creates the device on Synapse) against
    // a standalone Gatehouse with the same settings and account.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let storm = || {
        let body = Bytes::from(
            serde_json::json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bench"}, "password": "bench-password"})
                .to_string(),
        );
        (0..cores * 8)
            .map(|_| FixedPost {
                path: "/_matrix/client/v3/login".into(),
                body: body.clone(),
            })
            .collect::<Vec<_>>()
    };
    let data = tempfile::tempdir()?;
    let standalone_env = proc::bench_env(data.path());
    let bin = proc::sibling_binary("gatehouse")?;
    proc::admin(
        &bin,
        &standalone_env,
        &["user", "create", "bench", "--password", "bench-password"],
    )?;
    let mut standalone = Process::spawn(&bin, &["serve"], &standalone_env)?;
    crate::get_until_ok(standalone.addr, "/_matrix/client/versions").await?;
    let synapse_cpu_before = cpu_seconds(synapse_pid)?;
    let (s, l) = alternate((standalone.addr, &storm), (gatehouse, &storm), duration).await?;
    // Only the delegated storms reach Synapse: the measured ones and their
    // one-second warm-up (counted at the measured rate).
    let delegated_logins = l.latencies_us.len() as f64 + l.rate();
    let synapse_ms_per_login =
        (cpu_seconds(synapse_pid)? - synapse_cpu_before) * 1000.0 / delegated_logins;
    standalone.stop();
    let standalone_ms_per_login = cores as f64 * 1000.0 / s.rate();
    let ceiling = standalone_ms_per_login / (standalone_ms_per_login + synapse_ms_per_login);

    println!();
    crate::row(
        "baseline GET (axum, constant JSON) req/s",
        format!("{:.0}", g.rate()),
        format!("p99 {:.2} ms", g.percentile_ms(0.99)),
    );
    crate::row(
        "baseline introspection POST (axum) req/s",
        format!("{:.0}", b.rate()),
        format!(
            "p99 {:.2} ms; same request, constant answer",
            b.percentile_ms(0.99)
        ),
    );
    crate::row(
        "introspections/s",
        format!("{:.0}", i.rate()),
        format!(
            "{:.2}× the same-request baseline (goal ≥ 0.8), {:.2}× the GET",
            i.rate() / b.rate(),
            i.rate() / g.rate()
        ),
    );
    crate::row(
        "introspection p50 / p99 ms, saturated",
        format!("{:.2} / {:.2}", i.percentile_ms(0.5), i.percentile_ms(0.99)),
        format!(
            "{connections} connections; the baseline's own p99 {:.2} ms",
            b.percentile_ms(0.99)
        ),
    );
    crate::row(
        "introspection p50 / p99 ms, 2 000/s",
        format!(
            "{:.2} / {:.2}",
            paced.percentile_ms(0.5),
            paced.percentile_ms(0.99)
        ),
        format!(
            "goal p99 ≤ 2 ms; {PACED_CONNECTIONS} connections, {:.0} req/s",
            paced.rate()
        ),
    );
    crate::row(
        "Synapse room request/s, own auth",
        format!("{:.0}", o.rate()),
        format!("p99 {:.1} ms", o.percentile_ms(0.99)),
    );
    crate::row(
        "Synapse room request/s, delegated",
        format!("{:.0}", d.rate()),
        format!(
            "{:.2}× own auth (goal ≥ 0.95), p99 {:.1} ms",
            d.rate() / o.rate(),
            d.percentile_ms(0.99)
        ),
    );
    crate::row(
        "Synapse /messages/s, own auth / delegated",
        format!("{:.0} / {:.0}", om.rate(), dm.rate()),
        format!(
            "{:.2}× own auth, p99 {:.1} / {:.1} ms",
            dm.rate() / om.rate(),
            om.percentile_ms(0.99),
            dm.percentile_ms(0.99)
        ),
    );
    crate::row(
        "login/s standalone",
        format!("{:.1}", s.rate()),
        format!(
            "{} errors; {standalone_ms_per_login:.1} CPU ms per login",
            s.errors
        ),
    );
    crate::row(
        "login/s through delegation",
        format!("{:.1}", l.rate()),
        format!(
            "{:.2}× standalone (goal ≥ 0.8), {} errors",
            l.rate() / s.rate(),
            l.errors
        ),
    );
    crate::row(
        "Synapse CPU ms per delegated login",
        format!("{synapse_ms_per_login:.1}"),
        format!(
            "its upsert_device; ceiling on these cores {ceiling:.2}× standalone, reached {:.2}",
            l.rate() / s.rate() / ceiling
        ),
    );
    if i.errors + b.errors + g.errors + o.errors + d.errors + om.errors + dm.errors + paced.errors
        > 0
    {
        bail!(
            "unexpected errors: introspect {} baseline {} own {} delegated {} paced {}",
            i.errors,
            b.errors,
            o.errors,
            d.errors,
            paced.errors
        );
    }
    Ok(())
}

/// The steady introspection load: connections, and each one's interval.
const PACED_CONNECTIONS: usize = 8;
const PACED_INTERVAL: Duration = Duration::from_millis(4);
