//! A UIA session is spent only when the operation it authorised succeeds.
//! Each operation below fails after its stages passed — a real storage
//! failure, made by a trigger in the server's own database (SQLite or PostgreSQL) — and the very
//! same request, retried with the same session once storage works again,
//! performs it (the spec answers a retry of completed stages with the call).

mod common;

use common::{Server, assert_error, s};
use reqwest::Method;
use serde_json::{Value, json};

async fn call(
    server: &Server,
    method: &Method,
    path: &str,
    token: &str,
    body: &Value,
) -> (u16, Value) {
    server
        .send(
            server
                .http
                .request(method.clone(), server.url(path))
                .bearer_auth(token)
                .json(body),
        )
        .await
}

/// Runs `method path body` with `password` answering its UIA challenge,
/// while `event` fails in storage: refused with the spec's 500, then — the
/// failure gone — the same request with the same session succeeds. Returns
/// the request (with its `auth`) and the success.
async fn survives_failure(
    server: &Server,
    token: &str,
    (method, path, mut body): (Method, &str, Value),
    password: &str,
    event: &str,
) -> (Value, Value) {
    let (status, challenge) = call(server, &method, path, token, &body).await;
    assert_eq!(status, 401, "{path} asks for UIA: {challenge}");
    body["auth"] = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": password,
        "session": s(&challenge, "session"),
    });
    common::database::fail_on(&server.data_dir, event).await;
    let failed = call(server, &method, path, token, &body).await;
    common::database::heal(&server.data_dir).await;
    assert_error(&failed, 500, "M_UNKNOWN");
    let (status, done) = call(server, &method, path, token, &body).await;
    assert_eq!(status, 200, "{path} retried with the same session: {done}");
    (body, done)
}

fn master_key(seed: u8) -> Value {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let id = gatehouse_core::signing::base64(sk.verifying_key().as_bytes());
    json!({"master_key": {"user_id": "@alice:localhost", "usage": ["master"], "keys": {format!("ed25519:{id}"): id}}})
}

#[tokio::test]
async fn failures_after_the_stages_leave_the_session_usable() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let at = server.access_token("alice", "pw").await;
    let v3 = |p: &str| format!("/_matrix/client/v3/{p}");

    // Deleting one device, then several.
    let second = s(&server.login("alice", "pw", json!({})).await, "device_id");
    let path = v3(&format!("devices/{second}"));
    let (retried, _) = survives_failure(
        &server,
        &at,
        (Method::DELETE, &path, json!({})),
        "pw",
        "DELETE ON devices",
    )
    .await;
    // Succeeded, it is spent.
    assert_error(
        &call(&server, &Method::DELETE, &path, &at, &retried).await,
        403,
        "M_FORBIDDEN",
    );
    let third = s(&server.login("alice", "pw", json!({})).await, "device_id");
    survives_failure(
        &server,
        &at,
        (
            Method::POST,
            &v3("delete_devices"),
            json!({"devices": [third]}),
        ),
        "pw",
        "DELETE ON devices",
    )
    .await;
    let (_, devices) = server.get(&v3("devices"), Some(&at)).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1, "{devices}");

    // A login token.
    let (_, minted) = survives_failure(
        &server,
        &at,
        (
            Method::POST,
            "/_matrix/client/v1/login/get_token",
            json!({}),
        ),
        "pw",
        "INSERT ON login_tokens",
    )
    .await;
    assert!(minted["login_token"].is_string(), "{minted}");

    // Replacing the cross-signing keys (the first upload needs no UIA).
    let keys = v3("keys/device_signing/upload");
    assert_eq!(server.post_auth(&keys, &at, master_key(1)).await.0, 200);
    survives_failure(
        &server,
        &at,
        (Method::POST, &keys, master_key(2)),
        "pw",
        "INSERT ON cross_signing_keys",
    )
    .await;

    // A password change: the new password is the one in force.
    survives_failure(
        &server,
        &at,
        (
            Method::POST,
            &v3("account/password"),
            json!({"new_password": "pw2"}),
        ),
        "pw",
        "UPDATE ON users",
    )
    .await;
    let (status, _) = server
        .post(
            &v3("login"),
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw2"}),
        )
        .await;
    assert_eq!(status, 200);

    // Deactivation.
    survives_failure(
        &server,
        &at,
        (Method::POST, &v3("account/deactivate"), json!({})),
        "pw2",
        "UPDATE ON users",
    )
    .await;
    assert_error(&server.whoami(&at).await, 401, "M_UNKNOWN_TOKEN");
}
