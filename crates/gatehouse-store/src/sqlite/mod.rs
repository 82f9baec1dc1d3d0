//! The embedded SQLite backend (rusqlite).
//!
//! One writer connection behind a mutex (SQLite allows one writer at a time
//! anyway; serialising in-process avoids `SQLITE_BUSY` storms) and a small
//! pool of reader connections, which WAL lets run beside the writer. All
//! calls run on tokio's blocking pool so the async workers never wait on disk.

mod accounts;
mod bulk;
mod migrations;
mod pool;
mod rows;
mod tokens;
mod uia;
mod upstream;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gatehouse_core::Timestamp;
use gatehouse_core::identifier::Threepid;
use gatehouse_core::refresh::{Endpoint, RefreshId, Rejection};
use gatehouse_core::registration_token::Uses;
use gatehouse_core::token::TokenHash;
use gatehouse_core::uia::Binding;
use gatehouse_core::user_id::UserId;
use rusqlite::{Connection, OptionalExtension, params};

use crate::prelude::*;
use crate::{
    AccessTokenRecord, ClientSecretHash, DeviceRecord, EndSessions, HomeserverChange,
    HomeserverSync, ImportCounts, ImportedUser, Moderation, NewRegistration, NewSession,
    NewTokenPair, NewUser, RefreshedSession, RegistrationToken, StoreError, StoreResult,
    ThreepidRecord, ThreepidValidation, UiaSessionRecord, UserRecord, WebSession,
};
use bulk::{SYNC_COLUMNS, StagedToken, import_batch, sync_from_row};
use rows::{
    USER_COLUMNS, VALIDATION_COLUMNS, device_from_row, token_from_row, user_from_row,
    validation_from_row,
};
use tokens::{delete_device_tokens, delete_devices_but, delete_login_tokens, start_session};

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

fn ts(v: Option<Timestamp>) -> Option<i64> {
    v.map(|t| i64::try_from(t).unwrap_or(i64::MAX))
}

fn from_ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(|t| u64::try_from(t).unwrap_or(0))
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

#[async_trait]
impl Users for SqliteStore {
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

