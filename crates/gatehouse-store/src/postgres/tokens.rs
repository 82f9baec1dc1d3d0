//! Sessions and their tokens: access and refresh tokens, rotation,
//! devices' tokens and `m.login.token` login tokens.

use deadpool_postgres::GenericClient;
use gatehouse_core::Timestamp;
use gatehouse_core::refresh::{self, Effect, Endpoint, RefreshId, RefreshTokenRow, Rejection};
use gatehouse_core::token::TokenHash;
use gatehouse_core::user_id::UserId;

use super::{Tx, backend, device_key, exec, from_ots, lock, notify, ots, query_opt, ts};
use crate::{
    AccessTokenRecord, NewSession, NewTokenPair, RefreshedSession, StoreError, StoreResult,
};

/// Deletes refresh tokens (and every access token minted with them).
async fn delete_refresh_tokens(tx: &Tx<'_>, ids: &[RefreshId]) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    exec(
        tx,
        "DELETE FROM access_tokens WHERE refresh_id = ANY($1)",
        &[&ids],
    )
    .await?;
    exec(tx, "DELETE FROM refresh_tokens WHERE id = ANY($1)", &[&ids]).await?;
    Ok(())
}

/// Makes room for one more child of `parent`: deletes all but its newest
/// `MAX_PENDING_CHILDREN - 1` children, with their access tokens, in one
/// statement (a refresh's usual case deletes nothing).
async fn cap_children(tx: &Tx<'_>, parent: RefreshId) -> StoreResult<()> {
    exec(
        tx,
        "WITH older AS (SELECT id FROM refresh_tokens WHERE parent_id = $1
                        ORDER BY id DESC OFFSET $2),
              gone AS (DELETE FROM access_tokens WHERE refresh_id IN (SELECT id FROM older))
         DELETE FROM refresh_tokens WHERE id IN (SELECT id FROM older)",
        &[&parent, &(refresh::MAX_PENDING_CHILDREN - 1)],
    )
    .await?;
    Ok(())
}

