//! `POST /logout` and `POST /logout/all`: the token's device (or every
//! device) is deleted with all its tokens. An expired token may log out
//! (its session is soft-logged-out, not revoked); a revoked one may not.
//! An appservice logs out the device it asserts (`device_id`), if any.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiResult;
use crate::extract::LoggingOut;
use crate::homeserver;
use crate::state::AppState;

pub async fn logout(
    State(state): State<AppState>,
    LoggingOut(requester): LoggingOut,
) -> ApiResult<Json<Value>> {
    let (user, device) = (&requester.user_id, &requester.device_id);
    // An appservice's `as_token` without an asserted device: there is no
    // session to end, and the token itself lives in the registration file.
    // Answered as Synapse does (success, nothing changed).
    if device.is_empty() {
        return Ok(Json(json!({})));
    }
    homeserver::changing(
        &state,
        user,
        homeserver::devices_deleted([device.clone()]),
        async { Ok(state.store.delete_device(user, device).await?) },
    )
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
    let user = &requester.user_id;
    let devices = state.store.devices(user).await?;
    homeserver::changing(
        &state,
        user,
        homeserver::devices_deleted(devices.into_iter().map(|d| d.device_id)),
        async { Ok(state.store.delete_all_devices(user).await?) },
    )
    .await?;
    state.sessions.invalidate_user(&requester.user_id);
    Ok(Json(json!({})))
}
