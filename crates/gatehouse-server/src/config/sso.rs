//! `[sso]`: upstream identity providers people sign in with (OpenID
//! Connect and CAS), how their claims become an account, and which client
//! redirect URLs get a login token without a confirmation page.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SsoConfig {
    /// Prefixes of `redirectUrl`s that receive a login token straight
    /// away. Any other URL gets a confirmation page first, naming the site
    /// the token goes to: a link from a phishing site then cannot take
    /// over an account silently (Synapse's `sso.client_whitelist`).
    pub client_allowlist: Vec<String>,
    /// How long the login token handed to the client lives, and how long a
    /// sign-in may stay at the provider (or on the username page).
    pub flow_lifetime_ms: u64,
    pub oidc: Vec<OidcProviderConfig>,
    pub cas: Vec<CasProviderConfig>,
}

/// How a provider is shown (its fields are written inline in each
/// provider's table: serde cannot flatten and refuse unknown keys at once).
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderDisplay {
    pub idp_id: String,
    pub idp_name: String,
    pub idp_icon: Option<String>,
    pub idp_brand: Option<String>,
}

/// Templates (minijinja, over `user`, the provider's claims or CAS
/// attributes) that make an account from a person's claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserMapping {
    /// Default: `{{ user.preferred_username }}` (OIDC), `{{ user.user }}` (CAS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub localpart_template: Option<String>,
    /// Default: `{{ user.name }}` (OIDC), `{{ user.first_name }}` (CAS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name_template: Option<String>,
    /// Default: `{{ user.email }}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_template: Option<String>,
    /// When the localpart is taken by another account: `choose` (a page
    /// where the person picks another name) or `suffix` (append 1, 2, …).
    pub on_localpart_taken: LocalpartTaken,
    /// Sign in to an existing account whose email address equals the
    /// person's — only when the provider says it verified that address.
    pub link_by_email: bool,
    /// Create accounts for people seen for the first time (just-in-time
    /// provisioning). Off: only linked accounts sign in.
    pub allow_registration: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalpartTaken {
    #[default]
    Choose,
    Suffix,
}

/// A mapping's three templates, each the configured one or the kind's
/// default (set per key: an operator who changes one keeps the others).
pub struct Templates<'a> {
    pub localpart: &'a str,
    pub display_name: &'a str,
    pub email: &'a str,
}

impl UserMapping {
    pub fn templates(&self, cas: bool) -> Templates<'_> {
        let (localpart, display_name) = if cas {
            ("{{ user.user }}", "{{ user.first_name }}")
        } else {
            ("{{ user.preferred_username }}", "{{ user.name }}")
        };
        Templates {
            localpart: self.localpart_template.as_deref().unwrap_or(localpart),
            display_name: self
                .display_name_template
                .as_deref()
                .unwrap_or(display_name),
            email: self.email_template.as_deref().unwrap_or("{{ user.email }}"),
        }
    }
}

impl Default for UserMapping {
    fn default() -> Self {
        Self {
            localpart_template: None,
            display_name_template: None,
            email_template: None,
            on_localpart_taken: LocalpartTaken::Choose,
            link_by_email: false,
            allow_registration: true,
        }
    }
}

/// An OpenID Connect provider (authorization code flow).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// Stable identifier, in URLs and links (`[a-z0-9._~-]`, at most 255).
    pub idp_id: String,
    /// The name people see on the buttons.
    pub idp_name: String,
    /// An `mxc://` icon for clients' buttons.
    #[serde(default)]
    pub idp_icon: Option<String>,
    /// A brand hint for clients (`github`, `google`, …).
    #[serde(default)]
    pub idp_brand: Option<String>,
    /// The issuer; its `/.well-known/openid-configuration` is read.
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_path: Option<PathBuf>,
    /// `client_secret_basic` (the default) or `client_secret_post`.
    #[serde(default = "default_auth_method")]
    pub client_auth_method: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Send a PKCE challenge (S256). On by default; harmless for
    /// providers that ignore it.
    #[serde(default = "yes")]
    pub pkce: bool,
    /// Also read the userinfo endpoint (for providers that keep profile
    /// claims out of the ID token).
    #[serde(default)]
    pub userinfo: bool,
    #[serde(default)]
    pub user_mapping: UserMapping,
}

