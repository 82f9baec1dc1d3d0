//! A password change through InteractiveAuth (seed 001's basic UIA flow).
//!
//!     cargo run -p gatehouse-client --example uia_password_change -- BASE_URL USER OLD NEW

use gatehouse_client::{Client, InteractiveAuth, LoginRequest, UserIdentifier};
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
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (c, new) = (client.clone(), new.clone());
    let ia = InteractiveAuth::builder(
        move |auth, _| {
            let (c, new) = (c.clone(), new.clone());
            Box::pin(async move { c.set_password(&new, true, auth).await.map(|()| json!({})) })
        },
        move |stage, status| {
            if let Some(e) = &status.error {
                eprintln!("{e}");
            }
            let _ = tx.send(stage.to_owned());
        },
    )
    .build();
    let driver = ia.clone();
    let (user_id, old) = (response.user_id.clone(), old.clone());
    tokio::spawn(async move {
        while let Some(stage) = rx.recv().await {
            let auth = json!({"type": stage, "identifier": {"type": "m.id.user", "user": user_id}, "password": old});
            driver.submit_auth_dict(auth, false).await;
        }
    });
    ia.attempt_auth().await?;
    println!("password changed; other devices logged out");
    Ok(())
}
