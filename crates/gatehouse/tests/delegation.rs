//! Delegation end to end: a real Synapse 1.163.2 with
//! `matrix_authentication_service` pointing at a real `gatehouse serve`
//! (started by `interop/synapse/synapse.sh start-delegated`, which
//! `scripts/test` installs). What is checked is the service side of the
//! contract: metadata, introspection, and that every change made at
//! Gatehouse (login, logout, device deletion, password change,
//! deactivation, reactivation, admin flag) is what Synapse enforces.
//!
//! One Synapse + Gatehouse pair serves every test, started once per test
//! binary. The test that kills and restarts Synapse (which also empties
//! Synapse's token cache) runs while no other test uses it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, assert_error, s};
use reqwest::Method;
use serde_json::json;

#[path = "delegation/stack.rs"]
mod stack;

#[path = "delegation/appservice.rs"]
mod appservice;

#[path = "delegation/moderation.rs"]
mod moderation;

use stack::*;

#[tokio::test]
async fn metadata_is_served_and_synapse_relays_it() {
    let (_running, stack) = shared().await;
    let (status, meta) = stack
        .gatehouse
        .get("/.well-known/openid-configuration", None)
        .await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["issuer"], stack.public.as_str(), "{meta}");
    let account = s(&meta, "account_management_uri");
    assert!(account.ends_with("/_gatehouse/account"), "{meta}");
    assert!(account.starts_with(&stack.public), "{meta}");
    assert!(!account.contains('?'), "Synapse appends ?action=…: {meta}");

    for path in [
        "/_matrix/client/v1/auth_metadata",
        "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
    ] {
        let (status, relayed) = stack.synapse_call(Method::GET, path, None, None).await;
        assert_eq!(status, 200, "{path}: {relayed}");
        assert_eq!(relayed, meta, "{path} relays Gatehouse's metadata as it is");
    }
    let (status, wk) = stack
        .synapse_call(Method::GET, "/.well-known/matrix/client", None, None)
        .await;
    assert_eq!(status, 200, "{wk}");
    assert_eq!(
        wk["org.matrix.msc2965.authentication"],
        json!({"issuer": stack.public, "account": account}),
        "{wk}"
    );
}

