//! Fallback pages (`/_matrix/client/v3/auth/{type}/fallback/web`): plain
//! server-rendered forms for clients that cannot do a stage themselves. On
//! success the page calls `window.onAuthDone()` or posts `"authDone"` to
//! its opener, as the spec says; the client then resubmits its request
//! with `auth: {session}`.
//!
//! Pages carry a strict Content-Security-Policy: nothing but their own
//! nonce'd script and style, forms posting back to this server only, and no
//! framing. The recaptcha page alone may load Google's widget.
//!
//! The email and phone pages are a person's, not a client's: they ask for
//! the address (or number), have the server send the link (or code) as
//! `requestToken` does, and keep the validation's `sid` and client secret
//! in a cookie for this page and UIA session; a button (or the code) then
//! completes the stage with them.

use axum::Form;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::{
    CONTENT_SECURITY_POLICY, COOKIE, HeaderName, REFERRER_POLICY, SET_COOKIE,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use gatehouse_core::ErrorKind;
use gatehouse_core::identifier::{IdentifierError, Medium, canonical_threepid, phone_to_msisdn};
use gatehouse_core::uia;
use gatehouse_store::UiaSessionRecord;
use minijinja::context;
use serde::Deserialize;
use serde_json::{Map, json};

use crate::error::ApiError;
use crate::extract::ClientIp;
use crate::routes::threepid::{self as threepid_routes, Purpose};
use crate::state::AppState;

/// Stages with a fallback page.
const STAGES: &[&str] = &[
    uia::PASSWORD,
    uia::RECAPTCHA,
    uia::TERMS,
    uia::REGISTRATION_TOKEN,
    uia::EMAIL,
    uia::MSISDN,
    uia::SSO,
];

/// Security headers for server-rendered pages: only this response's
/// nonce'd script and style may run (plus Google's widget on the recaptcha
/// page), forms post back here only, and nothing may frame the page.
pub fn strict_csp(nonce: &str, recaptcha: bool) -> [(HeaderName, HeaderValue); 3] {
    let (script_extra, frame) = if recaptcha {
        (
            " https://www.recaptcha.net https://www.gstatic.com",
            "; frame-src https://www.recaptcha.net",
        )
    } else {
        ("", "")
    };
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'{script_extra}; style-src 'nonce-{nonce}'{frame}; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    [
        (
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("default-src 'none'")),
        ),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ]
}

/// A fresh nonce for one page.
pub fn nonce() -> String {
    crate::routes::threepid_random(22)
}

/// The value of cookie `name` in a request.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// A `Set-Cookie` value for a page's own cookie: only sent back to `path`,
/// never readable by script, never on a cross-site POST, and `Secure`
/// when the server is reached over https. `max_age_s` 0 deletes it.
pub(crate) fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    path: &str,
    max_age_s: u64,
) -> HeaderValue {
    let secure = state
        .config
        .public_baseurl
        .as_deref()
        .is_some_and(|b| b.starts_with("https://"));
    let attrs = format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&attrs).unwrap_or(HeaderValue::from_static(""))
}

/// Compares a presented secret with the expected one in constant time.
pub(crate) fn same_secret(expected: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// A page with a title and a message (errors, confirmations).
pub fn message_page(
    state: &AppState,
    title: &str,
    message: &str,
    ok: bool,
    status: StatusCode,
) -> Response {
    let nonce = nonce();
    let class = if ok { "ok" } else { "error" };
    let html = state
        .messenger
        .templates()
        .get_template("page.html")
        .and_then(|t| {
            t.render(context! { title, message, message_class => class, nonce => &nonce })
        })
        .unwrap_or_else(|_| message.to_owned());
    (status, strict_csp(&nonce, false), Html(html)).into_response()
}

#[derive(Deserialize)]
pub struct SessionQuery {
    session: Option<String>,
}

#[derive(Default)]
struct Page<'a> {
    stage: &'a str,
    session: &'a str,
    user_id: Option<String>,
    done: bool,
    message: Option<String>,
    /// The field `message` is about (it points at the message).
    invalid: Option<&'static str>,
    /// Where the link or code went: the email and phone pages' second step.
    sent_to: Option<String>,
    /// What the person typed, kept when a step failed.
    email: Option<String>,
    country: Option<String>,
    phone: Option<String>,
}

