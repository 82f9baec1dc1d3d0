//! Opening the database and running calls on its connections: the one
//! writer behind a mutex, the pooled readers, and bulk-import tuning.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::{Durability, Inner, MAX_READERS, SqliteStore, backend, bulk, migrations};
use crate::{StoreError, StoreResult};

impl SqliteStore {
    /// Opens (creating if needed) the database file and migrates it.
    pub fn open(path: &Path, durability: Durability) -> StoreResult<Self> {
        let mut writer = open_connection(path, durability)?;
        let found: i64 = writer
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(backend)?;
        if usize::try_from(found).is_ok_and(|v| v > migrations::latest()) {
            return Err(StoreError::Backend(format!(
                "{} has schema version {found}, newer than this build's {}: run a newer Gatehouse",
                path.display(),
                migrations::latest()
            )));
        }
        migrations::run(&mut writer).map_err(backend)?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                staged_tokens: Mutex::new(None),
                readers: Mutex::new(Vec::new()),
                reader_slots: tokio::sync::Semaphore::new(MAX_READERS),
                path: path.to_owned(),
                durability,
            }),
        })
    }

    /// The schema version the database is at after opening.
    pub fn schema_version() -> usize {
        migrations::latest()
    }

    /// The schema version of the database at `path` as it stands, read
    /// without changing anything (`None`: there is no database there).
    pub fn schema_version_of(path: &Path) -> StoreResult<Option<usize>> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(backend)?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(backend)?;
        Ok(Some(usize::try_from(found).unwrap_or(0)))
    }

    /// Sets up this instance's writer connection for a process whose job
    /// is a large [`Store::import_users`] run (`gatehouse import`), not for
    /// a server. Imported token hashes land at random places in their
    /// index, so each batch dirties pages all over it: a 256 MiB page cache
    /// keeps that index in memory instead of re-reading it from the file,
    /// and checkpointing every 256 MiB of WAL instead of every 4 MiB copies
    /// a page that many batches rewrote back to the database once rather
    /// than once per batch. Both settings last as long as this instance.
    pub fn tune_for_bulk_import(&self) -> StoreResult<()> {
        let conn = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        conn.pragma_update(None, "cache_size", -256 * 1024)
            .map_err(backend)?;
        conn.pragma_update(None, "wal_autocheckpoint", 65_536)
            .map_err(backend)?;
        // The index rebuilt at the end sorts every token: let SQLite's
        // sorter use a helper thread (the reader is done by then).
        conn.pragma_update(None, "threads", 2).map_err(backend)?;
        drop(conn);
        // Imported tokens wait in memory until `finish_bulk_import` adds
        // them in hash order: inserted batch by batch, each would land at a
        // random place of the token-hash index, rewriting pages all over it
        // at every commit. Sorting them here rather than in a temporary
        // table saves writing every token twice and SQLite's external sort.
        let mut staged = self
            .inner
            .staged_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        staged.get_or_insert_with(Vec::new);
        Ok(())
    }

    /// Ends a bulk import: the tokens staged by `import_users` since
    /// [`Self::tune_for_bulk_import`] are added in one transaction, in hash
    /// order (existing ones kept). Returns how many were new.
    pub fn finish_bulk_import(&self) -> StoreResult<u64> {
        let Some(mut tokens) = self
            .inner
            .staged_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Ok(0);
        };
        tokens.sort_unstable_by_key(|t| t.hash);
        let mut conn = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let added = bulk::insert_sorted_tokens(&tx, &tokens).map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(added)
    }

    pub(super) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let _slot = self.inner.reader_slots.acquire().await.map_err(backend)?;
        tokio::task::spawn_blocking(move || {
            // A poisoned pool is still a list of good connections.
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_connection(&inner.path, inner.durability)?,
            };
            let out = f(&conn).map_err(backend);
            inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            out
        })
        .await
        .map_err(backend)?
    }

    pub(super) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // A panic mid-transaction poisons the lock, but the dropped
            // transaction rolled back: the connection is fine to reuse
            // (failing every later write until a restart would not be).
            let mut conn = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let out = f(&tx)?;
            tx.commit().map_err(backend)?;
            Ok(out)
        })
        .await
        .map_err(backend)?
    }
}

pub(super) fn open_connection(path: &Path, durability: Durability) -> StoreResult<Connection> {
    let conn = Connection::open(path).map_err(backend)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend)?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(backend)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(backend)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(backend)?;
    Ok(conn)
}