#[tokio::test]
async fn introspection_answers_the_homeserver_and_only_it() {
    let (_running, stack) = shared().await;
    let g = &stack.gatehouse;
    g.create_user("ivy", PW, &[]);

    // A token that never expires: the API scope, its device, no expires_in.
    let (plain, body) = stack.login("ivy", "IVYPLAIN", json!({})).await;
    assert!(body.get("expires_in_ms").is_none(), "{body}");
    let v = stack.introspect(&plain).await;
    assert_eq!(v["active"], true, "{v}");
    let scope = scopes(&v);
    assert!(scope.iter().any(|x| x == API_SCOPE), "{v}");
    assert!(
        scope
            .iter()
            .any(|x| x == "urn:matrix:client:device:IVYPLAIN"),
        "{v}"
    );
    assert_eq!(
        scope
            .iter()
            .filter(|x| x.starts_with("urn:matrix:client:device:"))
            .count(),
        1,
        "Synapse refuses two device scopes: {v}"
    );
    assert!(!scope.iter().any(|x| x == ADMIN_SCOPE), "not an admin: {v}");
    assert_eq!(v["username"], "ivy", "the bare localpart: {v}");
    assert_eq!(v["device_id"], "IVYPLAIN", "{v}");
    assert!(
        v.get("expires_in").is_none(),
        "a token that never expires must not expire on Synapse: {v}"
    );

    // A refreshable token expires: whole seconds left, never more than its lifetime.
    let (expiring, body) = stack
        .login("ivy", "IVYREFRESH", json!({"refresh_token": true}))
        .await;
    let lifetime_s = body["expires_in_ms"].as_u64().expect("expires_in_ms") / 1000;
    let v = stack.introspect(&expiring).await;
    assert_eq!(v["active"], true, "{v}");
    let left = v["expires_in"]
        .as_u64()
        .unwrap_or_else(|| panic!("an expiring token needs expires_in: {v}"));
    assert!(
        left <= lifetime_s && left + 10 >= lifetime_s,
        "expires_in {left} for a lifetime of {lifetime_s} s"
    );
    assert_eq!(v["device_id"], "IVYREFRESH", "{v}");
    // Its refresh token is not an access token.
    let refresh = s(&body, "refresh_token");
    assert!(refresh.starts_with("ghrt_"), "{body}");
    assert_eq!(stack.introspect(&refresh).await, json!({"active": false}));

    // `gatehouse user admin` adds Synapse's admin scope to new tokens;
    // `--revoke` takes it away again.
    admin_cli(g, &["user", "admin", "ivy"]);
    let (admin, _) = stack.login("ivy", "IVYADMIN", json!({})).await;
    let v = stack.introspect(&admin).await;
    assert_eq!(v["active"], true, "{v}");
    assert!(scopes(&v).iter().any(|x| x == ADMIN_SCOPE), "an admin: {v}");
    assert!(scopes(&v).iter().any(|x| x == API_SCOPE), "{v}");
    admin_cli(g, &["user", "admin", "ivy", "--revoke"]);
    let (demoted, _) = stack.login("ivy", "IVYDEMOTED", json!({})).await;
    let v = stack.introspect(&demoted).await;
    assert_eq!(v["active"], true, "{v}");
    assert!(!scopes(&v).iter().any(|x| x == ADMIN_SCOPE), "{v}");

    // A logged-out token, one nobody issued, garbage: inactive, with 200.
    let (status, _) = g
        .post_auth("/_matrix/client/v3/logout", &plain, json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(stack.introspect(&plain).await, json!({"active": false}));
    let unknown = gatehouse_core::token::generate(gatehouse_core::token::TokenKind::Access);
    assert_eq!(stack.introspect(&unknown).await, json!({"active": false}));
    for garbage in [
        "",
        "garbage",
        "ghat_",
        "syt_aXZ5_bm90aGluZw_0abcde",
        &expiring[..expiring.len() - 1],
        &stack.secret,
    ] {
        assert_eq!(
            stack.introspect(garbage).await,
            json!({"active": false}),
            "token {garbage:?}"
        );
    }

    // Only the homeserver may ask: the shared secret as bearer token.
    let live = expiring.as_str();
    for wrong in [
        "Bearer not-the-secret-at-all".to_owned(),
        format!("Bearer {}x", stack.secret),
        format!("Bearer {}", &stack.secret[..stack.secret.len() - 1]),
        format!("Bearer {live}"),
    ] {
        let got = stack.introspect_as(Some(&wrong), live).await;
        assert_eq!(got.0, 401, "{wrong}: {}", got.1);
        assert!(got.1["errcode"].is_string(), "a Matrix error: {}", got.1);
        assert!(got.1["error"].is_string(), "a Matrix error: {}", got.1);
        assert!(got.1.get("active").is_none(), "{}", got.1);
    }
    assert_error(
        &stack.introspect_as(None, live).await,
        401,
        "M_MISSING_TOKEN",
    );
    // The scheme is case-insensitive (RFC 7235); the secret came from the
    // file named by GATEHOUSE_HOMESERVER__SECRET_PATH, newline trimmed.
    let (status, v) = stack
        .introspect_as(Some(&format!("bearer {}", stack.secret)), live)
        .await;
    assert_eq!((status, &v["active"]), (200, &json!(true)), "{v}");
}

/// Runs `gatehouse serve` with `env`, expecting it to refuse to start.
fn serve_refuses(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("GATEHOUSE_DATA_DIR", dir.path())
        .env("GATEHOUSE_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gatehouse serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gatehouse serve started with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inconsistent_delegation_settings_stop_serve_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "a-secret-from-the-file-0123456789\n").unwrap();
    let file = file.display().to_string();
    let url = ("GATEHOUSE_HOMESERVER__URL", "http://127.0.0.1:9");
    let public = ("GATEHOUSE_PUBLIC_BASEURL", "http://127.0.0.1:8008");
    let inline = "an-inline-secret-0123456789";

    let (code, err) = serve_refuses(&[
        url,
        public,
        ("GATEHOUSE_HOMESERVER__SECRET", inline),
        ("GATEHOUSE_HOMESERVER__SECRET_PATH", &file),
    ]);
    assert_eq!(code, Some(2), "secret and secret_path: {err}");
    assert!(err.contains("homeserver.secret"), "{err}");
    assert!(!err.contains(inline), "the secret is not echoed: {err}");

    let (code, err) = serve_refuses(&[
        url,
        public,
        ("GATEHOUSE_HOMESERVER__SECRET", "short-secret"),
    ]);
    assert_eq!(code, Some(2), "a short secret: {err}");
    assert!(err.contains("homeserver.secret"), "{err}");
    assert!(err.contains("16"), "says how long it must be: {err}");
    assert!(
        !err.contains("short-secret"),
        "the secret is not echoed: {err}"
    );

    let short_file = dir.path().join("short");
    std::fs::write(&short_file, "tiny\n").unwrap();
    let (code, err) = serve_refuses(&[
        url,
        public,
        (
            "GATEHOUSE_HOMESERVER__SECRET_PATH",
            short_file.to_str().unwrap(),
        ),
    ]);
    assert_eq!(code, Some(2), "a short secret in the file: {err}");
    assert!(err.contains("homeserver.secret"), "{err}");

    let (code, err) = serve_refuses(&[
        url,
        public,
        (
            "GATEHOUSE_HOMESERVER__SECRET_PATH",
            "/nonexistent/gatehouse-secret",
        ),
    ]);
    assert_eq!(code, Some(2), "a missing secret file: {err}");
    assert!(err.contains("homeserver.secret"), "{err}");

    let (code, err) = serve_refuses(&[url, ("GATEHOUSE_HOMESERVER__SECRET_PATH", &file)]);
    assert_eq!(
        code,
        Some(2),
        "homeserver.url without public_baseurl: {err}"
    );
    assert!(err.contains("public_baseurl"), "{err}");

    let (code, err) = serve_refuses(&[url, public]);
    assert_eq!(code, Some(2), "homeserver.url without a secret: {err}");
    assert!(err.contains("homeserver.secret"), "{err}");
}

#[tokio::test]
async fn gatehouse_tokens_work_on_synapse_until_logout() {
    let (_running, stack) = shared().await;
    let g = &stack.gatehouse;
    g.create_user("tom", PW, &[]);
    let (token, _) = stack.login("tom", "TOMPHONE", json!({})).await;
    stack
        .assert_works_on_synapse(&token, "tom", "TOMPHONE")
        .await;

    // The client API behind it works with that token.
    let (status, room) = stack
        .synapse_call(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(&token),
            Some(json!({"name": "delegated"})),
        )
        .await;
    assert_eq!(status, 200, "createRoom: {room}");
    let room_id = s(&room, "room_id");
    let (status, sent) = stack
        .synapse_call(
            Method::PUT,
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/txn1",
                segment(&room_id)
            ),
            Some(&token),
            Some(json!({"msgtype": "m.text", "body": "through Gatehouse"})),
        )
        .await;
    assert_eq!(status, 200, "send: {sent}");
    let event_id = s(&sent, "event_id");
    let (status, sync) = stack
        .synapse_call(
            Method::GET,
            "/_matrix/client/v3/sync?timeout=0",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "sync: {sync}");
    let events = sync["rooms"]["join"][&room_id]["timeline"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no timeline for {room_id} in {sync}"));
    assert!(
        events.iter().any(|e| e["event_id"] == event_id.as_str()),
        "the message is in /sync: {events:?}"
    );

    // Logout at Gatehouse: Synapse refuses the token at once, although it
    // cached it as active a moment ago.
    let (status, v) = g
        .post_auth("/_matrix/client/v3/logout", &token, json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    stack
        .assert_refused_by_synapse(&token, "logged out at Gatehouse")
        .await;

    // logout/all: every device, at once.
    let (a, _) = stack.login("tom", "TOMA", json!({})).await;
    let (b, _) = stack.login("tom", "TOMB", json!({})).await;
    stack.assert_works_on_synapse(&a, "tom", "TOMA").await;
    stack.assert_works_on_synapse(&b, "tom", "TOMB").await;
    let (status, v) = g
        .post_auth("/_matrix/client/v3/logout/all", &a, json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    stack.assert_refused_by_synapse(&a, "logout/all").await;
    stack.assert_refused_by_synapse(&b, "logout/all").await;
    let admin = stack.admin_token().await;
    assert_eq!(
        stack.synapse_devices(&admin, "tom").await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn deleting_devices_at_gatehouse_removes_them_from_synapse() {
    let (_running, stack) = shared().await;
    let g = &stack.gatehouse;
    g.create_user("dora", PW, &[]);
    let (keep, _) = stack.login("dora", "DORAKEEP", json!({})).await;
    let (one, _) = stack.login("dora", "DORAONE", json!({})).await;
    let (bulk, _) = stack.login("dora", "DORABULK", json!({})).await;
    for (token, device) in [(&keep, "DORAKEEP"), (&one, "DORAONE"), (&bulk, "DORABULK")] {
        stack.assert_works_on_synapse(token, "dora", device).await;
    }
    let admin = stack.admin_token().await;
    let mut devices = stack.synapse_devices(&admin, "dora").await;
    devices.sort();
    assert_eq!(devices, ["DORABULK", "DORAKEEP", "DORAONE"]);

    let (status, v) = g
        .with_password_uia(
            Method::DELETE,
            "/_matrix/client/v3/devices/DORAONE",
            &keep,
            json!({}),
            "dora",
            PW,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let mut devices = stack.synapse_devices(&admin, "dora").await;
    devices.sort();
    assert_eq!(devices, ["DORABULK", "DORAKEEP"], "DORAONE is gone");
    stack
        .assert_refused_by_synapse(&one, "its device was deleted")
        .await;

    let (status, v) = g
        .with_password_uia(
            Method::POST,
            "/_matrix/client/v3/delete_devices",
            &keep,
            json!({"devices": ["DORABULK"]}),
            "dora",
            PW,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(stack.synapse_devices(&admin, "dora").await, ["DORAKEEP"]);
    stack
        .assert_refused_by_synapse(&bulk, "its device was deleted")
        .await;
    stack
        .assert_works_on_synapse(&keep, "dora", "DORAKEEP")
        .await;
}

#[tokio::test]
async fn password_change_with_logout_devices_ends_the_others_on_synapse() {
    let (_running, stack) = shared().await;
    let g = &stack.gatehouse;
    g.create_user("pat", PW, &[]);
    let (here, _) = stack.login("pat", "PATHERE", json!({})).await;
    let (there, _) = stack.login("pat", "PATTHERE", json!({})).await;
    stack.assert_works_on_synapse(&here, "pat", "PATHERE").await;
    stack
        .assert_works_on_synapse(&there, "pat", "PATTHERE")
        .await;

    let (status, v) = g
        .with_password_uia(
            Method::POST,
            "/_matrix/client/v3/account/password",
            &here,
            json!({"new_password": "pat-new-pw", "logout_devices": true}),
            "pat",
            PW,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    stack
        .assert_refused_by_synapse(&there, "logged out by the password change")
        .await;
    stack.assert_works_on_synapse(&here, "pat", "PATHERE").await;
    let admin = stack.admin_token().await;
    assert_eq!(stack.synapse_devices(&admin, "pat").await, ["PATHERE"]);
}

#[tokio::test]
async fn deactivation_with_erase_reaches_synapse_and_reactivation_undoes_it() {
    let (_running, stack) = shared().await;
    let g = &stack.gatehouse;
    g.create_user("dee", PW, &[]);
    let (token, _) = stack.login("dee", "DEEDEV", json!({})).await;
    stack.assert_works_on_synapse(&token, "dee", "DEEDEV").await;
    let (status, v) = stack
        .synapse_call(
            Method::PUT,
            "/_matrix/client/v3/profile/@dee:localhost/displayname",
            Some(&token),
            Some(json!({"displayname": "Dee Delegated"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let admin = stack.admin_token().await;
    let before = stack.synapse_user(&admin, "dee").await;
    assert_eq!(
        (&before["deactivated"], &before["displayname"]),
        (&json!(false), &json!("Dee Delegated")),
        "{before}"
    );

    let (status, v) = g
        .with_password_uia(
            Method::POST,
            "/_matrix/client/v3/account/deactivate",
            &token,
            json!({"erase": true}),
            "dee",
            PW,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let after = stack.synapse_user(&admin, "dee").await;
    assert_eq!(after["deactivated"], true, "{after}");
    assert_eq!(after["erased"], true, "erase reached Synapse: {after}");
    assert!(after["displayname"].is_null(), "{after}");
    stack
        .assert_refused_by_synapse(&token, "the account was deactivated")
        .await;
    assert_eq!(stack.introspect(&token).await, json!({"active": false}));

    admin_cli(g, &["user", "reactivate", "dee"]);
    let back = stack.synapse_user(&admin, "dee").await;
    assert_eq!(back["deactivated"], false, "{back}");
    // And the account works on Synapse again, with a new session.
    let (token, _) = stack.login("dee", "DEEAGAIN", json!({})).await;
    stack
        .assert_works_on_synapse(&token, "dee", "DEEAGAIN")
        .await;
}

#[tokio::test]
async fn only_admins_reach_synapse_admin_api() {
    let (_running, stack) = shared().await;
    let g = &stack.gatehouse;
    g.create_user("ada", PW, &[]);
    g.create_user("norm", PW, &[]);
    admin_cli(g, &["user", "admin", "ada"]);
    let (ada, _) = stack.login("ada", "ADADEV", json!({})).await;
    let (norm, _) = stack.login("norm", "NORMDEV", json!({})).await;

    let path = "/_synapse/admin/v2/users/@norm:localhost";
    let (status, v) = stack
        .synapse_call(Method::GET, path, Some(&ada), None)
        .await;
    assert_eq!(status, 200, "an admin's token: {v}");
    assert_eq!(v["name"], "@norm:localhost", "{v}");
    let got = stack
        .synapse_call(Method::GET, path, Some(&norm), None)
        .await;
    assert_error(&got, 403, "M_FORBIDDEN");
    // The non-admin's token itself is fine.
    stack
        .assert_works_on_synapse(&norm, "norm", "NORMDEV")
        .await;
}

#[tokio::test]
async fn capabilities_are_synapses_with_gatehouses_authentication() {
    let (_running, stack) = shared().await;
    let g = &stack.gatehouse;
    g.create_user("cap", PW, &[]);
    let (token, _) = stack.login("cap", "CAPDEV", json!({})).await;
    // Synapse alone reports what it no longer serves as disabled.
    let (status, theirs) = stack
        .synapse_call(
            Method::GET,
            "/_matrix/client/v3/capabilities",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{theirs}");
    assert_eq!(
        theirs["capabilities"]["m.change_password"]["enabled"],
        false
    );
    let (status, ours) = g.get("/_matrix/client/v3/capabilities", Some(&token)).await;
    assert_eq!(status, 200, "{ours}");
    let caps = &ours["capabilities"];
    assert_eq!(caps["m.change_password"]["enabled"], true, "{ours}");
    assert_eq!(caps["m.get_login_token"]["enabled"], true, "{ours}");
    assert_eq!(
        caps["m.room_versions"], theirs["capabilities"]["m.room_versions"],
        "the homeserver's own capabilities are relayed"
    );
    let (status, _) = g.get("/_matrix/client/v3/capabilities", None).await;
    assert_eq!(status, 401, "capabilities need a token");
}

#[tokio::test]
async fn registration_refuses_a_localpart_synapse_already_holds() {
    let (_running, stack) = shared().await;
    let g = &stack.gatehouse;
    // A user Gatehouse never made (a bridge's, say), straight into Synapse.
    let (status, v) = stack
        .synapse_call(
            Method::POST,
            "/_synapse/mas/provision_user",
            Some(&stack.secret),
            Some(json!({"localpart": "taken"})),
        )
        .await;
    assert_eq!(status, 201, "provisioned on Synapse: {v}");

    let got = g
        .get("/_matrix/client/v3/register/available?username=taken", None)
        .await;
    assert_error(&got, 400, "M_USER_IN_USE");
    let got = g
        .post(
            "/_matrix/client/v3/register",
            json!({"username": "taken", "password": PW, "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_error(&got, 400, "M_USER_IN_USE");

    // A name free on both sides registers, and its token works on Synapse.
    let (status, v) = g
        .get(
            "/_matrix/client/v3/register/available?username=newbie",
            None,
        )
        .await;
    assert_eq!((status, &v), (200, &json!({"available": true})));
    let body = json!({"username": "newbie", "password": PW, "device_id": "NEWBIEDEV"});
    let (status, challenge) = g.post("/_matrix/client/v3/register", body.clone()).await;
    assert_eq!(status, 401, "{challenge}");
    let mut with_auth = body;
    with_auth["auth"] = json!({"type": "m.login.dummy", "session": s(&challenge, "session")});
    let (status, v) = g.post("/_matrix/client/v3/register", with_auth).await;
    assert_eq!(status, 200, "{v}");
    stack
        .assert_works_on_synapse(&s(&v, "access_token"), "newbie", "NEWBIEDEV")
        .await;
    let got = g
        .get(
            "/_matrix/client/v3/register/available?username=newbie",
            None,
        )
        .await;
    assert_error(&got, 400, "M_USER_IN_USE");
}

/// Kills Synapse and restarts it (which also empties its caches), while
/// no other test uses it.
#[tokio::test]
async fn while_synapse_is_down_no_session_is_made_and_revocations_wait_for_it() {
    let _restarting = SYNAPSE_UP.write().await;
    let stack = stack().await;
    let g = &stack.gatehouse;
    g.create_user("carol", PW, &[]);
    let (keep, _) = stack.login("carol", "CAROLKEEP", json!({})).await;
    let (gone, _) = stack.login("carol", "CAROLGONE", json!({})).await;
    stack
        .assert_works_on_synapse(&keep, "carol", "CAROLKEEP")
        .await;
    stack
        .assert_works_on_synapse(&gone, "carol", "CAROLGONE")
        .await;

    // While Synapse is down, only gather answers: Synapse is restarted
    // before anything is asserted, so a failure here cannot leave it down
    // for the other tests.
    stack.synapse.kill();
    let login = g
        .post(
            "/_matrix/client/v3/login",
            json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "carol"},
                "password": PW,
                "device_id": "CAROLDOWN",
            }),
        )
        .await;
    let available = g
        .get(
            "/_matrix/client/v3/register/available?username=nobody",
            None,
        )
        .await;
    let logout = g
        .post_auth("/_matrix/client/v3/logout", &gone, json!({}))
        .await;
    let whoami = g.whoami(&gone).await;
    let introspected = stack
        .introspect_as(Some(&format!("Bearer {}", stack.secret)), &gone)
        .await;
    let logged_out = Instant::now();
    let relaunched = stack.synapse.launch();
    let restarted = Instant::now();
    relaunched.expect("Synapse restarts on the same port and data");

    // A login that cannot be announced to Synapse: 503, nothing made.
    assert_error(&login, 503, "M_UNKNOWN");
    assert!(login.1.get("access_token").is_none(), "{}", login.1);
    assert_error(&available, 503, "M_UNKNOWN");
    // A logout still succeeds: ended here at once, told to Synapse later.
    assert_eq!(logout.0, 200, "logout while Synapse is down: {}", logout.1);
    assert_error(&whoami, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(introspected, (200, json!({"active": false})));

    // Synapse is back: the retry loop deletes the device there.
    let admin = stack.admin_token().await;
    // Retries back off exponentially from 300 ms, so the one after the
    // restart comes at most about as long after it as Synapse was down.
    let deadline = restarted + (restarted - logged_out) + Duration::from_secs(5);
    loop {
        let devices = stack.synapse_devices(&admin, "carol").await;
        if !devices.iter().any(|d| d == "CAROLGONE") {
            assert_eq!(devices, ["CAROLKEEP"], "only the live session remains");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CAROLGONE still on Synapse {:?} after its restart (down for {:?} after the logout); Gatehouse's homeserver calls:\n{}",
            restarted.elapsed(),
            restarted - logged_out,
            stack.homeserver_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack
        .assert_refused_by_synapse(&gone, "logged out while Synapse was down")
        .await;
    stack
        .assert_works_on_synapse(&keep, "carol", "CAROLKEEP")
        .await;

    // The failed login left no device at Gatehouse.
    let (status, v) = g.get("/_matrix/client/v3/devices", Some(&keep)).await;
    assert_eq!(status, 200, "{v}");
    let mine: Vec<String> = v["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|d| s(d, "device_id"))
        .collect();
    assert_eq!(mine, ["CAROLKEEP"], "Gatehouse's devices for carol");
    // That device ID logs in now, on both sides.
    let (token, _) = stack.login("carol", "CAROLDOWN", json!({})).await;
    stack
        .assert_works_on_synapse(&token, "carol", "CAROLDOWN")
        .await;
}

/// Two first logins of a user at once (two devices, a client retrying):
/// each finds the user unknown to Synapse and provisions it, and Synapse
/// answers the slower `provision_user` with 400 M_USER_IN_USE. Neither
/// login may fail for that.
#[tokio::test]
async fn concurrent_first_logins_of_a_user_all_succeed() {
    let (_running, stack) = shared().await;
    stack.gatehouse.create_user("twins", PW, &[]);
    let devices: Vec<String> = (0..6).map(|i| format!("TWIN{i}")).collect();
    let logins = futures_util::future::join_all(devices.iter().map(|device| {
        stack.gatehouse.post(
            "/_matrix/client/v3/login",
            json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "twins"},
                "password": PW,
                "device_id": device,
            }),
        )
    }))
    .await;
    for (device, (status, v)) in devices.iter().zip(&logins) {
        assert_eq!(
            *status,
            200,
            "concurrent first login on {device}: {v}\nGatehouse's homeserver calls:\n{}",
            stack.homeserver_log()
        );
        stack
            .assert_works_on_synapse(&s(v, "access_token"), "twins", device)
            .await;
    }
}
