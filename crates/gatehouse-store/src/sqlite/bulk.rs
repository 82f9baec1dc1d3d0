//! Row-level helpers of the delegation and import tables: the bulk import
//! batch and the homeserver-sync row mapper (kept apart from the `Store`
//! implementation, which only calls them).

use rusqlite::{Transaction, params};

use super::{from_ts, ts};
use crate::{HomeserverSync, ImportCounts, ImportedUser};

/// One import batch: `INSERT OR IGNORE` everywhere, so rows already there
/// (from an earlier run, or changed in Gatehouse since) are kept as they are.
pub(super) fn import_batch(
    tx: &Transaction<'_>,
    users: &[ImportedUser],
) -> rusqlite::Result<ImportCounts> {
    let mut counts = ImportCounts::default();
    let mut user_stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO users (user_id, password_hash, is_admin, is_guest, deactivated, created_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut deactivated_stmt =
        tx.prepare_cached("SELECT deactivated FROM users WHERE user_id = ?1")?;
    let mut threepid_stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO threepids (medium, address, user_id, added_ts) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut device_stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO devices (user_id, device_id, display_name, last_seen_ip, last_seen_ts, created_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    // In a bulk import (`tune_for_bulk_import`) tokens are staged and
    // counted when `finish_bulk_import` adds them.
    let staged: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM temp.sqlite_master WHERE name = 'import_tokens')",
        [],
        |r| r.get(0),
    )?;
    let mut token_stmt = tx.prepare_cached(if staged {
        "INSERT INTO temp.import_tokens (token_hash, user_id, device_id, created_ts) VALUES (?1, ?2, ?3, ?4)"
    } else {
        "INSERT OR IGNORE INTO access_tokens (token_hash, user_id, device_id, created_ts) VALUES (?1, ?2, ?3, ?4)"
    })?;
    for user in users {
        let id = user.user_id.as_str();
        let created = ts(Some(user.created_at));
        let inserted = user_stmt.execute(params![
            id,
            user.password_hash,
            user.is_admin,
            user.is_guest,
            user.deactivated,
            created
        ])?;
        counts.users += inserted as u64;
        // A deactivated account has no 3PIDs, devices or tokens: whether
        // the import says so, or the account was deactivated here since an
        // earlier run (which must not bring its sessions back).
        let deactivated = if inserted == 1 {
            user.deactivated
        } else {
            deactivated_stmt.query_row([id], |r| r.get(0))?
        };
        if deactivated {
            continue;
        }
        for t in &user.threepids {
            counts.threepids +=
                threepid_stmt.execute(params![t.medium.as_str(), t.address, id, created])? as u64;
        }
        for d in &user.devices {
            counts.devices += device_stmt.execute(params![
                id,
                d.device_id,
                d.display_name,
                d.last_seen_ip,
                ts(d.last_seen_at),
                created
            ])? as u64;
            for hash in &d.access_tokens {
                let n = token_stmt.execute(params![&hash.0[..], id, d.device_id, created])?;
                if !staged {
                    counts.access_tokens += n as u64;
                }
            }
        }
    }
    Ok(counts)
}

pub(super) const SYNC_COLUMNS: &str =
    "localpart, version, erase, reactivate, attempts, next_attempt_ts, deleted_devices";

pub(super) fn sync_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HomeserverSync> {
    Ok(HomeserverSync {
        localpart: r.get(0)?,
        version: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
        erase: r.get(2)?,
        reactivate: r.get(3)?,
        attempts: r.get(4)?,
        next_attempt_at: from_ts(r.get(5)?).unwrap_or(0),
        deleted_devices: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
    })
}
