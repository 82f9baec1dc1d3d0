//! Account endpoints: `whoami`, password change, deactivation, 3PIDs.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, Uri};
use gatehouse_core::ErrorKind;
use gatehouse_core::identifier::{Medium, canonical_threepid};
use gatehouse_core::user_id::UserId;
use gatehouse_store::EndSessions;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::login::Secret;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientIp, RawJson, Requester, typed};
use crate::homeserver;
use crate::state::AppState;
use crate::uia::{self, Operation, Sensitive, Subject};

#[derive(Serialize)]
pub struct WhoamiResponse {
    user_id: String,
    /// Absent for an application service acting without a device.
    #[serde(skip_serializing_if = "String::is_empty")]
    device_id: String,
    is_guest: bool,
}

pub async fn whoami(requester: Requester) -> Json<WhoamiResponse> {
    Json(WhoamiResponse {
        user_id: requester.user_id.to_string(),
        device_id: requester.device_id,
        is_guest: requester.is_guest,
    })
}

/// `GET /capabilities`. The authentication capabilities are Gatehouse's
/// to state; with delegation, the rest (room versions, profile fields…) are
/// the homeserver's, relayed with the client's own token.
pub async fn capabilities(
    State(state): State<AppState>,
    requester: Requester,
    headers: axum::http::HeaderMap,
) -> ApiResult<Json<Value>> {
    let mut capabilities = match &state.homeserver {
        Some(homeserver) => {
            let answer = homeserver
                .client
                .relay(
                    reqwest::Method::GET,
                    "/_matrix/client/v3/capabilities",
                    headers.get(axum::http::header::AUTHORIZATION),
                    None,
                )
                .await
                .map_err(|e| homeserver::unavailable(&e))?;
            serde_json::from_slice::<Value>(&answer.body)
                .ok()
                .and_then(|v| v.get("capabilities").cloned())
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}))
        }
        None => json!({}),
    };
    let threepid_changes = state.config.email.enabled || state.config.sms.enabled;
    // Each reflects what this user can do here: a flow they can complete.
    let can = async |kind| uia::can_reauthenticate(&state, &requester.user_id, kind).await;
    let change_password = !requester.is_guest && can(Sensitive::PasswordChange).await?;
    let threepid_changes = threepid_changes && can(Sensitive::ThreepidChange).await?;
    let login_token = can(Sensitive::LoginToken).await?;
    capabilities["m.change_password"] = json!({ "enabled": change_password });
    capabilities["m.3pid_changes"] = json!({ "enabled": threepid_changes });
    capabilities["m.get_login_token"] = json!({ "enabled": login_token });
    Ok(Json(json!({ "capabilities": capabilities })))
}

#[derive(Deserialize)]
struct PasswordBody {
    new_password: Option<Secret>,
    #[serde(default = "yes")]
    logout_devices: bool,
}

fn yes() -> bool {
    true
}

/// `POST /account/password`: re-authenticate, then set the new password;
/// by default every other device is logged out, the current one is kept.
pub async fn change_password(
    State(state): State<AppState>,
    requester: Option<Requester>,
    ClientIp(ip): ClientIp,
    method: Method,
    uri: Uri,
    RawJson(raw): RawJson,
) -> ApiResult<Json<Value>> {
    let body: PasswordBody = typed(&raw)?;
    let new_password = body
        .new_password
        .ok_or_else(|| ApiError::missing("new_password"))?
        .take();
    if new_password.is_empty() {
        return Err(ApiError::invalid("new_password must not be empty"));
    }
    let Some(requester) = requester else {
        return reset_password(
            &state,
            ip,
            &method,
            uri.path(),
            &raw,
            new_password,
            body.logout_devices,
        )
        .await;
    };
    let authorised = uia::reauthenticate(
        &state,
        &requester,
        Sensitive::PasswordChange,
        &method,
        &uri,
        &raw,
    )
    .await?;
    // Whatever fails after the stages passed (a busy hashing pool, the
    // store) is no reason to authenticate again.
    let keep = body.logout_devices.then_some(requester.device_id.as_str());
    authorised
        .spend_on(
            &state,
            set_password(
                &state,
                &requester.user_id,
                new_password,
                body.logout_devices,
                keep,
            ),
        )
        .await?;
    tracing::info!(user_id = %requester.user_id, "password changed");
    Ok(Json(json!({})))
}

