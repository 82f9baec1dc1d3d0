//! Matrix user IDs (`@localpart:server_name`) and the rules for turning what
//! a person typed into the one account it names.

use std::fmt;

/// The longest user ID the spec allows, in bytes, sigil and domain included.
pub const MAX_USER_ID_LEN: usize = 255;

/// Why a string is not an acceptable localpart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalpartError {
    #[error("user ID localpart is empty")]
    Empty,
    #[error("user ID localpart may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'")]
    InvalidCharacter,
    #[error("user ID is longer than 255 bytes")]
    TooLong,
}

/// A user ID on this server whose localpart obeys the spec's grammar for new
/// IDs. The only way to build one is [`UserId::new`], which checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// `@localpart:server_name`, after checking the localpart.
    pub fn new(localpart: &str, server_name: &str) -> Result<Self, LocalpartError> {
        validate_localpart(localpart)?;
        let id = format!("@{localpart}:{server_name}");
        if id.len() > MAX_USER_ID_LEN {
            return Err(LocalpartError::TooLong);
        }
        Ok(Self(id))
    }

    /// Trusts a string read back from our own store, where only checked IDs are written.
    pub fn from_trusted(id: String) -> Self {
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn localpart(&self) -> &str {
        let end = self.0.find(':').unwrap_or(self.0.len());
        &self.0[1..end]
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a localpart against the grammar for newly created user IDs.
pub fn validate_localpart(localpart: &str) -> Result<(), LocalpartError> {
    if localpart.is_empty() {
        return Err(LocalpartError::Empty);
    }
    if !localpart.bytes().all(is_localpart_byte) {
        return Err(LocalpartError::InvalidCharacter);
    }
    Ok(())
}

fn is_localpart_byte(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+')
}

/// Resolves what a user typed as `m.id.user` (a localpart or a full user ID)
/// to the user ID it names on this server.
///
/// Localparts are matched case-insensitively, as Synapse does: `Alice`,
/// `@ALICE:example.org` and `alice` all name `@alice:example.org`. Returns
/// `None` when the input cannot name a local account (another server, bad
/// grammar); callers treat that exactly like an unknown user so that the
/// answer and its timing reveal nothing.
pub fn resolve_login_user(input: &str, server_name: &str) -> Option<UserId> {
    let input = input.trim();
    let localpart = match input.strip_prefix('@') {
        Some(rest) => {
            let (local, server) = rest.split_once(':')?;
            if !server.eq_ignore_ascii_case(server_name) {
                return None;
            }
            local
        }
        None => input,
    };
    UserId::new(&localpart.to_lowercase(), server_name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn resolves_localparts_and_full_ids_case_insensitively() {
        let want = UserId::new("alice", "example.org").unwrap();
        for input in [
            "alice",
            "Alice",
            "@alice:example.org",
            "@ALICE:Example.ORG",
            " alice ",
        ] {
            assert_eq!(
                resolve_login_user(input, "example.org"),
                Some(want.clone()),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_other_servers_and_bad_grammar() {
        assert_eq!(
            resolve_login_user("@alice:elsewhere.org", "example.org"),
            None
        );
        assert_eq!(resolve_login_user("@alice", "example.org"), None);
        assert_eq!(resolve_login_user("al ice", "example.org"), None);
        assert_eq!(resolve_login_user("", "example.org"), None);
        assert_eq!(resolve_login_user(&"a".repeat(300), "example.org"), None);
    }

    #[test]
    fn localpart_accessor() {
        let id = UserId::new("bob.smith", "localhost:8008").unwrap();
        assert_eq!(id.localpart(), "bob.smith");
        assert_eq!(id.as_str(), "@bob.smith:localhost:8008");
    }

    proptest! {
        #[test]
        fn valid_localparts_round_trip(local in "[a-z0-9._=/+-]{1,40}") {
            let id = resolve_login_user(&local.to_uppercase(), "hs").unwrap();
            prop_assert_eq!(id.localpart(), local.as_str());
        }

        #[test]
        fn never_panics(input in ".*") {
            let _ = resolve_login_user(&input, "hs");
        }
    }
}
