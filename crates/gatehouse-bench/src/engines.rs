//! `gatehouse-bench engines URL` (run by `bench/engines.sh`, which starts a
//! durable PostgreSQL cluster on loopback): the same server on SQLite and
//! on PostgreSQL — one instance and two — in one run, then `whoami` read
//! from the store with 1k users against 1M users and 10M tokens. Figures
//! and ratios are printed, never asserted (docs/PERFORMANCE.md).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::load::{self, FixedGet, FixedPost, Report};
use crate::proc::{self, Process};
use crate::{CONNECTIONS, RefreshChain, get_until_ok, login_refreshable};

/// Users (each with 10 access tokens) of the large database, unless
/// `BENCH_SCALE_USERS` says otherwise.
const SCALE_USERS: i64 = 1_000_000;
/// Users of the small database.
const SMALL_USERS: i64 = 1_000;

/// The throughput of one setup, in requests per second.
struct Figures {
    whoami_cached: f64,
    whoami_store: f64,
    login: f64,
    refresh: f64,
}

pub async fn run(pg_url: &str, duration: Duration) -> Result<()> {
    let gatehouse = proc::sibling_binary("gatehouse")?;
    let secs = duration.as_secs();
    println!(
        "Engines — {CONNECTIONS} connections, {secs} s per phase; SQLite durability=full, PostgreSQL fsync=on, synchronous_commit=on"
    );
    let sqlite = tempfile::tempdir()?;
    let pg = database(pg_url, "engines").await?;
    let sqlite_figures = setup(&gatehouse, sqlite.path(), None, 1, duration).await?;
    let pg_data = tempfile::tempdir()?;
    let pg_figures = setup(&gatehouse, pg_data.path(), Some(&pg), 1, duration).await?;
    let pg2_figures = setup(&gatehouse, pg_data.path(), Some(&pg), 2, duration).await?;
    println!();
    println!(
        "{:<34}{:>12}{:>14}{:>10}{:>16}{:>10}",
        "req/s", "SQLite", "PostgreSQL", "×SQLite", "PostgreSQL ×2", "×SQLite"
    );
    type Row = (&'static str, fn(&Figures) -> f64);
    let rows: [Row; 4] = [
        ("whoami (token cache)", |f| f.whoami_cached),
        ("whoami (from the store, no cache)", |f| f.whoami_store),
        ("login (Argon2id, default cost)", |f| f.login),
        ("refresh (rotation, one write)", |f| f.refresh),
    ];
    for (name, get) in rows {
        let (s, p, p2) = (get(&sqlite_figures), get(&pg_figures), get(&pg2_figures));
        println!(
            "{name:<34}{s:>12.0}{p:>14.0}{:>9.2}×{p2:>16.0}{:>9.2}×",
            p / s,
            p2 / s
        );
    }

    let users = std::env::var("BENCH_SCALE_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SCALE_USERS);
    println!();
    println!(
        "whoami from the store (no cache), {SMALL_USERS} users / {} tokens → {users} users / {} tokens (goal: within 10%)",
        SMALL_USERS * 10,
        users * 10
    );
    scale(&gatehouse, None, pg_url, users, duration).await?;
    scale(&gatehouse, Some(pg_url), pg_url, users, duration).await?;
    Ok(())
}

/// A new database `name` on the cluster at `url`; its URL.
async fn database(url: &str, name: &str) -> Result<String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    // One statement each: CREATE DATABASE refuses to run in a transaction.
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let slash = url.rfind('/').context("URL without a database")?;
    Ok(format!("{}/{name}", &url[..slash]))
}

fn env(data: &Path, url: Option<&str>, cache_ms: u32) -> Vec<(String, String)> {
    let mut env = proc::bench_env(data);
    if let Some(url) = url {
        env.push(("GATEHOUSE_DATABASE__URL".into(), url.into()));
    }
    env.push((
        "GATEHOUSE_TOKENS__CACHE_TTL_MS".into(),
        cache_ms.to_string(),
    ));
    env
}

/// `instances` servers on one database; the figures of load spread evenly
/// over them.
async fn setup(
    gatehouse: &Path,
    data: &Path,
    url: Option<&str>,
    instances: usize,
    duration: Duration,
) -> Result<Figures> {
    let cached = env(data, url, 2000);
    if instances == 1 {
        proc::admin(
            gatehouse,
            &cached,
            &["user", "create", "bench", "--password", "bench-password"],
        )?;
    }
    let uncached = env(data, url, 0);
    let mut servers = Vec::new();
    for _ in 0..instances {
        servers.push(Process::spawn(gatehouse, &["serve"], &cached)?);
    }
    for s in &servers {
        get_until_ok(s.addr, "/_matrix/client/versions").await?;
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let token = crate::login(addrs[0]).await?;
    let whoami_cached = spread(&addrs, duration, |_, _| whoami(&token)).await?;
    let login_body = bytes::Bytes::from(
        serde_json::json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bench"}, "password": "bench-password"})
            .to_string(),
    );
    let login = spread(&addrs, duration, |_, _| FixedPost {
        path: "/_matrix/client/v3/login".into(),
        body: login_body.clone(),
    })
    .await?;
    // A chain per connection and phase: the warm-up uses its chains up.
    let mut chains = Vec::new();
    for i in 0..2 * CONNECTIONS {
        chains.push(login_refreshable(addrs[i % addrs.len()]).await?);
    }
    let refresh = spread(&addrs, duration, |phase, i| RefreshChain {
        token: chains[phase * CONNECTIONS + i].clone(),
    })
    .await?;
    drop(servers);
    let mut servers = Vec::new();
    for _ in 0..instances {
        servers.push(Process::spawn(gatehouse, &["serve"], &uncached)?);
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let whoami_store = spread(&addrs, duration, |_, _| whoami(&token)).await?;
    let name = match (url, instances) {
        (None, _) => "SQLite".to_owned(),
        (Some(_), n) => format!("PostgreSQL ×{n}"),
    };
    println!(
        "{name}: whoami {whoami_cached:.0} req/s cached, {whoami_store:.0} from the store; login {login:.0}/s; refresh {refresh:.0}/s"
    );
    Ok(Figures {
        whoami_cached,
        whoami_store,
        login,
        refresh,
    })
}

fn whoami(token: &str) -> FixedGet {
    FixedGet {
        path: "/_matrix/client/v3/account/whoami".into(),
        bearer: Some(token.to_owned()),
    }
}

/// [`CONNECTIONS`] connections, dealt round-robin over `addrs`, all at
/// once, after a one-second warm-up; the total rate. `make(phase, i)`
/// builds connection `i`'s workload for the warm-up (phase 0) and for the
/// measured run (phase 1): a workload that uses up what it is given (a
/// refresh chain) gets fresh state for each.
async fn spread<W: load::Workload>(
    addrs: &[SocketAddr],
    duration: Duration,
    make: impl Fn(usize, usize) -> W,
) -> Result<f64> {
    for (phase, length) in [Duration::from_secs(1), duration].into_iter().enumerate() {
        let mut runs = Vec::new();
        for (n, &addr) in addrs.iter().enumerate() {
            let work: Vec<W> = (0..CONNECTIONS)
                .filter(|i| i % addrs.len() == n)
                .map(|i| make(phase, i))
                .collect();
            runs.push(load::run(addr, work, length, None));
        }
        let mut total = Report::default();
        for r in futures_join(runs).await {
            total.merge(r?);
        }
        if phase == 1 {
            if total.errors > 0 {
                println!("  ({} errors in this phase)", total.errors);
            }
            return Ok(total.latencies_us.len() as f64 / duration.as_secs_f64());
        }
    }
    unreachable!("the loop returns on its last phase")
}

async fn futures_join<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("load task"));
    }
    out
}

