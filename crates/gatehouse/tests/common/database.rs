//! The database behind a test server, whichever engine it is: SQLite in
//! its data directory, or (with `GATEHOUSE_TEST_DATABASE=postgres`) a
//! PostgreSQL database of its own on the test cluster.

use std::path::Path;

/// With `GATEHOUSE_TEST_DATABASE=postgres` (the README's test command
/// runs the end-to-end suites a second time so), the PostgreSQL database
/// of the server on `dir`: a fresh one the first time, kept for `dir`
/// so that a restart on the same directory finds the same data.
pub fn postgres_for(dir: &Path) -> Option<String> {
    if std::env::var("GATEHOUSE_TEST_DATABASE").ok().as_deref() != Some("postgres") {
        return None;
    }
    // Recorded in this process, not in `dir`: some tests check that a
    // refused command left no data directory behind.
    static DATABASES: std::sync::Mutex<Vec<(std::path::PathBuf, String)>> =
        std::sync::Mutex::new(Vec::new());
    let mut known = DATABASES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, url)) = known.iter().find(|(d, _)| d == dir) {
        return Some(url.clone());
    }
    // Its own runtime on its own thread: callers may be inside one.
    let url = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(gatehouse_store::postgres::testing::fresh_database())
    })
    .join()
    .expect("create a test database");
    known.push((dir.to_owned(), url.clone()));
    Some(url)
}

/// The store of the server on `dir`, opened beside it: its PostgreSQL
/// database when it has one, otherwise its SQLite file.
pub async fn store_in(dir: &Path) -> std::sync::Arc<dyn gatehouse_store::Store> {
    match postgres_for(dir) {
        Some(url) => std::sync::Arc::new(
            gatehouse_store::PostgresStore::connect(&gatehouse_store::PostgresOptions::new(url))
                .await
                .expect("open the test database"),
        ),
        None => std::sync::Arc::new(
            gatehouse_store::SqliteStore::open(
                &dir.join("gatehouse.sqlite"),
                gatehouse_store::sqlite::Durability::Full,
            )
            .expect("open the SQLite file"),
        ),
    }
}

/// Everything the server on `dir` has stored, as bytes to search (for
/// secrets that must not be there): the SQLite file and its WAL, or every
/// row of every PostgreSQL table as text.
pub async fn stored_bytes(dir: &Path) -> Vec<u8> {
    match postgres_client(dir).await {
        Some(client) => {
            let tables = client
                .query(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()",
                    &[],
                )
                .await
                .expect("list tables");
            let mut out = Vec::new();
            for t in tables {
                let name: String = t.get(0);
                for row in client
                    .query(&format!("SELECT t::text FROM {name} t"), &[])
                    .await
                    .expect("read a table")
                {
                    out.extend(row.get::<_, String>(0).into_bytes());
                }
            }
            out
        }
        None => {
            let mut out = std::fs::read(dir.join("gatehouse.sqlite")).expect("the SQLite file");
            out.extend(std::fs::read(dir.join("gatehouse.sqlite-wal")).unwrap_or_default());
            out
        }
    }
}

/// A connection to the server's PostgreSQL database, if it has one.
async fn postgres_client(dir: &Path) -> Option<tokio_postgres::Client> {
    let url = postgres_for(dir)?;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    Some(client)
}

/// Rows in `table` of the PostgreSQL database at `url`.
pub async fn count_rows_at(url: &str, table: &str) -> usize {
    query_count_on(
        Some(url),
        Path::new(""),
        &format!("SELECT count(*) FROM {table}"),
    )
    .await
}

/// Rows in `table` of the server on `dir`, read beside the running server.
pub async fn count_rows(dir: &Path, table: &str) -> usize {
    query_count(dir, &format!("SELECT count(*) FROM {table}")).await
}

/// The one integer `sql` (the same text on both engines) selects from the
/// database of the server on `dir`.
pub async fn query_count(dir: &Path, sql: &str) -> usize {
    query_count_on(postgres_for(dir).as_deref(), dir, sql).await
}

/// [`query_count`] on the PostgreSQL database at `url`, or without one on
/// the SQLite file in `dir`.
pub async fn query_count_on(url: Option<&str>, dir: &Path, sql: &str) -> usize {
    let client = match url {
        Some(url) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect to the test database");
            tokio::spawn(connection);
            Some(client)
        }
        None => None,
    };
    let n: i64 = match client {
        Some(c) => c.query_one(sql, &[]).await.expect("count rows").get(0),
        None => rusqlite::Connection::open_with_flags(
            dir.join("gatehouse.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open the server's database read-only")
        .query_row(sql, [], |r| r.get(0))
        .expect("count rows"),
    };
    usize::try_from(n).unwrap()
}

/// Makes every `event` (`DELETE ON devices`, `UPDATE ON users`…) fail in
/// the database of the server on `dir`, as a full disk or a broken file
/// would, until [`heal`] (a trigger, in the engine's own dialect).
pub async fn fail_on(dir: &Path, event: &str) {
    match postgres_client(dir).await {
        Some(c) => c
            .batch_execute(&format!(
                "CREATE FUNCTION injected_failure() RETURNS trigger LANGUAGE plpgsql
                   AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;
                 CREATE TRIGGER injected_failure BEFORE {event}
                   FOR EACH ROW EXECUTE FUNCTION injected_failure();"
            ))
            .await
            .expect("arm the failure"),
        None => sqlite(dir)
            .execute_batch(&format!(
                "CREATE TRIGGER injected_failure BEFORE {event}
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
            ))
            .expect("arm the failure"),
    }
}

/// Lifts [`fail_on`].
pub async fn heal(dir: &Path) {
    match postgres_client(dir).await {
        Some(c) => c
            .batch_execute("DROP FUNCTION injected_failure() CASCADE")
            .await
            .expect("disarm the failure"),
        None => sqlite(dir)
            .execute_batch("DROP TRIGGER injected_failure")
            .expect("disarm the failure"),
    }
}

fn sqlite(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("gatehouse.sqlite")).expect("open the server's database")
}
