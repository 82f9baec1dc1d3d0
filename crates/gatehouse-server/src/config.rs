//! Configuration: defaults, then a TOML file, then `GATEHOUSE_*` environment
//! variables, then command-line flags; each layer overrides the one before.
//! Every key is documented in `docs/CONFIG.md` and in [`EXAMPLE`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use gatehouse_core::password::{Argon2Cost, PasswordPolicy};
use serde::{Deserialize, Serialize};

mod database;
mod rate_limits;
mod sso;
#[cfg(test)]
mod tests;
mod validate;

pub use database::DatabaseConfig;
pub use rate_limits::{Rate, RateLimitConfig};
pub use sso::{
    CasProviderConfig, LocalpartTaken, OidcProviderConfig, ProviderDisplay, SsoConfig, UserMapping,
};

/// The whole configuration of one server process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The Matrix server name: the part after `:` in user IDs.
    pub server_name: String,
    /// Address the client API listens on.
    pub listen: SocketAddr,
    /// Directory holding the SQLite database (unless `database.url` names
    /// a PostgreSQL one).
    pub data_dir: PathBuf,
    /// Public base URL of the client API, announced in `.well-known` and login responses.
    pub public_baseurl: Option<String>,
    /// Identity server base URL announced in `.well-known`.
    pub identity_server: Option<String>,
    /// A directory of templates replacing the built-in ones of the same
    /// name (`page.html`, `sso.html`, `account.html`, `fallback.html`,
    /// `login_fallback.html`, `validation_email.txt`, `validation_sms.txt`).
    pub templates_dir: Option<PathBuf>,
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
    pub database: DatabaseConfig,
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
    pub sso: SsoConfig,
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

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8008)),
            data_dir: PathBuf::from("gatehouse-data"),
            public_baseurl: None,
            identity_server: None,
            templates_dir: None,
            max_request_body_bytes: 64 * 1024,
            log_format: LogFormat::Human,
            log_filter: "info".into(),
            metrics_listen: None,
            trust_x_forwarded_for: false,
            http: HttpConfig::default(),
            database: DatabaseConfig::default(),
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
            sso: SsoConfig::default(),
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
    /// `database.url`.
    pub database: Option<String>,
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
        if let Some(url) = &overrides.database {
            config.database.url = Some(url.clone());
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
            "database.url",
            self.database.url.is_some(),
            "database.url_path",
            self.database.url_path.as_deref(),
        )? {
            self.database.url = Some(s);
        }
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
        for p in &mut self.sso.oidc {
            if let Some(s) = secret_file(
                "sso.oidc.client_secret",
                p.client_secret.is_some(),
                "sso.oidc.client_secret_path",
                p.client_secret_path.as_deref(),
            )? {
                p.client_secret = Some(s);
            }
        }
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
    keys.extend(
        [
            "public_baseurl",
            "identity_server",
            "metrics_listen",
            "templates_dir",
        ]
        .map(str::to_owned),
    );
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
