//! [`Store`] for [`PostgresStore`]: each method one transaction (or one
//! statement, for reads), through the helpers of the sibling modules.

use async_trait::async_trait;
use gatehouse_core::Timestamp;
use gatehouse_core::identifier::{Medium, Threepid};
use gatehouse_core::refresh::{Endpoint, RefreshId, Rejection};
use gatehouse_core::registration_token::Uses;
use gatehouse_core::token::TokenHash;
use gatehouse_core::user_id::UserId;

use super::rows::{
    self, DEVICE_COLUMNS, SYNC_COLUMNS, TOKEN_COLUMNS, USER_COLUMNS, VALIDATION_COLUMNS,
};
use super::uia::{UIA_COLUMNS, uia_session_from_row};
use super::{
    PostgresStore, accounts, backend, delegation, exec, from_ts, tokens, ts, uia, write_tx,
};
use crate::prelude::*;
use crate::{
    AccessTokenRecord, ClientSecretHash, DeviceRecord, EndSessions, HomeserverChange,
    HomeserverSync, ImportCounts, ImportedUser, Moderation, NewRegistration, NewSession,
    NewTokenPair, NewUser, RefreshedSession, RegistrationToken, StoreResult, ThreepidRecord,
    ThreepidValidation, UiaSessionRecord, UserRecord, WebSession,
};

#[async_trait]
impl Users for PostgresStore {
    async fn create_user(&self, user: NewUser) -> StoreResult<()> {
        write_tx!(self, |tx| uia::create_user(&tx, &user).await?)
    }

    async fn user(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>> {
        self.read_opt(
            &format!("SELECT {USER_COLUMNS} FROM users u WHERE u.user_id = $1"),
            &[&user_id.as_str()],
        )
        .await?
        .map(|r| rows::user(&r))
        .transpose()
    }

    async fn user_by_threepid(&self, threepid: &Threepid) -> StoreResult<Option<UserRecord>> {
        self.read_opt(
            &format!(
                "SELECT {USER_COLUMNS} FROM threepids t JOIN users u ON u.user_id = t.user_id
                 WHERE t.medium = $1 AND t.address = $2"
            ),
            &[&threepid.medium.as_str(), &threepid.address],
        )
        .await?
        .map(|r| rows::user(&r))
        .transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        self.read_all(
            &format!("SELECT {USER_COLUMNS} FROM users u ORDER BY u.user_id"),
            &[],
        )
        .await?
        .iter()
        .map(rows::user)
        .collect()
    }

    async fn set_password_hash(
        &self,
        user_id: &UserId,
        hash: &str,
        sessions: EndSessions,
    ) -> StoreResult<()> {
        write_tx!(self, |tx| accounts::set_password_hash(
            &tx,
            user_id.as_str(),
            hash,
            &sessions
        )
        .await?)
    }

    async fn upgrade_password_hash(
        &self,
        user_id: &UserId,
        old: &str,
        new: &str,
    ) -> StoreResult<bool> {
        let n = exec(
            &self.client().await?,
            "UPDATE users SET password_hash = $3 WHERE user_id = $1 AND password_hash = $2",
            &[&user_id.as_str(), &old, &new],
        )
        .await?;
        Ok(n > 0)
    }

    async fn highest_bcrypt_cost(&self) -> StoreResult<Option<u32>> {
        // `$2b$12$…`: the cost is characters 5 and 6.
        let row = self
            .read_opt(
                "SELECT max(substr(password_hash, 5, 2)::int) FROM users
                 WHERE password_hash LIKE '$2_$%'",
                &[],
            )
            .await?;
        Ok(row
            .and_then(|r| r.get::<_, Option<i32>>(0))
            .and_then(|c| u32::try_from(c).ok()))
    }

    async fn deactivate_user(&self, user_id: &UserId) -> StoreResult<()> {
        write_tx!(self, |tx| accounts::deactivate_user(&tx, user_id.as_str())
            .await?)
    }

    async fn set_moderation(
        &self,
        user_id: &UserId,
        moderation: Moderation,
        on: bool,
    ) -> StoreResult<()> {
        write_tx!(self, |tx| accounts::set_moderation(
            &tx,
            user_id.as_str(),
            moderation,
            on
        )
        .await?)
    }

    async fn set_admin(&self, user_id: &UserId, admin: bool) -> StoreResult<()> {
        write_tx!(self, |tx| accounts::set_admin(&tx, user_id.as_str(), admin)
            .await?)
    }

    async fn reactivate_user(&self, user_id: &UserId) -> StoreResult<()> {
        write_tx!(self, |tx| accounts::reactivate_user(&tx, user_id.as_str())
            .await?)
    }

    async fn import_users(&self, users: Vec<ImportedUser>) -> StoreResult<ImportCounts> {
        write_tx!(self, |tx| delegation::import_batch(&tx, &users).await?)
    }
}

#[async_trait]
impl Devices for PostgresStore {
    async fn create_session(&self, session: NewSession) -> StoreResult<()> {
        write_tx!(self, |tx| tokens::start_session(&tx, &session).await?)
    }

