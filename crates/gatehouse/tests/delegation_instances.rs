//! Delegation with two Gatehouse instances on one PostgreSQL database in
//! front of one real Synapse: Synapse introspects at instance A while
//! people log in and out at instance B, and what B does is what Synapse
//! enforces. Always on PostgreSQL, whatever engine the rest of the suite
//! runs on.

mod common;

#[allow(dead_code)]
#[path = "delegation/stack.rs"]
mod stack;

use common::{Server, s};
use serde_json::json;
use stack::{PW, Stack};

/// Instance B: A's configuration (homeserver, secret, appservices,
/// database), its own port and data directory.
fn second_instance(a: &Server) -> Server {
    let keep: Vec<(&str, &str)> = a
        .env
        .iter()
        .filter(|(k, _)| {
            k.starts_with("GATEHOUSE_") && k != "GATEHOUSE_LISTEN" && k != "GATEHOUSE_DATA_DIR"
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Server::start(&keep).shared()
}

fn login_body(user: &str, device: &str) -> serde_json::Value {
    json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": PW,
        "device_id": device,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_delegate_as_one() {
    let url = gatehouse_store::postgres::testing::fresh_database().await;
    let stack = Stack::start(&[("GATEHOUSE_DATABASE__URL", url.as_str())]).await;
    let b = second_instance(&stack.gatehouse);
    stack.gatehouse.create_user("dana", PW, &[]);

    // Logged in at B (which provisions Synapse), used on Synapse (which
    // asks A), then logged out at B: Synapse refuses it at once.
    let (status, v) = b
        .post("/_matrix/client/v3/login", login_body("dana", "DANAPHONE"))
        .await;
    assert_eq!(status, 200, "{v}");
    let token = s(&v, "access_token");
    stack
        .assert_works_on_synapse(&token, "dana", "DANAPHONE")
        .await;
    let (status, v) = b
        .post_auth("/_matrix/client/v3/logout", &token, json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    stack
        .assert_refused_by_synapse(&token, "a token logged out at B")
        .await;
    assert_eq!(
        stack.gatehouse.whoami(&token).await.0,
        401,
        "A refuses it too"
    );

    // First logins of one new user on both instances at once: all succeed
    // and all work on Synapse (provisioning raced across instances).
    stack.gatehouse.create_user("erin", PW, &[]);
    let servers = [&stack.gatehouse, &b, &stack.gatehouse, &b];
    let logins = futures_util::future::join_all(servers.iter().enumerate().map(|(i, server)| {
        server.post(
            "/_matrix/client/v3/login",
            login_body("erin", &format!("ERIN{i}")),
        )
    }))
    .await;
    for (i, (status, v)) in logins.iter().enumerate() {
        assert_eq!(*status, 200, "first login {i}: {v}");
        stack
            .assert_works_on_synapse(&s(v, "access_token"), "erin", &format!("ERIN{i}"))
            .await;
    }

    // A device deleted at B (under UIA begun at A) is gone from Synapse.
    let (_, v) = b
        .post("/_matrix/client/v3/login", login_body("erin", "ERINLAPTOP"))
        .await;
    let keep = s(&logins[0].1, "access_token");
    let path = "/_matrix/client/v3/devices/ERINLAPTOP";
    let (status, challenge) = stack
        .gatehouse
        .send(
            stack
                .gatehouse
                .http
                .delete(stack.gatehouse.url(path))
                .bearer_auth(&keep)
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, 401, "{challenge}");
    let answer = json!({"auth": {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "erin"},
        "password": PW,
        "session": s(&challenge, "session"),
    }});
    let (status, done) = b
        .send(b.http.delete(b.url(path)).bearer_auth(&keep).json(&answer))
        .await;
    assert_eq!(status, 200, "{done}");
    stack
        .assert_refused_by_synapse(&s(&v, "access_token"), "a device deleted at B")
        .await;
}
