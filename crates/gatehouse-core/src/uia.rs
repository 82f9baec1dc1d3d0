//! User-Interactive Authentication: the pure rules.
//!
//! A UIA session authorises exactly one request: its user (if any), method,
//! path and body (minus `auth`) are fixed when it starts, and only its hash
//! is kept — a password in the body never reaches the store. Stages must be
//! completed in the order of some flow; a flow is done when all its stages
//! are. The HTTP layer runs the stage checks (password, tokens, 3PIDs) and
//! the store keeps the state; the decisions live here.

use serde_json::Value;
use sha2::{Digest, Sha256};

pub const PASSWORD: &str = "m.login.password";
pub const DUMMY: &str = "m.login.dummy";
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";
pub const TERMS: &str = "m.login.terms";
pub const EMAIL: &str = "m.login.email.identity";
pub const MSISDN: &str = "m.login.msisdn";
pub const RECAPTCHA: &str = "m.login.recaptcha";
/// Re-authentication at the user's upstream provider, through its fallback page.
pub const SSO: &str = "m.login.sso";

/// Every stage type Gatehouse can check.
pub const KNOWN_STAGES: &[&str] = &[
    PASSWORD,
    DUMMY,
    REGISTRATION_TOKEN,
    TERMS,
    EMAIL,
    MSISDN,
    RECAPTCHA,
    SSO,
];

/// One way to authenticate: stages in order.
pub type Flow = Vec<String>;

/// What a session is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The authenticated user, or `None` for registration and password reset.
    pub user_id: Option<String>,
    pub method: String,
    pub path: String,
    /// SHA-256 of the canonical JSON body without its `auth` key.
    pub body_hash: [u8; 32],
}

impl Binding {
    pub fn new(user_id: Option<&str>, method: &str, path: &str, body: &Value) -> Self {
        Self {
            user_id: user_id.map(str::to_owned),
            method: method.to_owned(),
            path: canonical_path(path),
            body_hash: body_hash(body),
        }
    }

    /// Why `other` (a new request presenting this session) does not match.
    pub fn mismatch(&self, other: &Binding) -> Option<&'static str> {
        if self.user_id != other.user_id {
            Some("This session was started by another user")
        } else if self.method != other.method || self.path != other.path {
            Some("This session was started for another operation")
        } else if self.body_hash != other.body_hash {
            Some("The request has changed since this session was started")
        } else {
            None
        }
    }
}

/// `/_matrix/client/r0/x` and `/_matrix/client/v3/x` are one operation.
fn canonical_path(path: &str) -> String {
    path.replacen("/_matrix/client/r0/", "/_matrix/client/v3/", 1)
}

/// Body fields whose values are secrets: only their presence is bound.
/// A fast hash over a body holding a password would let whoever reads the
/// database guess that password offline at SHA-256 speed, undoing Argon2.
/// The password is the requester's own choice, and the session is bound to
/// them and to every other field, so leaving its value out gains nobody
/// anything (Synapse binds less still: method and path).
const SECRET_FIELDS: [&str; 2] = ["password", "new_password"];

/// Hash of the body with `auth` removed and secret values blanked.
/// serde_json's maps are sorted by key, so equal bodies hash equally
/// whatever order the client sent.
pub fn body_hash(body: &Value) -> [u8; 32] {
    let mut body = body.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("auth");
        for field in SECRET_FIELDS {
            if let Some(value) = map.get_mut(field) {
                *value = Value::Bool(true);
            }
        }
    }
    Sha256::digest(body.to_string().as_bytes()).into()
}

/// Whether `stage` may be completed after `completed`: it must be the next
/// stage of some flow that `completed` is a prefix of. Re-submitting an
/// already completed stage is allowed (it changes nothing).
pub fn stage_allowed(flows: &[Flow], completed: &[String], stage: &str) -> bool {
    if completed.iter().any(|c| c == stage) {
        return true;
    }
    flows.iter().any(|flow| {
        flow.len() > completed.len()
            && flow[..completed.len()] == *completed
            && flow[completed.len()] == stage
    })
}

/// Whether some flow is fully completed.
pub fn is_complete(flows: &[Flow], completed: &[String]) -> bool {
    flows.iter().any(|flow| flow.as_slice() == completed)
}

