//! Registration and its UIA sessions, registration tokens, 3PID
//! validations, accepted policies, and pruning of expired records.

use gatehouse_core::Timestamp;
use gatehouse_core::registration_token::{Refusal, Uses};
use gatehouse_core::token::TokenHash;
use gatehouse_core::uia::Binding;

use super::rows::{self, TOKEN_COLUMNS, VALIDATION_COLUMNS};
use super::tokens::start_session;
use super::{Tx, backend, exec, from_ts, insert, query, query_opt, ts};
use crate::{
    ClientSecretHash, NewRegistration, RegistrationToken, StoreError, StoreResult,
    ThreepidValidation, UiaSessionRecord,
};

/// How long an expired 3PID validation is kept (a UIA stage may still be
/// answering with it when it expires).
const VALIDATION_GRACE_MS: u64 = 24 * 60 * 60 * 1000;

/// The registration token a session's data holds a pending use of.
fn reserved_token(data: &str) -> Option<String> {
    let data: serde_json::Value = serde_json::from_str(data).ok()?;
    Some(data.get("registration_token")?.as_str()?.to_owned())
}

/// Deletes expired UIA sessions, giving back the registration-token uses
/// they held. `DELETE … RETURNING` claims each session once, so instances
/// sweeping together give each use back once.
async fn expire_uia_sessions(tx: &Tx<'_>, now: Timestamp) -> StoreResult<u64> {
    let gone = query(
        tx,
        "DELETE FROM uia_sessions WHERE expires_ts <= $1 RETURNING data",
        &[&ts(now)],
    )
    .await?;
    let mut tokens: Vec<String> = gone
        .iter()
        .filter_map(|r| reserved_token(&r.get::<_, String>(0)))
        .collect();
    // One order for every sweeper: no deadlock between two of them.
    tokens.sort();
    for token in tokens {
        change_token_uses(tx, &token, Uses::release).await?;
    }
    Ok(gone.len() as u64)
}

pub(super) async fn create_user(tx: &Tx<'_>, user: &crate::NewUser) -> StoreResult<()> {
    insert(
        tx,
        "INSERT INTO users (user_id, password_hash, is_admin, is_guest, created_ts) VALUES ($1, $2, $3, $4, $5)",
        &[
            &user.user_id.as_str(),
            &user.password_hash,
            &user.is_admin,
            &user.is_guest,
            &ts(user.created_at),
        ],
        StoreError::UserExists,
    )
    .await
}

pub(super) async fn register(tx: &Tx<'_>, r: &NewRegistration) -> StoreResult<()> {
    create_user(tx, &r.user).await?;
    let uid = r.user.user_id.as_str();
    for tp in &r.threepids {
        super::accounts::insert_threepid(tx, uid, tp, r.user.created_at).await?;
    }
    if let Some(token) = &r.registration_token {
        if !change_token_uses(tx, token, Uses::complete).await? {
            return Err(StoreError::TokenUnusable);
        }
        // Each session holding `token` in its data holds one pending use
        // until the sweep gives it back, consumed or not; this use is
        // completed, so one consumed holder (any: they are alike) lets go.
        let holder = query_opt(
            tx,
            "SELECT id, data FROM uia_sessions
             WHERE consumed AND data::jsonb ->> 'registration_token' = $1
             LIMIT 1 FOR UPDATE",
            &[&token],
        )
        .await?;
        if let Some(row) = holder {
            let (id, data): (String, String) = (row.get(0), row.get(1));
            let mut data: serde_json::Value = serde_json::from_str(&data).map_err(backend)?;
            if let Some(map) = data.as_object_mut() {
                map.remove("registration_token");
            }
            exec(
                tx,
                "UPDATE uia_sessions SET data = $2 WHERE id = $1",
                &[&id, &data.to_string()],
            )
            .await?;
        }
    }
    if let Some(link) = &r.upstream_link {
        super::upstream::add_link(tx, link).await?;
    }
    if let Some(session) = &r.session {
        start_session(tx, session).await?;
    }
    Ok(())
}

