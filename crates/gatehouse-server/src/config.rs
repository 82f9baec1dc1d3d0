//! Configuration: defaults, then a TOML file, then `GATEHOUSE_*` environment
//! variables, then command-line flags; each layer overrides the one before.
//! Every key is documented in `docs/CONFIG.md` and in [`EXAMPLE`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use gatehouse_core::password::{Argon2Cost, PasswordPolicy};
use serde::{Deserialize, Serialize};

/// The whole configuration of one server process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The Matrix server name: the part after `:` in user IDs.
    pub server_name: String,
    /// Address the client API listens on.
    pub listen: SocketAddr,
    /// Directory holding the SQLite database.
    pub data_dir: PathBuf,
    /// Public base URL of the client API, announced in `.well-known` and login responses.
    pub public_baseurl: Option<String>,
    /// Identity server base URL announced in `.well-known`.
    pub identity_server: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_request_body_bytes: usize,
    /// `human` or `json`.
    pub log_format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `gatehouse_server=debug`.
    pub log_filter: String,
    /// Address of the Prometheus `/metrics` listener; no listener when absent.
    pub metrics_listen: Option<SocketAddr>,
    /// Take the client address from the first `X-Forwarded-For` entry.
    /// Only enable behind a reverse proxy that sets it.
    pub trust_x_forwarded_for: bool,
    pub http: HttpConfig,
    pub sqlite: SqliteConfig,
    pub tokens: TokenConfig,
    pub passwords: PasswordConfig,
    pub rate_limits: RateLimitConfig,
    pub registration: RegistrationConfig,
    pub uia: UiaConfig,
    pub email: EmailConfig,
    pub sms: SmsConfig,
    pub recaptcha: RecaptchaConfig,
    pub homeserver: HomeserverConfig,
    pub appservices: AppservicesConfig,
}

/// Application services (bridges) that may act for the users of their
/// namespaces with their `as_token`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppservicesConfig {
    /// Synapse-format YAML registration files (`app_service_config_files`).
    pub registration_files: Vec<PathBuf>,
}

/// Limits on client connections, against clients that hold them open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// How long a request's head (request line and headers) may take to
    /// arrive, counted from when the server starts waiting for it: when the
    /// connection opens, and after each response on a keep-alive connection.
    pub header_read_timeout_ms: u64,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout_ms: u64,
    /// Connections open at once per client address (IPv6: per /64); 0: no cap.
    pub max_connections_per_address: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections_per_address: 64,
        }
    }
}

/// Delegation: a homeserver (Synapse, with `matrix_authentication_service`)
/// that trusts Gatehouse for authentication. Off while `url` is unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Base URL of the homeserver's client listener, where it serves
    /// `/_synapse/mas/` (e.g. `http://127.0.0.1:8009`).
    pub url: Option<String>,
    /// The secret shared with the homeserver (its
    /// `matrix_authentication_service.secret`).
    pub secret: Option<String>,
    /// A file holding the shared secret instead (trailing newline ignored).
    pub secret_path: Option<PathBuf>,
    /// How long one call to the homeserver may take.
    pub timeout_ms: u64,
    /// How often changes the homeserver could not be told about are retried.
    pub retry_interval_ms: u64,
}

impl Default for HomeserverConfig {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            secret_path: None,
            timeout_ms: 10_000,
            retry_interval_ms: 5_000,
        }
    }
}

impl HomeserverConfig {
    /// The shared secret, from `secret` or the file at `secret_path`.
    pub fn read_secret(&self) -> Result<zeroize::Zeroizing<String>, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            key: "homeserver.secret",
            reason,
        };
        match (&self.secret, &self.secret_path) {
            (Some(s), None) => Ok(zeroize::Zeroizing::new(s.clone())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| zeroize::Zeroizing::new(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|e| invalid(format!("cannot read {}: {e}", path.display()))),
            (Some(_), Some(_)) => Err(invalid("set secret or secret_path, not both".into())),
            (None, None) => Err(invalid(
                "homeserver.url is set: give secret or secret_path".into(),
            )),
        }
        .and_then(|s| {
            if s.len() < 16 {
                Err(invalid("must be at least 16 characters".into()))
            } else {
                Ok(s)
            }
        })
    }
}

