//! Refresh tokens: log in with `refresh_token: true`, persist new tokens as
//! the client refreshes by itself.
//!
//!     cargo run -p gatehouse-client --example refresh -- BASE_URL USER PASSWORD

use std::time::Duration;

use gatehouse_client::{Client, LoginRequest, UserIdentifier};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, user, password] = &args[..] else {
        return Err("usage: refresh BASE_URL USER PASSWORD".into());
    };
    let temp = Client::builder(base).build()?;
    let response = temp
        .login_request(
            LoginRequest::password(UserIdentifier::user(user.as_str()), password.as_str())
                .refresh_token(true),
        )
        .await?;
    println!("access token lives {:?} ms", response.expires_in_ms);
    let client = Client::builder(base)
        .session(response.session())
        .on_session_changed(|s| match s {
            Some(s) => println!("new tokens; persist them (expire at {:?})", s.expires_at_ms),
            None => println!("the session ended; forget it"),
        })
        .on_logged_out(|e| eprintln!("logged out: {e}"))
        .build()?;
    client.refresh().await?;
    for _ in 0..3 {
        println!("{}", client.whoami().await?.user_id);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}
