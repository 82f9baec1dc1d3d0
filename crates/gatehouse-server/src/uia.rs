//! User-Interactive Authentication over HTTP: challenges, stage checks and
//! session state, for every endpoint that needs (re-)authentication.
//!
//! A protected handler calls [`authorise`] with the request's identity and
//! body; it gets back the completed session (with what its stages proved)
//! or an error that is already the right 401/403/400 answer.

use axum::http::Method;
use gatehouse_core::ErrorKind;
use gatehouse_core::identifier::{Medium, Threepid};
use gatehouse_core::uia::{self, Binding, Flow};
use gatehouse_store::UiaSessionRecord;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::error::{ApiError, ApiResult};
use crate::password_auth::check_password;
use crate::routes::login::identifier_of;
use crate::state::AppState;

mod progress;
pub(crate) use progress::save_progress;
pub use progress::{complete_stage, live_session, stage_is_next};

/// What a logged-in user re-authenticates for. Each can have its own
/// flows (`uia.operations`), falling back to `uia.flows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensitive {
    PasswordChange,
    DeviceDeletion,
    Deactivation,
    CrossSigningReset,
    ThreepidChange,
    LoginToken,
}

impl Sensitive {
    pub const ALL: [Sensitive; 6] = [
        Self::PasswordChange,
        Self::DeviceDeletion,
        Self::Deactivation,
        Self::CrossSigningReset,
        Self::ThreepidChange,
        Self::LoginToken,
    ];

    /// The key naming it under `uia.operations`.
    pub fn key(self) -> &'static str {
        match self {
            Self::PasswordChange => "password_change",
            Self::DeviceDeletion => "device_deletion",
            Self::Deactivation => "deactivation",
            Self::CrossSigningReset => "cross_signing_reset",
            Self::ThreepidChange => "threepid_change",
            Self::LoginToken => "login_token",
        }
    }
}

/// The operation a session authorises; it decides the flows offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Register,
    /// A logged-in user proves it is them.
    Sensitive(Sensitive),
    /// A forgotten password: the user proves they own a bound 3PID.
    PasswordReset,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Sensitive(kind) => kind.key(),
            Self::PasswordReset => "password_reset",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        let all = [Self::Register, Self::PasswordReset]
            .into_iter()
            .chain(Sensitive::ALL.map(Self::Sensitive));
        all.into_iter().find(|o| o.as_str() == s)
    }
}

/// What a stored session's operation does, in words a person recognises
/// (the `m.login.sso` fallback page says what it is about to approve).
pub fn operation_described(session: &UiaSessionRecord) -> &'static str {
    match session.data["op"].as_str().and_then(Operation::parse) {
        Some(Operation::Sensitive(Sensitive::PasswordChange)) => "change your password",
        Some(Operation::Sensitive(Sensitive::DeviceDeletion)) => "sign out one of your devices",
        Some(Operation::Sensitive(Sensitive::Deactivation)) => "deactivate your account",
        Some(Operation::Sensitive(Sensitive::CrossSigningReset)) => "reset your encryption keys",
        Some(Operation::Sensitive(Sensitive::ThreepidChange)) => {
            "change your email addresses or phone numbers"
        }
        Some(Operation::Sensitive(Sensitive::LoginToken)) => "sign in on another device",
        _ => "make a change to your account",
    }
}

/// Re-authenticates a logged-in requester for `kind`, with the flows
/// they can complete.
pub async fn reauthenticate(
    state: &AppState,
    requester: &crate::extract::Requester,
    kind: Sensitive,
    method: &Method,
    uri: &axum::http::Uri,
    body: &Value,
) -> ApiResult<Authorised> {
    let mut subject = subject_for_user(state, &requester.user_id).await?;
    subject.ip = Some(requester.ip);
    authorise(
        state,
        Operation::Sensitive(kind),
        &subject,
        method,
        uri.path(),
        body,
    )
    .await
}

