//! From a provider's claims to the account they make: the operator's
//! templates (`user_mapping`) render over `user`, the claims.

use gatehouse_core::identifier::{Medium, canonical_threepid};
use serde_json::Value;

use crate::config::UserMapping;

/// What the templates made of a person's claims; each `None` when its
/// template rendered to nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapped {
    /// A localpart as the provider names the person, already mapped to
    /// the localpart grammar.
    pub localpart: Option<String>,
    pub display_name: Option<String>,
    /// A well-formed address, canonical (lower-cased).
    pub email: Option<String>,
}

fn render(template: &str, claims: &Value) -> Option<String> {
    let env = minijinja::Environment::new();
    let out = env
        .render_str(
            template,
            minijinja::context! { user => minijinja::Value::from(minijinja::value::Serde(claims)) },
        )
        .ok()?;
    let out = out.trim();
    (!out.is_empty()).then(|| out.to_owned())
}

/// `cas`: the provider is a CAS server (its defaults differ).
pub fn map(mapping: &UserMapping, cas: bool, claims: &Value) -> Mapped {
    let t = mapping.templates(cas);
    Mapped {
        localpart: render(t.localpart, claims)
            .and_then(|u| gatehouse_core::sso::localpart_from_username(&u)),
        display_name: render(t.display_name, claims),
        email: render(t.email, claims)
            .and_then(|e| canonical_threepid(Medium::Email, &e).ok())
            .map(|t| t.address),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_render_over_claims() {
        let claims = json!({
            "sub": "1", "preferred_username": "Alice L", "name": "Alice", "email": "Alice@Example.org"
        });
        let m = map(&UserMapping::default(), false, &claims);
        assert_eq!(m.localpart.as_deref(), Some("alice=20l"));
        assert_eq!(m.display_name.as_deref(), Some("Alice"));
        assert_eq!(m.email.as_deref(), Some("alice@example.org"));
        let none = map(
            &UserMapping::default(),
            false,
            &json!({ "sub": "1", "email": "not an address" }),
        );
        assert_eq!(none, Mapped::default());
        // CAS's own defaults, kept for the keys an operator leaves out.
        let cas = UserMapping {
            email_template: Some("{{ user.user }}@campus.example".into()),
            ..UserMapping::default()
        };
        let m = map(
            &cas,
            true,
            &json!({ "user": "Dave", "first_name": "Dave B" }),
        );
        assert_eq!(m.localpart.as_deref(), Some("dave"));
        assert_eq!(m.display_name.as_deref(), Some("Dave B"));
        assert_eq!(m.email.as_deref(), Some("dave@campus.example"));
    }
}
