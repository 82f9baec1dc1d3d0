//! Moving a deployment from the embedded SQLite file to PostgreSQL
//! (`gatehouse db copy`): every table, row for row, in one PostgreSQL
//! transaction, so the target has all of it or none of it.
//!
//! The copy is by table rather than through [`Store`](crate::Store): the
//! trait has no call that lists every refresh-token chain, UIA session or
//! pending push, and it must not grow one just for this. Both schemas name
//! their columns alike (the PostgreSQL one was written from SQLite's), so
//! one list of tables and column kinds below drives reading and writing.

use std::path::Path;

use rusqlite::types::Value;
use tokio_postgres::types::ToSql;

use crate::postgres::PostgresStore;
use crate::{StoreError, StoreResult};

/// How a column is read from SQLite and bound for PostgreSQL.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    Bool,
    Bytes,
}

use Kind::{Bool, Bytes, Int, Text};

/// Every table of schema version 9 (SQLite) / 1 (PostgreSQL), parents
/// first. `true`: its `id` is an identity column, whose sequence must
/// continue after the copied IDs.
/// A table: its name, whether `id` is an identity column, its columns.
type Table = (&'static str, bool, &'static [(&'static str, Kind)]);

const TABLES: &[Table] = &[
    (
        "users",
        false,
        &[
            ("user_id", Text),
            ("password_hash", Text),
            ("is_admin", Bool),
            ("is_guest", Bool),
            ("deactivated", Bool),
            ("locked", Bool),
            ("suspended", Bool),
            ("created_ts", Int),
        ],
    ),
    (
        "threepids",
        false,
        &[
            ("medium", Text),
            ("address", Text),
            ("user_id", Text),
            ("added_ts", Int),
        ],
    ),
    (
        "devices",
        false,
        &[
            ("user_id", Text),
            ("device_id", Text),
            ("display_name", Text),
            ("last_seen_ip", Text),
            ("last_seen_ts", Int),
            ("created_ts", Int),
        ],
    ),
    (
        "refresh_tokens",
        true,
        &[
            ("id", Int),
            ("token_hash", Bytes),
            ("user_id", Text),
            ("device_id", Text),
            ("parent_id", Int),
            ("expires_ts", Int),
            ("created_ts", Int),
        ],
    ),
    (
        "access_tokens",
        true,
        &[
            ("id", Int),
            ("token_hash", Bytes),
            ("user_id", Text),
            ("device_id", Text),
            ("refresh_id", Int),
            ("pending_parent", Int),
            ("expires_ts", Int),
            ("created_ts", Int),
        ],
    ),
    (
        "uia_sessions",
        false,
        &[
            ("id", Text),
            ("user_id", Text),
            ("method", Text),
            ("path", Text),
            ("body_hash", Bytes),
            ("completed", Text),
            ("data", Text),
            ("created_ts", Int),
            ("expires_ts", Int),
            ("consumed", Bool),
        ],
    ),
    (
        "registration_tokens",
        false,
        &[
            ("token", Text),
            ("uses_allowed", Int),
            ("pending", Int),
            ("completed", Int),
            ("expiry_ts", Int),
            ("created_ts", Int),
        ],
    ),
    (
        "threepid_validations",
        false,
        &[
            ("sid", Text),
            ("client_secret_hash", Bytes),
            ("medium", Text),
            ("address", Text),
            ("token_hash", Bytes),
            ("send_attempt", Int),
            ("validated_ts", Int),
            ("created_ts", Int),
            ("expires_ts", Int),
            ("next_link", Text),
            ("failed_attempts", Int),
        ],
    ),
    (
        "cross_signing_keys",
        false,
        &[("user_id", Text), ("keys", Text), ("updated_ts", Int)],
    ),
    (
        "login_tokens",
        false,
        &[
            ("token_hash", Bytes),
            ("user_id", Text),
            ("expires_ts", Int),
            ("created_ts", Int),
        ],
    ),
    (
        "homeserver_syncs",
        false,
        &[
            ("localpart", Text),
            ("version", Int),
            ("erase", Bool),
            ("reactivate", Bool),
            ("deleted_devices", Text),
            ("attempts", Int),
            ("next_attempt_ts", Int),
        ],
    ),
    (
        "web_sessions",
        false,
        &[
            ("id_hash", Bytes),
            ("user_id", Text),
            ("csrf_token", Text),
            ("expires_ts", Int),
        ],
    ),
    (
        "accepted_policies",
        false,
        &[
            ("user_id", Text),
            ("policy", Text),
            ("version", Text),
            ("accepted_ts", Int),
        ],
    ),
    (
        "upstream_links",
        false,
        &[
            ("provider", Text),
            ("subject", Text),
            ("user_id", Text),
            ("created_ts", Int),
        ],
    ),
    (
        "sso_flows",
        false,
        &[
            ("id_hash", Bytes),
            ("data", Text),
            ("created_ts", Int),
            ("expires_ts", Int),
        ],
    ),
];

/// Rows per `INSERT` (PostgreSQL takes at most 65 535 parameters).
const ROWS_PER_INSERT: usize = 1000;

/// Rows copied, per table, in copy order.
pub type CopyReport = Vec<(&'static str, u64)>;

/// A value bound for PostgreSQL.
#[derive(Debug)]
enum Bound {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
    Bytes(Option<Vec<u8>>),
}

impl Bound {
    fn of(value: Value, kind: Kind) -> StoreResult<Self> {
        let bad = |v: &Value| StoreError::Backend(format!("unexpected SQLite value {v:?}"));
        Ok(match (kind, value) {
            (Text, Value::Null) => Self::Text(None),
            (Text, Value::Text(s)) => Self::Text(Some(s)),
            (Int, Value::Null) => Self::Int(None),
            (Int, Value::Integer(i)) => Self::Int(Some(i)),
            (Bool, Value::Null) => Self::Bool(None),
            (Bool, Value::Integer(i)) => Self::Bool(Some(i != 0)),
            (Bytes, Value::Null) => Self::Bytes(None),
            (Bytes, Value::Blob(b)) => Self::Bytes(Some(b)),
            (_, v) => return Err(bad(&v)),
        })
    }

    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Self::Text(v) => v,
            Self::Int(v) => v,
            Self::Bool(v) => v,
            Self::Bytes(v) => v,
        }
    }
}

/// Copies the SQLite database at `from` (at the latest schema: open it
/// with [`SqliteStore`](crate::SqliteStore) first) into `to`, which must
/// hold no account yet. One transaction: on any error nothing is kept.
pub async fn sqlite_to_postgres(from: &Path, to: &PostgresStore) -> StoreResult<CopyReport> {
    let source = rusqlite::Connection::open_with_flags(
        from,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", from.display())))?;
    let source = std::sync::Arc::new(std::sync::Mutex::new(source));
    let mut client = to.pool_client().await?;
    let tx = client.transaction().await.map_err(crate::postgres::db)?;
    let existing = tx
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .map_err(crate::postgres::db)?;
    if existing.get::<_, i64>(0) > 0 {
        return Err(StoreError::Backend(
            "the target database already has accounts: copy into an empty one".into(),
        ));
    }
    let mut report = Vec::new();
    for &(table, identity, columns) in TABLES {
        let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
        let kinds: Vec<Kind> = columns.iter().map(|c| c.1).collect();
        let select = format!(
            "SELECT {} FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT {ROWS_PER_INSERT}",
            names.join(", ")
        );
        let mut after = 0i64;
        let mut copied = 0u64;
        loop {
            let (source, select, kinds) = (source.clone(), select.clone(), kinds.clone());
            let (rows, last) =
                tokio::task::spawn_blocking(move || read_batch(&source, &select, &kinds, after))
                    .await
                    .map_err(|e| StoreError::Backend(e.to_string()))??;
            if rows.is_empty() {
                break;
            }
            after = last;
            copied += insert_batch(&tx, table, identity, &names, &rows).await?;
        }
        if identity {
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'),
                                   GREATEST((SELECT max(id) FROM {table}), 1))"
                ),
                &[],
            )
            .await
            .map_err(crate::postgres::db)?;
        }
        report.push((table, copied));
    }
    tx.commit().await.map_err(crate::postgres::db)?;
    Ok(report)
}

