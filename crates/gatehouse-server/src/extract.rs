//! Extractors: the JSON body (with the spec's error codes for every way a
//! body can be wrong), the client address, and the authenticated requester.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use gatehouse_core::ErrorKind;
use gatehouse_core::user_id::UserId;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use zeroize::Zeroize;

use crate::error::ApiError;
use crate::sessions::Expired;
use crate::state::AppState;

/// A JSON object request body, deserialised into `T`.
///
/// * larger than `max_request_body_bytes` → 413 `M_TOO_LARGE`
/// * not JSON (empty bodies included) → 400 `M_NOT_JSON`
/// * JSON but not an object → 400 `M_BAD_JSON`
/// * a key of the wrong type → 400 `M_BAD_JSON`, naming the key
pub struct MatrixJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for MatrixJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        let parsed = parse_json_object(&bytes).map(MatrixJson);
        wipe(bytes);
        parsed
    }
}

/// A query string, deserialised; a malformed one (a duplicated key, a bad
/// percent-escape, a value of the wrong type) is a Matrix error —
/// 400 `M_INVALID_PARAM` — never axum's `text/plain` rejection.
pub struct MatrixQuery<T>(pub T);

impl<T: DeserializeOwned, S: Sync> FromRequestParts<S> for MatrixQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(MatrixQuery)
            .map_err(|e| ApiError::invalid(format!("Invalid query string: {e}")))
    }
}

/// Reads a body within `max_request_body_bytes` (413 `M_TOO_LARGE` past it).
async fn read_body(req: Request, state: &AppState) -> Result<bytes::Bytes, ApiError> {
    let limit = state.config.max_request_body_bytes;
    let too_large = || {
        ApiError::new(
            ErrorKind::TooLarge,
            format!("Request body exceeds {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = req.into_body();
    if declared.is_some_and(|n| n > limit as u64) {
        linger(body, declared.unwrap_or(0)).await;
        return Err(too_large());
    }
    let collected = tokio::time::timeout(BODY_TIMEOUT, Limited::new(&mut body, limit).collect());
    let Ok(collected) = collected.await else {
        // A client trickling its body would hold a task and a connection
        // for as long as it liked.
        let mut e = ApiError::new(
            ErrorKind::Unknown,
            "The request body did not arrive in time",
        );
        e.status = Some(408);
        return Err(e);
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            linger(body, 0).await;
            Err(too_large())
        }
        Err(_) => Err(ApiError::new(
            ErrorKind::NotJson,
            "Could not read the request body",
        )),
    }
}

/// Bodies carry passwords: wipe our copy once parsed.
fn wipe(bytes: bytes::Bytes) {
    if let Ok(mut owned) = bytes.try_into_mut() {
        owned.as_mut().zeroize();
    }
}

/// A JSON object body kept as a value: UIA needs the exact body it
/// authorises, and the handler deserialises it with [`typed`]. An empty
/// body counts as `{}` (DELETE requests often have none).
pub struct RawJson(pub serde_json::Value);

impl FromRequest<AppState> for RawJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(serde_json::json!({})));
        }
        let parsed = parse_json_object(&bytes).map(RawJson);
        wipe(bytes);
        parsed
    }
}

/// Deserialises a body already known to be a JSON object.
pub fn typed<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_json(format!("'{path}': {}", e.into_inner()))
    })
}

/// The parsing half of [`MatrixJson`], usable on bytes already read.
pub fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|_| ApiError::new(ErrorKind::NotJson, "Content not JSON."))?;
    if !value.is_object() {
        return Err(ApiError::bad_json("Request body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_json(inner.to_string())
        } else {
            ApiError::bad_json(format!("'{path}': {inner}"))
        }
    })
}

/// The client's IP address, for rate limits and logs.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.config.trust_x_forwarded_for
            && let Some(ip) = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                // The last entry of the last line is the one our proxy
                // added (appended, or as a line of its own); anything
                // before it came from the client and could be anything.
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
        {
            return Ok(Self(ip));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(Self(peer.unwrap_or(IpAddr::from([127, 0, 0, 1]))))
    }
}

/// The owner of a valid access token.
#[derive(Debug, Clone)]
pub struct Requester {
    pub user_id: UserId,
    pub device_id: String,
    pub is_guest: bool,
    /// A server administrator.
    pub is_admin: bool,
    /// Locked by an administrator: refused everywhere but logout.
    pub is_locked: bool,
    /// Suspended by an administrator: see [`Requester::not_suspended`].
    pub is_suspended: bool,
    /// The client's address (rate limits for what the requester does).
    pub ip: std::net::IpAddr,
    /// The application service whose `as_token` made the request (its
    /// `id`); such a request has no device (`device_id` is empty) unless
    /// it asserts one.
    pub appservice: Option<std::sync::Arc<str>>,
}

/// Where a request's access token came from (borrowed from the header in
/// the common case: this runs on every authenticated request).
fn presented_token(parts: &Parts) -> Option<std::borrow::Cow<'_, str>> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| std::borrow::Cow::Borrowed(token.trim()));
    }
    // The `access_token` query parameter was removed in v1.20; only the
    // legacy v1 API, which defined it, still accepts it.
    if parts.uri.path().starts_with("/_matrix/client/api/v1/") {
        let query = parts.uri.query()?;
        return form_urlencoded_get(query, "access_token").map(std::borrow::Cow::Owned);
    }
    None
}

