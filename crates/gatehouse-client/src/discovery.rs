//! Server discovery (`.well-known/matrix/client`), with matrix-js-sdk's
//! result states and validation rules.

use std::time::Duration;

use serde_json::Value;

/// The outcome of discovering one server, as matrix-js-sdk names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryState {
    /// A validated URL.
    Success,
    /// Nothing published: ask the user.
    Prompt,
    /// Something published but unusable: tell the user, then ask.
    FailPrompt,
    /// A server was named but does not work: stop.
    FailError,
}

/// What was found for one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredServer {
    pub state: DiscoveryState,
    /// Why it is not `Success`.
    pub error: Option<String>,
    /// Without a trailing slash.
    pub base_url: Option<String>,
}

impl DiscoveredServer {
    fn new(state: DiscoveryState, error: Option<&str>, base_url: Option<String>) -> Self {
        Self {
            state,
            error: error.map(str::to_owned),
            base_url,
        }
    }
}

/// `findClientConfig`'s result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub homeserver: DiscoveredServer,
    pub identity_server: DiscoveredServer,
}

/// Spec versions this SDK speaks; a homeserver must share one. Like
/// matrix-js-sdk, v1.1 at least: a server speaking only r0 is refused.
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11",
    "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17",
];

pub const ERROR_INVALID: &str = "Invalid homeserver discovery response";
pub const ERROR_GENERIC_FAILURE: &str = "Failed to get autodiscovery configuration from server";
pub const ERROR_INVALID_HS_BASE_URL: &str = "Invalid base_url for m.homeserver";
pub const ERROR_INVALID_HOMESERVER: &str =
    "Homeserver URL does not appear to be a valid Matrix homeserver";
pub const ERROR_INVALID_IS_BASE_URL: &str = "Invalid base_url for m.identity_server";
pub const ERROR_INVALID_IDENTITY_SERVER: &str =
    "Identity server URL does not appear to be a valid identity server";
pub const ERROR_UNSUPPORTED_VERSIONS: &str =
    "The homeserver does not support any spec version this client speaks";

/// Server discovery. `https` by default; tests point it at a loopback
/// server with [`AutoDiscovery::with_scheme`]`("http")`.
#[derive(Debug, Clone)]
pub struct AutoDiscovery {
    http: reqwest::Client,
    scheme: String,
}

impl Default for AutoDiscovery {
    fn default() -> Self {
        Self::new()
    }
}

