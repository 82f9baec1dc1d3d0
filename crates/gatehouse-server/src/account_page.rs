//! The account page (`account_management_uri`): sign in with a password,
//! then see and end sessions, change the password, manage email
//! addresses, deactivate, and approve a cross-signing reset. It honours the
//! spec's account-management `action` parameter, so a client can send its
//! user straight to the right place.
//!
//! Server-rendered forms, no script, the strict CSP of the fallback pages.
//! Cross-site request forgery is stopped twice: the session cookie is
//! `SameSite=Lax` (no cross-site POST carries it) and every form echoes a
//! token bound to the browser session (before sign-in, a double-submit
//! cookie).

use axum::Form;
use axum::extract::{Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use gatehouse_core::identifier::{Identifier, Medium, Threepid, canonical_threepid};
use gatehouse_core::token;
use gatehouse_store::{EndSessions, HomeserverChange, WebSession};
use minijinja::context;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::extract::ClientIp;
use crate::fallback::{cookie, nonce, same_secret, strict_csp};
use crate::homeserver;
use crate::state::AppState;

const PATH: &str = "/_gatehouse/account";
const SESSION_COOKIE: &str = "gatehouse_account";
const CSRF_COOKIE: &str = "gatehouse_account_csrf";
/// An email address waiting for its link to be opened (`sid:client_secret`),
/// so that the tab the link opens can finish adding it.
const PENDING_COOKIE: &str = "gatehouse_account_pending";
/// How long a sign-in on this page lasts.
const SESSION_LIFETIME_MS: u64 = 60 * 60 * 1000;

#[derive(Deserialize, Default)]
pub struct PageQuery {
    action: Option<String>,
    device_id: Option<String>,
    /// `action=link`: the provider, and the page's form token.
    idp: Option<String>,
    csrf: Option<String>,
}

/// Which part of the page to show, from the spec's `action` values.
fn view_of(action: Option<&str>) -> &'static str {
    match action {
        Some("org.matrix.sessions_list") => "sessions",
        // One session, with its end button: view it, or end it.
        Some("org.matrix.session_view" | "org.matrix.session_end") => "session",
        Some("org.matrix.cross_signing_reset") => "cross_signing_reset",
        Some("org.matrix.account_deactivate") => "deactivate",
        Some("change_password") => "password",
        _ => "profile",
    }
}

/// This page's cookie: [`crate::fallback::set_cookie`] on its path.
fn set_cookie(state: &AppState, name: &str, value: &str, max_age_s: u64) -> HeaderValue {
    crate::fallback::set_cookie(state, name, value, PATH, max_age_s)
}

/// The signed-in browser, if any.
async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
) -> Option<(token::TokenHash, WebSession)> {
    let id = cookie(headers, SESSION_COOKIE)?;
    let hash = token::hash(id);
    let session = state
        .store
        .web_session(&hash, state.clock.now_ms())
        .await
        .ok()??;
    Some((hash, session))
}

/// What one rendering of the page shows.
#[derive(Default)]
struct View<'a> {
    view: &'a str,
    device_id: Option<&'a str>,
    /// The username a failed sign-in was for (kept in the field).
    username: Option<String>,
    message: Option<String>,
    ok: bool,
    pending: Option<(String, String, String)>,
}