/// `whoami` from the store on a small database and on one of `users`
/// users and ten times as many access tokens, side by side: both servers
/// run at once and are loaded in turn, three rounds each, the best round
/// of each kept (this VM's throughput wanders by ±10% over minutes, as
/// much as the goal allows).
async fn scale(
    gatehouse: &Path,
    url: Option<&str>,
    pg_url: &str,
    users: i64,
    duration: Duration,
) -> Result<()> {
    let mut servers = Vec::new();
    let mut dirs = Vec::new();
    for (size, name) in [(SMALL_USERS, "scale_small"), (users, "scale_large")] {
        let dir = tempfile::tempdir()?;
        let db = match url {
            Some(_) => Some(database(pg_url, name).await?),
            None => None,
        };
        let env = env(dir.path(), db.as_deref(), 0);
        proc::admin(
            gatehouse,
            &env,
            &["user", "create", "bench", "--password", "bench-password"],
        )?;
        let t0 = Instant::now();
        fill(dir.path(), db.as_deref(), 0, size).await?;
        if size == users {
            println!(
                "  {} filled with {users} users / {} tokens in {:.0} s",
                if url.is_some() {
                    "PostgreSQL"
                } else {
                    "SQLite"
                },
                users * 10,
                t0.elapsed().as_secs_f64()
            );
        }
        let server = Process::spawn(gatehouse, &["serve"], &env)?;
        get_until_ok(server.addr, "/_matrix/client/versions").await?;
        // One token per connection: the lookups are spread over the index.
        let mut tokens = Vec::new();
        for _ in 0..CONNECTIONS {
            tokens.push(crate::login(server.addr).await?);
        }
        servers.push((server, tokens));
        dirs.push(dir);
    }
    let (mut small, mut large) = (0f64, 0f64);
    for _ in 0..3 {
        for (i, (server, tokens)) in servers.iter().enumerate() {
            let rate = spread(&[server.addr], duration, |_, c| whoami(&tokens[c])).await?;
            let best = if i == 0 { &mut small } else { &mut large };
            *best = best.max(rate);
        }
    }
    let name = if url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!(
        "{name:<11} {small:>8.0} req/s → {large:>8.0} req/s: {:.2}×",
        large / small
    );
    Ok(())
}

