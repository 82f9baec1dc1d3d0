//! The HTTP surface: one module per area of the spec, each handler reading
//! like the spec's description of its endpoint.

mod account;
mod discovery;
mod legacy;
mod login;
mod logout;
mod refresh;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use gatehouse_core::ErrorKind;

use crate::error::ApiError;
use crate::middleware;
use crate::state::AppState;

/// Endpoints served under both `/_matrix/client/v3` and the `r0` alias.
fn client_api() -> Router<AppState> {
    Router::new()
        .route("/login", get(login::flows).post(login::login))
        .route("/refresh", post(refresh::refresh))
        .route("/logout", post(logout::logout))
        .route("/logout/all", post(logout::logout_all))
        .route("/account/whoami", get(account::whoami))
}

/// The whole router, ready to serve.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/_matrix/client/versions", get(discovery::versions))
        .route("/.well-known/matrix/client", get(discovery::well_known))
        .nest("/_matrix/client/v3", client_api())
        .nest("/_matrix/client/r0", client_api())
        .route("/_matrix/client/api/v1/login", post(legacy::login))
        .route(
            "/_matrix/client/api/v1/tokenrefresh",
            post(legacy::token_refresh),
        )
        .route("/_matrix/client/api/v1/logout", post(logout::logout))
        .route_layer(from_fn(middleware::tag_route))
        .fallback(unknown_endpoint)
        .method_not_allowed_fallback(wrong_method)
        .layer(from_fn(middleware::cors))
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .with_state(state)
}

async fn unknown_endpoint() -> ApiError {
    ApiError::new(ErrorKind::UnrecognizedEndpoint, "Unrecognized request")
}

async fn wrong_method() -> ApiError {
    ApiError::new(
        ErrorKind::UnrecognizedMethod,
        "Method not allowed for this endpoint",
    )
}
