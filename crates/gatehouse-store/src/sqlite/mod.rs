//! The embedded SQLite backend (rusqlite).
//!
//! One writer connection behind a mutex (SQLite allows one writer at a time
//! anyway; serialising in-process avoids `SQLITE_BUSY` storms) and a small
//! pool of reader connections, which WAL lets run beside the writer. All
//! calls run on tokio's blocking pool so the async workers never wait on disk.

mod bulk;
mod migrations;

use bulk::{SYNC_COLUMNS, StagedToken, import_batch, sync_from_row};

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gatehouse_core::Timestamp;
use gatehouse_core::identifier::{Medium, Threepid};
use gatehouse_core::refresh::{self, Effect, Endpoint, RefreshId, RefreshTokenRow, Rejection};
use gatehouse_core::token::TokenHash;
use gatehouse_core::user_id::UserId;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::{
    AccessTokenRecord, ClientSecretHash, DeviceRecord, EndSessions, NewRegistration, NewSession,
    NewTokenPair, NewUser, RefreshedSession, RegistrationToken, Store, StoreError, StoreResult,
    ThreepidRecord, ThreepidValidation, UiaSessionRecord, UserRecord,
};
use crate::{HomeserverChange, HomeserverSync, ImportCounts, ImportedUser, Moderation, WebSession};
use gatehouse_core::uia::Binding;

/// How hard SQLite works to make a commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: a commit survives power loss. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: a commit survives a crash of the process, but
    /// the last commits may be lost on power loss. Faster writes.
    Normal,
}

/// SQLite behind the [`Store`] trait.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    /// Imported tokens waiting for `finish_bulk_import`, while a bulk
    /// import is on (`tune_for_bulk_import`); `None` otherwise.
    staged_tokens: Mutex<Option<Vec<StagedToken>>>,
    readers: Mutex<Vec<Connection>>,
    /// Bounds the reader connections (each holds its own page cache).
    reader_slots: tokio::sync::Semaphore,
    path: std::path::PathBuf,
    durability: Durability,
}

/// Reader connections open at most: enough to keep both cores busy while
/// one reader waits on disk, few enough to bound page-cache memory.
const MAX_READERS: usize = 4;

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

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

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
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

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
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

fn open_connection(path: &Path, durability: Durability) -> StoreResult<Connection> {
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

fn ts(v: Option<Timestamp>) -> Option<i64> {
    v.map(|t| i64::try_from(t).unwrap_or(i64::MAX))
}

fn from_ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(|t| u64::try_from(t).unwrap_or(0))
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        user_id: UserId::from_trusted(r.get(0)?),
        password_hash: r.get(1)?,
        is_admin: r.get(2)?,
        is_guest: r.get(3)?,
        deactivated: r.get(4)?,
        created_at: from_ts(r.get(5)?).unwrap_or(0),
        locked: r.get(6)?,
        suspended: r.get(7)?,
    })
}

const USER_COLUMNS: &str = "u.user_id, u.password_hash, u.is_admin, u.is_guest, u.deactivated, u.created_ts, u.locked, u.suspended";

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// Deletes the given refresh tokens and every access token minted with them.
fn delete_refresh_tokens(
    tx: &Transaction<'_>,
    where_clause: &str,
    args: &[&dyn rusqlite::ToSql],
) -> StoreResult<()> {
    tx.execute(
        &format!("DELETE FROM access_tokens WHERE refresh_id IN (SELECT id FROM refresh_tokens WHERE {where_clause})"),
        args,
    )
    .map_err(backend)?;
    tx.execute(
        &format!("DELETE FROM refresh_tokens WHERE {where_clause}"),
        args,
    )
    .map_err(backend)?;
    Ok(())
}

fn apply_effect(tx: &Transaction<'_>, effect: Effect) -> StoreResult<()> {
    match effect {
        Effect::RetireParent { parent, keep } => {
            delete_refresh_tokens(
                tx,
                "id = ?1 OR (parent_id = ?1 AND id != ?2)",
                &[&parent, &keep],
            )?;
            tx.execute(
                "UPDATE refresh_tokens SET parent_id = NULL WHERE id = ?1",
                [keep],
            )
            .map_err(backend)?;
            tx.execute(
                "UPDATE access_tokens SET pending_parent = NULL WHERE refresh_id = ?1",
                [keep],
            )
            .map_err(backend)?;
        }
        Effect::Retire(id) => delete_refresh_tokens(tx, "id = ?1 OR parent_id = ?1", &[&id])?,
        Effect::Mint { .. } => unreachable!("minting needs the new pair; handled by the caller"),
    }
    Ok(())
}

/// Inserts an access token (and refresh token) for a device.
fn insert_pair(
    tx: &Transaction<'_>,
    user_id: &str,
    device_id: &str,
    pair: &NewTokenPair,
    parent: Option<RefreshId>,
    now: Timestamp,
) -> StoreResult<()> {
    let now = ts(Some(now));
    let refresh_id = match pair.refresh {
        Some(hash) => {
            tx.execute(
                "INSERT INTO refresh_tokens (token_hash, user_id, device_id, parent_id, expires_ts, created_ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![&hash.0[..], user_id, device_id, parent, ts(pair.refresh_expires_at), now],
            )
            .map_err(backend)?;
            Some(tx.last_insert_rowid())
        }
        None => None,
    };
    tx.execute(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, refresh_id, pending_parent, expires_ts, created_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![&pair.access.0[..], user_id, device_id, refresh_id, parent, ts(pair.access_expires_at), now],
    )
    .map_err(backend)?;
    Ok(())
}

