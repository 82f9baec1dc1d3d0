//! `POST /keys/device_signing/upload`: cross-signing keys. The first upload
//! needs no UIA (MSC3967, now in the spec); replacing keys does.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use gatehouse_core::ErrorKind;
use gatehouse_core::signing;

use crate::error::{ApiError, ApiResult};
use crate::extract::{RawJson, Requester};
use crate::state::AppState;
use crate::uia::{self, Sensitive};

const KINDS: [(&str, &str); 3] = [
    ("master_key", "master"),
    ("self_signing_key", "self_signing"),
    ("user_signing_key", "user_signing"),
];

/// Checks one key's shape: owner, usage, exactly one unpadded-base64
/// ed25519 public key named after itself.
fn check_key(field: &str, usage: &str, key: &Value, user_id: &str) -> ApiResult<()> {
    let bad = |why: &str| ApiError::invalid(format!("{field}: {why}"));
    let obj = key
        .as_object()
        .ok_or_else(|| ApiError::bad_json(format!("'{field}' must be an object")))?;
    if obj.get("user_id").and_then(Value::as_str) != Some(user_id) {
        return Err(bad("user_id must be your own user ID"));
    }
    let usages = obj
        .get("usage")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("usage is required"))?;
    if !usages.iter().any(|u| u == usage) {
        return Err(bad(&format!("usage must contain \"{usage}\"")));
    }
    let keys = obj
        .get("keys")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("keys is required"))?;
    let [(name, value)] = keys.iter().collect::<Vec<_>>()[..] else {
        return Err(bad("keys must hold exactly one key"));
    };
    let id = name
        .strip_prefix("ed25519:")
        .ok_or_else(|| bad("key must be ed25519"))?;
    let looks_like_key = id.len() == 43
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !looks_like_key || value.as_str() != Some(id) {
        return Err(bad("key ID must be the unpadded base64 public key"));
    }
    Ok(())
}

/// The key IDs (public keys) of a user's cross-signing keys.
pub fn key_ids(keys: &Value) -> Vec<String> {
    KINDS
        .iter()
        .filter_map(|(field, _)| keys.get(*field)?.get("keys")?.as_object())
        .flat_map(|k| {
            k.keys()
                .filter_map(|n| n.strip_prefix("ed25519:").map(str::to_owned))
        })
        .collect()
}

pub async fn upload(
    State(state): State<AppState>,
    requester: Requester,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    RawJson(raw): RawJson,
) -> ApiResult<Response> {
    if let Some(homeserver) = &state.homeserver {
        return relay_upload(&state, homeserver, &requester, &method, &uri, &headers, raw).await;
    }
    store_upload(&state, &requester, &method, &uri, raw)
        .await
        .map(IntoResponse::into_response)
}

/// The path the homeserver serves the upload on.
const UPLOAD_PATH: &str = "/_matrix/client/v3/keys/device_signing/upload";

/// With delegation the homeserver keeps the keys and decides when a
/// replacement needs approval; Gatehouse supplies the approval. The
/// upload goes to the homeserver first; if it asks for approval, the
/// client may either re-authenticate here (a password, as any UIA client
/// can) or approve on the account page (the homeserver's `m.oauth` stage);
/// the challenge offers both.
async fn relay_upload(
    state: &AppState,
    homeserver: &crate::homeserver::Homeserver,
    requester: &Requester,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    raw: Value,
) -> ApiResult<Response> {
    let unavailable = |e| crate::homeserver::unavailable(&e);
    let authorization = headers.get(axum::http::header::AUTHORIZATION);
    let mut keys = raw.clone();
    if let Some(obj) = keys.as_object_mut() {
        obj.remove("auth");
    }
    let keys = serde_json::to_vec(&keys).map_err(|_| ApiError::internal())?;
    let first = homeserver
        .client
        .relay(
            reqwest::Method::POST,
            UPLOAD_PATH,
            authorization,
            Some(keys.clone()),
        )
        .await
        .map_err(unavailable)?;
    if first.status != 401 {
        return Ok(relayed(first));
    }
    let wants_approval: Value = serde_json::from_slice(&first.body).unwrap_or_default();
    let approval_stage = raw["auth"]["type"]
        .as_str()
        .is_some_and(|t| matches!(t, "m.oauth" | "org.matrix.cross_signing_reset"));
    if approval_stage || wants_approval.get("flows").is_none() {
        // Not approved on the account page yet (or refused outright).
        return Ok(relayed(first));
    }
    let authorised = match uia::reauthenticate(
        state,
        requester,
        Sensitive::CrossSigningReset,
        method,
        uri,
        &raw,
    )
    .await
    {
        Ok(authorised) => authorised,
        Err(mut challenge) => {
            offer_approval_too(&mut challenge, &wants_approval);
            return Err(challenge);
        }
    };
    authorised
        .spend_on(state, async {
            homeserver
                .client
                .allow_cross_signing_reset(requester.user_id.localpart())
                .await
                .map_err(unavailable)
        })
        .await?;
    let second = homeserver
        .client
        .relay(
            reqwest::Method::POST,
            UPLOAD_PATH,
            authorization,
            Some(keys),
        )
        .await
        .map_err(unavailable)?;
    Ok(relayed(second))
}

