//! Cross-cutting HTTP behaviour: CORS as the spec's "Web Browser Clients"
//! section asks, and per-request logs and metrics.
//!
//! CORS is written here rather than with tower-http's `CorsLayer` because
//! the spec wants all three headers on *every* response and every `OPTIONS`
//! request answered without running the endpoint, preflight or not.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::metrics::{RequestLabels, RouteLabels};
use crate::state::AppState;

const ALLOW_METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "X-Requested-With, Content-Type, Authorization";

/// Adds the CORS headers; answers `OPTIONS` itself.
pub async fn cors(req: Request, next: Next) -> Response {
    let mut response = if req.method() == Method::OPTIONS {
        (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response()
    } else {
        next.run(req).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    response
}

/// The route template a request matched, carried out on the response so the
/// outer observer can label by route (not by raw path, which holds IDs).
#[derive(Clone)]
struct RouteName(String);

/// Inner layer (after routing): remembers the matched route.
pub async fn tag_route(matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if let Some(m) = matched {
        response
            .extensions_mut()
            .insert(RouteName(m.as_str().to_owned()));
    }
    response
}

/// Outer layer: one log line and the metrics for each request. Only the
/// path is logged — never the query (legacy clients put tokens there),
/// headers or bodies.
pub async fn observe(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    let elapsed = start.elapsed();
    let route = response
        .extensions()
        .get::<RouteName>()
        .map_or_else(|| "unmatched".to_owned(), |r| r.0.clone());
    let status = response.status().as_u16();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.to_string(),
            route: route.clone(),
            status,
        })
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&RouteLabels { route })
        .observe(elapsed.as_secs_f64());
    tracing::debug!(%method, %path, status, micros = elapsed.as_micros() as u64, "request");
    response
}