pub(super) async fn create_uia_session(
    tx: &Tx<'_>,
    s: &UiaSessionRecord,
    now: Timestamp,
) -> StoreResult<()> {
    expire_uia_sessions(tx, now).await?;
    exec(
        tx,
        "INSERT INTO uia_sessions (id, user_id, method, path, body_hash, completed, data, created_ts, expires_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &s.id,
            &s.binding.user_id,
            &s.binding.method,
            &s.binding.path,
            &&s.binding.body_hash[..],
            &serde_json::to_string(&s.completed).map_err(backend)?,
            &s.data.to_string(),
            &ts(s.created_at),
            &ts(s.expires_at),
        ],
    )
    .await?;
    Ok(())
}

pub(super) fn uia_session_from_row(r: &tokio_postgres::Row) -> StoreResult<UiaSessionRecord> {
    let hash: Vec<u8> = r.try_get(4).map_err(backend)?;
    Ok(UiaSessionRecord {
        id: r.try_get(0).map_err(backend)?,
        binding: Binding {
            user_id: r.try_get(1).map_err(backend)?,
            method: r.try_get(2).map_err(backend)?,
            path: r.try_get(3).map_err(backend)?,
            body_hash: hash
                .try_into()
                .map_err(|_| backend("corrupt UIA body hash"))?,
        },
        completed: serde_json::from_str(&r.try_get::<_, String>(5).map_err(backend)?)
            .map_err(backend)?,
        data: serde_json::from_str(&r.try_get::<_, String>(6).map_err(backend)?)
            .map_err(backend)?,
        created_at: from_ts(r.try_get(7).map_err(backend)?),
        expires_at: from_ts(r.try_get(8).map_err(backend)?),
        consumed: r.try_get(9).map_err(backend)?,
    })
}

pub(super) const UIA_COLUMNS: &str =
    "id, user_id, method, path, body_hash, completed, data, created_ts, expires_ts, consumed";

pub(super) async fn accept_policies(
    tx: &Tx<'_>,
    id: &str,
    policies: &[(String, String)],
    now: Timestamp,
) -> StoreResult<()> {
    for (policy, version) in policies {
        exec(
            tx,
            "INSERT INTO accepted_policies (user_id, policy, version, accepted_ts)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, policy) DO UPDATE
             SET version = excluded.version, accepted_ts = excluded.accepted_ts",
            &[&id, policy, version, &ts(now)],
        )
        .await?;
    }
    Ok(())
}

fn attempt(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) async fn upsert_threepid_validation(
    tx: &Tx<'_>,
    v: &ThreepidValidation,
) -> StoreResult<ThreepidValidation> {
    let inserted = exec(
        tx,
        "INSERT INTO threepid_validations
           (sid, client_secret_hash, medium, address, token_hash, send_attempt, created_ts, expires_ts, next_link)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (client_secret_hash, medium, address) DO NOTHING",
        &[
            &v.sid,
            &&v.client_secret.0.0[..],
            &v.threepid.medium.as_str(),
            &v.threepid.address,
            &&v.token_hash.0[..],
            &attempt(v.send_attempt),
            &ts(v.created_at),
            &ts(v.expires_at),
            &v.next_link,
        ],
    )
    .await?;
    if inserted > 0 {
        return Ok(v.clone());
    }
    let row = query_opt(
        tx,
        &format!(
            "SELECT {VALIDATION_COLUMNS} FROM threepid_validations
             WHERE client_secret_hash = $1 AND medium = $2 AND address = $3 FOR UPDATE"
        ),
        &[
            &&v.client_secret.0.0[..],
            &v.threepid.medium.as_str(),
            &v.threepid.address,
        ],
    )
    .await?
    .ok_or_else(|| backend("3PID validation vanished under its lock"))?;
    let old = rows::validation(&row)?;
    // The same attempt again: nothing new is sent; same session.
    if old.send_attempt >= v.send_attempt {
        return Ok(old);
    }
    // A new attempt: a new token for the same session.
    exec(
        tx,
        "UPDATE threepid_validations SET token_hash = $2, send_attempt = $3, expires_ts = $4, next_link = $5, failed_attempts = 0 WHERE sid = $1",
        &[&old.sid, &&v.token_hash.0[..], &attempt(v.send_attempt), &ts(v.expires_at), &v.next_link],
    )
    .await?;
    Ok(ThreepidValidation {
        sid: old.sid,
        validated_at: old.validated_at,
        created_at: old.created_at,
        failed_attempts: 0,
        ..v.clone()
    })
}

