//! Row mappers and the column lists they read.

use gatehouse_core::identifier::{Medium, Threepid};
use gatehouse_core::token::TokenHash;
use gatehouse_core::user_id::UserId;

use super::from_ts;
use crate::{ClientSecretHash, DeviceRecord, RegistrationToken, ThreepidValidation, UserRecord};

pub(super) fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        user_id: UserId::from_trusted(r.get(0)?),
        password_hash: r.get(1)?,
        is_admin: r.get(2)?,
        is_guest: r.get(3)?,
        deactivated: r.get(4)?,
        created_at: from_ts(r.get(5)?).unwrap_or(0),
        locked: r.get(6)?,
        suspended: r.get(7)?,
    })
}

pub(super) const USER_COLUMNS: &str = "u.user_id, u.password_hash, u.is_admin, u.is_guest, u.deactivated, u.created_ts, u.locked, u.suspended";

pub(super) fn device_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRecord> {
    Ok(DeviceRecord {
        device_id: r.get(0)?,
        display_name: r.get(1)?,
        last_seen_ip: r.get(2)?,
        last_seen_at: from_ts(r.get(3)?),
    })
}

pub(super) fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RegistrationToken> {
    Ok(RegistrationToken {
        token: r.get(0)?,
        uses_allowed: r.get(1)?,
        pending: r.get(2)?,
        completed: r.get(3)?,
        expiry: from_ts(r.get(4)?),
    })
}

pub(super) const VALIDATION_COLUMNS: &str = "sid, client_secret_hash, medium, address, token_hash, send_attempt, validated_ts, created_ts, expires_ts, next_link, failed_attempts";

pub(super) fn validation_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ThreepidValidation> {
    let medium: String = r.get(2)?;
    let secret_hash: Vec<u8> = r.get(1)?;
    let hash: Vec<u8> = r.get(4)?;
    let bad = |what: &str| rusqlite::Error::InvalidColumnName(what.to_owned());
    Ok(ThreepidValidation {
        sid: r.get(0)?,
        client_secret: ClientSecretHash(TokenHash(
            secret_hash
                .try_into()
                .map_err(|_| bad("client_secret_hash"))?,
        )),
        threepid: Threepid {
            medium: Medium::parse(&medium).ok_or_else(|| bad("medium"))?,
            address: r.get(3)?,
        },
        token_hash: TokenHash(hash.try_into().map_err(|_| bad("token_hash"))?),
        send_attempt: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
        validated_at: from_ts(r.get(6)?),
        created_at: from_ts(r.get(7)?).unwrap_or(0),
        expires_at: from_ts(r.get(8)?).unwrap_or(0),
        next_link: r.get(9)?,
        failed_attempts: r.get(10)?,
    })
}