/// Whether `user_id` has any flow it can complete for `kind` (a user with
/// no password and no usable 3PID may have none): what the capabilities
/// answer, and what `/login/get_token` checks before offering a session.
pub async fn can_reauthenticate(
    state: &AppState,
    user_id: &gatehouse_core::user_id::UserId,
    kind: Sensitive,
) -> ApiResult<bool> {
    let subject = subject_for_user(state, user_id).await?;
    Ok(!flows_for(state, Operation::Sensitive(kind), &subject).is_empty())
}

/// What a user can authenticate with.
pub async fn subject_for_user(
    state: &AppState,
    user_id: &gatehouse_core::user_id::UserId,
) -> ApiResult<Subject> {
    let user = state.store.user(user_id).await?;
    // Asked again of those who accepted an earlier version; accounts that
    // never went through a terms stage (made by an administrator, or
    // before terms were configured) are not stopped by one.
    let terms_outdated = !state.config.uia.terms.is_empty() && {
        let accepted = state.store.accepted_policies(user_id).await?;
        !accepted.is_empty()
            && current_terms(state)
                .iter()
                .any(|current| !accepted.contains(current))
    };
    let sso_linked = state.config.sso.enabled()
        && state
            .store
            .upstream_links(user_id)
            .await?
            .iter()
            .any(|l| state.sso.get(&l.provider).is_some());
    Ok(Subject {
        user_id: Some(user_id.to_string()),
        sso_linked,
        has_password: user.is_some_and(|u| u.password_hash.is_some()),
        terms_outdated,
        threepids: state
            .store
            .threepids(user_id)
            .await?
            .into_iter()
            .map(|t| t.threepid)
            .collect(),
        ip: None,
    })
}

/// Who is asking: the logged-in user (with what they can authenticate
/// with), or nobody yet.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub user_id: Option<String>,
    pub has_password: bool,
    /// Linked to a configured upstream provider: `m.login.sso` is offered.
    pub sso_linked: bool,
    pub threepids: Vec<Threepid>,
    /// Where the stage is answered from: a password stage counts against
    /// that address's login rate limit, like a login.
    pub ip: Option<std::net::IpAddr>,
    /// A policy of `uia.terms` changed (or was added) since this user last
    /// accepted the policies: their next sensitive operation asks first.
    pub terms_outdated: bool,
}

/// The `(policy, version)` pairs of `uia.terms`, as users accept them.
fn current_terms(state: &AppState) -> Vec<(String, String)> {
    state
        .config
        .uia
        .terms
        .iter()
        .map(|(name, policy)| (name.clone(), policy.version.clone()))
        .collect()
}

/// Records that `user_id` accepted the current policies, when `session`
/// passed `m.login.terms` (for a registration: once the account exists).
pub async fn record_accepted_terms(
    state: &AppState,
    session: &UiaSessionRecord,
    user_id: &gatehouse_core::user_id::UserId,
) -> ApiResult<()> {
    if session.completed.iter().any(|s| s == uia::TERMS) {
        let now = state.clock.now_ms();
        state
            .store
            .accept_policies(user_id, &current_terms(state), now)
            .await?;
    }
    Ok(())
}

/// A completed session and what its stages established.
#[derive(Debug, Clone)]
pub struct Authorised {
    pub session: UiaSessionRecord,
}

impl Authorised {
    /// Gives the session back: the operation it authorised failed after its
    /// stages passed (a busy hashing pool, a 3PID not validated yet, the
    /// homeserver down), so the same request may be retried with it. What
    /// its stages reserved (a registration token use) stays reserved with
    /// it, released when it expires.
    pub async fn release(&self, state: &AppState) -> ApiResult<()> {
        state.store.release_uia_session(&self.session.id).await?;
        Ok(())
    }

    /// Runs the operation this session authorised; the session stays spent
    /// only if it succeeds.
    pub async fn spend_on<T>(
        &self,
        state: &AppState,
        operation: impl std::future::Future<Output = ApiResult<T>>,
    ) -> ApiResult<T> {
        let outcome = operation.await;
        if outcome.is_err() {
            self.release(state).await?;
        }
        outcome
    }

    /// The registration token whose use this session reserved.
    pub fn registration_token(&self) -> Option<String> {
        self.session.data["registration_token"]
            .as_str()
            .map(str::to_owned)
    }

