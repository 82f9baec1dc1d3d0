//! Delegation: a homeserver that trusts Gatehouse for authentication.
//!
//! The homeserver knows only the users and devices it is told about, and
//! caches each token's introspection for two minutes. So:
//!
//! * a session is created here only after the homeserver knows its user
//!   and device ([`Homeserver::prepare_device`]): no token ever exists that
//!   the homeserver would refuse, and if it cannot be reached, none is made;
//! * what revokes access (logout, device deletion, password change,
//!   deactivation) is recorded durably *before* the local change
//!   ([`Homeserver::record`]), then pushed at once ([`Homeserver::push`]);
//!   deleting the device there is what defeats its introspection cache. A
//!   push that fails stays recorded and is retried by
//!   [`Homeserver::retry_forever`] until the homeserver has it, across
//!   restarts of either side. A push re-reads Gatehouse's state, so pushes
//!   are idempotent and may be repeated or reordered.

pub mod synapse;

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::Clock;
use gatehouse_core::user_id::UserId;
use gatehouse_store::{HomeserverChange, HomeserverSync, Store, StoreError};

use crate::config::Config;
use crate::error::ApiError;
pub use synapse::{HomeserverError, SynapseClient};

/// The longest wait between two attempts of a failing push.
const MAX_BACKOFF_MS: u64 = 30 * 1000;

/// Pushes handled per retry round.
const RETRY_BATCH: u32 = 100;

/// The homeserver Gatehouse authenticates for, and the durable queue of
/// what it still has to learn.
pub struct Homeserver {
    pub client: SynapseClient,
    /// SHA-256 of the shared secret: compared in constant time, and the
    /// secret itself is not kept twice.
    secret_hash: [u8; 32],
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    server_name: String,
    retry_interval_ms: u64,
}

/// A change recorded before it was made: pushed after it was.
#[must_use = "push it once the local change is made"]
pub struct Recorded {
    localpart: String,
    version: u64,
}

