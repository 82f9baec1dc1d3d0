//! OpenID Connect providers through the `openidconnect` crate: discovery
//! (cached, and read again when a token is signed by a key it has not
//! seen: providers rotate keys), the authorization request with `state`,
//! `nonce` and PKCE, and at the callback the code exchange, the ID token's
//! checks (signature against the provider's keys, issuer, audience,
//! expiry on the injected clock, nonce) and, when configured, userinfo.

use std::sync::Arc;

use gatehouse_core::Clock;
use openidconnect::core::{
    CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreProviderMetadata,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde_json::Value;
use tokio::sync::Mutex;

use super::{Identity, SsoError};
use crate::config::OidcProviderConfig;

/// One configured provider and what was discovered about it.
pub struct OidcProvider {
    pub config: OidcProviderConfig,
    metadata: Mutex<Option<Arc<CoreProviderMetadata>>>,
}

/// The provider's answer at the callback, with what the flow kept.
pub struct Answer<'a> {
    pub code: &'a str,
    pub nonce: &'a str,
    pub pkce_verifier: Option<&'a str>,
    /// For a re-authentication: when the browser left for the provider.
    pub reauth_since: Option<u64>,
}

/// What the authorization request committed to, kept until the callback.
pub struct Authorization {
    pub url: String,
    pub nonce: String,
    pub pkce_verifier: Option<String>,
}

impl OidcProvider {
    pub fn new(config: OidcProviderConfig) -> Self {
        Self {
            config,
            metadata: Mutex::new(None),
        }
    }

    /// The discovered metadata (and keys), fetched once; `fresh` fetches
    /// them again.
    async fn metadata(
        &self,
        http: &reqwest::Client,
        fresh: bool,
    ) -> Result<Arc<CoreProviderMetadata>, SsoError> {
        let mut cached = self.metadata.lock().await;
        if let (Some(m), false) = (cached.as_ref(), fresh) {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| SsoError::Provider(format!("issuer URL: {e}")))?;
        let discovered = CoreProviderMetadata::discover_async(issuer, http)
            .await
            .map_err(|e| SsoError::Provider(format!("discovery failed: {e}")))?;
        let m = Arc::new(discovered);
        *cached = Some(m.clone());
        Ok(m)
    }

    fn client(
        &self,
        metadata: &CoreProviderMetadata,
        redirect_uri: &str,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        SsoError,
    > {
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            self.config.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(
            RedirectUrl::new(redirect_uri.to_owned())
                .map_err(|e| SsoError::Provider(format!("redirect URI: {e}")))?,
        );
        Ok(if self.config.client_auth_method == "client_secret_post" {
            client.set_auth_type(AuthType::RequestBody)
        } else {
            client.set_auth_type(AuthType::BasicAuth)
        })
    }

    /// The provider's authorization URL for one sign-in. `reauth` asks the
    /// provider to check the person again rather than reuse its session.
    pub async fn authorize(
        &self,
        http: &reqwest::Client,
        redirect_uri: &str,
        state: &str,
        reauth: bool,
    ) -> Result<Authorization, SsoError> {
        let metadata = self.metadata(http, false).await?;
        let client = self.client(&metadata, redirect_uri)?;
        let nonce = gatehouse_core::token::random_alphanumeric(32);
        let (state, nonce_for_url) = (state.to_owned(), nonce.clone());
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state),
            move || Nonce::new(nonce_for_url),
        );
        for scope in self.config.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let mut pkce_verifier = None;
        if self.config.pkce {
            let verifier = PkceCodeVerifier::new(gatehouse_core::token::random_alphanumeric(64));
            request =
                request.set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(&verifier));
            pkce_verifier = Some(verifier.secret().clone());
        }
        if reauth {
            request = request
                .add_prompt(CoreAuthPrompt::Login)
                .add_extra_param("max_age", "0");
        }
        let (url, _, _) = request.url();
        Ok(Authorization {
            url: url.to_string(),
            nonce,
            pkce_verifier,
        })
    }

    /// Exchanges `code` and checks what comes back: the person it names.
    pub async fn finish(
        &self,
        http: &reqwest::Client,
        clock: &Arc<dyn Clock>,
        redirect_uri: &str,
        answer: Answer<'_>,
    ) -> Result<Identity, SsoError> {
        let Answer {
            code,
            nonce,
            pkce_verifier,
            reauth_since,
        } = answer;
        let metadata = self.metadata(http, false).await?;
        let client = self.client(&metadata, redirect_uri)?;
        let mut exchange = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SsoError::Provider(format!("no token endpoint: {e}")))?;
        if let Some(v) = pkce_verifier {
            exchange = exchange.set_pkce_verifier(PkceCodeVerifier::new(v.to_owned()));
        }
        let tokens = exchange
            .request_async(http)
            .await
            .map_err(|e| SsoError::Refused(format!("the provider refused the code: {e}")))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| SsoError::Refused("the provider sent no ID token".into()))?;
        let nonce = Nonce::new(nonce.to_owned());
        let now = {
            let clock = clock.clone();
            move || {
                chrono::DateTime::from_timestamp_millis(
                    i64::try_from(clock.now_ms()).unwrap_or(i64::MAX),
                )
                .unwrap_or_default()
            }
        };
        let verify = |client: &CoreClient<_, _, _, _, _, _>| {
            id_token
                .claims(&client.id_token_verifier().set_time_fn(now.clone()), &nonce)
                .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        };
        let mut claims = match verify(&client) {
            Ok(c) => c,
            // A key the cached set does not have: the provider may have
            // rotated its keys since discovery.
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(_)) => {
                let fresh = self.metadata(http, true).await?;
                verify(&self.client(&fresh, redirect_uri)?)
                    .map_err(|e| SsoError::Refused(format!("ID token refused: {e}")))?
            }
            Err(e) => return Err(SsoError::Refused(format!("ID token refused: {e}"))),
        };
        // A re-authentication must be one: the person signed in at the
        // provider after the browser left (a minute's grace for clocks),
        // not a session the provider already had.
        if let Some(since) = reauth_since {
            let signed_in_at = claims["auth_time"].as_u64().map(|s| s.saturating_mul(1000));
            if signed_in_at.is_none_or(|at| at.saturating_add(60_000) < since) {
                return Err(SsoError::Refused(
                    "the provider did not check the person again (auth_time)".into(),
                ));
            }
        }
        let subject = claims["sub"]
            .as_str()
            .ok_or_else(|| SsoError::Refused("the ID token has no subject".into()))?
            .to_owned();
        if self.config.userinfo {
            let info: openidconnect::core::CoreUserInfoClaims = client
                .user_info(
                    tokens.access_token().clone(),
                    Some(openidconnect::SubjectIdentifier::new(subject.clone())),
                )
                .map_err(|e| SsoError::Provider(format!("no userinfo endpoint: {e}")))?
                .request_async(http)
                .await
                .map_err(|e| SsoError::Provider(format!("userinfo failed: {e}")))?;
            if let (Value::Object(base), Ok(Value::Object(extra))) =
                (&mut claims, serde_json::to_value(info))
            {
                for (k, v) in extra {
                    base.entry(k).or_insert(v);
                }
            }
        }
        let email_verified = claims["email_verified"].as_bool().unwrap_or(false);
        Ok(Identity {
            provider: self.config.idp_id.clone(),
            subject,
            claims,
            email_verified,
        })
    }
}
