//! Storage for Gatehouse: one repository trait per aggregate ([`Users`],
//! [`Devices`], [`Threepids`], [`UiaSessions`], [`RegistrationTokens`],
//! [`LoginTokens`], [`Keys`], [`HomeserverSyncs`], [`WebSessions`],
//! [`UpstreamLinks`], [`SsoFlows`]), their
//! sum [`Store`], its two backends (SQLite embedded, PostgreSQL for several
//! instances), and the conformance suite both must pass.
//!
//! Callers bring the repositories into scope with
//! `use gatehouse_store::prelude::*`.
//!
//! # Adding a repository or a backend
//! A feature with new state adds a trait here, implements it for both
//! backends, and adds its checks to the conformance suite. A backend
//! implements every trait (each method documents what it must guarantee)
//! and instantiates the suite in its own integration test with
//! [`conformance_tests!`]. Nothing else in the workspace needs to know which
//! backend it talks to.

pub mod conformance;
pub mod copy;
mod model;
pub mod postgres;
pub mod sqlite;

pub use model::*;

/// The repositories, for calling them on a `dyn Store`.
pub mod prelude {
    pub use crate::{
        Devices, HomeserverSyncs, Keys, LoginTokens, RegistrationTokens, SsoFlows, Store,
        Threepids, UiaSessions, UpstreamLinks, Users, WebSessions,
    };
}
pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use gatehouse_core::identifier::Threepid;
use gatehouse_core::refresh::{Endpoint, Rejection};
use gatehouse_core::token::TokenHash;
use gatehouse_core::user_id::UserId;
use gatehouse_core::{Timestamp, refresh::RefreshId};

/// A storage failure. Domain conflicts are variants; everything else is
/// `Backend`, whose text is for logs, never for clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("user already exists")]
    UserExists,
    #[error("third-party identifier already in use")]
    ThreepidInUse,
    #[error("no such user")]
    NoSuchUser,
    /// A session was asked for an account deactivated meanwhile.
    #[error("user is deactivated")]
    UserDeactivated,
    #[error("registration token already exists")]
    TokenExists,
    #[error("registration token is not usable")]
    TokenUnusable,
    /// The upstream identity is already linked to an account.
    #[error("upstream identity already linked")]
    LinkInUse,
    /// The database kept aborting the transaction for a concurrent one
    /// (a deadlock), more times than it is retried.
    #[error("the database kept aborting the transaction for a concurrent one")]
    Contention,
    #[error("storage backend failure: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Whose cached sessions a change made elsewhere may have invalidated
/// ([`Store::watch_revocations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Something of this user's sessions changed (logout, deletion,
    /// rotation, deactivation, password, lock).
    User(UserId),
    /// Anything may have changed: notifications were missed (the listening
    /// connection was down).
    Everything,
}

/// What [`Store::watch_revocations`] calls.
pub type OnRevoked = std::sync::Arc<dyn Fn(Revoked) + Send + Sync>;

/// Accounts: creation, lookup, passwords, deactivation, moderation, imports.
#[async_trait]
pub trait Users: Send + Sync + 'static {
    /// Creates an account. `StoreError::UserExists` if the ID was ever taken
    /// (deactivated accounts keep their name forever).
    async fn create_user(&self, user: NewUser) -> StoreResult<()>;

    /// The account with this ID, deactivated or not.
    async fn user(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>>;

    /// The account that owns this canonical third-party ID.
    async fn user_by_threepid(&self, threepid: &Threepid) -> StoreResult<Option<UserRecord>>;

    /// All accounts, ordered by ID.
    async fn list_users(&self) -> StoreResult<Vec<UserRecord>>;

    /// Replaces the password hash and ends `sessions`, atomically, with
    /// every outstanding login token of the account whatever `sessions` is
    /// (a token minted under the old password must not outlive it).
    /// `NoSuchUser` if the account does not exist.
    async fn set_password_hash(
        &self,
        user_id: &UserId,
        hash: &str,
        sessions: EndSessions,
    ) -> StoreResult<()>;

    /// Replaces the hash `old` by `new` (the same password, a stronger
    /// hash), unless the password changed meanwhile: `false` then, and the
    /// newer password stays.
    async fn upgrade_password_hash(
        &self,
        user_id: &UserId,
        old: &str,
        new: &str,
    ) -> StoreResult<bool>;

    /// The highest cost among stored bcrypt password hashes (imported from
    /// Synapse, not yet upgraded), if any remain.
    async fn highest_bcrypt_cost(&self) -> StoreResult<Option<u32>>;

    /// Marks the account deactivated and removes its devices, tokens and
    /// third-party IDs. The password hash is kept, so login can tell a right
    /// password (`M_USER_DEACTIVATED`) from a wrong one (`M_FORBIDDEN`). `NoSuchUser` if it does not exist.
    async fn deactivate_user(&self, user_id: &UserId) -> StoreResult<()>;

    /// Locks or suspends an account (`on`), or lifts it; `NoSuchUser` if
    /// absent. Sessions are kept either way: the spec wants a lifted lock
    /// to find them intact.
    async fn set_moderation(
        &self,
        user_id: &UserId,
        moderation: Moderation,
        on: bool,
    ) -> StoreResult<()>;

    /// Grants or revokes server administration; `NoSuchUser` if absent.
    async fn set_admin(&self, user_id: &UserId, admin: bool) -> StoreResult<()>;

    /// Lifts a deactivation (its devices, 3PIDs and keys stay gone).
    /// `NoSuchUser` if the account does not exist.
    async fn reactivate_user(&self, user_id: &UserId) -> StoreResult<()>;

    /// Adds accounts from another server in one transaction. Rows that
    /// already exist (same user, 3PID, device or token) are left untouched,
    /// so importing twice is harmless.
    async fn import_users(&self, users: Vec<ImportedUser>) -> StoreResult<ImportCounts>;
}