/// Adds users `from..to` (`@fNNNNNNNN:localhost`), each with ten access
/// tokens whose hashes are consecutive numbers (inserted in index order, so
/// filling takes minutes, not hours; a lookup's cost is the same).
async fn fill(data: &Path, url: Option<&str>, from: i64, to: i64) -> Result<()> {
    const BATCH: i64 = 200_000;
    // One connection for the whole fill (SQLite: one per batch, on the
    // blocking pool).
    let client = match url {
        Some(url) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Some(client)
        }
        None => None,
    };
    let mut start = from;
    while start < to {
        let end = (start + BATCH).min(to);
        match &client {
            Some(client) => {
                client
                    .execute(
                        "INSERT INTO users (user_id, created_ts)
                         SELECT '@f' || lpad(i::text, 8, '0') || ':localhost', 0
                         FROM generate_series($1::bigint, $2::bigint - 1) i",
                        &[&start, &end],
                    )
                    .await?;
                client
                    .execute(
                        "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts)
                         SELECT decode(lpad(to_hex(i), 64, '0'), 'hex'),
                                '@f' || lpad((i / 10)::text, 8, '0') || ':localhost', 'D', 0
                         FROM generate_series($1::bigint * 10, $2::bigint * 10 - 1) i",
                        &[&start, &end],
                    )
                    .await?;
            }
            None => {
                let path = data.join("gatehouse.sqlite");
                tokio::task::spawn_blocking(move || -> Result<()> {
                    let mut conn = rusqlite::Connection::open(path)?;
                    conn.busy_timeout(Duration::from_secs(30))?;
                    let tx = conn.transaction()?;
                    tx.execute(
                        "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?2)
                         INSERT INTO users (user_id, created_ts)
                         SELECT '@f' || printf('%08d', i) || ':localhost', 0 FROM n",
                        [start, end],
                    )?;
                    tx.execute(
                        "WITH RECURSIVE n(i) AS (SELECT ?1 * 10 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?2 * 10)
                         INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts)
                         SELECT unhex(printf('%064x', i)), '@f' || printf('%08d', i / 10) || ':localhost', 'D', 0 FROM n",
                        [start, end],
                    )?;
                    tx.commit()?;
                    Ok(())
                })
                .await??;
            }
        }
        start = end;
    }
    if let Some(client) = &client {
        client.batch_execute("VACUUM ANALYZE").await?;
    }
    Ok(())
}
