//! Account calls. Those the server protects with UIA take an optional auth
//! dict, so they plug into [`crate::InteractiveAuth`] as its `do_request`.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{Auth, Client};
use crate::error::Error;
use crate::login::{encode, with_auth};

/// A device as `GET /devices` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Device {
    pub device_id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub last_seen_ip: Option<String>,
    #[serde(default)]
    pub last_seen_ts: Option<u64>,
}

/// A third-party ID bound to the account.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ThirdPartyId {
    pub medium: String,
    pub address: String,
    #[serde(default)]
    pub added_at: u64,
    #[serde(default)]
    pub validated_at: u64,
}

/// The answer of a `requestToken` call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RequestTokenResponse {
    pub sid: String,
    #[serde(default)]
    pub submit_url: Option<String>,
}

/// Which `requestToken` endpoint: what the validated 3PID is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    Register,
    PasswordReset,
    AddThreepid,
}

impl TokenPurpose {
    fn prefix(self) -> &'static str {
        match self {
            Self::Register => "/_matrix/client/v3/register",
            Self::PasswordReset => "/_matrix/client/v3/account/password",
            Self::AddThreepid => "/_matrix/client/v3/account/3pid",
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|e| Error::InvalidResponse(e.to_string()))
}

impl Client {
    /// `POST /account/password`. With a session it changes the password;
    /// without one it is the email/phone reset flow.
    pub async fn set_password(
        &self,
        new_password: &str,
        logout_devices: bool,
        auth: Option<Value>,
    ) -> Result<(), Error> {
        let body = with_auth(
            json!({ "new_password": new_password, "logout_devices": logout_devices }),
            auth,
        );
        let mode = if self.session().is_some() {
            Auth::Required
        } else {
            Auth::None
        };
        self.send(
            Method::POST,
            "/_matrix/client/v3/account/password",
            Some(&body),
            mode,
        )
        .await?;
        Ok(())
    }

    pub async fn devices(&self) -> Result<Vec<Device>, Error> {
        let v = self
            .send(
                Method::GET,
                "/_matrix/client/v3/devices",
                None,
                Auth::Required,
            )
            .await?;
        decode(v.get("devices").cloned().unwrap_or_else(|| json!([])))
    }

    pub async fn device(&self, device_id: &str) -> Result<Device, Error> {
        decode(
            self.send(
                Method::GET,
                &format!("/_matrix/client/v3/devices/{}", encode(device_id)),
                None,
                Auth::Required,
            )
            .await?,
        )
    }

    pub async fn set_device_display_name(&self, device_id: &str, name: &str) -> Result<(), Error> {
        let path = format!("/_matrix/client/v3/devices/{}", encode(device_id));
        self.send(
            Method::PUT,
            &path,
            Some(&json!({ "display_name": name })),
            Auth::Required,
        )
        .await?;
        Ok(())
    }

    /// `DELETE /devices/{id}` (UIA).
    pub async fn delete_device(&self, device_id: &str, auth: Option<Value>) -> Result<(), Error> {
        let path = format!("/_matrix/client/v3/devices/{}", encode(device_id));
        self.send(
            Method::DELETE,
            &path,
            Some(&with_auth(json!({}), auth)),
            Auth::Required,
        )
        .await?;
        Ok(())
    }

    /// `POST /delete_devices` (UIA).
    pub async fn delete_devices(
        &self,
        device_ids: &[String],
        auth: Option<Value>,
    ) -> Result<(), Error> {
        let body = with_auth(json!({ "devices": device_ids }), auth);
        self.send(
            Method::POST,
            "/_matrix/client/v3/delete_devices",
            Some(&body),
            Auth::Required,
        )
        .await?;
        Ok(())
    }

    /// `POST /account/deactivate` (UIA). The session ends on success.
    pub async fn deactivate_account(
        &self,
        auth: Option<Value>,
        erase: bool,
    ) -> Result<Value, Error> {
        let body = with_auth(json!({ "erase": erase }), auth);
        let v = self
            .send(
                Method::POST,
                "/_matrix/client/v3/account/deactivate",
                Some(&body),
                Auth::Required,
            )
            .await?;
        self.set_session(None);
        Ok(v)
    }