/// Devices and their sessions: access and refresh tokens, rotation, logout.
#[async_trait]
pub trait Devices: Send + Sync + 'static {
    /// Starts a session for a login: creates the device if it is new, or, if
    /// it exists, revokes every token it had; then stores the new access
    /// token (and refresh token, if any).
    async fn create_session(&self, session: NewSession) -> StoreResult<()>;

    /// Looks up an access token by its hash.
    async fn access_token(&self, hash: &TokenHash) -> StoreResult<Option<AccessTokenRecord>>;

    /// The first use of an access token minted by a rotation: retires the
    /// rotation's parent refresh token and its other children (see
    /// `gatehouse_core::refresh`). Idempotent.
    async fn complete_rotation(&self, parent: RefreshId, issued_with: RefreshId)
    -> StoreResult<()>;

    /// Rotates a refresh token in one transaction, following
    /// `gatehouse_core::refresh::plan_refresh`. The new pair's hashes and
    /// expiries are given by the caller; the store never sees a token.
    async fn refresh(
        &self,
        presented: &TokenHash,
        endpoint: Endpoint,
        pair: NewTokenPair,
        now: Timestamp,
    ) -> StoreResult<Result<RefreshedSession, Rejection>>;

    /// Deletes one device and every token bound to it.
    async fn delete_device(&self, user_id: &UserId, device_id: &str) -> StoreResult<()>;

    /// Deletes every device and token of an account, outstanding login
    /// tokens included (`/logout/all` must leave no way back in).
    async fn delete_all_devices(&self, user_id: &UserId) -> StoreResult<()>;

    /// The devices of an account, ordered by ID.
    async fn devices(&self, user_id: &UserId) -> StoreResult<Vec<DeviceRecord>>;

    /// One device of an account.
    async fn device(&self, user_id: &UserId, device_id: &str) -> StoreResult<Option<DeviceRecord>>;

    /// Sets a device's display name; `false` if there is no such device.
    async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<&str>,
    ) -> StoreResult<bool>;

    /// Deletes several devices and their tokens (unknown IDs are ignored).
    async fn delete_devices(&self, user_id: &UserId, device_ids: &[String]) -> StoreResult<()>;

    /// Records where and when a device was last seen.
    async fn touch_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        ip: &str,
        now: Timestamp,
    ) -> StoreResult<()>;
}

/// Third-party IDs bound to accounts, and their validations (`requestToken`).
#[async_trait]
pub trait Threepids: Send + Sync + 'static {
    /// Binds a canonical third-party ID to an account.
    async fn add_threepid(
        &self,
        user_id: &UserId,
        threepid: &Threepid,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// The third-party IDs of an account.
    async fn threepids(&self, user_id: &UserId) -> StoreResult<Vec<ThreepidRecord>>;

    /// Unbinds a third-party ID; `false` if it was not bound to this account.
    async fn delete_threepid(&self, user_id: &UserId, threepid: &Threepid) -> StoreResult<bool>;

    /// Starts (or, for a repeated `send_attempt`, finds) a 3PID validation.
    /// Returns the stored record: a repeated request gets the original `sid`.
    async fn upsert_threepid_validation(
        &self,
        validation: &ThreepidValidation,
    ) -> StoreResult<ThreepidValidation>;

    /// A validation by session ID.
    async fn threepid_validation(&self, sid: &str) -> StoreResult<Option<ThreepidValidation>>;

    /// Presents a secret for a validation, in one atomic step: if the
    /// client secret's and token's hashes match, the validation has not expired
    /// and fewer than `max_failures` wrong secrets came before, it is marked
    /// validated (the first time is kept) and returned; otherwise `None`,
    /// and a mismatch counts one more failure. Checking and counting
    /// together is what makes guesses sent in parallel count too. A new
    /// `send_attempt` resets the failures.
    async fn redeem_threepid_secret(
        &self,
        sid: &str,
        client_secret: &ClientSecretHash,
        token_hash: &TokenHash,
        now: Timestamp,
        max_failures: u32,
    ) -> StoreResult<Option<ThreepidValidation>>;
}

