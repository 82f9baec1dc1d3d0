//! The stages of User-Interactive Authentication as types: which stage the
//! server asks for ([`AuthType`]), and the answer to one ([`AuthDict`]).

use serde_json::{Value, json};

use crate::login::UserIdentifier;

/// A stage type. The spec's are named; any other (a server's own, a newer
/// spec's) is kept as it came, in `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthType {
    Password,
    Recaptcha,
    Sso,
    EmailIdentity,
    Msisdn,
    Dummy,
    RegistrationToken,
    Terms,
    Other(String),
}

impl AuthType {
    pub fn parse(s: &str) -> Self {
        match s {
            "m.login.password" => Self::Password,
            "m.login.recaptcha" => Self::Recaptcha,
            "m.login.sso" => Self::Sso,
            "m.login.email.identity" => Self::EmailIdentity,
            "m.login.msisdn" => Self::Msisdn,
            "m.login.dummy" => Self::Dummy,
            "m.login.registration_token" => Self::RegistrationToken,
            "m.login.terms" => Self::Terms,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Password => "m.login.password",
            Self::Recaptcha => "m.login.recaptcha",
            Self::Sso => "m.login.sso",
            Self::EmailIdentity => "m.login.email.identity",
            Self::Msisdn => "m.login.msisdn",
            Self::Dummy => "m.login.dummy",
            Self::RegistrationToken => "m.login.registration_token",
            Self::Terms => "m.login.terms",
            Self::Other(s) => s,
        }
    }
}

impl std::fmt::Display for AuthType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for AuthType {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for AuthType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The answer to one stage: the `auth` object of the protected request
/// (the session is added when it is submitted). Its `Debug` hides
/// passwords, tokens and secrets.
#[derive(Clone, PartialEq)]
pub struct AuthDict(Value);

impl AuthDict {
    /// `m.login.password`.
    pub fn password(identifier: &UserIdentifier, password: impl Into<String>) -> Self {
        Self(json!({
            "type": AuthType::Password.as_str(),
            "identifier": identifier,
            "password": password.into(),
        }))
    }

    /// `m.login.dummy`.
    pub fn dummy() -> Self {
        Self(json!({ "type": AuthType::Dummy.as_str() }))
    }

    /// `m.login.registration_token`.
    pub fn registration_token(token: impl Into<String>) -> Self {
        Self(json!({ "type": AuthType::RegistrationToken.as_str(), "token": token.into() }))
    }

    /// `m.login.terms`: the policies shown were accepted.
    pub fn terms() -> Self {
        Self(json!({ "type": AuthType::Terms.as_str() }))
    }

    /// `m.login.recaptcha` with the widget's response.
    pub fn recaptcha(response: impl Into<String>) -> Self {
        Self(json!({ "type": AuthType::Recaptcha.as_str(), "response": response.into() }))
    }

    /// `m.login.email.identity`: the validated session's credentials (sent
    /// under both the spec's and matrix-js-sdk's historical key).
    pub fn email_identity(sid: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self::threepid(AuthType::EmailIdentity, sid.into(), client_secret.into())
    }

    /// `m.login.msisdn`: the validated session's credentials.
    pub fn msisdn(sid: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self::threepid(AuthType::Msisdn, sid.into(), client_secret.into())
    }

    fn threepid(kind: AuthType, sid: String, client_secret: String) -> Self {
        let creds = json!({ "sid": sid, "client_secret": client_secret });
        Self(json!({ "type": kind.as_str(), "threepid_creds": creds, "threepidCreds": creds }))
    }

    /// Only the session: a stage completed elsewhere (a fallback page).
    pub fn completed_elsewhere() -> Self {
        Self(json!({}))
    }

    /// Any other stage's dict, as the application builds it.
    pub fn custom(auth: Value) -> Self {
        Self(auth)
    }

    /// The stage it answers (none for [`Self::completed_elsewhere`]).
    pub fn kind(&self) -> Option<AuthType> {
        self.0
            .get("type")
            .and_then(Value::as_str)
            .map(AuthType::parse)
    }

    pub fn into_value(self) -> Value {
        self.0
    }
}

impl From<AuthDict> for Value {
    fn from(auth: AuthDict) -> Self {
        auth.0
    }
}

impl std::fmt::Debug for AuthDict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.clone();
        if let Some(map) = shown.as_object_mut() {
            for secret in [
                "password",
                "token",
                "response",
                "threepid_creds",
                "threepidCreds",
            ] {
                if let Some(v) = map.get_mut(secret) {
                    *v = Value::String("<redacted>".into());
                }
            }
        }
        write!(f, "AuthDict({shown})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_types_keep_unknown_ones() {
        for known in [
            "m.login.password",
            "m.login.email.identity",
            "m.login.registration_token",
            "m.login.terms",
        ] {
            assert_eq!(AuthType::parse(known).as_str(), known);
            assert!(!matches!(AuthType::parse(known), AuthType::Other(_)));
        }
        let other = AuthType::parse("org.example.custom");
        assert_eq!(other, AuthType::Other("org.example.custom".into()));
        assert_eq!(other, "org.example.custom");
    }

    #[test]
    fn dicts_are_the_spec_shapes_and_debug_hides_secrets() {
        let pw = AuthDict::password(&UserIdentifier::user("alice"), "hunter2");
        assert_eq!(
            Value::from(pw.clone()),
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "hunter2"})
        );
        assert_eq!(pw.kind(), Some(AuthType::Password));
        assert!(!format!("{pw:?}").contains("hunter2"));
        let email = AuthDict::email_identity("sid1", "s3cret");
        assert_eq!(
            Value::from(email.clone())["threepid_creds"],
            json!({"sid": "sid1", "client_secret": "s3cret"})
        );
        assert!(!format!("{email:?}").contains("s3cret"));
        assert!(
            !format!("{:?}", AuthDict::registration_token("tk-secret-1")).contains("tk-secret-1")
        );
        assert_eq!(AuthDict::completed_elsewhere().kind(), None);
    }
}