async fn render(
    state: &AppState,
    session: Option<&WebSession>,
    csrf: &str,
    view: View<'_>,
    status: StatusCode,
) -> Response {
    let nonce = nonce();
    let mut devices = Vec::new();
    let mut emails = Vec::new();
    if let Some(s) = session {
        if matches!(view.view, "sessions" | "session") {
            let all = state.store.devices(&s.user_id).await.unwrap_or_default();
            devices = all
                .into_iter()
                .filter(|d| view.view == "sessions" || Some(d.device_id.as_str()) == view.device_id)
                .map(|d| {
                    context! {
                        name => d.display_name.clone().unwrap_or_else(|| d.device_id.clone()),
                        device_id => d.device_id,
                        last_seen => d.last_seen_at.map(crate::routes::threepid::format_ms),
                        ip => d.last_seen_ip,
                    }
                })
                .collect();
        }
        emails = state
            .store
            .threepids(&s.user_id)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.threepid.medium == Medium::Email)
            .map(|t| t.threepid.address)
            .collect();
    }
    let title = if session.is_some() {
        "Your account"
    } else {
        "Sign in"
    };
    let (pending_sid, pending_secret, pending_email) = view.pending.unwrap_or_default();
    let (linked, linkable) = match session {
        Some(s) if view.view == "profile" => crate::account_links::listed(state, &s.user_id).await,
        _ => (Vec::new(), Vec::new()),
    };
    let sso_sign_in = crate::account_links::sign_in_options(state);
    let html = state
        .messenger
        .templates()
        .get_template("account.html")
        .and_then(|t| {
            t.render(context! {
                title, nonce => &nonce, form_action => PATH, csrf,
                signed_in => session.is_some(),
                user_id => session.map(|s| s.user_id.to_string()),
                server_name => state.config.server_name.clone(),
                view => view.view, return_action => action_of_view(view.view),
                device_id => view.device_id.unwrap_or_default(), username => view.username,
                message => view.message, message_class => if view.ok { "ok" } else { "error" },
                devices, emails, email_enabled => state.config.email.enabled,
                pending_sid, pending_secret, pending_email, linked, linkable, sso_sign_in,
            })
        });
    match html {
        Ok(html) => (status, strict_csp(&nonce, false), Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "account page rendering failed");
            crate::fallback::message_page(
                state,
                "Something went wrong",
                "The page could not be shown.",
                false,
                StatusCode::INTERNAL_SERVER_ERROR,
            )
        }
    }
}

/// `GET /_gatehouse/account`.
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = query.unwrap_or_default();
    let view = View {
        view: view_of(q.action.as_deref()),
        device_id: q.device_id.as_deref(),
        ..View::default()
    };
    match signed_in(&state, &headers).await {
        Some((_, session)) if q.action.as_deref() == Some("link") => {
            crate::account_links::start_link(&state, &headers, &session, q.idp, q.csrf).await
        }
        Some((_, session)) => {
            let csrf = session.csrf_token.clone();
            let mut view = view;
            if view.view == "profile" {
                view.pending = pending_email(&state, &headers).await;
            }
            render(&state, Some(&session), &csrf, view, StatusCode::OK).await
        }
        None => sign_in_page(&state, view, StatusCode::OK).await,
    }
}

/// The address this browser is adding, if its validation is still alive.
async fn pending_email(state: &AppState, headers: &HeaderMap) -> Option<(String, String, String)> {
    let (sid, secret) = cookie(headers, PENDING_COOKIE)?.split_once(':')?;
    let validation = state.store.threepid_validation(sid).await.ok()??;
    (validation.client_secret.matches(secret) && validation.expires_at > state.clock.now_ms()).then(
        || {
            (
                sid.to_owned(),
                secret.to_owned(),
                validation.threepid.address,
            )
        },
    )
}

/// The sign-in form, with a fresh double-submit token.
async fn sign_in_page(state: &AppState, view: View<'_>, status: StatusCode) -> Response {
    let csrf = crate::routes::threepid_random(30);
    let mut response = render(state, None, &csrf, view, status).await;
    response
        .headers_mut()
        .append(SET_COOKIE, set_cookie(state, CSRF_COOKIE, &csrf, 3600));
    response
}

/// Every form on the page posts here; `action` says what it does.
#[derive(Deserialize)]
pub struct ActForm {
    action: String,
    csrf: Option<String>,
    username: Option<String>,
    password: Option<crate::routes::login::Secret>,
    return_action: Option<String>,
    device_id: Option<String>,
    email: Option<String>,
    sid: Option<String>,
    client_secret: Option<String>,
    current_password: Option<crate::routes::login::Secret>,
    provider: Option<String>,
    subject: Option<String>,
    new_password: Option<crate::routes::login::Secret>,
    new_password_confirm: Option<crate::routes::login::Secret>,
    logout_devices: Option<String>,
    erase: Option<String>,
}

