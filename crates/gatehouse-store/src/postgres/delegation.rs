//! Imports, pending homeserver pushes and browser sessions.

use gatehouse_core::Timestamp;

use super::{Tx, backend, exec, lock, ots, query, query_opt, ts};
use crate::{HomeserverChange, ImportCounts, ImportedUser, StoreResult, WebSession};

/// One import batch, each table in one statement over arrays (`unnest`):
/// `ON CONFLICT DO NOTHING` everywhere, so rows already there are kept.
pub(super) async fn import_batch(tx: &Tx<'_>, users: &[ImportedUser]) -> StoreResult<ImportCounts> {
    let mut counts = ImportCounts::default();
    let ids: Vec<&str> = users.iter().map(|u| u.user_id.as_str()).collect();
    let hashes: Vec<Option<&str>> = users.iter().map(|u| u.password_hash.as_deref()).collect();
    let admin: Vec<bool> = users.iter().map(|u| u.is_admin).collect();
    let guest: Vec<bool> = users.iter().map(|u| u.is_guest).collect();
    let deactivated: Vec<bool> = users.iter().map(|u| u.deactivated).collect();
    let created: Vec<i64> = users.iter().map(|u| ts(u.created_at)).collect();
    let new = query(
        tx,
        "INSERT INTO users (user_id, password_hash, is_admin, is_guest, deactivated, created_ts)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bool[], $4::bool[], $5::bool[], $6::bigint[])
         ON CONFLICT (user_id) DO NOTHING RETURNING user_id",
        &[&ids, &hashes, &admin, &guest, &deactivated, &created],
    )
    .await?;
    counts.users = new.len() as u64;
    // A deactivated account has no 3PIDs, devices or tokens: whether the
    // import says so, or it was deactivated here since an earlier run.
    let active: std::collections::HashSet<String> = query(
        tx,
        "SELECT user_id FROM users WHERE user_id = ANY($1) AND NOT deactivated",
        &[&ids],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    let (mut t_medium, mut t_address, mut t_user, mut t_ts) = (vec![], vec![], vec![], vec![]);
    let (mut d_user, mut d_id, mut d_name, mut d_ip, mut d_seen, mut d_ts) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut a_hash, mut a_user, mut a_device, mut a_ts) = (vec![], vec![], vec![], vec![]);
    for u in users.iter().filter(|u| active.contains(u.user_id.as_str())) {
        let (id, created) = (u.user_id.as_str(), ts(u.created_at));
        for t in &u.threepids {
            t_medium.push(t.medium.as_str());
            t_address.push(t.address.as_str());
            t_user.push(id);
            t_ts.push(created);
        }
        for d in &u.devices {
            d_user.push(id);
            d_id.push(d.device_id.as_str());
            d_name.push(d.display_name.as_deref());
            d_ip.push(d.last_seen_ip.as_deref());
            d_seen.push(ots(d.last_seen_at));
            d_ts.push(created);
            for h in &d.access_tokens {
                a_hash.push(&h.0[..]);
                a_user.push(id);
                a_device.push(d.device_id.as_str());
                a_ts.push(created);
            }
        }
    }
    counts.threepids = exec(
        tx,
        "INSERT INTO threepids (medium, address, user_id, added_ts)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
         ON CONFLICT DO NOTHING",
        &[&t_medium, &t_address, &t_user, &t_ts],
    )
    .await?;
    counts.devices = exec(
        tx,
        "INSERT INTO devices (user_id, device_id, display_name, last_seen_ip, last_seen_ts, created_ts)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
         ON CONFLICT DO NOTHING",
        &[&d_user, &d_id, &d_name, &d_ip, &d_seen, &d_ts],
    )
    .await?;
    counts.access_tokens = exec(
        tx,
        "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts)
         SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::bigint[])
         ON CONFLICT DO NOTHING",
        &[&a_hash, &a_user, &a_device, &a_ts],
    )
    .await?;
    Ok(counts)
}

pub(super) async fn request_homeserver_sync(
    tx: &Tx<'_>,
    localpart: &str,
    change: &HomeserverChange,
    now: Timestamp,
) -> StoreResult<u64> {
    // The row may not exist yet: a lock on the name serialises the merge.
    lock(tx, "homeserver sync", localpart).await?;
    let existing = query_opt(
        tx,
        "SELECT deleted_devices FROM homeserver_syncs WHERE localpart = $1",
        &[&localpart],
    )
    .await?;
    let mut devices: Vec<String> = existing
        .and_then(|r| serde_json::from_str(&r.get::<_, String>(0)).ok())
        .unwrap_or_default();
    for d in &change.deleted_devices {
        if !devices.contains(d) {
            devices.push(d.clone());
        }
    }
    let devices = serde_json::to_string(&devices).map_err(backend)?;
    let row = query_opt(
        tx,
        "INSERT INTO homeserver_syncs (localpart, version, erase, reactivate, deleted_devices, next_attempt_ts)
         VALUES ($1, 1, $2, $3, $4, $5)
         ON CONFLICT (localpart) DO UPDATE SET
            version = homeserver_syncs.version + 1,
            erase = homeserver_syncs.erase OR excluded.erase,
            reactivate = (homeserver_syncs.reactivate OR excluded.reactivate) AND NOT excluded.erase,
            deleted_devices = excluded.deleted_devices,
            next_attempt_ts = excluded.next_attempt_ts
         RETURNING version",
        &[&localpart, &change.erase, &change.reactivate, &devices, &ts(now)],
    )
    .await?
    .ok_or_else(|| backend("upsert returned nothing"))?;
    Ok(super::from_ts(row.get(0)))
}

pub(super) async fn create_web_session(
    tx: &Tx<'_>,
    hash: &[u8],
    session: &WebSession,
) -> StoreResult<()> {
    exec(
        tx,
        "INSERT INTO web_sessions (id_hash, user_id, csrf_token, expires_ts) VALUES ($1, $2, $3, $4)",
        &[&hash, &session.user_id.as_str(), &session.csrf_token, &ts(session.expires_at)],
    )
    .await?;
    Ok(())
}