/// A forgotten password: proven by a validated email/phone bound to the
/// account; every session of the account ends (unless `logout_devices` is false).
async fn reset_password(
    state: &AppState,
    ip: std::net::IpAddr,
    method: &Method,
    path: &str,
    raw: &Value,
    new_password: zeroize::Zeroizing<String>,
    logout_devices: bool,
) -> ApiResult<Json<Value>> {
    // The address limits how many sessions this client may open.
    let subject = Subject {
        ip: Some(ip),
        ..Subject::default()
    };
    let authorised =
        uia::authorise(state, Operation::PasswordReset, &subject, method, path, raw).await?;
    let user = authorised
        .reset_user()
        .ok_or_else(|| ApiError::forbidden("No account was identified"))?;
    let user_id = UserId::from_trusted(user);
    authorised
        .spend_on(
            state,
            set_password(state, &user_id, new_password, logout_devices, None),
        )
        .await?;
    tracing::info!(user_id = %user_id, "password reset");
    Ok(Json(json!({})))
}

/// Replaces the password; with `logout_devices`, ends every session but
/// `keep`'s (the requester's own, when signed in) — here and on the
/// homeserver.
async fn set_password(
    state: &AppState,
    user_id: &UserId,
    new_password: zeroize::Zeroizing<String>,
    logout_devices: bool,
    keep: Option<&str>,
) -> ApiResult<()> {
    let hash = state
        .hasher
        .hash(new_password)
        .await
        .map_err(|_| ApiError::limited(1000))?;
    let (sessions, ended) = if logout_devices {
        let ended = state
            .store
            .devices(user_id)
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .filter(|d| Some(d.as_str()) != keep)
            .collect::<Vec<_>>();
        let sessions = match keep {
            Some(device) => EndSessions::AllBut(device.to_owned()),
            None => EndSessions::All,
        };
        (sessions, ended)
    } else {
        (EndSessions::Keep, Vec::new())
    };
    homeserver::changing(state, user_id, homeserver::devices_deleted(ended), async {
        Ok(state
            .store
            .set_password_hash(user_id, &hash, sessions)
            .await?)
    })
    .await?;
    if logout_devices {
        state.sessions.invalidate_user(user_id);
    }
    Ok(())
}

/// `POST /account/deactivate`: re-authenticate, then deactivate for good.
pub async fn deactivate(
    State(state): State<AppState>,
    requester: Requester,
    method: Method,
    uri: Uri,
    RawJson(raw): RawJson,
) -> ApiResult<Json<Value>> {
    let authorised = uia::reauthenticate(
        &state,
        &requester,
        Sensitive::Deactivation,
        &method,
        &uri,
        &raw,
    )
    .await?;
    let erase = raw["erase"].as_bool().unwrap_or(false);
    authorised
        .spend_on(
            &state,
            homeserver::changing(
                &state,
                &requester.user_id,
                gatehouse_store::HomeserverChange {
                    erase,
                    ..Default::default()
                },
                async { Ok(state.store.deactivate_user(&requester.user_id).await?) },
            ),
        )
        .await?;
    state.sessions.invalidate_user(&requester.user_id);
    tracing::info!(user_id = %requester.user_id, erase = raw["erase"].as_bool().unwrap_or(false), "deactivated");
    // Gatehouse never binds 3PIDs at an identity server, so there is
    // nothing to unbind: the spec's answer for that is "success".
    Ok(Json(json!({ "id_server_unbind_result": "success" })))
}

/// `GET /account/3pid`.
pub async fn threepids(
    State(state): State<AppState>,
    requester: Requester,
) -> ApiResult<Json<Value>> {
    let list = state.store.threepids(&requester.user_id).await?;
    let threepids: Vec<Value> = list
        .into_iter()
        .map(|t| {
            json!({
                "medium": t.threepid.medium.as_str(),
                "address": t.threepid.address,
                "added_at": t.added_at,
                "validated_at": t.added_at,
            })
        })
        .collect();
    Ok(Json(json!({ "threepids": threepids })))
}

#[derive(Deserialize)]
struct DeleteThreepidBody {
    medium: Option<String>,
    address: Option<String>,
}

/// `POST /account/3pid/delete`.
pub async fn delete_threepid(
    State(state): State<AppState>,
    requester: Requester,
    RawJson(raw): RawJson,
) -> ApiResult<Json<Value>> {
    requester.not_suspended()?;
    let body: DeleteThreepidBody = typed(&raw)?;
    let medium = body.medium.ok_or_else(|| ApiError::missing("medium"))?;
    let address = body.address.ok_or_else(|| ApiError::missing("address"))?;
    let medium = Medium::parse(&medium)
        .ok_or_else(|| ApiError::invalid(format!("Unsupported medium {medium}")))?;
    let threepid = canonical_threepid(medium, &address)?;
    let deleted = homeserver::changing(&state, &requester.user_id, Default::default(), async {
        Ok(state
            .store
            .delete_threepid(&requester.user_id, &threepid)
            .await?)
    })
    .await?;
    if !deleted {
        return Err(ApiError::new(
            ErrorKind::ThreepidNotFound,
            "That third-party ID is not bound to your account",
        ));
    }
    // Gatehouse never binds 3PIDs on an identity server, so it knows of no
    // `id_server` to unbind from: the spec's answer for that is `no-support`.
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}
