//! Accounts: passwords, deactivation, threepids, devices, cross-signing
//! keys and moderation.

use gatehouse_core::Timestamp;
use gatehouse_core::identifier::{Medium, Threepid};
use rusqlite::{Connection, Transaction, params};

use super::tokens::{delete_device_tokens, delete_devices_but, delete_login_tokens};
use super::{backend, from_ts, is_unique_violation, ts};
use crate::{EndSessions, Moderation, StoreError, StoreResult, ThreepidRecord};

pub(super) fn set_password_hash(
    tx: &Transaction<'_>,
    id: String,
    hash: String,
    sessions: EndSessions,
) -> StoreResult<()> {
    let n = tx
        .execute(
            "UPDATE users SET password_hash = ?2 WHERE user_id = ?1",
            [&id, &hash],
        )
        .map_err(backend)?;
    if n == 0 {
        return Err(StoreError::NoSuchUser);
    }
    delete_login_tokens(tx, &id)?;
    match sessions {
        EndSessions::Keep => Ok(()),
        EndSessions::All => delete_devices_but(tx, &id, None),
        EndSessions::AllBut(keep) => delete_devices_but(tx, &id, Some(&keep)),
    }
}

pub(super) fn deactivate_user(tx: &Transaction<'_>, id: String) -> StoreResult<()> {
    let n = tx
        .execute("UPDATE users SET deactivated = 1 WHERE user_id = ?1", [&id])
        .map_err(backend)?;
    if n == 0 {
        return Err(StoreError::NoSuchUser);
    }
    delete_device_tokens(tx, &id, None)?;
    tx.execute("DELETE FROM devices WHERE user_id = ?1", [&id])
        .map_err(backend)?;
    for table in ["threepids", "cross_signing_keys", "login_tokens"] {
        tx.execute(&format!("DELETE FROM {table} WHERE user_id = ?1"), [&id])
            .map_err(backend)?;
    }
    Ok(())
}

pub(super) fn add_threepid(
    tx: &Transaction<'_>,
    id: String,
    medium: &'static str,
    address: String,
    now: Timestamp,
) -> StoreResult<()> {
    let exists: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM users WHERE user_id = ?1)",
            [&id],
            |r| r.get(0),
        )
        .map_err(backend)?;
    if !exists {
        return Err(StoreError::NoSuchUser);
    }
    tx.execute(
        "INSERT INTO threepids (medium, address, user_id, added_ts) VALUES (?1, ?2, ?3, ?4)",
        params![medium, address, id, ts(Some(now))],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::ThreepidInUse
        } else {
            backend(e)
        }
    })?;
    Ok(())
}

pub(super) fn threepids(c: &Connection, id: String) -> rusqlite::Result<Vec<ThreepidRecord>> {
    let mut stmt = c.prepare_cached(
        "SELECT medium, address, added_ts FROM threepids WHERE user_id = ?1 ORDER BY medium, address",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<i64>>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (medium, address, added) = row?;
        if let Some(medium) = Medium::parse(&medium) {
            out.push(ThreepidRecord {
                threepid: Threepid { medium, address },
                added_at: from_ts(added).unwrap_or(0),
            });
        }
    }
    Ok(out)
}

pub(super) fn delete_devices(
    tx: &Transaction<'_>,
    id: String,
    devices: Vec<String>,
) -> StoreResult<()> {
    for device in &devices {
        delete_device_tokens(tx, &id, Some(device))?;
        tx.execute(
            "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
            [&id, device],
        )
        .map_err(backend)?;
    }
    Ok(())
}

pub(super) fn set_moderation(
    tx: &Transaction<'_>,
    id: String,
    moderation: Moderation,
    on: bool,
) -> StoreResult<()> {
    let sql = match moderation {
        Moderation::Lock => "UPDATE users SET locked = ?2 WHERE user_id = ?1",
        Moderation::Suspension => "UPDATE users SET suspended = ?2 WHERE user_id = ?1",
    };
    let n = tx.execute(sql, params![id, on]).map_err(backend)?;
    if n == 0 {
        return Err(StoreError::NoSuchUser);
    }
    Ok(())
}

pub(super) fn set_admin(tx: &Transaction<'_>, id: String, admin: bool) -> StoreResult<()> {
    let n = tx
        .execute(
            "UPDATE users SET is_admin = ?2 WHERE user_id = ?1",
            params![id, admin],
        )
        .map_err(backend)?;
    if n == 0 {
        return Err(StoreError::NoSuchUser);
    }
    Ok(())
}

pub(super) fn reactivate_user(tx: &Transaction<'_>, id: String) -> StoreResult<()> {
    let n = tx
        .execute("UPDATE users SET deactivated = 0 WHERE user_id = ?1", [&id])
        .map_err(backend)?;
    if n == 0 {
        return Err(StoreError::NoSuchUser);
    }
    Ok(())
}

pub(super) fn rename_device(
    tx: &Transaction<'_>,
    id: String,
    device: String,
    name: Option<String>,
) -> StoreResult<bool> {
    let n = tx
        .execute(
            "UPDATE devices SET display_name = ?3 WHERE user_id = ?1 AND device_id = ?2",
            params![id, device, name],
        )
        .map_err(backend)?;
    Ok(n > 0)
}

pub(super) fn touch_device(
    tx: &Transaction<'_>,
    id: String,
    device: String,
    ip: String,
    now: Timestamp,
) -> StoreResult<()> {
    tx.execute(
        "UPDATE devices SET last_seen_ip = ?3, last_seen_ts = ?4 WHERE user_id = ?1 AND device_id = ?2",
        params![id, device, ip, ts(Some(now))],
    )
    .map_err(backend)?;
    Ok(())
}

pub(super) fn delete_threepid(
    tx: &Transaction<'_>,
    id: String,
    medium: &'static str,
    address: String,
) -> StoreResult<bool> {
    let n = tx
        .execute(
            "DELETE FROM threepids WHERE user_id = ?1 AND medium = ?2 AND address = ?3",
            params![id, medium, address],
        )
        .map_err(backend)?;
    Ok(n > 0)
}

pub(super) fn set_cross_signing_keys(
    tx: &Transaction<'_>,
    id: String,
    keys: String,
    now: Timestamp,
) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO cross_signing_keys (user_id, keys, updated_ts) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id) DO UPDATE SET keys = excluded.keys, updated_ts = excluded.updated_ts",
        params![id, keys, ts(Some(now))],
    )
    .map_err(backend)?;
    Ok(())
}
