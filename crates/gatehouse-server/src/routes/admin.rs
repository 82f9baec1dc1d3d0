//! The spec's account-moderation admin API (v1.18): `GET`/`PUT
//! /_matrix/client/v1/admin/lock/{userId}` and `…/admin/suspend/{userId}`,
//! for server administrators (`gatehouse user admin`). The same changes as
//! `gatehouse user lock|suspend`, but seen at once by this instance.
//!
//! Behind a homeserver, a lock is pushed with the user (Synapse keeps it
//! to hide the user from its directory; Gatehouse's introspection is what
//! refuses the user's tokens, once Synapse's two-minute cache of a token
//! runs out), and a suspension is set there first with the
//! administrator's own token: the homeserver enforces most of it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use gatehouse_core::ErrorKind;
use gatehouse_core::user_id::UserId;
use gatehouse_store::{HomeserverChange, Moderation};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::extract::{MatrixJson, Requester};
use crate::homeserver;
use crate::state::AppState;

/// The local account `user_id` names. Authorisation comes first: a
/// non-administrator learns nothing about which accounts exist.
async fn target(state: &AppState, requester: &Requester, user_id: &str) -> ApiResult<UserId> {
    if !requester.is_admin {
        return Err(ApiError::forbidden("You are not a server admin"));
    }
    let local = user_id
        .strip_prefix('@')
        .and_then(|rest| rest.split_once(':'))
        .filter(|(_, server)| *server == state.config.server_name)
        .and_then(|(local, _)| UserId::new(local, &state.config.server_name).ok())
        .ok_or_else(|| ApiError::invalid("Not a user ID of this server"))?;
    if state.store.user(&local).await?.is_none() {
        return Err(ApiError::new(ErrorKind::NotFound, "Unknown user"));
    }
    Ok(local)
}

fn field(moderation: Moderation) -> &'static str {
    match moderation {
        Moderation::Lock => "locked",
        Moderation::Suspension => "suspended",
    }
}

async fn show(
    state: &AppState,
    requester: &Requester,
    user_id: &str,
    m: Moderation,
) -> ApiResult<Json<Value>> {
    let id = target(state, requester, user_id).await?;
    let user = state
        .store
        .user(&id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "Unknown user"))?;
    let on = match m {
        Moderation::Lock => user.locked,
        Moderation::Suspension => user.suspended,
    };
    Ok(Json(json!({ field(m): on })))
}

async fn set(
    state: &AppState,
    requester: &Requester,
    headers: &HeaderMap,
    user_id: &str,
    m: Moderation,
    on: Option<bool>,
) -> ApiResult<Json<Value>> {
    let id = target(state, requester, user_id).await?;
    let on = on.ok_or_else(|| ApiError::missing(field(m)))?;
    let local = async { Ok(state.store.set_moderation(&id, m, on).await?) };
    match (m, &state.homeserver) {
        // The lock reaches the homeserver with the user (`provision`).
        (Moderation::Lock, _) => {
            homeserver::changing(state, &id, HomeserverChange::default(), local).await?;
        }
        // Suspension is the homeserver's to enforce (messages, joins):
        // told first, with this administrator's token, or nothing changes.
        (Moderation::Suspension, Some(homeserver)) => {
            let authorization = headers
                .get(axum::http::header::AUTHORIZATION)
                .ok_or_else(|| ApiError::new(ErrorKind::MissingToken, "Missing access token"))?;
            let suspend = || {
                homeserver
                    .client
                    .set_suspended(id.as_str(), on, authorization)
            };
            match suspend().await {
                // Never provisioned there (no login yet): made known first.
                Err(e) if e.is_not_found() => match homeserver.provision(&id).await {
                    Ok(()) => suspend().await,
                    Err(e) => Err(e),
                },
                other => other,
            }
            .map_err(|e| homeserver::unavailable(&e))?;
            local.await?;
        }
        (Moderation::Suspension, None) => local.await?,
    }
    // Cached tokens carry the old state: forget them.
    state.sessions.invalidate_user(&id);
    tracing::info!(user_id = %id, by = %requester.user_id, change = field(m), on, "account moderation");
    Ok(Json(json!({ field(m): on })))
}

#[derive(Deserialize)]
pub struct LockBody {
    locked: Option<bool>,
}

#[derive(Deserialize)]
pub struct SuspendBody {
    suspended: Option<bool>,
}

pub async fn get_lock(
    State(state): State<AppState>,
    requester: Requester,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    show(&state, &requester, &user_id, Moderation::Lock).await
}

pub async fn put_lock(
    State(state): State<AppState>,
    requester: Requester,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    MatrixJson(body): MatrixJson<LockBody>,
) -> ApiResult<Json<Value>> {
    set(
        &state,
        &requester,
        &headers,
        &user_id,
        Moderation::Lock,
        body.locked,
    )
    .await
}

pub async fn get_suspend(
    State(state): State<AppState>,
    requester: Requester,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    show(&state, &requester, &user_id, Moderation::Suspension).await
}

pub async fn put_suspend(
    State(state): State<AppState>,
    requester: Requester,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    MatrixJson(body): MatrixJson<SuspendBody>,
) -> ApiResult<Json<Value>> {
    set(
        &state,
        &requester,
        &headers,
        &user_id,
        Moderation::Suspension,
        body.suspended,
    )
    .await
}
