//! Registration and its UIA sessions, registration tokens, 3PID
//! validations, accepted policies, and pruning of expired records.

use gatehouse_core::Timestamp;
use gatehouse_core::registration_token::{Refusal, Uses};
use gatehouse_core::token::TokenHash;
use rusqlite::{OptionalExtension, Transaction, params};

use super::rows::{VALIDATION_COLUMNS, token_from_row, validation_from_row};
use super::tokens::start_session;
use super::{backend, is_unique_violation, ts};
use crate::{
    ClientSecretHash, NewRegistration, RegistrationToken, StoreError, StoreResult,
    ThreepidValidation, UiaSessionRecord,
};

/// Deletes expired, unused UIA sessions, releasing the registration-token
/// uses they had reserved.
pub(super) fn expire_uia_sessions(tx: &Transaction<'_>, now: Timestamp) -> StoreResult<()> {
    let now = ts(Some(now));
    let reserved: Vec<String> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT json_extract(data, '$.registration_token') FROM uia_sessions
                 WHERE expires_ts <= ?1 AND json_extract(data, '$.registration_token') IS NOT NULL",
            )
            .map_err(backend)?;
        let rows = stmt.query_map([now], |r| r.get(0)).map_err(backend)?;
        rows.collect::<rusqlite::Result<_>>().map_err(backend)?
    };
    for token in reserved {
        change_token_uses(tx, &token, Uses::release)?;
    }
    tx.execute("DELETE FROM uia_sessions WHERE expires_ts <= ?1", [now])
        .map_err(backend)?;
    Ok(())
}

/// How long an expired 3PID validation is kept (a UIA stage may still be
/// answering with it when it expires).
pub(super) const VALIDATION_GRACE_MS: u64 = 24 * 60 * 60 * 1000;

pub(super) fn register(tx: &Transaction<'_>, r: NewRegistration) -> StoreResult<()> {
    let uid = r.user.user_id.as_str();
    tx.execute(
        "INSERT INTO users (user_id, password_hash, is_admin, is_guest, created_ts) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![uid, r.user.password_hash, r.user.is_admin, r.user.is_guest, ts(Some(r.user.created_at))],
    )
    .map_err(|e| if is_unique_violation(&e) { StoreError::UserExists } else { backend(e) })?;
    for tp in &r.threepids {
        tx.execute(
            "INSERT INTO threepids (medium, address, user_id, added_ts) VALUES (?1, ?2, ?3, ?4)",
            params![
                tp.medium.as_str(),
                tp.address,
                uid,
                ts(Some(r.user.created_at))
            ],
        )
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::ThreepidInUse
            } else {
                backend(e)
            }
        })?;
    }
    if let Some(token) = &r.registration_token {
        if !change_token_uses(tx, token, Uses::complete)? {
            return Err(StoreError::TokenUnusable);
        }
        // Each session holding `token` in its data holds one
        // pending use, until it expires and the sweep gives it back
        // — consumed or not, so that a registration cut off after
        // its session was consumed (a crash, a client gone) cannot
        // leak a use. This use is completed: one consumed holder,
        // any one (they are alike), lets go of it.
        tx.execute(
            "UPDATE uia_sessions SET data = json_remove(data, '$.registration_token')
             WHERE id = (SELECT id FROM uia_sessions
                         WHERE consumed = 1 AND json_extract(data, '$.registration_token') = ?1
                         LIMIT 1)",
            [token],
        )
        .map_err(backend)?;
    }
    if let Some(link) = &r.upstream_link {
        super::upstream::add_link(tx, link)?;
    }
    if let Some(session) = &r.session {
        start_session(tx, session)?;
    }
    Ok(())
}

pub(super) fn create_uia_session(
    tx: &Transaction<'_>,
    s: UiaSessionRecord,
    now: Timestamp,
) -> StoreResult<()> {
    expire_uia_sessions(tx, now)?;
    tx.execute(
        "INSERT INTO uia_sessions (id, user_id, method, path, body_hash, completed, data, created_ts, expires_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            s.id,
            s.binding.user_id,
            s.binding.method,
            s.binding.path,
            &s.binding.body_hash[..],
            serde_json::to_string(&s.completed).map_err(backend)?,
            s.data.to_string(),
            ts(Some(s.created_at)),
            ts(Some(s.expires_at)),
        ],
    )
    .map_err(backend)?;
    Ok(())
}

pub(super) fn update_uia_session(tx: &Transaction<'_>, row: [String; 5]) -> StoreResult<bool> {
    let n = tx
        .execute(
            "UPDATE uia_sessions SET completed = ?2, data = ?3
             WHERE id = ?1 AND consumed = 0 AND completed = ?4 AND data = ?5",
            params![row[0], row[1], row[2], row[3], row[4]],
        )
        .map_err(backend)?;
    Ok(n > 0)
}

pub(super) fn accept_policies(
    tx: &Transaction<'_>,
    id: String,
    policies: Vec<(String, String)>,
    now: Timestamp,
) -> StoreResult<()> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO accepted_policies (user_id, policy, version, accepted_ts)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (user_id, policy) DO UPDATE
             SET version = excluded.version, accepted_ts = excluded.accepted_ts",
        )
        .map_err(backend)?;
    for (policy, version) in &policies {
        stmt.execute(params![id, policy, version, ts(Some(now))])
            .map_err(backend)?;
    }
    Ok(())
}

