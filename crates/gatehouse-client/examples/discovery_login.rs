//! Discovery, then password login with the temporary-client pattern.
//!
//!     cargo run -p gatehouse-client --example discovery_login -- DOMAIN USER PASSWORD
//!
//! For a local Gatehouse started with `GATEHOUSE_PUBLIC_BASEURL=http://127.0.0.1:8008`:
//! `… -- 127.0.0.1:8008 alice 'correct horse'` (plain http is used for 127.0.0.1).

use gatehouse_client::discovery::{AutoDiscovery, DiscoveryState};
use gatehouse_client::{Client, LoginRequest, UserIdentifier};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [domain, user, password] = &args[..] else {
        return Err("usage: discovery_login DOMAIN USER PASSWORD".into());
    };
    let discovery = if domain.starts_with("127.") || domain.starts_with("localhost") {
        AutoDiscovery::new().with_scheme("http")
    } else {
        AutoDiscovery::new()
    };
    let found = discovery.find_client_config(domain).await.homeserver;
    let base = match (found.state, found.base_url) {
        (DiscoveryState::Success, Some(url)) => url,
        (state, _) => return Err(format!("discovery: {state:?} {:?}", found.error).into()),
    };
    println!("homeserver: {base}");
    let temp = Client::builder(&base).build()?;
    let flows = temp.login_flows().await?;
    println!(
        "flows: {:?}",
        flows.iter().map(|f| &f.kind).collect::<Vec<_>>()
    );
    let response = temp
        .login_request(LoginRequest::password(
            UserIdentifier::user(user.as_str()),
            password.as_str(),
        ))
        .await?;
    let client = Client::builder(&base).session(response.session()).build()?;
    println!("logged in as {}", client.whoami().await?.user_id);
    Ok(())
}