fn delete_device_tokens(
    tx: &Transaction<'_>,
    user_id: &str,
    device_id: Option<&str>,
) -> StoreResult<()> {
    match device_id {
        Some(d) => {
            tx.execute(
                "DELETE FROM access_tokens WHERE user_id = ?1 AND device_id = ?2",
                [user_id, d],
            )
            .map_err(backend)?;
            tx.execute(
                "DELETE FROM refresh_tokens WHERE user_id = ?1 AND device_id = ?2",
                [user_id, d],
            )
            .map_err(backend)?;
        }
        None => {
            tx.execute("DELETE FROM access_tokens WHERE user_id = ?1", [user_id])
                .map_err(backend)?;
            tx.execute("DELETE FROM refresh_tokens WHERE user_id = ?1", [user_id])
                .map_err(backend)?;
        }
    }
    Ok(())
}

fn device_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRecord> {
    Ok(DeviceRecord {
        device_id: r.get(0)?,
        display_name: r.get(1)?,
        last_seen_ip: r.get(2)?,
        last_seen_at: from_ts(r.get(3)?),
    })
}

fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RegistrationToken> {
    Ok(RegistrationToken {
        token: r.get(0)?,
        uses_allowed: r.get(1)?,
        pending: r.get(2)?,
        completed: r.get(3)?,
        expiry: from_ts(r.get(4)?),
    })
}

const VALIDATION_COLUMNS: &str = "sid, client_secret_hash, medium, address, token_hash, send_attempt, validated_ts, created_ts, expires_ts, next_link, failed_attempts";

fn validation_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ThreepidValidation> {
    let medium: String = r.get(2)?;
    let secret_hash: Vec<u8> = r.get(1)?;
    let hash: Vec<u8> = r.get(4)?;
    let bad = |what: &str| rusqlite::Error::InvalidColumnName(what.to_owned());
    Ok(ThreepidValidation {
        sid: r.get(0)?,
        client_secret: ClientSecretHash(TokenHash(
            secret_hash
                .try_into()
                .map_err(|_| bad("client_secret_hash"))?,
        )),
        threepid: Threepid {
            medium: Medium::parse(&medium).ok_or_else(|| bad("medium"))?,
            address: r.get(3)?,
        },
        token_hash: TokenHash(hash.try_into().map_err(|_| bad("token_hash"))?),
        send_attempt: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
        validated_at: from_ts(r.get(6)?),
        created_at: from_ts(r.get(7)?).unwrap_or(0),
        expires_at: from_ts(r.get(8)?).unwrap_or(0),
        next_link: r.get(9)?,
        failed_attempts: r.get(10)?,
    })
}

/// Deletes expired, unused UIA sessions, releasing the registration-token
/// uses they had reserved.
fn expire_uia_sessions(tx: &Transaction<'_>, now: Timestamp) -> StoreResult<()> {
    let now = ts(Some(now));
    let reserved: Vec<String> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT json_extract(data, '$.registration_token') FROM uia_sessions
                 WHERE expires_ts <= ?1 AND json_extract(data, '$.registration_token') IS NOT NULL",
            )
            .map_err(backend)?;
        let rows = stmt.query_map([now], |r| r.get(0)).map_err(backend)?;
        rows.collect::<rusqlite::Result<_>>().map_err(backend)?
    };
    for token in reserved {
        tx.execute(
            "UPDATE registration_tokens SET pending = pending - 1 WHERE token = ?1 AND pending > 0",
            [token],
        )
        .map_err(backend)?;
    }
    tx.execute("DELETE FROM uia_sessions WHERE expires_ts <= ?1", [now])
        .map_err(backend)?;
    Ok(())
}

/// How long an expired 3PID validation is kept (a UIA stage may still be
/// answering with it when it expires).
const VALIDATION_GRACE_MS: u64 = 24 * 60 * 60 * 1000;

/// Deletes an account's outstanding login tokens (`m.login.token`).
fn delete_login_tokens(tx: &Transaction<'_>, user_id: &str) -> StoreResult<()> {
    tx.execute("DELETE FROM login_tokens WHERE user_id = ?1", [user_id])
        .map_err(backend)?;
    Ok(())
}

/// Deletes an account's devices and their tokens, all or all but `keep`.
fn delete_devices_but(tx: &Transaction<'_>, user_id: &str, keep: Option<&str>) -> StoreResult<()> {
    let keep = keep.unwrap_or("");
    for table in ["access_tokens", "refresh_tokens", "devices"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE user_id = ?1 AND device_id != ?2"),
            [user_id, keep],
        )
        .map_err(backend)?;
    }
    Ok(())
}