/// Outgoing email (3PID validation, password reset), over SMTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    pub enabled: bool,
    pub smtp_host: String,
    pub smtp_port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: SmtpTls,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<String>,
    /// A file holding the SMTP password instead (trailing newline ignored).
    pub smtp_password_path: Option<PathBuf>,
    /// The `From:` of every message.
    pub from: String,
    /// How long a validation link stays valid.
    pub token_lifetime_ms: u64,
    /// Hosts a `requestToken` call's `next_link` may point to besides this
    /// server's own origin (`public_baseurl`); exact names, any case. Empty
    /// (the default): only the own origin, so that the emailed links are no
    /// open redirect (Synapse's `next_link_domain_whitelist`).
    pub next_link_domains: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    #[default]
    Starttls,
    Tls,
}

/// Outgoing SMS, through an HTTP webhook that relays to a gateway: Gatehouse
/// POSTs `{"to": "+E164", "body": "...", "sid": "..."}` as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    pub enabled: bool,
    pub webhook_url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub webhook_token: Option<String>,
    /// A file holding the webhook token instead (trailing newline ignored).
    pub webhook_token_path: Option<PathBuf>,
    pub token_lifetime_ms: u64,
}

/// The `m.login.recaptcha` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecaptchaConfig {
    pub enabled: bool,
    pub site_key: String,
    pub secret_key: String,
    /// A file holding the secret key instead (trailing newline ignored).
    pub secret_key_path: Option<PathBuf>,
    pub siteverify_url: String,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            smtp_host: "localhost".into(),
            smtp_port: 25,
            tls: SmtpTls::Starttls,
            smtp_username: None,
            smtp_password: None,
            smtp_password_path: None,
            from: "Gatehouse <noreply@localhost>".into(),
            token_lifetime_ms: 60 * 60 * 1000,
            next_link_domains: Vec::new(),
        }
    }
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            webhook_url: String::new(),
            webhook_token: None,
            webhook_token_path: None,
            token_lifetime_ms: 15 * 60 * 1000,
        }
    }
}

impl Default for RecaptchaConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            site_key: String::new(),
            secret_key: String::new(),
            secret_key_path: None,
            siteverify_url: "https://www.google.com/recaptcha/api/siteverify".into(),
        }
    }
}

/// Who may register, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Whether `POST /register` creates accounts at all.
    pub enabled: bool,
    /// The UIA flows registration offers, e.g. `[["m.login.dummy"]]`,
    /// `[["m.login.registration_token"]]`, `[["m.login.email.identity"]]`.
    pub flows: Vec<Vec<String>>,
    /// Localparts nobody may register (answered with `M_EXCLUSIVE`).
    pub reserved_localparts: Vec<String>,
    /// Whether `POST /register?kind=guest` creates guest accounts (no UIA,
    /// no password; `is_guest` in `whoami`).
    pub guest_access: bool,
}

/// User-interactive authentication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiaConfig {
    /// How long a UIA session lives.
    pub session_lifetime_ms: u64,
    /// Flows for operations by a logged-in user (password change, device
    /// deletion, deactivation, cross-signing reset, 3PID changes). Each user
    /// is offered only the flows whose stages they can complete.
    pub flows: Vec<Vec<String>>,
    /// Flows for one operation instead of `flows`: keys `password_change`,
    /// `device_deletion`, `deactivation`, `cross_signing_reset`,
    /// `threepid_change`.
    pub operations: std::collections::BTreeMap<String, Vec<Vec<String>>>,
    /// Policies for the `m.login.terms` stage, by name.
    pub terms: std::collections::BTreeMap<String, Policy>,
}

/// One policy document of the `m.login.terms` stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub version: String,
    /// Language code → `{name, url}`.
    pub languages: std::collections::BTreeMap<String, PolicyText>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyText {
    pub name: String,
    pub url: String,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            flows: vec![vec!["m.login.dummy".into()]],
            reserved_localparts: Vec::new(),
            guest_access: false,
        }
    }
}

