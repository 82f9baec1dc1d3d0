//! Row-level helpers of the delegation and import tables: the bulk import
//! batch and the homeserver-sync row mapper (kept apart from the `Store`
//! implementation, which only calls them).

use gatehouse_core::Timestamp;
use gatehouse_core::token::TokenHash;
use gatehouse_core::user_id::UserId;
use rusqlite::{Connection, OptionalExtension, Statement, Transaction, params};

use super::{backend, from_ts, ts};
use crate::{
    HomeserverChange, HomeserverSync, ImportCounts, ImportedUser, StoreResult, WebSession,
};

/// Rows of one multi-row `INSERT` (at most 6 parameters each, well under
/// SQLite's limit of 32 766). One execution a row costs as much as the
/// insert itself; with many rows a statement, binding is all that is left.
const ROWS_PER_INSERT: usize = 256;

/// `INSERT OR IGNORE INTO {into} VALUES (…), (…), …` over `rows`, many a
/// statement; `bind` binds one row's `columns` values from the given
/// 1-based parameter index. Returns how many rows were inserted.
fn insert_many<R>(
    tx: &Transaction<'_>,
    into: &str,
    columns: usize,
    rows: &[R],
    mut bind: impl FnMut(&mut Statement<'_>, usize, &R) -> rusqlite::Result<()>,
) -> rusqlite::Result<u64> {
    let sql = |n: usize| {
        let row = format!("({})", vec!["?"; columns].join(","));
        format!(
            "INSERT OR IGNORE INTO {into} VALUES {}",
            vec![row; n].join(",")
        )
    };
    let mut added = 0u64;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        // Full chunks share one cached statement; the last is its own.
        let mut stmt = tx.prepare_cached(&sql(chunk.len()))?;
        for (i, row) in chunk.iter().enumerate() {
            bind(&mut stmt, i * columns + 1, row)?;
        }
        added += stmt.raw_execute()? as u64;
    }
    Ok(added)
}

/// One import batch: `INSERT OR IGNORE` everywhere, so rows already there
/// (from an earlier run, or changed in Gatehouse since) are kept as they are.
/// With `staged` (a bulk import), tokens are collected there instead, and
/// counted when [`insert_sorted_tokens`] adds them.
pub(super) fn import_batch(
    tx: &Transaction<'_>,
    users: &[ImportedUser],
    mut staged: Option<&mut Vec<StagedToken>>,
) -> rusqlite::Result<ImportCounts> {
    let mut counts = ImportCounts::default();
    // Users first, all at once; `RETURNING` names the ones that were new.
    let mut new_users = std::collections::HashSet::with_capacity(users.len());
    for chunk in users.chunks(ROWS_PER_INSERT) {
        let row = "(?,?,?,?,?,?)";
        let mut stmt = tx.prepare_cached(&format!(
            "INSERT OR IGNORE INTO users (user_id, password_hash, is_admin, is_guest, deactivated, created_ts)
             VALUES {} RETURNING user_id",
            vec![row; chunk.len()].join(",")
        ))?;
        for (i, user) in chunk.iter().enumerate() {
            let at = i * 6;
            stmt.raw_bind_parameter(at + 1, user.user_id.as_str())?;
            stmt.raw_bind_parameter(at + 2, user.password_hash.as_deref())?;
            stmt.raw_bind_parameter(at + 3, user.is_admin)?;
            stmt.raw_bind_parameter(at + 4, user.is_guest)?;
            stmt.raw_bind_parameter(at + 5, user.deactivated)?;
            stmt.raw_bind_parameter(at + 6, ts(Some(user.created_at)))?;
        }
        let mut inserted = stmt.raw_query();
        while let Some(r) = inserted.next()? {
            new_users.insert(r.get::<_, String>(0)?);
        }
    }
    counts.users = new_users.len() as u64;
    let mut deactivated_stmt =
        tx.prepare_cached("SELECT deactivated FROM users WHERE user_id = ?1")?;
    let (mut threepids, mut devices) = (Vec::new(), Vec::new());
    for user in users {
        let id = user.user_id.as_str();
        let created = ts(Some(user.created_at));
        // A deactivated account has no 3PIDs, devices or tokens: whether
        // the import says so, or the account was deactivated here since an
        // earlier run (which must not bring its sessions back).
        let deactivated = if new_users.contains(id) {
            user.deactivated
        } else {
            deactivated_stmt.query_row([id], |r| r.get(0))?
        };
        if deactivated {
            continue;
        }
        threepids.extend(user.threepids.iter().map(|t| (t, id, created)));
        for d in &user.devices {
            devices.push((d, id, created));
            for hash in &d.access_tokens {
                if let Some(staged) = staged.as_deref_mut() {
                    staged.push(StagedToken {
                        hash: hash.0,
                        user_id: id.into(),
                        device_id: d.device_id.as_str().into(),
                        created_ts: created,
                    });
                }
            }
        }
    }
    counts.threepids = insert_many(
        tx,
        "threepids (medium, address, user_id, added_ts)",
        4,
        &threepids,
        |stmt, at, (t, id, created)| {
            stmt.raw_bind_parameter(at, t.medium.as_str())?;
            stmt.raw_bind_parameter(at + 1, t.address.as_str())?;
            stmt.raw_bind_parameter(at + 2, *id)?;
            stmt.raw_bind_parameter(at + 3, *created)
        },
    )?;
    counts.devices = insert_many(
        tx,
        "devices (user_id, device_id, display_name, last_seen_ip, last_seen_ts, created_ts)",
        6,
        &devices,
        |stmt, at, (d, id, created)| {
            stmt.raw_bind_parameter(at, *id)?;
            stmt.raw_bind_parameter(at + 1, d.device_id.as_str())?;
            stmt.raw_bind_parameter(at + 2, d.display_name.as_deref())?;
            stmt.raw_bind_parameter(at + 3, d.last_seen_ip.as_deref())?;
            stmt.raw_bind_parameter(at + 4, ts(d.last_seen_at))?;
            stmt.raw_bind_parameter(at + 5, *created)
        },
    )?;
    if staged.is_none() {
        let tokens: Vec<_> = devices
            .iter()
            .flat_map(|(d, id, created)| d.access_tokens.iter().map(move |h| (h, *id, d, *created)))
            .collect();
        counts.access_tokens = insert_many(
            tx,
            "access_tokens (token_hash, user_id, device_id, created_ts)",
            4,
            &tokens,
            |stmt, at, (hash, id, d, created)| {
                stmt.raw_bind_parameter(at, &hash.0[..])?;
                stmt.raw_bind_parameter(at + 1, *id)?;
                stmt.raw_bind_parameter(at + 2, d.device_id.as_str())?;
                stmt.raw_bind_parameter(at + 3, *created)
            },
        )?;
    }
    Ok(counts)
}

