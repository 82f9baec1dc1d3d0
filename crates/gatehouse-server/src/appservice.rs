//! Application services (bridges), registered with Synapse-format YAML
//! files (`appservices.registration_files`): who they are (their `as_token`),
//! which users they speak for (`namespaces.users`), and which of those
//! names nobody else may register (`exclusive`).
//!
//! A user namespace's `regex` matches a user ID from its start, as
//! Synapse's `re.match` does (`@bridge_.*` matches `@bridge_a:example.org`).
//! The first namespace that matches decides whether the ID is exclusive; the
//! appservice's own sender is always its, exclusively.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use gatehouse_core::ErrorKind;
use gatehouse_core::user_id::UserId;
use regex::Regex;
use serde::Deserialize;

use crate::config::ConfigError;
use crate::error::ApiError;

/// The login and registration type of appservices.
pub const LOGIN_TYPE: &str = "m.login.application_service";

const KEY: &str = "appservices.registration_files";

/// A registration file as written (only what Gatehouse uses; the rest —
/// `aliases`, `rooms`, `protocols`, ephemeral flags — is ignored).
#[derive(Deserialize)]
struct RegistrationFile {
    id: String,
    /// Required by the format, though it may be null; unused here.
    #[serde(default)]
    #[allow(dead_code)]
    url: Option<String>,
    as_token: String,
    /// Unused here (it authenticates the homeserver to the appservice), but
    /// required by the format.
    #[allow(dead_code)]
    hs_token: String,
    sender_localpart: String,
    #[serde(default)]
    namespaces: NamespacesFile,
    #[serde(default = "yes")]
    rate_limited: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
struct NamespacesFile {
    #[serde(default)]
    users: Vec<NamespaceFile>,
}

#[derive(Deserialize)]
struct NamespaceFile {
    regex: String,
    exclusive: bool,
}

/// One registered application service.
pub struct Appservice {
    pub id: Arc<str>,
    /// `@{sender_localpart}:{server_name}`: whom its token speaks for by default.
    pub sender: UserId,
    /// Whether its users' logins count against the per-account limit.
    pub rate_limited: bool,
    /// SHA-256 of `as_token`: compared in constant time, never kept in clear.
    token_hash: [u8; 32],
    /// Start-anchored user namespaces, with their `exclusive` flag.
    users: Vec<(Regex, bool)>,
}

impl std::fmt::Debug for Appservice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appservice")
            .field("id", &self.id)
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

impl Appservice {
    /// The `exclusive` flag of the first user namespace matching `user`.
    fn namespace_of(&self, user: &UserId) -> Option<bool> {
        self.users
            .iter()
            .find(|(re, _)| re.is_match(user.as_str()))
            .map(|(_, exclusive)| *exclusive)
    }

    /// Whether this appservice may act as `user`: its sender, or a user in
    /// one of its namespaces.
    pub fn is_interested_in(&self, user: &UserId) -> bool {
        *user == self.sender || self.namespace_of(user).is_some()
    }

    /// Whether `user` is reserved to this appservice.
    pub fn is_exclusive(&self, user: &UserId) -> bool {
        *user == self.sender || self.namespace_of(user) == Some(true)
    }

    /// Refuses a user outside this appservice's namespaces (`M_EXCLUSIVE`,
    /// the spec's answer for `/login` and `/register`), or one that another
    /// appservice holds exclusively.
    pub fn check_may_claim(&self, all: &Appservices, user: &UserId) -> Result<(), ApiError> {
        if !self.is_interested_in(user) {
            return Err(ApiError::new(
                ErrorKind::Exclusive,
                "This user ID is outside the application service's namespaces",
            ));
        }
        if all
            .iter()
            .any(|other| other.id != self.id && other.is_exclusive(user))
        {
            return Err(ApiError::new(
                ErrorKind::Exclusive,
                "This user ID is reserved by another application service",
            ));
        }
        Ok(())
    }
}

/// Every registered appservice.
#[derive(Debug, Default)]
pub struct Appservices(Vec<Arc<Appservice>>);

impl Appservices {
    /// Reads and checks the registration files. Errors name the key and the
    /// file, never a token.
    pub fn load(paths: &[PathBuf], server_name: &str) -> Result<Self, ConfigError> {
        let mut all: Vec<Arc<Appservice>> = Vec::new();
        for path in paths {
            let service = load_one(path, server_name)?;
            let invalid = |reason: &str| ConfigError::Invalid {
                key: KEY,
                reason: format!("{}: {reason}", path.display()),
            };
            if all.iter().any(|s| s.id == service.id) {
                return Err(invalid(&format!(
                    "id {:?} is used by another registration",
                    service.id
                )));
            }
            if all.iter().any(|s| s.token_hash == service.token_hash) {
                return Err(invalid("as_token is used by another registration"));
            }
            all.push(Arc::new(service));
        }
        Ok(Self(all))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Appservice>> {
        self.0.iter()
    }

    /// The appservice whose `as_token` this is. Every registration is
    /// compared, in constant time, so timing tells nothing of any token.
    pub fn by_token(&self, token: &str) -> Option<Arc<Appservice>> {
        use subtle::ConstantTimeEq;
        let presented = gatehouse_core::token::hash(token).0;
        let mut found = None;
        for service in &self.0 {
            if bool::from(service.token_hash.ct_eq(&presented)) {
                found = Some(service.clone());
            }
        }
        found
    }

    /// Whether some appservice holds `user` exclusively (no one else may
    /// register it).
    pub fn is_exclusive(&self, user: &UserId) -> bool {
        self.0.iter().any(|s| s.is_exclusive(user))
    }
}

fn load_one(path: &Path, server_name: &str) -> Result<Appservice, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: KEY,
        reason: format!("{}: {reason}", path.display()),
    };
    let text = std::fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| invalid(format!("cannot read: {e}")))?;
    let file: RegistrationFile = serde_norway::from_str(&text)
        .map_err(|e| invalid(format!("not a valid registration file: {e}")))?;
    if file.id.is_empty() {
        return Err(invalid("id is empty".into()));
    }
    if file.as_token.is_empty() {
        return Err(invalid("as_token is empty".into()));
    }
    // Gatehouse's own access tokens are never compared with as_tokens.
    if file
        .as_token
        .starts_with(gatehouse_core::token::TokenKind::Access.prefix())
    {
        return Err(invalid(format!(
            "as_token must not start with {:?} (Gatehouse's access tokens do)",
            gatehouse_core::token::TokenKind::Access.prefix()
        )));
    }
    let sender = UserId::new(&file.sender_localpart, server_name)
        .map_err(|e| invalid(format!("sender_localpart: {e}")))?;
    let mut users = Vec::new();
    for ns in &file.namespaces.users {
        let re = Regex::new(&format!("^(?:{})", ns.regex))
            .map_err(|e| invalid(format!("namespaces.users regex {:?}: {e}", ns.regex)))?;
        users.push((re, ns.exclusive));
    }
    Ok(Appservice {
        id: Arc::from(file.id.as_str()),
        sender,
        rate_limited: file.rate_limited,
        token_hash: gatehouse_core::token::hash(&file.as_token).0,
        users,
    })
}