    /// The account a password reset is for (found through its 3PID).
    pub fn reset_user(&self) -> Option<String> {
        self.session.data["reset_user"].as_str().map(str::to_owned)
    }

    /// Third-party IDs validated by email/msisdn stages.
    pub fn validated_threepids(&self) -> Vec<Threepid> {
        self.session.data["threepids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                Some(Threepid {
                    medium: Medium::parse(t["medium"].as_str()?)?,
                    address: t["address"].as_str()?.to_owned(),
                })
            })
            .collect()
    }
}

/// The flows `subject` can complete for `op`.
fn flows_for(state: &AppState, op: Operation, subject: &Subject) -> Vec<Flow> {
    let reset_flows = [vec![uia::EMAIL.to_owned()], vec![uia::MSISDN.to_owned()]];
    let configured: &[Flow] = match op {
        Operation::Register => &state.config.registration.flows,
        Operation::Sensitive(kind) => state
            .config
            .uia
            .operations
            .get(kind.key())
            .unwrap_or(&state.config.uia.flows),
        Operation::PasswordReset => &reset_flows,
    };
    let owns = |medium: Medium| {
        !matches!(op, Operation::Sensitive(_))
            || subject.threepids.iter().any(|t| t.medium == medium)
    };
    // Whoever signs in through a provider can confirm through it, even
    // where the operator listed only the other stages.
    let with_sso: Vec<Flow>;
    let configured = if matches!(op, Operation::Sensitive(_))
        && subject.sso_linked
        && !configured.iter().flatten().any(|s| s == uia::SSO)
    {
        with_sso = configured
            .iter()
            .cloned()
            .chain(std::iter::once(vec![uia::SSO.to_owned()]))
            .collect();
        &with_sso[..]
    } else {
        configured
    };
    // Changed policies are asked for again before anything sensitive.
    let with_terms: Vec<Flow>;
    let configured = if matches!(op, Operation::Sensitive(_)) && subject.terms_outdated {
        with_terms = configured
            .iter()
            .map(|flow| {
                std::iter::once(uia::TERMS.to_owned())
                    .chain(flow.iter().cloned())
                    .collect()
            })
            .collect();
        &with_terms[..]
    } else {
        configured
    };
    uia::completable(configured, |stage| match stage {
        uia::PASSWORD => subject.user_id.is_some() && subject.has_password,
        uia::EMAIL => state.config.email.enabled && owns(Medium::Email),
        uia::MSISDN => state.config.sms.enabled && owns(Medium::Msisdn),
        uia::TERMS => !state.config.uia.terms.is_empty(),
        uia::RECAPTCHA => state.config.recaptcha.enabled,
        uia::SSO => subject.user_id.is_some() && subject.sso_linked,
        uia::DUMMY | uia::REGISTRATION_TOKEN => true,
        _ => false,
    })
}

fn params(state: &AppState, flows: &[Flow]) -> Value {
    let mut params = Map::new();
    if flows.iter().flatten().any(|s| s == uia::RECAPTCHA) {
        params.insert(
            uia::RECAPTCHA.into(),
            json!({ "public_key": state.config.recaptcha.site_key }),
        );
    }
    if flows.iter().flatten().any(|s| s == uia::TERMS) {
        let mut policies = Map::new();
        for (name, policy) in &state.config.uia.terms {
            let mut p = Map::new();
            p.insert("version".into(), json!(policy.version));
            for (lang, text) in &policy.languages {
                p.insert(lang.clone(), json!({"name": text.name, "url": text.url}));
            }
            policies.insert(name.clone(), Value::Object(p));
        }
        params.insert(uia::TERMS.into(), json!({ "policies": policies }));
    }
    Value::Object(params)
}

/// The 401 body: flows, params, session, completed (and errcode/error when
/// a stage failed).
fn challenge(
    state: &AppState,
    flows: &[Flow],
    session: &UiaSessionRecord,
    failure: Option<ApiError>,
) -> ApiError {
    let mut body = Map::new();
    body.insert(
        "flows".into(),
        Value::Array(flows.iter().map(|f| json!({ "stages": f })).collect()),
    );
    body.insert("params".into(), params(state, flows));
    body.insert("session".into(), json!(session.id));
    if !session.completed.is_empty() {
        body.insert("completed".into(), json!(session.completed));
    }
    let base = failure.unwrap_or_else(|| ApiError::new(ErrorKind::UiaChallenge, ""));
    base.with_body(body, 401)
}