impl<'a> Page<'a> {
    fn new(stage: &'a str, session: &'a str, user_id: Option<String>) -> Self {
        Self {
            stage,
            session,
            user_id,
            ..Self::default()
        }
    }
}

fn render(state: &AppState, page: Page<'_>, status: StatusCode) -> Response {
    let nonce = nonce();
    let policies: Vec<minijinja::Value> = state
        .config
        .uia
        .terms
        .values()
        .map(|p| {
            let text = p.languages.get("en").or_else(|| p.languages.values().next());
            context! { name => text.map(|t| t.name.clone()), url => text.map(|t| t.url.clone()), version => p.version.clone() }
        })
        .collect();
    let title = match page.stage {
        uia::PASSWORD => "Confirm your password",
        uia::RECAPTCHA => "Are you human?",
        uia::TERMS => "Terms and conditions",
        uia::REGISTRATION_TOKEN => "Registration token",
        uia::MSISDN => "Confirm your phone number",
        _ => "Confirm your email address",
    };
    let action = format!("/_matrix/client/v3/auth/{}/fallback/web", page.stage);
    let html = state.messenger.templates().get_template("fallback.html").and_then(|t| {
        t.render(context! {
            title, stage => page.stage, session => page.session, user_id => page.user_id, done => page.done,
            message => page.message, message_class => "error", nonce => &nonce, action, policies,
            site_key => state.config.recaptcha.site_key.clone(), invalid => page.invalid,
            sent_to => page.sent_to, email => page.email, country => page.country, phone => page.phone,
        })
    });
    match html {
        Ok(html) => (
            status,
            strict_csp(&nonce, page.stage == uia::RECAPTCHA),
            Html(html),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "fallback page rendering failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                strict_csp(&nonce, false),
                Html("Internal error".to_owned()),
            )
                .into_response()
        }
    }
}

fn error_page(state: &AppState, message: &str, status: StatusCode) -> Response {
    message_page(state, "Cannot continue", message, false, status)
}

