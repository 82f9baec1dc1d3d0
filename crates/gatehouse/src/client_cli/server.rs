//! Finding the homeserver from what the person typed — a server name
//! (`example.org`, `127.0.0.1:8008`), found by discovery as matrix-js-sdk
//! does it, or a base URL — and checking it offers the login wanted, all
//! before anything is asked of the person.

use gatehouse_client::Client;
use gatehouse_client::discovery::{AutoDiscovery, DiscoveryState};
use serde_json::json;

use super::CliError;

/// The homeserver's base URL for `input`.
pub async fn resolve(input: &str, insecure_http: bool) -> Result<String, CliError> {
    let input = input.trim().trim_end_matches('/');
    if input.is_empty() {
        return Err("give a server name (example.org) or a homeserver URL".into());
    }
    let scheme = if insecure_http { "http" } else { "https" };
    let discovery = AutoDiscovery::new().with_scheme(scheme);
    if input.starts_with("http://") || input.starts_with("https://") {
        return check_base_url(&discovery, input).await;
    }
    let found = discovery.find_client_config(input).await.homeserver;
    let hint = if insecure_http {
        String::new()
    } else {
        format!(" (a plain-HTTP server: give http://{input}, or --insecure-http)")
    };
    match found.state {
        DiscoveryState::Success => found
            .base_url
            .ok_or_else(|| "discovery succeeded without a base URL".into()),
        // Nothing published: the name is the homeserver itself, as
        // clients assume.
        DiscoveryState::Prompt => check_base_url(&discovery, &format!("{scheme}://{input}"))
            .await
            .map_err(|e| {
                format!("{input} publishes no client configuration, and {e}{hint}").into()
            }),
        DiscoveryState::FailPrompt | DiscoveryState::FailError => Err(format!(
            "discovery of {input} failed: {}{hint}",
            found.error.unwrap_or_default()
        )
        .into()),
    }
}

/// `url` if a Matrix homeserver answers there.
async fn check_base_url(discovery: &AutoDiscovery, url: &str) -> Result<String, CliError> {
    let checked = discovery
        .from_discovery_config(&json!({"m.homeserver": {"base_url": url}}))
        .await
        .homeserver;
    match (checked.state, checked.base_url) {
        (DiscoveryState::Success, Some(base)) => Ok(base),
        _ => Err(format!(
            "{url} is not a Matrix homeserver: {}",
            checked.error.unwrap_or_default()
        )
        .into()),
    }
}

/// Fails unless the server offers login type `kind` (and, for SSO, the
/// identity provider `idp`), naming what it offers instead.
pub async fn require_login_flow(
    client: &Client,
    kind: &str,
    idp: Option<&str>,
) -> Result<(), CliError> {
    let flows = client.login_flows().await?;
    let Some(flow) = flows.iter().find(|f| f.kind == kind) else {
        let offered: Vec<&str> = flows.iter().map(|f| f.kind.as_str()).collect();
        return Err(format!(
            "{} does not offer {kind} login (it offers: {})",
            client.base_url(),
            offered.join(", ")
        )
        .into());
    };
    if let Some(idp) = idp
        && !flow.identity_providers.iter().any(|p| p.id == idp)
    {
        let known: Vec<&str> = flow
            .identity_providers
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        return Err(format!(
            "no identity provider '{idp}' (there are: {})",
            known.join(", ")
        )
        .into());
    }
    Ok(())
}

/// The device name when none is given: this program on this machine, so
/// that a device list tells machines apart.
pub fn default_device_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        "gatehouse CLI".into()
    } else {
        format!("gatehouse CLI on {host}")
    }
}
