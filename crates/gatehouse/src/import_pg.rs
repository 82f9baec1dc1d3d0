//! Reading a Synapse whose database is PostgreSQL. The four tables the
//! import reads (`users`, `user_threepids`, `devices`, `access_tokens`) are
//! copied, in one `REPEATABLE READ` read-only transaction (one snapshot,
//! even while Synapse keeps writing), into a temporary SQLite file, which
//! the import then reads exactly as it reads a Synapse on SQLite: one
//! reader, one set of checks and reports, whichever database Synapse used.
//! The copy costs one more pass over the rows, in a command run once.

use std::path::PathBuf;

use gatehouse_server::config::DatabaseConfig;
use rusqlite::types::Value;
use tokio_postgres::types::Type;

/// Synapse's tables the import reads.
const TABLES: [&str; 4] = ["users", "user_threepids", "devices", "access_tokens"];

/// Rows fetched per round trip.
const ROWS_PER_FETCH: i32 = 10_000;

/// The staged copy: `homeserver.db` in a directory removed on drop.
pub struct Staged {
    dir: tempfile::TempDir,
}

impl Staged {
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("homeserver.db")
    }
}

/// Copies Synapse's tables from the PostgreSQL database at `url`
/// (connected to like Gatehouse's own: TLS per its `sslmode`, with the
/// configured certificate authorities).
pub async fn stage(url: &str, config: &DatabaseConfig) -> Result<Staged, String> {
    let shown = gatehouse_store::postgres::redact(url);
    let fail = |e: tokio_postgres::Error| match e.as_db_error() {
        Some(db) => format!("{shown}: {}", db.message()),
        None => format!("{shown}: {e}"),
    };
    let options = config
        .postgres_at(url)
        .map_err(|e| format!("{shown}: {e}"))?;
    let mut client = options
        .connect_one()
        .await
        .map_err(|e| format!("{shown}: {e}"))?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(fail)?;
    let dir = tempfile::tempdir().map_err(|e| format!("cannot stage the copy: {e}"))?;
    let staged = Staged { dir };
    let sqlite = rusqlite::Connection::open(staged.path())
        .map_err(|e| format!("cannot stage the copy: {e}"))?;
    let local = |e: rusqlite::Error| format!("staging {shown}: {e}");
    sqlite
        .execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; BEGIN")
        .map_err(local)?;
    for table in TABLES {
        let columns = tx
            .query(
                "SELECT column_name, data_type FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1
                 ORDER BY ordinal_position",
                &[&table],
            )
            .await
            .map_err(fail)?;
        // A missing table is the SQLite reader's to report, as for a
        // homeserver.db without it.
        if columns.is_empty() {
            continue;
        }
        let names: Vec<String> = columns.iter().map(|r| r.get(0)).collect();
        let select: Vec<String> = columns
            .iter()
            .map(|r| {
                let (name, kind): (String, String) = (r.get(0), r.get(1));
                match kind.as_str() {
                    // PostgreSQL casts a boolean to int4, not int8.
                    "boolean" => format!("\"{name}\"::int4::int8"),
                    "smallint" | "integer" | "bigint" => format!("\"{name}\"::int8"),
                    "bytea" => format!("\"{name}\""),
                    _ => format!("\"{name}\"::text"),
                }
            })
            .collect();
        let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
        sqlite
            .execute_batch(&format!("CREATE TABLE {table} ({})", quoted.join(", ")))
            .map_err(local)?;
        let statement = tx
            .prepare(&format!("SELECT {} FROM {table}", select.join(", ")))
            .await
            .map_err(fail)?;
        let portal = tx.bind(&statement, &[]).await.map_err(fail)?;
        let slots = vec!["?"; names.len()].join(", ");
        let mut insert = sqlite
            .prepare(&format!("INSERT INTO {table} VALUES ({slots})"))
            .map_err(local)?;
        loop {
            let rows = tx
                .query_portal(&portal, ROWS_PER_FETCH)
                .await
                .map_err(fail)?;
            for row in &rows {
                let values: Vec<Value> = (0..names.len())
                    .map(|i| value(row, i))
                    .collect::<Result<_, _>>()
                    .map_err(fail)?;
                insert
                    .execute(rusqlite::params_from_iter(values))
                    .map_err(local)?;
            }
            if rows.len() < ROWS_PER_FETCH as usize {
                break;
            }
        }
    }
    sqlite.execute_batch("COMMIT").map_err(local)?;
    Ok(staged)
}

/// One column of a PostgreSQL row, as the SQLite value Synapse would have
/// stored (booleans and integers as integers).
fn value(row: &tokio_postgres::Row, i: usize) -> Result<Value, tokio_postgres::Error> {
    Ok(match *row.columns()[i].type_() {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::Integer),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)?
            .map_or(Value::Null, Value::Blob),
        _ => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Value::Null, Value::Text),
    })
}