/// `POST /_gatehouse/account`.
pub async fn act(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Result<Form<ActForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return crate::fallback::message_page(
            &state,
            "Cannot continue",
            "The form was not complete.",
            false,
            StatusCode::BAD_REQUEST,
        );
    };
    let presented = form.csrf.clone().unwrap_or_default();
    if form.action == "sign_in" {
        let expected = cookie(&headers, CSRF_COOKIE).unwrap_or_default();
        if expected.is_empty() || !same_secret(expected, &presented) {
            return forged(&state);
        }
        return sign_in(&state, ip, form).await;
    }
    let Some((hash, session)) = signed_in(&state, &headers).await else {
        let view = View {
            view: "profile",
            message: Some("Your sign-in has expired; please sign in again.".into()),
            ..View::default()
        };
        return sign_in_page(&state, view, StatusCode::UNAUTHORIZED).await;
    };
    if !same_secret(&session.csrf_token, &presented) {
        return forged(&state);
    }
    let done = perform(&state, &hash, &session, form).await;
    let clears_pending =
        matches!(&done, Ok(Done::Shown { message, .. }) if message.ends_with(" added."));
    let (view, message, ok, pending, status) = match done {
        Ok(Done::SignedOut) => {
            let view = View {
                view: "profile",
                message: Some("You are signed out of this page.".into()),
                ok: true,
                ..View::default()
            };
            let mut response = sign_in_page(&state, view, StatusCode::OK).await;
            response
                .headers_mut()
                .append(SET_COOKIE, set_cookie(&state, SESSION_COOKIE, "", 0));
            return response;
        }
        Ok(Done::Deactivated) => {
            return crate::fallback::message_page(
                &state,
                "Account deactivated",
                "Your account has been deactivated and all its sessions ended.",
                true,
                StatusCode::OK,
            );
        }
        Ok(Done::Shown {
            view,
            message,
            pending,
        }) => (view, message, true, pending, StatusCode::OK),
        Err((view, message, status)) => (view, message, false, None, status),
    };
    let csrf = session.csrf_token.clone();
    let pending_cookie = pending.as_ref().map(|(sid, secret, _)| {
        set_cookie(&state, PENDING_COOKIE, &format!("{sid}:{secret}"), 3600)
    });
    let view = View {
        view,
        message: Some(message),
        ok,
        pending,
        ..View::default()
    };
    let mut response = render(&state, Some(&session), &csrf, view, status).await;
    if let Some(c) = pending_cookie {
        response.headers_mut().append(SET_COOKIE, c);
    } else if clears_pending {
        response
            .headers_mut()
            .append(SET_COOKIE, set_cookie(&state, PENDING_COOKIE, "", 0));
    }
    response
}

fn forged(state: &AppState) -> Response {
    crate::fallback::message_page(
        state,
        "Cannot continue",
        "This form has expired or did not come from this page. Reload the page and try again.",
        false,
        StatusCode::FORBIDDEN,
    )
}

