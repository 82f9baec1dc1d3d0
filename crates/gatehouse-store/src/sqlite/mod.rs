//! The embedded SQLite backend (rusqlite).
//!
//! One writer connection behind a mutex (SQLite allows one writer at a time
//! anyway; serialising in-process avoids `SQLITE_BUSY` storms) and a small
//! pool of reader connections, which WAL lets run beside the writer. All
//! calls run on tokio's blocking pool so the async workers never wait on disk.

mod migrations;

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
    AccessTokenRecord, DeviceRecord, NewSession, NewTokenPair, NewUser, RefreshedSession, Store,
    StoreError, StoreResult, UserRecord,
};

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
        migrations::run(&mut writer).map_err(backend)?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
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

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let _slot = self.inner.reader_slots.acquire().await.map_err(backend)?;
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().map_err(backend)?.pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_connection(&inner.path, inner.durability)?,
            };
            let out = f(&conn).map_err(backend);
            inner.readers.lock().map_err(backend)?.push(conn);
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
            let mut conn = inner.writer.lock().map_err(backend)?;
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
    })
}

const USER_COLUMNS: &str =
    "u.user_id, u.password_hash, u.is_admin, u.is_guest, u.deactivated, u.created_ts";

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

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: NewUser) -> StoreResult<()> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO users (user_id, password_hash, is_admin, created_ts) VALUES (?1, ?2, ?3, ?4)",
                params![user.user_id.as_str(), user.password_hash, user.is_admin, ts(Some(user.created_at))],
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

    async fn set_password_hash(&self, user_id: &UserId, hash: &str) -> StoreResult<()> {
        let (id, hash) = (user_id.as_str().to_owned(), hash.to_owned());
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE users SET password_hash = ?2 WHERE user_id = ?1",
                    [&id, &hash],
                )
                .map_err(backend)?;
            if n == 0 {
                Err(StoreError::NoSuchUser)
            } else {
                Ok(())
            }
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
            tx.execute("DELETE FROM threepids WHERE user_id = ?1", [&id])
                .map_err(backend)?;
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

    async fn threepids(&self, user_id: &UserId) -> StoreResult<Vec<Threepid>> {
        let id = user_id.as_str().to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT medium, address FROM threepids WHERE user_id = ?1 ORDER BY medium, address",
            )?;
            let rows = stmt.query_map([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (medium, address) = row?;
                if let Some(medium) = Medium::parse(&medium) {
                    out.push(Threepid { medium, address });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn create_session(&self, s: NewSession) -> StoreResult<()> {
        self.write(move |tx| {
            let uid = s.user_id.as_str();
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
        })
        .await
    }

    async fn access_token(&self, hash: &TokenHash) -> StoreResult<Option<AccessTokenRecord>> {
        let hash = *hash;
        self.read(move |c| {
            c.prepare_cached(
                "SELECT a.user_id, a.device_id, u.is_guest, a.expires_ts, a.refresh_id, a.pending_parent
                 FROM access_tokens a JOIN users u ON u.user_id = a.user_id
                 WHERE a.token_hash = ?1",
            )?
            .query_row([&hash.0[..]], |r| {
                Ok(AccessTokenRecord {
                    user_id: UserId::from_trusted(r.get(0)?),
                    device_id: r.get(1)?,
                    is_guest: r.get(2)?,
                    expires_at: from_ts(r.get(3)?),
                    refresh_id: r.get(4)?,
                    pending_parent: r.get(5)?,
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
                    Effect::Mint { parent } => insert_pair(tx, &user_id, &device_id, &pair, parent, now)?,
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
            delete_device_tokens(tx, &id, None)?;
            tx.execute("DELETE FROM devices WHERE user_id = ?1", [&id])
                .map_err(backend)?;
            Ok(())
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
            .query_map([id], |r| {
                Ok(DeviceRecord {
                    device_id: r.get(0)?,
                    display_name: r.get(1)?,
                    last_seen_ip: r.get(2)?,
                    last_seen_at: from_ts(r.get(3)?),
                })
            })?
            .collect()
        })
        .await
    }
}
