//! The checks a configuration must pass beyond its types, each error naming
//! the key at fault.

use super::{Config, ConfigError};

impl Config {
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
        self.database.validate()?;
        self.sso.validate()?;
        if let Err(reason) = crate::messenger::load_templates(self.templates_dir.as_deref()) {
            return invalid("templates_dir", &reason);
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
            (
                "rate_limits.refreshes_per_address",
                limits.refreshes_per_address,
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
}