/// `GET …/fallback/web?session=`: the form.
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<SessionQuery>, QueryRejection>,
) -> Response {
    let (Ok(Path(stage)), Ok(Query(q))) = (path, query) else {
        return error_page(
            &state,
            "This address is not a valid fallback page.",
            StatusCode::BAD_REQUEST,
        );
    };
    // The stages a delegating homeserver offers for a cross-signing reset
    // are completed on the account page.
    if matches!(stage.as_str(), "m.oauth" | "org.matrix.cross_signing_reset")
        && state.homeserver.is_some()
        && let Some(account) = state.account_page_url()
    {
        return axum::response::Redirect::to(&format!(
            "{account}?action=org.matrix.cross_signing_reset"
        ))
        .into_response();
    }
    if !STAGES.contains(&stage.as_str()) {
        return error_page(
            &state,
            "There is no fallback page for this stage.",
            StatusCode::NOT_FOUND,
        );
    }
    let Some(session_id) = q.session else {
        return error_page(
            &state,
            "The session parameter is missing.",
            StatusCode::BAD_REQUEST,
        );
    };
    match crate::uia::live_session(&state, &session_id).await {
        Ok(Some(session)) => match crate::uia::stage_is_next(&state, &session, &stage).await {
            Ok(false) => error_page(
                &state,
                "This session does not need this step now.",
                StatusCode::BAD_REQUEST,
            ),
            Err(_) => error_page(
                &state,
                "Something went wrong; please try again.",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            Ok(true) if stage == uia::SSO => {
                crate::routes::sso_fallback(&state, &session_id, &session).await
            }
            Ok(true) => {
                let mut page = Page::new(&stage, &session_id, session.binding.user_id);
                // A link or code already sent from this browser: its second step.
                if let Some(pending) = pending(&state, &headers, &stage, &session_id).await {
                    page.sent_to = Some(pending.shown_address());
                }
                render(&state, page, StatusCode::OK)
            }
        },
        Ok(None) => error_page(
            &state,
            "This session is unknown, expired or already used.",
            StatusCode::BAD_REQUEST,
        ),
        Err(_) => error_page(
            &state,
            "Something went wrong; please try again.",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    }
}

/// `POST …/fallback/web`: the form's answer completes the stage.
pub async fn submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    form: Result<
        Form<std::collections::HashMap<String, String>>,
        axum::extract::rejection::FormRejection,
    >,
) -> Response {
    let Ok(Path(stage)) = path else {
        return error_page(
            &state,
            "This address is not a valid fallback page.",
            StatusCode::BAD_REQUEST,
        );
    };
    let Ok(Form(form)) = form else {
        return error_page(
            &state,
            "The form could not be read.",
            StatusCode::BAD_REQUEST,
        );
    };
    if !STAGES.contains(&stage.as_str()) {
        return error_page(
            &state,
            "There is no fallback page for this stage.",
            StatusCode::NOT_FOUND,
        );
    }
    let Some(session_id) = form.get("session").cloned() else {
        return error_page(
            &state,
            "The session parameter is missing.",
            StatusCode::BAD_REQUEST,
        );
    };
    let session = match crate::uia::live_session(&state, &session_id).await {
        Ok(Some(s)) => s,
        _ => {
            return error_page(
                &state,
                "This session is unknown, expired or already used.",
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    // The email and phone pages' own steps; a form carrying `sid` and
    // `client_secret` itself (as this page once asked for) still works.
    if matches!(stage.as_str(), uia::EMAIL | uia::MSISDN) && form.contains_key("step") {
        let step = ThreepidStep {
            state: &state,
            ip,
            stage: &stage,
            session_id: &session_id,
            session: &session,
            form: &form,
        };
        let name = step.field("step");
        return step.run(&headers, &name).await;
    }
    let mut auth = Map::new();
    auth.insert("type".into(), json!(stage));
    match stage.as_str() {
        uia::PASSWORD => {
            let user = session.binding.user_id.clone().unwrap_or_default();
            auth.insert(
                "identifier".into(),
                json!({"type": "m.id.user", "user": user}),
            );
            auth.insert("password".into(), json!(field("password")));
        }
        uia::REGISTRATION_TOKEN => {
            auth.insert("token".into(), json!(field("token").trim()));
        }
        uia::RECAPTCHA => {
            auth.insert("response".into(), json!(field("g-recaptcha-response")));
        }
        uia::EMAIL | uia::MSISDN => {
            auth.insert(
                "threepid_creds".into(),
                json!({"sid": field("sid").trim(), "client_secret": field("client_secret").trim()}),
            );
        }
        _ => {}
    }
    if stage == uia::TERMS && field("accept") != "yes" {
        let mut page = Page::new(&stage, &session_id, session.binding.user_id);
        page.message = Some("Please accept the policies to continue.".into());
        return render(&state, page, StatusCode::BAD_REQUEST);
    }
    let outcome = crate::uia::complete_stage(&state, &session_id, &stage, &auth, ip).await;
    let mut page = Page::new(&stage, &session_id, session.binding.user_id);
    let status = match outcome {
        Ok(()) => {
            page.done = true;
            StatusCode::OK
        }
        Err(e) => {
            page.message = Some(e.message.into_owned());
            StatusCode::UNAUTHORIZED
        }
    };
    render(&state, page, status)
}

/// The cookie keeping `session:sid:client_secret` for the email or phone
/// page (one per stage, by its path).
const PENDING_COOKIE: &str = "gatehouse_fallback_3pid";

fn stage_path(stage: &str) -> String {
    format!("/_matrix/client/v3/auth/{stage}/fallback/web")
}

fn medium_of(stage: &str) -> Medium {
    if stage == uia::MSISDN {
        Medium::Msisdn
    } else {
        Medium::Email
    }
}

/// A link or code this browser had sent for a UIA session, still alive.
struct Pending {
    sid: String,
    client_secret: String,
    medium: Medium,
    address: String,
}

impl Pending {
    fn shown_address(&self) -> String {
        match self.medium {
            Medium::Msisdn => format!("+{}", self.address),
            Medium::Email => self.address.clone(),
        }
    }
}

/// The validation this browser started for `session_id` on `stage`'s page,
/// if it is still alive (its cookie names it; the store has the rest).
async fn pending(
    state: &AppState,
    headers: &HeaderMap,
    stage: &str,
    session_id: &str,
) -> Option<Pending> {
    let mut parts = cookie(headers, PENDING_COOKIE)?.splitn(3, ':');
    let (session, sid, secret) = (parts.next()?, parts.next()?, parts.next()?);
    if session != session_id {
        return None;
    }
    let validation = state.store.threepid_validation(sid).await.ok()??;
    let medium = medium_of(stage);
    let alive = validation.client_secret.matches(secret)
        && validation.threepid.medium == medium
        && validation.expires_at > state.clock.now_ms();
    alive.then(|| Pending {
        sid: sid.to_owned(),
        client_secret: secret.to_owned(),
        medium,
        address: validation.threepid.address,
    })
}

/// One submission of the email or phone page: `send` (the address or
/// number), `check` (the emailed link was opened) or `code` (from the SMS).
struct ThreepidStep<'a> {
    state: &'a AppState,
    ip: std::net::IpAddr,
    stage: &'a str,
    session_id: &'a str,
    session: &'a UiaSessionRecord,
    form: &'a std::collections::HashMap<String, String>,
}

impl ThreepidStep<'_> {
    fn field(&self, key: &str) -> String {
        self.form
            .get(key)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    }

    fn page(&self) -> Page<'_> {
        Page::new(
            self.stage,
            self.session_id,
            self.session.binding.user_id.clone(),
        )
    }

    async fn run(self, headers: &HeaderMap, step: &str) -> Response {
        match step {
            "send" => self.send().await,
            "check" | "code" => {
                let Some(pending) = pending(self.state, headers, self.stage, self.session_id).await
                else {
                    let mut page = self.page();
                    page.message = Some(match self.stage {
                        uia::MSISDN => "This code has expired or was sent from another browser. Enter your phone number again.".into(),
                        _ => "This link has expired or was sent from another browser. Enter your email address again.".into(),
                    });
                    return render(self.state, page, StatusCode::BAD_REQUEST);
                };
                self.confirm(pending, step == "code").await
            }
            _ => error_page(
                self.state,
                "The form could not be read.",
                StatusCode::BAD_REQUEST,
            ),
        }
    }

    /// Sends the link or code, as `requestToken` does, and remembers the
    /// validation in this browser.
    async fn send(&self) -> Response {
        let state = self.state;
        let medium = medium_of(self.stage);
        let field = if medium == Medium::Email {
            "email"
        } else {
            "phone"
        };
        let mut page = self.page();
        page.email = Some(self.field("email"));
        page.country = Some(self.field("country"));
        page.phone = Some(self.field("phone"));
        let refused = |mut page: Page<'_>, message: String, field, status| {
            page.message = Some(message);
            page.invalid = Some(field);
            render(state, page, status)
        };
        if let Err(wait) = state.limits.threepid_requests_per_address.check(self.ip) {
            return refused(
                page,
                threepid_refusal(&ApiError::limited(wait), medium),
                field,
                StatusCode::TOO_MANY_REQUESTS,
            );
        }
        // What the address must be: free to register, bound for a password
        // reset, and the signed-in user's own otherwise.
        let purpose = match self.session.data["op"].as_str() {
            Some("register") => Purpose::Register,
            Some("password_reset") => Purpose::PasswordReset,
            _ => Purpose::Confirm,
        };
        let threepid = match medium {
            Medium::Email => canonical_threepid(Medium::Email, &self.field("email")).ok(),
            Medium::Msisdn => match phone_to_msisdn(&self.field("country"), &self.field("phone")) {
                Ok(address) => Some(gatehouse_core::identifier::Threepid {
                    medium: Medium::Msisdn,
                    address,
                }),
                Err(IdentifierError::InvalidCountry(_)) => {
                    return refused(
                        page,
                        "Enter your country's two-letter code, such as GB or US.".into(),
                        "country",
                        StatusCode::BAD_REQUEST,
                    );
                }
                Err(_) => None,
            },
        };
        let Some(threepid) = threepid else {
            let message = match medium {
                Medium::Email => "That is not an email address.",
                Medium::Msisdn => "That is not a phone number of this country.",
            };
            return refused(page, message.into(), field, StatusCode::BAD_REQUEST);
        };
        let sensitive = !matches!(
            self.session.data["op"].as_str(),
            Some("register" | "password_reset")
        );
        if sensitive && let Some(user) = &self.session.binding.user_id {
            let user = gatehouse_core::user_id::UserId::from_trusted(user.clone());
            match crate::uia::subject_for_user(state, &user).await {
                Ok(subject) if subject.threepids.contains(&threepid) => {}
                Ok(_) => {
                    let message = match medium {
                        Medium::Email => "That address is not linked to your account.",
                        Medium::Msisdn => "That number is not linked to your account.",
                    };
                    return refused(page, message.into(), field, StatusCode::BAD_REQUEST);
                }
                Err(e) => {
                    let status = status_of(&e);
                    return refused(page, threepid_refusal(&e, medium), field, status);
                }
            }
        }
        let client_secret = crate::routes::threepid_random(30);
        let sent = match medium {
            Medium::Email => {
                threepid_routes::request_email_token(
                    state,
                    purpose,
                    threepid_routes::EmailTokenBody::first(
                        client_secret.clone(),
                        threepid.address.clone(),
                        None,
                    ),
                )
                .await
            }
            Medium::Msisdn => {
                let body = serde_json::from_value(json!({
                    "client_secret": client_secret,
                    "country": self.field("country"),
                    "phone_number": self.field("phone"),
                    "send_attempt": 1,
                }));
                match body {
                    Ok(body) => threepid_routes::request_msisdn_token(state, purpose, body).await,
                    Err(_) => Err(ApiError::internal()),
                }
            }
        };
        let sid = match sent {
            Ok(axum::Json(answer)) => answer["sid"].as_str().unwrap_or_default().to_owned(),
            Err(e) => {
                let status = status_of(&e);
                return refused(page, threepid_refusal(&e, medium), field, status);
            }
        };
        let lifetime_ms = match medium {
            Medium::Email => state.config.email.token_lifetime_ms,
            Medium::Msisdn => state.config.sms.token_lifetime_ms,
        };
        let pending = Pending {
            sid,
            client_secret,
            medium,
            address: threepid.address,
        };
        let mut page = self.page();
        page.sent_to = Some(pending.shown_address());
        let mut response = render(state, page, StatusCode::OK);
        response.headers_mut().append(
            SET_COOKIE,
            set_cookie(
                state,
                PENDING_COOKIE,
                &format!(
                    "{}:{}:{}",
                    self.session_id, pending.sid, pending.client_secret
                ),
                &stage_path(self.stage),
                lifetime_ms / 1000,
            ),
        );
        response
    }

    /// Completes the stage with the kept validation (after checking the
    /// SMS code, for a phone).
    async fn confirm(&self, pending: Pending, with_code: bool) -> Response {
        let state = self.state;
        let again = |message: String, invalid: Option<&'static str>, status| {
            let mut page = self.page();
            page.sent_to = Some(pending.shown_address());
            page.message = Some(message);
            page.invalid = invalid;
            render(state, page, status)
        };
        if with_code {
            let code = self.field("code");
            if code.is_empty() {
                return again(
                    "Enter the code from the text message.".into(),
                    Some("code"),
                    StatusCode::BAD_REQUEST,
                );
            }
            let body = serde_json::from_value(json!({
                "sid": pending.sid,
                "client_secret": pending.client_secret,
                "token": code,
            }));
            let Ok(body) = body else {
                return again(
                    "Something went wrong; please try again.".into(),
                    None,
                    StatusCode::INTERNAL_SERVER_ERROR,
                );
            };
            let checked = threepid_routes::submit_token(
                State(state.clone()),
                crate::extract::MatrixJson(body),
            )
            .await;
            match checked {
                Ok(axum::Json(v)) if v["success"] == json!(true) => {}
                Ok(_) => {
                    return again(
                        "That code is not right, or too many wrong codes were tried. Check it, or send a new one.".into(),
                        Some("code"),
                        StatusCode::UNAUTHORIZED,
                    );
                }
                Err(e) => {
                    let status = status_of(&e);
                    return again(threepid_refusal(&e, Medium::Msisdn), Some("code"), status);
                }
            }
        }
        let mut auth = Map::new();
        auth.insert("type".into(), json!(self.stage));
        auth.insert(
            "threepid_creds".into(),
            json!({"sid": pending.sid, "client_secret": pending.client_secret}),
        );
        match crate::uia::complete_stage(state, self.session_id, self.stage, &auth, self.ip).await
        {
            Ok(()) => {
                let mut page = self.page();
                page.done = true;
                let mut response = render(state, page, StatusCode::OK);
                response.headers_mut().append(
                    SET_COOKIE,
                    set_cookie(state, PENDING_COOKIE, "", &stage_path(self.stage), 0),
                );
                response
            }
            Err(e) if e.kind == ErrorKind::Unauthorized && pending.medium == Medium::Email => again(
                "The link has not been opened yet. Open it from the email, then press the button again.".into(),
                None,
                StatusCode::UNAUTHORIZED,
            ),
            Err(e) => again(e.message.into_owned(), None, StatusCode::UNAUTHORIZED),
        }
    }
}

fn status_of(e: &ApiError) -> StatusCode {
    StatusCode::from_u16(e.status.unwrap_or_else(|| e.kind.status()))
        .unwrap_or(StatusCode::BAD_REQUEST)
}

/// What the page says when a link or code could not be sent.
fn threepid_refusal(e: &ApiError, medium: Medium) -> String {
    let (address, messages) = match medium {
        Medium::Email => ("address", "email"),
        Medium::Msisdn => ("number", "text messages"),
    };
    match e.kind {
        ErrorKind::LimitExceeded { .. } => "Too many requests; wait a little and try again.".into(),
        ErrorKind::ThreepidInUse => format!("That {address} is already in use."),
        ErrorKind::ThreepidNotFound => format!("No account has that {address}."),
        ErrorKind::ThreepidMediumNotSupported => format!("This server does not send {messages}."),
        ErrorKind::InvalidParam => match medium {
            Medium::Email => "That is not an email address.".into(),
            Medium::Msisdn => "That is not a phone number of this country.".into(),
        },
        _ if e.status == Some(502) => format!(
            "The {} could not be sent; please try again later.",
            if medium == Medium::Email {
                "email"
            } else {
                "text message"
            }
        ),
        _ => "Something went wrong; please try again.".into(),
    }
}
