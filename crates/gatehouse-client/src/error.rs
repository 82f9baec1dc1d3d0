//! Errors: a typed Matrix error for every standard error response, HTTP
//! errors for the rest.

use std::time::Duration;

use serde_json::Value;

/// The spec's table of codes, shared with the server.
pub use gatehouse_errcode::ErrorCode;

/// A standard Matrix error response.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixError {
    pub status: u16,
    pub errcode: ErrorCode,
    pub message: String,
    /// From the `Retry-After` header, else from `retry_after_ms`.
    pub retry_after: Option<Duration>,
    pub soft_logout: bool,
    /// The whole body, for fields this type does not model (a UIA
    /// challenge's `flows`, `session`…).
    pub body: Value,
}

impl MatrixError {
    /// Builds one from a response's status, `Retry-After` header and JSON
    /// body; `None` when the body is not a Matrix error.
    pub fn from_response(
        status: u16,
        retry_after_header: Option<&str>,
        body: Value,
    ) -> Option<Self> {
        let errcode = body
            .get("errcode")
            .and_then(Value::as_str)
            .map(ErrorCode::parse);
        // A UIA challenge (401 with flows) is a Matrix error without errcode.
        let errcode = match errcode {
            Some(code) => code,
            None if body.get("flows").is_some() => ErrorCode::Unauthorized,
            None => return None,
        };
        let header = retry_after_header
            .and_then(|h| h.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let field = body
            .get("retry_after_ms")
            .and_then(Value::as_u64)
            .map(Duration::from_millis);
        Some(Self {
            status,
            errcode,
            message: body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            retry_after: header.or(field),
            soft_logout: body
                .get("soft_logout")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            body,
        })
    }

    /// A 401 carrying UIA `flows`: the request needs (more) authentication.
    pub fn is_uia_challenge(&self) -> bool {
        self.status == 401 && self.body.get("flows").is_some()
    }
}

impl std::fmt::Display for MatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.errcode.as_str(),
            self.status,
            self.message
        )
    }
}

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{0}")]
    Matrix(MatrixError),
    /// An error status with a body that is not a Matrix error.
    #[error("HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("request failed: {}", cause_chain(.0))]
    Transport(#[from] reqwest::Error),
    #[error("unexpected response: {0}")]
    InvalidResponse(String),
    #[error("invalid URL: {0}")]
    Url(#[from] url::ParseError),
    /// No flow matches the inputs (matrix-js-sdk's `NoAuthFlowFoundError`).
    #[error("no authentication flow matches: needs {required_stages:?}")]
    NoAuthFlowFound {
        required_stages: Vec<String>,
        flows: Vec<Vec<String>>,
    },
    /// An auth dict was submitted while no authentication runs (before
    /// `attempt_auth`, or after it finished).
    #[error("no user-interactive authentication is running")]
    UiaNotRunning,
    /// The client has no session for a call that needs one.
    #[error("not logged in")]
    NotLoggedIn,
    /// A refresh was asked of a session without a refresh token.
    #[error("this session has no refresh token (log in asking for one)")]
    NoRefreshToken,
    /// The persisted session could not be read or written.
    #[error("session storage: {0}")]
    Persistence(String),
    /// The session ended (hard logout, or refresh impossible).
    #[error("logged out: {0}")]
    LoggedOut(MatrixError),
}

/// An error and its causes, `: `-separated: reqwest's own message ("error
/// sending request") says nothing of why (refused, DNS, TLS…).
fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

impl Error {
    /// The Matrix error inside, if any.
    pub fn matrix(&self) -> Option<&MatrixError> {
        match self {
            Self::Matrix(e) | Self::LoggedOut(e) => Some(e),
            _ => None,
        }
    }

    pub fn errcode(&self) -> Option<&ErrorCode> {
        self.matrix().map(|e| &e.errcode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// reqwest's own message says only "error sending request": the
    /// cause (here a refused connection) must reach the person.
    #[tokio::test]
    async fn transport_errors_carry_their_cause() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let e = Error::from(
            reqwest::get(format!("http://{addr}/"))
                .await
                .expect_err("nothing listens"),
        );
        let shown = e.to_string();
        assert!(shown.starts_with("request failed: "), "{shown}");
        assert!(
            shown.to_lowercase().contains("refused"),
            "the cause is shown: {shown}"
        );
    }

    #[test]
    fn parses_standard_errors() {
        let e = MatrixError::from_response(
            429,
            Some("3"),
            json!({"errcode": "M_LIMIT_EXCEEDED", "error": "slow", "retry_after_ms": 1500}),
        )
        .unwrap();
        assert_eq!(e.errcode, ErrorCode::LimitExceeded);
        assert_eq!(
            e.retry_after,
            Some(Duration::from_secs(3)),
            "the header wins"
        );
        let e = MatrixError::from_response(
            429,
            None,
            json!({"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 1500}),
        )
        .unwrap();
        assert_eq!(e.retry_after, Some(Duration::from_millis(1500)));
        let e = MatrixError::from_response(
            401,
            None,
            json!({"errcode": "M_UNKNOWN_TOKEN", "soft_logout": true}),
        )
        .unwrap();
        assert!(e.soft_logout);
        let e = MatrixError::from_response(
            400,
            None,
            json!({"errcode": "COM.EXAMPLE_CUSTOM", "error": "x"}),
        )
        .unwrap();
        assert_eq!(e.errcode, ErrorCode::Other("COM.EXAMPLE_CUSTOM".into()));
        assert!(MatrixError::from_response(500, None, json!({"detail": "oops"})).is_none());
        let c =
            MatrixError::from_response(401, None, json!({"flows": [], "session": "s"})).unwrap();
        assert!(c.is_uia_challenge());
    }
}
