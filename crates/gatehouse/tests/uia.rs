//! User-Interactive Authentication of a logged-in user's operations, end to end
//! (registration is in registration.rs).

mod common;

use common::{Server, assert_error, open_registration, s, stages, start_with as start};
use serde_json::{Value, json};

const REG: &str = "/_matrix/client/v3/register";

async fn delete(server: &Server, path: &str, token: &str, body: Value) -> (u16, Value) {
    server
        .send(
            server
                .http
                .delete(server.url(path))
                .bearer_auth(token)
                .json(&body),
        )
        .await
}

async fn password_auth(
    server: &Server,
    path: &str,
    token: &str,
    mut body: Value,
    user: &str,
    pw: &str,
) -> (u16, Value) {
    let (status, c) = server.post_auth(path, token, body.clone()).await;
    assert_eq!(status, 401, "{c}");
    body["auth"] = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": pw, "session": s(&c, "session")});
    server.post_auth(path, token, body).await
}

#[tokio::test]
async fn password_change_under_uia() {
    let server = Server::start(&[]);
    server.create_user("alice", "old", &[]);
    let keep = server.login("alice", "old", json!({})).await;
    let other = server.login("alice", "old", json!({})).await;
    let at = s(&keep, "access_token");
    let path = "/_matrix/client/v3/account/password";
    let body = json!({"new_password": "new"});
    let (status, c) = server.post_auth(path, &at, body.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(
        stages(&c),
        vec![vec!["m.login.password".to_owned()]],
        "only stages alice can complete"
    );
    let session = s(&c, "session");
    let mut wrong = body.clone();
    wrong["auth"] = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "nope", "session": session});
    let (status, v) = server.post_auth(path, &at, wrong).await;
    assert_eq!(
        (status, v["errcode"].as_str(), v["session"].as_str()),
        (401, Some("M_FORBIDDEN"), Some(session.as_str()))
    );
    assert!(
        v["flows"].is_array(),
        "a failed stage repeats the challenge: {v}"
    );
    let mut right = body.clone();
    right["auth"] = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "old", "session": session});
    assert_eq!(server.post_auth(path, &at, right).await, (200, json!({})));
    assert_error(
        &server
            .post(
                "/_matrix/client/v3/login",
                json!({"type": "m.login.password", "user": "alice", "password": "old"}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    server.login("alice", "new", json!({})).await;
    assert_eq!(
        server.whoami(&at).await.0,
        200,
        "the current device is kept"
    );
    assert_eq!(
        server.whoami(&s(&other, "access_token")).await.0,
        401,
        "other devices are logged out"
    );
    // logout_devices: false keeps them.
    let third = server.login("alice", "new", json!({})).await;
    let (status, _) = password_auth(
        &server,
        path,
        &at,
        json!({"new_password": "newer", "logout_devices": false}),
        "alice",
        "new",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(server.whoami(&s(&third, "access_token")).await.0, 200);
    // Without a token it is a password reset, which needs email (off here).
    let reset = server.post(path, json!({"new_password": "x"})).await;
    assert_error(&reset, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn sessions_are_bound_to_user_operation_and_used_once() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    server.create_user("bob", "pw", &[]);
    let alice = server.access_token("alice", "pw").await;
    let bob = server.access_token("bob", "pw").await;
    let (_, c) = server
        .post_auth(
            "/_matrix/client/v3/account/password",
            &alice,
            json!({"new_password": "x"}),
        )
        .await;
    let session = s(&c, "session");
    let auth = |user: &str| json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": "pw", "session": session});
    // Another operation.
    let other_op = server
        .post_auth(
            "/_matrix/client/v3/account/deactivate",
            &alice,
            json!({"auth": auth("alice")}),
        )
        .await;
    assert_error(&other_op, 403, "M_FORBIDDEN");
    assert!(
        other_op.1["error"]
            .as_str()
            .unwrap()
            .contains("another operation")
    );
    // Another user.
    let other_user = server
        .post_auth(
            "/_matrix/client/v3/account/password",
            &bob,
            json!({"new_password": "x", "auth": auth("bob")}),
        )
        .await;
    assert_error(&other_user, 403, "M_FORBIDDEN");
    // Bob's password inside alice's session.
    let (status, v) = server
        .post_auth(
            "/_matrix/client/v3/account/password",
            &alice,
            json!({"new_password": "x", "auth": auth("bob")}),
        )
        .await;
    assert_eq!((status, v["errcode"].as_str()), (401, Some("M_FORBIDDEN")));
    assert_eq!(
        v["error"], "Invalid username or password",
        "no hint that the password fits another account"
    );
    // Concurrent completion: exactly one wins.
    let req = || {
        server.post_auth(
            "/_matrix/client/v3/account/password",
            &alice,
            json!({"new_password": "x", "auth": auth("alice")}),
        )
    };
    let (a, b) = tokio::join!(req(), req());
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 403], "{a:?} {b:?}");
    assert_error(&req().await, 403, "M_FORBIDDEN");
    assert_error(
        &server.post_auth("/_matrix/client/v3/account/password", &alice, json!({"new_password": "x", "auth": {"type": "m.login.dummy", "session": "nonexistent"}})).await,
        400,
        "M_UNKNOWN",
    );
}

#[tokio::test]
async fn devices_are_listed_renamed_and_deleted_under_uia() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let a = server
        .login(
            "alice",
            "pw",
            json!({"device_id": "AAA", "initial_device_display_name": "Laptop"}),
        )
        .await;
    let b = server
        .login("alice", "pw", json!({"device_id": "BBB"}))
        .await;
    let c = server
        .login("alice", "pw", json!({"device_id": "CCC"}))
        .await;
    let at = s(&a, "access_token");
    let (status, list) = server.get("/_matrix/client/v3/devices", Some(&at)).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["AAA", "BBB", "CCC"]);
    let (status, dev) = server
        .get("/_matrix/client/v3/devices/AAA", Some(&at))
        .await;
    assert_eq!(
        (status, dev["display_name"].as_str()),
        (200, Some("Laptop"))
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (_, dev) = server
        .get("/_matrix/client/v3/devices/AAA", Some(&at))
        .await;
    assert_eq!(dev["last_seen_ip"], "127.0.0.1", "{dev}");
    assert!(dev["last_seen_ts"].as_u64().unwrap() > 0);
    let rename = server
        .send(
            server
                .http
                .put(server.url("/_matrix/client/v3/devices/BBB"))
                .bearer_auth(&at)
                .json(&json!({"display_name": "Phone"})),
        )
        .await;
    assert_eq!(rename, (200, json!({})));
    let put_empty = |id: &str| {
        server
            .http
            .put(server.url(&format!("/_matrix/client/v3/devices/{id}")))
            .bearer_auth(&at)
            .json(&json!({}))
    };
    assert_eq!(
        server.send(put_empty("BBB")).await,
        (200, json!({})),
        "no display_name: unchanged"
    );
    assert_eq!(
        server
            .get("/_matrix/client/v3/devices/BBB", Some(&at))
            .await
            .1["display_name"],
        "Phone"
    );
    assert_error(&server.send(put_empty("ZZZ")).await, 404, "M_NOT_FOUND");
    assert_error(
        &server
            .get("/_matrix/client/v3/devices/ZZZ", Some(&at))
            .await,
        404,
        "M_NOT_FOUND",
    );
    let missing = server
        .send(
            server
                .http
                .put(server.url("/_matrix/client/v3/devices/ZZZ"))
                .bearer_auth(&at)
                .json(&json!({"display_name": "x"})),
        )
        .await;
    assert_error(&missing, 404, "M_NOT_FOUND");

    // A DELETE with no body at all (as curl sends it) is a request without auth.
    let bare = server
        .send(
            server
                .http
                .delete(server.url("/_matrix/client/v3/devices/BBB"))
                .bearer_auth(&at),
        )
        .await;
    assert_eq!(bare.0, 401, "{}", bare.1);
    assert!(bare.1["flows"].is_array());
    let (status, ch) = delete(&server, "/_matrix/client/v3/devices/BBB", &at, json!({})).await;
    assert_eq!(status, 401, "{ch}");
    let auth = json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw", "session": s(&ch, "session")}});
    assert_eq!(
        delete(&server, "/_matrix/client/v3/devices/BBB", &at, auth).await,
        (200, json!({}))
    );
    assert_eq!(server.whoami(&s(&b, "access_token")).await.0, 401);
    let (status, _) = password_auth(
        &server,
        "/_matrix/client/v3/delete_devices",
        &at,
        json!({"devices": ["CCC", "NOPE"]}),
        "alice",
        "pw",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(server.whoami(&s(&c, "access_token")).await.0, 401);
    let (_, list) = server.get("/_matrix/client/v3/devices", Some(&at)).await;
    assert_eq!(list["devices"].as_array().unwrap().len(), 1);
    assert_error(
        &server
            .post_auth("/_matrix/client/v3/delete_devices", &at, json!({}))
            .await,
        400,
        "M_MISSING_PARAM",
    );
}

#[tokio::test]
async fn deactivation_under_uia() {
    let mut settings = open_registration(r#"[["m.login.dummy"]]"#);
    settings.push(("GATEHOUSE_LOG_FILTER", "info".into()));
    let server = start(&settings);
    server.create_user("alice", "pw", &["--email", "alice@example.org"]);
    let at = server.access_token("alice", "pw").await;
    let (status, v) = password_auth(
        &server,
        "/_matrix/client/v3/account/deactivate",
        &at,
        json!({"erase": true}),
        "alice",
        "pw",
    )
    .await;
    assert_eq!(
        (status, v),
        (200, json!({"id_server_unbind_result": "success"}))
    );
    assert_eq!(server.whoami(&at).await.0, 401);
    assert_error(
        &server
            .post(
                "/_matrix/client/v3/login",
                json!({"type": "m.login.password", "user": "alice", "password": "pw"}),
            )
            .await,
        403,
        "M_USER_DEACTIVATED",
    );
    assert_error(
        &server
            .post(REG, json!({"username": "alice", "password": "pw"}))
            .await,
        400,
        "M_USER_IN_USE",
    );
}

#[tokio::test]
async fn threepids_are_listed_and_deleted() {
    let server = Server::start(&[]);
    server.create_user(
        "alice",
        "pw",
        &["--email", "Alice@Example.org", "--phone", "+447400123456"],
    );
    let at = server.access_token("alice", "pw").await;
    let (status, v) = server
        .get("/_matrix/client/v3/account/3pid", Some(&at))
        .await;
    assert_eq!(status, 200);
    let list = v["threepids"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0]["medium"].as_str(), list[0]["address"].as_str()),
        (Some("email"), Some("alice@example.org"))
    );
    assert!(list[0]["added_at"].as_u64().unwrap() > 0 && list[0]["validated_at"].is_u64());
    let del = server
        .post_auth(
            "/_matrix/client/v3/account/3pid/delete",
            &at,
            json!({"medium": "email", "address": "ALICE@example.org"}),
        )
        .await;
    assert_eq!(
        del,
        (200, json!({"id_server_unbind_result": "no-support"})),
        "no identity server was ever told"
    );
    let again = server
        .post_auth(
            "/_matrix/client/v3/account/3pid/delete",
            &at,
            json!({"medium": "email", "address": "alice@example.org"}),
        )
        .await;
    assert_error(&again, 400, "M_THREEPID_NOT_FOUND");
    assert_eq!(
        server
            .get("/_matrix/client/v3/account/3pid", Some(&at))
            .await
            .1["threepids"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

fn keypair(seed: u8) -> (ed25519_dalek::SigningKey, String) {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let public = gatehouse_core::signing::base64(sk.verifying_key().as_bytes());
    (sk, public)
}

fn key(user: &str, usage: &str, id: &str) -> Value {
    json!({"user_id": user, "usage": [usage], "keys": {format!("ed25519:{id}"): id}})
}

/// A key signed by `master`, as clients upload self-/user-signing keys.
fn signed_key(
    user: &str,
    usage: &str,
    id: &str,
    master: &(ed25519_dalek::SigningKey, String),
) -> Value {
    use ed25519_dalek::Signer;
    let mut k = key(user, usage, id);
    let sig = master.0.sign(&gatehouse_core::signing::signable_bytes(&k));
    k["signatures"] = json!({user: {format!("ed25519:{}", master.1): gatehouse_core::signing::base64(&sig.to_bytes())}});
    k
}

#[tokio::test]
async fn cross_signing_upload_needs_uia_only_to_replace() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let at = server.access_token("alice", "pw").await;
    let path = "/_matrix/client/v3/keys/device_signing/upload";
    let master = keypair(1);
    let (m1, s1, u1) = (master.1.clone(), keypair(2).1, keypair(3).1);
    let first = json!({
        "master_key": key("@alice:localhost", "master", &m1),
        "self_signing_key": signed_key("@alice:localhost", "self_signing", &s1, &master),
        "user_signing_key": signed_key("@alice:localhost", "user_signing", &u1, &master),
    });
    assert_eq!(
        server.post_auth(path, &at, first.clone()).await,
        (200, json!({})),
        "first upload needs no UIA"
    );
    assert_eq!(
        server.post_auth(path, &at, first).await,
        (200, json!({})),
        "re-uploading the same keys needs none either"
    );
    // A self-signing key signed by some other key is refused.
    let impostor = keypair(9);
    let forged = json!({"self_signing_key": signed_key("@alice:localhost", "self_signing", &keypair(4).1, &impostor)});
    assert_error(
        &server.post_auth(path, &at, forged).await,
        400,
        "M_INVALID_SIGNATURE",
    );
    let unsigned =
        json!({"self_signing_key": key("@alice:localhost", "self_signing", &keypair(4).1)});
    assert_error(
        &server.post_auth(path, &at, unsigned).await,
        400,
        "M_INVALID_SIGNATURE",
    );
    let new_master = keypair(5);
    let replace = json!({
        "master_key": key("@alice:localhost", "master", &new_master.1),
        "self_signing_key": signed_key("@alice:localhost", "self_signing", &keypair(6).1, &new_master),
    });
    let (status, _) = server.post_auth(path, &at, replace.clone()).await;
    assert_eq!(status, 401, "replacing keys needs UIA");
    let (status, v) = password_auth(&server, path, &at, replace, "alice", "pw").await;
    assert_eq!(status, 200, "{v}");
    let bad = server
        .post_auth(
            path,
            &at,
            json!({"master_key": key("@bob:localhost", "master", &m1)}),
        )
        .await;
    assert_error(&bad, 400, "M_INVALID_PARAM");
    let bad = server
        .post_auth(
            path,
            &at,
            json!({"master_key": key("@alice:localhost", "self_signing", &m1)}),
        )
        .await;
    assert_error(&bad, 400, "M_INVALID_PARAM");
    // The unstable path matrix-js-sdk's uploadDeviceSigningKeys uses works too.
    let again = json!({"master_key": key("@alice:localhost", "master", &new_master.1)});
    assert_eq!(
        server
            .post_auth(
                "/_matrix/client/unstable/keys/device_signing/upload",
                &at,
                again
            )
            .await,
        (200, json!({}))
    );
    // A login may not take a cross-signing key ID as its device ID.
    let clash = server
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "user": "alice", "password": "pw", "device_id": keypair(6).1}),
        )
        .await;
    assert_error(&clash, 403, "M_FORBIDDEN");
    // Nor may a new key's public key be the ID of one of the user's devices.
    let taken = keypair(7).1;
    server
        .login("alice", "pw", json!({"device_id": taken.clone()}))
        .await;
    let clash = server
        .post_auth(
            path,
            &at,
            json!({"master_key": key("@alice:localhost", "master", &taken)}),
        )
        .await;
    assert_error(&clash, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn flows_can_differ_per_operation() {
    let server = start(&[(
        "GATEHOUSE_UIA__OPERATIONS",
        r#"{device_deletion = [["m.login.dummy"]]}"#.into(),
    )]);
    server.create_user("alice", "pw", &[]);
    let a = server.login("alice", "pw", json!({"device_id": "A"})).await;
    server.login("alice", "pw", json!({"device_id": "B"})).await;
    let at = s(&a, "access_token");
    let (status, c) = delete(&server, "/_matrix/client/v3/devices/B", &at, json!({})).await;
    assert_eq!(
        (status, stages(&c)),
        (401, vec![vec!["m.login.dummy".to_owned()]])
    );
    let done = delete(
        &server,
        "/_matrix/client/v3/devices/B",
        &at,
        json!({"auth": {"type": "m.login.dummy", "session": s(&c, "session")}}),
    )
    .await;
    assert_eq!(done, (200, json!({})));
    // Other operations keep the default flows.
    let (_, c) = server
        .post_auth(
            "/_matrix/client/v3/account/password",
            &at,
            json!({"new_password": "x"}),
        )
        .await;
    assert_eq!(stages(&c), vec![vec!["m.login.password".to_owned()]]);
    let bad = Server::start(&[]).admin(&["config", "show"]);
    assert!(bad.status.success());
    let out = std::process::Command::new(common::BIN)
        .args(["config", "show"])
        .env(
            "GATEHOUSE_UIA__OPERATIONS",
            r#"{password_chnage = [["m.login.dummy"]]}"#,
        )
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("uia.operations")
    );
}

#[tokio::test]
async fn password_stages_count_against_the_address_like_logins() {
    let server = start(&[
        ("GATEHOUSE_TRUST_X_FORWARDED_FOR", "true".into()),
        (
            "GATEHOUSE_RATE_LIMITS__LOGIN_PER_ADDRESS__PER_SECOND",
            "0.001".into(),
        ),
        (
            "GATEHOUSE_RATE_LIMITS__LOGIN_PER_ADDRESS__BURST_COUNT",
            "2".into(),
        ),
    ]);
    server.create_user("alice", "pw", &[]);
    let at = server.access_token("alice", "pw").await;
    let path = "/_matrix/client/v3/account/password";
    let from = |ip: &'static str, body: Value| {
        server
            .http
            .post(server.url(path))
            .bearer_auth(&at)
            .header("X-Forwarded-For", ip)
            .json(&body)
    };
    let (_, c) = server
        .send(from("10.7.0.1", json!({"new_password": "new"})))
        .await;
    let guess = |pw: &str| json!({"new_password": "new", "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": pw, "session": s(&c, "session")}});
    for _ in 0..2 {
        let (status, v) = server.send(from("10.7.0.1", guess("wrong"))).await;
        assert_eq!((status, v["errcode"].as_str()), (401, Some("M_FORBIDDEN")));
    }
    assert_error(
        &server.send(from("10.7.0.1", guess("pw"))).await,
        429,
        "M_LIMIT_EXCEEDED",
    );
    let (status, v) = server.send(from("10.7.0.2", guess("pw"))).await;
    assert_eq!(status, 200, "another address goes on: {v}");
}