/// Appends `stage` unless it is already there.
pub fn record(completed: &mut Vec<String>, stage: &str) {
    if !completed.iter().any(|c| c == stage) {
        completed.push(stage.to_owned());
    }
}

/// Keeps the flows whose every stage the user can complete (`can` says
/// which stage types are possible for them): no password prompt for a user
/// without a password, no email stage for a user without an email.
pub fn completable(flows: &[Flow], can: impl Fn(&str) -> bool) -> Vec<Flow> {
    flows
        .iter()
        .filter(|f| f.iter().all(|s| can(s)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flows(f: &[&[&str]]) -> Vec<Flow> {
        f.iter()
            .map(|s| s.iter().map(|x| (*x).to_owned()).collect())
            .collect()
    }

    #[test]
    fn the_binding_covers_the_body_but_not_secret_values() {
        let h = |v: Value| body_hash(&v);
        let body = json!({"username": "alice", "password": "one", "auth": {"session": "s"}});
        assert_eq!(
            h(body.clone()),
            h(json!({"password": "two", "username": "alice"})),
            "auth is not bound, nor the password's value"
        );
        assert_ne!(
            h(body.clone()),
            h(json!({"username": "alice"})),
            "its presence is"
        );
        assert_ne!(h(body), h(json!({"username": "bob", "password": "one"})));
        assert_ne!(
            h(json!({"new_password": "x", "logout_devices": true})),
            h(json!({"new_password": "x", "logout_devices": false}))
        );
        let leak = Sha256::digest(json!({"password": "one", "username": "alice"}).to_string());
        assert_ne!(
            h(json!({"username": "alice", "password": "one"}))[..],
            leak[..]
        );
    }

    #[test]
    fn stages_must_follow_a_flow_in_order() {
        let f = flows(&[&[REGISTRATION_TOKEN, DUMMY], &[EMAIL, TERMS]]);
        assert!(stage_allowed(&f, &[], REGISTRATION_TOKEN));
        assert!(stage_allowed(&f, &[], EMAIL));
        assert!(
            !stage_allowed(&f, &[], DUMMY),
            "dummy is second in its flow"
        );
        let done = vec![REGISTRATION_TOKEN.to_owned()];
        assert!(stage_allowed(&f, &done, DUMMY));
        assert!(
            !stage_allowed(&f, &done, TERMS),
            "terms belongs to another flow"
        );
        assert!(
            stage_allowed(&f, &done, REGISTRATION_TOKEN),
            "resubmission is harmless"
        );
        assert!(!is_complete(&f, &done));
        assert!(is_complete(
            &f,
            &[REGISTRATION_TOKEN.to_owned(), DUMMY.to_owned()]
        ));
        assert!(!stage_allowed(&f, &[], "m.login.unknown"));
    }

    #[test]
    fn bindings_ignore_auth_key_order_and_r0() {
        let a = Binding::new(
            Some("@a:hs"),
            "POST",
            "/_matrix/client/v3/account/password",
            &json!({"new_password": "x", "logout_devices": true}),
        );
        let b = Binding::new(
            Some("@a:hs"),
            "POST",
            "/_matrix/client/r0/account/password",
            &json!({"logout_devices": true, "auth": {"type": "m.login.password"}, "new_password": "x"}),
        );
        assert_eq!(a.mismatch(&b), None);
        let other_user = Binding {
            user_id: Some("@b:hs".into()),
            ..b.clone()
        };
        assert!(a.mismatch(&other_user).unwrap().contains("another user"));
        let other_path = Binding {
            path: "/_matrix/client/v3/account/deactivate".into(),
            ..b.clone()
        };
        assert!(
            a.mismatch(&other_path)
                .unwrap()
                .contains("another operation")
        );
        let changed = Binding::new(
            Some("@a:hs"),
            "POST",
            "/_matrix/client/v3/account/password",
            &json!({"new_password": "y"}),
        );
        assert!(a.mismatch(&changed).unwrap().contains("changed"));
    }

    #[test]
    fn flows_are_filtered_to_what_the_user_can_do() {
        let f = flows(&[&[PASSWORD], &[EMAIL]]);
        assert_eq!(completable(&f, |s| s != PASSWORD), flows(&[&[EMAIL]]));
        assert!(completable(&f, |_| false).is_empty());
    }
}
