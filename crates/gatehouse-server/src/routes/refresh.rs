//! `POST /refresh`: rotation as `gatehouse_core::refresh` defines it.
//!
//! The `Authorization` header is ignored: clients (matrix-js-sdk among
//! them) send their expired access token along, and the refresh token alone
//! is the credential here.

use axum::Json;
use axum::extract::State;
use gatehouse_core::refresh::{Endpoint, Rejection};
use gatehouse_core::token::{self, TokenKind};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientIp, MatrixJson};
use crate::issue;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct RefreshBody {
    pub refresh_token: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RefreshResponse {
    pub access_token: String,
    pub refresh_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
}

/// Rotates `presented`; the error for a refused token is the caller's to
/// choose (a malformed token is as dead as an unknown one).
pub async fn rotate(
    state: &AppState,
    ip: std::net::IpAddr,
    presented: &str,
    endpoint: Endpoint,
) -> ApiResult<Result<RefreshResponse, Rejection>> {
    // Counted before anything is looked at: bad tokens count as good ones.
    state
        .limits
        .refreshes_per_address
        .check(ip)
        .map_err(ApiError::limited)?;
    if token::check(presented, TokenKind::Refresh).is_err() {
        return Ok(Err(Rejection::Dead));
    }
    let minted = issue::mint(state, true);
    let outcome = state
        .store
        .refresh(
            &token::hash(presented),
            endpoint,
            minted.pair,
            state.clock.now_ms(),
        )
        .await?;
    let session = match outcome {
        Ok(session) => session,
        Err(rejection) => return Ok(Err(rejection)),
    };
    if state
        .store
        .user(&session.user_id)
        .await?
        .is_some_and(|u| u.locked)
    {
        return Ok(Err(Rejection::Locked));
    }
    // Rotation may have retired older access tokens of this device.
    state
        .sessions
        .invalidate_device(&session.user_id, &session.device_id);
    Ok(Ok(RefreshResponse {
        access_token: minted.access_token.to_string(),
        refresh_token: minted
            .refresh_token
            .map(|t| t.to_string())
            .unwrap_or_default(),
        expires_in_ms: minted.expires_in_ms,
    }))
}

pub async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    MatrixJson(body): MatrixJson<RefreshBody>,
) -> ApiResult<Json<RefreshResponse>> {
    let presented = body
        .refresh_token
        .ok_or_else(|| ApiError::missing("refresh_token"))?;
    match rotate(&state, ip, &presented, Endpoint::Spec).await? {
        Ok(rotated) => Ok(Json(rotated)),
        // The new pair is never handed out: the old refresh token stays
        // good (its child unused) for when the lock is lifted.
        Err(Rejection::Locked) => Err(crate::extract::locked()),
        // Only an expired session may resume (the client logs in again to
        // the same device); one that was logged out, deleted, deactivated
        // or never existed may not.
        Err(Rejection::Expired) => Err(ApiError::unknown_token(true, "Refresh token has expired")),
        Err(Rejection::Dead) => Err(ApiError::unknown_token(
            false,
            "Refresh token is unknown or already used",
        )),
    }
}