pub(super) fn upsert_threepid_validation(
    tx: &Transaction<'_>,
    v: ThreepidValidation,
) -> StoreResult<ThreepidValidation> {
    let existing = tx
        .query_row(
            &format!(
                "SELECT {VALIDATION_COLUMNS} FROM threepid_validations
                      WHERE client_secret_hash = ?1 AND medium = ?2 AND address = ?3"
            ),
            params![
                &v.client_secret.0.0[..],
                v.threepid.medium.as_str(),
                v.threepid.address
            ],
            validation_from_row,
        )
        .optional()
        .map_err(backend)?;
    match existing {
        // The same attempt again: nothing new is sent; same session.
        Some(old) if old.send_attempt >= v.send_attempt => Ok(old),
        // A new attempt: a new token for the same session.
        Some(old) => {
            tx.execute(
                "UPDATE threepid_validations SET token_hash = ?2, send_attempt = ?3, expires_ts = ?4, next_link = ?5, failed_attempts = 0 WHERE sid = ?1",
                params![old.sid, &v.token_hash.0[..], i64::try_from(v.send_attempt).unwrap_or(i64::MAX), ts(Some(v.expires_at)), v.next_link],
            )
            .map_err(backend)?;
            Ok(ThreepidValidation {
                sid: old.sid,
                validated_at: old.validated_at,
                created_at: old.created_at,
                failed_attempts: 0,
                ..v
            })
        }
        None => {
            tx.execute(
                "INSERT INTO threepid_validations
                   (sid, client_secret_hash, medium, address, token_hash, send_attempt, created_ts, expires_ts, next_link)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    v.sid,
                    &v.client_secret.0.0[..],
                    v.threepid.medium.as_str(),
                    v.threepid.address,
                    &v.token_hash.0[..],
                    i64::try_from(v.send_attempt).unwrap_or(i64::MAX),
                    ts(Some(v.created_at)),
                    ts(Some(v.expires_at)),
                    v.next_link,
                ],
            )
            .map_err(backend)?;
            Ok(v)
        }
    }
}

pub(super) fn redeem_threepid_secret(
    tx: &Transaction<'_>,
    sid: String,
    secret: ClientSecretHash,
    hash: TokenHash,
    now: Timestamp,
    max_failures: u32,
) -> StoreResult<Option<ThreepidValidation>> {
    let found = tx
        .query_row(
            &format!("SELECT {VALIDATION_COLUMNS} FROM threepid_validations WHERE sid = ?1"),
            [&sid],
            validation_from_row,
        )
        .optional()
        .map_err(backend)?;
    let Some(mut v) = found else { return Ok(None) };
    if v.failed_attempts >= max_failures || v.expires_at <= now {
        return Ok(None);
    }
    if v.client_secret != secret || v.token_hash != hash {
        tx.execute(
            "UPDATE threepid_validations SET failed_attempts = failed_attempts + 1 WHERE sid = ?1",
            [&sid],
        )
        .map_err(backend)?;
        return Ok(None);
    }
    if v.validated_at.is_none() {
        tx.execute(
            "UPDATE threepid_validations SET validated_ts = ?2 WHERE sid = ?1",
            params![sid, ts(Some(now))],
        )
        .map_err(backend)?;
        v.validated_at = Some(now);
    }
    Ok(Some(v))
}

pub(super) fn prune_expired(tx: &Transaction<'_>, now: Timestamp) -> StoreResult<u64> {
    let before: i64 = tx
        .query_row("SELECT total_changes()", [], |r| r.get(0))
        .map_err(backend)?;
    expire_uia_sessions(tx, now)?;
    let cutoff = ts(Some(now.saturating_sub(VALIDATION_GRACE_MS)));
    tx.execute(
        "DELETE FROM threepid_validations WHERE expires_ts < ?1",
        [cutoff],
    )
    .map_err(backend)?;
    for table in ["login_tokens", "web_sessions", "sso_flows"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE expires_ts <= ?1"),
            [ts(Some(now))],
        )
        .map_err(backend)?;
    }
    let after: i64 = tx
        .query_row("SELECT total_changes()", [], |r| r.get(0))
        .map_err(backend)?;
    Ok(u64::try_from(after - before).unwrap_or(0))
}

pub(super) fn create_registration_token(
    tx: &Transaction<'_>,
    t: RegistrationToken,
    now: Timestamp,
) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO registration_tokens (token, uses_allowed, pending, completed, expiry_ts, created_ts)
         VALUES (?1, ?2, 0, 0, ?3, ?4)",
        params![t.token, t.uses_allowed, ts(t.expiry), ts(Some(now))],
    )
    .map_err(|e| if is_unique_violation(&e) { StoreError::TokenExists } else { backend(e) })?;
    Ok(())
}

pub(super) fn reserve_registration_token(
    tx: &Transaction<'_>,
    token: String,
    now: Timestamp,
) -> StoreResult<bool> {
    change_token_uses(tx, &token, |uses| uses.reserve(now))
}

/// Applies a rule of `gatehouse_core::registration_token` to `token`'s
/// counts as they stand in this write transaction (SQLite's one writer
/// makes the load and the save one step); `false` when there is no such
/// token or the rule refuses.
pub(super) fn change_token_uses(
    tx: &Transaction<'_>,
    token: &str,
    change: impl FnOnce(Uses) -> Result<Uses, Refusal>,
) -> StoreResult<bool> {
    let found = tx
        .prepare_cached(
            "SELECT token, uses_allowed, pending, completed, expiry_ts FROM registration_tokens WHERE token = ?1",
        )
        .map_err(backend)?
        .query_row([token], token_from_row)
        .optional()
        .map_err(backend)?;
    let Some(Ok(next)) = found.map(|t| change(t.uses())) else {
        return Ok(false);
    };
    tx.execute(
        "UPDATE registration_tokens SET pending = ?2, completed = ?3 WHERE token = ?1",
        params![token, next.pending, next.completed],
    )
    .map_err(backend)?;
    Ok(true)
}
