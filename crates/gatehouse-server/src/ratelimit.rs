//! Keyed leaky-bucket rate limits, like Synapse's `rc_*` settings.
//!
//! Written here rather than taken from `governor` because some limits count
//! only an outcome (a failed login, a created account, a sent message) that
//! is known after the work: such an action is *reserved* before the work,
//! atomically with the check, and refunded if the outcome does not count.
//! Looking first and counting after would let parallel requests all pass
//! the look; governor only offers check-and-consume, with no refund.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gatehouse_core::Clock;

use crate::config::Rate;

/// The key a client address is limited under: an IPv6 address by its /64
/// (one subscriber usually holds a whole /64, so per-address keys would be
/// free to multiply), an IPv4-mapped IPv6 address as the IPv4 address.
pub(crate) fn address_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.into(),
            None => std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1)).into(),
        },
        v4 => v4,
    }
}

/// Buckets per client address. The key is normalised here
/// ([`address_key`]), so that no call site can forget to.
pub struct AddressLimiter(RateLimiter<std::net::IpAddr>);

impl AddressLimiter {
    pub fn new(rate: Rate, clock: Arc<dyn Clock>) -> Self {
        Self(RateLimiter::new(rate, clock))
    }

    /// [`RateLimiter::check`] for `ip`'s key.
    pub fn check(&self, ip: std::net::IpAddr) -> Result<(), RetryAfterMs> {
        self.0.check(&address_key(ip))
    }

    /// [`RateLimiter::reserve`] for `ip`'s key.
    pub fn reserve(
        &self,
        ip: std::net::IpAddr,
    ) -> Result<Reservation<'_, std::net::IpAddr>, RetryAfterMs> {
        self.0.reserve(address_key(ip))
    }
}

/// A set of buckets, one per key (an IP address, an account), on the
/// injected clock's monotonic time.
pub struct RateLimiter<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, Bucket>>,
    clock: Arc<dyn Clock>,
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Actions counted and not yet leaked away.
    level: f64,
    at: Instant,
}

/// How long to wait before the next action is allowed, in milliseconds.
pub type RetryAfterMs = u64;

/// Past this many keys, buckets that have fully drained are dropped.
const PRUNE_AT: usize = 10_000;

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    pub fn new(rate: Rate, clock: Arc<dyn Clock>) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// Counts one action now if allowed (see [`Self::check_at`]).
    pub fn check(&self, key: &K) -> Result<(), RetryAfterMs> {
        self.check_at(key, self.clock.monotonic())
    }

    /// Reserves one action now (see [`Self::reserve_at`]).
    pub fn reserve(&self, key: K) -> Result<Reservation<'_, K>, RetryAfterMs> {
        self.reserve_at(key, self.clock.monotonic())
    }

    fn level(&self, bucket: Option<&Bucket>, now: Instant) -> f64 {
        bucket.map_or(0.0, |b| {
            let leaked = now.saturating_duration_since(b.at).as_secs_f64() * self.rate.per_second;
            (b.level - leaked).max(0.0)
        })
    }

    fn wait_ms(&self, level: f64) -> RetryAfterMs {
        let excess = level + 1.0 - f64::from(self.rate.burst_count);
        // Rounded up so that retrying after exactly this long succeeds.
        ((excess / self.rate.per_second) * 1000.0).ceil().max(1.0) as u64
    }

    /// Counts one action if allowed, as [`Self::check`] does, but only
    /// provisionally: dropping the [`Reservation`] gives it back, and
    /// [`Reservation::keep`] makes it count. Parallel requests each hold
    /// their own reservation, so no more than the burst can be in flight.
    pub fn reserve_at(&self, key: K, now: Instant) -> Result<Reservation<'_, K>, RetryAfterMs> {
        self.check_at(&key, now)?;
        Ok(Reservation {
            limiter: self,
            key: Some(key),
        })
    }

    /// Gives back one action counted by [`Self::reserve`].
    fn refund(&self, key: &K, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let level = self.level(buckets.get(key), now);
        self.store(&mut buckets, key, (level - 1.0).max(0.0), now);
    }

    /// Counts one action if allowed; refuses (without counting) otherwise.
    pub fn check_at(&self, key: &K, now: Instant) -> Result<(), RetryAfterMs> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let level = self.level(buckets.get(key), now);
        if level + 1.0 > f64::from(self.rate.burst_count) {
            return Err(self.wait_ms(level));
        }
        self.store(&mut buckets, key, level + 1.0, now);
        Ok(())
    }

    fn store(&self, buckets: &mut HashMap<K, Bucket>, key: &K, level: f64, now: Instant) {
        if buckets.len() >= PRUNE_AT {
            let per_second = self.rate.per_second;
            buckets.retain(|_, b| {
                b.level - now.saturating_duration_since(b.at).as_secs_f64() * per_second > 0.0
            });
        }
        buckets.insert(key.clone(), Bucket { level, at: now });
    }
}

/// An action counted ahead of the outcome that decides whether it counts.
/// Dropped (on any early return too), it is given back.
#[must_use = "dropping a reservation gives the action back at once"]
pub struct Reservation<'a, K: Eq + Hash + Clone> {
    limiter: &'a RateLimiter<K>,
    key: Option<K>,
}

impl<K: Eq + Hash + Clone> Reservation<'_, K> {
    /// The outcome counts: the action stays counted.
    pub fn keep(mut self) {
        self.key = None;
    }
}

impl<K: Eq + Hash + Clone> Drop for Reservation<'_, K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.limiter.refund(&key, self.limiter.clock.monotonic());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_their_64() {
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(other));
        let mapped: std::net::IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(
            address_key(mapped),
            "10.1.2.3".parse::<std::net::IpAddr>().unwrap()
        );
        let v4: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(address_key(v4), v4);
    }

    #[test]
    fn burst_then_refill() {
        let clock = Arc::new(gatehouse_core::clock::ManualClock::new(0));
        let l = RateLimiter::new(
            Rate {
                per_second: 2.0,
                burst_count: 3,
            },
            clock.clone(),
        );
        for _ in 0..3 {
            assert!(l.check(&"ip").is_ok());
        }
        let wait = l.check(&"ip").unwrap_err();
        assert_eq!(wait, 500);
        assert!(l.check(&"other").is_ok(), "keys are independent");
        clock.advance(499);
        assert!(l.check(&"ip").is_err());
        clock.advance(1);
        assert!(l.check(&"ip").is_ok());
    }

    #[test]
    fn reservations_count_while_held_and_only_kept_ones_stay() {
        let l = RateLimiter::new(
            Rate {
                per_second: 0.001,
                burst_count: 2,
            },
            Arc::new(gatehouse_core::clock::ManualClock::new(0)),
        );
        let a = l.reserve(1).unwrap();
        let b = l.reserve(1).unwrap();
        // Two in flight: a third is refused although neither has counted yet.
        assert!(l.reserve(1).is_err());
        drop(a);
        let c = l.reserve(1).unwrap();
        b.keep();
        c.keep();
        assert!(l.reserve(1).is_err(), "kept reservations stay counted");
        assert!(l.reserve(2).is_ok(), "keys are independent");
    }
}
