//! Login: flows, every identifier type, login tokens, SSO URLs, whoami,
//! logout.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::client::{Auth, Client, Session, now_ms};
use crate::error::Error;

/// How the user is identified (`identifier` in `/login` and UIA).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum UserIdentifier {
    /// A localpart or full user ID.
    #[serde(rename = "m.id.user")]
    User { user: String },
    /// A canonical third-party ID (`email` or `msisdn`).
    #[serde(rename = "m.id.thirdparty")]
    ThirdParty { medium: String, address: String },
    /// A phone number as dialled from `country`.
    #[serde(rename = "m.id.phone")]
    Phone { country: String, phone: String },
}

impl UserIdentifier {
    pub fn user(user: impl Into<String>) -> Self {
        Self::User { user: user.into() }
    }
    pub fn email(address: impl Into<String>) -> Self {
        Self::ThirdParty {
            medium: "email".into(),
            address: address.into(),
        }
    }
    pub fn phone(country: impl Into<String>, phone: impl Into<String>) -> Self {
        Self::Phone {
            country: country.into(),
            phone: phone.into(),
        }
    }
}

/// A `/login` request body. Its `Debug` hides the password and token.
#[derive(Clone, Serialize)]
pub struct LoginRequest {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<UserIdentifier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_device_display_name: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refresh_token: bool,
}

/// `Some("<redacted>")` for a present secret.
fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<redacted>")
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("kind", &self.kind)
            .field("identifier", &self.identifier)
            .field("password", &redacted(&self.password))
            .field("token", &redacted(&self.token))
            .field("device_id", &self.device_id)
            .field(
                "initial_device_display_name",
                &self.initial_device_display_name,
            )
            .field("refresh_token", &self.refresh_token)
            .finish()
    }
}

impl LoginRequest {
    /// `m.login.password`.
    pub fn password(identifier: UserIdentifier, password: impl Into<String>) -> Self {
        Self {
            kind: "m.login.password".into(),
            identifier: Some(identifier),
            password: Some(password.into()),
            token: None,
            device_id: None,
            initial_device_display_name: None,
            refresh_token: false,
        }
    }

    /// `m.login.token` (after SSO, or from `/login/get_token`).
    pub fn token(token: impl Into<String>) -> Self {
        Self {
            kind: "m.login.token".into(),
            identifier: None,
            password: None,
            token: Some(token.into()),
            device_id: None,
            initial_device_display_name: None,
            refresh_token: false,
        }
    }

    pub fn device_id(mut self, id: impl Into<String>) -> Self {
        self.device_id = Some(id.into());
        self
    }

    pub fn initial_device_display_name(mut self, name: impl Into<String>) -> Self {
        self.initial_device_display_name = Some(name.into());
        self
    }

    /// Ask for a refresh token (and so an expiring access token).
    pub fn refresh_token(mut self, yes: bool) -> Self {
        self.refresh_token = yes;
        self
    }
}

/// The `/login` (and `/register`) answer. Its `Debug` hides the tokens.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct LoginResponse {
    pub user_id: String,
    pub access_token: String,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in_ms: Option<u64>,
    #[serde(default)]
    pub well_known: Option<Value>,
    #[serde(default)]
    pub home_server: Option<String>,
    /// When the response arrived, to turn `expires_in_ms` into a time.
    #[serde(skip, default = "now_ms")]
    pub received_at_ms: u64,
}

impl std::fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginResponse")
            .field("user_id", &self.user_id)
            .field("access_token", &"<redacted>")
            .field("device_id", &self.device_id)
            .field("refresh_token", &redacted(&self.refresh_token))
            .field("expires_in_ms", &self.expires_in_ms)
            .field("well_known", &self.well_known)
            .field("home_server", &self.home_server)
            .finish()
    }
}

impl LoginResponse {
    /// The session to build a client from (seed 000's recommended pattern).
    pub fn session(&self) -> Session {
        Session {
            access_token: self.access_token.clone(),
            user_id: self.user_id.clone(),
            device_id: self.device_id.clone(),
            refresh_token: self.refresh_token.clone(),
            expires_at_ms: self
                .expires_in_ms
                .map(|ms| self.received_at_ms.saturating_add(ms)),
        }
    }
}