    /// `POST /keys/device_signing/upload` (UIA when replacing keys).
    pub async fn upload_device_signing_keys(
        &self,
        keys: Value,
        auth: Option<Value>,
    ) -> Result<(), Error> {
        let body = with_auth(keys, auth);
        self.send(
            Method::POST,
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&body),
            Auth::Required,
        )
        .await?;
        Ok(())
    }

    /// `POST /register` with a full body (UIA); `auth` is added when given.
    /// Returns the raw answer (`user_id`, `access_token`…).
    pub async fn register(&self, body: Value, auth: Option<Value>) -> Result<Value, Error> {
        let body = with_auth(body, auth);
        self.send(
            Method::POST,
            "/_matrix/client/v3/register",
            Some(&body),
            Auth::None,
        )
        .await
    }

    /// `GET /register/available`.
    pub async fn is_username_available(&self, username: &str) -> Result<bool, Error> {
        let path = format!(
            "/_matrix/client/v3/register/available?username={}",
            encode(username)
        );
        let v = self.send(Method::GET, &path, None, Auth::None).await?;
        Ok(v.get("available").and_then(Value::as_bool).unwrap_or(false))
    }

    /// `GET /v1/register/m.login.registration_token/validity`.
    pub async fn registration_token_validity(&self, token: &str) -> Result<bool, Error> {
        let path = format!(
            "/_matrix/client/v1/register/m.login.registration_token/validity?token={}",
            encode(token)
        );
        let v = self.send(Method::GET, &path, None, Auth::None).await?;
        Ok(v.get("valid").and_then(Value::as_bool).unwrap_or(false))
    }

    /// `POST …/email/requestToken` for `purpose`. With a `next_link`, the
    /// link in the email sends the browser there once it validated (the
    /// server may refuse hosts it does not allow: `M_INVALID_PARAM`).
    pub async fn request_email_token(
        &self,
        purpose: TokenPurpose,
        email: &str,
        client_secret: &str,
        send_attempt: u64,
        next_link: Option<&str>,
    ) -> Result<RequestTokenResponse, Error> {
        let mut body =
            json!({ "email": email, "client_secret": client_secret, "send_attempt": send_attempt });
        if let Some(next_link) = next_link {
            body["next_link"] = next_link.into();
        }
        let path = format!("{}/email/requestToken", purpose.prefix());
        let mode = if purpose == TokenPurpose::AddThreepid {
            Auth::Required
        } else {
            Auth::None
        };
        decode(self.send(Method::POST, &path, Some(&body), mode).await?)
    }

    /// `POST …/msisdn/requestToken` for `purpose`.
    pub async fn request_msisdn_token(
        &self,
        purpose: TokenPurpose,
        country: &str,
        phone_number: &str,
        client_secret: &str,
        send_attempt: u64,
    ) -> Result<RequestTokenResponse, Error> {
        let body = json!({ "country": country, "phone_number": phone_number, "client_secret": client_secret, "send_attempt": send_attempt });
        let path = format!("{}/msisdn/requestToken", purpose.prefix());
        let mode = if purpose == TokenPurpose::AddThreepid {
            Auth::Required
        } else {
            Auth::None
        };
        decode(self.send(Method::POST, &path, Some(&body), mode).await?)
    }

    /// Matrix-js-sdk's `requestRegisterEmailToken`.
    pub async fn request_register_email_token(
        &self,
        email: &str,
        client_secret: &str,
        send_attempt: u64,
        next_link: Option<&str>,
    ) -> Result<RequestTokenResponse, Error> {
        self.request_email_token(
            TokenPurpose::Register,
            email,
            client_secret,
            send_attempt,
            next_link,
        )
        .await
    }

    /// `GET /account/3pid`.
    pub async fn threepids(&self) -> Result<Vec<ThirdPartyId>, Error> {
        let v = self
            .send(
                Method::GET,
                "/_matrix/client/v3/account/3pid",
                None,
                Auth::Required,
            )
            .await?;
        decode(v.get("threepids").cloned().unwrap_or_else(|| json!([])))
    }

    /// `POST /account/3pid/add` (UIA).
    pub async fn add_threepid(
        &self,
        client_secret: &str,
        sid: &str,
        auth: Option<Value>,
    ) -> Result<(), Error> {
        let body = with_auth(json!({ "client_secret": client_secret, "sid": sid }), auth);
        self.send(
            Method::POST,
            "/_matrix/client/v3/account/3pid/add",
            Some(&body),
            Auth::Required,
        )
        .await?;
        Ok(())
    }

    /// `POST /account/3pid/delete`.
    pub async fn delete_threepid(&self, medium: &str, address: &str) -> Result<(), Error> {
        let body = json!({ "medium": medium, "address": address });
        self.send(
            Method::POST,
            "/_matrix/client/v3/account/3pid/delete",
            Some(&body),
            Auth::Required,
        )
        .await?;
        Ok(())
    }
}
