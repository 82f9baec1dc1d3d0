//! CAS providers (protocol 2 and 3): the login redirect, and the ticket
//! checked at `serviceValidate`, whose answer names the person.

use serde_json::{Map, Value};

use super::{Identity, SsoError};
use crate::config::CasProviderConfig;

/// Where the browser signs in; CAS sends it back to `service` with a
/// `ticket`. `renew` asks the person to type their password again (for
/// re-authentication) instead of reusing a CAS session.
pub fn login_url(provider: &CasProviderConfig, service: &str, renew: bool) -> String {
    let mut url = format!(
        "{}/login?service={}",
        provider.server_url.trim_end_matches('/'),
        super::encode(service)
    );
    if renew {
        url.push_str("&renew=true");
    }
    url
}

/// Checks `ticket` for `service` at the CAS server.
pub async fn validate(
    http: &reqwest::Client,
    provider: &CasProviderConfig,
    service: &str,
    ticket: &str,
    renew: bool,
) -> Result<Identity, SsoError> {
    let path = if provider.protocol_version == 3 {
        "p3/serviceValidate"
    } else {
        "serviceValidate"
    };
    let url = format!("{}/{path}", provider.server_url.trim_end_matches('/'));
    let mut query = vec![("service", service), ("ticket", ticket)];
    // The server then refuses a ticket that came from an existing CAS
    // session rather than from the person typing their password.
    if renew {
        query.push(("renew", "true"));
    }
    let response = http
        .get(&url)
        .query(&query)
        .send()
        .await
        .map_err(|e| SsoError::Provider(format!("CAS server unreachable: {e}")))?;
    if !response.status().is_success() {
        return Err(SsoError::Provider(format!(
            "CAS server answered {}",
            response.status()
        )));
    }
    let body = response
        .text()
        .await
        .map_err(|e| SsoError::Provider(format!("CAS answer unreadable: {e}")))?;
    let (user, attributes) = parse_service_response(&body)?;
    let mut claims = attributes;
    claims.insert("user".into(), Value::String(user.clone()));
    Ok(Identity {
        provider: provider.idp_id.clone(),
        subject: user,
        claims: Value::Object(claims),
        email_verified: provider.email_is_verified,
    })
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// The user and attributes of a `serviceResponse`, or why it failed.
/// An attribute given several times keeps its first value.
pub fn parse_service_response(xml: &str) -> Result<(String, Map<String, Value>), SsoError> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| SsoError::Provider(format!("CAS answer is not XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "serviceResponse" {
        return Err(SsoError::Provider(
            "CAS answer is not a serviceResponse".into(),
        ));
    }
    if let Some(failure) = child(root, "authenticationFailure") {
        let code = failure.attribute("code").unwrap_or("UNKNOWN");
        return Err(SsoError::Refused(format!(
            "the CAS server refused the ticket ({code})"
        )));
    }
    let success = child(root, "authenticationSuccess")
        .ok_or_else(|| SsoError::Provider("CAS answer has no authenticationSuccess".into()))?;
    let user = child(success, "user")
        .and_then(|u| u.text())
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| SsoError::Provider("CAS answer names no user".into()))?
        .to_owned();
    let mut attributes = Map::new();
    if let Some(attrs) = child(success, "attributes") {
        for a in attrs.children().filter(roxmltree::Node::is_element) {
            let value = a.text().unwrap_or_default().trim().to_owned();
            attributes
                .entry(a.tag_name().name().to_owned())
                .or_insert(Value::String(value));
        }
    }
    Ok((user, attributes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_responses() {
        let ok = r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas">
  <cas:authenticationSuccess><cas:user>alice</cas:user>
    <cas:attributes><cas:email>alice@example.org</cas:email><cas:email>second@x</cas:email></cas:attributes>
  </cas:authenticationSuccess></cas:serviceResponse>"#;
        let (user, attrs) = parse_service_response(ok).unwrap();
        assert_eq!(user, "alice");
        assert_eq!(attrs["email"], "alice@example.org");
        let failed = r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas">
  <cas:authenticationFailure code="INVALID_TICKET">Ticket ST-1 not recognized</cas:authenticationFailure>
</cas:serviceResponse>"#;
        assert!(matches!(
            parse_service_response(failed),
            Err(SsoError::Refused(_))
        ));
        assert!(parse_service_response("<html/>").is_err());
        assert!(parse_service_response("not xml").is_err());
    }
}