fn new_session_id() -> String {
    // About 143 bits: unguessable, and safe in URLs (fallback pages).
    gatehouse_core::token::random_alphanumeric(24)
}

/// Runs user-interactive authentication for one request.
pub async fn authorise(
    state: &AppState,
    op: Operation,
    subject: &Subject,
    method: &Method,
    path: &str,
    body: &Value,
) -> ApiResult<Authorised> {
    authorise_remembering(state, op, subject, method, path, body, async |_| Ok(())).await
}

/// [`authorise`], for an operation whose parameters the session itself
/// carries from request to request (registration): `remember` updates the
/// session's data from this request before its stages are looked at, and
/// the session is bound to the method and path only — as Synapse does, and
/// as clients rely on (Element Web asks for the flows with an empty body
/// and sends the username and password only later, or not again).
#[allow(clippy::too_many_arguments)]
pub async fn authorise_remembering(
    state: &AppState,
    op: Operation,
    subject: &Subject,
    method: &Method,
    path: &str,
    body: &Value,
    remember: impl AsyncFnOnce(&mut Value) -> ApiResult<()>,
) -> ApiResult<Authorised> {
    let flows = flows_for(state, op, subject);
    if flows.is_empty() {
        return Err(ApiError::forbidden(
            "There is no way for this account to authenticate this request",
        ));
    }
    let bound_body = if op == Operation::Register {
        &Value::Null
    } else {
        body
    };
    let binding = Binding::new(
        subject.user_id.as_deref(),
        method.as_str(),
        path,
        bound_body,
    );
    let now = state.clock.now_ms();
    let auth = match body.get("auth") {
        None | Some(Value::Null) => None,
        Some(Value::Object(a)) => Some(a),
        Some(_) => return Err(ApiError::bad_json("'auth' must be an object")),
    };
    let session_id = auth.and_then(|a| a.get("session")).and_then(Value::as_str);
    let mut session = match session_id {
        None => {
            count_new_session(state, subject)?;
            let session = UiaSessionRecord {
                id: new_session_id(),
                binding: binding.clone(),
                completed: Vec::new(),
                data: json!({ "op": op.as_str() }),
                created_at: now,
                expires_at: now.saturating_add(state.config.uia.session_lifetime_ms),
                consumed: false,
            };
            state.store.create_uia_session(&session, now).await?;
            session
        }
        Some(id) => {
            let session = state
                .store
                .uia_session(id)
                .await?
                .filter(|s| s.expires_at > now);
            let session = session.ok_or_else(|| {
                ApiError::new(ErrorKind::Unknown, "Unknown or expired UIA session")
            })?;
            if session.consumed {
                return Err(ApiError::forbidden(
                    "This UIA session has already been used",
                ));
            }
            if let Some(reason) = session.binding.mismatch(&binding) {
                return Err(ApiError::forbidden(reason));
            }
            session
        }
    };
    let before = session.clone();
    remember(&mut session.data).await?;
    if session.data != before.data {
        save_progress(state, &before, &session).await?;
    }
    let Some(auth) = auth else {
        return Err(challenge(state, &flows, &session, None));
    };
    // A session whose stages all passed (its operation failed after them,
    // and it was released) is retried as it stands: completed stages
    // cannot be redone, and the spec answers such a retry with the call.
    let retry = uia::is_complete(&flows, &session.completed);
    if let Some(stage) = auth.get("type").and_then(Value::as_str).filter(|_| !retry) {
        if !uia::stage_allowed(&flows, &session.completed, stage) {
            let failure = ApiError::new(
                ErrorKind::Unauthorized,
                format!("Stage {stage} is not the next stage of any flow"),
            );
            return Err(challenge(state, &flows, &session, Some(failure)));
        }
        let seen = session.clone();
        match check_stage(state, stage, auth, subject, &mut session.data).await {
            Ok(()) => {
                uia::record(&mut session.completed, stage);
                save_progress(state, &seen, &session).await?;
            }
            Err(e) if e.kind.status() == 429 || e.kind == ErrorKind::Internal => return Err(e),
            Err(e) => return Err(challenge(state, &flows, &session, Some(e))),
        }
    }
    if !uia::is_complete(&flows, &session.completed) {
        return Err(challenge(state, &flows, &session, None));
    }
    if !state.store.consume_uia_session(&session.id).await? {
        return Err(ApiError::forbidden(
            "This UIA session has already been used",
        ));
    }
    session.consumed = true;
    if let Some(user) = subject.user_id.as_deref() {
        let user = gatehouse_core::user_id::UserId::from_trusted(user.to_owned());
        record_accepted_terms(state, &session, &user).await?;
    }
    Ok(Authorised { session })
}

