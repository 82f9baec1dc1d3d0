//! The login fallback (`GET /_matrix/static/client/login/`, spec: Login
//! Fallback): a page on which a person signs in with a username, Matrix
//! ID, email address or phone number and a password, for clients that
//! cannot do the login flows themselves.
//!
//! The form posts to this server, which logs in exactly as
//! `POST /login` does (the same handler: rate limits, password check,
//! device checks, session creation). The page it answers with carries the
//! login response and calls `window.matrixLogin.onLogin(response)`, as the
//! spec says. Embedding clients set that function either before the page
//! runs or once it has loaded (Element Android and iOS did the latter, on
//! every page load), so the page waits a while for it to be replaced. The
//! response, which holds an access token, is never posted to other
//! windows: `postMessage` to an origin the page cannot know would hand it
//! to whichever site opened the page.
//!
//! Like the UIA fallback pages: the strict CSP with nonce'd script and
//! style, no external assets, labelled fields, errors announced
//! (`role=alert`) and pointed at by their field. The form carries a
//! double-submit token against cross-site request forgery (its cookie is
//! `SameSite=Lax`, so no cross-site POST carries it). Non-credential
//! `/login` parameters in the query (`device_id`,
//! `initial_device_display_name`, `refresh_token`) go with the login.

use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use gatehouse_core::ErrorKind;
use minijinja::context;
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::{ClientIp, MatrixJson};
use crate::fallback::{cookie, message_page, nonce, same_secret, set_cookie, strict_csp};
use crate::routes::login::{IdentifierBody, LoginBody, LoginResponse, PASSWORD, Secret};
use crate::state::AppState;

/// Where the page is served and its form posts.
pub const PATH: &str = "/_matrix/static/client/login/";
/// The cookie half of the form's double-submit token.
const CSRF_COOKIE: &str = "gatehouse_login_csrf";
/// The cookie's path: the page with or without its trailing slash.
const COOKIE_PATH: &str = "/_matrix/static/client/login";
/// How long a shown form can be submitted.
const FORM_LIFETIME_S: u64 = 3600;

/// The non-credential `/login` parameters a client may put in the query.
#[derive(Deserialize, Default, Clone)]
pub struct LoginParams {
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    refresh_token: Option<String>,
}

impl LoginParams {
    fn refresh_token(&self) -> bool {
        matches!(self.refresh_token.as_deref(), Some("true" | "1"))
    }
}

/// The form, with the parameters it carries along.
#[derive(Deserialize)]
pub struct LoginForm {
    csrf: Option<String>,
    user: Option<String>,
    password: Option<Secret>,
    #[serde(flatten)]
    params: LoginParams,
}

/// What one rendering shows: the form (again), or the signed-in page.
#[derive(Default)]
struct View {
    params: LoginParams,
    user: Option<String>,
    message: Option<String>,
    /// The fields `message` is about.
    invalid: &'static [&'static str],
    signed_in: Option<LoginResponse>,
}

/// `<`, `>` and `&` escaped, so that JSON cannot end the script element
/// it is embedded in (nor start a comment or an entity there).
fn script_safe_json(value: &impl serde::Serialize) -> Option<String> {
    let json = serde_json::to_string(value).ok()?;
    Some(
        json.replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026"),
    )
}

/// Renders the page; a form gets a fresh double-submit token (its cookie
/// set here), the signed-in page clears it.
fn render(state: &AppState, view: View, status: StatusCode) -> Response {
    let nonce = nonce();
    let csrf = crate::routes::threepid_random(30);
    let signed_in = view.signed_in.is_some();
    let refresh_token = view.params.refresh_token();
    let response_json = view
        .signed_in
        .as_ref()
        .and_then(script_safe_json)
        .map(minijinja::Value::from_safe_string);
    let title = if signed_in {
        "Signed in".to_owned()
    } else {
        format!("Sign in to {}", state.config.server_name)
    };
    let html = state.messenger.templates().get_template("login_fallback.html").and_then(|t| {
        t.render(context! {
            title, nonce => &nonce, action => minijinja::Value::from_safe_string(PATH.into()), csrf => &csrf,
            message => view.message, message_class => "error", invalid => view.invalid.to_vec(),
            user => view.user, device_id => view.params.device_id,
            initial_device_display_name => view.params.initial_device_display_name,
            refresh_token,
            response_json, user_id => view.signed_in.as_ref().map(|r| r.user_id.clone()),
        })
    });
    let html = match html {
        Ok(html) => html,
        Err(e) => {
            tracing::error!(error = %e, "login fallback page rendering failed");
            return message_page(
                state,
                "Cannot continue",
                "Something went wrong; please try again.",
                false,
                StatusCode::INTERNAL_SERVER_ERROR,
            );
        }
    };
    let mut response = (status, strict_csp(&nonce, false), Html(html)).into_response();
    let headers = response.headers_mut();
    // The signed-in page holds an access token: no cache may keep it.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let csrf_cookie = if signed_in {
        set_cookie(state, CSRF_COOKIE, "", COOKIE_PATH, 0)
    } else {
        set_cookie(state, CSRF_COOKIE, &csrf, COOKIE_PATH, FORM_LIFETIME_S)
    };
    headers.append(SET_COOKIE, csrf_cookie);
    response
}

