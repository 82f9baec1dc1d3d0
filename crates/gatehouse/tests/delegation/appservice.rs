//! A bridge behind Synapse: it registers and logs in its users at
//! Gatehouse with its `as_token` (Gatehouse tells Synapse of each user and
//! device first), then acts as them on Synapse — by the tokens Gatehouse
//! issued, or by masquerading with its own token, down to a device
//! (`device_id`), which Synapse accepts only for devices Gatehouse created.

use reqwest::Method;
use serde_json::json;

use super::common::{assert_error, s};
use super::stack::*;

const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

#[tokio::test]
async fn a_bridge_registers_at_gatehouse_and_acts_on_synapse() {
    let (_running, stack) = shared().await;
    let g = &stack.gatehouse;
    let as_carol = "user_id=%40bridge_carol%3Alocalhost";

    // Registered at Gatehouse with the bridge's token, no UIA.
    let (status, reg) = g
        .post_auth(
            "/_matrix/client/v3/register",
            BRIDGE_TOKEN,
            json!({"type": "m.login.application_service", "username": "bridge_carol", "device_id": "CAROLDEV"}),
        )
        .await;
    assert_eq!(status, 200, "{reg}\n{}", stack.homeserver_log());
    stack
        .assert_works_on_synapse(&s(&reg, "access_token"), "bridge_carol", "CAROLDEV")
        .await;

    // Masquerading on Synapse: the user, then the device Gatehouse made.
    let (status, me) = stack
        .synapse_call(
            Method::GET,
            &format!("{WHOAMI}?{as_carol}"),
            Some(BRIDGE_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], "@bridge_carol:localhost", "{me}");
    let on_device = format!("{WHOAMI}?{as_carol}&device_id=CAROLDEV");
    let (status, me) = stack
        .synapse_call(Method::GET, &on_device, Some(BRIDGE_TOKEN), None)
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["device_id"], "CAROLDEV", "{me}");
    let (status, room) = stack
        .synapse_call(
            Method::POST,
            &format!("/_matrix/client/v3/createRoom?{as_carol}"),
            Some(BRIDGE_TOKEN),
            Some(json!({"name": "bridged"})),
        )
        .await;
    assert_eq!(status, 200, "createRoom as the bridged user: {room}");

    // Appservice login at Gatehouse: a token Synapse takes.
    let (status, login) = g
        .post_auth(
            "/_matrix/client/v3/login",
            BRIDGE_TOKEN,
            json!({"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "bridge_carol"}}),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    stack
        .assert_works_on_synapse(
            &s(&login, "access_token"),
            "bridge_carol",
            &s(&login, "device_id"),
        )
        .await;

    // The bridge deletes the device at Gatehouse, without UIA: Synapse
    // refuses its token at once, and the device to masquerade as.
    let (status, v) = g
        .send(
            g.http
                .delete(g.url(&format!("/_matrix/client/v3/devices/CAROLDEV?{as_carol}")))
                .bearer_auth(BRIDGE_TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    stack
        .assert_refused_by_synapse(&s(&reg, "access_token"), "deleted by the bridge")
        .await;
    assert_error(
        &stack
            .synapse_call(Method::GET, &on_device, Some(BRIDGE_TOKEN), None)
            .await,
        400,
        "M_UNKNOWN_DEVICE",
    );

    // The namespace is the bridge's: nobody else registers in it.
    let (status, v) = g
        .post(
            "/_matrix/client/v3/register",
            json!({"username": "bridge_mallory", "password": "pw", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (400, Some("M_EXCLUSIVE")),
        "{v}"
    );
}
