//! Single sign-on rules that do not depend on the provider: which client
//! redirect URLs are acceptable, which are trusted to receive a login token
//! without a confirmation page, how the token is added to them, and how a
//! provider's username becomes a Matrix localpart.

/// Why a `redirectUrl` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("redirectUrl must be an absolute URL")]
    NotAbsolute,
    #[error("redirectUrl may not use this scheme")]
    Scheme,
    #[error("redirectUrl must be percent-encoded printable ASCII")]
    Characters,
    #[error("redirectUrl is too long")]
    TooLong,
}

/// The longest `redirectUrl` accepted (it is stored with the flow).
pub const MAX_REDIRECT_URL_LEN: usize = 2048;

/// Schemes a browser would run or read locally instead of navigating.
const REFUSED_SCHEMES: &[&str] = &["javascript", "data", "vbscript", "file", "blob"];

/// Checks a client's `redirectUrl`: an absolute URL of any scheme a
/// browser navigates to (native apps use their own schemes), never one
/// that runs script.
pub fn check_redirect_url(url: &str) -> Result<(), RedirectError> {
    if url.len() > MAX_REDIRECT_URL_LEN {
        return Err(RedirectError::TooLong);
    }
    // Browsers read `\` as `/` in http(s) URLs, and other characters are
    // read differently by different parsers: a URL that reads as one host
    // on the confirmation page must not take the token to another.
    if !url.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
        return Err(RedirectError::Characters);
    }
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(RedirectError::NotAbsolute);
    };
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok || rest.is_empty() {
        return Err(RedirectError::NotAbsolute);
    }
    if REFUSED_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
        return Err(RedirectError::Scheme);
    }
    if matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") && !rest.starts_with("//") {
        return Err(RedirectError::NotAbsolute);
    }
    Ok(())
}

/// Whether `url` is under one of the `allowlist` prefixes. A prefix
/// matches at a boundary only: `https://app.example` covers
/// `https://app.example/cb` but not `https://app.example.evil.net/`.
pub fn redirect_trusted(url: &str, allowlist: &[String]) -> bool {
    allowlist.iter().any(|prefix| {
        url.strip_prefix(prefix.as_str()).is_some_and(|rest| {
            prefix.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?', '#'])
        })
    })
}

/// `url` with `loginToken` added to its query (before any fragment).
pub fn with_login_token(url: &str, token: &str) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let sep = if base.contains('?') {
        if base.ends_with(['?', '&']) { "" } else { "&" }
    } else {
        "?"
    };
    let encoded: String = form_encode(token);
    let mut out = format!("{base}{sep}loginToken={encoded}");
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A provider's username as a Matrix localpart: lower-cased, with every
/// character the grammar does not allow written as `=` and its UTF-8 bytes
/// in hex (Synapse's mapping, so that both servers agree on names).
/// `None` when nothing is left.
pub fn localpart_from_username(username: &str) -> Option<String> {
    let trimmed = username.trim();
    if trimmed.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(trimmed.len());
    for c in trimmed.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || "._/+-".contains(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("={b:02x}"));
            }
        }
    }
    Some(out)
}

/// The `n`th alternative to a taken localpart (`alice1`, `alice2`, …).
pub fn suffixed(localpart: &str, n: u32) -> String {
    format!("{localpart}{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_urls() {
        assert!(check_redirect_url("https://app.example/cb?x=1").is_ok());
        assert!(check_redirect_url("im.app.native:/callback").is_ok());
        assert_eq!(
            check_redirect_url("/relative"),
            Err(RedirectError::NotAbsolute)
        );
        assert_eq!(
            check_redirect_url("http:evil"),
            Err(RedirectError::NotAbsolute)
        );
        assert_eq!(
            check_redirect_url("JavaScript:alert(1)"),
            Err(RedirectError::Scheme)
        );
        assert_eq!(
            check_redirect_url("data:text/html,hi"),
            Err(RedirectError::Scheme)
        );
        assert_eq!(
            check_redirect_url("https://a\n.example/"),
            Err(RedirectError::Characters)
        );
        assert_eq!(
            check_redirect_url("https://evil.example\\@app.example/"),
            Err(RedirectError::Characters)
        );
        assert_eq!(
            check_redirect_url("https://app.example/é"),
            Err(RedirectError::Characters)
        );
        assert_eq!(
            check_redirect_url(&format!("https://a/{}", "x".repeat(MAX_REDIRECT_URL_LEN))),
            Err(RedirectError::TooLong)
        );
    }

    #[test]
    fn allowlist_matches_at_boundaries() {
        let list = vec![
            "https://app.example".to_owned(),
            "http://127.0.0.1:8/".to_owned(),
        ];
        assert!(redirect_trusted("https://app.example", &list));
        assert!(redirect_trusted("https://app.example/cb", &list));
        assert!(redirect_trusted("https://app.example?x", &list));
        assert!(!redirect_trusted("https://app.example.evil.net/cb", &list));
        assert!(!redirect_trusted("https://app.examplex/", &list));
        assert!(redirect_trusted("http://127.0.0.1:8/anything", &list));
        assert!(!redirect_trusted("http://127.0.0.1:80/", &list));
    }

    #[test]
    fn login_token_is_added_to_the_query() {
        assert_eq!(
            with_login_token("https://a/cb", "t_1"),
            "https://a/cb?loginToken=t_1"
        );
        assert_eq!(
            with_login_token("https://a/cb?x=1#frag", "t+/"),
            "https://a/cb?x=1&loginToken=t%2B%2F#frag"
        );
        assert_eq!(
            with_login_token("https://a/cb?", "t"),
            "https://a/cb?loginToken=t"
        );
    }

    #[test]
    fn usernames_become_localparts() {
        assert_eq!(localpart_from_username("Alice").as_deref(), Some("alice"));
        assert_eq!(localpart_from_username("a b").as_deref(), Some("a=20b"));
        assert_eq!(localpart_from_username("zoë").as_deref(), Some("zo=c3=ab"));
        assert_eq!(localpart_from_username("x=y").as_deref(), Some("x=3dy"));
        assert_eq!(localpart_from_username("  "), None);
        assert_eq!(suffixed("alice", 2), "alice2");
    }
}