/// `GET /_matrix/static/client/login/`: the form.
pub async fn show(
    State(state): State<AppState>,
    query: Result<Query<LoginParams>, QueryRejection>,
) -> Response {
    let Ok(Query(params)) = query else {
        return message_page(
            &state,
            "Cannot continue",
            "This address is not valid: its parameters could not be read.",
            false,
            StatusCode::BAD_REQUEST,
        );
    };
    let view = View {
        params,
        ..View::default()
    };
    render(&state, view, StatusCode::OK)
}

/// The identifier a typed name stands for: a Matrix ID or bare username,
/// an email address, or an international phone number.
fn identifier_of(typed: &str) -> IdentifierBody {
    let thirdparty = |medium: &str| IdentifierBody {
        kind: Some("m.id.thirdparty".into()),
        medium: Some(medium.into()),
        address: Some(typed.to_owned()),
        ..IdentifierBody::default()
    };
    if typed.starts_with('+') {
        thirdparty("msisdn")
    } else if !typed.starts_with('@') && typed.contains('@') {
        thirdparty("email")
    } else {
        IdentifierBody {
            kind: Some("m.id.user".into()),
            user: Some(typed.to_owned()),
            ..IdentifierBody::default()
        }
    }
}

/// What the page says when a login is refused.
fn refusal(e: &ApiError) -> String {
    match e.kind {
        ErrorKind::Forbidden => "Wrong username or password.".into(),
        ErrorKind::LimitExceeded { .. } => "Too many attempts; wait a little and try again.".into(),
        ErrorKind::UserDeactivated => "This account has been deactivated.".into(),
        ErrorKind::InvalidParam => e.message.clone().into_owned(),
        _ => "Something went wrong; please try again.".into(),
    }
}

/// `POST /_matrix/static/client/login/`: signs in as `POST /login` does.
pub async fn submit(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return message_page(
            &state,
            "Cannot continue",
            "The form could not be read.",
            false,
            StatusCode::BAD_REQUEST,
        );
    };
    let user = form.user.as_deref().map(str::trim).unwrap_or_default();
    let mut view = View {
        params: form.params.clone(),
        user: Some(user.to_owned()).filter(|u| !u.is_empty()),
        ..View::default()
    };
    // Checked first: a forged form learns nothing about any password.
    let expected = cookie(&headers, CSRF_COOKIE).unwrap_or_default();
    let presented = form.csrf.as_deref().unwrap_or_default();
    if expected.is_empty() || !same_secret(expected, presented) {
        view.message = Some(
            "This form has expired or did not come from this page. Please sign in again.".into(),
        );
        return render(&state, view, StatusCode::FORBIDDEN);
    }
    if user.is_empty() {
        view.message = Some("Enter your username.".into());
        view.invalid = &["user"];
        return render(&state, view, StatusCode::BAD_REQUEST);
    }
    // (An empty one, which the form does not send, fails as a wrong one.)
    let Some(password) = form.password else {
        view.message = Some("Enter your password.".into());
        view.invalid = &["password"];
        return render(&state, view, StatusCode::BAD_REQUEST);
    };
    let body = LoginBody {
        kind: Some(PASSWORD.into()),
        identifier: Some(identifier_of(user)),
        user: None,
        medium: None,
        address: None,
        password: Some(password),
        token: None,
        device_id: form.params.device_id.clone(),
        initial_device_display_name: form.params.initial_device_display_name.clone(),
        refresh_token: form.params.refresh_token(),
    };
    match crate::routes::login::login(State(state.clone()), ClientIp(ip), MatrixJson(body)).await {
        Ok(axum::Json(response)) => {
            view.signed_in = Some(response);
            render(&state, view, StatusCode::OK)
        }
        Err(e) => {
            view.message = Some(refusal(&e));
            view.invalid = match e.kind {
                ErrorKind::InvalidParam => &[],
                _ => &["user", "password"],
            };
            let status = StatusCode::from_u16(e.status.unwrap_or_else(|| e.kind.status()))
                .unwrap_or(StatusCode::FORBIDDEN);
            render(&state, view, status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_cannot_leave_its_script_element() {
        let json = script_safe_json(&serde_json::json!({"a": "</script><!-- & x"})).unwrap();
        assert!(!json.contains('<') && !json.contains('>') && !json.contains('&'));
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["a"], "</script><!-- & x");
    }

    #[test]
    fn typed_names_become_identifiers() {
        let kind = |t: &str| {
            let id = identifier_of(t);
            (id.kind.unwrap(), id.medium)
        };
        assert_eq!(kind("alice"), ("m.id.user".into(), None));
        assert_eq!(kind("@alice:example.org"), ("m.id.user".into(), None));
        assert_eq!(
            kind("alice@example.org"),
            ("m.id.thirdparty".into(), Some("email".into()))
        );
        assert_eq!(
            kind("+44 7400 123456"),
            ("m.id.thirdparty".into(), Some("msisdn".into()))
        );
    }
}