/// An SSO identity provider offered by `m.login.sso`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IdentityProvider {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub icon: Option<String>,
    #[serde(default)]
    pub brand: Option<String>,
}

/// One entry of `GET /login`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LoginFlow {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub get_login_token: bool,
    #[serde(default)]
    pub identity_providers: Vec<IdentityProvider>,
}

/// `GET /account/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WhoAmI {
    pub user_id: String,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub is_guest: bool,
}

/// `POST /login/get_token`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LoginToken {
    pub login_token: String,
    pub expires_in_ms: u64,
}

/// Which redirect `sso_login_url` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsoKind {
    Sso,
    Cas,
}

/// The user's intent, passed to the server's SSO page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsoAction {
    Login,
    Register,
}

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|e| Error::InvalidResponse(e.to_string()))
}

/// RFC 3986's unreserved characters stay; everything else is escaped.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a path segment or query value. Not form encoding: a
/// `+` for a space means a space only in queries; in a path it is a `+`,
/// and `/devices/my+phone` would name another device.
pub(crate) fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COMPONENT).to_string()
}

impl Client {
    /// `GET /login`: the login types the server supports.
    pub async fn login_flows(&self) -> Result<Vec<LoginFlow>, Error> {
        let v = self
            .send(Method::GET, "/_matrix/client/v3/login", None, Auth::None)
            .await?;
        decode(v.get("flows").cloned().unwrap_or_else(|| json!([])))
    }

    /// `POST /login`, leaving this client's session alone: build a fresh
    /// client from the response.
    pub async fn login_request(&self, request: LoginRequest) -> Result<LoginResponse, Error> {
        let body =
            serde_json::to_value(&request).map_err(|e| Error::InvalidResponse(e.to_string()))?;
        decode(
            self.send(
                Method::POST,
                "/_matrix/client/v3/login",
                Some(&body),
                Auth::None,
            )
            .await?,
        )
    }

    /// `POST /login`, then use the new session in this client.
    pub async fn login(&self, request: LoginRequest) -> Result<LoginResponse, Error> {
        let response = self.login_request(request).await?;
        self.set_session(Some(response.session()));
        Ok(response)
    }

    /// `POST /login/get_token` (under UIA: pass the auth dict, or `None`
    /// for the first try).
    pub async fn login_token(&self, auth: Option<Value>) -> Result<LoginToken, Error> {
        let body = with_auth(json!({}), auth);
        decode(
            self.send(
                Method::POST,
                "/_matrix/client/v1/login/get_token",
                Some(&body),
                Auth::Required,
            )
            .await?,
        )
    }

    /// The URL to send the user's browser to for SSO (or CAS) login.
    pub fn sso_login_url(
        &self,
        redirect_url: &str,
        kind: SsoKind,
        idp_id: Option<&str>,
        action: Option<SsoAction>,
    ) -> String {
        let base = match (kind, idp_id) {
            (SsoKind::Cas, _) => self.url("/_matrix/client/v3/login/cas/redirect"),
            (SsoKind::Sso, Some(idp)) => self.url(&format!(
                "/_matrix/client/v3/login/sso/redirect/{}",
                encode(idp)
            )),
            (SsoKind::Sso, None) => self.url("/_matrix/client/v3/login/sso/redirect"),
        };
        let mut url = format!("{base}?redirectUrl={}", encode(redirect_url));
        // The stable name (spec v1.11) and MSC3824's, which servers older
        // than the spec read.
        if let Some(action) = action {
            let name = match action {
                SsoAction::Login => "login",
                SsoAction::Register => "register",
            };
            url.push_str(&format!("&action={name}&org.matrix.msc3824.action={name}"));
        }
        url
    }

    /// The URL of a UIA stage's fallback page for `session`.
    pub fn fallback_auth_url(&self, stage: &str, session: &str) -> String {
        self.url(&format!(
            "/_matrix/client/v3/auth/{}/fallback/web?session={}",
            encode(stage),
            encode(session)
        ))
    }