#[tokio::test]
async fn login_tokens_are_issued_at_most_once_a_minute() {
    let server = start(&[
        (
            "GATEHOUSE_RATE_LIMITS__LOGIN_TOKENS_PER_ACCOUNT__PER_SECOND",
            "0.0166".into(),
        ),
        (
            "GATEHOUSE_RATE_LIMITS__LOGIN_TOKENS_PER_ACCOUNT__BURST_COUNT",
            "1".into(),
        ),
    ]);
    server.create_user("alice", "pw", &[]);
    let at = server.access_token("alice", "pw").await;
    let path = "/_matrix/client/v1/login/get_token";
    let (status, v) = password_auth(&server, path, &at, json!({}), "alice", "pw").await;
    assert_eq!(status, 200, "{v}");
    let again = server.post_auth(path, &at, json!({})).await;
    assert_error(&again, 429, "M_LIMIT_EXCEEDED");
    assert!(again.1["retry_after_ms"].as_u64().unwrap() > 50_000);
}

/// A user with no flow they can complete (a guest: no password, no 3PID)
/// gets the spec's 400 from `/login/get_token`, not a challenge nobody can
/// answer, and the capabilities say so beforehand.
#[tokio::test]
async fn capabilities_and_get_token_follow_what_the_user_can_complete() {
    let server = start(&[
        ("GATEHOUSE_REGISTRATION__ENABLED", "true".into()),
        ("GATEHOUSE_REGISTRATION__GUEST_ACCESS", "true".into()),
    ]);
    server.create_user("alice", "pw", &[]);
    let alice = server.access_token("alice", "pw").await;
    let (_, guest) = server.post(&format!("{REG}?kind=guest"), json!({})).await;
    let guest = s(&guest, "access_token");
    let server = &server;
    let caps = |token: String| async move {
        let (status, v) = server
            .get("/_matrix/client/v3/capabilities", Some(&token))
            .await;
        assert_eq!(status, 200, "{v}");
        (
            v["capabilities"]["m.change_password"]["enabled"].clone(),
            v["capabilities"]["m.get_login_token"]["enabled"].clone(),
        )
    };
    assert_eq!(caps(alice.clone()).await, (json!(true), json!(true)));
    assert_eq!(caps(guest.clone()).await, (json!(false), json!(false)));
    let (status, v) = server
        .post_auth("/_matrix/client/v1/login/get_token", &guest, json!({}))
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = server
        .post_auth("/_matrix/client/v1/login/get_token", &alice, json!({}))
        .await;
    assert_eq!(status, 401, "a password user is asked to authenticate: {v}");
}