impl Default for UiaConfig {
    fn default() -> Self {
        Self {
            session_lifetime_ms: 15 * 60 * 1000,
            flows: vec![
                vec!["m.login.password".into()],
                vec!["m.login.email.identity".into()],
            ],
            operations: std::collections::BTreeMap::new(),
            terms: std::collections::BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// A commit survives power loss.
    #[default]
    Full,
    /// A commit survives a process crash; the last ones may be lost on power loss.
    Normal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    pub durability: Durability,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// Lifetime of access tokens for clients that opted into refresh tokens.
    pub access_token_lifetime_ms: u64,
    /// Lifetime of each refresh token; never expires when absent.
    pub refresh_token_lifetime_ms: Option<u64>,
    /// How long a validated access token is served from memory. A token
    /// revoked through another instance is refused here within this bound.
    pub cache_ttl_ms: u64,
    /// Lifetime of a login token from `/login/get_token` (single use).
    pub login_token_lifetime_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordConfig {
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Appended to passwords before checking imported Synapse bcrypt hashes
    /// (Synapse's `password_config.pepper`).
    pub bcrypt_pepper: String,
    /// A file holding the pepper instead (trailing newline ignored).
    pub bcrypt_pepper_path: Option<PathBuf>,
    /// Threads that hash passwords; defaults to the number of CPUs.
    pub hashing_threads: Option<usize>,
    /// Hash requests allowed to wait for a thread; beyond it logins get 429.
    pub max_queued_hashes: usize,
}

/// A leaky bucket: `burst_count` actions at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: f64,
    pub burst_count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Login attempts per client IP address.
    pub login_per_address: Rate,
    /// Login attempts per account.
    pub login_per_account: Rate,
    /// Failed login attempts per account.
    pub failed_logins_per_account: Rate,
    /// Accounts registered per client IP address (only successful
    /// registrations count; UIA round trips do not).
    pub registration_per_address: Rate,
    /// `requestToken` calls per client IP address, and messages sent per
    /// email address or number (repeats and refusals send nothing).
    pub threepid_validation: Rate,
    /// Registration tokens tried per client IP address: validity checks
    /// and `m.login.registration_token` stages alike, so tokens cannot be
    /// guessed.
    pub registration_token_checks: Rate,
    /// Login tokens issued per account (`POST /login/get_token`, which the
    /// spec asks to limit more strictly than usual).
    pub login_tokens_per_account: Rate,
    /// User-interactive auth sessions opened per client IP address without
    /// an access token (registration, password reset): each costs a stored
    /// row until it expires, so this bounds the rows one address can keep
    /// alive to `burst_count + per_second × uia.session_lifetime_ms`.
    pub uia_sessions_per_address: Rate,
    /// Username checks per client IP address: `GET /register/available` and
    /// registrations naming a username. Without it, one address could test
    /// tens of thousands of names a second for existing accounts.
    pub username_checks_per_address: Rate,
}

/// Synapse's `rc_login` and `rc_registration` defaults.
const SYNAPSE_RC_LOGIN: Rate = Rate {
    per_second: 0.17,
    burst_count: 3,
};

/// Synapse's `rc_registration_token_validity` default.
const SYNAPSE_RC_REGISTRATION_TOKEN_VALIDITY: Rate = Rate {
    per_second: 0.1,
    burst_count: 5,
};

/// Synapse's `rc_3pid_validation` default: five, then one every ~5 minutes.
const SYNAPSE_RC_3PID_VALIDATION: Rate = Rate {
    per_second: 0.003,
    burst_count: 5,
};

/// UIA sessions opened without an access token, per client address: 20 at
/// once, then one every 2 s. Looser than `rc_registration` (0.17/s, burst 3),
/// which counts created accounts: a session is opened by every request
/// without `auth.session` — a client asking for the flows (Element Web asks
/// with an empty body first), a client starting over after an error — and
/// many people may share one address (NAT). Tight enough for storage: with
/// the default 15-minute `uia.session_lifetime_ms`, and expired sessions
/// swept whenever one is created, one address keeps at most
/// 20 + 0.5 × 900 = 470 sessions (~90 KB at ~190 bytes a row) alive.
const UIA_SESSIONS_PER_ADDRESS: Rate = Rate {
    per_second: 0.5,
    burst_count: 20,
};

/// Username checks per client address: 10 at once, then one a second —
/// enough for a person typing names into a registration form (clients
/// check as the typing pauses), far too few to list a server's accounts.
const USERNAME_CHECKS_PER_ADDRESS: Rate = Rate {
    per_second: 1.0,
    burst_count: 10,
};

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8008)),
            data_dir: PathBuf::from("gatehouse-data"),
            public_baseurl: None,
            identity_server: None,
            max_request_body_bytes: 64 * 1024,
            log_format: LogFormat::Human,
            log_filter: "info".into(),
            metrics_listen: None,
            trust_x_forwarded_for: false,
            http: HttpConfig::default(),
            sqlite: SqliteConfig::default(),
            tokens: TokenConfig::default(),
            passwords: PasswordConfig::default(),
            rate_limits: RateLimitConfig::default(),
            registration: RegistrationConfig::default(),
            uia: UiaConfig::default(),
            email: EmailConfig::default(),
            sms: SmsConfig::default(),
            recaptcha: RecaptchaConfig::default(),
            homeserver: HomeserverConfig::default(),
            appservices: AppservicesConfig::default(),
        }
    }
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            access_token_lifetime_ms: 5 * 60 * 1000,
            refresh_token_lifetime_ms: None,
            cache_ttl_ms: 2000,
            login_token_lifetime_ms: 120_000,
        }
    }
}