/// Creates (or takes over) a device and stores its first token pair.
/// Refused for an account deactivated meanwhile (checked inside the
/// transaction: the password check before it took a while).
fn start_session(tx: &Transaction<'_>, s: &NewSession) -> StoreResult<()> {
    let uid = s.user_id.as_str();
    let deactivated: Option<bool> = tx
        .query_row(
            "SELECT deactivated FROM users WHERE user_id = ?1",
            [uid],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    match deactivated {
        None => return Err(StoreError::NoSuchUser),
        Some(true) => return Err(StoreError::UserDeactivated),
        Some(false) => {}
    }
    let existed: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM devices WHERE user_id = ?1 AND device_id = ?2)",
            [uid, &s.device_id],
            |r| r.get(0),
        )
        .map_err(backend)?;
    if existed {
        delete_device_tokens(tx, uid, Some(&s.device_id))?;
    } else {
        tx.execute(
            "INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES (?1, ?2, ?3, ?4)",
            params![uid, s.device_id, s.initial_display_name, ts(Some(s.now))],
        )
        .map_err(backend)?;
    }
    insert_pair(tx, uid, &s.device_id, &s.tokens, None, s.now)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: NewUser) -> StoreResult<()> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO users (user_id, password_hash, is_admin, is_guest, created_ts) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![user.user_id.as_str(), user.password_hash, user.is_admin, user.is_guest, ts(Some(user.created_at))],
            )
            .map_err(|e| if is_unique_violation(&e) { StoreError::UserExists } else { backend(e) })?;
            Ok(())
        })
        .await
    }

    async fn user(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>> {
        let id = user_id.as_str().to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users u WHERE u.user_id = ?1"
            ))?
            .query_row([id], user_from_row)
            .optional()
        })
        .await
    }

    async fn user_by_threepid(&self, threepid: &Threepid) -> StoreResult<Option<UserRecord>> {
        let (medium, address) = (threepid.medium.as_str(), threepid.address.clone());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM threepids t JOIN users u ON u.user_id = t.user_id
                 WHERE t.medium = ?1 AND t.address = ?2"
            ))?
            .query_row(params![medium, address], user_from_row)
            .optional()
        })
        .await
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        self.read(|c| {
            c.prepare(&format!(
                "SELECT {USER_COLUMNS} FROM users u ORDER BY u.user_id"
            ))?
            .query_map([], user_from_row)?
            .collect()
        })
        .await
    }

    async fn set_password_hash(
        &self,
        user_id: &UserId,
        hash: &str,
        sessions: EndSessions,
    ) -> StoreResult<()> {
        let (id, hash) = (user_id.as_str().to_owned(), hash.to_owned());
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE users SET password_hash = ?2 WHERE user_id = ?1",
                    [&id, &hash],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NoSuchUser);
            }
            delete_login_tokens(tx, &id)?;
            match sessions {
                EndSessions::Keep => Ok(()),
                EndSessions::All => delete_devices_but(tx, &id, None),
                EndSessions::AllBut(keep) => delete_devices_but(tx, &id, Some(&keep)),
            }
        })
        .await
    }

    async fn upgrade_password_hash(
        &self,
        user_id: &UserId,
        old: &str,
        new: &str,
    ) -> StoreResult<bool> {
        let (id, old, new) = (user_id.as_str().to_owned(), old.to_owned(), new.to_owned());
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE users SET password_hash = ?3 WHERE user_id = ?1 AND password_hash = ?2",
                    [&id, &old, &new],
                )
                .map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }

    async fn deactivate_user(&self, user_id: &UserId) -> StoreResult<()> {
        let id = user_id.as_str().to_owned();
        self.write(move |tx| {
            let n = tx
                .execute("UPDATE users SET deactivated = 1 WHERE user_id = ?1", [&id])
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NoSuchUser);
            }
            delete_device_tokens(tx, &id, None)?;
            tx.execute("DELETE FROM devices WHERE user_id = ?1", [&id])
                .map_err(backend)?;
            for table in ["threepids", "cross_signing_keys", "login_tokens"] {
                tx.execute(&format!("DELETE FROM {table} WHERE user_id = ?1"), [&id])
                    .map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn add_threepid(
        &self,
        user_id: &UserId,
        threepid: &Threepid,
        now: Timestamp,
    ) -> StoreResult<()> {
        let id = user_id.as_str().to_owned();
        let (medium, address) = (threepid.medium.as_str(), threepid.address.clone());
        self.write(move |tx| {
            let exists: bool = tx
                .query_row("SELECT EXISTS (SELECT 1 FROM users WHERE user_id = ?1)", [&id], |r| r.get(0))
                .map_err(backend)?;
            if !exists {
                return Err(StoreError::NoSuchUser);
            }
            tx.execute(
                "INSERT INTO threepids (medium, address, user_id, added_ts) VALUES (?1, ?2, ?3, ?4)",
                params![medium, address, id, ts(Some(now))],
            )
            .map_err(|e| if is_unique_violation(&e) { StoreError::ThreepidInUse } else { backend(e) })?;
            Ok(())
        })
        .await
    }

    async fn threepids(&self, user_id: &UserId) -> StoreResult<Vec<ThreepidRecord>> {
        let id = user_id.as_str().to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT medium, address, added_ts FROM threepids WHERE user_id = ?1 ORDER BY medium, address",
            )?;
            let rows = stmt.query_map([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (medium, address, added) = row?;
                if let Some(medium) = Medium::parse(&medium) {
                    out.push(ThreepidRecord {
                        threepid: Threepid { medium, address },
                        added_at: from_ts(added).unwrap_or(0),
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn create_session(&self, s: NewSession) -> StoreResult<()> {
        self.write(move |tx| start_session(tx, &s)).await
    }

    async fn access_token(&self, hash: &TokenHash) -> StoreResult<Option<AccessTokenRecord>> {
        let hash = *hash;
        self.read(move |c| {
            c.prepare_cached(
                "SELECT a.user_id, a.device_id, u.is_guest, a.expires_ts, a.refresh_id, a.pending_parent,
                        d.last_seen_ts, d.last_seen_ip, u.is_admin, u.locked, u.suspended
                 FROM access_tokens a JOIN users u ON u.user_id = a.user_id
                 LEFT JOIN devices d ON d.user_id = a.user_id AND d.device_id = a.device_id
                 WHERE a.token_hash = ?1 AND u.deactivated = 0",
            )?
            .query_row([&hash.0[..]], |r| {
                Ok(AccessTokenRecord {
                    user_id: UserId::from_trusted(r.get(0)?),
                    device_id: r.get(1)?,
                    is_guest: r.get(2)?,
                    expires_at: from_ts(r.get(3)?),
                    refresh_id: r.get(4)?,
                    pending_parent: r.get(5)?,
                    last_seen_at: from_ts(r.get(6)?),
                    last_seen_ip: r.get(7)?,
                    is_admin: r.get(8)?,
                    locked: r.get(9)?,
                    suspended: r.get(10)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn complete_rotation(
        &self,
        parent: RefreshId,
        issued_with: RefreshId,
    ) -> StoreResult<()> {
        self.write(move |tx| {
            // Read again inside the transaction: the caller saw the access
            // token outside it, and the rotation may have been completed or
            // the session ended since. Only a child still under its parent
            // retires that parent (and IDs are never reused, migration 7).
            let pending: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM refresh_tokens WHERE id = ?1 AND parent_id = ?2)",
                    [issued_with, parent],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            if !pending {
                return Ok(());
            }
            apply_effect(tx, refresh::on_first_access_token_use(parent, issued_with))
        })
        .await
    }

    async fn refresh(
        &self,
        presented: &TokenHash,
        endpoint: Endpoint,
        pair: NewTokenPair,
        now: Timestamp,
    ) -> StoreResult<Result<RefreshedSession, Rejection>> {
        let presented = *presented;
        self.write(move |tx| {
            let row = tx
                .query_row(
                    "SELECT id, parent_id, expires_ts, user_id, device_id FROM refresh_tokens WHERE token_hash = ?1",
                    [&presented.0[..]],
                    |r| {
                        Ok((
                            RefreshTokenRow { id: r.get(0)?, parent: r.get(1)?, expires_at: from_ts(r.get(2)?) },
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                        ))
                    },
                )
                .optional()
                .map_err(backend)?;
            let (token, user_id, device_id) = match row {
                Some((t, u, d)) => (Some(t), u, d),
                None => (None, String::new(), String::new()),
            };
            let effects = match refresh::plan_refresh(token, now, endpoint) {
                Ok(e) => e,
                Err(rejection) => return Ok(Err(rejection)),
            };
            for effect in effects {
                match effect {
                    Effect::Mint { parent } => {
                        if let Some(parent) = parent {
                            // Room for this child among the parent's newest.
                            delete_refresh_tokens(
                                tx,
                                "id IN (SELECT id FROM refresh_tokens WHERE parent_id = ?1
                                        ORDER BY id DESC LIMIT -1 OFFSET ?2)",
                                &[&parent, &(refresh::MAX_PENDING_CHILDREN - 1)],
                            )?;
                        }
                        insert_pair(tx, &user_id, &device_id, &pair, parent, now)?
                    }
                    other => apply_effect(tx, other)?,
                }
            }
            Ok(Ok(RefreshedSession { user_id: UserId::from_trusted(user_id), device_id }))
        })
        .await
    }

    async fn delete_device(&self, user_id: &UserId, device_id: &str) -> StoreResult<()> {
        let (id, device) = (user_id.as_str().to_owned(), device_id.to_owned());
        self.write(move |tx| {
            delete_device_tokens(tx, &id, Some(&device))?;
            tx.execute(
                "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
                [&id, &device],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn delete_all_devices(&self, user_id: &UserId) -> StoreResult<()> {
        let id = user_id.as_str().to_owned();
        self.write(move |tx| {
            delete_devices_but(tx, &id, None)?;
            delete_login_tokens(tx, &id)
        })
        .await
    }

    async fn devices(&self, user_id: &UserId) -> StoreResult<Vec<DeviceRecord>> {
        let id = user_id.as_str().to_owned();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT device_id, display_name, last_seen_ip, last_seen_ts FROM devices
                 WHERE user_id = ?1 ORDER BY device_id",
            )?
            .query_map([id], device_from_row)?
            .collect()
        })
        .await
    }

    async fn device(&self, user_id: &UserId, device_id: &str) -> StoreResult<Option<DeviceRecord>> {
        let (id, device) = (user_id.as_str().to_owned(), device_id.to_owned());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT device_id, display_name, last_seen_ip, last_seen_ts FROM devices
                 WHERE user_id = ?1 AND device_id = ?2",
            )?
            .query_row([id, device], device_from_row)
            .optional()
        })
        .await
    }

    async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<&str>,
    ) -> StoreResult<bool> {
        let (id, device, name) = (
            user_id.as_str().to_owned(),
            device_id.to_owned(),
            name.map(str::to_owned),
        );
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE devices SET display_name = ?3 WHERE user_id = ?1 AND device_id = ?2",
                    params![id, device, name],
                )
                .map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_devices(&self, user_id: &UserId, device_ids: &[String]) -> StoreResult<()> {
        let (id, devices) = (user_id.as_str().to_owned(), device_ids.to_vec());
        self.write(move |tx| {
            for device in &devices {
                delete_device_tokens(tx, &id, Some(device))?;
                tx.execute(
                    "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
                    [&id, device],
                )
                .map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn touch_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        ip: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        let (id, device, ip) = (
            user_id.as_str().to_owned(),
            device_id.to_owned(),
            ip.to_owned(),
        );
        self.write(move |tx| {
            tx.execute(
                "UPDATE devices SET last_seen_ip = ?3, last_seen_ts = ?4 WHERE user_id = ?1 AND device_id = ?2",
                params![id, device, ip, ts(Some(now))],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn delete_threepid(&self, user_id: &UserId, threepid: &Threepid) -> StoreResult<bool> {
        let (id, medium, address) = (
            user_id.as_str().to_owned(),
            threepid.medium.as_str(),
            threepid.address.clone(),
        );
        self.write(move |tx| {
            let n = tx
                .execute(
                    "DELETE FROM threepids WHERE user_id = ?1 AND medium = ?2 AND address = ?3",
                    params![id, medium, address],
                )
                .map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }

    async fn register(&self, r: NewRegistration) -> StoreResult<()> {
        self.write(move |tx| {
            let uid = r.user.user_id.as_str();
            tx.execute(
                "INSERT INTO users (user_id, password_hash, is_admin, is_guest, created_ts) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![uid, r.user.password_hash, r.user.is_admin, r.user.is_guest, ts(Some(r.user.created_at))],
            )
            .map_err(|e| if is_unique_violation(&e) { StoreError::UserExists } else { backend(e) })?;
            for tp in &r.threepids {
                tx.execute(
                    "INSERT INTO threepids (medium, address, user_id, added_ts) VALUES (?1, ?2, ?3, ?4)",
                    params![tp.medium.as_str(), tp.address, uid, ts(Some(r.user.created_at))],
                )
                .map_err(|e| if is_unique_violation(&e) { StoreError::ThreepidInUse } else { backend(e) })?;
            }
            if let Some(token) = &r.registration_token {
                let n = tx
                    .execute(
                        "UPDATE registration_tokens SET pending = pending - 1, completed = completed + 1
                         WHERE token = ?1 AND pending > 0",
                        [token],
                    )
                    .map_err(backend)?;
                if n == 0 {
                    return Err(StoreError::TokenUnusable);
                }
                // Each session holding `token` in its data holds one
                // pending use, until it expires and the sweep gives it back
                // — consumed or not, so that a registration cut off after
                // its session was consumed (a crash, a client gone) cannot
                // leak a use. This use is completed: one consumed holder,
                // any one (they are alike), lets go of it.
                tx.execute(
                    "UPDATE uia_sessions SET data = json_remove(data, '$.registration_token')
                     WHERE id = (SELECT id FROM uia_sessions
                                 WHERE consumed = 1 AND json_extract(data, '$.registration_token') = ?1
                                 LIMIT 1)",
                    [token],
                )
                .map_err(backend)?;
            }
            if let Some(session) = &r.session {
                start_session(tx, session)?;
            }
            Ok(())
        })
        .await
    }

    async fn create_uia_session(
        &self,
        session: &UiaSessionRecord,
        now: Timestamp,
    ) -> StoreResult<()> {
        let s = session.clone();
        self.write(move |tx| {
            expire_uia_sessions(tx, now)?;
            tx.execute(
                "INSERT INTO uia_sessions (id, user_id, method, path, body_hash, completed, data, created_ts, expires_ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    s.id,
                    s.binding.user_id,
                    s.binding.method,
                    s.binding.path,
                    &s.binding.body_hash[..],
                    serde_json::to_string(&s.completed).map_err(backend)?,
                    s.data.to_string(),
                    ts(Some(s.created_at)),
                    ts(Some(s.expires_at)),
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn uia_session(&self, id: &str) -> StoreResult<Option<UiaSessionRecord>> {
        let id = id.to_owned();
        let row = self
            .read(move |c| {
                c.prepare_cached(
                    "SELECT id, user_id, method, path, body_hash, completed, data, created_ts, expires_ts, consumed
                     FROM uia_sessions WHERE id = ?1",
                )?
                .query_row([id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                        r.get::<_, Option<i64>>(8)?,
                        r.get::<_, bool>(9)?,
                    ))
                })
                .optional()
            })
            .await?;
        let Some((id, user_id, method, path, hash, completed, data, created, expires, consumed)) =
            row
        else {
            return Ok(None);
        };
        let body_hash: [u8; 32] = hash
            .try_into()
            .map_err(|_| backend("corrupt UIA body hash"))?;
        Ok(Some(UiaSessionRecord {
            id,
            binding: Binding {
                user_id,
                method,
                path,
                body_hash,
            },
            completed: serde_json::from_str(&completed).map_err(backend)?,
            data: serde_json::from_str(&data).map_err(backend)?,
            created_at: from_ts(created).unwrap_or(0),
            expires_at: from_ts(expires).unwrap_or(0),
            consumed,
        }))
    }

    async fn update_uia_session(
        &self,
        id: &str,
        completed: &[String],
        data: &serde_json::Value,
        seen_completed: &[String],
        seen_data: &serde_json::Value,
    ) -> StoreResult<bool> {
        // Both columns hold serde_json's canonical text (sorted keys), so
        // text equality is value equality.
        let row = [
            id.to_owned(),
            serde_json::to_string(completed).map_err(backend)?,
            data.to_string(),
            serde_json::to_string(seen_completed).map_err(backend)?,
            seen_data.to_string(),
        ];
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE uia_sessions SET completed = ?2, data = ?3
                     WHERE id = ?1 AND consumed = 0 AND completed = ?4 AND data = ?5",
                    params![row[0], row[1], row[2], row[3], row[4]],
                )
                .map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }

    async fn consume_uia_session(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE uia_sessions SET consumed = 1 WHERE id = ?1 AND consumed = 0",
                    [id],
                )
                .map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }

    async fn accept_policies(
        &self,
        user_id: &UserId,
        policies: &[(String, String)],
        now: Timestamp,
    ) -> StoreResult<()> {
        let (id, policies) = (user_id.as_str().to_owned(), policies.to_vec());
        self.write(move |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO accepted_policies (user_id, policy, version, accepted_ts)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (user_id, policy) DO UPDATE
                     SET version = excluded.version, accepted_ts = excluded.accepted_ts",
                )
                .map_err(backend)?;
            for (policy, version) in &policies {
                stmt.execute(params![id, policy, version, ts(Some(now))])
                    .map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn accepted_policies(&self, user_id: &UserId) -> StoreResult<Vec<(String, String)>> {
        let id = user_id.as_str().to_owned();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT policy, version FROM accepted_policies WHERE user_id = ?1 ORDER BY policy",
            )?
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
        })
        .await
    }

    async fn release_uia_session(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(move |tx| {
            tx.execute("UPDATE uia_sessions SET consumed = 0 WHERE id = ?1", [id])
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn create_registration_token(
        &self,
        t: &RegistrationToken,
        now: Timestamp,
    ) -> StoreResult<()> {
        let t = t.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO registration_tokens (token, uses_allowed, pending, completed, expiry_ts, created_ts)
                 VALUES (?1, ?2, 0, 0, ?3, ?4)",
                params![t.token, t.uses_allowed, ts(t.expiry), ts(Some(now))],
            )
            .map_err(|e| if is_unique_violation(&e) { StoreError::TokenExists } else { backend(e) })?;
            Ok(())
        })
        .await
    }

    async fn registration_tokens(&self) -> StoreResult<Vec<RegistrationToken>> {
        self.read(|c| {
            c.prepare("SELECT token, uses_allowed, pending, completed, expiry_ts FROM registration_tokens ORDER BY token")?
                .query_map([], token_from_row)?
                .collect()
        })
        .await
    }

    async fn registration_token(&self, token: &str) -> StoreResult<Option<RegistrationToken>> {
        let token = token.to_owned();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT token, uses_allowed, pending, completed, expiry_ts FROM registration_tokens WHERE token = ?1",
            )?
            .query_row([token], token_from_row)
            .optional()
        })
        .await
    }

    async fn delete_registration_token(&self, token: &str) -> StoreResult<bool> {
        let token = token.to_owned();
        self.write(move |tx| {
            Ok(tx
                .execute("DELETE FROM registration_tokens WHERE token = ?1", [token])
                .map_err(backend)?
                > 0)
        })
        .await
    }

    async fn reserve_registration_token(&self, token: &str, now: Timestamp) -> StoreResult<bool> {
        let token = token.to_owned();
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE registration_tokens SET pending = pending + 1
                     WHERE token = ?1
                       AND (expiry_ts IS NULL OR expiry_ts > ?2)
                       AND (uses_allowed IS NULL OR pending + completed < uses_allowed)",
                    params![token, ts(Some(now))],
                )
                .map_err(backend)?;
            Ok(n > 0)
        })
        .await
    }

    async fn release_registration_token(&self, token: &str) -> StoreResult<()> {
        let token = token.to_owned();
        self.write(move |tx| {
            tx.execute(
                "UPDATE registration_tokens SET pending = pending - 1 WHERE token = ?1 AND pending > 0",
                [token],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn upsert_threepid_validation(
        &self,
        v: &ThreepidValidation,
    ) -> StoreResult<ThreepidValidation> {
        let v = v.clone();
        self.write(move |tx| {
            let existing = tx
                .query_row(
                    &format!("SELECT {VALIDATION_COLUMNS} FROM threepid_validations
                              WHERE client_secret_hash = ?1 AND medium = ?2 AND address = ?3"),
                    params![&v.client_secret.0.0[..], v.threepid.medium.as_str(), v.threepid.address],
                    validation_from_row,
                )
                .optional()
                .map_err(backend)?;
            match existing {
                // The same attempt again: nothing new is sent; same session.
                Some(old) if old.send_attempt >= v.send_attempt => Ok(old),
                // A new attempt: a new token for the same session.
                Some(old) => {
                    tx.execute(
                        "UPDATE threepid_validations SET token_hash = ?2, send_attempt = ?3, expires_ts = ?4, next_link = ?5, failed_attempts = 0 WHERE sid = ?1",
                        params![old.sid, &v.token_hash.0[..], i64::try_from(v.send_attempt).unwrap_or(i64::MAX), ts(Some(v.expires_at)), v.next_link],
                    )
                    .map_err(backend)?;
                    Ok(ThreepidValidation { sid: old.sid, validated_at: old.validated_at, created_at: old.created_at, failed_attempts: 0, ..v })
                }
                None => {
                    tx.execute(
                        "INSERT INTO threepid_validations
                           (sid, client_secret_hash, medium, address, token_hash, send_attempt, created_ts, expires_ts, next_link)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        params![
                            v.sid,
                            &v.client_secret.0.0[..],
                            v.threepid.medium.as_str(),
                            v.threepid.address,
                            &v.token_hash.0[..],
                            i64::try_from(v.send_attempt).unwrap_or(i64::MAX),
                            ts(Some(v.created_at)),
                            ts(Some(v.expires_at)),
                            v.next_link,
                        ],
                    )
                    .map_err(backend)?;
                    Ok(v)
                }
            }
        })
        .await
    }

    async fn threepid_validation(&self, sid: &str) -> StoreResult<Option<ThreepidValidation>> {
        let sid = sid.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {VALIDATION_COLUMNS} FROM threepid_validations WHERE sid = ?1"
            ))?
            .query_row([sid], validation_from_row)
            .optional()
        })
        .await
    }

    async fn redeem_threepid_secret(
        &self,
        sid: &str,
        client_secret: &ClientSecretHash,
        token_hash: &TokenHash,
        now: Timestamp,
        max_failures: u32,
    ) -> StoreResult<Option<ThreepidValidation>> {
        let (sid, secret, hash) = (sid.to_owned(), *client_secret, *token_hash);
        self.write(move |tx| {
            let found = tx
                .query_row(
                    &format!("SELECT {VALIDATION_COLUMNS} FROM threepid_validations WHERE sid = ?1"),
                    [&sid],
                    validation_from_row,
                )
                .optional()
                .map_err(backend)?;
            let Some(mut v) = found else { return Ok(None) };
            if v.failed_attempts >= max_failures || v.expires_at <= now {
                return Ok(None);
            }
            if v.client_secret != secret || v.token_hash != hash {
                tx.execute(
                    "UPDATE threepid_validations SET failed_attempts = failed_attempts + 1 WHERE sid = ?1",
                    [&sid],
                )
                .map_err(backend)?;
                return Ok(None);
            }
            if v.validated_at.is_none() {
                tx.execute(
                    "UPDATE threepid_validations SET validated_ts = ?2 WHERE sid = ?1",
                    params![sid, ts(Some(now))],
                )
                .map_err(backend)?;
                v.validated_at = Some(now);
            }
            Ok(Some(v))
        })
        .await
    }

    async fn create_login_token(
        &self,
        hash: &TokenHash,
        user_id: &UserId,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let (hash, id) = (*hash, user_id.as_str().to_owned());
        self.write(move |tx| {
            tx.execute("DELETE FROM login_tokens WHERE expires_ts <= ?1", [ts(Some(now))]).map_err(backend)?;
            tx.execute(
                "INSERT INTO login_tokens (token_hash, user_id, expires_ts, created_ts) VALUES (?1, ?2, ?3, ?4)",
                params![&hash.0[..], id, ts(Some(expires_at)), ts(Some(now))],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn prune_expired(&self, now: Timestamp) -> StoreResult<u64> {
        self.write(move |tx| {
            let before: i64 = tx
                .query_row("SELECT total_changes()", [], |r| r.get(0))
                .map_err(backend)?;
            expire_uia_sessions(tx, now)?;
            let cutoff = ts(Some(now.saturating_sub(VALIDATION_GRACE_MS)));
            tx.execute(
                "DELETE FROM threepid_validations WHERE expires_ts < ?1",
                [cutoff],
            )
            .map_err(backend)?;
            for table in ["login_tokens", "web_sessions"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE expires_ts <= ?1"),
                    [ts(Some(now))],
                )
                .map_err(backend)?;
            }
            let after: i64 = tx
                .query_row("SELECT total_changes()", [], |r| r.get(0))
                .map_err(backend)?;
            Ok(u64::try_from(after - before).unwrap_or(0))
        })
        .await
    }

    async fn login_token_owner(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<UserId>> {
        let (hash, now) = (*hash, ts(Some(now)));
        self.read(move |c| {
            c.prepare_cached(
                "SELECT user_id FROM login_tokens WHERE token_hash = ?1 AND expires_ts > ?2",
            )?
            .query_row(params![&hash.0[..], now], |r| {
                Ok(UserId::from_trusted(r.get(0)?))
            })
            .optional()
        })
        .await
    }

    async fn consume_login_token(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<UserId>> {
        let hash = *hash;
        self.write(move |tx| {
            let row: Option<(String, Option<i64>)> = tx
                .query_row(
                    "SELECT user_id, expires_ts FROM login_tokens WHERE token_hash = ?1",
                    [&hash.0[..]],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(backend)?;
            tx.execute(
                "DELETE FROM login_tokens WHERE token_hash = ?1",
                [&hash.0[..]],
            )
            .map_err(backend)?;
            Ok(row
                .filter(|(_, exp)| from_ts(*exp).is_some_and(|e| e > now))
                .map(|(u, _)| UserId::from_trusted(u)))
        })
        .await
    }

    async fn cross_signing_keys(&self, user_id: &UserId) -> StoreResult<Option<serde_json::Value>> {
        let id = user_id.as_str().to_owned();
        let text: Option<String> = self
            .read(move |c| {
                c.prepare_cached("SELECT keys FROM cross_signing_keys WHERE user_id = ?1")?
                    .query_row([id], |r| r.get(0))
                    .optional()
            })
            .await?;
        text.map(|t| serde_json::from_str(&t).map_err(backend))
            .transpose()
    }

    async fn set_cross_signing_keys(
        &self,
        user_id: &UserId,
        keys: &serde_json::Value,
        now: Timestamp,
    ) -> StoreResult<()> {
        let (id, keys) = (user_id.as_str().to_owned(), keys.to_string());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO cross_signing_keys (user_id, keys, updated_ts) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id) DO UPDATE SET keys = excluded.keys, updated_ts = excluded.updated_ts",
                params![id, keys, ts(Some(now))],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn set_admin(&self, user_id: &UserId, admin: bool) -> StoreResult<()> {
        let id = user_id.as_str().to_owned();
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE users SET is_admin = ?2 WHERE user_id = ?1",
                    params![id, admin],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NoSuchUser);
            }
            Ok(())
        })
        .await
    }

    async fn set_moderation(
        &self,
        user_id: &UserId,
        moderation: Moderation,
        on: bool,
    ) -> StoreResult<()> {
        let id = user_id.as_str().to_owned();
        self.write(move |tx| {
            let sql = match moderation {
                Moderation::Lock => "UPDATE users SET locked = ?2 WHERE user_id = ?1",
                Moderation::Suspension => "UPDATE users SET suspended = ?2 WHERE user_id = ?1",
            };
            let n = tx.execute(sql, params![id, on]).map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NoSuchUser);
            }
            Ok(())
        })
        .await
    }

    async fn reactivate_user(&self, user_id: &UserId) -> StoreResult<()> {
        let id = user_id.as_str().to_owned();
        self.write(move |tx| {
            let n = tx
                .execute("UPDATE users SET deactivated = 0 WHERE user_id = ?1", [&id])
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NoSuchUser);
            }
            Ok(())
        })
        .await
    }

    async fn import_users(&self, users: Vec<ImportedUser>) -> StoreResult<ImportCounts> {
        let inner = self.inner.clone();
        self.write(move |tx| {
            let mut staged = inner
                .staged_tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            import_batch(tx, &users, staged.as_mut()).map_err(backend)
        })
        .await
    }

    async fn request_homeserver_sync(
        &self,
        localpart: &str,
        change: &HomeserverChange,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let (localpart, change) = (localpart.to_owned(), change.clone());
        self.write(move |tx| {
            let existing: Option<String> = tx
                .query_row(
                    "SELECT deleted_devices FROM homeserver_syncs WHERE localpart = ?1",
                    [&localpart],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            let mut devices: Vec<String> = existing
                .and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or_default();
            for d in change.deleted_devices {
                if !devices.contains(&d) {
                    devices.push(d);
                }
            }
            let devices = serde_json::to_string(&devices).map_err(backend)?;
            tx.query_row(
                "INSERT INTO homeserver_syncs (localpart, version, erase, reactivate, deleted_devices, next_attempt_ts)
                 VALUES (?1, 1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (localpart) DO UPDATE SET
                    version = version + 1,
                    erase = erase OR excluded.erase,
                    reactivate = (reactivate OR excluded.reactivate) AND NOT excluded.erase,
                    deleted_devices = excluded.deleted_devices,
                    next_attempt_ts = excluded.next_attempt_ts
                 RETURNING version",
                params![localpart, change.erase, change.reactivate, devices, ts(Some(now))],
                |r| r.get::<_, i64>(0),
            )
            .map(|v| u64::try_from(v).unwrap_or(0))
            .map_err(backend)
        })
        .await
    }

    async fn due_homeserver_syncs(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<HomeserverSync>> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {SYNC_COLUMNS} FROM homeserver_syncs WHERE next_attempt_ts <= ?1
                 ORDER BY next_attempt_ts LIMIT ?2"
            ))?
            .query_map(params![ts(Some(now)), limit], sync_from_row)?
            .collect()
        })
        .await
    }

    async fn homeserver_sync(&self, localpart: &str) -> StoreResult<Option<HomeserverSync>> {
        let localpart = localpart.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {SYNC_COLUMNS} FROM homeserver_syncs WHERE localpart = ?1"
            ))?
            .query_row([localpart], sync_from_row)
            .optional()
        })
        .await
    }

    async fn finish_homeserver_sync(&self, localpart: &str, version: u64) -> StoreResult<()> {
        let localpart = localpart.to_owned();
        let version = i64::try_from(version).unwrap_or(i64::MAX);
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM homeserver_syncs WHERE localpart = ?1 AND version = ?2",
                params![localpart, version],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn postpone_homeserver_sync(
        &self,
        localpart: &str,
        next_attempt_at: Timestamp,
    ) -> StoreResult<()> {
        let localpart = localpart.to_owned();
        self.write(move |tx| {
            tx.execute(
                "UPDATE homeserver_syncs SET attempts = attempts + 1, next_attempt_ts = ?2
                 WHERE localpart = ?1",
                params![localpart, ts(Some(next_attempt_at))],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn create_web_session(&self, hash: &TokenHash, session: &WebSession) -> StoreResult<()> {
        let (hash, session) = (*hash, session.clone());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO web_sessions (id_hash, user_id, csrf_token, expires_ts) VALUES (?1, ?2, ?3, ?4)",
                params![&hash.0[..], session.user_id.as_str(), session.csrf_token, ts(Some(session.expires_at))],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn web_session(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<WebSession>> {
        let hash = *hash;
        self.read(move |c| {
            c.prepare_cached(
                "SELECT w.user_id, w.csrf_token, w.expires_ts FROM web_sessions w
                 JOIN users u ON u.user_id = w.user_id
                 WHERE w.id_hash = ?1 AND w.expires_ts > ?2 AND u.deactivated = 0",
            )?
            .query_row(params![&hash.0[..], ts(Some(now))], |r| {
                Ok(WebSession {
                    user_id: UserId::from_trusted(r.get(0)?),
                    csrf_token: r.get(1)?,
                    expires_at: from_ts(r.get(2)?).unwrap_or(0),
                })
            })
            .optional()
        })
        .await
    }

    async fn delete_web_session(&self, hash: &TokenHash) -> StoreResult<()> {
        let hash = *hash;
        self.write(move |tx| {
            tx.execute("DELETE FROM web_sessions WHERE id_hash = ?1", [&hash.0[..]])
                .map_err(backend)?;
            Ok(())
        })
        .await
    }
}