/// The policy versions a user accepted are recorded; when a version
/// changes, their next sensitive operation asks them to accept it first.
#[tokio::test]
async fn changed_terms_are_asked_for_again() {
    let dir = tempfile::tempdir().unwrap();
    let settings = |version: &'static str| {
        vec![
            ("GATEHOUSE_REGISTRATION__ENABLED", "true"),
            (
                "GATEHOUSE_REGISTRATION__FLOWS",
                r#"[["m.login.terms", "m.login.dummy"]]"#,
            ),
            ("GATEHOUSE_UIA__TERMS__PRIVACY__VERSION", version),
            (
                "GATEHOUSE_UIA__TERMS__PRIVACY__LANGUAGES",
                r#"{en = {name = "Privacy", url = "https://example.org/privacy"}}"#,
            ),
        ]
    };
    let server = Server::start_in(dir.path(), &settings("\"1\""));
    let (_, c) = server
        .post(REG, json!({"username": "tia", "password": "pw"}))
        .await;
    let session = s(&c, "session");
    for stage in ["m.login.terms", "m.login.dummy"] {
        server
            .post(REG, json!({"auth": {"type": stage, "session": session}}))
            .await;
    }
    let at = server.access_token("tia", "pw").await;
    let other = server.login("tia", "pw", json!({})).await;
    let other = s(&other, "device_id");
    // Version 1 accepted at registration: a sensitive operation asks only
    // for the password.
    let (status, c) = delete_device(&server, &at, &other, json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(stages(&c), vec![vec!["m.login.password".to_owned()]]);
    drop(server);

    // Version 2: asked first, with the new version in the params.
    let server = Server::start_in(dir.path(), &settings("\"2\""));
    let (status, c) = delete_device(&server, &at, &other, json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(
        stages(&c),
        vec![vec![
            "m.login.terms".to_owned(),
            "m.login.password".to_owned()
        ]]
    );
    assert_eq!(
        c["params"]["m.login.terms"]["policies"]["privacy"]["version"],
        "2"
    );
    let session = s(&c, "session");
    let (status, _) = delete_device(
        &server,
        &at,
        &other,
        json!({"type": "m.login.terms", "session": session}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, v) = delete_device(
        &server,
        &at,
        &other,
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "tia"}, "password": "pw", "session": session}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // Accepted: not asked again.
    let third = s(&server.login("tia", "pw", json!({})).await, "device_id");
    let (_, c) = delete_device(&server, &at, &third, json!({})).await;
    assert_eq!(stages(&c), vec![vec!["m.login.password".to_owned()]]);
    // An account that never went through a terms stage (made by an
    // administrator) is not stopped by one.
    server.create_user("admin_made", "pw", &[]);
    let made = server.access_token("admin_made", "pw").await;
    let device = s(
        &server.login("admin_made", "pw", json!({})).await,
        "device_id",
    );
    let (_, c) = delete_device(&server, &made, &device, json!({})).await;
    assert_eq!(stages(&c), vec![vec!["m.login.password".to_owned()]]);
}

async fn delete_device(server: &Server, at: &str, device: &str, auth: Value) -> (u16, Value) {
    let path = format!("/_matrix/client/v3/devices/{device}");
    delete(server, &path, at, json!({ "auth": auth })).await
}
