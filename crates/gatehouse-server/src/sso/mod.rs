//! Single sign-on through upstream providers: OpenID Connect ([`oidc`])
//! and CAS ([`cas`]).
//!
//! A sign-in leaves for the provider with a random `state`; what it was
//! for (a client's login with its `redirectUrl`, linking an identity to a
//! signed-in account, or re-authenticating for a UIA session) waits in the
//! database under that state's hash, with the nonce and PKCE verifier, and
//! is taken — once — when the browser comes back. The browser that left
//! must be the one that comes back: a cookie of its own is bound to the
//! flow, so a callback URL handed to someone else is refused. What happens
//! next lives in [`finish`]; the pages in [`pages`].

pub mod cas;
pub mod finish;
pub mod mapping;
pub mod oidc;
pub mod pages;

use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use gatehouse_core::token;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{CasProviderConfig, ProviderDisplay, SsoConfig, UserMapping};
use crate::state::AppState;
use oidc::OidcProvider;

/// Where the provider sends the browser back, and the pages of a sign-in.
pub const PATH: &str = "/_gatehouse/sso";
/// The browser's own cookie, bound to each of its flows.
pub const BROWSER_COOKIE: &str = "gatehouse_sso_browser";

/// Why a sign-in through a provider failed.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// The provider could not be reached or answered nonsense.
    #[error("{0}")]
    Provider(String),
    /// The provider, or a check on what it sent, refused the sign-in.
    #[error("{0}")]
    Refused(String),
}

/// Who the provider says the person is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub provider: String,
    /// The provider's stable name for them (OIDC `sub`, CAS user).
    pub subject: String,
    /// Everything the provider said (ID token, userinfo, CAS attributes).
    pub claims: Value,
    /// Whether the provider vouches for `claims.email`.
    pub email_verified: bool,
}

/// The configured providers.
pub struct Providers {
    http: reqwest::Client,
    oidc: Vec<OidcProvider>,
    cas: Vec<CasProviderConfig>,
}

/// One provider, of either kind.
#[derive(Clone, Copy)]
pub enum Provider<'a> {
    Oidc(&'a OidcProvider),
    Cas(&'a CasProviderConfig),
}

impl Provider<'_> {
    pub fn id(&self) -> &str {
        match self {
            Self::Oidc(p) => &p.config.idp_id,
            Self::Cas(p) => &p.idp_id,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Oidc(p) => &p.config.idp_name,
            Self::Cas(p) => &p.idp_name,
        }
    }

    pub fn is_cas(&self) -> bool {
        matches!(self, Self::Cas(_))
    }

    pub fn mapping(&self) -> &UserMapping {
        match self {
            Self::Oidc(p) => &p.config.user_mapping,
            Self::Cas(p) => &p.user_mapping,
        }
    }
}

impl Providers {
    pub fn new(config: &SsoConfig) -> Self {
        // No redirects followed: a provider's endpoints are its own, and
        // following them would let a discovery document point the server
        // anywhere.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            http,
            oidc: config.oidc.iter().cloned().map(OidcProvider::new).collect(),
            cas: config.cas.clone(),
        }
    }

    pub fn get(&self, idp_id: &str) -> Option<Provider<'_>> {
        self.oidc
            .iter()
            .find(|p| p.config.idp_id == idp_id)
            .map(Provider::Oidc)
            .or_else(|| {
                self.cas
                    .iter()
                    .find(|p| p.idp_id == idp_id)
                    .map(Provider::Cas)
            })
    }

    pub fn all(&self) -> Vec<Provider<'_>> {
        self.oidc
            .iter()
            .map(Provider::Oidc)
            .chain(self.cas.iter().map(Provider::Cas))
            .collect()
    }

    /// The first CAS provider (`/login/cas/redirect` names none).
    pub fn first_cas(&self) -> Option<Provider<'_>> {
        self.cas.first().map(Provider::Cas)
    }
}

/// `identity_providers` of `GET /login`.
pub fn advertised(config: &SsoConfig) -> Vec<Value> {
    config
        .providers()
        .map(
            |ProviderDisplay {
                 idp_id,
                 idp_name,
                 idp_icon,
                 idp_brand,
             }| {
                let mut p = serde_json::json!({ "id": idp_id, "name": idp_name });
                if let Some(icon) = idp_icon {
                    p["icon"] = icon.into();
                }
                if let Some(brand) = idp_brand {
                    p["brand"] = brand.into();
                }
                p
            },
        )
        .collect()
}

/// What a sign-in is for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "purpose", rename_all = "snake_case")]
pub enum Purpose {
    /// A client's login: the login token goes to `redirect_url`.
    Login { redirect_url: String },
    /// A signed-in person adds an identity to their account.
    Link { user_id: String },
    /// A UIA session's `m.login.sso` stage, for `user_id`.
    Reauth { session: String, user_id: String },
    /// Signing in to the account page.
    Account,
}

/// What waits in the database while the browser is away.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stored {
    /// At the provider, under the hash of `state`.
    Authorization {
        idp_id: String,
        purpose: Purpose,
        browser: String,
        nonce: Option<String>,
        pkce_verifier: Option<String>,
        /// When the browser left for the provider: a re-authentication
        /// must have happened after it.
        #[serde(default)]
        started_at: u64,
    },
    /// On the username page, under the hash of the form's key: a new
    /// person whose name was taken.
    Pending {
        idp_id: String,
        subject: String,
        claims: Value,
        email_verified: bool,
        redirect_url: String,
        browser: String,
    },
}

