//! The service side of delegated authentication: the metadata document a
//! delegating homeserver reads (and relays to clients at `auth_metadata`),
//! and token introspection, which it calls for every token it has not
//! cached.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use gatehouse_core::ErrorKind;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::sessions::Expired;
use crate::state::AppState;

/// The account-management actions the account page honours.
pub const ACCOUNT_ACTIONS: [&str; 6] = [
    "org.matrix.profile",
    "org.matrix.sessions_list",
    "org.matrix.session_view",
    "org.matrix.session_end",
    "org.matrix.cross_signing_reset",
    "org.matrix.account_deactivate",
];

/// `GET /.well-known/openid-configuration`. Only what the homeserver
/// needs and clients may use: Gatehouse is not an OAuth provider (yet), so
/// no endpoints are announced and clients keep to the legacy API.
pub async fn metadata(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let (Some(issuer), Some(account)) = (
        state.config.public_baseurl.as_ref(),
        state.account_page_url(),
    ) else {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            "public_baseurl is not configured",
        ));
    };
    Ok(Json(json!({
        "issuer": issuer,
        "account_management_uri": account,
        "account_management_actions_supported": ACCOUNT_ACTIONS,
    })))
}

/// The scope every live token has: the whole client-server API.
const API_SCOPE: &str = "urn:matrix:client:api:*";
/// Added for server administrators: Synapse's admin API (with its
/// separating space).
const ADMIN_SCOPE: &str = " urn:synapse:admin:*";

/// `POST /oauth2/introspect` (RFC 7662), for the homeserver only: the
/// shared secret as bearer token, the token in a form field. Anything but
/// a live Gatehouse access token is `{"active": false}`, always with 200:
/// the homeserver turns any other answer into a 503 for its client.
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<Introspection>> {
    let Some(homeserver) = &state.homeserver else {
        return Err(ApiError::new(
            ErrorKind::UnrecognizedEndpoint,
            "Unrecognized request",
        ));
    };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, secret)| secret.trim());
    let Some(presented) = presented else {
        return Err(ApiError::new(
            ErrorKind::MissingToken,
            "Missing credentials",
        ));
    };
    if !homeserver.is_shared_secret(presented) {
        return Err(ApiError::unknown_token(false, "Invalid credentials"));
    }
    // Borrowed from the body unless percent-encoded: this runs for every
    // token the homeserver has not cached.
    let Some(token) = form_urlencoded::parse(&body).find_map(|(k, v)| (k == "token").then_some(v))
    else {
        return Err(ApiError::missing("token"));
    };
    let unspecified = std::net::IpAddr::from([0, 0, 0, 0]);
    let Ok((requester, expires_at)) = state
        .sessions
        .authenticate_with_expiry(&token, unspecified, Expired::Refuse)
        .await
    else {
        return Ok(Json(Introspection::Inactive { active: false }));
    };
    // A locked account's tokens are kept but unusable: inactive to the
    // homeserver, which has no other way to hear of the lock.
    if requester.is_locked {
        return Ok(Json(Introspection::Inactive { active: false }));
    }
    let admin = if requester.is_admin { ADMIN_SCOPE } else { "" };
    Ok(Json(Introspection::Active {
        active: true,
        scope: format!(
            "{API_SCOPE} urn:matrix:client:device:{}{admin}",
            requester.device_id
        ),
        username: requester.user_id.localpart().to_owned(),
        sub: requester.user_id.to_string(),
        // Whole seconds, rounded down: the homeserver never outlives us.
        expires_in: expires_at.map(|at| at.saturating_sub(state.clock.now_ms()) / 1000),
        device_id: requester.device_id,
        token_type: "access_token",
    }))
}

/// An introspection answer (RFC 7662, with the homeserver's fields).
#[derive(serde::Serialize)]
#[serde(untagged)]
pub enum Introspection {
    Inactive {
        active: bool,
    },
    Active {
        active: bool,
        scope: String,
        username: String,
        sub: String,
        device_id: String,
        token_type: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_in: Option<u64>,
    },
}
