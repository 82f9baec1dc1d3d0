//! Fallback pages (`/_matrix/client/v3/auth/{type}/fallback/web`): plain
//! server-rendered forms for clients that cannot do a stage themselves. On
//! success the page calls `window.onAuthDone()` or posts `"authDone"` to
//! its opener, as the spec says; the client then resubmits its request
//! with `auth: {session}`.
//!
//! Pages carry a strict Content-Security-Policy: nothing but their own
//! nonce'd script and style, forms posting back to this server only, and no
//! framing. The recaptcha page alone may load Google's widget.

use axum::Form;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::{
    CONTENT_SECURITY_POLICY, HeaderName, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use gatehouse_core::uia;
use minijinja::context;
use serde::Deserialize;
use serde_json::{Map, json};

use crate::extract::ClientIp;
use crate::state::AppState;

/// Stages with a fallback page.
const STAGES: &[&str] = &[
    uia::PASSWORD,
    uia::RECAPTCHA,
    uia::TERMS,
    uia::REGISTRATION_TOKEN,
    uia::EMAIL,
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

struct Page<'a> {
    stage: &'a str,
    session: &'a str,
    user_id: Option<String>,
    done: bool,
    message: Option<String>,
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
        _ => "Confirm your email address",
    };
    let action = format!("/_matrix/client/v3/auth/{}/fallback/web", page.stage);
    let html = state.messenger.templates().get_template("fallback.html").and_then(|t| {
        t.render(context! {
            title, stage => page.stage, session => page.session, user_id => page.user_id, done => page.done,
            message => page.message, message_class => "error", nonce => &nonce, action, policies,
            site_key => state.config.recaptcha.site_key.clone(),
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
            Ok(true) => {
                let page = Page {
                    stage: &stage,
                    session: &session_id,
                    user_id: session.binding.user_id,
                    done: false,
                    message: None,
                };
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
        uia::EMAIL => {
            auth.insert(
                "threepid_creds".into(),
                json!({"sid": field("sid").trim(), "client_secret": field("client_secret").trim()}),
            );
        }
        _ => {}
    }
    if stage == uia::TERMS && field("accept") != "yes" {
        let page = Page {
            stage: &stage,
            session: &session_id,
            user_id: session.binding.user_id,
            done: false,
            message: Some("Please accept the policies to continue.".into()),
        };
        return render(&state, page, StatusCode::BAD_REQUEST);
    }
    let outcome = crate::uia::complete_stage(&state, &session_id, &stage, &auth, ip).await;
    let (done, message, status) = match outcome {
        Ok(()) => (true, None, StatusCode::OK),
        Err(e) => (
            false,
            Some(e.message.into_owned()),
            StatusCode::UNAUTHORIZED,
        ),
    };
    let page = Page {
        stage: &stage,
        session: &session_id,
        user_id: session.binding.user_id,
        done,
        message,
    };
    render(&state, page, status)
}