/// User-interactive authentication sessions, and the policies (`m.login.terms`) accepted through them.
#[async_trait]
pub trait UiaSessions: Send + Sync + 'static {
    /// Stores a new UIA session, first expiring old ones (releasing the
    /// registration tokens they had reserved).
    async fn create_uia_session(
        &self,
        session: &UiaSessionRecord,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// A UIA session by ID, expired or not.
    async fn uia_session(&self, id: &str) -> StoreResult<Option<UiaSessionRecord>>;

    /// Saves a session's progress if it is still as it was read (`seen_*`):
    /// `false` if a concurrent request changed or consumed it first, so
    /// that the loser can undo what its stage did (a token reservation).
    async fn update_uia_session(
        &self,
        id: &str,
        completed: &[String],
        data: &serde_json::Value,
        seen_completed: &[String],
        seen_data: &serde_json::Value,
    ) -> StoreResult<bool>;

    /// Marks a session used, exactly once: `true` for the one caller that wins.
    async fn consume_uia_session(&self, id: &str) -> StoreResult<bool>;

    /// Makes a consumed session usable again: the operation it authorised
    /// failed after its stages passed.
    async fn release_uia_session(&self, id: &str) -> StoreResult<()>;

    /// Records that `user_id` accepted these `(policy, version)` pairs
    /// (`m.login.terms`), replacing older versions of the same policies.
    async fn accept_policies(
        &self,
        user_id: &UserId,
        policies: &[(String, String)],
        now: Timestamp,
    ) -> StoreResult<()>;

    /// The `(policy, version)` pairs `user_id` has accepted, by policy.
    async fn accepted_policies(&self, user_id: &UserId) -> StoreResult<Vec<(String, String)>>;
}

/// Registration tokens and their counted uses.
#[async_trait]
pub trait RegistrationTokens: Send + Sync + 'static {
    /// Creates a registration token.
    async fn create_registration_token(
        &self,
        token: &RegistrationToken,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// All registration tokens.
    async fn registration_tokens(&self) -> StoreResult<Vec<RegistrationToken>>;

    /// One registration token.
    async fn registration_token(&self, token: &str) -> StoreResult<Option<RegistrationToken>>;

    /// Deletes a registration token; `false` if it did not exist.
    async fn delete_registration_token(&self, token: &str) -> StoreResult<bool>;

    /// Reserves one use of a token (pending + 1) if it is usable now.
    async fn reserve_registration_token(&self, token: &str, now: Timestamp) -> StoreResult<bool>;

    /// Gives back a reserved use (a registration that did not happen).
    async fn release_registration_token(&self, token: &str) -> StoreResult<()>;
}

