//! Cross-cutting HTTP behaviour: CORS as the spec's "Web Browser Clients"
//! section asks, and per-request logs and metrics.
//!
//! Both are plain tower services rather than `axum::middleware::from_fn`:
//! `from_fn` boxes the inner service and the future on every request, which
//! the benchmark showed costing ~30 % of `whoami` throughput.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, header};
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::metrics::{Metrics, RouteLabel};
use std::sync::Arc;

const ALLOW_METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "X-Requested-With, Content-Type, Authorization";

/// Adds the spec's recommended CORS headers to a response. `OPTIONS`
/// requests never reach an endpoint (no route declares OPTIONS), so the
/// fallbacks answer them with `{}` and these headers.
pub fn add_cors_headers(mut response: Response) -> Response {
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

/// Route-level layer (it runs after routing, so it knows the route
/// template): one log line and the metrics for each request. Only the path
/// is logged, never the query (legacy clients put tokens there), headers or
/// bodies.
#[derive(Clone)]
pub struct ObserveLayer {
    pub metrics: Arc<Metrics>,
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .cloned()
            .map(RouteLabel::Matched)
            .unwrap_or(RouteLabel::Unmatched);
        let method = method_label(req.method());
        ObserveFuture {
            inner: self.inner.call(req),
            start: Instant::now(),
            method,
            route: Some(route),
            metrics: self.metrics.clone(),
        }
    }
}

pin_project! {
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        start: Instant,
        method: &'static str,
        route: Option<RouteLabel>,
        metrics: Arc<Metrics>,
    }
}

impl<F, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(route)) = (&result, this.route.take()) {
            let elapsed = this.start.elapsed();
            let status = response.status().as_u16();
            tracing::debug!(
                method = *this.method,
                route = route.as_str(),
                status,
                micros = elapsed.as_micros() as u64,
                "request"
            );
            this.metrics.record(this.method, route, status, elapsed);
        }
        Poll::Ready(result)
    }
}

/// Records a request that matched no route (404/405 fallbacks).
pub fn observe_unmatched(metrics: &Metrics, method: &Method, status: u16) {
    metrics.record(
        method_label(method),
        RouteLabel::Unmatched,
        status,
        std::time::Duration::ZERO,
    );
}
