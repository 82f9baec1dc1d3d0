//! `POST /keys/device_signing/upload`: cross-signing keys. The first upload
//! needs no UIA (MSC3967, now in the spec); replacing keys does.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, Uri};
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
    RawJson(raw): RawJson,
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
    if existing.is_some() && changed {
        uia::reauthenticate(
            &state,
            &requester,
            Sensitive::CrossSigningReset,
            &method,
            &uri,
            &raw,
        )
        .await?;
    }
    if changed {
        state
            .store
            .set_cross_signing_keys(
                &requester.user_id,
                &Value::Object(merged),
                state.clock.now_ms(),
            )
            .await?;
    }
    Ok(Json(json!({})))
}
