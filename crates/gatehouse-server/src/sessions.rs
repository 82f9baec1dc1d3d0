//! Access-token authentication, with a short-lived in-memory cache.
//!
//! The cache holds validated tokens for `tokens.cache_ttl_ms`. Revocations
//! made through this instance evict at once; revocations made through
//! another instance sharing a PostgreSQL database evict when its
//! notification arrives (`Store::watch_revocations`), and within the TTL
//! at worst (a notification lost with the listening connection). Tokens
//! whose rotation is still pending are never cached, so the first use that
//! retires a parent refresh token always reaches the store.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use gatehouse_core::token::{self, TokenHash, TokenKind};
use gatehouse_core::user_id::UserId;
use gatehouse_core::{Clock, Timestamp};
use gatehouse_store::Store;

use crate::error::{ApiError, ApiResult};
use crate::extract::Requester;

/// A device's last-seen time is refreshed at most this often.
const LAST_SEEN_RESOLUTION_MS: u64 = 60_000;

/// Past this many entries the cache is emptied rather than grown.
const MAX_ENTRIES: usize = 100_000;

struct Cached {
    requester: Requester,
    expires_at: Option<Timestamp>,
    /// When it was cached, by the injected clock (one clock read per request).
    cached_at: Timestamp,
}

/// Whether an expired (but not revoked) access token is good enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Everywhere: `401 M_UNKNOWN_TOKEN, soft_logout: true`.
    Refuse,
    /// Only to log out: a soft-logged-out client without a working refresh
    /// token can still delete its device (as Synapse allows).
    Accept,
}

/// A token Synapse issued, brought over by `gatehouse import synapse
/// --tokens` (only its hash was stored): `syt_`, then its own checksum-less
/// body. Such tokens skip the format check and are looked up like any other.
fn is_imported(token: &str) -> bool {
    token.len() <= 255
        && token.starts_with("syt_")
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Validates access tokens for every authenticated endpoint.
pub struct Sessions {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ttl_ms: u64,
    cache: RwLock<HashMap<TokenHash, Cached>>,
    /// Bumped by every invalidation. A lookup that saw the store before an
    /// invalidation (a logout racing it) must not cache what it read.
    generation: std::sync::atomic::AtomicU64,
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        Self {
            store,
            clock,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            cache: RwLock::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The owner of `token`, or the precise reason it is refused:
    /// malformed/unknown/revoked → `soft_logout: false`; expired → `true`.
    pub async fn authenticate(
        &self,
        token: &str,
        ip: std::net::IpAddr,
        expired: Expired,
    ) -> ApiResult<Requester> {
        self.authenticate_with_expiry(token, ip, expired)
            .await
            .map(|(requester, _)| requester)
    }

    /// [`Self::authenticate`], with when the token expires. An unspecified
    /// `ip` (a homeserver introspecting for its client) is not recorded as
    /// where the device was last seen.
    pub async fn authenticate_with_expiry(
        &self,
        token: &str,
        ip: std::net::IpAddr,
        expired: Expired,
    ) -> ApiResult<(Requester, Option<Timestamp>)> {
        if token::check(token, TokenKind::Access).is_err() && !is_imported(token) {
            return Err(ApiError::unknown_token(false, "Unrecognised access token"));
        }
        let hash = token::hash(token);
        let now = self.clock.now_ms();
        if let Some((mut hit, expires_at)) = self.cached(&hash, now, expired)? {
            // The cached owner, but this request's address.
            hit.ip = ip;
            return Ok((hit, expires_at));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let record = self
            .store
            .access_token(&hash)
            .await?
            .ok_or_else(|| ApiError::unknown_token(false, "Unrecognised access token"))?;
        if expired == Expired::Refuse && record.expires_at.is_some_and(|at| at <= now) {
            return Err(ApiError::unknown_token(true, "Access token has expired"));
        }
        let requester = Requester {
            user_id: record.user_id,
            device_id: record.device_id,
            is_guest: record.is_guest,
            is_admin: record.is_admin,
            is_locked: record.locked,
            is_suspended: record.suspended,
            ip,
            appservice: None,
        };
        // Last seen: written on cache misses only, and only when stale or
        // from a new address — never on every request.
        let seen_from = ip;
        let ip = ip.to_string();
        if !seen_from.is_unspecified()
            && (record
                .last_seen_at
                .is_none_or(|t| now.saturating_sub(t) > LAST_SEEN_RESOLUTION_MS)
                || record.last_seen_ip.as_deref() != Some(ip.as_str()))
        {
            let (store, user, device) = (
                self.store.clone(),
                requester.user_id.clone(),
                requester.device_id.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = store.touch_device(&user, &device, &ip, now).await {
                    tracing::warn!(error = %e, "could not record device last-seen");
                }
            });
        }
        if let (Some(parent), Some(issued_with)) = (record.pending_parent, record.refresh_id) {
            self.store.complete_rotation(parent, issued_with).await?;
            self.invalidate_device(&requester.user_id, &requester.device_id);
        }
        self.remember(hash, &requester, record.expires_at, now, generation);
        Ok((requester, record.expires_at))
    }

    fn cached(
        &self,
        hash: &TokenHash,
        now: Timestamp,
        expired: Expired,
    ) -> ApiResult<Option<(Requester, Option<Timestamp>)>> {
        if self.ttl_ms == 0 {
            return Ok(None);
        }
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = cache.get(hash) else {
            return Ok(None);
        };
        if now.saturating_sub(entry.cached_at) > self.ttl_ms {
            return Ok(None);
        }
        if expired == Expired::Refuse && entry.expires_at.is_some_and(|at| at <= now) {
            return Err(ApiError::unknown_token(true, "Access token has expired"));
        }
        Ok(Some((entry.requester.clone(), entry.expires_at)))
    }

    fn remember(
        &self,
        hash: TokenHash,
        requester: &Requester,
        expires_at: Option<Timestamp>,
        now: Timestamp,
        seen_generation: u64,
    ) {
        if self.ttl_ms == 0 {
            return;
        }
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock that invalidations also take: either the
        // invalidation came first (skip), or it will remove this entry.
        if self.generation.load(Ordering::Acquire) != seen_generation {
            return;
        }
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(
            hash,
            Cached {
                requester: requester.clone(),
                expires_at,
                cached_at: now,
            },
        );
    }

    /// Forgets cached tokens of one device (after logout, re-login, rotation).
    pub fn invalidate_device(&self, user_id: &UserId, device_id: &str) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        cache.retain(|_, c| {
            !(c.requester.user_id == *user_id && c.requester.device_id == device_id)
        });
    }

    /// Forgets every cached token.
    pub fn invalidate_all(&self) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        cache.clear();
    }

    /// Applies a change another instance made ([`Store::watch_revocations`]).
    pub fn revoked(&self, revoked: &gatehouse_store::Revoked) {
        match revoked {
            gatehouse_store::Revoked::User(user) => self.invalidate_user(user),
            gatehouse_store::Revoked::Everything => self.invalidate_all(),
        }
    }

    /// Forgets cached tokens of every device of a user.
    pub fn invalidate_user(&self, user_id: &UserId) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        cache.retain(|_, c| c.requester.user_id != *user_id);
    }
}