/// An imported access token held back until the end of a bulk import.
pub(super) struct StagedToken {
    pub hash: [u8; 32],
    pub user_id: Box<str>,
    pub device_id: Box<str>,
    pub created_ts: Option<i64>,
}

/// Adds the staged tokens of a bulk import, sorted by hash: the token-hash
/// index then only grows at its end. The (user, device) index would be
/// written all over instead, so it is dropped and rebuilt once, in the same
/// transaction. Returns how many tokens were new.
pub(super) fn insert_sorted_tokens(
    tx: &Transaction<'_>,
    tokens: &[StagedToken],
) -> rusqlite::Result<u64> {
    tx.execute_batch("DROP INDEX access_tokens_device")?;
    let added = insert_many(
        tx,
        "access_tokens (token_hash, user_id, device_id, created_ts)",
        4,
        tokens,
        |stmt, at, t| {
            stmt.raw_bind_parameter(at, &t.hash[..])?;
            stmt.raw_bind_parameter(at + 1, &*t.user_id)?;
            stmt.raw_bind_parameter(at + 2, &*t.device_id)?;
            stmt.raw_bind_parameter(at + 3, t.created_ts)
        },
    )?;
    tx.execute_batch("CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id)")?;
    Ok(added)
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

pub(super) fn request_homeserver_sync(
    tx: &Transaction<'_>,
    localpart: String,
    change: HomeserverChange,
    now: Timestamp,
) -> StoreResult<u64> {
    let existing: Option<String> = tx
        .query_row(
            "SELECT deleted_devices FROM homeserver_syncs WHERE localpart = ?1",
            [&localpart],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    let mut devices: Vec<String> = existing
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default();
    for d in change.deleted_devices {
        if !devices.contains(&d) {
            devices.push(d);
        }
    }
    let devices = serde_json::to_string(&devices).map_err(backend)?;
    tx.query_row(
        "INSERT INTO homeserver_syncs (localpart, version, erase, reactivate, deleted_devices, next_attempt_ts)
         VALUES (?1, 1, ?2, ?3, ?4, ?5)
         ON CONFLICT (localpart) DO UPDATE SET
            version = version + 1,
            erase = erase OR excluded.erase,
            reactivate = (reactivate OR excluded.reactivate) AND NOT excluded.erase,
            deleted_devices = excluded.deleted_devices,
            next_attempt_ts = excluded.next_attempt_ts
         RETURNING version",
        params![localpart, change.erase, change.reactivate, devices, ts(Some(now))],
        |r| r.get::<_, i64>(0),
    )
    .map(|v| u64::try_from(v).unwrap_or(0))
    .map_err(backend)
}

pub(super) fn web_session(
    c: &Connection,
    hash: TokenHash,
    now: Timestamp,
) -> rusqlite::Result<Option<WebSession>> {
    c.prepare_cached(
        "SELECT w.user_id, w.csrf_token, w.expires_ts FROM web_sessions w
         JOIN users u ON u.user_id = w.user_id
         WHERE w.id_hash = ?1 AND w.expires_ts > ?2 AND u.deactivated = 0",
    )?
    .query_row(params![&hash.0[..], ts(Some(now))], |r| {
        Ok(WebSession {
            user_id: UserId::from_trusted(r.get(0)?),
            csrf_token: r.get(1)?,
            expires_at: from_ts(r.get(2)?).unwrap_or(0),
        })
    })
    .optional()
}

pub(super) fn postpone_homeserver_sync(
    tx: &Transaction<'_>,
    localpart: String,
    next_attempt_at: Timestamp,
) -> StoreResult<()> {
    tx.execute(
        "UPDATE homeserver_syncs SET attempts = attempts + 1, next_attempt_ts = ?2
         WHERE localpart = ?1",
        params![localpart, ts(Some(next_attempt_at))],
    )
    .map_err(backend)?;
    Ok(())
}

pub(super) fn create_web_session(
    tx: &Transaction<'_>,
    hash: TokenHash,
    session: WebSession,
) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO web_sessions (id_hash, user_id, csrf_token, expires_ts) VALUES (?1, ?2, ?3, ?4)",
        params![&hash.0[..], session.user_id.as_str(), session.csrf_token, ts(Some(session.expires_at))],
    )
    .map_err(backend)?;
    Ok(())
}
