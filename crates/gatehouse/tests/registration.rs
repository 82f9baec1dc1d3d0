//! Registration under User-Interactive Authentication, end to end: the
//! stages, registration tokens, terms, guests, and sessions that carry
//! their parameters.

mod common;

use common::{Server, assert_error, open_registration, s, stages, start_with as start};
use serde_json::{Value, json};

const REG: &str = "/_matrix/client/v3/register";

#[tokio::test]
async fn registration_with_dummy_and_username_rules() {
    let closed = Server::start(&[]);
    assert_error(
        &closed
            .post(REG, json!({"username": "x", "password": "pw"}))
            .await,
        403,
        "M_FORBIDDEN",
    );

    let mut settings = open_registration(r#"[["m.login.dummy"]]"#);
    settings.push((
        "GATEHOUSE_REGISTRATION__RESERVED_LOCALPARTS",
        r#"["admin"]"#.into(),
    ));
    let server = start(&settings);
    let body = json!({"username": "newbie", "password": "pw", "initial_device_display_name": "Phone", "refresh_token": true});
    let (status, challenge) = server.post(REG, body.clone()).await;
    assert_eq!(status, 401, "{challenge}");
    assert_eq!(stages(&challenge), vec![vec!["m.login.dummy".to_owned()]]);
    assert!(
        challenge.get("errcode").is_none(),
        "a challenge is not an error: {challenge}"
    );
    assert!(challenge["params"].is_object());
    let session = s(&challenge, "session");
    let mut with_auth = body.clone();
    with_auth["auth"] = json!({"type": "m.login.dummy", "session": session});
    let (status, done) = server.post(REG, with_auth.clone()).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["user_id"], "@newbie:localhost");
    assert!(done["refresh_token"].is_string() && done["expires_in_ms"].is_u64());
    let (status, me) = server.whoami(&s(&done, "access_token")).await;
    assert_eq!(
        (status, me["user_id"].as_str()),
        (200, Some("@newbie:localhost"))
    );
    // Replaying the completed request is refused (the name is taken first).
    assert_error(&server.post(REG, with_auth).await, 400, "M_USER_IN_USE");
    // The name is taken now, and the rules are checked before any UIA.
    assert_error(&server.post(REG, body.clone()).await, 400, "M_USER_IN_USE");
    assert_error(
        &server
            .post(REG, json!({"username": "Bad Name", "password": "pw"}))
            .await,
        400,
        "M_INVALID_USERNAME",
    );
    assert_error(
        &server
            .post(REG, json!({"username": "admin", "password": "pw"}))
            .await,
        400,
        "M_EXCLUSIVE",
    );
    assert_error(
        &server.post(&format!("{REG}?kind=guest"), json!({})).await,
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
    let avail = |u: &str| {
        let path = format!("{REG}/available?username={u}");
        let server = &server;
        async move { server.get(&path, None).await }
    };
    assert_eq!(avail("free").await, (200, json!({"available": true})));
    assert_error(&avail("newbie").await, 400, "M_USER_IN_USE");
    assert_error(&avail("UPPER").await, 400, "M_INVALID_USERNAME");
    assert_error(&avail("admin").await, 400, "M_EXCLUSIVE");
    // A dummy stage sent without a session starts one and completes at once.
    let (status, v) = server
        .post(REG, json!({"username": "quick", "password": "pw", "inhibit_login": true, "auth": {"type": "m.login.dummy"}}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v.get("access_token").is_none() && v.get("device_id").is_none(),
        "inhibit_login gives no session: {v}"
    );
    server.login("quick", "pw", json!({})).await;
    // No username: the server generates the localpart.
    let (status, v) = server
        .post(
            REG,
            json!({"password": "pw", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let generated = s(&v, "user_id");
    assert!(
        generated.starts_with('@') && generated.ends_with(":localhost") && generated.len() > 20,
        "{generated}"
    );
    assert_eq!(
        server.whoami(&s(&v, "access_token")).await.1["user_id"],
        generated
    );
}

#[tokio::test]
async fn registration_tokens_are_consumed_only_on_success() {
    let mut settings = open_registration(r#"[["m.login.registration_token"]]"#);
    settings.push(("GATEHOUSE_UIA__SESSION_LIFETIME_MS", "1500".into()));
    let server = start(&settings);
    let out = server.admin(&[
        "registration-token",
        "create",
        "--token",
        "invite-1",
        "--uses",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let validity = |t: &str| {
        let path =
            format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={t}");
        let server = &server;
        async move { server.get(&path, None).await }
    };
    assert_eq!(validity("invite-1").await, (200, json!({"valid": true})));
    assert_eq!(validity("nope").await, (200, json!({"valid": false})));

    // Session A completes the token stage but never finishes registering.
    let (_, a) = server
        .post(REG, json!({"username": "alice", "password": "pw"}))
        .await;
    let wrong = server
        .post(REG, json!({"username": "alice", "password": "pw", "auth": {"type": "m.login.registration_token", "token": "nope", "session": s(&a, "session")}}))
        .await;
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong.1["errcode"], "M_UNAUTHORIZED");
    assert_eq!(
        wrong.1["session"], a["session"],
        "a failed stage keeps the session"
    );
    // (A registration session carries its parameters from request to
    // request: see `registration_asks_first_and_resumes_from_the_session`.)
    // Pretend alice's client crashes after the token stage: make it complete
    // in a two-stage config is not needed — with one stage, registration
    // succeeds immediately; so reserve through a session that expires.
    let (_, b) = server
        .post(REG, json!({"username": "bob", "password": "pw"}))
        .await;
    let list = String::from_utf8(server.admin(&["registration-token", "list"]).stdout).unwrap();
    assert!(list.contains("pending=0\tcompleted=0"), "{list}");
    let (status, done) = server
        .post(REG, json!({"username": "bob", "password": "pw", "auth": {"type": "m.login.registration_token", "token": "invite-1", "session": s(&b, "session")}}))
        .await;
    assert_eq!(status, 200, "{done}");
    let list = String::from_utf8(server.admin(&["registration-token", "list"]).stdout).unwrap();
    assert!(list.contains("pending=0\tcompleted=1"), "{list}");
    assert_eq!(
        validity("invite-1").await,
        (200, json!({"valid": false})),
        "exhausted"
    );
    let again = server
        .post(REG, json!({"username": "carol", "password": "pw", "auth": {"type": "m.login.registration_token", "token": "invite-1"}}))
        .await;
    assert_eq!(
        (again.0, again.1["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED"))
    );
    // Expiry: alice's session is gone after its lifetime.
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    let expired = server
        .post(REG, json!({"username": "alice", "password": "pw", "auth": {"type": "m.login.registration_token", "token": "invite-1", "session": s(&a, "session")}}))
        .await;
    assert_error(&expired, 400, "M_UNKNOWN");
    assert!(
        server
            .admin(&["registration-token", "revoke", "invite-1"])
            .status
            .success()
    );
    assert_eq!(validity("invite-1").await, (200, json!({"valid": false})));
}

/// The challenge comes before any parameter check (Element Web asks with
/// `{}` or only a device name), the body may grow between requests, and a
/// request with only `auth.session` completes what the first one asked —
/// with the password kept in the session only as its hash.
#[tokio::test]
async fn registration_asks_first_and_resumes_from_the_session() {
    let server = start(&open_registration(r#"[["m.login.dummy"]]"#));
    for body in [
        json!({}),
        json!({"initial_device_display_name": "Element Web"}),
    ] {
        let (status, challenge) = server.post(REG, body.clone()).await;
        assert_eq!(status, 401, "{body} → {challenge}");
        assert_eq!(stages(&challenge), vec![vec!["m.login.dummy".to_owned()]]);
        assert!(challenge["session"].is_string());
    }
    // Element Web: flows first, then the whole form with the stage.
    let (_, first) = server.post(REG, json!({})).await;
    let (status, done) = server
        .post(REG, json!({"username": "elly", "password": "elly-pw", "initial_device_display_name": "Element Web", "auth": {"type": "m.login.dummy", "session": s(&first, "session")}}))
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["user_id"], "@elly:localhost");
    // Resumed with only `auth`: the first request's parameters hold.
    let secret = "resume-pw-7Qx";
    let (status, started) = server
        .post(REG, json!({"username": "resumer", "password": secret, "initial_device_display_name": "Phone"}))
        .await;
    assert_eq!(status, 401);
    let stored = common::database::stored_bytes(&server.data_dir).await;
    assert!(
        !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the password is stored in clear"
    );
    let (status, done) = server
        .post(
            REG,
            json!({"auth": {"type": "m.login.dummy", "session": s(&started, "session")}}),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["user_id"], "@resumer:localhost");
    let login = server.login("resumer", secret, json!({})).await;
    let (_, devices) = server
        .get(
            "/_matrix/client/v3/devices",
            Some(&s(&login, "access_token")),
        )
        .await;
    assert!(
        devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["display_name"] == "Phone"),
        "{devices}"
    );
    // Completed without a password anywhere: the spec's missing parameter.
    let (_, nameless) = server.post(REG, json!({"username": "nopw"})).await;
    let (status, v) = server
        .post(
            REG,
            json!({"auth": {"type": "m.login.dummy", "session": s(&nameless, "session")}}),
        )
        .await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (400, Some("M_MISSING_PARAM")),
        "{v}"
    );
    // The failure did not spend the session: the same session with a
    // password registers (its dummy stage stays done).
    let (status, v) = server
        .post(
            REG,
            json!({"password": "late-pw", "auth": {"type": "m.login.dummy", "session": s(&nameless, "session")}}),
        )
        .await;
    assert_eq!(
        (status, v["user_id"].as_str()),
        (200, Some("@nopw:localhost")),
        "{v}"
    );
    // A name that cannot be had is refused before any stage.
    assert_error(
        &server.post(REG, json!({"username": "elly"})).await,
        400,
        "M_USER_IN_USE",
    );
}

#[tokio::test]
async fn pending_token_uses_count_and_are_released_on_expiry() {
    let mut settings = open_registration(r#"[["m.login.registration_token", "m.login.dummy"]]"#);
    settings.push(("GATEHOUSE_UIA__SESSION_LIFETIME_MS", "1000".into()));
    let server = start(&settings);
    assert!(
        server
            .admin(&[
                "registration-token",
                "create",
                "--token",
                "t1",
                "--uses",
                "1"
            ])
            .status
            .success()
    );
    let validity = || {
        server.get(
            "/_matrix/client/v1/register/m.login.registration_token/validity?token=t1",
            None,
        )
    };
    let body = json!({"username": "alice", "password": "pw"});
    let (_, a) = server.post(REG, body.clone()).await;
    let mut step = body.clone();
    step["auth"] =
        json!({"type": "m.login.registration_token", "token": "t1", "session": s(&a, "session")});
    let (status, v) = server.post(REG, step).await;
    assert_eq!(status, 401);
    assert_eq!(v["completed"], json!(["m.login.registration_token"]));
    assert_eq!(validity().await.1["valid"], false, "a pending use counts");
    // Stage order is enforced: dummy first is refused.
    let (_, other) = server
        .post(REG, json!({"username": "zed", "password": "pw"}))
        .await;
    let out_of_order = server
        .post(REG, json!({"username": "zed", "password": "pw", "auth": {"type": "m.login.dummy", "session": s(&other, "session")}}))
        .await;
    assert_eq!(
        (out_of_order.0, out_of_order.1["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED"))
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Any new session sweeps expired ones and releases their reservations.
    server
        .post(REG, json!({"username": "sweep", "password": "pw"}))
        .await;
    assert_eq!(validity().await.1["valid"], true, "released after expiry");
}

#[tokio::test]
async fn terms_stage_offers_policies() {
    let mut settings = open_registration(r#"[["m.login.terms", "m.login.dummy"]]"#);
    settings.push(("GATEHOUSE_UIA__TERMS__PRIVACY__VERSION", "\"1.2\"".into()));
    settings.push((
        "GATEHOUSE_UIA__TERMS__PRIVACY__LANGUAGES",
        r#"{en = {name = "Privacy", url = "https://example.org/p.html"}}"#.into(),
    ));
    let server = start(&settings);
    let (status, c) = server
        .post(REG, json!({"username": "t", "password": "pw"}))
        .await;
    assert_eq!(status, 401, "{c}");
    assert_eq!(
        c["params"]["m.login.terms"],
        json!({"policies": {"privacy": {"version": "1.2", "en": {"name": "Privacy", "url": "https://example.org/p.html"}}}})
    );
    let session = s(&c, "session");
    let (status, v) = server.post(REG, json!({"username": "t", "password": "pw", "auth": {"type": "m.login.terms", "session": session}})).await;
    assert_eq!(
        (status, v["completed"].clone()),
        (401, json!(["m.login.terms"]))
    );
    let (status, v) = server.post(REG, json!({"username": "t", "password": "pw", "auth": {"type": "m.login.dummy", "session": session}})).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn guests_register_only_when_enabled() {
    let mut settings = open_registration(r#"[["m.login.dummy"]]"#);
    settings.push(("GATEHOUSE_REGISTRATION__GUEST_ACCESS", "true".into()));
    let server = start(&settings);
    let (status, v) = server
        .post(
            &format!("{REG}?kind=guest"),
            // Everything but the display name MUST be ignored, even of a wrong type.
            json!({"initial_device_display_name": "Guest tab", "device_id": "MINE", "refresh_token": true, "username": 7}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(s(&v, "user_id").starts_with("@guest-"));
    assert_ne!(v["device_id"], "MINE", "the server picks the device ID");
    assert!(v.get("refresh_token").is_none(), "{v}");
    let (_, devices) = server
        .get("/_matrix/client/v3/devices", Some(&s(&v, "access_token")))
        .await;
    assert_eq!(devices["devices"][0]["display_name"], "Guest tab");
    let (status, me) = server.whoami(&s(&v, "access_token")).await;
    assert_eq!((status, me["is_guest"].as_bool()), (200, Some(true)));
    // A guest has nothing to re-authenticate with.
    let denied = server
        .post_auth(
            "/_matrix/client/v3/account/password",
            &s(&v, "access_token"),
            json!({"new_password": "x"}),
        )
        .await;
    assert_error(&denied, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn racing_token_stages_on_one_session_reserve_one_use() {
    let server = start(&open_registration(
        r#"[["m.login.registration_token", "m.login.dummy"]]"#,
    ));
    assert!(
        server
            .admin(&[
                "registration-token",
                "create",
                "--token",
                "t2",
                "--uses",
                "2"
            ])
            .status
            .success()
    );
    let body = json!({"username": "racer", "password": "pw"});
    let (_, c) = server.post(REG, body.clone()).await;
    let mut step = body;
    step["auth"] =
        json!({"type": "m.login.registration_token", "token": "t2", "session": s(&c, "session")});
    let mut racing = Vec::new();
    for _ in 0..8 {
        let request = server.http.post(server.url(REG)).json(&step);
        racing.push(tokio::spawn(async move {
            let resp = request.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }));
    }
    let mut answers = Vec::new();
    for task in racing {
        answers.push(task.await.unwrap());
    }
    // The stage got completed (a 401 listing it, without an error: the
    // winner, and racers that re-submitted the same token after it); the
    // others were refused, and gave back what they had reserved.
    let completed = answers
        .iter()
        .filter(|(status, v)| {
            *status == 401
                && v.get("errcode").is_none()
                && v["completed"] == json!(["m.login.registration_token"])
        })
        .count();
    assert!(completed >= 1, "{answers:?}");
    // Two uses: this session holds one, so one is still free. A leaked
    // reservation would make the token look used up.
    let (_, v) = server
        .get(
            "/_matrix/client/v1/register/m.login.registration_token/validity?token=t2",
            None,
        )
        .await;
    assert_eq!(v, json!({"valid": true}), "{answers:?}");
    // Finishing the registration uses exactly that one reservation.
    step["auth"] = json!({"type": "m.login.dummy", "session": s(&c, "session")});
    assert_eq!(server.post(REG, step).await.0, 200);
    let list = String::from_utf8(server.admin(&["registration-token", "list"]).stdout).unwrap();
    assert!(list.contains("t2"), "{list}");
    let (_, v) = server
        .get(
            "/_matrix/client/v1/register/m.login.registration_token/validity?token=t2",
            None,
        )
        .await;
    assert_eq!(v, json!({"valid": true}), "one of two uses left: {list}");
}
