//! `gatehouse-client`: the authentication surface of matrix-js-sdk, in
//! Rust, for any homeserver.
//!
//! * [`discovery::AutoDiscovery`] — `.well-known` server discovery with
//!   matrix-js-sdk's result states.
//! * [`Client`] — login (every identifier, login tokens), `whoami`, logout,
//!   automatic token refresh, SSO and fallback URLs.
//! * [`InteractiveAuth`] — the UIA driver, with matrix-js-sdk's contract.
//! * Account calls that take an auth dict and plug into it: password,
//!   devices, deactivation, cross-signing keys, registration, 3PIDs.
//! * [`MatrixError`] — typed Matrix errors.
//!
//! ```no_run
//! # async fn demo() -> Result<(), gatehouse_client::Error> {
//! use gatehouse_client::{Client, LoginRequest, UserIdentifier};
//! // Seed 000: log in with a temporary client, then build the real one from
//! // the response.
//! let temp = Client::builder("https://matrix.example.org").build()?;
//! let response = temp
//!     .login_request(LoginRequest::password(UserIdentifier::user("alice"), "secret"))
//!     .await?;
//! let client = Client::builder("https://matrix.example.org").session(response.session()).build()?;
//! println!("logged in as {}", client.whoami().await?.user_id);
//! # Ok(()) }
//! ```

mod account;
mod client;
pub mod discovery;
mod error;
pub mod guide;
mod interactive_auth;
mod login;
pub mod sso;

pub use account::*;
pub use client::{
    Client, ClientBuilder, CrossProcessLock, LockGuard, RefreshHook, ReloadSession, SaveSession,
    Session, TokenRefresh,
};
pub use error::{Error, ErrorCode, MatrixError};
pub use interactive_auth::{
    AuthDict, AuthInputs, AuthType, InteractiveAuth, InteractiveAuthBuilder, StageAnswer,
    StageStatus, authenticate, authenticate_with, choose_flow,
};
pub use login::*;
