//! Synapse's side of delegated authentication: the `/_synapse/mas/` API a
//! delegating Synapse serves to its authentication service, and the one
//! client-API call Gatehouse relays (cross-signing upload).
//!
//! Every call carries the shared secret; none is retried here (the caller
//! decides: a login fails cleanly, a revocation is queued durably).

use std::time::Duration;

use gatehouse_core::ErrorCode;
use reqwest::Method;
use serde_json::{Value, json};
use zeroize::Zeroizing;

/// Why a call to the homeserver did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HomeserverError {
    /// No answer (connection refused, timeout, TLS…).
    #[error("homeserver unreachable: {0}")]
    Unreachable(String),
    /// An answer other than success.
    #[error("homeserver answered {status} {errcode}: {message}")]
    Refused {
        status: u16,
        errcode: String,
        message: String,
    },
}

impl HomeserverError {
    /// The user or device named does not exist there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Refused { status: 404, .. })
    }

    /// Synapse refused to create a user that exists (a race with another
    /// creation of the same user).
    pub fn is_user_in_use(&self) -> bool {
        self.errcode() == Some(ErrorCode::UserInUse)
    }

    /// Synapse's refusal, from its status and (JSON) body.
    fn refused(status: u16, body: &[u8]) -> Self {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        Self::Refused {
            status,
            errcode: v["errcode"].as_str().unwrap_or("M_UNKNOWN").to_owned(),
            message: v["error"].as_str().unwrap_or("no error message").to_owned(),
        }
    }

    fn errcode(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused { errcode, .. } => Some(ErrorCode::parse(errcode)),
            Self::Unreachable(_) => None,
        }
    }
}

/// What Synapse says of a localpart for a new user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Available,
    /// A user of that name exists there.
    Taken,
    /// In an application service's exclusive namespace (Synapse's own
    /// registration files): only that service may register it.
    Reserved,
}

/// A client of one Synapse's `/_synapse/mas/` endpoints.
pub struct SynapseClient {
    http: reqwest::Client,
    base: String,
    secret: Zeroizing<String>,
}

/// A relayed client-API answer: status and raw JSON body.
pub struct Relayed {
    pub status: u16,
    pub body: bytes::Bytes,
}

impl Relayed {
    /// Success, or Synapse's refusal as an error.
    fn ok(self) -> Result<(), HomeserverError> {
        match self.status {
            200..=299 => Ok(()),
            status => Err(HomeserverError::refused(status, &self.body)),
        }
    }
}

