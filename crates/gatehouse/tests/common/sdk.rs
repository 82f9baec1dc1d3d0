//! SDK clients on a test server.

use std::time::Duration;

use gatehouse_client::{Client, LoginRequest, UserIdentifier};

use super::Server;

/// A client logged in as `user` (password `pw`), refreshing only when a
/// token is refused or expired (no margin).
pub async fn logged_in(server: &Server, user: &str, refresh: bool) -> Client {
    let r = Client::builder(&server.base)
        .build()
        .unwrap()
        .login_request(
            LoginRequest::password(UserIdentifier::user(user), "pw").refresh_token(refresh),
        )
        .await
        .unwrap();
    Client::builder(&server.base)
        .session(r.session())
        .refresh_margin(Duration::ZERO)
        .build()
        .unwrap()
}
