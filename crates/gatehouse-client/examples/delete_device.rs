//! Deleting a device under UIA, answering the password stage.
//!
//!     cargo run -p gatehouse-client --example delete_device -- BASE_URL USER PASSWORD DEVICE_ID

use gatehouse_client::{Client, InteractiveAuth, LoginRequest, UserIdentifier};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, user, password, device] = &args[..] else {
        return Err("usage: delete_device BASE_URL USER PASSWORD DEVICE_ID".into());
    };
    let temp = Client::builder(base).build()?;
    let response = temp
        .login_request(LoginRequest::password(
            UserIdentifier::user(user.as_str()),
            password.as_str(),
        ))
        .await?;
    let client = Client::builder(base).session(response.session()).build()?;
    for d in client.devices().await? {
        println!("{}\t{}", d.device_id, d.display_name.unwrap_or_default());
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (c, device) = (client.clone(), device.clone());
    let ia = InteractiveAuth::builder(
        move |auth, _| {
            let (c, d) = (c.clone(), device.clone());
            Box::pin(async move { c.delete_device(&d, auth).await.map(|()| json!({})) })
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
    ia.attempt_auth().await?;
    println!("deleted");
    Ok(())
}
