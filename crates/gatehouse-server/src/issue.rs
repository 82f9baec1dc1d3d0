//! Minting token pairs for a session: the one place that decides lifetimes.

use gatehouse_core::token::{self, TokenKind};
use gatehouse_store::NewTokenPair;
use zeroize::Zeroizing;

use crate::state::AppState;

/// Freshly minted tokens: the secrets for the client, hashes for the store.
pub struct Minted {
    pub access_token: Zeroizing<String>,
    pub refresh_token: Option<Zeroizing<String>>,
    /// Present when the access token expires.
    pub expires_in_ms: Option<u64>,
    pub pair: NewTokenPair,
}

/// Mints an access token, and a refresh token when `refreshable`. Only
/// refreshable access tokens expire: a client that cannot refresh would
/// otherwise be logged out for good.
pub fn mint(state: &AppState, refreshable: bool) -> Minted {
    let now = state.clock.now_ms();
    let tokens = &state.config.tokens;
    let access_token = token::generate(TokenKind::Access);
    let refresh_token = refreshable.then(|| token::generate(TokenKind::Refresh));
    let expires_in_ms = refreshable.then_some(tokens.access_token_lifetime_ms);
    let pair = NewTokenPair {
        access: token::hash(&access_token),
        access_expires_at: expires_in_ms.map(|ms| now.saturating_add(ms)),
        refresh: refresh_token.as_deref().map(|t| token::hash(t)),
        refresh_expires_at: refresh_token
            .as_ref()
            .and(tokens.refresh_token_lifetime_ms)
            .map(|ms| now.saturating_add(ms)),
    };
    Minted {
        access_token,
        refresh_token,
        expires_in_ms,
        pair,
    }
}
