//! The HTTP surface: one module per area of the spec, each handler reading
//! like the spec's description of its endpoint.

mod account;
mod admin;
mod delegation;
mod devices;
mod discovery;
mod keys;
mod legacy;
pub(crate) mod login;
mod logout;
mod refresh;
pub(crate) mod register;
mod sso;
pub(crate) mod threepid;

/// A random URL-safe string (session IDs, nonces, CSRF tokens): the core's
/// one generator, [`gatehouse_core::token::random_alphanumeric`].
pub(crate) use sso::fallback_page as sso_fallback;

pub fn threepid_random(len: usize) -> String {
    gatehouse_core::token::random_alphanumeric(len)
}

use axum::extract::State;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gatehouse_core::ErrorKind;
use serde_json::json;
use tower::util::MapResponseLayer;

use crate::error::ApiError;
use crate::middleware;
use crate::state::AppState;

/// Endpoints served under both `/_matrix/client/v3` and the `r0` alias.
/// Registered as full paths rather than with `nest`, which would strip a
/// prefix on every request.
fn client_api(router: Router<AppState>) -> Router<AppState> {
    let endpoints = [
        ("/login", get(login::flows).post(login::post_login)),
        ("/login/sso/redirect", get(sso::redirect)),
        ("/login/sso/redirect/{idp_id}", get(sso::redirect_to)),
        ("/login/cas/redirect", get(sso::cas_redirect)),
        ("/refresh", post(refresh::refresh)),
        ("/logout", post(logout::logout)),
        ("/logout/all", post(logout::logout_all)),
        ("/account/whoami", get(account::whoami)),
        ("/capabilities", get(account::capabilities)),
        ("/register", post(register::register)),
        ("/register/available", get(register::available)),
        ("/account/password", post(account::change_password)),
        ("/account/deactivate", post(account::deactivate)),
        ("/account/3pid", get(account::threepids)),
        ("/account/3pid/delete", post(account::delete_threepid)),
        ("/devices", get(devices::list)),
        (
            "/devices/{device_id}",
            get(devices::get)
                .put(devices::rename)
                .delete(devices::delete),
        ),
        ("/delete_devices", post(devices::delete_many)),
        ("/keys/device_signing/upload", post(keys::upload)),
        (
            "/register/email/requestToken",
            post(threepid::register_email),
        ),
        (
            "/register/msisdn/requestToken",
            post(threepid::register_msisdn),
        ),
        (
            "/account/password/email/requestToken",
            post(threepid::reset_email),
        ),
        (
            "/account/password/msisdn/requestToken",
            post(threepid::reset_msisdn),
        ),
        (
            "/account/3pid/email/requestToken",
            post(threepid::add_email),
        ),
        (
            "/account/3pid/msisdn/requestToken",
            post(threepid::add_msisdn),
        ),
        ("/account/3pid/add", post(threepid::add)),
        (
            "/auth/{stage}/fallback/web",
            get(crate::fallback::show).post(crate::fallback::submit),
        ),
    ];
    endpoints
        .into_iter()
        .fold(router, |router, (path, handler)| {
            router
                .route(&format!("/_matrix/client/v3{path}"), handler.clone())
                .route(&format!("/_matrix/client/r0{path}"), handler)
        })
}

/// The whole router, ready to serve.
pub fn router(state: AppState) -> Router {
    client_api(Router::new())
        .route("/_matrix/client/versions", get(discovery::versions))
        .route(
            "/.well-known/openid-configuration",
            get(delegation::metadata),
        )
        .route("/oauth2/introspect", post(delegation::introspect))
        .route("/.well-known/matrix/client", get(discovery::well_known))
        .route("/_matrix/client/api/v1/login", post(legacy::login))
        .route(
            "/_matrix/client/api/v1/tokenrefresh",
            post(legacy::token_refresh),
        )
        .route("/_matrix/client/api/v1/logout", post(logout::logout))
        .route(
            "/_matrix/client/v1/register/m.login.registration_token/validity",
            get(register::token_validity),
        )
        // matrix-js-sdk's `uploadDeviceSigningKeys` still uses the unstable path.
        .route(
            "/_matrix/client/unstable/keys/device_signing/upload",
            post(keys::upload),
        )
        .route("/_matrix/client/v1/login/get_token", post(login::get_token))
        .route(
            "/_matrix/client/v1/admin/lock/{user_id}",
            get(admin::get_lock).put(admin::put_lock),
        )
        .route(
            "/_matrix/client/v1/admin/suspend/{user_id}",
            get(admin::get_suspend).put(admin::put_suspend),
        )
        // The login fallback, with and without its trailing slash.
        .route(
            crate::login_fallback::PATH,
            get(crate::login_fallback::show).post(crate::login_fallback::submit),
        )
        .route(
            crate::login_fallback::PATH.trim_end_matches('/'),
            get(crate::login_fallback::show).post(crate::login_fallback::submit),
        )
        .route(
            "/_gatehouse/account",
            get(crate::account_page::show).post(crate::account_page::act),
        )
        .route("/_gatehouse/sso/callback/{idp_id}", get(sso::callback))
        .route("/_gatehouse/sso/username", post(sso::username))
        .route("/_gatehouse/sso/reauth/{idp_id}", get(sso::reauth))
        .route("/_gatehouse/sso/account/{idp_id}", get(sso::account))
        .route(
            "/_gatehouse/threepid/validate",
            get(threepid::validate_link),
        )
        .route(
            "/_gatehouse/threepid/submit_token",
            post(threepid::submit_token),
        )
        .route_layer(middleware::ObserveLayer {
            metrics: state.metrics.clone(),
        })
        .fallback(unknown_endpoint)
        .method_not_allowed_fallback(wrong_method)
        .layer(MapResponseLayer::new(middleware::add_cors_headers))
        .with_state(state)
}

/// Every endpoint supports `OPTIONS` (for CORS) without running any of its
/// logic; since no route declares it, it lands in one of these fallbacks.
fn options_or(state: &AppState, method: &Method, error: ApiError) -> Response {
    if *method == Method::OPTIONS {
        return Json(json!({})).into_response();
    }
    middleware::observe_unmatched(&state.metrics, method, error.kind.status());
    error.into_response()
}

async fn unknown_endpoint(State(state): State<AppState>, method: Method) -> Response {
    options_or(
        &state,
        &method,
        ApiError::new(ErrorKind::UnrecognizedEndpoint, "Unrecognized request"),
    )
}

async fn wrong_method(State(state): State<AppState>, method: Method) -> Response {
    options_or(
        &state,
        &method,
        ApiError::new(
            ErrorKind::UnrecognizedMethod,
            "Method not allowed for this endpoint",
        ),
    )
}
