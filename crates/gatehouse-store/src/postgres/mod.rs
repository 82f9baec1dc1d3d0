//! The PostgreSQL backend (tokio-postgres, pooled by deadpool-postgres),
//! for deployments of several Gatehouse instances on one database.
//!
//! Every write is one `READ COMMITTED` transaction. The rules that read
//! before they write take row locks on exactly what they read
//! (`SELECT … FOR UPDATE` on a registration token, a 3PID validation), or a
//! transaction-scoped advisory lock where the rows do not exist yet or are
//! several (a device's token chain, a user's pending homeserver push): two
//! instances then serialise on the one thing they contend for and on
//! nothing else. Single-row claims (consuming a UIA session or a login
//! token, saving UIA progress if unchanged) are one conditional statement,
//! which PostgreSQL re-checks against the newest row version. A deadlock
//! between two transactions is retried a few times before it is an error.

mod accounts;
mod connect;
mod delegation;
mod listen;
mod migrations;
mod rows;
mod store;
#[doc(hidden)]
pub mod testing;
mod tokens;
mod uia;
mod upstream;

pub use connect::{PostgresOptions, redact};

use deadpool_postgres::{GenericClient, Pool, Transaction};
use gatehouse_core::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::{StoreError, StoreResult};

/// PostgreSQL behind the [`Store`](crate::Store) trait.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// For connections outside the pool (`LISTEN`).
    options: std::sync::Arc<PostgresOptions>,
}

/// A transaction of the pool's connection.
pub(crate) type Tx<'a> = Transaction<'a>;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Attempts of a write transaction that lost a deadlock before giving up.
const ATTEMPTS: u32 = 5;

pub(crate) fn db(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c)
            if *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE =>
        {
            StoreError::Contention
        }
        _ => StoreError::Backend(match e.as_db_error() {
            Some(d) => format!("{}: {} ({})", d.severity(), d.message(), d.code().code()),
            None => e.to_string(),
        }),
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// Runs an `INSERT`; a unique violation is `conflict` (the row exists).
async fn insert(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
    conflict: StoreError,
) -> StoreResult<()> {
    let stmt = c.prepare_cached(sql).await.map_err(db)?;
    match c.execute(&stmt, params).await {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(conflict),
        Err(e) => Err(db(e)),
    }
}

fn ts(t: Timestamp) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn ots(t: Option<Timestamp>) -> Option<i64> {
    t.map(ts)
}

fn from_ts(t: i64) -> Timestamp {
    u64::try_from(t).unwrap_or(0)
}

fn from_ots(t: Option<i64>) -> Option<Timestamp> {
    t.map(from_ts)
}

/// Runs a prepared (and per-connection cached) statement; rows changed.
async fn exec(c: &impl GenericClient, sql: &str, params: Params<'_>) -> StoreResult<u64> {
    let stmt = c.prepare_cached(sql).await.map_err(db)?;
    c.execute(&stmt, params).await.map_err(db)
}

async fn query(c: &impl GenericClient, sql: &str, params: Params<'_>) -> StoreResult<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await.map_err(db)?;
    c.query(&stmt, params).await.map_err(db)
}

async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Option<Row>> {
    let stmt = c.prepare_cached(sql).await.map_err(db)?;
    c.query_opt(&stmt, params).await.map_err(db)
}

/// Takes a lock on `key` until the transaction ends: what serialises the
/// rules whose rows may not exist yet (a device's tokens, a user's push).
async fn lock(tx: &Tx<'_>, scope: &str, key: &str) -> StoreResult<()> {
    exec(
        tx,
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&format!("{scope}:{key}")],
    )
    .await?;
    Ok(())
}

/// Tells every instance (on commit, and only then) that `user_id`'s
/// sessions changed, for their token caches (`LISTEN` in [`listen`]).
async fn notify(tx: &Tx<'_>, user_id: &str) -> StoreResult<()> {
    exec(tx, "SELECT pg_notify('gatehouse_revoked', $1)", &[&user_id]).await?;
    Ok(())
}

/// The advisory-lock key of a device's token chain (length-prefixed:
/// PostgreSQL's text has no NUL to separate with, and IDs may hold any
/// other character). `tokens::refresh_pair` builds the same key in SQL,
/// with `octet_length`.
fn device_key(user_id: &str, device_id: &str) -> String {
    format!("{}:{user_id}{device_id}", user_id.len())
}

/// Runs `$body` (an expression using `$tx`) in a transaction on a pooled
/// connection and commits it when it is `Ok`; a deadlock lost to another
/// transaction runs it again, up to [`ATTEMPTS`] times. The body must be
/// safe to run twice: it only reads and writes through `$tx`.
macro_rules! write_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 1u32;
        loop {
            let mut client = $store.client().await?;
            let outcome: $crate::StoreResult<_> = async {
                let $tx = client.transaction().await.map_err($crate::postgres::db)?;
                let value = $body;
                $tx.commit().await.map_err($crate::postgres::db)?;
                Ok(value)
            }
            .await;
            match outcome {
                Err($crate::StoreError::Contention) if attempt < $crate::postgres::ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(attempt, "transaction lost a deadlock; retrying");
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use write_tx;

impl PostgresStore {
    /// A pooled connection (for [`crate::copy`]).
    pub(crate) async fn pool_client(&self) -> StoreResult<deadpool_postgres::Client> {
        self.client().await
    }

    /// A pooled connection, waiting at most the pool's wait timeout.
    async fn client(&self) -> StoreResult<deadpool_postgres::Client> {
        self.pool.get().await.map_err(backend)
    }

    /// Runs a read on a pooled connection, outside any explicit transaction.
    async fn read_opt(&self, sql: &str, params: Params<'_>) -> StoreResult<Option<Row>> {
        query_opt(&self.client().await?, sql, params).await
    }

    async fn read_all(&self, sql: &str, params: Params<'_>) -> StoreResult<Vec<Row>> {
        query(&self.client().await?, sql, params).await
    }
}
