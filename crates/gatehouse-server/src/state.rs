//! What every handler can reach: configuration, store, sessions, the
//! hashing pool, rate limiters, metrics and the clock.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::Clock;
use gatehouse_store::Store;

use crate::config::Config;
use crate::hashing::HashPool;
use crate::metrics::Metrics;
use crate::ratelimit::{AddressLimiter, RateLimiter};
use crate::sessions::Sessions;

/// Rate limits (see `rate_limits` in the configuration). In memory, per
/// instance: several instances behind a balancer each allow the configured
/// rate, as with Synapse workers.
pub struct RateLimits {
    /// Login attempts per client address.
    pub per_address: AddressLimiter,
    /// Login attempts per account.
    pub per_account: RateLimiter<String>,
    /// Failed login attempts per account.
    pub failures_per_account: RateLimiter<String>,
    /// Accounts registered per client address.
    pub registrations_per_address: AddressLimiter,
    /// `requestToken` calls per client address.
    pub threepid_requests_per_address: AddressLimiter,
    /// `requestToken` calls per email address or phone number.
    pub threepid_requests_per_threepid: RateLimiter<String>,
    /// Registration tokens tried per client address.
    pub registration_token_checks: AddressLimiter,
    /// Login tokens issued per account.
    pub login_tokens_per_account: RateLimiter<String>,
    /// UIA sessions opened without an access token per client address.
    pub uia_sessions_per_address: AddressLimiter,
    pub username_checks_per_address: AddressLimiter,
    /// Refresh attempts per client address.
    pub refreshes_per_address: AddressLimiter,
}

/// Shared state: one `Arc`, because axum clones the state several times
/// per request (profiling showed cloning seven handles costing ~4 % of
/// `whoami` throughput).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub sessions: Arc<Sessions>,
    pub hasher: HashPool,
    pub limits: Arc<RateLimits>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub messenger: crate::messenger::Messenger,
    /// The homeserver that delegates authentication here, if any.
    pub homeserver: Option<Arc<crate::homeserver::Homeserver>>,
    /// Registered application services (bridges).
    pub appservices: crate::appservice::Appservices,
    pub sso: crate::sso::Providers,
}

impl AppState {
    /// Builds the state, starting the hashing threads.
    pub fn new(config: Config, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        let policy = config.password_policy().expect("validated configuration");
        let threads = config
            .passwords
            .hashing_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let hasher = HashPool::start(policy, threads, config.passwords.max_queued_hashes);
        let rl = &config.rate_limits;
        let limits = RateLimits {
            per_address: AddressLimiter::new(rl.login_per_address, clock.clone()),
            per_account: RateLimiter::new(rl.login_per_account, clock.clone()),
            failures_per_account: RateLimiter::new(rl.failed_logins_per_account, clock.clone()),
            registrations_per_address: AddressLimiter::new(
                rl.registration_per_address,
                clock.clone(),
            ),
            threepid_requests_per_address: AddressLimiter::new(
                rl.threepid_validation,
                clock.clone(),
            ),
            threepid_requests_per_threepid: RateLimiter::new(rl.threepid_validation, clock.clone()),
            registration_token_checks: AddressLimiter::new(
                rl.registration_token_checks,
                clock.clone(),
            ),
            login_tokens_per_account: RateLimiter::new(rl.login_tokens_per_account, clock.clone()),
            uia_sessions_per_address: AddressLimiter::new(
                rl.uia_sessions_per_address,
                clock.clone(),
            ),
            username_checks_per_address: AddressLimiter::new(
                rl.username_checks_per_address,
                clock.clone(),
            ),
            refreshes_per_address: AddressLimiter::new(rl.refreshes_per_address, clock.clone()),
        };
        let sessions = Sessions::new(
            store.clone(),
            clock.clone(),
            Duration::from_millis(config.tokens.cache_ttl_ms),
        );
        let messenger = crate::messenger::Messenger::new(&config);
        let homeserver =
            crate::homeserver::Homeserver::from_config(&config, store.clone(), clock.clone())
                .expect("validated configuration")
                .map(Arc::new);
        let appservices = crate::appservice::Appservices::load(
            &config.appservices.registration_files,
            &config.server_name,
        )
        .expect("validated configuration");
        let sso = crate::sso::Providers::new(&config.sso);
        Self(Arc::new(Shared {
            sso,
            appservices,
            homeserver,
            messenger,
            config: Arc::new(config),
            store,
            sessions: Arc::new(sessions),
            hasher,
            limits: Arc::new(limits),
            metrics: Arc::new(Metrics::default()),
            clock,
        }))
    }

    /// The address of the account page (`account_management_uri`).
    pub fn account_page_url(&self) -> Option<String> {
        let base = self.config.public_baseurl.as_ref()?;
        Some(format!("{}/_gatehouse/account", base.trim_end_matches('/')))
    }

    /// The `well_known` object of `.well-known/matrix/client` and `/login`,
    /// when a public base URL is configured.
    pub fn well_known(&self) -> Option<serde_json::Value> {
        let base = self.config.public_baseurl.as_ref()?;
        let mut wk = serde_json::json!({ "m.homeserver": { "base_url": base } });
        if let Some(is) = &self.config.identity_server {
            wk["m.identity_server"] = serde_json::json!({ "base_url": is });
        }
        Some(wk)
    }
}