impl Homeserver {
    /// The homeserver of a configuration, if it delegates to Gatehouse.
    pub fn from_config(
        config: &Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Option<Self>, crate::config::ConfigError> {
        let Some(url) = &config.homeserver.url else {
            return Ok(None);
        };
        let secret = config.homeserver.read_secret()?;
        Ok(Some(Self {
            secret_hash: gatehouse_core::token::hash(&secret).0,
            client: SynapseClient::new(
                url,
                secret,
                Duration::from_millis(config.homeserver.timeout_ms),
            ),
            store,
            clock,
            server_name: config.server_name.clone(),
            retry_interval_ms: config.homeserver.retry_interval_ms,
        }))
    }

    /// Whether `presented` is the shared secret. Both sides are hashed
    /// first, so the comparison takes the same time whatever the length.
    pub fn is_shared_secret(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let presented = gatehouse_core::token::hash(presented).0;
        bool::from(presented.ct_eq(&self.secret_hash))
    }

    /// Makes sure the homeserver knows the user and the device, before any
    /// token for them exists.
    pub async fn prepare_device(
        &self,
        user: &UserId,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<(), HomeserverError> {
        let localpart = user.localpart();
        match self
            .client
            .upsert_device(localpart, device_id, display_name)
            .await
        {
            Err(e) if e.is_not_found() => {
                match self.provision(user).await {
                    // Another login of the same new user provisioned it
                    // first (Synapse checks, then creates): it exists now.
                    Err(e) if e.is_user_in_use() => {}
                    other => other?,
                }
                self.client
                    .upsert_device(localpart, device_id, display_name)
                    .await
            }
            other => other,
        }
    }

    /// Creates or updates the user there, with its current email addresses
    /// and lock.
    pub async fn provision(&self, user: &UserId) -> Result<(), HomeserverError> {
        let local = |e: StoreError| HomeserverError::Unreachable(format!("local store: {e}"));
        let emails = self
            .store
            .threepids(user)
            .await
            .map_err(local)?
            .into_iter()
            .filter(|t| t.threepid.medium == gatehouse_core::identifier::Medium::Email)
            .map(|t| t.threepid.address)
            .collect::<Vec<_>>();
        let locked = self
            .store
            .user(user)
            .await
            .map_err(local)?
            .is_some_and(|u| u.locked);
        self.client
            .provision_user(user.localpart(), &emails, locked, None)
            .await
    }

    /// A registration about to be stored: the homeserver must know the
    /// user (with the emails it registers with) and its first device
    /// before the account's token exists.
    pub async fn prepare_registration(
        &self,
        user: &UserId,
        emails: &[String],
        device: Option<(&str, Option<&str>)>,
    ) -> Result<(), HomeserverError> {
        self.client
            .provision_user(user.localpart(), emails, false, None)
            .await?;
        if let Some((device_id, name)) = device {
            self.client
                .upsert_device(user.localpart(), device_id, name)
                .await?;
        }
        Ok(())
    }

    /// Creates a user made through single sign-on, with the display name
    /// the provider gave (Synapse keeps profiles).
    pub async fn provision_new_user(
        &self,
        user: &UserId,
        emails: &[String],
        display_name: Option<&str>,
    ) -> Result<(), HomeserverError> {
        self.client
            .provision_user(user.localpart(), emails, false, display_name)
            .await
    }

    /// Cleans up after a session that was announced to the homeserver but
    /// not made here: the device goes unless it exists here after all.
    pub async fn forget_device(&self, user: &UserId, device_id: &str) {
        match self
            .record(user, devices_deleted([device_id.to_owned()]))
            .await
        {
            Ok(recorded) => self.push(recorded).await,
            Err(e) => tracing::error!(error = %e, "could not record a device to forget"),
        }
    }

    /// Makes a change here that the homeserver must learn: recorded first
    /// (so that no crash can lose it), made, then pushed.
    pub async fn change<T, E: From<StoreError>>(
        &self,
        user: &UserId,
        change: HomeserverChange,
        local: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let recorded = self.record(user, change).await?;
        let out = local.await;
        // Pushed even if the change failed: a push only ever re-states
        // what Gatehouse holds, so it is harmless, and it clears the record.
        self.push(recorded).await;
        out
    }

    /// Whether nothing is waiting to be told to the homeserver for `user`.
    pub async fn in_step(&self, user: &UserId) -> bool {
        matches!(self.store.homeserver_sync(user.localpart()).await, Ok(None))
    }

    /// Records, durably, that the homeserver must learn `change` for this
    /// user. Call before making the change here.
    pub async fn record(
        &self,
        user: &UserId,
        change: HomeserverChange,
    ) -> Result<Recorded, StoreError> {
        let localpart = user.localpart().to_owned();
        // Due for the background retries only after one retry interval:
        // the push made by this request goes first. Taken by the retry loop
        // at once, a record could be applied before the change it records
        // is made here (a device still present reads as "re-created, keep
        // it"), and marked done with the homeserver left untold.
        let due = self.clock.now_ms().saturating_add(self.retry_interval_ms);
        let version = self
            .store
            .request_homeserver_sync(&localpart, &change, due)
            .await?;
        Ok(Recorded { localpart, version })
    }

    /// Tells the homeserver now. A failure is logged and left to the retry
    /// loop: the change is already made here and recorded.
    pub async fn push(&self, recorded: Recorded) {
        let pending = self.store.homeserver_sync(&recorded.localpart).await;
        // Gone or newer: another push (or instance) has it in hand.
        if let Ok(Some(sync)) = pending
            && sync.version == recorded.version
        {
            self.attempt(&sync).await;
        }
    }

    /// One attempt at a recorded push; `true` when the homeserver has it.
    async fn attempt(&self, sync: &HomeserverSync) -> bool {
        match self.apply(sync).await {
            Ok(()) => {
                if let Err(e) = self
                    .store
                    .finish_homeserver_sync(&sync.localpart, sync.version)
                    .await
                {
                    tracing::warn!(error = %e, "could not mark a homeserver push done");
                }
                true
            }
            Err(e) => {
                let backoff = self
                    .retry_interval_ms
                    .saturating_mul(1 << sync.attempts.min(16))
                    .min(MAX_BACKOFF_MS);
                tracing::warn!(
                    localpart = %sync.localpart,
                    attempts = sync.attempts + 1,
                    retry_in_ms = backoff,
                    error = %e,
                    "homeserver push failed; will retry"
                );
                let next = self.clock.now_ms().saturating_add(backoff);
                if let Err(e) = self
                    .store
                    .postpone_homeserver_sync(&sync.localpart, next)
                    .await
                {
                    tracing::warn!(error = %e, "could not postpone a homeserver push");
                }
                false
            }
        }
    }

    /// Brings the homeserver in line with what Gatehouse holds now.
    async fn apply(&self, sync: &HomeserverSync) -> Result<(), HomeserverError> {
        let local = |e: StoreError| HomeserverError::Unreachable(format!("local store: {e}"));
        // Not `UserId::new`: imported accounts may have historical localparts.
        let user = UserId::from_trusted(format!("@{}:{}", sync.localpart, self.server_name));
        let Some(record) = self.store.user(&user).await.map_err(local)? else {
            return Ok(());
        };
        let localpart = user.localpart();
        if record.deactivated {
            return match self.client.delete_user(localpart, sync.erase).await {
                // Never provisioned: nothing there to deactivate.
                Err(e) if e.is_not_found() => Ok(()),
                other => other,
            };
        }
        self.provision(&user).await?;
        if sync.reactivate {
            self.client.reactivate_user(localpart).await?;
        }
        for device in &sync.deleted_devices {
            // Re-created here since (a login reusing the ID): keep it.
            if self
                .store
                .device(&user, device)
                .await
                .map_err(local)?
                .is_none()
            {
                self.client.delete_device(localpart, device).await?;
            }
        }
        Ok(())
    }

    /// Retries recorded pushes every `retry_interval_ms`, starting now (so
    /// that a restart converges at once). Runs until the process ends.
    pub async fn retry_forever(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_millis(self.retry_interval_ms));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let due = match self
                .store
                .due_homeserver_syncs(self.clock.now_ms(), RETRY_BATCH)
                .await
            {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read pending homeserver pushes");
                    continue;
                }
            };
            for sync in due {
                if self.attempt(&sync).await {
                    tracing::info!(localpart = %sync.localpart, "homeserver push delivered");
                }
            }
        }
    }
}

/// What a client sees when the homeserver could not be told about its new
/// session: nothing was made, and it may simply try again.
pub fn unavailable(e: &HomeserverError) -> ApiError {
    tracing::error!(error = %e, "homeserver call failed");
    let mut error = ApiError::new(
        gatehouse_core::ErrorKind::Unknown,
        "The homeserver is unavailable; nothing was changed, try again shortly",
    );
    error.status = Some(503);
    error
}

/// Makes a change here that the homeserver must learn: recorded first (so
/// that no crash can lose it), made, then pushed. Without delegation, just
/// the change.
pub async fn changing<T>(
    state: &crate::state::AppState,
    user: &UserId,
    change: HomeserverChange,
    local: impl Future<Output = crate::error::ApiResult<T>>,
) -> crate::error::ApiResult<T> {
    match &state.homeserver {
        Some(homeserver) => homeserver.change(user, change, local).await,
        None => local.await,
    }
}

/// The change "these devices are gone".
pub fn devices_deleted(devices: impl IntoIterator<Item = String>) -> HomeserverChange {
    HomeserverChange {
        deleted_devices: devices.into_iter().collect(),
        ..HomeserverChange::default()
    }
}
