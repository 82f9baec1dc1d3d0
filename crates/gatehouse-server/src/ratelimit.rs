//! Keyed leaky-bucket rate limits, like Synapse's `rc_*` settings.
//!
//! Written here rather than taken from `governor` because failed-login
//! limits need to *look* before the password check and *record* only after
//! it fails; governor only offers check-and-consume.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::Rate;

/// The key a client address is limited under: an IPv6 address by its /64
/// (one subscriber usually holds a whole /64, so per-address keys would be
/// free to multiply), an IPv4-mapped IPv6 address as the IPv4 address.
fn address_key(ip: std::net::IpAddr) -> std::net::IpAddr {
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
    pub fn new(rate: Rate) -> Self {
        Self(RateLimiter::new(rate))
    }

    /// [`RateLimiter::check`], now, for `ip`'s key.
    pub fn check(&self, ip: std::net::IpAddr) -> Result<(), RetryAfterMs> {
        self.0.check(&address_key(ip), Instant::now())
    }

    /// [`RateLimiter::peek`], now, for `ip`'s key.
    pub fn peek(&self, ip: std::net::IpAddr) -> Result<(), RetryAfterMs> {
        self.0.peek(&address_key(ip), Instant::now())
    }

    /// [`RateLimiter::record`], now, for `ip`'s key.
    pub fn record(&self, ip: std::net::IpAddr) {
        self.0.record(&address_key(ip), Instant::now());
    }
}

/// A set of buckets, one per key (an IP address, an account).
pub struct RateLimiter<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, Bucket>>,
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
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
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

    /// Whether one more action is allowed now, without counting it.
    pub fn peek(&self, key: &K, now: Instant) -> Result<(), RetryAfterMs> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let level = self.level(buckets.get(key), now);
        if level + 1.0 <= f64::from(self.rate.burst_count) {
            Ok(())
        } else {
            Err(self.wait_ms(level))
        }
    }

    /// Counts one action if allowed; refuses (without counting) otherwise.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), RetryAfterMs> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let level = self.level(buckets.get(key), now);
        if level + 1.0 > f64::from(self.rate.burst_count) {
            return Err(self.wait_ms(level));
        }
        self.store(&mut buckets, key, level + 1.0, now);
        Ok(())
    }

    /// Counts one action unconditionally (a failure that already happened).
    pub fn record(&self, key: &K, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let level = self.level(buckets.get(key), now);
        self.store(&mut buckets, key, level + 1.0, now);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        let l = RateLimiter::new(Rate {
            per_second: 2.0,
            burst_count: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check(&"ip", t0).is_ok());
        }
        let wait = l.check(&"ip", t0).unwrap_err();
        assert_eq!(wait, 500);
        assert!(l.check(&"other", t0).is_ok(), "keys are independent");
        assert!(l.check(&"ip", t0 + Duration::from_millis(499)).is_err());
        assert!(l.check(&"ip", t0 + Duration::from_millis(500)).is_ok());
    }

    #[test]
    fn peek_does_not_count_and_record_always_does() {
        let l = RateLimiter::new(Rate {
            per_second: 1.0,
            burst_count: 2,
        });
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.peek(&1, t0).is_ok());
        }
        l.record(&1, t0);
        l.record(&1, t0);
        assert_eq!(l.peek(&1, t0), Err(1000));
        l.record(&1, t0);
        assert_eq!(l.peek(&1, t0), Err(2000));
    }
}
