//! Accounts: passwords, deactivation, threepids, devices, cross-signing
//! keys and moderation.

use gatehouse_core::Timestamp;
use gatehouse_core::identifier::Threepid;

use super::tokens::{delete_device_tokens, delete_devices_but, delete_login_tokens};
use super::{Tx, exec, insert, notify, query_opt, ts};
use crate::{EndSessions, Moderation, StoreError, StoreResult};

/// `NoSuchUser` when an update touched no account.
fn found(n: u64) -> StoreResult<()> {
    if n == 0 {
        Err(StoreError::NoSuchUser)
    } else {
        Ok(())
    }
}

pub(super) async fn set_password_hash(
    tx: &Tx<'_>,
    id: &str,
    hash: &str,
    sessions: &EndSessions,
) -> StoreResult<()> {
    found(
        exec(
            tx,
            "UPDATE users SET password_hash = $2 WHERE user_id = $1",
            &[&id, &hash],
        )
        .await?,
    )?;
    delete_login_tokens(tx, id).await?;
    notify(tx, id).await?;
    match sessions {
        EndSessions::Keep => Ok(()),
        EndSessions::All => delete_devices_but(tx, id, None).await,
        EndSessions::AllBut(keep) => delete_devices_but(tx, id, Some(keep)).await,
    }
}

pub(super) async fn deactivate_user(tx: &Tx<'_>, id: &str) -> StoreResult<()> {
    found(
        exec(
            tx,
            "UPDATE users SET deactivated = TRUE WHERE user_id = $1",
            &[&id],
        )
        .await?,
    )?;
    delete_device_tokens(tx, id, None).await?;
    notify(tx, id).await?;
    for table in ["devices", "threepids", "cross_signing_keys", "login_tokens"] {
        exec(
            tx,
            &format!("DELETE FROM {table} WHERE user_id = $1"),
            &[&id],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn add_threepid(
    tx: &Tx<'_>,
    id: &str,
    threepid: &Threepid,
    now: Timestamp,
) -> StoreResult<()> {
    let user = query_opt(
        tx,
        "SELECT 1 FROM users WHERE user_id = $1 FOR SHARE",
        &[&id],
    )
    .await?;
    if user.is_none() {
        return Err(StoreError::NoSuchUser);
    }
    insert_threepid(tx, id, threepid, now).await
}

pub(super) async fn insert_threepid(
    tx: &Tx<'_>,
    id: &str,
    threepid: &Threepid,
    now: Timestamp,
) -> StoreResult<()> {
    insert(
        tx,
        "INSERT INTO threepids (medium, address, user_id, added_ts) VALUES ($1, $2, $3, $4)",
        &[&threepid.medium.as_str(), &threepid.address, &id, &ts(now)],
        StoreError::ThreepidInUse,
    )
    .await
}

pub(super) async fn delete_devices(tx: &Tx<'_>, id: &str, devices: &[String]) -> StoreResult<()> {
    notify(tx, id).await?;
    for table in ["access_tokens", "refresh_tokens", "devices"] {
        exec(
            tx,
            &format!("DELETE FROM {table} WHERE user_id = $1 AND device_id = ANY($2)"),
            &[&id, &devices],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn set_moderation(
    tx: &Tx<'_>,
    id: &str,
    moderation: Moderation,
    on: bool,
) -> StoreResult<()> {
    let sql = match moderation {
        Moderation::Lock => "UPDATE users SET locked = $2 WHERE user_id = $1",
        Moderation::Suspension => "UPDATE users SET suspended = $2 WHERE user_id = $1",
    };
    found(exec(tx, sql, &[&id, &on]).await?)?;
    notify(tx, id).await
}

pub(super) async fn set_admin(tx: &Tx<'_>, id: &str, admin: bool) -> StoreResult<()> {
    found(
        exec(
            tx,
            "UPDATE users SET is_admin = $2 WHERE user_id = $1",
            &[&id, &admin],
        )
        .await?,
    )?;
    notify(tx, id).await
}

pub(super) async fn reactivate_user(tx: &Tx<'_>, id: &str) -> StoreResult<()> {
    found(
        exec(
            tx,
            "UPDATE users SET deactivated = FALSE WHERE user_id = $1",
            &[&id],
        )
        .await?,
    )
}

pub(super) async fn set_cross_signing_keys(
    tx: &Tx<'_>,
    id: &str,
    keys: &str,
    now: Timestamp,
) -> StoreResult<()> {
    exec(
        tx,
        "INSERT INTO cross_signing_keys (user_id, keys, updated_ts) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET keys = excluded.keys, updated_ts = excluded.updated_ts",
        &[&id, &keys, &ts(now)],
    )
    .await?;
    Ok(())
}