/// A CAS server (protocol 2 or 3: `serviceValidate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasProviderConfig {
    /// Stable identifier, in URLs and links (`[a-z0-9._~-]`, at most 255).
    pub idp_id: String,
    /// The name people see on the buttons.
    pub idp_name: String,
    /// An `mxc://` icon for clients' buttons.
    #[serde(default)]
    pub idp_icon: Option<String>,
    /// A brand hint for clients (`github`, `google`, …).
    #[serde(default)]
    pub idp_brand: Option<String>,
    /// The CAS base URL: `/login` and `/p3/serviceValidate` hang from it.
    pub server_url: String,
    /// `3` (`/p3/serviceValidate`, with attributes) or `2`.
    #[serde(default = "default_cas_version")]
    pub protocol_version: u8,
    /// CAS has no notion of a verified address: set this only when the
    /// server's `email` attribute is one the organisation vouches for.
    #[serde(default)]
    pub email_is_verified: bool,
    #[serde(default)]
    pub user_mapping: UserMapping,
}

impl Default for SsoConfig {
    fn default() -> Self {
        Self {
            client_allowlist: Vec::new(),
            flow_lifetime_ms: 10 * 60 * 1000,
            oidc: Vec::new(),
            cas: Vec::new(),
        }
    }
}

fn default_auth_method() -> String {
    "client_secret_basic".into()
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(str::to_owned).to_vec()
}

fn yes() -> bool {
    true
}

fn default_cas_version() -> u8 {
    3
}

macro_rules! display {
    ($p:expr) => {
        ProviderDisplay {
            idp_id: $p.idp_id.clone(),
            idp_name: $p.idp_name.clone(),
            idp_icon: $p.idp_icon.clone(),
            idp_brand: $p.idp_brand.clone(),
        }
    };
}

impl SsoConfig {
    pub fn enabled(&self) -> bool {
        !self.oidc.is_empty() || !self.cas.is_empty()
    }

    /// Every provider's display, in configuration order (OIDC first).
    pub fn providers(&self) -> impl Iterator<Item = ProviderDisplay> + '_ {
        self.oidc
            .iter()
            .map(|p| display!(p))
            .chain(self.cas.iter().map(|p| display!(p)))
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| Err(ConfigError::Invalid { key, reason });
        let mut seen = std::collections::HashSet::new();
        for p in self.providers() {
            let id = &p.idp_id;
            if id.is_empty()
                || id.len() > 255
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._~-".contains(&b))
            {
                return invalid(
                    "sso.*.idp_id",
                    format!("{id:?}: use 1 to 255 of a-z, 0-9, '.', '_', '~', '-'"),
                );
            }
            if !seen.insert(p.idp_id.clone()) {
                return invalid("sso.*.idp_id", format!("{id:?} is used twice"));
            }
        }
        for url in &self.client_allowlist {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return invalid(
                    "sso.client_allowlist",
                    format!("{url:?} must be an http:// or https:// URL prefix"),
                );
            }
        }
        for p in &self.oidc {
            if !(p.issuer.starts_with("https://") || p.issuer.starts_with("http://")) {
                return invalid("sso.oidc.issuer", format!("{:?} is not a URL", p.issuer));
            }
            if !matches!(
                p.client_auth_method.as_str(),
                "client_secret_basic" | "client_secret_post"
            ) {
                return invalid(
                    "sso.oidc.client_auth_method",
                    "use client_secret_basic or client_secret_post".into(),
                );
            }
        }
        for p in &self.cas {
            if !(p.server_url.starts_with("https://") || p.server_url.starts_with("http://")) {
                return invalid(
                    "sso.cas.server_url",
                    format!("{:?} is not a URL", p.server_url),
                );
            }
            if !matches!(p.protocol_version, 2 | 3) {
                return invalid("sso.cas.protocol_version", "use 2 or 3".into());
            }
        }
        let mappings = self
            .oidc
            .iter()
            .map(|p| &p.user_mapping)
            .chain(self.cas.iter().map(|p| &p.user_mapping));
        for m in mappings {
            let t = m.templates(false);
            for t in [t.localpart, t.display_name, t.email] {
                if let Err(e) = minijinja::Environment::new().template_from_str(t) {
                    return invalid("sso.*.user_mapping", format!("{t:?}: {e}"));
                }
            }
        }
        Ok(())
    }
}
