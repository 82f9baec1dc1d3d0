//! The v1 API of the seed documents: `POST /_matrix/client/api/v1/login`
//! (`type`, `user`, `password`) and `POST /_matrix/client/api/v1/tokenrefresh`.
//!
//! v1 login always issues a refresh token (its access token expires, as that
//! API allowed), and `/tokenrefresh` is single-use: a refresh token that was
//! exchanged once is dead, and presenting it again is 403 `M_FORBIDDEN`.

use axum::Json;
use axum::extract::State;
use gatehouse_core::ErrorKind;
use gatehouse_core::identifier::Identifier;
use gatehouse_core::refresh::Endpoint;
use serde::{Deserialize, Serialize};

use super::login::{PASSWORD, Secret, check_address_limit, check_device_id, start_session};
use super::refresh::rotate;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientIp, MatrixJson};
use crate::metrics::LoginOutcome;
use crate::password_auth::check_password;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct LegacyLoginBody {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
}

#[derive(Debug, Serialize)]
pub struct LegacyLoginResponse {
    pub user_id: String,
    pub access_token: String,
    pub home_server: String,
    pub refresh_token: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    MatrixJson(body): MatrixJson<LegacyLoginBody>,
) -> ApiResult<Json<LegacyLoginResponse>> {
    check_address_limit(&state, ip)?;
    let kind = body.kind.ok_or_else(|| ApiError::missing("type"))?;
    if kind != PASSWORD {
        return Err(ApiError::new(ErrorKind::Unknown, "Bad login type."));
    }
    let user = body.user.ok_or_else(|| ApiError::missing("user"))?;
    let password = body
        .password
        .ok_or_else(|| ApiError::missing("password"))?
        .take();
    let account = check_password(&state, &Identifier::User { user }, password, Some(ip)).await?;
    let session =
        start_session(&state, account.user_id, check_device_id(None)?, None, true).await?;
    state.metrics.login(LoginOutcome::Ok);
    Ok(Json(LegacyLoginResponse {
        user_id: session.user_id,
        access_token: session.access_token,
        home_server: session.home_server,
        refresh_token: session.refresh_token,
    }))
}

#[derive(Debug, Deserialize)]
pub struct TokenRefreshBody {
    pub refresh_token: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TokenRefreshResponse {
    pub access_token: String,
    pub refresh_token: String,
}

pub async fn token_refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    MatrixJson(body): MatrixJson<TokenRefreshBody>,
) -> ApiResult<Json<TokenRefreshResponse>> {
    let presented = body
        .refresh_token
        .ok_or_else(|| ApiError::missing("refresh_token"))?;
    let rotated = rotate(&state, ip, &presented, Endpoint::LegacyV1)
        .await?
        .map_err(|_| ApiError::forbidden("Refresh token is unknown or has already been used"))?;
    Ok(Json(TokenRefreshResponse {
        access_token: rotated.access_token,
        refresh_token: rotated.refresh_token,
    }))
}