impl Default for PasswordConfig {
    fn default() -> Self {
        let cost = Argon2Cost::default();
        Self {
            argon2_memory_kib: cost.memory_kib,
            argon2_iterations: cost.iterations,
            argon2_parallelism: cost.parallelism,
            bcrypt_pepper: String::new(),
            bcrypt_pepper_path: None,
            hashing_threads: None,
            max_queued_hashes: 1024,
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            login_per_address: SYNAPSE_RC_LOGIN,
            login_per_account: SYNAPSE_RC_LOGIN,
            failed_logins_per_account: SYNAPSE_RC_LOGIN,
            registration_per_address: SYNAPSE_RC_LOGIN,
            threepid_validation: SYNAPSE_RC_3PID_VALIDATION,
            registration_token_checks: SYNAPSE_RC_REGISTRATION_TOKEN_VALIDITY,
            // The spec's example: "a maximum of 1 request per minute".
            login_tokens_per_account: Rate {
                per_second: 1.0 / 60.0,
                burst_count: 1,
            },
            uia_sessions_per_address: UIA_SESSIONS_PER_ADDRESS,
            username_checks_per_address: USERNAME_CHECKS_PER_ADDRESS,
        }
    }
}

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Parse(String),
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Values given on the command line; they win over file and environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub server_name: Option<String>,
}