/// Up to [`ROWS_PER_INSERT`] rows after `rowid` `after`, and the last rowid.
fn read_batch(
    source: &std::sync::Mutex<rusqlite::Connection>,
    select: &str,
    kinds: &[Kind],
    after: i64,
) -> StoreResult<(Vec<Vec<Bound>>, i64)> {
    let backend = |e: rusqlite::Error| StoreError::Backend(e.to_string());
    let conn = source.lock().unwrap_or_else(|p| p.into_inner());
    // The rowid rides along as an extra last column.
    let with_rowid = select.replacen(" FROM ", ", rowid FROM ", 1);
    let mut stmt = conn.prepare_cached(&with_rowid).map_err(backend)?;
    let mut rows = stmt.query([after]).map_err(backend)?;
    let (mut out, mut last) = (Vec::new(), after);
    while let Some(row) = rows.next().map_err(backend)? {
        let mut values = Vec::with_capacity(kinds.len());
        for (i, kind) in kinds.iter().enumerate() {
            values.push(Bound::of(row.get::<_, Value>(i).map_err(backend)?, *kind)?);
        }
        last = row.get(kinds.len()).map_err(backend)?;
        out.push(values);
    }
    Ok((out, last))
}

async fn insert_batch(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
    identity: bool,
    names: &[&str],
    rows: &[Vec<Bound>],
) -> StoreResult<u64> {
    let width = names.len();
    let values: Vec<String> = (0..rows.len())
        .map(|r| {
            let slots: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", slots.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({}) {}VALUES {}",
        names.join(", "),
        if identity {
            "OVERRIDING SYSTEM VALUE "
        } else {
            ""
        },
        values.join(", ")
    );
    let params: Vec<&(dyn ToSql + Sync)> = rows.iter().flatten().map(Bound::as_sql).collect();
    tx.execute(sql.as_str(), &params)
        .await
        .map_err(crate::postgres::db)
}