/// The IDs of `parent`'s children, newest first.
async fn children(tx: &Tx<'_>, parent: RefreshId) -> StoreResult<Vec<RefreshId>> {
    let rows = super::query(
        tx,
        "SELECT id FROM refresh_tokens WHERE parent_id = $1 ORDER BY id DESC",
        &[&parent],
    )
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn apply_effect(tx: &Tx<'_>, effect: Effect) -> StoreResult<()> {
    match effect {
        Effect::RetireParent { parent, keep } => {
            let mut gone = children(tx, parent).await?;
            gone.retain(|&id| id != keep);
            gone.push(parent);
            delete_refresh_tokens(tx, &gone).await?;
            exec(
                tx,
                "UPDATE refresh_tokens SET parent_id = NULL WHERE id = $1",
                &[&keep],
            )
            .await?;
            exec(
                tx,
                "UPDATE access_tokens SET pending_parent = NULL WHERE refresh_id = $1",
                &[&keep],
            )
            .await?;
        }
        Effect::Retire(id) => {
            let mut gone = children(tx, id).await?;
            gone.push(id);
            delete_refresh_tokens(tx, &gone).await?;
        }
        Effect::Mint { .. } => {
            return Err(backend("minting needs the new pair; the caller handles it"));
        }
    }
    Ok(())
}

/// Inserts an access token (and refresh token) for a device.
async fn insert_pair(
    tx: &Tx<'_>,
    user_id: &str,
    device_id: &str,
    pair: &NewTokenPair,
    parent: Option<RefreshId>,
    now: Timestamp,
) -> StoreResult<()> {
    let now = ts(now);
    let refresh_id: Option<RefreshId> = match pair.refresh {
        Some(hash) => {
            let row = query_opt(
                tx,
                "INSERT INTO refresh_tokens (token_hash, user_id, device_id, parent_id, expires_ts, created_ts)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[&&hash.0[..], &user_id, &device_id, &parent, &ots(pair.refresh_expires_at), &now],
            )
            .await?;
            row.map(|r| r.get(0))
        }
        None => None,
    };
    exec(
        tx,
        "INSERT INTO access_tokens (token_hash, user_id, device_id, refresh_id, pending_parent, expires_ts, created_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&&pair.access.0[..], &user_id, &device_id, &refresh_id, &parent, &ots(pair.access_expires_at), &now],
    )
    .await?;
    Ok(())
}

/// Deletes the tokens of one device, or of every device of the account.
pub(super) async fn delete_device_tokens(
    tx: &Tx<'_>,
    user_id: &str,
    device_id: Option<&str>,
) -> StoreResult<()> {
    for table in ["access_tokens", "refresh_tokens"] {
        match device_id {
            Some(d) => {
                exec(
                    tx,
                    &format!("DELETE FROM {table} WHERE user_id = $1 AND device_id = $2"),
                    &[&user_id, &d],
                )
                .await?
            }
            None => {
                exec(
                    tx,
                    &format!("DELETE FROM {table} WHERE user_id = $1"),
                    &[&user_id],
                )
                .await?
            }
        };
    }
    Ok(())
}

/// Deletes an account's outstanding login tokens (`m.login.token`).
pub(super) async fn delete_login_tokens(tx: &Tx<'_>, user_id: &str) -> StoreResult<()> {
    exec(
        tx,
        "DELETE FROM login_tokens WHERE user_id = $1",
        &[&user_id],
    )
    .await?;
    Ok(())
}

/// Deletes an account's devices and their tokens, all or all but `keep`.
pub(super) async fn delete_devices_but(
    tx: &Tx<'_>,
    user_id: &str,
    keep: Option<&str>,
) -> StoreResult<()> {
    let keep = keep.unwrap_or("");
    for table in ["access_tokens", "refresh_tokens", "devices"] {
        exec(
            tx,
            &format!("DELETE FROM {table} WHERE user_id = $1 AND device_id != $2"),
            &[&user_id, &keep],
        )
        .await?;
    }
    Ok(())
}

/// Creates (or takes over) a device and stores its first token pair.
/// The account row is share-locked, so a deactivation committing meanwhile
/// waits for this session and then removes it (or this sees it and refuses).
pub(super) async fn start_session(tx: &Tx<'_>, s: &NewSession) -> StoreResult<()> {
    let uid = s.user_id.as_str();
    let row = query_opt(
        tx,
        "SELECT deactivated FROM users WHERE user_id = $1 FOR SHARE",
        &[&uid],
    )
    .await?;
    match row.map(|r| r.get::<_, bool>(0)) {
        None => return Err(StoreError::NoSuchUser),
        Some(true) => return Err(StoreError::UserDeactivated),
        Some(false) => {}
    }
    lock(tx, "device", &device_key(uid, &s.device_id)).await?;
    let created = exec(
        tx,
        "INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id, device_id) DO NOTHING",
        &[&uid, &s.device_id, &s.initial_display_name, &ts(s.now)],
    )
    .await?;
    if created == 0 {
        delete_device_tokens(tx, uid, Some(&s.device_id)).await?;
        notify(tx, uid).await?;
    }
    insert_pair(tx, uid, &s.device_id, &s.tokens, None, s.now).await
}

/// The owner of a refresh token, to lock its device's chain before reading
/// the token again under that lock.
async fn refresh_owner(
    tx: &Tx<'_>,
    sql: &str,
    arg: &(dyn tokio_postgres::types::ToSql + Sync),
) -> StoreResult<Option<(String, String)>> {
    Ok(query_opt(tx, sql, &[arg])
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

pub(super) async fn complete_rotation(
    tx: &Tx<'_>,
    parent: RefreshId,
    issued_with: RefreshId,
) -> StoreResult<()> {
    let Some((user, device)) = refresh_owner(
        tx,
        "SELECT user_id, device_id FROM refresh_tokens WHERE id = $1",
        &issued_with,
    )
    .await?
    else {
        return Ok(());
    };
    lock(tx, "device", &device_key(&user, &device)).await?;
    // Under the chain's lock: only a child still under its parent retires it.
    let pending = query_opt(
        tx,
        "SELECT 1 FROM refresh_tokens WHERE id = $1 AND parent_id = $2",
        &[&issued_with, &parent],
    )
    .await?;
    if pending.is_none() {
        return Ok(());
    }
    notify(tx, &user).await?;
    apply_effect(tx, refresh::on_first_access_token_use(parent, issued_with)).await
}

pub(super) async fn refresh_pair(
    tx: &Tx<'_>,
    presented: TokenHash,
    endpoint: Endpoint,
    pair: NewTokenPair,
    now: Timestamp,
) -> StoreResult<Result<RefreshedSession, Rejection>> {
    let hash = &presented.0[..];
    // The device's chain lock (the key `lock(tx, "device", device_key(…))`
    // takes), found and taken in one round trip.
    exec(
        tx,
        "SELECT pg_advisory_xact_lock(hashtextextended(
                    'device:' || octet_length(user_id) || ':' || user_id || device_id, 0))
         FROM refresh_tokens WHERE token_hash = $1",
        &[&hash],
    )
    .await?;
    let row = query_opt(
        tx,
        "SELECT id, parent_id, expires_ts, user_id, device_id FROM refresh_tokens WHERE token_hash = $1",
        &[&hash],
    )
    .await?;
    let (token, user_id, device_id) = match row {
        Some(r) => (
            Some(RefreshTokenRow {
                id: r.get(0),
                parent: r.get(1),
                expires_at: from_ots(r.get(2)),
            }),
            r.get::<_, String>(3),
            r.get::<_, String>(4),
        ),
        None => (None, String::new(), String::new()),
    };
    let effects = match refresh::plan_refresh(token, now, endpoint) {
        Ok(e) => e,
        Err(rejection) => return Ok(Err(rejection)),
    };
    notify(tx, &user_id).await?;
    for effect in effects {
        match effect {
            Effect::Mint { parent } => {
                if let Some(parent) = parent {
                    cap_children(tx, parent).await?;
                }
                insert_pair(tx, &user_id, &device_id, &pair, parent, now).await?
            }
            other => apply_effect(tx, other).await?,
        }
    }
    Ok(Ok(RefreshedSession {
        user_id: UserId::from_trusted(user_id),
        device_id,
    }))
}

pub(super) async fn access_token(
    c: &impl GenericClient,
    hash: TokenHash,
) -> StoreResult<Option<AccessTokenRecord>> {
    let row = query_opt(
        c,
        "SELECT a.user_id, a.device_id, u.is_guest, a.expires_ts, a.refresh_id, a.pending_parent,
                d.last_seen_ts, d.last_seen_ip, u.is_admin, u.locked, u.suspended
         FROM access_tokens a JOIN users u ON u.user_id = a.user_id
         LEFT JOIN devices d ON d.user_id = a.user_id AND d.device_id = a.device_id
         WHERE a.token_hash = $1 AND NOT u.deactivated",
        &[&&hash.0[..]],
    )
    .await?;
    row.map(|r| {
        Ok(AccessTokenRecord {
            user_id: UserId::from_trusted(r.try_get(0).map_err(backend)?),
            device_id: r.try_get(1).map_err(backend)?,
            is_guest: r.try_get(2).map_err(backend)?,
            expires_at: from_ots(r.try_get(3).map_err(backend)?),
            refresh_id: r.try_get(4).map_err(backend)?,
            pending_parent: r.try_get(5).map_err(backend)?,
            last_seen_at: from_ots(r.try_get(6).map_err(backend)?),
            last_seen_ip: r.try_get(7).map_err(backend)?,
            is_admin: r.try_get(8).map_err(backend)?,
            locked: r.try_get(9).map_err(backend)?,
            suspended: r.try_get(10).map_err(backend)?,
        })
    })
    .transpose()
}

/// Single use even across instances: the `DELETE … RETURNING` claims it.
pub(super) async fn consume_login_token(
    tx: &Tx<'_>,
    hash: TokenHash,
    now: Timestamp,
) -> StoreResult<Option<UserId>> {
    let row = query_opt(
        tx,
        "DELETE FROM login_tokens WHERE token_hash = $1 RETURNING user_id, expires_ts",
        &[&&hash.0[..]],
    )
    .await?;
    Ok(row
        .filter(|r| super::from_ts(r.get(1)) > now)
        .map(|r| UserId::from_trusted(r.get(0))))
}

pub(super) async fn create_login_token(
    tx: &Tx<'_>,
    hash: TokenHash,
    user_id: &str,
    expires_at: Timestamp,
    now: Timestamp,
) -> StoreResult<()> {
    exec(
        tx,
        "DELETE FROM login_tokens WHERE expires_ts <= $1",
        &[&ts(now)],
    )
    .await?;
    exec(
        tx,
        "INSERT INTO login_tokens (token_hash, user_id, expires_ts, created_ts) VALUES ($1, $2, $3, $4)",
        &[&&hash.0[..], &user_id, &ts(expires_at), &ts(now)],
    )
    .await?;
    Ok(())
}