    async fn access_token(&self, hash: &TokenHash) -> StoreResult<Option<AccessTokenRecord>> {
        tokens::access_token(&self.client().await?, *hash).await
    }

    async fn complete_rotation(
        &self,
        parent: RefreshId,
        issued_with: RefreshId,
    ) -> StoreResult<()> {
        write_tx!(self, |tx| tokens::complete_rotation(
            &tx,
            parent,
            issued_with
        )
        .await?)
    }

    async fn refresh(
        &self,
        presented: &TokenHash,
        endpoint: Endpoint,
        pair: NewTokenPair,
        now: Timestamp,
    ) -> StoreResult<Result<RefreshedSession, Rejection>> {
        write_tx!(self, |tx| tokens::refresh_pair(
            &tx, *presented, endpoint, pair, now
        )
        .await?)
    }

    async fn delete_device(&self, user_id: &UserId, device_id: &str) -> StoreResult<()> {
        let devices = [device_id.to_owned()];
        write_tx!(self, |tx| accounts::delete_devices(
            &tx,
            user_id.as_str(),
            &devices
        )
        .await?)
    }

    async fn delete_all_devices(&self, user_id: &UserId) -> StoreResult<()> {
        write_tx!(self, |tx| {
            tokens::delete_devices_but(&tx, user_id.as_str(), None).await?;
            tokens::delete_login_tokens(&tx, user_id.as_str()).await?;
            super::notify(&tx, user_id.as_str()).await?
        })
    }

    async fn devices(&self, user_id: &UserId) -> StoreResult<Vec<DeviceRecord>> {
        self.read_all(
            &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 ORDER BY device_id"),
            &[&user_id.as_str()],
        )
        .await?
        .iter()
        .map(rows::device)
        .collect()
    }

    async fn device(&self, user_id: &UserId, device_id: &str) -> StoreResult<Option<DeviceRecord>> {
        self.read_opt(
            &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 AND device_id = $2"),
            &[&user_id.as_str(), &device_id],
        )
        .await?
        .map(|r| rows::device(&r))
        .transpose()
    }

    async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<&str>,
    ) -> StoreResult<bool> {
        let n = exec(
            &self.client().await?,
            "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2",
            &[&user_id.as_str(), &device_id, &name],
        )
        .await?;
        Ok(n > 0)
    }

    async fn delete_devices(&self, user_id: &UserId, device_ids: &[String]) -> StoreResult<()> {
        write_tx!(self, |tx| accounts::delete_devices(
            &tx,
            user_id.as_str(),
            device_ids
        )
        .await?)
    }

