//! Sessions and their tokens: access and refresh tokens, rotation,
//! devices' tokens and `m.login.token` login tokens.

use gatehouse_core::Timestamp;
use gatehouse_core::refresh::{self, Effect, Endpoint, RefreshId, RefreshTokenRow, Rejection};
use gatehouse_core::token::TokenHash;
use gatehouse_core::user_id::UserId;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{backend, from_ts, ts};
use crate::{
    AccessTokenRecord, NewSession, NewTokenPair, RefreshedSession, StoreError, StoreResult,
};

/// Deletes the given refresh tokens and every access token minted with them.
pub(super) fn delete_refresh_tokens(
    tx: &Transaction<'_>,
    where_clause: &str,
    args: &[&dyn rusqlite::ToSql],
) -> StoreResult<()> {
    tx.execute(
        &format!("DELETE FROM access_tokens WHERE refresh_id IN (SELECT id FROM refresh_tokens WHERE {where_clause})"),
        args,
    )
    .map_err(backend)?;
    tx.execute(
        &format!("DELETE FROM refresh_tokens WHERE {where_clause}"),
        args,
    )
    .map_err(backend)?;
    Ok(())
}

pub(super) fn apply_effect(tx: &Transaction<'_>, effect: Effect) -> StoreResult<()> {
    match effect {
        Effect::RetireParent { parent, keep } => {
            delete_refresh_tokens(
                tx,
                "id = ?1 OR (parent_id = ?1 AND id != ?2)",
                &[&parent, &keep],
            )?;
            tx.execute(
                "UPDATE refresh_tokens SET parent_id = NULL WHERE id = ?1",
                [keep],
            )
            .map_err(backend)?;
            tx.execute(
                "UPDATE access_tokens SET pending_parent = NULL WHERE refresh_id = ?1",
                [keep],
            )
            .map_err(backend)?;
        }
        Effect::Retire(id) => delete_refresh_tokens(tx, "id = ?1 OR parent_id = ?1", &[&id])?,
        Effect::Mint { .. } => unreachable!("minting needs the new pair; handled by the caller"),
    }
    Ok(())
}

/// Inserts an access token (and refresh token) for a device.
pub(super) fn insert_pair(
    tx: &Transaction<'_>,
    user_id: &str,
    device_id: &str,
    pair: &NewTokenPair,
    parent: Option<RefreshId>,
    now: Timestamp,
) -> StoreResult<()> {
    let now = ts(Some(now));
    let refresh_id = match pair.refresh {
        Some(hash) => {
            tx.execute(
                "INSERT INTO refresh_tokens (token_hash, user_id, device_id, parent_id, expires_ts, created_ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![&hash.0[..], user_id, device_id, parent, ts(pair.refresh_expires_at), now],
            )
            .map_err(backend)?;
            Some(tx.last_insert_rowid())
        }
        None => None,
    };
    tx.execute(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, refresh_id, pending_parent, expires_ts, created_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![&pair.access.0[..], user_id, device_id, refresh_id, parent, ts(pair.access_expires_at), now],
    )
    .map_err(backend)?;
    Ok(())
}

pub(super) fn delete_device_tokens(
    tx: &Transaction<'_>,
    user_id: &str,
    device_id: Option<&str>,
) -> StoreResult<()> {
    match device_id {
        Some(d) => {
            tx.execute(
                "DELETE FROM access_tokens WHERE user_id = ?1 AND device_id = ?2",
                [user_id, d],
            )
            .map_err(backend)?;
            tx.execute(
                "DELETE FROM refresh_tokens WHERE user_id = ?1 AND device_id = ?2",
                [user_id, d],
            )
            .map_err(backend)?;
        }
        None => {
            tx.execute("DELETE FROM access_tokens WHERE user_id = ?1", [user_id])
                .map_err(backend)?;
            tx.execute("DELETE FROM refresh_tokens WHERE user_id = ?1", [user_id])
                .map_err(backend)?;
        }
    }
    Ok(())
}

/// Deletes an account's outstanding login tokens (`m.login.token`).
pub(super) fn delete_login_tokens(tx: &Transaction<'_>, user_id: &str) -> StoreResult<()> {
    tx.execute("DELETE FROM login_tokens WHERE user_id = ?1", [user_id])
        .map_err(backend)?;
    Ok(())
}

/// Deletes an account's devices and their tokens, all or all but `keep`.
pub(super) fn delete_devices_but(
    tx: &Transaction<'_>,
    user_id: &str,
    keep: Option<&str>,
) -> StoreResult<()> {
    let keep = keep.unwrap_or("");
    for table in ["access_tokens", "refresh_tokens", "devices"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE user_id = ?1 AND device_id != ?2"),
            [user_id, keep],
        )
        .map_err(backend)?;
    }
    Ok(())
}

/// Creates (or takes over) a device and stores its first token pair.
/// Refused for an account deactivated meanwhile (checked inside the
/// transaction: the password check before it took a while).
pub(super) fn start_session(tx: &Transaction<'_>, s: &NewSession) -> StoreResult<()> {
    let uid = s.user_id.as_str();
    let deactivated: Option<bool> = tx
        .query_row(
            "SELECT deactivated FROM users WHERE user_id = ?1",
            [uid],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    match deactivated {
        None => return Err(StoreError::NoSuchUser),
        Some(true) => return Err(StoreError::UserDeactivated),
        Some(false) => {}
    }
    let existed: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM devices WHERE user_id = ?1 AND device_id = ?2)",
            [uid, &s.device_id],
            |r| r.get(0),
        )
        .map_err(backend)?;
    if existed {
        delete_device_tokens(tx, uid, Some(&s.device_id))?;
    } else {
        tx.execute(
            "INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES (?1, ?2, ?3, ?4)",
            params![uid, s.device_id, s.initial_display_name, ts(Some(s.now))],
        )
        .map_err(backend)?;
    }
    insert_pair(tx, uid, &s.device_id, &s.tokens, None, s.now)
}

