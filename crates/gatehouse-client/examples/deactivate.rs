//! Deactivating an account (with erasure) under UIA.
//!
//!     cargo run -p gatehouse-client --example deactivate -- BASE_URL USER PASSWORD

use gatehouse_client::{Client, InteractiveAuth, LoginRequest, UserIdentifier};
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
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let c = client.clone();
    let ia = InteractiveAuth::builder(
        move |auth, _| {
            let c = c.clone();
            Box::pin(async move { c.deactivate_account(auth, true).await })
        },
        move |stage, _| {
            let _ = tx.send(stage.to_owned());
        },
    )
    .build();
    let driver = ia.clone();
    let (user_id, password) = (response.user_id.clone(), password.clone());
    tokio::spawn(async move {
        while let Some(stage) = rx.recv().await {
            let auth = json!({"type": stage, "identifier": {"type": "m.id.user", "user": user_id}, "password": password});
            driver.submit_auth_dict(auth, false).await;
        }
    });
    println!("{}", ia.attempt_auth().await?);
    Ok(())
}