    async fn highest_bcrypt_cost(&self) -> StoreResult<Option<u32>> {
        self.read(|c| {
            // `$2b$12$…`: the cost is characters 5 and 6.
            c.query_row(
                "SELECT max(CAST(substr(password_hash, 5, 2) AS INTEGER)) FROM users
                 WHERE password_hash LIKE '$2_$%'",
                [],
                |r| r.get::<_, Option<u32>>(0),
            )
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
        self.write(move |tx| accounts::set_password_hash(tx, id, hash, sessions))
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
        self.write(move |tx| accounts::deactivate_user(tx, id))
            .await
    }

    async fn set_admin(&self, user_id: &UserId, admin: bool) -> StoreResult<()> {
        let id = user_id.as_str().to_owned();
        self.write(move |tx| accounts::set_admin(tx, id, admin))
            .await
    }

    async fn set_moderation(
        &self,
        user_id: &UserId,
        moderation: Moderation,
        on: bool,
    ) -> StoreResult<()> {
        let id = user_id.as_str().to_owned();
        self.write(move |tx| accounts::set_moderation(tx, id, moderation, on))
            .await
    }

    async fn reactivate_user(&self, user_id: &UserId) -> StoreResult<()> {
        let id = user_id.as_str().to_owned();
        self.write(move |tx| accounts::reactivate_user(tx, id))
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
}

#[async_trait]
impl Devices for SqliteStore {
    async fn create_session(&self, s: NewSession) -> StoreResult<()> {
        self.write(move |tx| start_session(tx, &s)).await
    }

    async fn access_token(&self, hash: &TokenHash) -> StoreResult<Option<AccessTokenRecord>> {
        let hash = *hash;
        self.read(move |c| tokens::access_token(c, hash)).await
    }

    async fn complete_rotation(
        &self,
        parent: RefreshId,
        issued_with: RefreshId,
    ) -> StoreResult<()> {
        self.write(move |tx| tokens::complete_rotation(tx, parent, issued_with))
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
        self.write(move |tx| tokens::refresh_pair(tx, presented, endpoint, pair, now))
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
        self.write(move |tx| accounts::rename_device(tx, id, device, name))
            .await
    }

    async fn delete_devices(&self, user_id: &UserId, device_ids: &[String]) -> StoreResult<()> {
        let (id, devices) = (user_id.as_str().to_owned(), device_ids.to_vec());
        self.write(move |tx| accounts::delete_devices(tx, id, devices))
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
        self.write(move |tx| accounts::touch_device(tx, id, device, ip, now))
            .await
    }
}

#[async_trait]
impl Threepids for SqliteStore {
    async fn add_threepid(
        &self,
        user_id: &UserId,
        threepid: &Threepid,
        now: Timestamp,
    ) -> StoreResult<()> {
        let id = user_id.as_str().to_owned();
        let (medium, address) = (threepid.medium.as_str(), threepid.address.clone());
        self.write(move |tx| accounts::add_threepid(tx, id, medium, address, now))
            .await
    }

    async fn threepids(&self, user_id: &UserId) -> StoreResult<Vec<ThreepidRecord>> {
        let id = user_id.as_str().to_owned();
        self.read(move |c| accounts::threepids(c, id)).await
    }

    async fn delete_threepid(&self, user_id: &UserId, threepid: &Threepid) -> StoreResult<bool> {
        let (id, medium, address) = (
            user_id.as_str().to_owned(),
            threepid.medium.as_str(),
            threepid.address.clone(),
        );
        self.write(move |tx| accounts::delete_threepid(tx, id, medium, address))
            .await
    }

    async fn upsert_threepid_validation(
        &self,
        v: &ThreepidValidation,
    ) -> StoreResult<ThreepidValidation> {
        let v = v.clone();
        self.write(move |tx| uia::upsert_threepid_validation(tx, v))
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
        self.write(move |tx| uia::redeem_threepid_secret(tx, sid, secret, hash, now, max_failures))
            .await
    }
}

#[async_trait]
impl UiaSessions for SqliteStore {
    async fn create_uia_session(
        &self,
        session: &UiaSessionRecord,
        now: Timestamp,
    ) -> StoreResult<()> {
        let s = session.clone();
        self.write(move |tx| uia::create_uia_session(tx, s, now))
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
        self.write(move |tx| uia::update_uia_session(tx, row)).await
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
        self.write(move |tx| uia::accept_policies(tx, id, policies, now))
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
}

#[async_trait]
impl RegistrationTokens for SqliteStore {
    async fn create_registration_token(
        &self,
        t: &RegistrationToken,
        now: Timestamp,
    ) -> StoreResult<()> {
        let t = t.clone();
        self.write(move |tx| uia::create_registration_token(tx, t, now))
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
        self.write(move |tx| uia::reserve_registration_token(tx, token, now))
            .await
    }

    async fn release_registration_token(&self, token: &str) -> StoreResult<()> {
        let token = token.to_owned();
        self.write(move |tx| uia::change_token_uses(tx, &token, Uses::release).map(drop))
            .await
    }
}

#[async_trait]
impl LoginTokens for SqliteStore {
    async fn create_login_token(
        &self,
        hash: &TokenHash,
        user_id: &UserId,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let (hash, id) = (*hash, user_id.as_str().to_owned());
        self.write(move |tx| tokens::create_login_token(tx, hash, id, expires_at, now))
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
        self.write(move |tx| tokens::consume_login_token(tx, hash, now))
            .await
    }
}

#[async_trait]
impl Keys for SqliteStore {
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
        self.write(move |tx| accounts::set_cross_signing_keys(tx, id, keys, now))
            .await
    }
}

#[async_trait]
impl HomeserverSyncs for SqliteStore {
    async fn request_homeserver_sync(
        &self,
        localpart: &str,
        change: &HomeserverChange,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let (localpart, change) = (localpart.to_owned(), change.clone());
        self.write(move |tx| bulk::request_homeserver_sync(tx, localpart, change, now))
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
        self.write(move |tx| bulk::postpone_homeserver_sync(tx, localpart, next_attempt_at))
            .await
    }
}

#[async_trait]
impl WebSessions for SqliteStore {
    async fn create_web_session(&self, hash: &TokenHash, session: &WebSession) -> StoreResult<()> {
        let (hash, session) = (*hash, session.clone());
        self.write(move |tx| bulk::create_web_session(tx, hash, session))
            .await
    }

    async fn web_session(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<WebSession>> {
        let hash = *hash;
        self.read(move |c| bulk::web_session(c, hash, now)).await
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

#[async_trait]
impl Store for SqliteStore {
    async fn register(&self, r: NewRegistration) -> StoreResult<()> {
        self.write(move |tx| uia::register(tx, r)).await
    }

    async fn prune_expired(&self, now: Timestamp) -> StoreResult<u64> {
        self.write(move |tx| uia::prune_expired(tx, now)).await
    }
}