/// The appservice whose `as_token` is the request's bearer token, if any
/// (for the endpoints that take one without requiring any access token).
pub fn caller(state: &crate::state::AppState, headers: &HeaderMap) -> Option<Arc<Appservice>> {
    if state.appservices.is_empty() {
        return None;
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    state.appservices.by_token(token.trim())
}

/// A user ID on this server from a full ID or a bare localpart, exactly as
/// given (no case folding: an appservice names its users precisely).
pub fn parse_user_id(input: &str, server_name: &str) -> Option<UserId> {
    let localpart = match input.strip_prefix('@') {
        Some(rest) => {
            let (localpart, server) = rest.split_once(':')?;
            (server == server_name).then_some(localpart)?
        }
        None => input,
    };
    UserId::new(localpart, server_name).ok()
}

/// The user a request of `service` acts as: its sender, or the `user_id`
/// the request names (identity assertion), which must be in its namespaces.
pub fn asserted_user(
    service: &Appservice,
    user_id: Option<&str>,
    server_name: &str,
) -> Result<UserId, ApiError> {
    let Some(wanted) = user_id else {
        return Ok(service.sender.clone());
    };
    let cannot = || {
        ApiError::forbidden(format!(
            "Application service cannot masquerade as this user ({wanted})"
        ))
    };
    if !wanted.starts_with('@') {
        return Err(cannot());
    }
    let user = parse_user_id(wanted, server_name).ok_or_else(cannot)?;
    if !service.is_interested_in(&user) {
        return Err(cannot());
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    const REG: &str = "id: bridge\nurl: null\nas_token: as_secret\nhs_token: hs_secret\n\
        sender_localpart: bridgebot\nnamespaces:\n  users:\n    - regex: '@bridge_.*'\n      exclusive: true\n    - regex: '@shared_.*'\n      exclusive: false\n";

    #[test]
    fn loads_matches_and_finds_by_token() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "a.yaml", REG);
        let all = Appservices::load(&[p], "example.org").unwrap();
        let s = all.by_token("as_secret").unwrap();
        assert!(all.by_token("hs_secret").is_none());
        let user = |l: &str| UserId::new(l, "example.org").unwrap();
        assert!(s.is_interested_in(&user("bridge_a")));
        assert!(s.is_exclusive(&user("bridge_a")));
        assert!(s.is_interested_in(&user("shared_a")));
        assert!(!s.is_exclusive(&user("shared_a")));
        assert!(s.is_exclusive(&user("bridgebot")));
        // Anchored at the start: a match in the middle does not count.
        assert!(!s.is_interested_in(&user("x_bridge_a")));
        assert_eq!(
            asserted_user(&s, None, "example.org").unwrap(),
            user("bridgebot")
        );
        assert!(asserted_user(&s, Some("@alice:example.org"), "example.org").is_err());
        assert!(asserted_user(&s, Some("@bridge_a:other.org"), "example.org").is_err());
    }

    #[test]
    fn refuses_duplicates_and_bad_files_without_echoing_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.yaml", REG);
        let b = write(
            dir.path(),
            "b.yaml",
            &REG.replace("id: bridge", "id: other"),
        );
        let err = Appservices::load(&[a.clone(), b], "example.org")
            .unwrap_err()
            .to_string();
        assert!(err.contains("as_token is used"), "{err}");
        assert!(!err.contains("as_secret"), "{err}");
        let c = write(
            dir.path(),
            "c.yaml",
            &REG.replace("as_token: as_secret", "as_token: other_secret"),
        );
        let err = Appservices::load(&[a, c], "example.org")
            .unwrap_err()
            .to_string();
        assert!(err.contains("id \"bridge\""), "{err}");
        let bad = write(dir.path(), "bad.yaml", &REG.replace("@bridge_.*", "@(["));
        let err = Appservices::load(&[bad], "example.org")
            .unwrap_err()
            .to_string();
        assert!(err.contains(KEY) && err.contains("bad.yaml"), "{err}");
    }
}
