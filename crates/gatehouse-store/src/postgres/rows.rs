//! Row mappers and the column lists they read.

use gatehouse_core::identifier::{Medium, Threepid};
use gatehouse_core::token::TokenHash;
use gatehouse_core::user_id::UserId;
use tokio_postgres::Row;

use super::{backend, from_ots, from_ts};
use crate::{
    ClientSecretHash, DeviceRecord, HomeserverSync, RegistrationToken, StoreResult,
    ThreepidValidation, UserRecord,
};

pub(super) const USER_COLUMNS: &str = "u.user_id, u.password_hash, u.is_admin, u.is_guest, u.deactivated, u.created_ts, u.locked, u.suspended";

pub(super) fn user(r: &Row) -> StoreResult<UserRecord> {
    Ok(UserRecord {
        user_id: UserId::from_trusted(r.try_get(0).map_err(backend)?),
        password_hash: r.try_get(1).map_err(backend)?,
        is_admin: r.try_get(2).map_err(backend)?,
        is_guest: r.try_get(3).map_err(backend)?,
        deactivated: r.try_get(4).map_err(backend)?,
        created_at: from_ts(r.try_get(5).map_err(backend)?),
        locked: r.try_get(6).map_err(backend)?,
        suspended: r.try_get(7).map_err(backend)?,
    })
}

pub(super) const DEVICE_COLUMNS: &str = "device_id, display_name, last_seen_ip, last_seen_ts";

pub(super) fn device(r: &Row) -> StoreResult<DeviceRecord> {
    Ok(DeviceRecord {
        device_id: r.try_get(0).map_err(backend)?,
        display_name: r.try_get(1).map_err(backend)?,
        last_seen_ip: r.try_get(2).map_err(backend)?,
        last_seen_at: from_ots(r.try_get(3).map_err(backend)?),
    })
}

pub(super) const TOKEN_COLUMNS: &str = "token, uses_allowed, pending, completed, expiry_ts";

fn count(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

pub(super) fn registration_token(r: &Row) -> StoreResult<RegistrationToken> {
    Ok(RegistrationToken {
        token: r.try_get(0).map_err(backend)?,
        uses_allowed: r.try_get::<_, Option<i64>>(1).map_err(backend)?.map(count),
        pending: count(r.try_get(2).map_err(backend)?),
        completed: count(r.try_get(3).map_err(backend)?),
        expiry: from_ots(r.try_get(4).map_err(backend)?),
    })
}

pub(super) fn hash(bytes: Vec<u8>, what: &str) -> StoreResult<TokenHash> {
    Ok(TokenHash(
        bytes
            .try_into()
            .map_err(|_| backend(format!("corrupt {what}")))?,
    ))
}

pub(super) const VALIDATION_COLUMNS: &str = "sid, client_secret_hash, medium, address, token_hash, send_attempt, validated_ts, created_ts, expires_ts, next_link, failed_attempts";

pub(super) fn validation(r: &Row) -> StoreResult<ThreepidValidation> {
    let medium: String = r.try_get(2).map_err(backend)?;
    Ok(ThreepidValidation {
        sid: r.try_get(0).map_err(backend)?,
        client_secret: ClientSecretHash(hash(
            r.try_get(1).map_err(backend)?,
            "client_secret_hash",
        )?),
        threepid: Threepid {
            medium: Medium::parse(&medium).ok_or_else(|| backend("corrupt medium"))?,
            address: r.try_get(3).map_err(backend)?,
        },
        token_hash: hash(r.try_get(4).map_err(backend)?, "token_hash")?,
        send_attempt: from_ts(r.try_get(5).map_err(backend)?),
        validated_at: from_ots(r.try_get(6).map_err(backend)?),
        created_at: from_ts(r.try_get(7).map_err(backend)?),
        expires_at: from_ts(r.try_get(8).map_err(backend)?),
        next_link: r.try_get(9).map_err(backend)?,
        failed_attempts: count(r.try_get(10).map_err(backend)?),
    })
}

pub(super) const SYNC_COLUMNS: &str =
    "localpart, version, erase, reactivate, attempts, next_attempt_ts, deleted_devices";

pub(super) fn sync(r: &Row) -> StoreResult<HomeserverSync> {
    Ok(HomeserverSync {
        localpart: r.try_get(0).map_err(backend)?,
        version: from_ts(r.try_get(1).map_err(backend)?),
        erase: r.try_get(2).map_err(backend)?,
        reactivate: r.try_get(3).map_err(backend)?,
        attempts: count(r.try_get(4).map_err(backend)?),
        next_attempt_at: from_ts(r.try_get(5).map_err(backend)?),
        deleted_devices: serde_json::from_str(&r.try_get::<_, String>(6).map_err(backend)?)
            .unwrap_or_default(),
    })
}
