//! A password change through InteractiveAuth (seed 001's basic UIA flow).
//!
//!     cargo run -p gatehouse-client --example uia_password_change -- BASE_URL USER OLD NEW

use gatehouse_client::{Client, LoginRequest, UserIdentifier, authenticate};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, user, old, new] = &args[..] else {
        return Err("usage: uia_password_change BASE_URL USER OLD NEW".into());
    };
    let temp = Client::builder(base).build()?;
    let response = temp
        .login_request(LoginRequest::password(
            UserIdentifier::user(user.as_str()),
            old.as_str(),
        ))
        .await?;
    let client = Client::builder(base).session(response.session()).build()?;
    let (c, new) = (client.clone(), new.clone());
    let (user_id, secret) = (response.user_id.clone(), old.clone());
    authenticate(
        move |auth| {
            let (c, new) = (c.clone(), new.clone());
            Box::pin(async move { c.set_password(&new, true, auth).await.map(|()| json!({})) })
        },
        // Answer the password stage with what we know; give up on others.
        move |stage, status, _session| {
            if let Some(e) = &status.error {
                eprintln!("{e}");
            }
            let auth = (stage == "m.login.password" && status.errcode.is_none()).then(|| {
                json!({"type": stage, "identifier": {"type": "m.id.user", "user": user_id}, "password": secret})
            });
            Box::pin(async move { auth })
        },
    )
    .await?;
    println!("password changed; other devices logged out");
    Ok(())
}