    pub async fn whoami(&self) -> Result<WhoAmI, Error> {
        decode(
            self.send(
                Method::GET,
                "/_matrix/client/v3/account/whoami",
                None,
                Auth::Required,
            )
            .await?,
        )
    }

    /// `POST /logout`; the session is forgotten.
    pub async fn logout(&self) -> Result<(), Error> {
        self.send(
            Method::POST,
            "/_matrix/client/v3/logout",
            Some(&json!({})),
            Auth::Required,
        )
        .await?;
        self.set_session(None);
        Ok(())
    }

    /// `POST /logout/all`; the session is forgotten.
    pub async fn logout_all(&self) -> Result<(), Error> {
        self.send(
            Method::POST,
            "/_matrix/client/v3/logout/all",
            Some(&json!({})),
            Auth::Required,
        )
        .await?;
        self.set_session(None);
        Ok(())
    }
}

/// Adds `auth` to a request body when there is one.
pub(crate) fn with_auth(mut body: Value, auth: Option<Value>) -> Value {
    if let (Some(map), Some(auth)) = (body.as_object_mut(), auth) {
        map.insert("auth".into(), auth);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_serialise_as_the_spec_says() {
        assert_eq!(
            serde_json::to_value(UserIdentifier::user("a")).unwrap(),
            json!({"type": "m.id.user", "user": "a"})
        );
        assert_eq!(
            serde_json::to_value(UserIdentifier::phone("GB", "07")).unwrap(),
            json!({"type": "m.id.phone", "country": "GB", "phone": "07"})
        );
        let req = LoginRequest::token("tok");
        assert_eq!(
            serde_json::to_value(req).unwrap(),
            json!({"type": "m.login.token", "token": "tok"})
        );
    }

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(encode("my phone/1+2"), "my%20phone%2F1%2B2");
        assert_eq!(encode("AbC-._~9"), "AbC-._~9");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn urls() {
        let c = Client::builder("https://hs.example.org/").build().unwrap();
        assert_eq!(
            c.sso_login_url(
                "http://127.0.0.1:1234/cb?x=1",
                SsoKind::Sso,
                Some("oidc-x"),
                Some(SsoAction::Register)
            ),
            "https://hs.example.org/_matrix/client/v3/login/sso/redirect/oidc-x?redirectUrl=http%3A%2F%2F127.0.0.1%3A1234%2Fcb%3Fx%3D1&action=register&org.matrix.msc3824.action=register"
        );
        assert_eq!(
            c.fallback_auth_url("m.login.password", "abc"),
            "https://hs.example.org/_matrix/client/v3/auth/m.login.password/fallback/web?session=abc"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let req = LoginRequest::password(UserIdentifier::user("alice"), "hunter2-secret");
        let shown = format!("{req:?}");
        assert!(
            !shown.contains("hunter2-secret") && shown.contains("alice"),
            "{shown}"
        );
        let shown = format!("{:?}", LoginRequest::token("login-token-secret"));
        assert!(!shown.contains("login-token-secret"), "{shown}");
        let resp: LoginResponse = serde_json::from_value(serde_json::json!({
            "user_id": "@a:hs", "access_token": "at-secret", "refresh_token": "rt-secret"
        }))
        .unwrap();
        let shown = format!("{resp:?} {:?}", resp.session());
        assert!(
            !shown.contains("at-secret") && !shown.contains("rt-secret"),
            "{shown}"
        );
    }

    #[test]
    fn sso_urls_carry_both_action_names() {
        let client = Client::builder("https://hs.example").build().unwrap();
        let url = client.sso_login_url(
            "http://127.0.0.1:9/cb",
            SsoKind::Sso,
            Some("oidc-x"),
            Some(SsoAction::Register),
        );
        assert!(url.contains("&action=register"), "{url}");
        assert!(url.contains("&org.matrix.msc3824.action=register"), "{url}");
        assert!(
            url.contains("/login/sso/redirect/oidc-x?redirectUrl="),
            "{url}"
        );
    }
}