impl Config {
    /// Loads defaults ← `file` ← `GATEHOUSE_*` environment ← `overrides`.
    ///
    /// Nested keys use a double underscore in the environment:
    /// `GATEHOUSE_TOKENS__ACCESS_TOKEN_LIFETIME_MS=60000`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Parse(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only variables naming a known section or key are configuration:
        // GATEHOUSE_BIN and friends in a developer's shell are not typos.
        // Inside a known section, unknown keys are still refused.
        let known = known_top_level_keys();
        figment = figment.merge(Env::prefixed("GATEHOUSE_").split("__").filter(move |key| {
            // Keys arrive after the `__` → `.` split, in the variable's case.
            let first = key.as_str().split('.').next().unwrap_or_default();
            known.iter().any(|k| k.eq_ignore_ascii_case(first))
        }));
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(describe(&e)))?;
        if let Some(d) = &overrides.data_dir {
            config.data_dir.clone_from(d);
        }
        if let Some(l) = overrides.listen {
            config.listen = l;
        }
        if let Some(s) = &overrides.server_name {
            config.server_name.clone_from(s);
        }
        config.read_secret_files()?;
        config.validate()?;
        Ok(config)
    }

    /// Fills each secret given as a `*_path` from its file, so the rest of
    /// the server reads the value alone. `homeserver.secret_path` is read by
    /// [`HomeserverConfig::read_secret`] instead. Called once, by [`Config::load`]:
    /// afterwards both a value and its path are set.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        if let Some(s) = secret_file(
            "email.smtp_password",
            self.email.smtp_password.is_some(),
            "email.smtp_password_path",
            self.email.smtp_password_path.as_deref(),
        )? {
            self.email.smtp_password = Some(s);
        }
        if let Some(s) = secret_file(
            "sms.webhook_token",
            self.sms.webhook_token.is_some(),
            "sms.webhook_token_path",
            self.sms.webhook_token_path.as_deref(),
        )? {
            self.sms.webhook_token = Some(s);
        }
        // These two default to "" (as in the example file): empty is unset.
        if let Some(s) = secret_file(
            "recaptcha.secret_key",
            !self.recaptcha.secret_key.is_empty(),
            "recaptcha.secret_key_path",
            self.recaptcha.secret_key_path.as_deref(),
        )? {
            self.recaptcha.secret_key = s;
        }
        if let Some(s) = secret_file(
            "passwords.bcrypt_pepper",
            !self.passwords.bcrypt_pepper.is_empty(),
            "passwords.bcrypt_pepper_path",
            self.passwords.bcrypt_pepper_path.as_deref(),
        )? {
            self.passwords.bcrypt_pepper = s;
        }
        Ok(())
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        };
        if self.server_name.is_empty()
            || !self
                .server_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return invalid("server_name", "must be a hostname, optionally with :port");
        }
        for (key, url) in [
            ("public_baseurl", &self.public_baseurl),
            ("identity_server", &self.identity_server),
        ] {
            if let Some(url) = url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return invalid(key, "must be an http:// or https:// URL");
            }
        }
        if self.max_request_body_bytes < 1024 {
            return invalid("max_request_body_bytes", "must be at least 1024");
        }
        if self.http.header_read_timeout_ms == 0 {
            return invalid("http.header_read_timeout_ms", "must be greater than 0");
        }
        if self.http.idle_timeout_ms == 0 {
            return invalid("http.idle_timeout_ms", "must be greater than 0");
        }
        if self.tokens.access_token_lifetime_ms == 0 {
            return invalid("tokens.access_token_lifetime_ms", "must be greater than 0");
        }
        if self.tokens.refresh_token_lifetime_ms == Some(0) {
            return invalid("tokens.refresh_token_lifetime_ms", "must be greater than 0");
        }
        if let Err(e) = self.password_policy() {
            return invalid("passwords.argon2_*", &e.to_string());
        }
        // The emailed link and the SMS `submit_url` point back at this
        // server; without its public address they would lead nowhere.
        if (self.email.enabled || self.sms.enabled) && self.public_baseurl.is_none() {
            return invalid(
                "public_baseurl",
                "must be set when email.enabled or sms.enabled is true (links and submit_url point to it)",
            );
        }
        if let Some(url) = &self.homeserver.url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return invalid("homeserver.url", "must be an http:// or https:// URL");
            }
            if self.public_baseurl.is_none() {
                return invalid(
                    "public_baseurl",
                    "must be set when homeserver.url is (it is the issuer the homeserver announces)",
                );
            }
            self.homeserver.read_secret()?;
            if self.homeserver.timeout_ms == 0 || self.homeserver.retry_interval_ms == 0 {
                return invalid(
                    "homeserver.timeout_ms",
                    "timeout_ms and retry_interval_ms must be greater than 0",
                );
            }
        }
        if self.passwords.hashing_threads == Some(0) {
            return invalid("passwords.hashing_threads", "must be at least 1");
        }
        let limits = &self.rate_limits;
        for (key, rate) in [
            ("rate_limits.login_per_address", limits.login_per_address),
            ("rate_limits.login_per_account", limits.login_per_account),
            (
                "rate_limits.failed_logins_per_account",
                limits.failed_logins_per_account,
            ),
            (
                "rate_limits.registration_per_address",
                limits.registration_per_address,
            ),
            (
                "rate_limits.threepid_validation",
                limits.threepid_validation,
            ),
            (
                "rate_limits.registration_token_checks",
                limits.registration_token_checks,
            ),
            (
                "rate_limits.login_tokens_per_account",
                limits.login_tokens_per_account,
            ),
            (
                "rate_limits.uia_sessions_per_address",
                limits.uia_sessions_per_address,
            ),
            (
                "rate_limits.username_checks_per_address",
                limits.username_checks_per_address,
            ),
        ] {
            if !(rate.per_second.is_finite() && rate.per_second > 0.0) || rate.burst_count == 0 {
                return invalid(key, "per_second must be > 0 and burst_count >= 1");
            }
        }
        for name in self.uia.operations.keys() {
            if !crate::uia::Sensitive::ALL.iter().any(|k| k.key() == name) {
                return Err(ConfigError::Invalid {
                    key: "uia.operations",
                    reason: format!(
                        "unknown operation {name} (known: password_change, device_deletion, deactivation, cross_signing_reset, threepid_change, login_token)"
                    ),
                });
            }
        }
        let all_flows = [
            ("registration.flows", &self.registration.flows),
            ("uia.flows", &self.uia.flows),
        ]
        .into_iter()
        .chain(self.uia.operations.values().map(|f| ("uia.operations", f)));
        for (key, flows) in all_flows {
            for stage in flows.iter().flatten() {
                if !gatehouse_core::uia::KNOWN_STAGES.contains(&stage.as_str()) {
                    return Err(ConfigError::Invalid {
                        key,
                        reason: format!("unknown stage type {stage}"),
                    });
                }
            }
            if flows.iter().any(Vec::is_empty) {
                return invalid(key, "a flow needs at least one stage");
            }
            // A registration token and a policy to accept make sense only
            // for an account being made; asked of a logged-in user, the
            // first would spend an invitation and the second ask nothing.
            if key != "registration.flows"
                && let Some(stage) = flows.iter().flatten().find(|s| {
                    matches!(
                        s.as_str(),
                        gatehouse_core::uia::REGISTRATION_TOKEN | gatehouse_core::uia::TERMS
                    )
                })
            {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("{stage} is a registration stage"),
                });
            }
        }
        if self.uia.session_lifetime_ms == 0 {
            return invalid("uia.session_lifetime_ms", "must be greater than 0");
        }
        let wants_terms = self
            .registration
            .flows
            .iter()
            .chain(&self.uia.flows)
            .chain(self.uia.operations.values().flatten())
            .flatten()
            .any(|s| s == "m.login.terms");
        if wants_terms && self.uia.terms.is_empty() {
            return invalid(
                "uia.terms",
                "the m.login.terms stage needs at least one policy",
            );
        }
        // Read and checked now, so that a bad file stops the start-up.
        crate::appservice::Appservices::load(
            &self.appservices.registration_files,
            &self.server_name,
        )?;
        Ok(())
    }

    /// The password policy these settings describe.
    pub fn password_policy(&self) -> Result<PasswordPolicy, gatehouse_core::password::CostError> {
        let p = &self.passwords;
        PasswordPolicy::new(
            Argon2Cost {
                memory_kib: p.argon2_memory_kib,
                iterations: p.argon2_iterations,
                parallelism: p.argon2_parallelism,
            },
            &p.bcrypt_pepper,
        )
    }

    /// The SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("gatehouse.sqlite")
    }
}

