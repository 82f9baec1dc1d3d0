//! `[rate_limits]`: the leaky buckets, with Synapse's `rc_*` defaults where
//! Synapse has one.

use serde::{Deserialize, Serialize};

/// A leaky bucket: `burst_count` actions at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: f64,
    pub burst_count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Login attempts per client IP address.
    pub login_per_address: Rate,
    /// Login attempts per account.
    pub login_per_account: Rate,
    /// Failed login attempts per account.
    pub failed_logins_per_account: Rate,
    /// Accounts registered per client IP address (only successful
    /// registrations count; UIA round trips do not).
    pub registration_per_address: Rate,
    /// `requestToken` calls per client IP address, and messages sent per
    /// email address or number (repeats and refusals send nothing).
    pub threepid_validation: Rate,
    /// Registration tokens tried per client IP address: validity checks
    /// and `m.login.registration_token` stages alike, so tokens cannot be
    /// guessed.
    pub registration_token_checks: Rate,
    /// Login tokens issued per account (`POST /login/get_token`, which the
    /// spec asks to limit more strictly than usual).
    pub login_tokens_per_account: Rate,
    /// User-interactive auth sessions opened per client IP address without
    /// an access token (registration, password reset): each costs a stored
    /// row until it expires, so this bounds the rows one address can keep
    /// alive to `burst_count + per_second × uia.session_lifetime_ms`.
    pub uia_sessions_per_address: Rate,
    /// Username checks per client IP address: `GET /register/available` and
    /// registrations naming a username. Without it, one address could test
    /// tens of thousands of names a second for existing accounts.
    pub username_checks_per_address: Rate,
    /// Refresh attempts per client IP address (`POST /refresh` and the
    /// legacy `/tokenrefresh`), counted whether the token is good or not.
    pub refreshes_per_address: Rate,
}

/// Synapse's `rc_login` and `rc_registration` defaults.
const SYNAPSE_RC_LOGIN: Rate = Rate {
    per_second: 0.17,
    burst_count: 3,
};

/// Synapse's `rc_registration_token_validity` default.
const SYNAPSE_RC_REGISTRATION_TOKEN_VALIDITY: Rate = Rate {
    per_second: 0.1,
    burst_count: 5,
};

/// Synapse's `rc_3pid_validation` default: five, then one every ~5 minutes.
const SYNAPSE_RC_3PID_VALIDATION: Rate = Rate {
    per_second: 0.003,
    burst_count: 5,
};

/// UIA sessions opened without an access token, per client address: 20 at
/// once, then one every 2 s. Looser than `rc_registration` (0.17/s, burst 3),
/// which counts created accounts: a session is opened by every request
/// without `auth.session` — a client asking for the flows (Element Web asks
/// with an empty body first), a client starting over after an error — and
/// many people may share one address (NAT). Tight enough for storage: with
/// the default 15-minute `uia.session_lifetime_ms`, and expired sessions
/// swept whenever one is created, one address keeps at most
/// 20 + 0.5 × 900 = 470 sessions (~90 KB at ~190 bytes a row) alive.
const UIA_SESSIONS_PER_ADDRESS: Rate = Rate {
    per_second: 0.5,
    burst_count: 20,
};

/// Username checks per client address: 10 at once, then one a second —
/// enough for a person typing names into a registration form (clients
/// check as the typing pauses), far too few to list a server's accounts.
const USERNAME_CHECKS_PER_ADDRESS: Rate = Rate {
    per_second: 1.0,
    burst_count: 10,
};

/// Refreshes per client address: 50 at once, then 5 a second. A client
/// refreshes once per access-token lifetime (minutes), so this leaves room
/// for hundreds of people behind one address, while one account can no
/// longer mint thousands of children a second from a refresh token
/// (the store keeps at most a few per token anyway) or try tokens fast.
const REFRESHES_PER_ADDRESS: Rate = Rate {
    per_second: 5.0,
    burst_count: 50,
};

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            login_per_address: SYNAPSE_RC_LOGIN,
            login_per_account: SYNAPSE_RC_LOGIN,
            failed_logins_per_account: SYNAPSE_RC_LOGIN,
            registration_per_address: SYNAPSE_RC_LOGIN,
            threepid_validation: SYNAPSE_RC_3PID_VALIDATION,
            registration_token_checks: SYNAPSE_RC_REGISTRATION_TOKEN_VALIDITY,
            // The spec's example: "a maximum of 1 request per minute".
            login_tokens_per_account: Rate {
                per_second: 1.0 / 60.0,
                burst_count: 1,
            },
            uia_sessions_per_address: UIA_SESSIONS_PER_ADDRESS,
            username_checks_per_address: USERNAME_CHECKS_PER_ADDRESS,
            refreshes_per_address: REFRESHES_PER_ADDRESS,
        }
    }
}