async fn sign_in(state: &AppState, ip: std::net::IpAddr, form: ActForm) -> Response {
    // Only the actions this page knows go back into a URL.
    let return_action = action_of_view(view_of(form.return_action.as_deref()));
    let device = form.device_id.clone().filter(|d| !d.is_empty());
    let typed_username = form.username.clone();
    let failed = |message: String, status| {
        let view = View {
            view: view_of(Some(return_action)),
            device_id: device.as_deref(),
            username: typed_username.clone(),
            message: Some(message),
            ..View::default()
        };
        (view, status)
    };
    let attempt = async {
        crate::routes::login::check_address_limit(state, ip)?;
        let user = form
            .username
            .filter(|u| !u.is_empty())
            .ok_or_else(|| ApiError::missing("username"))?;
        let password = form
            .password
            .ok_or_else(|| ApiError::missing("password"))?
            .take();
        crate::password_auth::check_password(state, &Identifier::User { user }, password, Some(ip))
            .await
    };
    let account = match attempt.await {
        Ok(account) => account,
        Err(e) => {
            let (view, status) = failed(
                match e.kind {
                    gatehouse_core::ErrorKind::LimitExceeded { .. } => {
                        "Too many attempts; wait a little and try again.".to_owned()
                    }
                    gatehouse_core::ErrorKind::UserDeactivated => {
                        "This account has been deactivated.".to_owned()
                    }
                    _ => "Wrong username or password.".to_owned(),
                },
                StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::FORBIDDEN),
            );
            return sign_in_page(state, view, status).await;
        }
    };
    // Back to where the client sent its user, now signed in.
    let mut target = format!("{PATH}?action={return_action}");
    if let Some(d) = &device {
        target.push_str("&device_id=");
        target.push_str(&crate::routes::threepid::urlencode(d));
    }
    match open_session(state, account.user_id, &target).await {
        Ok(response) => response,
        Err(()) => {
            let (view, status) = failed(
                "Something went wrong; try again.".into(),
                StatusCode::INTERNAL_SERVER_ERROR,
            );
            sign_in_page(state, view, status).await
        }
    }
}

/// Signs this browser in to the page as `user_id` (after a password, or
/// single sign-on) and sends it to `target`.
pub(crate) async fn open_session(
    state: &AppState,
    user_id: gatehouse_core::user_id::UserId,
    target: &str,
) -> Result<Response, ()> {
    let id = crate::routes::threepid_random(30);
    let session = WebSession {
        user_id,
        csrf_token: crate::routes::threepid_random(30),
        expires_at: state.clock.now_ms().saturating_add(SESSION_LIFETIME_MS),
    };
    if let Err(e) = state
        .store
        .create_web_session(&token::hash(&id), &session)
        .await
    {
        tracing::error!(error = %e, "could not store an account-page session");
        return Err(());
    }
    let mut response = Redirect::to(target).into_response();
    let headers = response.headers_mut();
    headers.append(
        SET_COOKIE,
        set_cookie(state, SESSION_COOKIE, &id, SESSION_LIFETIME_MS / 1000),
    );
    headers.append(SET_COOKIE, set_cookie(state, CSRF_COOKIE, "", 0));
    Ok(response)
}

/// The `action` that shows a view (the inverse of [`view_of`]).
fn action_of_view(view: &str) -> &'static str {
    match view {
        "sessions" => "org.matrix.sessions_list",
        "session" => "org.matrix.session_view",
        "cross_signing_reset" => "org.matrix.cross_signing_reset",
        "deactivate" => "org.matrix.account_deactivate",
        "password" => "change_password",
        _ => "org.matrix.profile",
    }
}

enum Done {
    SignedOut,
    Deactivated,
    Shown {
        view: &'static str,
        message: String,
        pending: Option<(String, String, String)>,
    },
}

type Outcome = Result<Done, (&'static str, String, StatusCode)>;

fn shown(view: &'static str, message: impl Into<String>) -> Outcome {
    Ok(Done::Shown {
        view,
        message: message.into(),
        pending: None,
    })
}

fn refused(view: &'static str, message: impl Into<String>) -> Outcome {
    Err((view, message.into(), StatusCode::BAD_REQUEST))
}

fn broken(view: &'static str) -> impl Fn(ApiError) -> (&'static str, String, StatusCode) {
    move |e| {
        let message = match e.kind {
            gatehouse_core::ErrorKind::LimitExceeded { .. } => {
                "Too many attempts; wait a little and try again."
            }
            gatehouse_core::ErrorKind::Forbidden => "That password is not right.",
            _ => "Something went wrong; nothing was changed. Try again shortly.",
        };
        let status = StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::BAD_REQUEST);
        (view, message.to_owned(), status)
    }
}