impl SynapseClient {
    /// `base` is the homeserver's client listener (no trailing slash needed).
    pub fn new(base: &str, secret: Zeroizing<String>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            secret,
        }
    }

    async fn call(
        &self,
        method: Method,
        name: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, HomeserverError> {
        let mut request = self
            .http
            .request(method, format!("{}/_synapse/mas/{name}", self.base))
            .bearer_auth(self.secret.as_str())
            .query(query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| HomeserverError::Unreachable(describe(&e)))?;
        let status = response.status().as_u16();
        let text = response
            .bytes()
            .await
            .map_err(|e| HomeserverError::Unreachable(describe(&e)))?;
        if !(200..300).contains(&status) {
            return Err(HomeserverError::refused(status, &text));
        }
        Ok(serde_json::from_slice(&text).unwrap_or(Value::Null))
    }

    /// Creates the user, or updates it: its email addresses are replaced
    /// by `emails` (Synapse keeps them as validated 3PIDs), and its lock
    /// set to `locked` (Synapse uses it to hide the user from its
    /// directory; refusing the user's requests is introspection's work).
    pub async fn provision_user(
        &self,
        localpart: &str,
        emails: &[String],
        locked: bool,
        display_name: Option<&str>,
    ) -> Result<(), HomeserverError> {
        let mut body = json!({ "localpart": localpart, "set_emails": emails, "locked": locked });
        if let Some(name) = display_name {
            body["set_displayname"] = json!(name);
        }
        self.call(Method::POST, "provision_user", &[], Some(body))
            .await
            .map(drop)
    }

    /// Whether Synapse would let a new user take `localpart`.
    pub async fn localpart_availability(
        &self,
        localpart: &str,
    ) -> Result<Availability, HomeserverError> {
        match self
            .call(
                Method::GET,
                "is_localpart_available",
                &[("localpart", localpart)],
                None,
            )
            .await
        {
            Ok(_) => Ok(Availability::Available),
            Err(e) if e.errcode() == Some(ErrorCode::UserInUse) => Ok(Availability::Taken),
            Err(e) if e.errcode() == Some(ErrorCode::Exclusive) => Ok(Availability::Reserved),
            Err(e) => Err(e),
        }
    }

    /// Creates the device, or leaves an existing one as it is.
    pub async fn upsert_device(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<(), HomeserverError> {
        let mut body = json!({ "localpart": localpart, "device_id": device_id });
        if let Some(name) = display_name {
            body["display_name"] = json!(name);
        }
        self.call(Method::POST, "upsert_device", &[], Some(body))
            .await
            .map(drop)
    }

    pub async fn update_device_display_name(
        &self,
        localpart: &str,
        device_id: &str,
        display_name: &str,
    ) -> Result<(), HomeserverError> {
        let body =
            json!({ "localpart": localpart, "device_id": device_id, "display_name": display_name });
        self.call(Method::POST, "update_device_display_name", &[], Some(body))
            .await
            .map(drop)
    }

    /// Deletes a device: its tokens stop working at once, cache or not.
    pub async fn delete_device(
        &self,
        localpart: &str,
        device_id: &str,
    ) -> Result<(), HomeserverError> {
        let body = json!({ "localpart": localpart, "device_id": device_id });
        self.call(Method::POST, "delete_device", &[], Some(body))
            .await
            .map(drop)
    }

    /// Deactivates the user (deleting its devices), erasing its profile
    /// when asked.
    pub async fn delete_user(&self, localpart: &str, erase: bool) -> Result<(), HomeserverError> {
        let body = json!({ "localpart": localpart, "erase": erase });
        self.call(Method::POST, "delete_user", &[], Some(body))
            .await
            .map(drop)
    }

    pub async fn reactivate_user(&self, localpart: &str) -> Result<(), HomeserverError> {
        let body = json!({ "localpart": localpart });
        self.call(Method::POST, "reactivate_user", &[], Some(body))
            .await
            .map(drop)
    }

    /// Lets the user replace their master cross-signing key once, within
    /// Synapse's ten-minute window.
    pub async fn allow_cross_signing_reset(&self, localpart: &str) -> Result<(), HomeserverError> {
        let body = json!({ "localpart": localpart });
        self.call(Method::POST, "allow_cross_signing_reset", &[], Some(body))
            .await
            .map(drop)
    }

    /// Creates a user of an appservice's exclusive namespace, as that
    /// appservice (its `as_token` in `authorization`). Synapse's own
    /// `provision_user` refuses such names (only the owning service may take
    /// them), and in delegated mode its `/register` still serves exactly
    /// this: appservice registration. No device, no token: those stay
    /// Gatehouse's. A user it already has is not an error.
    pub async fn register_appservice_user(
        &self,
        localpart: &str,
        authorization: &http::HeaderValue,
    ) -> Result<(), HomeserverError> {
        let body = json!({
            "type": "m.login.application_service",
            "username": localpart,
            "inhibit_login": true,
        });
        let answer = self
            .relay(
                Method::POST,
                "/_matrix/client/v3/register",
                Some(authorization),
                Some(body.to_string().into_bytes()),
            )
            .await?;
        match answer.ok() {
            Err(e) if e.is_user_in_use() => Ok(()),
            other => other,
        }
    }

    /// Suspends the user there, or lifts it, with an administrator's own
    /// token (`authorization`): Synapse's delegation API has no call for
    /// it, and Synapse is what refuses a suspended user's messages, joins
    /// and profile changes.
    pub async fn set_suspended(
        &self,
        user_id: &str,
        suspended: bool,
        authorization: &http::HeaderValue,
    ) -> Result<(), HomeserverError> {
        let path = format!(
            "/_synapse/admin/v1/suspend/{}",
            percent_encoding::utf8_percent_encode(user_id, percent_encoding::NON_ALPHANUMERIC)
        );
        let answer = self
            .relay(
                Method::PUT,
                &path,
                Some(authorization),
                Some(json!({ "suspend": suspended }).to_string().into_bytes()),
            )
            .await?;
        answer.ok()
    }

    /// Sends a client-API request on the client's behalf (its own access
    /// token), returning Synapse's answer as it is.
    pub async fn relay(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&http::HeaderValue>,
        body: Option<Vec<u8>>,
    ) -> Result<Relayed, HomeserverError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        if let Some(auth) = authorization {
            request = request.header(http::header::AUTHORIZATION, auth.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| HomeserverError::Unreachable(describe(&e)))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| HomeserverError::Unreachable(describe(&e)))?;
        Ok(Relayed { status, body })
    }
}

/// reqwest's top-level message hides the cause ("error sending request"):
/// the chain says what really happened.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