/// The secret in the file at `path`, if one is given, without its trailing
/// newline. Giving the value too is an error naming `key`; a file that cannot
/// be read, one naming `path_key`. Neither error echoes the file's content.
fn secret_file(
    key: &'static str,
    value_given: bool,
    path_key: &'static str,
    path: Option<&Path>,
) -> Result<Option<String>, ConfigError> {
    let Some(path) = path else {
        return Ok(None);
    };
    if value_given {
        return Err(ConfigError::Invalid {
            key,
            reason: format!("set {key} or {path_key}, not both"),
        });
    }
    let content = std::fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| ConfigError::Invalid {
            key: path_key,
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
    Ok(Some(content.trim_end_matches(['\r', '\n']).to_owned()))
}

/// The top-level keys of the configuration, from its own serialisation.
fn known_top_level_keys() -> Vec<String> {
    let defaults = Config::default();
    let mut keys: Vec<String> = match toml::Value::try_from(&defaults) {
        Ok(toml::Value::Table(t)) => t.keys().cloned().collect(),
        _ => Vec::new(),
    };
    // Optional keys are absent from a serialised default.
    keys.extend(["public_baseurl", "identity_server", "metrics_listen"].map(str::to_owned));
    keys
}

fn describe(e: &figment::Error) -> String {
    let mut out = Vec::new();
    for err in e.clone() {
        let key = err.path.join(".");
        let source = err
            .metadata
            .as_ref()
            .map(|m| m.name.to_string())
            .unwrap_or_default();
        if key.is_empty() {
            out.push(format!("{} ({source})", err.kind));
        } else {
            out.push(format!(
                "invalid value for `{key}`: {} ({source})",
                err.kind
            ));
        }
    }
    out.join("; ")
}

/// A complete, commented configuration file with every key at its default.
pub const EXAMPLE: &str = include_str!("config_example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_tokens_default_to_one_a_minute() {
        let rate = RateLimitConfig::default().login_tokens_per_account;
        assert_eq!(rate.burst_count, 1);
        assert!((rate.per_second * 60.0 - 1.0).abs() < 1e-9, "{rate:?}");
    }

    #[test]
    fn the_example_is_the_defaults() {
        let parsed: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(EXAMPLE))
            .extract()
            .unwrap();
        assert_eq!(parsed, Config::default());
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn secrets_are_read_from_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, content: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path
        };
        let smtp = write("smtp", "smtp-password-from-file\n");
        let token = write("token", "webhook-token-from-file\r\n");
        let recaptcha = write("recaptcha", "recaptcha-secret-from-file");
        let pepper = write("pepper", "pepper-from-file\n");
        let file = write(
            "gatehouse.toml",
            &format!(
                "[email]\nsmtp_password_path = {smtp:?}\n\
                 [sms]\nwebhook_token_path = {token:?}\n\
                 [recaptcha]\nsecret_key = \"\"\nsecret_key_path = {recaptcha:?}\n\
                 [passwords]\nbcrypt_pepper = \"\"\nbcrypt_pepper_path = {pepper:?}\n"
            ),
        );
        let config = Config::load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(
            config.email.smtp_password.as_deref(),
            Some("smtp-password-from-file")
        );
        assert_eq!(
            config.sms.webhook_token.as_deref(),
            Some("webhook-token-from-file")
        );
        assert_eq!(config.recaptcha.secret_key, "recaptcha-secret-from-file");
        assert_eq!(config.passwords.bcrypt_pepper, "pepper-from-file");
        assert_eq!(config.email.smtp_password_path.as_deref(), Some(&*smtp));

        // A value and its file: an error naming the value's key.
        std::fs::write(
            &file,
            format!("[email]\nsmtp_password = \"inline\"\nsmtp_password_path = {smtp:?}\n"),
        )
        .unwrap();
        let err = Config::load(Some(&file), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`email.smtp_password`"), "{err}");
        // A file that cannot be read: an error naming the path's key.
        let missing = dir.path().join("missing");
        std::fs::write(
            &file,
            format!("[passwords]\nbcrypt_pepper_path = {missing:?}\n"),
        )
        .unwrap();
        let err = Config::load(Some(&file), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`passwords.bcrypt_pepper_path`"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(
                "[tokens]\naccess_token_lifetime_ms = \"soon\"",
            ))
            .extract::<Config>()
            .unwrap_err();
        assert!(
            describe(&err).contains("tokens.access_token_lifetime_ms"),
            "{}",
            describe(&err)
        );
        let mut c = Config::default();
        c.rate_limits.login_per_account.per_second = 0.0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("rate_limits.login_per_account")
        );
    }
}
