//! Device management: list, get, rename, delete (one or several, under UIA).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use gatehouse_core::ErrorKind;
use gatehouse_store::DeviceRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::extract::{RawJson, Requester, typed};
use crate::homeserver;
use crate::state::AppState;
use crate::uia::{self, Sensitive};

fn device_json(d: &DeviceRecord) -> Value {
    let mut v = json!({ "device_id": d.device_id });
    if let Some(name) = &d.display_name {
        v["display_name"] = json!(name);
    }
    if let Some(ip) = &d.last_seen_ip {
        v["last_seen_ip"] = json!(ip);
    }
    if let Some(ts) = d.last_seen_at {
        v["last_seen_ts"] = json!(ts);
    }
    v
}

pub async fn list(State(state): State<AppState>, requester: Requester) -> ApiResult<Json<Value>> {
    let devices = state.store.devices(&requester.user_id).await?;
    Ok(Json(
        json!({ "devices": devices.iter().map(device_json).collect::<Vec<_>>() }),
    ))
}

fn not_found() -> ApiError {
    ApiError::new(ErrorKind::NotFound, "No such device")
}

pub async fn get(
    State(state): State<AppState>,
    requester: Requester,
    Path(device_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let device = state
        .store
        .device(&requester.user_id, &device_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(device_json(&device)))
}

#[derive(Deserialize)]
struct RenameBody {
    display_name: Option<String>,
}

/// Creates a device for an appservice (`PUT` of a device it does not have
/// yet: 201). The store makes devices with a session, so this one gets an
/// access token that is thrown away at once: nobody can ever present it.
async fn create_for_appservice(
    state: &AppState,
    requester: &Requester,
    device_id: &str,
    display_name: Option<String>,
) -> ApiResult<()> {
    super::login::check_device_id(Some(device_id.to_owned()))?;
    let user = &requester.user_id;
    if let Some(homeserver) = &state.homeserver {
        homeserver
            .prepare_device(user, device_id, display_name.as_deref())
            .await
            .map_err(|e| homeserver::unavailable(&e))?;
    }
    let minted = crate::issue::mint(state, false);
    let created = state
        .store
        .create_session(gatehouse_store::NewSession {
            user_id: user.clone(),
            device_id: device_id.to_owned(),
            initial_display_name: display_name,
            tokens: minted.pair,
            now: state.clock.now_ms(),
        })
        .await;
    if let Err(e) = created {
        if let Some(homeserver) = &state.homeserver {
            homeserver.forget_device(user, device_id).await;
        }
        return Err(e.into());
    }
    tracing::info!(user_id = %user, device_id, "device created by appservice");
    Ok(())
}

pub async fn rename(
    State(state): State<AppState>,
    requester: Requester,
    Path(device_id): Path<String>,
    RawJson(raw): RawJson,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body: RenameBody = typed(&raw)?;
    if let Some(name) = &body.display_name
        && name.len() > 100
    {
        return Err(ApiError::invalid("display_name is longer than 100 bytes"));
    }
    // An appservice creates the devices of its users this way.
    if requester.appservice.is_some()
        && state
            .store
            .device(&requester.user_id, &device_id)
            .await?
            .is_none()
    {
        create_for_appservice(&state, &requester, &device_id, body.display_name).await?;
        return Ok((StatusCode::CREATED, Json(json!({}))));
    }
    rename_existing(&state, &requester, &device_id, body)
        .await
        .map(|ok| (StatusCode::OK, ok))
}

async fn rename_existing(
    state: &AppState,
    requester: &Requester,
    device_id: &str,
    body: RenameBody,
) -> ApiResult<Json<Value>> {
    // Absent (or null): "the display name is unchanged", as the spec says
    // and Synapse does; the device must still exist.
    let Some(name) = body.display_name else {
        state
            .store
            .device(&requester.user_id, device_id)
            .await?
            .ok_or_else(not_found)?;
        return Ok(Json(json!({})));
    };
    if !state
        .store
        .rename_device(&requester.user_id, device_id, Some(&name))
        .await?
    {
        return Err(not_found());
    }
    // A name is not access: the homeserver learns it when it can.
    if let Some(homeserver) = &state.homeserver
        && let Err(e) = homeserver
            .client
            .update_device_display_name(requester.user_id.localpart(), device_id, &name)
            .await
    {
        tracing::warn!(error = %e, "homeserver did not take the device's new name");
    }
    Ok(Json(json!({})))
}

pub async fn delete(
    State(state): State<AppState>,
    requester: Requester,
    Path(device_id): Path<String>,
    method: Method,
    uri: Uri,
    RawJson(raw): RawJson,
) -> ApiResult<Json<Value>> {
    let authorised = deletion_authorised(&state, &requester, &method, &uri, &raw).await?;
    let user = &requester.user_id;
    spend(
        &state,
        authorised,
        homeserver::changing(
            &state,
            user,
            homeserver::devices_deleted([device_id.clone()]),
            async {
                Ok(state
                    .store
                    .delete_devices(user, std::slice::from_ref(&device_id))
                    .await?)
            },
        ),
    )
    .await?;
    state
        .sessions
        .invalidate_device(&requester.user_id, &device_id);
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeleteDevicesBody {
    devices: Option<Vec<String>>,
}

pub async fn delete_many(
    State(state): State<AppState>,
    requester: Requester,
    method: Method,
    uri: Uri,
    RawJson(raw): RawJson,
) -> ApiResult<Json<Value>> {
    let body: DeleteDevicesBody = typed(&raw)?;
    let devices = body.devices.ok_or_else(|| ApiError::missing("devices"))?;
    let authorised = deletion_authorised(&state, &requester, &method, &uri, &raw).await?;
    let user = &requester.user_id;
    spend(
        &state,
        authorised,
        homeserver::changing(
            &state,
            user,
            homeserver::devices_deleted(devices.iter().cloned()),
            async { Ok(state.store.delete_devices(user, &devices).await?) },
        ),
    )
    .await?;
    for d in &devices {
        state.sessions.invalidate_device(&requester.user_id, d);
    }
    Ok(Json(json!({})))
}

/// Re-authentication for deleting devices; an appservice needs none (spec
/// v1.17), so there may be no session to spend.
async fn deletion_authorised(
    state: &AppState,
    requester: &Requester,
    method: &Method,
    uri: &Uri,
    raw: &Value,
) -> ApiResult<Option<uia::Authorised>> {
    if requester.appservice.is_some() {
        return Ok(None);
    }
    uia::reauthenticate(
        state,
        requester,
        Sensitive::DeviceDeletion,
        method,
        uri,
        raw,
    )
    .await
    .map(Some)
}

/// Runs the deletion, spending the UIA session only if it succeeds.
async fn spend<T>(
    state: &AppState,
    authorised: Option<uia::Authorised>,
    deletion: impl std::future::Future<Output = ApiResult<T>>,
) -> ApiResult<T> {
    match authorised {
        Some(authorised) => authorised.spend_on(state, deletion).await,
        None => deletion.await,
    }
}