fn form_urlencoded_get(query: &str, key: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
}

impl FromRequestParts<AppState> for Requester {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let requester = authenticate(parts, state, Expired::Refuse).await?;
        if requester.is_locked {
            return Err(locked());
        }
        Ok(requester)
    }
}

/// The spec's answer to a locked account: 401, `soft_logout: true` (the
/// client keeps its session for when the lock is lifted).
pub fn locked() -> ApiError {
    ApiError::new(ErrorKind::UserLocked, "This account has been locked")
}

impl Requester {
    /// Refuses an action a suspended account may not take. The spec leaves
    /// the list to servers but asks that logging in and out, managing
    /// devices, cross-signing, deactivating and adding contact details stay
    /// open. Of what Gatehouse serves, only removing a contact 3PID is
    /// closed (the spec: "change or add, but not remove"); the rest —
    /// sending, joining, profiles — is the homeserver's to refuse.
    pub fn not_suspended(&self) -> Result<(), ApiError> {
        if self.is_suspended {
            return Err(ApiError::new(
                ErrorKind::UserSuspended,
                "You cannot perform this action while suspended.",
            ));
        }
        Ok(())
    }
}

/// The owner of an access token that may have expired (not been revoked),
/// or whose account is locked: for `/logout` and `/logout/all` only.
pub struct LoggingOut(pub Requester);

impl FromRequestParts<AppState> for LoggingOut {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state, Expired::Accept).await.map(Self)
    }
}

/// The owner of the request's access token, seen from this request's address.
async fn authenticate(
    parts: &mut Parts,
    state: &AppState,
    expired: Expired,
) -> Result<Requester, ApiError> {
    let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
    let token = presented_token(parts)
        .ok_or_else(|| ApiError::new(ErrorKind::MissingToken, "Missing access token"))?;
    // Gatehouse's own tokens are never an appservice's (checked at load).
    if !state.appservices.is_empty()
        && !token.starts_with(gatehouse_core::token::TokenKind::Access.prefix())
        && let Some(service) = state.appservices.by_token(&token)
    {
        return appservice_requester(parts, state, &service, ip).await;
    }
    state.sessions.authenticate(&token, ip, expired).await
}

/// An appservice's request: its sender, or the `user_id` it asserts, which
/// must be in its namespaces and (but for the sender) registered; and, if
/// it asserts a `device_id` (spec v1.17's device masquerading), that
/// device, which must be the user's.
async fn appservice_requester(
    parts: &Parts,
    state: &AppState,
    service: &crate::appservice::Appservice,
    ip: IpAddr,
) -> Result<Requester, ApiError> {
    let query = parts.uri.query().unwrap_or_default();
    let wanted = form_urlencoded_get(query, "user_id");
    let device = form_urlencoded_get(query, "device_id")
        .or_else(|| form_urlencoded_get(query, "org.matrix.msc3202.device_id"));
    let user_id =
        crate::appservice::asserted_user(service, wanted.as_deref(), &state.config.server_name)?;
    let record = state.store.user(&user_id).await?;
    let (is_admin, is_locked, is_suspended) = match record {
        Some(r) if r.deactivated => {
            return Err(ApiError::new(
                ErrorKind::UserDeactivated,
                "This account has been deactivated",
            ));
        }
        Some(r) => (r.is_admin, r.locked, r.suspended),
        // The sender acts without an account of its own here.
        None if user_id == service.sender => (false, false, false),
        None => {
            return Err(ApiError::forbidden(format!(
                "Application service has not registered this user ({user_id})"
            )));
        }
    };
    let device_id = match device {
        None => String::new(),
        Some(device) => {
            if state.store.device(&user_id, &device).await?.is_none() {
                return Err(ApiError::new(
                    ErrorKind::UnknownDevice,
                    format!("Device {device} is not one of {user_id}'s"),
                ));
            }
            device
        }
    };
    Ok(Requester {
        user_id,
        device_id,
        is_guest: false,
        is_admin,
        is_locked,
        is_suspended,
        ip,
        appservice: Some(service.id.clone()),
    })
}

/// `Option<Requester>`: `None` when no token is presented at all (password
/// reset by email); a presented but invalid token is still refused.
impl axum::extract::OptionalFromRequestParts<AppState> for Requester {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, ApiError> {
        if presented_token(parts).is_none() {
            return Ok(None);
        }
        <Self as FromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

/// How long a request body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Bodies up to this size are read and discarded before a 413 is sent.
const LINGER_MAX: u64 = 1024 * 1024;

/// Reads and discards the rest of a too-large body (when it is not
/// enormous), so that the client, still sending, is not answered with a
/// connection reset that would swallow our 413 — nginx's "lingering close".
async fn linger(body: Body, declared: u64) {
    if declared > LINGER_MAX {
        return;
    }
    let drain = Limited::new(body, LINGER_MAX as usize).collect();
    let _ = tokio::time::timeout(BODY_TIMEOUT, drain).await;
}
