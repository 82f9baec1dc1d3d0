//! `gatehouse-bench delegation`: what delegation costs, against baselines
//! measured in the same run. Started by `bench/delegation.sh`, which brings
//! up a delegating stack (Synapse + Gatehouse) and a Synapse with its own
//! authentication, and passes their addresses in the environment:
//!
//! * `GATEHOUSE_URL`, `HS_SECRET_FILE`: the delegated Gatehouse and the
//!   shared secret (for introspection);
//! * `SYNAPSE_DELEGATED_URL`, `SYNAPSE_OWN_URL`: the two Synapses;
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

pub async fn run(duration: Duration) -> Result<()> {
    let gatehouse = addr_of(&env("GATEHOUSE_URL")?)?;
    let secret = std::fs::read_to_string(env("HS_SECRET_FILE")?)?
        .trim()
        .to_owned();
    let delegated = addr_of(&env("SYNAPSE_DELEGATED_URL")?)?;
    let own = addr_of(&env("SYNAPSE_OWN_URL")?)?;
    let own_token = env("OWN_TOKEN")?;
    let (own_room, delegated_room) = (env("OWN_ROOM")?, env("DELEGATED_ROOM")?);
    let connections = crate::CONNECTIONS;
    println!("Delegation benchmark — {} s per phase", duration.as_secs());

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
    let _ = load::run(base.addr, baseline_load(), Duration::from_secs(1), None).await?;
    let mut b = load::run(base.addr, baseline_load(), duration, None).await?;
    let introspect = || {
        (0..connections)
            .map(|_| Introspect {
                body: Bytes::from(format!("token={token}&token_type_hint=access_token")),
                authorization: format!("Bearer {secret}"),
            })
            .collect::<Vec<_>>()
    };
    let _ = load::run(gatehouse, introspect(), Duration::from_secs(1), None).await?;
    let mut i = load::run(gatehouse, introspect(), duration, None).await?;

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
    let _ = load::run(
        own,
        room(&own_room, &own_token),
        Duration::from_secs(1),
        None,
    )
    .await?;
    let mut o = load::run(own, room(&own_room, &own_token), duration, None).await?;
    let _ = load::run(
        delegated,
        room(&delegated_room, &token),
        Duration::from_secs(1),
        None,
    )
    .await?;
    let mut d = load::run(delegated, room(&delegated_room, &token), duration, None).await?;
    let mut om = load::run(own, messages(&own_room, &own_token), duration, None).await?;
    let mut dm = load::run(delegated, messages(&delegated_room, &token), duration, None).await?;

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
    let s = load::run(standalone.addr, storm(), duration, None).await?;
    standalone.stop();
    let l = load::run(gatehouse, storm(), duration, None).await?;

    println!();
    crate::row(
        "baseline (axum, constant JSON) req/s",
        format!("{:.0}", b.rate()),
        format!("p99 {:.2} ms", b.percentile_ms(0.99)),
    );
    crate::row(
        "introspections/s",
        format!("{:.0}", i.rate()),
        format!("{:.2}× baseline (goal ≥ 0.8)", i.rate() / b.rate()),
    );
    crate::row(
        "introspection p50 / p99 ms",
        format!("{:.2} / {:.2}", i.percentile_ms(0.5), i.percentile_ms(0.99)),
        "goal p99 ≤ 2 ms".into(),
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
        format!("{} errors", s.errors),
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
    if i.errors + b.errors + o.errors + d.errors + om.errors + dm.errors > 0 {
        bail!(
            "unexpected errors: introspect {} baseline {} own {} delegated {}",
            i.errors,
            b.errors,
            o.errors,
            d.errors
        );
    }
    Ok(())
}
