//! Deactivating an account (with erasure) under UIA.
//!
//!     cargo run -p gatehouse-client --example deactivate -- BASE_URL USER PASSWORD

use gatehouse_client::{Client, LoginRequest, UserIdentifier, authenticate};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, user, password] = &args[..] else {
        return Err("usage: deactivate BASE_URL USER PASSWORD".into());
    };
    let temp = Client::builder(base).build()?;
    let response = temp
        .login_request(LoginRequest::password(
            UserIdentifier::user(user.as_str()),
            password.as_str(),
        ))
        .await?;
    let client = Client::builder(base).session(response.session()).build()?;
    let c = client.clone();
    let (user_id, secret) = (response.user_id.clone(), password.clone());
    let result = authenticate(
        move |auth| {
            let c = c.clone();
            Box::pin(async move { c.deactivate_account(auth, true).await })
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
    println!("{result}");
    Ok(())
}