impl AutoDiscovery {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            // matrix-js-sdk's limit for each discovery request.
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            http,
            scheme: "https".into(),
        }
    }

    pub fn with_scheme(mut self, scheme: &str) -> Self {
        scheme.clone_into(&mut self.scheme);
        self
    }

    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// Discovers the client configuration of `domain` (a server name, with
    /// an optional port).
    pub async fn find_client_config(&self, domain: &str) -> ClientConfig {
        let url = format!("{}://{domain}/.well-known/matrix/client", self.scheme);
        let fail_prompt = |e| ClientConfig {
            homeserver: DiscoveredServer::new(DiscoveryState::FailPrompt, Some(e), None),
            identity_server: DiscoveredServer::new(DiscoveryState::Prompt, None, None),
        };
        let response = match self.http.get(&url).send().await {
            Ok(r) => r,
            Err(_) => return fail_prompt(ERROR_INVALID),
        };
        match response.status().as_u16() {
            200 => {}
            404 => {
                return ClientConfig {
                    homeserver: DiscoveredServer::new(DiscoveryState::Prompt, None, None),
                    identity_server: DiscoveredServer::new(DiscoveryState::Prompt, None, None),
                };
            }
            _ => return fail_prompt(ERROR_INVALID),
        }
        match response.json::<Value>().await {
            Ok(v) if v.is_object() => self.from_discovery_config(&v).await,
            _ => fail_prompt(ERROR_INVALID),
        }
    }

    /// Validates an already fetched `.well-known` object (or a login
    /// response's `well_known`). As in matrix-js-sdk, the identity server
    /// is looked at only once the homeserver checked out (it stays
    /// `Prompt` otherwise), and a bad one is `FailPrompt`: the homeserver
    /// is usable without it.
    pub async fn from_discovery_config(&self, well_known: &Value) -> ClientConfig {
        let prompt = || DiscoveredServer::new(DiscoveryState::Prompt, None, None);
        let homeserver = match well_known.get("m.homeserver") {
            None => DiscoveredServer::new(DiscoveryState::FailPrompt, Some(ERROR_INVALID), None),
            Some(hs) => match hs.get("base_url").and_then(Value::as_str) {
                None | Some("") => DiscoveredServer::new(
                    DiscoveryState::FailPrompt,
                    Some(ERROR_INVALID_HS_BASE_URL),
                    None,
                ),
                Some(url) => self.check_homeserver(url).await,
            },
        };
        if homeserver.state != DiscoveryState::Success {
            return ClientConfig {
                homeserver,
                identity_server: prompt(),
            };
        }
        let identity_server = match well_known.get("m.identity_server") {
            None => prompt(),
            Some(is) => {
                self.check_identity_server(is.get("base_url").and_then(Value::as_str))
                    .await
            }
        };
        ClientConfig {
            homeserver,
            identity_server,
        }
    }

    async fn check_homeserver(&self, raw: &str) -> DiscoveredServer {
        let Some(base) = normalise(raw) else {
            return DiscoveredServer::new(
                DiscoveryState::FailError,
                Some(ERROR_INVALID_HS_BASE_URL),
                None,
            );
        };
        let versions = self
            .get_json(&format!("{base}/_matrix/client/versions"))
            .await;
        let Some(list) = versions
            .as_ref()
            .and_then(|v| v.get("versions"))
            .and_then(Value::as_array)
        else {
            return DiscoveredServer::new(
                DiscoveryState::FailError,
                Some(ERROR_INVALID_HOMESERVER),
                Some(base),
            );
        };
        if !list
            .iter()
            .filter_map(Value::as_str)
            .any(|v| SUPPORTED_VERSIONS.contains(&v))
        {
            return DiscoveredServer::new(
                DiscoveryState::FailError,
                Some(ERROR_UNSUPPORTED_VERSIONS),
                Some(base),
            );
        }
        DiscoveredServer::new(DiscoveryState::Success, None, Some(base))
    }

    async fn check_identity_server(&self, raw: Option<&str>) -> DiscoveredServer {
        let Some(base) = raw.and_then(normalise) else {
            return DiscoveredServer::new(
                DiscoveryState::FailPrompt,
                Some(ERROR_INVALID_IS_BASE_URL),
                None,
            );
        };
        match self.get_json(&format!("{base}/_matrix/identity/v2")).await {
            Some(_) => DiscoveredServer::new(DiscoveryState::Success, None, Some(base)),
            None => DiscoveredServer::new(
                DiscoveryState::FailPrompt,
                Some(ERROR_INVALID_IDENTITY_SERVER),
                Some(base),
            ),
        }
    }

    async fn get_json(&self, url: &str) -> Option<Value> {
        let r = self.http.get(url).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json::<Value>().await.ok().filter(Value::is_object)
    }
}

/// An http(s) URL rebuilt from scheme, host, port and path (a query,
/// fragment or credentials are dropped), without a trailing slash; `None`
/// if it is not one.
fn normalise(raw: &str) -> Option<String> {
    let parsed = url::Url::parse(raw).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let host = parsed.host_str()?;
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    let url = format!("{}://{host}{port}{}", parsed.scheme(), parsed.path());
    Some(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised() {
        assert_eq!(
            normalise("https://hs.example.org/").as_deref(),
            Some("https://hs.example.org")
        );
        assert_eq!(
            normalise("https://hs.example.org:8448/base/?x=1#f").as_deref(),
            Some("https://hs.example.org:8448/base")
        );
        assert_eq!(normalise("not a url"), None);
        assert_eq!(normalise("ftp://x"), None);
    }

    #[tokio::test]
    async fn missing_or_empty_base_url_is_fail_prompt() {
        let d = AutoDiscovery::new();
        let c = d.from_discovery_config(&serde_json::json!({})).await;
        assert_eq!(c.homeserver.state, DiscoveryState::FailPrompt);
        let c = d
            .from_discovery_config(&serde_json::json!({"m.homeserver": {"base_url": ""}}))
            .await;
        assert_eq!(c.homeserver.state, DiscoveryState::FailPrompt);
        let c = d
            .from_discovery_config(&serde_json::json!({"m.homeserver": {"base_url": "::"}}))
            .await;
        assert_eq!(c.homeserver.state, DiscoveryState::FailError);
        let c = d
            .from_discovery_config(
                &serde_json::json!({"m.homeserver": {"base_url": "::"}, "m.identity_server": {}}),
            )
            .await;
        assert_eq!(
            c.identity_server.state,
            DiscoveryState::Prompt,
            "not looked at while the homeserver fails"
        );
        let c = d
            .from_discovery_config(&serde_json::json!({"m.homeserver": {}}))
            .await;
        assert_eq!(
            (c.homeserver.state, c.homeserver.error.as_deref()),
            (DiscoveryState::FailPrompt, Some(ERROR_INVALID_HS_BASE_URL))
        );
    }
}
