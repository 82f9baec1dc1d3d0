//! The records the store reads and writes.

use gatehouse_core::Timestamp;
use gatehouse_core::refresh::RefreshId;
use gatehouse_core::token::TokenHash;
use gatehouse_core::user_id::UserId;

/// A new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub user_id: UserId,
    /// PHC string; `None` for accounts that cannot log in with a password.
    pub password_hash: Option<String>,
    pub is_admin: bool,
    /// A guest account (`kind=guest` registration): no password, no 3PIDs.
    pub is_guest: bool,
    pub created_at: Timestamp,
}

/// An account as stored.
#[derive(Clone)]
pub struct UserRecord {
    pub user_id: UserId,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub is_guest: bool,
    pub deactivated: bool,
    /// Locked by an administrator: nothing but logging out works.
    pub locked: bool,
    /// Suspended by an administrator: read-mostly (see the spec).
    pub suspended: bool,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for UserRecord {
    // The hash stays out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("user_id", &self.user_id)
            .field("has_password", &self.password_hash.is_some())
            .field("is_admin", &self.is_admin)
            .field("deactivated", &self.deactivated)
            .finish_non_exhaustive()
    }
}

/// Hashes and expiries of a freshly minted token pair.
#[derive(Debug, Clone, Copy)]
pub struct NewTokenPair {
    pub access: TokenHash,
    pub access_expires_at: Option<Timestamp>,
    /// `None` when the client did not opt into refresh tokens.
    pub refresh: Option<TokenHash>,
    pub refresh_expires_at: Option<Timestamp>,
}

/// A login's session.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub user_id: UserId,
    pub device_id: String,
    /// Used only if the device is new.
    pub initial_display_name: Option<String>,
    pub tokens: NewTokenPair,
    pub now: Timestamp,
}

/// An access token as stored.
#[derive(Debug, Clone)]
pub struct AccessTokenRecord {
    pub user_id: UserId,
    pub device_id: String,
    pub is_guest: bool,
    /// A server administrator (`urn:synapse:admin:*` when introspected).
    pub is_admin: bool,
    /// The account is locked / suspended (see [`UserRecord`]).
    pub locked: bool,
    pub suspended: bool,
    pub expires_at: Option<Timestamp>,
    /// The refresh token minted alongside this access token.
    pub refresh_id: Option<RefreshId>,
    /// Set until first use when this token came from a rotation: the parent
    /// refresh token that first use retires.
    pub pending_parent: Option<RefreshId>,
    /// When and from where the device was last seen.
    pub last_seen_at: Option<Timestamp>,
    pub last_seen_ip: Option<String>,
}

/// What an administrator can put on an account and lift again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderation {
    /// Nothing but logging out works (`M_USER_LOCKED`).
    Lock,
    /// The account may read and manage itself, not act on others
    /// (`M_USER_SUSPENDED`).
    Suspension,
}

/// Who a successful refresh belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshedSession {
    pub user_id: UserId,
    pub device_id: String,
}

/// A device as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_at: Option<Timestamp>,
}

/// A user-interactive authentication session.
#[derive(Debug, Clone, PartialEq)]
pub struct UiaSessionRecord {
    pub id: String,
    pub binding: gatehouse_core::uia::Binding,
    /// Stage types completed, in order.
    pub completed: Vec<String>,
    /// What completed stages established (registration token reserved,
    /// 3PIDs validated, the user a password reset is for…).
    pub data: serde_json::Value,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub consumed: bool,
}

/// A registration token and its use counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationToken {
    pub token: String,
    pub uses_allowed: Option<u32>,
    /// Registrations that completed the token stage but not yet registration.
    pub pending: u32,
    pub completed: u32,
    pub expiry: Option<Timestamp>,
}

impl RegistrationToken {
    /// Its counts, for the rule in `gatehouse_core::registration_token`.
    pub fn uses(&self) -> gatehouse_core::registration_token::Uses {
        gatehouse_core::registration_token::Uses {
            allowed: self.uses_allowed,
            pending: self.pending,
            completed: self.completed,
            expiry: self.expiry,
        }
    }

    /// Whether one more registration may use it.
    pub fn usable(&self, now: Timestamp) -> bool {
        self.uses().check(now).is_ok()
    }
}

/// An account registration, written in one transaction.
#[derive(Debug, Clone)]
pub struct NewRegistration {
    pub user: NewUser,
    /// Third-party IDs validated during registration.
    pub threepids: Vec<gatehouse_core::identifier::Threepid>,
    /// The registration token whose pending use becomes a completed one.
    pub registration_token: Option<String>,
    /// `None` with `inhibit_login`.
    pub session: Option<NewSession>,
    /// The identity at an upstream provider the account was made for
    /// (single sign-on's just-in-time registration).
    pub upstream_link: Option<UpstreamLink>,
}

/// An account's identity at an upstream provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLink {
    pub user_id: UserId,
    /// The provider's `idp_id` in the configuration.
    pub provider: String,
    /// The provider's stable name for the person (OIDC `sub`, CAS user).
    pub subject: String,
    pub created_at: Timestamp,
}