/// One more session opened without an access token: a registration or a
/// password reset (`rate_limits.uia_sessions_per_address`).
///
/// Each session is a stored row until it expires, and anyone may ask for
/// one, so their number must be bounded. Every row is swept once expired
/// (whenever a session is created, and by the periodic prune), so the rows
/// one address keeps alive are those it opened within one session lifetime:
/// at most `burst_count + per_second × uia.session_lifetime_ms`: with the
/// defaults 20 + 0.5/s × 900 s = 470 per address (per /64 for IPv6), so
/// the total is bounded by the addresses seen within one lifetime. A
/// logged-in user's sessions are not counted here: they need an access
/// token, whose owner is accountable.
///
/// A caller that gives no address (`subject.ip`) shares one bucket with
/// every other such caller: still bounded, but then one client can hold
/// the others off, so callers should give it.
fn count_new_session(state: &AppState, subject: &Subject) -> ApiResult<()> {
    if subject.user_id.is_some() {
        return Ok(());
    }
    let ip = subject
        .ip
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    state
        .limits
        .uia_sessions_per_address
        .check(ip)
        .map_err(ApiError::limited)
}

/// One registration token tried from `ip`
/// (`rate_limits.registration_token_checks`): validity checks, and token
/// stages through the API or the fallback page.
pub(crate) fn check_token_limit(state: &AppState, ip: std::net::IpAddr) -> ApiResult<()> {
    state
        .limits
        .registration_token_checks
        .check(ip)
        .map_err(ApiError::limited)
}

