//! The one source of randomness: the operating system's CSPRNG. Tokens,
//! salts and identifiers all draw from here (`clippy.toml` forbids
//! `OsRng` elsewhere), so there is one place to audit.

use rand::TryRngCore;

/// Fills `buf` with random bytes.
#[allow(clippy::disallowed_types)] // the one use of the OS's random source
pub fn fill(buf: &mut [u8]) {
    rand::rngs::OsRng
        .try_fill_bytes(buf)
        .expect("the operating system's random source failed");
}
