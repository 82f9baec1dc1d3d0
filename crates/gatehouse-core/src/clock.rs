//! Time as a value that can be injected, so expiry rules and rate limits
//! are testable without sleeping. This is the one place that reads the
//! system's clocks (`clippy.toml` forbids it elsewhere; `tokio::time`,
//! which tests can pause, is the other allowed source, for timers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, the unit the Matrix spec uses
/// (`expires_in_ms`, `retry_after_ms`, `last_seen_ts`).
pub type Timestamp = u64;

/// A source of "now".
pub trait Clock: Send + Sync + 'static {
    /// Wall time: what tokens' expiry and the spec's timestamps use.
    fn now_ms(&self) -> Timestamp;
    /// Monotonic time: what rate limits measure intervals with (the wall
    /// clock may jump).
    fn monotonic(&self) -> Instant;
}

/// The system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one reading of the wall clock
    fn now_ms(&self) -> Timestamp {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    #[allow(clippy::disallowed_methods)] // the one reading of the monotonic clock
    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to; for tests. Its monotonic time
/// moves with it, from the moment it was made.
#[derive(Debug)]
pub struct ManualClock {
    start: Timestamp,
    now: AtomicU64,
    origin: Instant,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new(0)
    }
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self {
            start,
            now: AtomicU64::new(start),
            origin: SystemClock.monotonic(),
        }
    }
    pub fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Timestamp {
        self.now.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Instant {
        self.origin + Duration::from_millis(self.now_ms().saturating_sub(self.start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_both_times_together() {
        let clock = ManualClock::new(1_000);
        let (wall, mono) = (clock.now_ms(), clock.monotonic());
        clock.advance(250);
        assert_eq!(clock.now_ms(), wall + 250);
        assert_eq!(clock.monotonic() - mono, Duration::from_millis(250));
    }
}