/// What [`crate::UpstreamLinks::remove_upstream_link`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlinked {
    Removed,
    /// It is the account's only way to sign in: kept.
    LastWayIn,
    NotFound,
}

/// A request to prove ownership of an email address or phone number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreepidValidation {
    /// The session ID, kept in clear: the server picks it, hands it to the
    /// client and logs it, and it is looked up by value. Alone it proves
    /// nothing: every use of the session also needs `client_secret`.
    pub sid: String,
    /// The client's secret for this session, as its hash only.
    pub client_secret: ClientSecretHash,
    pub threepid: gatehouse_core::identifier::Threepid,
    /// Hash of the secret token sent by email/SMS.
    pub token_hash: TokenHash,
    pub send_attempt: u64,
    pub validated_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// Where the emailed link redirects once it validated (`next_link` of
    /// the `requestToken` call; the newest attempt's wins).
    pub next_link: Option<String>,
    /// Wrong secrets presented since the last one was sent.
    pub failed_attempts: u32,
}

/// The stored form of a 3PID validation's `client_secret`: its SHA-256.
/// The client proves it owns a validation session by presenting the secret
/// (with the emailed token, or later to UIA and `/account/3pid/add`), so it
/// is a bearer secret like the others, which are all stored as hashes.
/// Plain SHA-256, as for tokens: clients generate the secret at random, and
/// a guessable one would be guessable over HTTP too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientSecretHash(pub TokenHash);

impl ClientSecretHash {
    /// The hash of a client secret.
    pub fn of(client_secret: &str) -> Self {
        Self(gatehouse_core::token::hash(client_secret))
    }

    /// Whether `presented` is the secret this is the hash of. Only hashes
    /// are compared, so timing tells nothing about the secret.
    pub fn matches(&self, presented: &str) -> bool {
        *self == Self::of(presented)
    }
}

/// `stored == presented`: [`ClientSecretHash::matches`].
impl PartialEq<str> for ClientSecretHash {
    fn eq(&self, presented: &str) -> bool {
        self.matches(presented)
    }
}

/// `stored == presented`: [`ClientSecretHash::matches`].
impl PartialEq<&str> for ClientSecretHash {
    fn eq(&self, presented: &&str) -> bool {
        self.matches(presented)
    }
}

/// Which sessions a password change ends, in the same transaction (so a
/// changed password never leaves an old session alive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndSessions {
    /// None (an administrator's reset, or `logout_devices: false`).
    Keep,
    /// Every device but this one (the one that asked).
    AllBut(String),
    /// Every device (a forgotten password).
    All,
}

/// A third-party ID bound to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreepidRecord {
    pub threepid: gatehouse_core::identifier::Threepid,
    pub added_at: Timestamp,
}

/// An account brought over from another server (`gatehouse import`), with
/// everything that makes it the same account there: its password hash
/// (verified as it is, never recomputed), flags, 3PIDs, devices and,
/// optionally, the hashes of its live access tokens.
#[derive(Clone)]
pub struct ImportedUser {
    pub user_id: UserId,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub is_guest: bool,
    pub deactivated: bool,
    pub created_at: Timestamp,
    pub threepids: Vec<gatehouse_core::identifier::Threepid>,
    pub devices: Vec<ImportedDevice>,
}

impl std::fmt::Debug for ImportedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedUser")
            .field("user_id", &self.user_id)
            .field("has_password", &self.password_hash.is_some())
            .field("devices", &self.devices.len())
            .finish_non_exhaustive()
    }
}

/// A device of an [`ImportedUser`].
#[derive(Debug, Clone)]
pub struct ImportedDevice {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_at: Option<Timestamp>,
    /// SHA-256 of each access token the other server had issued for it.
    pub access_tokens: Vec<TokenHash>,
}

/// What an import batch added (existing rows are left as they are, so a
/// second run adds nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub users: u64,
    pub threepids: u64,
    pub devices: u64,
    pub access_tokens: u64,
}

/// A user whose state the homeserver must be brought in line with (the
/// durable half of delegation: written before the change is pushed, removed
/// once the homeserver confirmed it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeserverSync {
    pub localpart: String,
    /// Bumped by every new request for this user: a push only completes
    /// the version it read.
    pub version: u64,
    /// Deactivation asked to erase the profile too.
    pub erase: bool,
    /// The account was reactivated since the homeserver was last told.
    pub reactivate: bool,
    /// Devices deleted here that the homeserver may still have.
    pub deleted_devices: Vec<String>,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
}

/// A signed-in browser on the account page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    pub user_id: UserId,
    /// The form token every state-changing request must echo back.
    pub csrf_token: String,
    pub expires_at: Timestamp,
}

/// What changed for a user that the homeserver must learn
/// ([`crate::Store::request_homeserver_sync`]). Its profile (3PIDs) is
/// always re-sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HomeserverChange {
    pub erase: bool,
    pub reactivate: bool,
    pub deleted_devices: Vec<String>,
}
