//! Application services (bridges): registration files, `as_token`
//! authentication with identity assertion, `m.login.application_service`
//! registration and login, and device management without UIA.

mod common;

use common::{BIN, Server, assert_error, s};
use serde_json::json;

const AS_TOKEN: &str = "as_token_of_the_bridge_0123456789";

const REGISTRATION: &str = r#"id: test-bridge
url: "http://127.0.0.1:9"
as_token: "as_token_of_the_bridge_0123456789"
hs_token: "hs_token_of_the_bridge_0123456789"
sender_localpart: bridgebot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: '@bridge_.*:localhost'
  aliases: []
  rooms: []
"#;

/// A server with registration open (password only) and the bridge registered.
fn start(dir: &std::path::Path) -> Server {
    let file = dir.join("registration.yaml");
    std::fs::write(&file, REGISTRATION).unwrap();
    let files = format!("[{:?}]", file.display().to_string());
    Server::start(&[
        ("GATEHOUSE_REGISTRATION__ENABLED", "true"),
        ("GATEHOUSE_REGISTRATION__FLOWS", r#"[["m.login.dummy"]]"#),
        ("GATEHOUSE_APPSERVICES__REGISTRATION_FILES", &files),
    ])
}

async fn as_register(
    server: &Server,
    username: &str,
    extra: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut body = json!({"type": "m.login.application_service", "username": username});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    server
        .post_auth("/_matrix/client/v3/register", AS_TOKEN, body)
        .await
}

#[tokio::test]
async fn appservice_registers_logs_in_and_masquerades() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());

    // The token alone: the sender.
    let (status, me) = server.whoami(AS_TOKEN).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], "@bridgebot:localhost");
    assert!(me.get("device_id").is_none(), "no device: {me}");

    // Registration by the appservice: no UIA, no password.
    let (status, body) = as_register(&server, "bridge_alice", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@bridge_alice:localhost");
    let token = s(&body, "access_token");
    let (status, me) = server.whoami(&token).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], "@bridge_alice:localhost");
    // inhibit_login: the account, no session.
    let (status, body) = as_register(&server, "bridge_x", json!({"inhibit_login": true})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    // Outside its namespace.
    assert_error(
        &as_register(&server, "alice", json!({})).await,
        400,
        "M_EXCLUSIVE",
    );
    // The same type without the token, or with a user's token.
    let anonymous = server
        .post(
            "/_matrix/client/v3/register",
            json!({"type": "m.login.application_service", "username": "bridge_eve"}),
        )
        .await;
    assert_error(&anonymous, 401, "M_MISSING_TOKEN");
    let with_user_token = server
        .post_auth(
            "/_matrix/client/v3/register",
            &token,
            json!({"type": "m.login.application_service", "username": "bridge_eve"}),
        )
        .await;
    assert_error(&with_user_token, 401, "M_UNKNOWN_TOKEN");
    // Anyone else: a name of the exclusive namespace is the bridge's.
    let normal = server
        .post(
            "/_matrix/client/v3/register",
            json!({"username": "bridge_bob", "password": "a long password 123"}),
        )
        .await;
    assert_error(&normal, 400, "M_EXCLUSIVE");
    let (status, _) = server
        .get(
            "/_matrix/client/v3/register/available?username=bridge_bob",
            None,
        )
        .await;
    assert_eq!(status, 400);

    // Identity assertion.
    let (status, me) = server
        .get(
            "/_matrix/client/v3/account/whoami?user_id=%40bridge_x%3Alocalhost",
            Some(AS_TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], "@bridge_x:localhost");
    server.create_user("carol", "a long password 123", &[]);
    let outside = server
        .get(
            "/_matrix/client/v3/account/whoami?user_id=%40carol%3Alocalhost",
            Some(AS_TOKEN),
        )
        .await;
    assert_error(&outside, 403, "M_FORBIDDEN");
    let unregistered = server
        .get(
            "/_matrix/client/v3/account/whoami?user_id=%40bridge_nobody%3Alocalhost",
            Some(AS_TOKEN),
        )
        .await;
    assert_error(&unregistered, 403, "M_FORBIDDEN");

    // Login as a user of its namespace.
    let login = |user: &str| {
        json!({
            "type": "m.login.application_service",
            "identifier": {"type": "m.id.user", "user": user},
        })
    };
    let (status, body) = server
        .post_auth(
            "/_matrix/client/v3/login",
            AS_TOKEN,
            login("@bridge_alice:localhost"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@bridge_alice:localhost");
    let (status, me) = server.whoami(&s(&body, "access_token")).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], "@bridge_alice:localhost");
    assert_eq!(me["device_id"], body["device_id"]);
    let outside = server
        .post_auth("/_matrix/client/v3/login", AS_TOKEN, login("carol"))
        .await;
    assert_error(&outside, 403, "M_EXCLUSIVE");
    let unregistered = server
        .post_auth("/_matrix/client/v3/login", AS_TOKEN, login("bridge_nobody"))
        .await;
    assert_error(&unregistered, 403, "M_FORBIDDEN");
    let without_token = server
        .post("/_matrix/client/v3/login", login("bridge_alice"))
        .await;
    assert_error(&without_token, 403, "M_FORBIDDEN");

    // The flow is advertised.
    let (status, flows) = server.get("/_matrix/client/v3/login", None).await;
    assert_eq!(status, 200);
    assert!(
        flows["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["type"] == "m.login.application_service"),
        "{flows}"
    );
}

#[tokio::test]
async fn appservice_manages_devices_without_uia() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let (status, body) = as_register(&server, "bridge_alice", json!({"inhibit_login": true})).await;
    assert_eq!(status, 200, "{body}");
    let device = |path: &str| {
        server.url(&format!(
            "/_matrix/client/v3/devices/{path}?user_id=%40bridge_alice%3Alocalhost"
        ))
    };

    // PUT of a device it lacks creates it (201); a second PUT renames it.
    let (status, body) = server
        .send(
            server
                .http
                .put(device("NEWDEV"))
                .bearer_auth(AS_TOKEN)
                .json(&json!({"display_name": "Bridged"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .send(server.http.get(device("NEWDEV")).bearer_auth(AS_TOKEN))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["display_name"], "Bridged");
    let (status, body) = server
        .send(
            server
                .http
                .put(device("NEWDEV"))
                .bearer_auth(AS_TOKEN)
                .json(&json!({"display_name": "Renamed"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // DELETE without an auth body: no UIA for an appservice.
    let (status, body) = server
        .send(server.http.delete(device("NEWDEV")).bearer_auth(AS_TOKEN))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server
        .send(server.http.get(device("NEWDEV")).bearer_auth(AS_TOKEN))
        .await;
    assert_eq!(status, 404);

    // A user's own token still needs UIA to delete a device (which this
    // passwordless user cannot pass), and cannot create one with PUT.
    let (status, body) = server
        .post_auth(
            "/_matrix/client/v3/login",
            AS_TOKEN,
            json!({
                "type": "m.login.application_service",
                "identifier": {"type": "m.id.user", "user": "bridge_alice"},
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = s(&body, "access_token");
    let login_device = s(&body, "device_id");
    let (status, _) = server
        .send(
            server
                .http
                .put(server.url("/_matrix/client/v3/devices/OTHER"))
                .bearer_auth(&token)
                .json(&json!({"display_name": "x"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = server
        .send(
            server
                .http
                .delete(server.url(&format!(
                    "/_matrix/client/v3/devices/{}",
                    s(&body, "device_id")
                )))
                .bearer_auth(&token),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");

    // Bulk deletion by the appservice: no UIA either.
    let (status, body) =
        server
            .send(
                server
                    .http
                    .post(server.url(
                        "/_matrix/client/v3/delete_devices?user_id=%40bridge_alice%3Alocalhost",
                    ))
                    .bearer_auth(AS_TOKEN)
                    .json(&json!({"devices": [login_device]})),
            )
            .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.whoami(&token).await;
    assert_eq!(status, 401);
}

/// Spec v1.17's device masquerading: `device_id` beside `user_id` acts as
/// that device of the user, which must exist (`M_UNKNOWN_DEVICE`);
/// `/logout` then ends that device, and without one changes nothing.
#[tokio::test]
async fn appservice_masquerades_as_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let (status, body) = as_register(&server, "bridge_bob", json!({"device_id": "BOBDEV"})).await;
    assert_eq!(status, 200, "{body}");
    let as_user = |path: &str, query: &str| {
        server.url(&format!(
            "/_matrix/client/v3/{path}?user_id=%40bridge_bob%3Alocalhost{query}"
        ))
    };
    let (status, me) = server
        .send(
            server
                .http
                .get(as_user("account/whoami", "&device_id=BOBDEV"))
                .bearer_auth(AS_TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (me["user_id"].as_str(), me["device_id"].as_str()),
        (Some("@bridge_bob:localhost"), Some("BOBDEV"))
    );
    // A device the user does not have, or another user's.
    for query in ["&device_id=NOSUCH", "&org.matrix.msc3202.device_id=NOSUCH"] {
        assert_error(
            &server
                .send(
                    server
                        .http
                        .get(as_user("account/whoami", query))
                        .bearer_auth(AS_TOKEN),
                )
                .await,
            400,
            "M_UNKNOWN_DEVICE",
        );
    }
    // The token alone logs nothing out: the user's device stays.
    let logout = |query: &'static str| {
        server.send(
            server
                .http
                .post(as_user("logout", query))
                .bearer_auth(AS_TOKEN)
                .json(&json!({})),
        )
    };
    assert_eq!(logout("").await, (200, json!({})));
    assert_eq!(server.whoami(&s(&body, "access_token")).await.0, 200);
    // With the device asserted, that device is logged out.
    assert_eq!(logout("&device_id=BOBDEV").await, (200, json!({})));
    assert_error(
        &server.whoami(&s(&body, "access_token")).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(&logout("&device_id=BOBDEV").await, 400, "M_UNKNOWN_DEVICE");
}

#[test]
fn a_bad_registration_file_stops_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let run = |content: &str| {
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, content).unwrap();
        let files = format!("[{:?}]", file.display().to_string());
        std::process::Command::new(BIN)
            .args(["config", "show"])
            .env("GATEHOUSE_APPSERVICES__REGISTRATION_FILES", files)
            .output()
            .unwrap()
    };
    for bad in [
        "id: x\n",
        &REGISTRATION.replace("'@bridge_.*:localhost'", "'@(['"),
        "not: [valid",
    ] {
        let out = run(bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("appservices.registration_files") && err.contains("bad.yaml"),
            "{err}"
        );
        assert!(!err.contains(AS_TOKEN), "{err}");
    }
    // A good file is shown by path, never by content.
    let out = run(REGISTRATION);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("bad.yaml") && !shown.contains(AS_TOKEN),
        "{shown}"
    );
    // Two registrations with one token.
    let other = dir.path().join("other.yaml");
    std::fs::write(&other, REGISTRATION.replace("id: test-bridge", "id: other")).unwrap();
    let files = format!(
        "[{:?}, {:?}]",
        dir.path().join("bad.yaml").display().to_string(),
        other.display().to_string()
    );
    let out = std::process::Command::new(BIN)
        .args(["config", "show"])
        .env("GATEHOUSE_APPSERVICES__REGISTRATION_FILES", files)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("as_token is used by another"), "{err}");
}