    async fn touch_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        ip: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        exec(
            &self.client().await?,
            "UPDATE devices SET last_seen_ip = $3, last_seen_ts = $4 WHERE user_id = $1 AND device_id = $2",
            &[&user_id.as_str(), &device_id, &ip, &ts(now)],
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Threepids for PostgresStore {
    async fn add_threepid(
        &self,
        user_id: &UserId,
        threepid: &Threepid,
        now: Timestamp,
    ) -> StoreResult<()> {
        write_tx!(self, |tx| accounts::add_threepid(
            &tx,
            user_id.as_str(),
            threepid,
            now
        )
        .await?)
    }

    async fn threepids(&self, user_id: &UserId) -> StoreResult<Vec<ThreepidRecord>> {
        let rows = self
            .read_all(
                "SELECT medium, address, added_ts FROM threepids WHERE user_id = $1 ORDER BY medium, address",
                &[&user_id.as_str()],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(ThreepidRecord {
                    threepid: Threepid {
                        medium: Medium::parse(&r.get::<_, String>(0))?,
                        address: r.get(1),
                    },
                    added_at: from_ts(r.get(2)),
                })
            })
            .collect())
    }

    async fn delete_threepid(&self, user_id: &UserId, threepid: &Threepid) -> StoreResult<bool> {
        let n = exec(
            &self.client().await?,
            "DELETE FROM threepids WHERE user_id = $1 AND medium = $2 AND address = $3",
            &[
                &user_id.as_str(),
                &threepid.medium.as_str(),
                &threepid.address,
            ],
        )
        .await?;
        Ok(n > 0)
    }

    async fn upsert_threepid_validation(
        &self,
        validation: &ThreepidValidation,
    ) -> StoreResult<ThreepidValidation> {
        write_tx!(self, |tx| uia::upsert_threepid_validation(&tx, validation)
            .await?)
    }

    async fn threepid_validation(&self, sid: &str) -> StoreResult<Option<ThreepidValidation>> {
        self.read_opt(
            &format!("SELECT {VALIDATION_COLUMNS} FROM threepid_validations WHERE sid = $1"),
            &[&sid],
        )
        .await?
        .map(|r| rows::validation(&r))
        .transpose()
    }

    async fn redeem_threepid_secret(
        &self,
        sid: &str,
        client_secret: &ClientSecretHash,
        token_hash: &TokenHash,
        now: Timestamp,
        max_failures: u32,
    ) -> StoreResult<Option<ThreepidValidation>> {
        write_tx!(self, |tx| uia::redeem_threepid_secret(
            &tx,
            sid,
            *client_secret,
            *token_hash,
            now,
            max_failures
        )
        .await?)
    }
}

#[async_trait]
impl UiaSessions for PostgresStore {
    async fn create_uia_session(
        &self,
        session: &UiaSessionRecord,
        now: Timestamp,
    ) -> StoreResult<()> {
        write_tx!(self, |tx| uia::create_uia_session(&tx, session, now)
            .await?)
    }

    async fn uia_session(&self, id: &str) -> StoreResult<Option<UiaSessionRecord>> {
        self.read_opt(
            &format!("SELECT {UIA_COLUMNS} FROM uia_sessions WHERE id = $1"),
            &[&id],
        )
        .await?
        .map(|r| uia_session_from_row(&r))
        .transpose()
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
        // text equality is value equality; one conditional UPDATE is the
        // compare-and-set (PostgreSQL re-checks it on the newest version).
        let n = exec(
            &self.client().await?,
            "UPDATE uia_sessions SET completed = $2, data = $3
             WHERE id = $1 AND NOT consumed AND completed = $4 AND data = $5",
            &[
                &id,
                &serde_json::to_string(completed).map_err(backend)?,
                &data.to_string(),
                &serde_json::to_string(seen_completed).map_err(backend)?,
                &seen_data.to_string(),
            ],
        )
        .await?;
        Ok(n > 0)
    }

    async fn consume_uia_session(&self, id: &str) -> StoreResult<bool> {
        let n = exec(
            &self.client().await?,
            "UPDATE uia_sessions SET consumed = TRUE WHERE id = $1 AND NOT consumed",
            &[&id],
        )
        .await?;
        Ok(n > 0)
    }

