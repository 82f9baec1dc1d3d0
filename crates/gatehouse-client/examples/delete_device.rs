//! Deleting a device under UIA, answering the password stage.
//!
//!     cargo run -p gatehouse-client --example delete_device -- BASE_URL USER PASSWORD DEVICE_ID

use gatehouse_client::{Client, LoginRequest, UserIdentifier, authenticate};
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
    let (c, device) = (client.clone(), device.clone());
    let (user_id, secret) = (response.user_id.clone(), password.clone());
    authenticate(
        move |auth| {
            let (c, d) = (c.clone(), device.clone());
            Box::pin(async move { c.delete_device(&d, auth).await.map(|()| json!({})) })
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
    println!("deleted");
    Ok(())
}
