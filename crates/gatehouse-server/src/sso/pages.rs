//! The pages of a sign-in: the provider picker, the username page, the
//! confirmation before a login token leaves for an unlisted site, the
//! `m.login.sso` fallback, and errors. Rendered from `sso.html` (and
//! `page.html`) with the same strict CSP as every other page.

use axum::http::header::{CACHE_CONTROL, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use gatehouse_core::user_id::UserId;
use minijinja::context;

use super::{PATH, Provider, SsoError};
use crate::fallback::{nonce, strict_csp};
use crate::state::AppState;

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn render(state: &AppState, title: &str, ctx: minijinja::Value, status: StatusCode) -> Response {
    let nonce = nonce();
    let html = state
        .messenger
        .templates()
        .get_template("sso.html")
        .and_then(|t| t.render(context! { title, nonce => &nonce, ..ctx }));
    match html {
        Ok(html) => no_store((status, strict_csp(&nonce, false), Html(html)).into_response()),
        Err(e) => {
            tracing::error!(error = %e, "SSO page rendering failed");
            error(
                state,
                "This page could not be shown.",
                StatusCode::INTERNAL_SERVER_ERROR,
            )
        }
    }
}

/// An error page, announced to screen readers.
pub fn error(state: &AppState, message: &str, status: StatusCode) -> Response {
    no_store(crate::fallback::message_page(
        state,
        "Cannot sign in",
        message,
        false,
        status,
    ))
}

/// The database failed: the details go to the log only.
pub fn unavailable(state: &AppState, e: &gatehouse_store::StoreError) -> Response {
    tracing::error!(error = %e, "single sign-on storage failed");
    error(
        state,
        "Something went wrong; please try again.",
        StatusCode::SERVICE_UNAVAILABLE,
    )
}

/// The provider failed or refused: the details go to the log only (they
/// may carry what an attacker wants to learn), the person gets the gist.
pub fn provider_failed(state: &AppState, provider: Provider<'_>, e: &SsoError) -> Response {
    tracing::warn!(provider = provider.id(), error = %e, "single sign-on failed");
    match e {
        SsoError::Provider(_) => error(
            state,
            &format!(
                "{} could not be reached. Please try again later.",
                provider.name()
            ),
            StatusCode::BAD_GATEWAY,
        ),
        SsoError::Refused(_) => error(
            state,
            &format!(
                "{} did not confirm who you are. Please start again from your application.",
                provider.name()
            ),
            StatusCode::FORBIDDEN,
        ),
    }
}

/// A plain redirect that no cache keeps (it may carry a login token).
pub fn redirect(url: &str) -> Response {
    let mut response = no_store(StatusCode::FOUND.into_response());
    if let Ok(v) = HeaderValue::from_str(url) {
        response.headers_mut().insert(LOCATION, v);
    }
    response
}

/// Several providers and none named: the person picks.
pub fn picker(state: &AppState, redirect_url: &str) -> Response {
    let providers: Vec<minijinja::Value> = state
        .sso
        .all()
        .iter()
        .map(|p| {
            context! {
                name => p.name(),
                href => format!(
                    "/_matrix/client/v3/login/sso/redirect/{}?redirectUrl={}",
                    super::encode(p.id()),
                    super::encode(redirect_url)
                ),
            }
        })
        .collect();
    render(
        state,
        "Sign in",
        context! { view => "picker", providers },
        StatusCode::OK,
    )
}

/// The `m.login.sso` fallback page: the person's own providers.
pub fn reauth(
    state: &AppState,
    session: &str,
    user_id: Option<&str>,
    what: &str,
    idp_ids: &[String],
) -> Response {
    let providers: Vec<minijinja::Value> = idp_ids
        .iter()
        .filter_map(|id| state.sso.get(id))
        .map(|p| {
            context! {
                name => p.name(),
                href => format!("{PATH}/reauth/{}?session={}", super::encode(p.id()), super::encode(session)),
            }
        })
        .collect();
    if providers.is_empty() {
        return error(
            state,
            "Your account has no identity provider to confirm with.",
            StatusCode::BAD_REQUEST,
        );
    }
    render(
        state,
        "Confirm it is you",
        context! { view => "reauth", providers, user_id, what },
        StatusCode::OK,
    )
}

/// A new person's name is taken (or missing): they choose one.
pub fn choose_username(
    state: &AppState,
    key: &str,
    suggestion: Option<&str>,
    message: Option<&str>,
    status: StatusCode,
) -> Response {
    render(
        state,
        "Choose a username",
        context! {
            view => "username", key, suggestion, message, message_class => "error",
            action => format!("{PATH}/username"), server_name => &state.config.server_name,
        },
        status,
    )
}

/// Before a login token goes to a site not on the allow-list: where it
/// goes, and for whom. `auto` when the site is trusted (the page then
/// moves on by itself).
pub fn confirm(
    state: &AppState,
    user_id: &UserId,
    redirect_url: &str,
    url: &str,
    auto: bool,
) -> Response {
    let host = host_of(redirect_url);
    render(
        state,
        &format!("Continue to {host}?"),
        context! { view => "confirm", user_id => user_id.as_str(), host, url, auto },
        StatusCode::OK,
    )
}

/// The part of a URL a person recognises, as a browser parses it: the
/// host and port, or, for a native app's own scheme, the URL without its
/// query.
fn host_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => {
            let host = u.host_str().unwrap_or_default();
            match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            }
        }
        _ => url.split(['?', '#']).next().unwrap_or(url).to_owned(),
    }
}

/// An identity was linked (or already was).
pub fn linked(state: &AppState, message: &str) -> Response {
    render(
        state,
        "Linked",
        context! { view => "linked", message, message_class => "ok", account_url => state.account_page_url() },
        StatusCode::OK,
    )
}

/// The fallback's end: the client may go on with its UIA session.
pub fn stage_done(state: &AppState) -> Response {
    let nonce = nonce();
    let html = state
        .messenger
        .templates()
        .get_template("fallback.html")
        .and_then(|t| {
            t.render(context! { title => "Confirmed", done => true, stage => gatehouse_core::uia::SSO, nonce => &nonce })
        });
    match html {
        Ok(html) => {
            no_store((StatusCode::OK, strict_csp(&nonce, false), Html(html)).into_response())
        }
        Err(_) => error(
            state,
            "This page could not be shown.",
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hosts_are_named() {
        assert_eq!(
            super::host_of("https://app.example:8443/cb?x"),
            "app.example:8443"
        );
        assert_eq!(
            super::host_of("https://user@evil.example/cb"),
            "evil.example"
        );
        assert_eq!(super::host_of("im.app:/callback?x"), "im.app:/callback");
        assert_eq!(
            super::host_of("https://evil.example\\@app.example/"),
            "evil.example"
        );
    }
}
