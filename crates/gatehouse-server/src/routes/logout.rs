//! `POST /logout` and `POST /logout/all`: the token's device (or every
//! device) is deleted with all its tokens. An expired token may log out
//! (its session is soft-logged-out, not revoked); a revoked one may not.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiResult;
use crate::extract::LoggingOut;
use crate::state::AppState;

pub async fn logout(
    State(state): State<AppState>,
    LoggingOut(requester): LoggingOut,
) -> ApiResult<Json<Value>> {
    state
        .store
        .delete_device(&requester.user_id, &requester.device_id)
        .await?;
    state
        .sessions
        .invalidate_device(&requester.user_id, &requester.device_id);
    Ok(Json(json!({})))
}

pub async fn logout_all(
    State(state): State<AppState>,
    LoggingOut(requester): LoggingOut,
) -> ApiResult<Json<Value>> {
    state.store.delete_all_devices(&requester.user_id).await?;
    state.sessions.invalidate_user(&requester.user_id);
    Ok(Json(json!({})))
}