pub(super) async fn redeem_threepid_secret(
    tx: &Tx<'_>,
    sid: &str,
    secret: ClientSecretHash,
    hash: TokenHash,
    now: Timestamp,
    max_failures: u32,
) -> StoreResult<Option<ThreepidValidation>> {
    let found = query_opt(
        tx,
        &format!("SELECT {VALIDATION_COLUMNS} FROM threepid_validations WHERE sid = $1 FOR UPDATE"),
        &[&sid],
    )
    .await?;
    let Some(row) = found else { return Ok(None) };
    let mut v = rows::validation(&row)?;
    if v.failed_attempts >= max_failures || v.expires_at <= now {
        return Ok(None);
    }
    if v.client_secret != secret || v.token_hash != hash {
        exec(
            tx,
            "UPDATE threepid_validations SET failed_attempts = failed_attempts + 1 WHERE sid = $1",
            &[&sid],
        )
        .await?;
        return Ok(None);
    }
    if v.validated_at.is_none() {
        exec(
            tx,
            "UPDATE threepid_validations SET validated_ts = $2 WHERE sid = $1",
            &[&sid, &ts(now)],
        )
        .await?;
        v.validated_at = Some(now);
    }
    Ok(Some(v))
}

pub(super) async fn prune_expired(tx: &Tx<'_>, now: Timestamp) -> StoreResult<u64> {
    let mut changed = expire_uia_sessions(tx, now).await?;
    let cutoff = ts(now.saturating_sub(VALIDATION_GRACE_MS));
    changed += exec(
        tx,
        "DELETE FROM threepid_validations WHERE expires_ts < $1",
        &[&cutoff],
    )
    .await?;
    for table in ["login_tokens", "web_sessions", "sso_flows"] {
        changed += exec(
            tx,
            &format!("DELETE FROM {table} WHERE expires_ts <= $1"),
            &[&ts(now)],
        )
        .await?;
    }
    Ok(changed)
}

pub(super) async fn create_registration_token(
    tx: &Tx<'_>,
    t: &RegistrationToken,
    now: Timestamp,
) -> StoreResult<()> {
    insert(
        tx,
        "INSERT INTO registration_tokens (token, uses_allowed, pending, completed, expiry_ts, created_ts)
         VALUES ($1, $2, 0, 0, $3, $4)",
        &[
            &t.token,
            &t.uses_allowed.map(i64::from),
            &super::ots(t.expiry),
            &ts(now),
        ],
        StoreError::TokenExists,
    )
    .await
}

/// Applies a rule of `gatehouse_core::registration_token` to `token`'s
/// counts, read `FOR UPDATE`: instances using the same token wait for each
/// other here and nowhere else. `false` when there is no such token or the
/// rule refuses.
pub(super) async fn change_token_uses(
    tx: &Tx<'_>,
    token: &str,
    change: impl FnOnce(Uses) -> Result<Uses, Refusal>,
) -> StoreResult<bool> {
    let found = query_opt(
        tx,
        &format!("SELECT {TOKEN_COLUMNS} FROM registration_tokens WHERE token = $1 FOR UPDATE"),
        &[&token],
    )
    .await?;
    let Some(row) = found else { return Ok(false) };
    let Ok(next) = change(rows::registration_token(&row)?.uses()) else {
        return Ok(false);
    };
    exec(
        tx,
        "UPDATE registration_tokens SET pending = $2, completed = $3 WHERE token = $1",
        &[&token, &i64::from(next.pending), &i64::from(next.completed)],
    )
    .await?;
    Ok(true)
}
