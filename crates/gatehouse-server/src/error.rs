//! The one error type of the HTTP layer: a Matrix error kind and a message,
//! rendered as the spec's standard error response.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_core::ErrorKind;
use gatehouse_store::StoreError;
use serde_json::{Map, Value};

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: Cow<'static, str>,
    /// More top-level keys (a UIA challenge's `flows`, `session`…).
    pub extra: Option<Box<Map<String, Value>>>,
    /// A status other than the kind's own (a failed UIA stage is always 401).
    pub status: Option<u16>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            extra: None,
            status: None,
        }
    }
    /// Adds top-level keys to the error body and overrides its status.
    pub fn with_body(mut self, extra: Map<String, Value>, status: u16) -> Self {
        self.extra = Some(Box::new(extra));
        self.status = Some(status);
        self
    }
    pub fn bad_json(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::BadJson, message)
    }
    pub fn missing(param: &str) -> Self {
        Self::new(
            ErrorKind::MissingParam,
            format!("Missing parameter: {param}"),
        )
    }
    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidParam, message)
    }
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }
    pub fn limited(retry_after_ms: u64) -> Self {
        Self::new(
            ErrorKind::LimitExceeded { retry_after_ms },
            "Too many requests; try again later",
        )
    }
    pub fn unknown_token(soft_logout: bool, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::UnknownToken { soft_logout }, message)
    }
    pub fn internal() -> Self {
        Self::new(ErrorKind::Internal, "Internal server error")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::UserDeactivated = e {
            return Self::new(
                ErrorKind::UserDeactivated,
                "This account has been deactivated",
            );
        }
        // The details go to the log, never to the client.
        tracing::error!(error = %e, "store failure");
        Self::internal()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status.unwrap_or_else(|| self.kind.status()))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = self.extra.map(|b| *b).unwrap_or_default();
        // A UIA challenge is not an error: the spec's body has no errcode.
        if self.kind != ErrorKind::UiaChallenge {
            body.insert("errcode".into(), Value::from(self.kind.errcode()));
            body.insert("error".into(), Value::from(self.message.into_owned()));
        }
        let mut retry_after = None;
        match self.kind {
            ErrorKind::UserLocked => {
                body.insert("soft_logout".into(), Value::from(true));
            }
            ErrorKind::UnknownToken { soft_logout } => {
                body.insert("soft_logout".into(), Value::from(soft_logout));
            }
            ErrorKind::LimitExceeded { retry_after_ms } => {
                body.insert("retry_after_ms".into(), Value::from(retry_after_ms));
                retry_after = Some(retry_after_ms.div_ceil(1000).max(1));
            }
            _ => {}
        }
        let mut response = (status, Json(Value::Object(body))).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