pub(super) fn complete_rotation(
    tx: &Transaction<'_>,
    parent: RefreshId,
    issued_with: RefreshId,
) -> StoreResult<()> {
    // Read again inside the transaction: the caller saw the access
    // token outside it, and the rotation may have been completed or
    // the session ended since. Only a child still under its parent
    // retires that parent (and IDs are never reused, migration 7).
    let pending: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM refresh_tokens WHERE id = ?1 AND parent_id = ?2)",
            [issued_with, parent],
            |r| r.get(0),
        )
        .map_err(backend)?;
    if !pending {
        return Ok(());
    }
    apply_effect(tx, refresh::on_first_access_token_use(parent, issued_with))
}

pub(super) fn refresh_pair(
    tx: &Transaction<'_>,
    presented: TokenHash,
    endpoint: Endpoint,
    pair: NewTokenPair,
    now: Timestamp,
) -> StoreResult<Result<RefreshedSession, Rejection>> {
    let row = tx
        .query_row(
            "SELECT id, parent_id, expires_ts, user_id, device_id FROM refresh_tokens WHERE token_hash = ?1",
            [&presented.0[..]],
            |r| {
                Ok((
                    RefreshTokenRow { id: r.get(0)?, parent: r.get(1)?, expires_at: from_ts(r.get(2)?) },
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
        )
        .optional()
        .map_err(backend)?;
    let (token, user_id, device_id) = match row {
        Some((t, u, d)) => (Some(t), u, d),
        None => (None, String::new(), String::new()),
    };
    let effects = match refresh::plan_refresh(token, now, endpoint) {
        Ok(e) => e,
        Err(rejection) => return Ok(Err(rejection)),
    };
    for effect in effects {
        match effect {
            Effect::Mint { parent } => {
                if let Some(parent) = parent {
                    // Room for this child among the parent's newest.
                    delete_refresh_tokens(
                        tx,
                        "id IN (SELECT id FROM refresh_tokens WHERE parent_id = ?1
                                ORDER BY id DESC LIMIT -1 OFFSET ?2)",
                        &[&parent, &(refresh::MAX_PENDING_CHILDREN - 1)],
                    )?;
                }
                insert_pair(tx, &user_id, &device_id, &pair, parent, now)?
            }
            other => apply_effect(tx, other)?,
        }
    }
    Ok(Ok(RefreshedSession {
        user_id: UserId::from_trusted(user_id),
        device_id,
    }))
}

pub(super) fn access_token(
    c: &Connection,
    hash: TokenHash,
) -> rusqlite::Result<Option<AccessTokenRecord>> {
    c.prepare_cached(
        "SELECT a.user_id, a.device_id, u.is_guest, a.expires_ts, a.refresh_id, a.pending_parent,
                d.last_seen_ts, d.last_seen_ip, u.is_admin, u.locked, u.suspended
         FROM access_tokens a JOIN users u ON u.user_id = a.user_id
         LEFT JOIN devices d ON d.user_id = a.user_id AND d.device_id = a.device_id
         WHERE a.token_hash = ?1 AND u.deactivated = 0",
    )?
    .query_row([&hash.0[..]], |r| {
        Ok(AccessTokenRecord {
            user_id: UserId::from_trusted(r.get(0)?),
            device_id: r.get(1)?,
            is_guest: r.get(2)?,
            expires_at: from_ts(r.get(3)?),
            refresh_id: r.get(4)?,
            pending_parent: r.get(5)?,
            last_seen_at: from_ts(r.get(6)?),
            last_seen_ip: r.get(7)?,
            is_admin: r.get(8)?,
            locked: r.get(9)?,
            suspended: r.get(10)?,
        })
    })
    .optional()
}

pub(super) fn consume_login_token(
    tx: &Transaction<'_>,
    hash: TokenHash,
    now: Timestamp,
) -> StoreResult<Option<UserId>> {
    let row: Option<(String, Option<i64>)> = tx
        .query_row(
            "SELECT user_id, expires_ts FROM login_tokens WHERE token_hash = ?1",
            [&hash.0[..]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(backend)?;
    tx.execute(
        "DELETE FROM login_tokens WHERE token_hash = ?1",
        [&hash.0[..]],
    )
    .map_err(backend)?;
    Ok(row
        .filter(|(_, exp)| from_ts(*exp).is_some_and(|e| e > now))
        .map(|(u, _)| UserId::from_trusted(u)))
}

pub(super) fn create_login_token(
    tx: &Transaction<'_>,
    hash: TokenHash,
    id: String,
    expires_at: Timestamp,
    now: Timestamp,
) -> StoreResult<()> {
    tx.execute(
        "DELETE FROM login_tokens WHERE expires_ts <= ?1",
        [ts(Some(now))],
    )
    .map_err(backend)?;
    tx.execute(
        "INSERT INTO login_tokens (token_hash, user_id, expires_ts, created_ts) VALUES (?1, ?2, ?3, ?4)",
        params![&hash.0[..], id, ts(Some(expires_at)), ts(Some(now))],
    )
    .map_err(backend)?;
    Ok(())
}
