//! Single sign-on endpoints: `GET /login/sso/redirect[/{idpId}]` and
//! `/login/cas/redirect` (the spec's, for clients), and Gatehouse's own
//! pages under `/_gatehouse/sso`: the provider's callback, the username
//! page, and the start of an `m.login.sso` re-authentication.

use axum::Form;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use gatehouse_core::ErrorKind;
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::ClientIp;
use crate::sso::{self, Purpose, Stored, pages};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct RedirectQuery {
    #[serde(rename = "redirectUrl")]
    redirect_url: Option<String>,
    action: Option<String>,
    #[serde(rename = "org.matrix.msc3824.action")]
    unstable_action: Option<String>,
}

/// `GET /login/sso/redirect`: the one provider, or a picker.
pub async fn redirect(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    query: Result<Query<RedirectQuery>, QueryRejection>,
) -> Response {
    begin(&state, ip, &headers, None, query).await
}

/// `GET /login/sso/redirect/{idpId}`.
pub async fn redirect_to(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<RedirectQuery>, QueryRejection>,
) -> Response {
    let Ok(Path(idp)) = path else {
        return ApiError::invalid("Invalid identity provider ID").into_response();
    };
    begin(&state, ip, &headers, Some(idp), query).await
}

/// `GET /login/cas/redirect`: the first CAS provider (the endpoint predates
/// several providers).
pub async fn cas_redirect(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    query: Result<Query<RedirectQuery>, QueryRejection>,
) -> Response {
    let Some(cas) = state.sso.first_cas().map(|p| p.id().to_owned()) else {
        return ApiError::new(ErrorKind::UnrecognizedEndpoint, "CAS is not configured")
            .into_response();
    };
    begin(&state, ip, &headers, Some(cas), query).await
}

async fn begin(
    state: &AppState,
    ip: std::net::IpAddr,
    headers: &HeaderMap,
    idp: Option<String>,
    query: Result<Query<RedirectQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return ApiError::invalid(e.body_text()).into_response(),
    };
    if !state.config.sso.enabled() {
        return ApiError::new(
            ErrorKind::UnrecognizedEndpoint,
            "Single sign-on is not configured on this server",
        )
        .into_response();
    }
    let Some(redirect_url) = q.redirect_url else {
        return ApiError::missing("redirectUrl").into_response();
    };
    if let Err(e) = gatehouse_core::sso::check_redirect_url(&redirect_url) {
        return ApiError::invalid(e.to_string()).into_response();
    }
    // A hint for providers' pages (sign in or sign up); both end in the
    // same place here, so it is only checked.
    for action in [&q.action, &q.unstable_action].into_iter().flatten() {
        if !matches!(action.as_str(), "login" | "register") {
            return ApiError::invalid("action must be login or register").into_response();
        }
    }
    if let Err(e) = crate::routes::login::check_address_limit(state, ip) {
        return e.into_response();
    }
    let provider = match idp {
        Some(id) => match state.sso.get(&id) {
            Some(p) => p,
            None => {
                return ApiError::new(ErrorKind::NotFound, "Unknown identity provider")
                    .into_response();
            }
        },
        None => match state.sso.all().as_slice() {
            [one] => *one,
            _ => return pages::picker(state, &redirect_url),
        },
    };
    sso::start(state, headers, provider, Purpose::Login { redirect_url }).await
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    ticket: Option<String>,
    error: Option<String>,
}

/// `GET /_gatehouse/sso/callback/{idp}`: the provider sends the browser
/// back (OIDC: `code` and `state`; CAS: `ticket`, and the `state` of the
/// service URL).
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
) -> Response {
    let (Ok(Path(idp)), Ok(Query(q))) = (path, query) else {
        return pages::error(
            &state,
            "This address is not a valid sign-in callback.",
            StatusCode::BAD_REQUEST,
        );
    };
    let Some(flow_state) = q.state.filter(|s| !s.is_empty()) else {
        return pages::error(
            &state,
            "The provider's answer has no state.",
            StatusCode::BAD_REQUEST,
        );
    };
    let stale = || {
        pages::error(
            &state,
            "This sign-in has expired or was already used. Please start again from your application.",
            StatusCode::BAD_REQUEST,
        )
    };
    let (idp_id, purpose, browser, nonce, pkce_verifier, started_at) =
        match sso::take(&state, &flow_state).await {
            Ok(Some(Stored::Authorization {
                idp_id,
                purpose,
                browser,
                nonce,
                pkce_verifier,
                started_at,
            })) => (idp_id, purpose, browser, nonce, pkce_verifier, started_at),
            Ok(_) => return stale(),
            Err(e) => return pages::unavailable(&state, &e),
        };
    let Some(provider) = state.sso.get(&idp_id).filter(|_| idp_id == idp) else {
        return stale();
    };
    if !sso::same_browser(&headers, &browser) {
        return pages::error(
            &state,
            "This sign-in was started in another browser. Please start again from your application.",
            StatusCode::FORBIDDEN,
        );
    }
    if let Some(error) = q.error {
        tracing::info!(provider = %idp, error, "the provider did not sign the person in");
        return pages::error(
            &state,
            &format!("{} did not sign you in.", provider.name()),
            StatusCode::FORBIDDEN,
        );
    }
    let Some(answer) = q.code.or(q.ticket).filter(|c| !c.is_empty()) else {
        return pages::error(
            &state,
            "The provider's answer is incomplete.",
            StatusCode::BAD_REQUEST,
        );
    };
    match sso::identify(
        &state,
        provider,
        &flow_state,
        &answer,
        nonce.as_deref(),
        pkce_verifier.as_deref(),
        matches!(purpose, Purpose::Reauth { .. }).then_some(started_at),
    )
    .await
    {
        Ok(identity) => sso::finish::finish(&state, provider, identity, purpose, browser).await,
        Err(e) => pages::provider_failed(&state, provider, &e),
    }
}