/// The hash a browser cookie is kept as.
pub fn browser_hash(cookie: &str) -> String {
    token::hash(cookie)
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// This browser's cookie, if it has a well-formed one.
pub fn browser_cookie(headers: &HeaderMap) -> Option<String> {
    crate::fallback::cookie(headers, BROWSER_COOKIE)
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(str::to_owned)
}

/// Whether the request comes from the browser a flow is bound to.
pub fn same_browser(headers: &HeaderMap, bound: &str) -> bool {
    browser_cookie(headers).is_some_and(|c| crate::fallback::same_secret(bound, &browser_hash(&c)))
}

/// Keeps `stored` under the hash of `key` for the flow lifetime.
pub async fn keep(
    state: &AppState,
    key: &str,
    stored: &Stored,
) -> Result<(), gatehouse_store::StoreError> {
    let now = state.clock.now_ms();
    let data = serde_json::to_value(stored)
        .map_err(|e| gatehouse_store::StoreError::Backend(e.to_string()))?;
    state
        .store
        .create_sso_flow(
            &token::hash(key),
            &data,
            now.saturating_add(state.config.sso.flow_lifetime_ms),
            now,
        )
        .await
}

/// Takes what waits under `key`, once.
pub async fn take(
    state: &AppState,
    key: &str,
) -> Result<Option<Stored>, gatehouse_store::StoreError> {
    let now = state.clock.now_ms();
    Ok(state
        .store
        .take_sso_flow(&token::hash(key), now)
        .await?
        .and_then(|v| serde_json::from_value(v).ok()))
}

/// The public base URL the provider sends browsers back to.
fn base(state: &AppState) -> String {
    state.config.public_baseurl.as_deref().map_or_else(
        || format!("http://{}", state.config.listen),
        |b| b.trim_end_matches('/').to_owned(),
    )
}

/// The OIDC `redirect_uri` of a provider (register it there).
pub fn callback_url(state: &AppState, idp_id: &str) -> String {
    format!("{}{PATH}/callback/{idp_id}", base(state))
}

/// A CAS `service`: the callback, carrying the flow's `state`.
fn cas_service(state: &AppState, idp_id: &str, flow_state: &str) -> String {
    format!("{}?state={flow_state}", callback_url(state, idp_id))
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Sends the browser to `provider` for `purpose`: stores the flow, binds
/// it to this browser's cookie (set now if it has none) and redirects.
pub async fn start(
    state: &AppState,
    headers: &HeaderMap,
    provider: Provider<'_>,
    purpose: Purpose,
) -> Response {
    let cookie = browser_cookie(headers).unwrap_or_else(|| token::random_alphanumeric(32));
    let flow_state = token::random_alphanumeric(32);
    let reauth = matches!(purpose, Purpose::Reauth { .. });
    let (url, nonce, pkce_verifier) = match provider {
        Provider::Oidc(p) => {
            match p
                .authorize(
                    &state.sso.http,
                    &callback_url(state, provider.id()),
                    &flow_state,
                    reauth,
                )
                .await
            {
                Ok(a) => (a.url, Some(a.nonce), a.pkce_verifier),
                Err(e) => return pages::provider_failed(state, provider, &e),
            }
        }
        Provider::Cas(p) => (
            cas::login_url(p, &cas_service(state, provider.id(), &flow_state), reauth),
            None,
            None,
        ),
    };
    let stored = Stored::Authorization {
        idp_id: provider.id().to_owned(),
        purpose,
        browser: browser_hash(&cookie),
        nonce,
        pkce_verifier,
        started_at: state.clock.now_ms(),
    };
    if let Err(e) = keep(state, &flow_state, &stored).await {
        tracing::error!(error = %e, "could not store an SSO flow");
        return pages::error(
            state,
            "Something went wrong; please try again.",
            StatusCode::SERVICE_UNAVAILABLE,
        );
    }
    let max_age = state.config.sso.flow_lifetime_ms / 1000;
    let mut response = StatusCode::FOUND.into_response();
    let h = response.headers_mut();
    if let Ok(v) = url.parse() {
        h.insert(LOCATION, v);
    }
    h.append(
        SET_COOKIE,
        // Sent to every path, so that each flow this browser starts (from
        // the client API or the account page) reuses it and none cancels
        // another; only the SSO pages read it.
        crate::fallback::set_cookie(state, BROWSER_COOKIE, &cookie, "/", max_age.max(60)),
    );
    response
}

/// Checks the provider's answer for a flow: the person it names.
pub async fn identify(
    state: &AppState,
    provider: Provider<'_>,
    flow_state: &str,
    code_or_ticket: &str,
    nonce: Option<&str>,
    pkce_verifier: Option<&str>,
    reauth_since: Option<u64>,
) -> Result<Identity, SsoError> {
    match provider {
        Provider::Oidc(p) => {
            let nonce = nonce.ok_or_else(|| SsoError::Refused("the flow has no nonce".into()))?;
            p.finish(
                &state.sso.http,
                &state.clock,
                &callback_url(state, provider.id()),
                oidc::Answer {
                    code: code_or_ticket,
                    nonce,
                    pkce_verifier,
                    reauth_since,
                },
            )
            .await
        }
        Provider::Cas(p) => {
            cas::validate(
                &state.sso.http,
                p,
                &cas_service(state, provider.id(), flow_state),
                code_or_ticket,
                reauth_since.is_some(),
            )
            .await
        }
    }
}