/// Checks the signed-in user's password again (for what cannot be undone).
async fn confirm_password(
    state: &AppState,
    session: &WebSession,
    password: Option<crate::routes::login::Secret>,
) -> Result<(), ApiError> {
    let password = password
        .ok_or_else(|| ApiError::missing("password"))?
        .take();
    let user = session.user_id.to_string();
    // Signed in already: failures count against the account alone.
    crate::password_auth::check_password(state, &Identifier::User { user }, password, None)
        .await
        .map(drop)
}

async fn perform(
    state: &AppState,
    hash: &token::TokenHash,
    session: &WebSession,
    form: ActForm,
) -> Outcome {
    let user = &session.user_id;
    match form.action.as_str() {
        "unlink" => match crate::account_links::unlink(
            state,
            user,
            form.provider.as_deref().unwrap_or_default(),
            form.subject.as_deref().unwrap_or_default(),
        )
        .await
        {
            Ok(message) => shown("profile", message),
            Err(message) => refused("profile", message),
        },
        "sign_out" => {
            state
                .store
                .delete_web_session(hash)
                .await
                .map_err(|e| broken("profile")(e.into()))?;
            Ok(Done::SignedOut)
        }
        "org.matrix.session_end" => {
            let device = form.device_id.unwrap_or_default();
            if state
                .store
                .device(user, &device)
                .await
                .map_err(|e| broken("sessions")(e.into()))?
                .is_none()
            {
                return refused("sessions", "There is no such session.");
            }
            homeserver::changing(
                state,
                user,
                homeserver::devices_deleted([device.clone()]),
                async { Ok(state.store.delete_device(user, &device).await?) },
            )
            .await
            .map_err(broken("sessions"))?;
            state.sessions.invalidate_device(user, &device);
            shown("sessions", format!("Session {device} ended."))
        }
        "change_password" => {
            let new = form.new_password.map(crate::routes::login::Secret::take);
            let again = form
                .new_password_confirm
                .map(crate::routes::login::Secret::take);
            let Some(new) = new.filter(|p| !p.is_empty()) else {
                return refused("password", "Enter a new password.");
            };
            if again.as_ref().map(|a| a.as_str()) != Some(new.as_str()) {
                return refused("password", "The two new passwords differ.");
            }
            confirm_password(state, session, form.current_password)
                .await
                .map_err(broken("password"))?;
            let new_hash = state
                .hasher
                .hash(Zeroizing::new(new.to_string()))
                .await
                .map_err(|_| broken("password")(ApiError::limited(1000)))?;
            let logout = form.logout_devices.is_some();
            let (ends, ended) = if logout {
                let all = state
                    .store
                    .devices(user)
                    .await
                    .map_err(|e| broken("password")(e.into()))?;
                (
                    EndSessions::All,
                    all.into_iter().map(|d| d.device_id).collect(),
                )
            } else {
                (EndSessions::Keep, Vec::new())
            };
            homeserver::changing(state, user, homeserver::devices_deleted(ended), async {
                Ok(state.store.set_password_hash(user, &new_hash, ends).await?)
            })
            .await
            .map_err(broken("password"))?;
            if logout {
                state.sessions.invalidate_user(user);
            }
            shown(
                "password",
                if logout {
                    "Password changed. Your sessions were signed out."
                } else {
                    "Password changed."
                },
            )
        }
        "add_email" => {
            let Some(email) = form.email.filter(|e| !e.is_empty()) else {
                return refused("profile", "Enter an email address.");
            };
            let Ok(threepid) = canonical_threepid(Medium::Email, &email) else {
                return refused("profile", "That is not an email address.");
            };
            let client_secret = crate::routes::threepid_random(30);
            let next_link = state
                .account_page_url()
                .map(|u| format!("{u}?action=org.matrix.profile"));
            let sent = crate::routes::threepid::request_email_token(
                state,
                crate::routes::threepid::Purpose::AddThreepid,
                crate::routes::threepid::EmailTokenBody::first(
                    client_secret.clone(),
                    threepid.address.clone(),
                    next_link,
                ),
            )
            .await;
            let sid = match sent {
                Ok(axum::Json(answer)) => answer["sid"].as_str().unwrap_or_default().to_owned(),
                Err(e) if e.kind == gatehouse_core::ErrorKind::ThreepidInUse => {
                    return refused("profile", "That address is already in use.");
                }
                Err(e) => return Err(broken("profile")(e)),
            };
            Ok(Done::Shown {
                view: "profile",
                message: format!("We sent a confirmation link to {}.", threepid.address),
                pending: Some((sid, client_secret, threepid.address)),
            })
        }
        "confirm_email" => {
            let (Some(sid), Some(secret)) = (form.sid, form.client_secret) else {
                return refused("profile", "The confirmation is incomplete.");
            };
            let now = state.clock.now_ms();
            let validation = state
                .store
                .threepid_validation(&sid)
                .await
                .map_err(|e| broken("profile")(e.into()))?
                .filter(|v| v.client_secret.matches(&secret) && v.expires_at > now);
            let Some(validation) = validation else {
                return refused(
                    "profile",
                    "That confirmation has expired; add the address again.",
                );
            };
            if validation.validated_at.is_none() {
                return Ok(Done::Shown {
                    view: "profile",
                    message: "The link has not been opened yet. Open it from your email, then press the button again.".into(),
                    pending: Some((sid, secret, validation.threepid.address)),
                });
            }
            let added = homeserver::changing(state, user, HomeserverChange::default(), async {
                Ok(state
                    .store
                    .add_threepid(user, &validation.threepid, now)
                    .await)
            })
            .await
            .map_err(broken("profile"))?;
            match added {
                Ok(()) => shown("profile", format!("{} added.", validation.threepid.address)),
                Err(gatehouse_store::StoreError::ThreepidInUse) => {
                    refused("profile", "That address is already in use.")
                }
                Err(e) => Err(broken("profile")(e.into())),
            }
        }
        "remove_email" => {
            let address = form.email.unwrap_or_default();
            let threepid = Threepid {
                medium: Medium::Email,
                address,
            };
            let removed = homeserver::changing(state, user, HomeserverChange::default(), async {
                Ok(state.store.delete_threepid(user, &threepid).await?)
            })
            .await
            .map_err(broken("profile"))?;
            if removed {
                shown("profile", format!("{} removed.", threepid.address))
            } else {
                refused("profile", "That address is not linked to your account.")
            }
        }
        "org.matrix.cross_signing_reset" => {
            let Some(homeserver) = &state.homeserver else {
                return shown(
                    "cross_signing_reset",
                    "Nothing to approve here: your application will ask for your password when it resets your keys.",
                );
            };
            match homeserver
                .client
                .allow_cross_signing_reset(user.localpart())
                .await
            {
                Ok(()) => shown(
                    "cross_signing_reset",
                    "Approved. Return to your application within 10 minutes to finish the reset.",
                ),
                Err(e) => Err(broken("cross_signing_reset")(homeserver::unavailable(&e))),
            }
        }
        "org.matrix.account_deactivate" => {
            confirm_password(state, session, form.password)
                .await
                .map_err(broken("deactivate"))?;
            let change = HomeserverChange {
                erase: form.erase.is_some(),
                ..HomeserverChange::default()
            };
            homeserver::changing(state, user, change, async {
                Ok(state.store.deactivate_user(user).await?)
            })
            .await
            .map_err(broken("deactivate"))?;
            state.sessions.invalidate_user(user);
            let _ = state.store.delete_web_session(hash).await;
            Ok(Done::Deactivated)
        }
        _ => refused("profile", "Unknown action."),
    }
}
