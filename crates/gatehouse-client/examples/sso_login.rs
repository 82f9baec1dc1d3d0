//! SSO login: print the redirect URL, catch `loginToken` on a loopback
//! callback, exchange it with `m.login.token`.
//!
//!     cargo run -p gatehouse-client --example sso_login -- BASE_URL [IDP_ID]

use gatehouse_client::sso::SsoCallback;
use gatehouse_client::{Client, LoginRequest, SsoAction, SsoKind};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(base), idp) = (args.first(), args.get(1)) else {
        return Err("usage: sso_login BASE_URL [IDP_ID]".into());
    };
    let callback = SsoCallback::bind().await?;
    let temp = Client::builder(base).build()?;
    println!(
        "Open: {}",
        temp.sso_login_url(
            callback.url(),
            SsoKind::Sso,
            idp.map(String::as_str),
            Some(SsoAction::Login)
        )
    );
    let token = callback.login_token().await?;
    let response = temp.login_request(LoginRequest::token(token)).await?;
    println!(
        "logged in as {} (device {:?})",
        response.user_id, response.device_id
    );
    Ok(())
}
