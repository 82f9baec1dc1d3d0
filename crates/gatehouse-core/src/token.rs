//! Opaque tokens: how they are minted, recognised and stored.
//!
//! Format: `<prefix><30 base62 random chars>_<6 base62 chars of CRC-32>`, e.g.
//! `ghat_3kT…Qz_1a2B3c`. The prefix makes a leaked token recognisable (secret
//! scanners can match it) and tells which kind it is; the checksum lets the
//! server reject a mistyped or truncated token before any database work. The
//! 30 random characters carry ~178 bits from the OS RNG. Only the SHA-256 of
//! a token is ever stored.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const RANDOM_LEN: usize = 30;
const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Sent as `Authorization: Bearer` on every request.
    Access,
    /// Exchanged at `/refresh` (or the legacy `/tokenrefresh`).
    Refresh,
    /// Short-lived, single-use, for `m.login.token` (`/login/get_token`).
    Login,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Access => "ghat_",
            Self::Refresh => "ghrt_",
            Self::Login => "ghlt_",
        }
    }
}

/// Why a string is not a well-formed token of the expected kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    #[error("token has the wrong prefix")]
    WrongPrefix,
    #[error("token has the wrong length or characters")]
    Malformed,
    #[error("token checksum does not match")]
    BadChecksum,
}

/// The stored form of a token: its SHA-256. A database leak yields no usable token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Enough to correlate in a debugger, useless to an attacker.
        write!(
            f,
            "TokenHash({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// Mints a new token of `kind` from the OS RNG.
///
/// # Panics
/// Only if the operating system cannot provide randomness, in which case no
/// token can be issued safely at all.
pub fn generate(kind: TokenKind) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(
        kind.prefix().len() + RANDOM_LEN + 1 + CHECKSUM_LEN,
    ));
    out.push_str(kind.prefix());
    let mut bytes = Zeroizing::new([0u8; RANDOM_LEN]);
    fill_uniform_base62(&mut bytes[..]);
    out.extend(bytes.iter().map(|&b| BASE62[b as usize] as char));
    out.push('_');
    push_checksum(&mut out);
    out
}

/// Fills `out` with indices in 0..62, uniformly (rejection sampling, no modulo bias).
fn fill_uniform_base62(out: &mut [u8]) {
    let mut i = 0;
    let mut buf = [0u8; 64];
    while i < out.len() {
        crate::random::fill(&mut buf);
        for &b in &buf {
            // 248 = 4 * 62: bytes below it map evenly onto 0..62.
            if b < 248 && i < out.len() {
                out[i] = b % 62;
                i += 1;
            }
        }
    }
}

/// The checksum digits of everything before the final `_`.
fn checksum(body: &str) -> [u8; CHECKSUM_LEN] {
    let mut crc = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    digits
}

fn push_checksum(token: &mut String) {
    let digits = checksum(&token[..token.len() - 1]);
    token.extend(digits.iter().map(|&b| b as char));
}

/// Checks a presented token's shape and checksum, without any I/O.
pub fn check(token: &str, kind: TokenKind) -> Result<(), TokenFormatError> {
    let rest = token
        .strip_prefix(kind.prefix())
        .ok_or(TokenFormatError::WrongPrefix)?;
    if rest.len() != RANDOM_LEN + 1 + CHECKSUM_LEN
        || rest.as_bytes()[RANDOM_LEN] != b'_'
        || !rest[..RANDOM_LEN]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
    {
        return Err(TokenFormatError::Malformed);
    }
    // Checked on every request: no allocation.
    let body = &token[..token.len() - CHECKSUM_LEN - 1];
    if checksum(body)[..] == token.as_bytes()[token.len() - CHECKSUM_LEN..] {
        Ok(())
    } else {
        Err(TokenFormatError::BadChecksum)
    }
}

/// The hash under which a token is stored and looked up.
pub fn hash(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

/// A device ID for a login that did not name one: ten upper-case letters,
/// the shape Synapse uses, so clients that display it see something familiar.
pub fn generate_device_id() -> String {
    random_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 10)
}

/// `len` characters of `[0-9A-Za-z]` from the OS RNG: the one source of
/// random identifiers that are not tokens (UIA session IDs, 3PID `sid`s,
/// generated localparts, nonces). About 5.95 bits a character.
pub fn random_alphanumeric(len: usize) -> String {
    random_from(BASE62, len)
}

/// `len` decimal digits from the OS RNG (SMS validation codes).
pub fn random_digits(len: usize) -> String {
    random_from(b"0123456789", len)
}

/// `len` characters drawn uniformly from `alphabet` (at most 256 long):
/// rejection sampling, so no character is likelier than another.
fn random_from(alphabet: &[u8], len: usize) -> String {
    let n = alphabet.len();
    assert!((1..=256).contains(&n), "an alphabet of 1 to 256 characters");
    // The largest multiple of n that fits a byte: bytes below it map evenly.
    let limit = 256 - 256 % n;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        crate::random::fill(&mut buf);
        for &b in &buf {
            if usize::from(b) < limit && out.len() < len {
                out.push(char::from(alphabet[usize::from(b) % n]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_tokens_check_out() {
        for kind in [TokenKind::Access, TokenKind::Refresh, TokenKind::Login] {
            let t = generate(kind);
            assert!(t.starts_with(kind.prefix()));
            assert_eq!(t.len(), kind.prefix().len() + 37);
            assert_eq!(check(&t, kind), Ok(()));
        }
    }

    #[test]
    fn kinds_are_not_interchangeable() {
        let t = generate(TokenKind::Access);
        assert_eq!(
            check(&t, TokenKind::Refresh),
            Err(TokenFormatError::WrongPrefix)
        );
    }

    #[test]
    fn tokens_are_distinct() {
        let a = generate(TokenKind::Access);
        let b = generate(TokenKind::Access);
        assert_ne!(*a, *b);
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn random_identifiers_have_their_length_and_alphabet() {
        for len in [0, 1, 16, 24, 32, 64, 100] {
            let id = random_alphanumeric(len);
            assert_eq!(id.len(), len);
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        }
        let code = random_digits(6);
        assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()));
        // Every character of the alphabet turns up (no truncated range).
        let many = random_alphanumeric(10_000);
        for &c in BASE62 {
            assert!(many.as_bytes().contains(&c), "{}", c as char);
        }
        assert_ne!(random_alphanumeric(32), random_alphanumeric(32));
    }

    #[test]
    fn device_ids_are_ten_letters() {
        let d = generate_device_id();
        assert_eq!(d.len(), 10);
        assert!(d.bytes().all(|b| b.is_ascii_uppercase()));
    }

    proptest! {
        #[test]
        fn any_single_character_change_is_caught(pos in 5usize..42, c in "[0-9A-Za-z_]") {
            let t = generate(TokenKind::Access);
            let mut bytes = t.as_bytes().to_vec();
            let c = c.as_bytes()[0];
            prop_assume!(bytes[pos] != c);
            bytes[pos] = c;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(check(&changed, TokenKind::Access).is_err());
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".*") {
            let _ = check(&s, TokenKind::Access);
            let _ = check(&format!("ghat_{s}"), TokenKind::Access);
        }
    }
}
