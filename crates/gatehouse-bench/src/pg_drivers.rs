//! `gatehouse-bench pg-drivers URL`: the PostgreSQL driver for Gatehouse,
//! chosen by measurement (decision 0014), as SQLite's was (0003).
//!
//! tokio-postgres (through a deadpool pool) against sqlx, on the two
//! statements the store runs most: a token lookup by hash (every request
//! that misses the token cache) and a one-row insert in a transaction (a
//! login's write). Same cluster, same pool size, same concurrency; the two
//! drivers alternate, twice each, so that drift hits both alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

/// Connections in each driver's pool (the server's default would be this order).
const POOL: usize = 8;
/// Requests in flight at once.
const CONCURRENCY: usize = 32;
/// Rows in the token table.
const ROWS: i64 = 100_000;

const LOOKUP: &str = "SELECT user_id, device_id, expires_at FROM bench_tokens WHERE hash = $1";
const INSERT: &str =
    "INSERT INTO bench_tokens (hash, user_id, device_id, expires_at) VALUES ($1, $2, $3, $4)";

pub async fn run(url: &str, duration: Duration) -> Result<()> {
    let setup = setup(url).await?;
    println!(
        "PostgreSQL drivers — {POOL} connections, {CONCURRENCY} in flight, {} s per run, {ROWS} rows",
        duration.as_secs()
    );
    let tp = tokio_postgres_pool(url)?;
    let sx = sqlx::postgres::PgPoolOptions::new()
        .max_connections(u32::try_from(POOL)?)
        .connect(url)
        .await
        .context("sqlx connect")?;
    let keys = Arc::new(setup);
    let mut figures: Vec<(&str, &str, f64)> = Vec::new();
    for round in 0..2 {
        for (driver, workload) in [
            ("tokio-postgres", "lookup"),
            ("sqlx", "lookup"),
            ("tokio-postgres", "insert"),
            ("sqlx", "insert"),
        ] {
            let rate = match (driver, workload) {
                ("tokio-postgres", "lookup") => tp_lookup(&tp, &keys, duration).await?,
                ("sqlx", "lookup") => sx_lookup(&sx, &keys, duration).await?,
                ("tokio-postgres", _) => tp_insert(&tp, round, duration).await?,
                _ => sx_insert(&sx, round, duration).await?,
            };
            println!("  round {round}: {driver:>14} {workload:<6} {rate:>9.0} /s");
            figures.push((driver, workload, rate));
        }
    }
    for workload in ["lookup", "insert"] {
        let best = |driver: &str| {
            figures
                .iter()
                .filter(|(d, w, _)| *d == driver && *w == workload)
                .map(|(_, _, r)| *r)
                .fold(0.0, f64::max)
        };
        let (tp_rate, sx_rate) = (best("tokio-postgres"), best("sqlx"));
        println!(
            "{workload:<6}: tokio-postgres {tp_rate:.0}/s, sqlx {sx_rate:.0}/s — sqlx at {:.2}× tokio-postgres",
            sx_rate / tp_rate
        );
    }
    Ok(())
}

/// The table, filled; returns the hashes to look up.
async fn setup(url: &str) -> Result<Vec<Vec<u8>>> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connect")?;
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS bench_tokens;
             CREATE TABLE bench_tokens (
               hash bytea PRIMARY KEY, user_id text NOT NULL,
               device_id text NOT NULL, expires_at bigint);
             INSERT INTO bench_tokens
               SELECT sha256(i::text::bytea), '@user' || i || ':bench', 'DEVICE' || i, NULL
               FROM generate_series(1, {ROWS}) AS i;
             ANALYZE bench_tokens;"
        ))
        .await
        .context("create the table")?;
    let rows = client
        .query(
            "SELECT hash FROM bench_tokens ORDER BY random() LIMIT 10000",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect())
}

fn tokio_postgres_pool(url: &str) -> Result<deadpool_postgres::Pool> {
    let config: tokio_postgres::Config = url.parse()?;
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    Ok(deadpool_postgres::Pool::builder(manager)
        .max_size(POOL)
        .build()?)
}

/// Runs `op(task, i)` on `CONCURRENCY` tasks for `duration`; operations/s.
async fn drive<F, Fut>(duration: Duration, op: F) -> Result<f64>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + duration;
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|task| {
            let (op, done) = (op.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while tokio::time::Instant::now() < deadline {
                    op(task, i).await?;
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / duration.as_secs_f64())
}

async fn tp_lookup(
    pool: &deadpool_postgres::Pool,
    keys: &Arc<Vec<Vec<u8>>>,
    duration: Duration,
) -> Result<f64> {
    let (pool, keys) = (pool.clone(), keys.clone());
    drive(duration, move |task, i| {
        let (pool, keys) = (pool.clone(), keys.clone());
        async move {
            let client = pool.get().await?;
            let stmt = client.prepare_cached(LOOKUP).await?;
            let key = &keys[(task * 7919 + i as usize) % keys.len()];
            let row = client.query_opt(&stmt, &[key]).await?;
            anyhow::ensure!(row.is_some(), "a known hash");
            Ok(())
        }
    })
    .await
}

async fn sx_lookup(
    pool: &sqlx::PgPool,
    keys: &Arc<Vec<Vec<u8>>>,
    duration: Duration,
) -> Result<f64> {
    use sqlx::Row;
    let (pool, keys) = (pool.clone(), keys.clone());
    drive(duration, move |task, i| {
        let (pool, keys) = (pool.clone(), keys.clone());
        async move {
            let key = &keys[(task * 7919 + i as usize) % keys.len()];
            let row = sqlx::query(LOOKUP).bind(key).fetch_optional(&pool).await?;
            anyhow::ensure!(
                row.is_some_and(|r| r.get::<String, _>(0).starts_with('@')),
                "a known hash"
            );
            Ok(())
        }
    })
    .await
}

fn new_hash(driver: &str, round: usize, task: usize, i: u64) -> Vec<u8> {
    format!("{driver}-{round}-{task}-{i}").into_bytes()
}

async fn tp_insert(
    pool: &deadpool_postgres::Pool,
    round: usize,
    duration: Duration,
) -> Result<f64> {
    let pool = pool.clone();
    drive(duration, move |task, i| {
        let pool = pool.clone();
        async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let stmt = tx.prepare_cached(INSERT).await?;
            let hash = new_hash("tp", round, task, i);
            tx.execute(&stmt, &[&hash, &"@new:bench", &"NEWDEVICE", &None::<i64>])
                .await?;
            tx.commit().await?;
            Ok(())
        }
    })
    .await
}

async fn sx_insert(pool: &sqlx::PgPool, round: usize, duration: Duration) -> Result<f64> {
    let pool = pool.clone();
    drive(duration, move |task, i| {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await?;
            sqlx::query(INSERT)
                .bind(new_hash("sx", round, task, i))
                .bind("@new:bench")
                .bind("NEWDEVICE")
                .bind(None::<i64>)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }
    })
    .await
}
