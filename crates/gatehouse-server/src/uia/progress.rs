//! Progress of stored sessions outside a protected request: fallback pages
//! completing a stage, and saving what a stage proved without losing a
//! concurrent request's work.

use gatehouse_core::ErrorKind;
use gatehouse_core::uia;
use gatehouse_store::UiaSessionRecord;
use serde_json::{Map, Value};

use super::{check_stage, session_flows};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Whether `stage` is one the session may complete next (a fallback page
/// shows a form only then).
pub async fn stage_is_next(
    state: &AppState,
    session: &UiaSessionRecord,
    stage: &str,
) -> ApiResult<bool> {
    let (_, flows) = session_flows(state, session).await?;
    Ok(uia::stage_allowed(&flows, &session.completed, stage))
}

/// Completes one stage of an existing session from a fallback page. The
/// client then resubmits its request with `auth: {session}` to finish.
pub async fn complete_stage(
    state: &AppState,
    session_id: &str,
    stage: &str,
    auth: &Map<String, Value>,
    ip: std::net::IpAddr,
) -> ApiResult<()> {
    let mut session = live_session(state, session_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorKind::Unknown, "Unknown or expired UIA session"))?;
    let (mut subject, flows) = session_flows(state, &session).await?;
    subject.ip = Some(ip);
    if !uia::stage_allowed(&flows, &session.completed, stage) {
        return Err(ApiError::new(
            ErrorKind::Unauthorized,
            format!("Stage {stage} is not the next stage of any flow"),
        ));
    }
    let seen = session.clone();
    check_stage(state, stage, auth, &subject, &mut session.data).await?;
    uia::record(&mut session.completed, stage);
    save_progress(state, &seen, &session).await
}

/// Stores what a stage proved, unless a concurrent request changed or used
/// the session since it was read: then the stage's own effect (a reserved
/// registration-token use) is given back, and the request is refused.
pub(crate) async fn save_progress(
    state: &AppState,
    seen: &UiaSessionRecord,
    now: &UiaSessionRecord,
) -> ApiResult<()> {
    if state
        .store
        .update_uia_session(
            &now.id,
            &now.completed,
            &now.data,
            &seen.completed,
            &seen.data,
        )
        .await?
    {
        return Ok(());
    }
    if seen.data["registration_token"].is_null()
        && let Some(token) = now.data["registration_token"].as_str()
    {
        state.store.release_registration_token(token).await?;
    }
    Err(ApiError::forbidden(
        "This UIA session was used by another request meanwhile",
    ))
}

/// The session a fallback page is for, if it can still be used.
pub async fn live_session(
    state: &AppState,
    session_id: &str,
) -> ApiResult<Option<UiaSessionRecord>> {
    let now = state.clock.now_ms();
    Ok(state
        .store
        .uia_session(session_id)
        .await?
        .filter(|s| s.expires_at > now && !s.consumed))
}