/// Checks one stage's submission; records what it proved in `data`.
async fn check_stage(
    state: &AppState,
    stage: &str,
    auth: &Map<String, Value>,
    subject: &Subject,
    data: &mut Value,
) -> ApiResult<()> {
    let text = |key: &str| auth.get(key).and_then(Value::as_str).map(str::to_owned);
    match stage {
        uia::DUMMY | uia::TERMS => Ok(()),
        uia::PASSWORD => {
            let identifier_body = auth
                .get("identifier")
                .map(|v| serde_json::from_value(v.clone()))
                .transpose()
                .map_err(|e| ApiError::bad_json(format!("'auth.identifier': {e}")))?;
            let identifier = identifier_of(
                identifier_body,
                text("user"),
                text("medium"),
                text("address"),
            )?;
            let password =
                Zeroizing::new(text("password").ok_or_else(|| ApiError::missing("auth.password"))?);
            if let Some(ip) = subject.ip {
                crate::routes::login::check_address_limit(state, ip)?;
            }
            let account = check_password(state, &identifier, password, subject.ip).await?;
            // Someone else's right password answers exactly like a wrong
            // one: a UIA session must not tell whether it fits another account.
            if subject.user_id.as_deref() != Some(account.user_id.as_str()) {
                return Err(ApiError::forbidden("Invalid username or password"));
            }
            Ok(())
        }
        uia::REGISTRATION_TOKEN => {
            let token = text("token").ok_or_else(|| ApiError::missing("auth.token"))?;
            if data["registration_token"].as_str() == Some(token.as_str()) {
                return Ok(());
            }
            if data["registration_token"].is_string() {
                return Err(ApiError::new(
                    ErrorKind::Unauthorized,
                    "A registration token was already used in this session",
                ));
            }
            if let Some(ip) = subject.ip {
                check_token_limit(state, ip)?;
            }
            if !state
                .store
                .reserve_registration_token(&token, state.clock.now_ms())
                .await?
            {
                return Err(ApiError::new(
                    ErrorKind::Unauthorized,
                    "Invalid registration token",
                ));
            }
            data["registration_token"] = json!(token);
            Ok(())
        }
        uia::EMAIL | uia::MSISDN => {
            let medium = if stage == uia::EMAIL {
                Medium::Email
            } else {
                Medium::Msisdn
            };
            let creds = auth
                .get("threepid_creds")
                .or_else(|| auth.get("threepidCreds"))
                .and_then(Value::as_object)
                .ok_or_else(|| ApiError::missing("auth.threepid_creds"))?;
            let field = |k: &str| creds.get(k).and_then(Value::as_str);
            let (Some(sid), Some(secret)) = (field("sid"), field("client_secret")) else {
                return Err(ApiError::missing("auth.threepid_creds.sid / client_secret"));
            };
            let now = state.clock.now_ms();
            let validation = state.store.threepid_validation(sid).await?;
            let Some(v) = validation.filter(|v| {
                v.client_secret == secret && v.threepid.medium == medium && v.expires_at > now
            }) else {
                return Err(ApiError::new(
                    ErrorKind::ThreepidAuthFailed,
                    "Unknown validation session",
                ));
            };
            if v.validated_at.is_none() {
                return Err(ApiError::new(
                    ErrorKind::Unauthorized,
                    "This address has not been validated yet",
                ));
            }
            if subject.user_id.is_some() && !subject.threepids.contains(&v.threepid) {
                return Err(ApiError::forbidden(
                    "That address does not belong to this account",
                ));
            }
            if data["op"] == Operation::PasswordReset.as_str() {
                let owner = state.store.user_by_threepid(&v.threepid).await?;
                let owner = owner.ok_or_else(|| {
                    ApiError::new(ErrorKind::ThreepidNotFound, "No account has this address")
                })?;
                data["reset_user"] = json!(owner.user_id.as_str());
            }
            let entry =
                json!({"medium": v.threepid.medium.as_str(), "address": v.threepid.address});
            match data["threepids"].as_array_mut() {
                Some(list) if !list.contains(&entry) => list.push(entry),
                Some(_) => {}
                None => data["threepids"] = json!([entry]),
            }
            Ok(())
        }
        uia::RECAPTCHA => {
            let response = text("response").ok_or_else(|| ApiError::missing("auth.response"))?;
            let rc = &state.config.recaptcha;
            let verdict = state
                .messenger
                .http()
                .post(&rc.siteverify_url)
                .form(&[
                    ("secret", rc.secret_key.as_str()),
                    ("response", response.as_str()),
                ])
                .send()
                .await;
            let success = match verdict {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["success"].as_bool())
                    .unwrap_or(false),
                Err(e) => {
                    tracing::warn!(error = %e, "recaptcha siteverify unreachable");
                    false
                }
            };
            if success {
                Ok(())
            } else {
                Err(ApiError::new(
                    ErrorKind::CaptchaInvalid,
                    "Captcha verification failed",
                ))
            }
        }
        uia::SSO => Err(ApiError::new(
            ErrorKind::Unauthorized,
            "m.login.sso is completed through its fallback page",
        )),
        _ => Err(ApiError::new(
            ErrorKind::Unauthorized,
            format!("Stage {stage} is not available"),
        )),
    }
}

/// Who a stored session authenticates, and the flows offered to them.
pub(crate) async fn session_flows(
    state: &AppState,
    session: &UiaSessionRecord,
) -> ApiResult<(Subject, Vec<Flow>)> {
    let op = session.data["op"]
        .as_str()
        .and_then(Operation::parse)
        .unwrap_or(Operation::Sensitive(Sensitive::PasswordChange));
    let subject = match &session.binding.user_id {
        Some(u) => {
            subject_for_user(
                state,
                &gatehouse_core::user_id::UserId::from_trusted(u.clone()),
            )
            .await?
        }
        None => Subject::default(),
    };
    let flows = flows_for(state, op, &subject);
    Ok((subject, flows))
}