#[derive(Deserialize)]
pub struct UsernameForm {
    key: String,
    username: String,
}

/// `POST /_gatehouse/sso/username`.
pub async fn username(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<UsernameForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return pages::error(
            &state,
            "The form was not complete.",
            StatusCode::BAD_REQUEST,
        );
    };
    sso::finish::chosen_username(&state, &headers, &form.key, &form.username).await
}

#[derive(Deserialize)]
pub struct ReauthQuery {
    session: Option<String>,
}

/// `GET /_gatehouse/sso/reauth/{idp}?session=`: the `m.login.sso`
/// fallback page's button: to the provider, for that session's user.
pub async fn reauth(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ReauthQuery>, QueryRejection>,
) -> Response {
    let (
        Ok(Path(idp)),
        Ok(Query(ReauthQuery {
            session: Some(session),
        })),
    ) = (path, query)
    else {
        return pages::error(
            &state,
            "This address is not valid.",
            StatusCode::BAD_REQUEST,
        );
    };
    if let Err(e) = crate::routes::login::check_address_limit(&state, ip) {
        return pages::error(&state, &e.message, StatusCode::TOO_MANY_REQUESTS);
    }
    let user_id = match crate::uia::live_session(&state, &session).await {
        Ok(Some(s)) => s.binding.user_id,
        Ok(None) => None,
        Err(e) => return pages::error(&state, &e.message, StatusCode::SERVICE_UNAVAILABLE),
    };
    let Some(user_id) = user_id else {
        return pages::error(
            &state,
            "This session is unknown, expired or already used.",
            StatusCode::BAD_REQUEST,
        );
    };
    let Some(provider) = state.sso.get(&idp) else {
        return pages::error(&state, "Unknown identity provider.", StatusCode::NOT_FOUND);
    };
    sso::start(
        &state,
        &headers,
        provider,
        Purpose::Reauth { session, user_id },
    )
    .await
}

/// `GET /_gatehouse/sso/account/{idp}`: signing in to the account page
/// through a provider.
pub async fn account(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Some(provider) = path.ok().and_then(|Path(idp)| state.sso.get(&idp)) else {
        return pages::error(&state, "Unknown identity provider.", StatusCode::NOT_FOUND);
    };
    if let Err(e) = crate::routes::login::check_address_limit(&state, ip) {
        return pages::error(&state, &e.message, StatusCode::TOO_MANY_REQUESTS);
    }
    sso::start(&state, &headers, provider, Purpose::Account).await
}

/// The `m.login.sso` fallback page for a session of `user_id`: the
/// providers their account is linked to.
pub async fn fallback_page(
    state: &AppState,
    session: &str,
    record: &gatehouse_store::UiaSessionRecord,
) -> Response {
    let user_id = record.binding.user_id.as_deref();
    let Some(user_id) = user_id else {
        return pages::error(
            state,
            "Only a signed-in user can confirm with single sign-on.",
            StatusCode::BAD_REQUEST,
        );
    };
    let user = gatehouse_core::user_id::UserId::from_trusted(user_id.to_owned());
    match state.store.upstream_links(&user).await {
        Ok(links) => {
            let mut ids: Vec<String> = links.into_iter().map(|l| l.provider).collect();
            ids.dedup();
            let what = crate::uia::operation_described(record);
            pages::reauth(state, session, Some(user_id), what, &ids)
        }
        Err(e) => pages::unavailable(state, &e),
    }
}
