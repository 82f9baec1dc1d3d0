//! Versioned schema migrations: numbered SQL files, applied in order, each
//! in its own transaction, recorded in `gatehouse_schema_migrations`.
//! Append only: a released file is never edited.

use deadpool_postgres::GenericClient;

use super::{db, exec, query};
use crate::{StoreError, StoreResult};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_initial.sql"),
    include_str!("../../migrations/postgres/0002_single_sign_on.sql"),
];

/// The schema version this build migrates to.
pub(super) fn latest() -> usize {
    MIGRATIONS.len()
}

const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS gatehouse_schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_ts BIGINT NOT NULL
)";

/// The version the database is at (0: nothing applied).
pub(super) async fn current(c: &impl GenericClient) -> StoreResult<usize> {
    let exists = query(
        c,
        "SELECT to_regclass('gatehouse_schema_migrations') IS NOT NULL",
        &[],
    )
    .await?;
    if !exists.first().is_some_and(|r| r.get::<_, bool>(0)) {
        return Ok(0);
    }
    let rows = query(
        c,
        "SELECT COALESCE(max(version), 0) FROM gatehouse_schema_migrations",
        &[],
    )
    .await?;
    let v: i32 = rows.first().map_or(0, |r| r.get(0));
    Ok(usize::try_from(v).unwrap_or(0))
}

/// Applies what is missing, under a session lock so that instances
/// starting together migrate one after the other. Returns the versions
/// applied; refuses a database newer than this build.
pub(super) async fn run(client: &mut deadpool_postgres::Client) -> StoreResult<Vec<usize>> {
    const LOCK: &str = "SELECT pg_advisory_lock(hashtextextended('gatehouse migrations', 0))";
    const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended('gatehouse migrations', 0))";
    exec(&*client, LOCK, &[]).await?;
    let result = apply(client).await;
    // The lock is the connection's: release it before the pool reuses it.
    exec(&*client, UNLOCK, &[]).await?;
    result
}

async fn apply(client: &mut deadpool_postgres::Client) -> StoreResult<Vec<usize>> {
    client.batch_execute(CREATE_LEDGER).await.map_err(db)?;
    let found = current(&*client).await?;
    if found > latest() {
        return Err(StoreError::Backend(format!(
            "the database has schema version {found}, newer than this build's {}: run a newer Gatehouse",
            latest()
        )));
    }
    let mut applied = Vec::new();
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found) {
        let version = i + 1;
        let tx = client.transaction().await.map_err(db)?;
        tx.batch_execute(sql).await.map_err(db)?;
        tx.execute(
            "INSERT INTO gatehouse_schema_migrations (version, applied_ts)
             VALUES ($1, (extract(epoch from now()) * 1000)::bigint)",
            &[&i32::try_from(version).unwrap_or(i32::MAX)],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        applied.push(version);
    }
    Ok(applied)
}