/// Single-use login tokens (`m.login.token`).
#[async_trait]
pub trait LoginTokens: Send + Sync + 'static {
    /// Stores a login token for `user_id`, valid until `expires_at`.
    async fn create_login_token(
        &self,
        hash: &TokenHash,
        user_id: &UserId,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// The owner of a valid, unexpired login token, leaving it unused (to
    /// check the login it would start before spending it).
    async fn login_token_owner(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<UserId>>;

    /// Uses a login token up: the owner if it was valid and unexpired; it
    /// is gone afterwards either way (single use, even under concurrency).
    async fn consume_login_token(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<UserId>>;
}

/// Cross-signing keys.
#[async_trait]
pub trait Keys: Send + Sync + 'static {
    /// The user's cross-signing keys, as uploaded.
    async fn cross_signing_keys(&self, user_id: &UserId) -> StoreResult<Option<serde_json::Value>>;

    /// Replaces the user's cross-signing keys.
    async fn set_cross_signing_keys(
        &self,
        user_id: &UserId,
        keys: &serde_json::Value,
        now: Timestamp,
    ) -> StoreResult<()>;
}

/// Changes the delegating homeserver must still be told about.
#[async_trait]
pub trait HomeserverSyncs: Send + Sync + 'static {
    /// Records that the homeserver must be told about this user's state
    /// (flags and deleted devices accumulate until the push succeeds), due
    /// for the background retries at `due` (`due_homeserver_syncs`).
    /// Returns the new version.
    async fn request_homeserver_sync(
        &self,
        localpart: &str,
        change: &HomeserverChange,
        now: Timestamp,
    ) -> StoreResult<u64>;

    /// Pending homeserver pushes due at `now`, oldest first.
    async fn due_homeserver_syncs(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<HomeserverSync>>;

    /// The pending push for one user, if any.
    async fn homeserver_sync(&self, localpart: &str) -> StoreResult<Option<HomeserverSync>>;

    /// Ends a pending push if it is still at `version` (a newer request
    /// keeps it pending).
    async fn finish_homeserver_sync(&self, localpart: &str, version: u64) -> StoreResult<()>;

    /// A failed push: try again at `next_attempt_at`.
    async fn postpone_homeserver_sync(
        &self,
        localpart: &str,
        next_attempt_at: Timestamp,
    ) -> StoreResult<()>;
}

/// Browser sessions of the account page.
#[async_trait]
pub trait WebSessions: Send + Sync + 'static {
    /// Stores a browser session of the account page, by its cookie's hash.
    async fn create_web_session(&self, hash: &TokenHash, session: &WebSession) -> StoreResult<()>;

    /// An unexpired browser session of an active account.
    async fn web_session(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<WebSession>>;

    /// Signs a browser out.
    async fn delete_web_session(&self, hash: &TokenHash) -> StoreResult<()>;
}

/// Identities at upstream providers (OpenID Connect, CAS) that sign in to
/// an account: any number per account, one account per identity.
#[async_trait]
pub trait UpstreamLinks: Send + Sync + 'static {
    /// The account `subject` at `provider` signs in to.
    async fn upstream_link_owner(
        &self,
        provider: &str,
        subject: &str,
    ) -> StoreResult<Option<UserId>>;

    /// The account's links, oldest first.
    async fn upstream_links(&self, user_id: &UserId) -> StoreResult<Vec<UpstreamLink>>;

    /// Links an identity; [`StoreError::LinkInUse`] when it already signs
    /// in to an account (this one or another).
    async fn add_upstream_link(&self, link: &UpstreamLink) -> StoreResult<()>;

    /// Unlinks an identity of `user_id`, unless it is the account's last
    /// way in (no password and no other link), atomically with that check.
    async fn remove_upstream_link(
        &self,
        user_id: &UserId,
        provider: &str,
        subject: &str,
    ) -> StoreResult<Unlinked>;
}

/// Single sign-on attempts in flight: what was asked before the browser
/// went to the provider (or to the username page), found again by the
/// hash of a random key when it comes back. Single use, and short-lived.
#[async_trait]
pub trait SsoFlows: Send + Sync + 'static {
    /// Stores a flow's state under `hash`, until `expires_at`.
    async fn create_sso_flow(
        &self,
        hash: &TokenHash,
        data: &serde_json::Value,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// Takes an unexpired flow: it is gone afterwards, and of concurrent
    /// takers at most one gets it.
    async fn take_sso_flow(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<serde_json::Value>>;
}

/// Everything Gatehouse keeps: one repository per aggregate (each a
/// trait above, of load and save calls), plus the operations that span
/// several. Every method is one atomic unit: it either happens completely
/// and durably before it returns `Ok`, or not at all.
#[async_trait]
pub trait Store:
    Users
    + Devices
    + Threepids
    + UiaSessions
    + RegistrationTokens
    + LoginTokens
    + Keys
    + HomeserverSyncs
    + WebSessions
    + UpstreamLinks
    + SsoFlows
{
    /// Registers an account atomically: the user, its validated 3PIDs, the
    /// registration token's use, its upstream identity, and its first session.
    async fn register(&self, registration: NewRegistration) -> StoreResult<()>;

    /// Deletes what can no longer be used: expired UIA sessions (giving
    /// back their reserved registration-token uses), expired login tokens
    /// and SSO flows, and 3PID validations a day past their expiry. Returns how many rows
    /// it changed. Safe to run from every instance at once.
    async fn prune_expired(&self, now: Timestamp) -> StoreResult<u64>;

    /// Calls `revoked` for each session change made by any process on this
    /// database, for as long as the returned future is polled, so that an
    /// instance's token cache drops what another instance revoked. The
    /// default never calls it: one process owns an embedded database, and
    /// the admin commands' changes are seen within the cache's TTL.
    async fn watch_revocations(&self, revoked: OnRevoked) -> StoreResult<()> {
        let _ = revoked;
        std::future::pending().await
    }
}
