//! Checking "who is this, and is that their password?" — shared by every
//! place a password is accepted (login today; UIA's `m.login.password`).
//!
//! Unknown accounts cost exactly one Argon2 verification, like wrong
//! passwords, and get the same answer, no sooner than a legacy (bcrypt)
//! account's would come.

use gatehouse_core::ErrorKind;
use gatehouse_core::identifier::{Identifier, IdentifierError, Subject};
use gatehouse_core::password::Verdict;
use gatehouse_store::UserRecord;
use zeroize::Zeroizing;

use crate::error::{ApiError, ApiResult};
use crate::metrics::LoginOutcome;
use crate::state::AppState;

impl From<IdentifierError> for ApiError {
    fn from(e: IdentifierError) -> Self {
        match e {
            IdentifierError::UnknownType(_) => ApiError::new(ErrorKind::Unknown, e.to_string()),
            _ => ApiError::invalid(e.to_string()),
        }
    }
}

/// Resolves `identifier` and checks `password` against that account,
/// applying the per-account and failed-attempt rate limits. Failures are
/// counted per client address and account (`from`, when known): one
/// address failing on purpose cannot lock the owner out from theirs.
pub async fn check_password(
    state: &AppState,
    identifier: &Identifier,
    password: Zeroizing<String>,
    from: Option<std::net::IpAddr>,
) -> ApiResult<UserRecord> {
    // An address of no medium we know, or one that is not an address at
    // all, names no account: the answer any unknown 3PID gets.
    let subject = identifier
        .resolve(&state.config.server_name)
        .map_err(|e| match e {
            IdentifierError::UnsupportedMedium(_)
            | IdentifierError::InvalidEmail
            | IdentifierError::InvalidPhone => ApiError::forbidden("Invalid username or password"),
            other => other.into(),
        })?;
    let (account, limit_key) = match &subject {
        Subject::User(Some(id)) => (state.store.user(id).await?, id.as_str().to_owned()),
        // An identifier naming no valid user ID: keyed by its hash, so a
        // 64 KiB identifier does not make a 64 KiB rate-limit key.
        Subject::User(None) => {
            let digest = gatehouse_core::token::hash(&format!("{identifier:?}"));
            (None, format!("?{:02x?}", &digest.0[..16]))
        }
        Subject::Threepid(tp) => {
            let found = state.store.user_by_threepid(tp).await?;
            let key = found.as_ref().map_or_else(
                || format!("{}:{}", tp.medium.as_str(), tp.address),
                |u| u.user_id.to_string(),
            );
            (found, key)
        }
    };
    let limits = &state.limits;
    // A failure is reserved before the (slow) check and kept only if the
    // password is wrong: parallel guesses each hold one, so no more than the
    // burst can be tried at once.
    let failure = match limits.per_account.check(&limit_key).and_then(|()| {
        let key = match from {
            Some(ip) => format!("{} {limit_key}", crate::ratelimit::address_key(ip)),
            None => limit_key.clone(),
        };
        limits.failures_per_account.reserve(key)
    }) {
        Ok(failure) => failure,
        Err(wait) => {
            state.metrics.login(LoginOutcome::Limited);
            return Err(ApiError::limited(wait));
        }
    };
    let stored = account.as_ref().and_then(|a| a.password_hash.clone());
    let started = tokio::time::Instant::now();
    let verdict = state
        .hasher
        .verify(password.clone(), stored)
        .await
        .map_err(|_| {
            state.metrics.login(LoginOutcome::Limited);
            ApiError::limited(1000)
        })?;
    let (account, rehash) = match (account, verdict) {
        (Some(account), Verdict::Match { rehash }) => (account, rehash),
        _ => {
            failure.keep();
            // As long as a legacy account's failure takes (see
            // `HashPool::failure_floor`).
            tokio::time::sleep_until(started + state.hasher.failure_floor()).await;
            state.metrics.login(LoginOutcome::Failed);
            return Err(ApiError::forbidden("Invalid username or password"));
        }
    };
    if account.deactivated {
        state.metrics.login(LoginOutcome::Failed);
        return Err(ApiError::new(
            ErrorKind::UserDeactivated,
            "This account has been deactivated",
        ));
    }
    // Told only to whoever knows the password: no new session while locked.
    if account.locked {
        state.metrics.login(LoginOutcome::Failed);
        return Err(crate::extract::locked());
    }
    if rehash {
        // An imported bcrypt hash or outdated Argon2 cost: upgrade it now,
        // while we hold the plain password. A failure here is not the user's.
        // Only over the hash that was checked: a password changed while this
        // one was hashing must not be overwritten by the old one.
        let old = account.password_hash.as_deref().unwrap_or_default();
        match state.hasher.hash(password).await {
            Ok(new_hash) => match state
                .store
                .upgrade_password_hash(&account.user_id, old, &new_hash)
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::info!("password changed meanwhile; upgrade dropped"),
                Err(e) => tracing::warn!(error = %e, "could not store the upgraded password hash"),
            },
            Err(_) => tracing::warn!("hashing pool busy; password hash upgrade deferred"),
        }
    }
    Ok(account)
}
