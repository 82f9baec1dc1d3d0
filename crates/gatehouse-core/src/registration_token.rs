//! The uses of a registration token (`m.login.registration_token`): the
//! spec's rule, applied to a token's counts as loaded, so that every
//! storage engine keeps it the same way (decision 0014).
//!
//! A use is *pending* from the moment a UIA stage accepts the token until
//! the registration it authorised completes (then it is *completed*) or
//! its session ends without one (then it is given back). Pending uses
//! count against `allowed`, so parallel registrations cannot overspend it.

use crate::Timestamp;

/// A token's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uses {
    /// How many registrations it may authorise; `None`: unlimited.
    pub allowed: Option<u32>,
    pub pending: u32,
    pub completed: u32,
    /// When it stops being valid; `None`: never.
    pub expiry: Option<Timestamp>,
}

/// Why a token cannot be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Expired,
    UsedUp,
    /// A completion or release with no pending use to account for.
    NothingPending,
}

impl Uses {
    /// Whether one more registration may use it at `now`.
    pub fn check(&self, now: Timestamp) -> Result<(), Refusal> {
        if self.expiry.is_some_and(|e| e <= now) {
            return Err(Refusal::Expired);
        }
        if self
            .allowed
            .is_some_and(|allowed| self.pending.saturating_add(self.completed) >= allowed)
        {
            return Err(Refusal::UsedUp);
        }
        Ok(())
    }

    /// One more pending use (a UIA stage accepted the token).
    pub fn reserve(self, now: Timestamp) -> Result<Self, Refusal> {
        self.check(now)?;
        Ok(Self {
            pending: self.pending + 1,
            ..self
        })
    }

    /// A pending use given back (its session ended without registering).
    pub fn release(self) -> Result<Self, Refusal> {
        let pending = self.pending.checked_sub(1).ok_or(Refusal::NothingPending)?;
        Ok(Self { pending, ..self })
    }

    /// A pending use completed (its registration was stored). Allowed even
    /// past expiry: the use was granted while the token was valid.
    pub fn complete(self) -> Result<Self, Refusal> {
        let released = self.release()?;
        Ok(Self {
            completed: released.completed + 1,
            ..released
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uses(allowed: Option<u32>, pending: u32, completed: u32, expiry: Option<u64>) -> Uses {
        Uses {
            allowed,
            pending,
            completed,
            expiry,
        }
    }

    #[test]
    fn pending_uses_count_against_the_allowance() {
        let one = uses(Some(1), 0, 0, None);
        let reserved = one.reserve(10).unwrap();
        assert_eq!(reserved.pending, 1);
        assert_eq!(
            reserved.reserve(10),
            Err(Refusal::UsedUp),
            "in flight counts"
        );
        let done = reserved.complete().unwrap();
        assert_eq!((done.pending, done.completed), (0, 1));
        assert_eq!(done.reserve(10), Err(Refusal::UsedUp));
        let back = reserved.release().unwrap();
        assert_eq!(
            back.reserve(10).map(|u| u.pending),
            Ok(1),
            "a released use is free again"
        );
    }

    #[test]
    fn expiry_and_unlimited_tokens() {
        assert_eq!(
            uses(None, 0, 0, Some(100)).reserve(100),
            Err(Refusal::Expired)
        );
        assert!(uses(None, 0, 0, Some(100)).reserve(99).is_ok());
        assert!(
            uses(None, 1_000, 1_000_000, None).reserve(0).is_ok(),
            "unlimited"
        );
        // Completing after expiry: the use was granted before it.
        assert!(uses(None, 1, 0, Some(5)).complete().is_ok());
    }

    #[test]
    fn nothing_pending_cannot_be_released_or_completed() {
        assert_eq!(
            uses(None, 0, 3, None).release(),
            Err(Refusal::NothingPending)
        );
        assert_eq!(
            uses(None, 0, 3, None).complete(),
            Err(Refusal::NothingPending)
        );
    }
}