    async fn release_uia_session(&self, id: &str) -> StoreResult<()> {
        exec(
            &self.client().await?,
            "UPDATE uia_sessions SET consumed = FALSE WHERE id = $1",
            &[&id],
        )
        .await?;
        Ok(())
    }

    async fn accept_policies(
        &self,
        user_id: &UserId,
        policies: &[(String, String)],
        now: Timestamp,
    ) -> StoreResult<()> {
        write_tx!(self, |tx| uia::accept_policies(
            &tx,
            user_id.as_str(),
            policies,
            now
        )
        .await?)
    }

    async fn accepted_policies(&self, user_id: &UserId) -> StoreResult<Vec<(String, String)>> {
        Ok(self
            .read_all(
                "SELECT policy, version FROM accepted_policies WHERE user_id = $1 ORDER BY policy",
                &[&user_id.as_str()],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }
}

#[async_trait]
impl RegistrationTokens for PostgresStore {
    async fn create_registration_token(
        &self,
        token: &RegistrationToken,
        now: Timestamp,
    ) -> StoreResult<()> {
        write_tx!(self, |tx| uia::create_registration_token(&tx, token, now)
            .await?)
    }

    async fn registration_tokens(&self) -> StoreResult<Vec<RegistrationToken>> {
        self.read_all(
            &format!("SELECT {TOKEN_COLUMNS} FROM registration_tokens ORDER BY token"),
            &[],
        )
        .await?
        .iter()
        .map(rows::registration_token)
        .collect()
    }

    async fn registration_token(&self, token: &str) -> StoreResult<Option<RegistrationToken>> {
        self.read_opt(
            &format!("SELECT {TOKEN_COLUMNS} FROM registration_tokens WHERE token = $1"),
            &[&token],
        )
        .await?
        .map(|r| rows::registration_token(&r))
        .transpose()
    }

    async fn delete_registration_token(&self, token: &str) -> StoreResult<bool> {
        let n = exec(
            &self.client().await?,
            "DELETE FROM registration_tokens WHERE token = $1",
            &[&token],
        )
        .await?;
        Ok(n > 0)
    }

    async fn reserve_registration_token(&self, token: &str, now: Timestamp) -> StoreResult<bool> {
        write_tx!(self, |tx| uia::change_token_uses(&tx, token, |uses| uses
            .reserve(now))
        .await?)
    }

    async fn release_registration_token(&self, token: &str) -> StoreResult<()> {
        write_tx!(self, |tx| {
            uia::change_token_uses(&tx, token, Uses::release).await?;
        })
    }
}

#[async_trait]
impl LoginTokens for PostgresStore {
    async fn create_login_token(
        &self,
        hash: &TokenHash,
        user_id: &UserId,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        write_tx!(self, |tx| tokens::create_login_token(
            &tx,
            *hash,
            user_id.as_str(),
            expires_at,
            now
        )
        .await?)
    }

    async fn login_token_owner(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<UserId>> {
        Ok(self
            .read_opt(
                "SELECT user_id FROM login_tokens WHERE token_hash = $1 AND expires_ts > $2",
                &[&&hash.0[..], &ts(now)],
            )
            .await?
            .map(|r| UserId::from_trusted(r.get(0))))
    }

    async fn consume_login_token(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<UserId>> {
        write_tx!(self, |tx| tokens::consume_login_token(&tx, *hash, now)
            .await?)
    }
}

#[async_trait]
impl Keys for PostgresStore {
    async fn cross_signing_keys(&self, user_id: &UserId) -> StoreResult<Option<serde_json::Value>> {
        self.read_opt(
            "SELECT keys FROM cross_signing_keys WHERE user_id = $1",
            &[&user_id.as_str()],
        )
        .await?
        .map(|r| serde_json::from_str(&r.get::<_, String>(0)).map_err(backend))
        .transpose()
    }

    async fn set_cross_signing_keys(
        &self,
        user_id: &UserId,
        keys: &serde_json::Value,
        now: Timestamp,
    ) -> StoreResult<()> {
        let keys = keys.to_string();
        write_tx!(self, |tx| accounts::set_cross_signing_keys(
            &tx,
            user_id.as_str(),
            &keys,
            now
        )
        .await?)
    }
}

#[async_trait]
impl HomeserverSyncs for PostgresStore {
    async fn request_homeserver_sync(
        &self,
        localpart: &str,
        change: &HomeserverChange,
        now: Timestamp,
    ) -> StoreResult<u64> {
        write_tx!(self, |tx| delegation::request_homeserver_sync(
            &tx, localpart, change, now
        )
        .await?)
    }

    async fn due_homeserver_syncs(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<HomeserverSync>> {
        self.read_all(
            &format!(
                "SELECT {SYNC_COLUMNS} FROM homeserver_syncs WHERE next_attempt_ts <= $1
                 ORDER BY next_attempt_ts LIMIT $2"
            ),
            &[&ts(now), &i64::from(limit)],
        )
        .await?
        .iter()
        .map(rows::sync)
        .collect()
    }

    async fn homeserver_sync(&self, localpart: &str) -> StoreResult<Option<HomeserverSync>> {
        self.read_opt(
            &format!("SELECT {SYNC_COLUMNS} FROM homeserver_syncs WHERE localpart = $1"),
            &[&localpart],
        )
        .await?
        .map(|r| rows::sync(&r))
        .transpose()
    }

    async fn finish_homeserver_sync(&self, localpart: &str, version: u64) -> StoreResult<()> {
        exec(
            &self.client().await?,
            "DELETE FROM homeserver_syncs WHERE localpart = $1 AND version = $2",
            &[&localpart, &ts(version)],
        )
        .await?;
        Ok(())
    }

    async fn postpone_homeserver_sync(
        &self,
        localpart: &str,
        next_attempt_at: Timestamp,
    ) -> StoreResult<()> {
        exec(
            &self.client().await?,
            "UPDATE homeserver_syncs SET attempts = attempts + 1, next_attempt_ts = $2
             WHERE localpart = $1",
            &[&localpart, &ts(next_attempt_at)],
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl WebSessions for PostgresStore {
    async fn create_web_session(&self, hash: &TokenHash, session: &WebSession) -> StoreResult<()> {
        write_tx!(self, |tx| delegation::create_web_session(
            &tx,
            &hash.0[..],
            session
        )
        .await?)
    }

    async fn web_session(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<WebSession>> {
        Ok(self
            .read_opt(
                "SELECT w.user_id, w.csrf_token, w.expires_ts FROM web_sessions w
                 JOIN users u ON u.user_id = w.user_id
                 WHERE w.id_hash = $1 AND w.expires_ts > $2 AND NOT u.deactivated",
                &[&&hash.0[..], &ts(now)],
            )
            .await?
            .map(|r| WebSession {
                user_id: UserId::from_trusted(r.get(0)),
                csrf_token: r.get(1),
                expires_at: from_ts(r.get(2)),
            }))
    }

    async fn delete_web_session(&self, hash: &TokenHash) -> StoreResult<()> {
        exec(
            &self.client().await?,
            "DELETE FROM web_sessions WHERE id_hash = $1",
            &[&&hash.0[..]],
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn register(&self, registration: NewRegistration) -> StoreResult<()> {
        write_tx!(self, |tx| uia::register(&tx, &registration).await?)
    }

    async fn prune_expired(&self, now: Timestamp) -> StoreResult<u64> {
        write_tx!(self, |tx| uia::prune_expired(&tx, now).await?)
    }

    async fn watch_revocations(&self, revoked: crate::OnRevoked) -> StoreResult<()> {
        self.listen(revoked).await
    }
}
