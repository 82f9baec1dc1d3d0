//! `GET /_matrix/client/versions` and `GET /.well-known/matrix/client`.

use axum::Json;
use axum::extract::State;
use gatehouse_core::ErrorKind;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The spec versions whose authentication endpoints Gatehouse serves as
/// specified (see `docs/decisions/0004-advertised-versions.md`).
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
    "v1.11", "v1.12", "v1.13",
];

pub async fn versions() -> Json<Value> {
    Json(json!({ "versions": SUPPORTED_VERSIONS, "unstable_features": {} }))
}

pub async fn well_known(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    state.well_known().map(Json).ok_or_else(|| {
        ApiError::new(
            ErrorKind::NotFound,
            "No .well-known configured (set public_baseurl)",
        )
    })
}