/// Adds the homeserver's approval flows (and their params) to a UIA
/// challenge of ours.
fn offer_approval_too(challenge: &mut ApiError, homeserver_challenge: &Value) {
    let Some(extra) = challenge.extra.as_mut() else {
        return;
    };
    if let (Some(Value::Array(ours)), Some(Value::Array(theirs))) =
        (extra.get_mut("flows"), homeserver_challenge.get("flows"))
    {
        ours.extend(theirs.iter().cloned());
    }
    if let Some(Value::Object(theirs)) = homeserver_challenge.get("params") {
        let params = extra
            .entry("params")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(ours) = params.as_object_mut() {
            for (k, v) in theirs {
                ours.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The homeserver's answer, as it gave it.
fn relayed(answer: crate::homeserver::synapse::Relayed) -> Response {
    let status = axum::http::StatusCode::from_u16(answer.status)
        .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        answer.body,
    )
        .into_response()
}

/// Standalone: Gatehouse keeps the keys itself.
async fn store_upload(
    state: &AppState,
    requester: &Requester,
    method: &Method,
    uri: &Uri,
    raw: Value,
) -> ApiResult<Json<Value>> {
    let user_id = requester.user_id.as_str();
    let existing = state.store.cross_signing_keys(&requester.user_id).await?;
    let mut merged: Map<String, Value> = existing
        .as_ref()
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut changed = false;
    for (field, usage) in KINDS {
        if let Some(key) = raw.get(field).filter(|k| !k.is_null()) {
            check_key(field, usage, key, user_id)?;
            changed |= merged.get(field) != Some(key);
            merged.insert(field.to_owned(), key.clone());
        }
    }
    let Some(master) = merged.get("master_key") else {
        return Err(ApiError::missing("master_key"));
    };
    // "The public key of one of the keys is the same as one of the user's
    // device IDs": refused, as a device ID may not be a key ID either.
    let new_ids = key_ids(&raw);
    if !new_ids.is_empty()
        && let Some(clash) = state
            .store
            .devices(&requester.user_id)
            .await?
            .into_iter()
            .find(|d| new_ids.contains(&d.device_id))
    {
        return Err(ApiError::forbidden(format!(
            "A key's public key is the ID of device {}",
            clash.device_id
        )));
    }
    // Self- and user-signing keys must be signed by the master key in force.
    let master_id = key_ids(&json!({ "master_key": master }))
        .pop()
        .unwrap_or_default();
    for field in ["self_signing_key", "user_signing_key"] {
        if let Some(key) = raw.get(field).filter(|k| !k.is_null()) {
            signing::verify(key, user_id, &master_id).map_err(|e| {
                ApiError::new(
                    ErrorKind::InvalidSignature,
                    format!("{field} is not signed by the master key: {e}"),
                )
            })?;
        }
    }
    if !changed {
        return Ok(Json(json!({})));
    }
    let store = async {
        Ok(state
            .store
            .set_cross_signing_keys(
                &requester.user_id,
                &Value::Object(merged),
                state.clock.now_ms(),
            )
            .await?)
    };
    // The first upload needs no UIA; replacing keys does.
    if existing.is_some() {
        uia::reauthenticate(
            state,
            requester,
            Sensitive::CrossSigningReset,
            method,
            uri,
            &raw,
        )
        .await?
        .spend_on(state, store)
        .await?;
    } else {
        store.await?;
    }
    Ok(Json(json!({})))
}
