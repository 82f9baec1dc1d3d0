//! `POST /login` with every identifier form, and `GET /login`, discovery.

mod common;

use common::{Server, assert_error, s};
use serde_json::json;

#[tokio::test]
async fn discovery_endpoints() {
    let plain = Server::start(&[]);
    let (status, v) = plain.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
    assert!(
        v["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "v1.3"),
        "{v}"
    );
    assert_error(
        &plain.get("/.well-known/matrix/client", None).await,
        404,
        "M_NOT_FOUND",
    );
    let (status, flows) = plain.get("/_matrix/client/v3/login", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        flows,
        json!({"flows": [{"type": "m.login.password"}, {"type": "m.login.token", "get_login_token": true}]}),
        "only what works is advertised"
    );
    let (_, r0) = plain.get("/_matrix/client/r0/login", None).await;
    assert_eq!(r0, flows, "r0 alias");

    let configured = Server::start(&[
        ("GATEHOUSE_PUBLIC_BASEURL", "https://matrix.example.org"),
        ("GATEHOUSE_IDENTITY_SERVER", "https://id.example.org"),
    ]);
    let (status, wk) = configured.get("/.well-known/matrix/client", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        wk,
        json!({"m.homeserver": {"base_url": "https://matrix.example.org"}, "m.identity_server": {"base_url": "https://id.example.org"}})
    );
    configured.create_user("alice", "pw-alice", &[]);
    let login = configured.login("alice", "pw-alice", json!({})).await;
    assert_eq!(
        login["well_known"], wk,
        "login returns well_known when configured"
    );
}

#[tokio::test]
async fn seed_003_example_round_trips() {
    let server = Server::start(&[("GATEHOUSE_SERVER_NAME", "matrix.org")]);
    server.create_user("cheeky_monkey", "ilovebananas", &[]);
    let (status, v) = server
        .post(
            "/_matrix/client/v3/login",
            json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "cheeky_monkey"},
                "password": "ilovebananas",
                "initial_device_display_name": "Jungle Phone"
            }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["user_id"], "@cheeky_monkey:matrix.org");
    assert_eq!(v["home_server"], "matrix.org");
    assert!(s(&v, "access_token").starts_with("ghat_"));
    assert_eq!(s(&v, "device_id").len(), 10);
    assert!(
        v.get("refresh_token").is_none() && v.get("expires_in_ms").is_none(),
        "no refresh unless asked"
    );
    assert!(v.get("well_known").is_none());
    // The seed's bad-type example: 400 M_UNKNOWN "Bad login type."
    let bad = server
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.magic", "user": "cheeky_monkey"}),
        )
        .await;
    assert_error(&bad, 400, "M_UNKNOWN");
}

#[tokio::test]
async fn every_identifier_form_logs_in() {
    let server = Server::start(&[]);
    server.create_user(
        "alice",
        "pw",
        &[
            "--email",
            "Alice.Smith@Example.org",
            "--phone",
            "+447400123456",
        ],
    );
    let bodies = [
        json!({"identifier": {"type": "m.id.user", "user": "alice"}}),
        json!({"identifier": {"type": "m.id.user", "user": "ALICE"}}),
        json!({"identifier": {"type": "m.id.user", "user": "@Alice:localhost"}}),
        json!({"identifier": {"type": "m.id.thirdparty", "medium": "email", "address": " alice.smith@EXAMPLE.org "}}),
        json!({"identifier": {"type": "m.id.thirdparty", "medium": "msisdn", "address": "447400123456"}}),
        json!({"identifier": {"type": "m.id.phone", "country": "GB", "phone": "07400 123456"}}),
        json!({"identifier": {"type": "m.id.phone", "country": "GB", "number": "07400123456"}}),
        json!({"identifier": {"medium": "email", "address": "alice.smith@example.org"}}),
        json!({"user": "alice"}),
        json!({"user": "@alice:localhost"}),
        json!({"medium": "email", "address": "Alice.Smith@example.org"}),
    ];
    for mut body in bodies {
        body["type"] = json!("m.login.password");
        body["password"] = json!("pw");
        let (status, v) = server.post("/_matrix/client/v3/login", body.clone()).await;
        assert_eq!(status, 200, "{body} → {v}");
        assert_eq!(v["user_id"], "@alice:localhost", "{body}");
    }
    // Seed 000's own example, in a range libphonenumber deems unallocated.
    server.create_user("bob", "pw", &["--phone", "+447700900000"]);
    let (status, v) = server
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "identifier": {"type": "m.id.phone", "country": "GB", "phone": "07700900000"}, "password": "pw"}),
        )
        .await;
    assert_eq!(
        (status, v["user_id"].as_str()),
        (200, Some("@bob:localhost")),
        "{v}"
    );
}

#[tokio::test]
async fn identifier_errors_are_precise() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let cases = [
        (json!({"password": "pw"}), 400, "M_MISSING_PARAM"),
        (
            json!({"identifier": {"type": "m.id.user"}, "password": "pw"}),
            400,
            "M_MISSING_PARAM",
        ),
        (
            json!({"identifier": {"type": "m.id.user", "user": "alice"}}),
            400,
            "M_MISSING_PARAM",
        ),
        (
            json!({"identifier": {"type": "m.id.carrier_pigeon", "user": "alice"}, "password": "pw"}),
            400,
            "M_UNKNOWN",
        ),
        // A number that does not parse, an unknown medium and a malformed
        // address name no account: 403, like any unknown 3PID.
        (
            json!({"identifier": {"type": "m.id.phone", "country": "GB", "phone": "1"}, "password": "pw"}),
            403,
            "M_FORBIDDEN",
        ),
        // Seed 000's example number parses (libphonenumber deems it
        // unallocated; it is nobody's here).
        (
            json!({"identifier": {"type": "m.id.phone", "country": "GB", "phone": "07700900000"}, "password": "pw"}),
            403,
            "M_FORBIDDEN",
        ),
        (
            json!({"identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "not an address"}, "password": "pw"}),
            403,
            "M_FORBIDDEN",
        ),
        (
            json!({"identifier": {"type": "m.id.phone", "country": "ZZ", "phone": "07400123456"}, "password": "pw"}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            json!({"identifier": {"type": "m.id.thirdparty", "medium": "fax", "address": "1"}, "password": "pw"}),
            403,
            "M_FORBIDDEN",
        ),
        (
            json!({"identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "nobody@example.org"}, "password": "pw"}),
            403,
            "M_FORBIDDEN",
        ),
        (
            json!({"identifier": {"type": "m.id.user", "user": "alice"}, "password": "wrong"}),
            403,
            "M_FORBIDDEN",
        ),
        (
            json!({"identifier": {"type": "m.id.user", "user": "nobody"}, "password": "pw"}),
            403,
            "M_FORBIDDEN",
        ),
        (
            json!({"identifier": {"type": "m.id.user", "user": "@alice:elsewhere"}, "password": "pw"}),
            403,
            "M_FORBIDDEN",
        ),
        (
            json!({"identifier": {"type": "m.id.user", "user": "alice"}, "password": 42}),
            400,
            "M_BAD_JSON",
        ),
        (
            json!({"identifier": "alice", "password": "pw"}),
            400,
            "M_BAD_JSON",
        ),
        (
            json!({"identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw", "device_id": ""}),
            400,
            "M_INVALID_PARAM",
        ),
    ];
    for (mut body, status, errcode) in cases {
        body["type"] = json!("m.login.password");
        let got = server.post("/_matrix/client/v3/login", body.clone()).await;
        assert_eq!(
            (got.0, got.1["errcode"].as_str().unwrap_or("")),
            (status, errcode),
            "{body} → {}",
            got.1
        );
    }
    let missing_type = server
        .post(
            "/_matrix/client/v3/login",
            json!({"user": "alice", "password": "pw"}),
        )
        .await;
    assert_error(&missing_type, 400, "M_MISSING_PARAM");
    let wrong_type = server
        .post("/_matrix/client/v3/login", json!({"type": 7}))
        .await;
    assert_error(&wrong_type, 400, "M_BAD_JSON");
}

#[tokio::test]
async fn device_ids_are_created_and_reused() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let first = server
        .login(
            "alice",
            "pw",
            json!({"device_id": "MYPHONE", "initial_device_display_name": "Phone"}),
        )
        .await;
    assert_eq!(first["device_id"], "MYPHONE");
    let other = server.login("alice", "pw", json!({})).await;
    assert_ne!(other["device_id"], "MYPHONE");
    let again = server
        .login("alice", "pw", json!({"device_id": "MYPHONE"}))
        .await;
    assert_eq!(again["device_id"], "MYPHONE");
    // Re-login on an existing device revokes that device's old tokens, only those.
    let old = server.whoami(&s(&first, "access_token")).await;
    assert_error(&old, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(old.1["soft_logout"], false);
    assert_eq!(server.whoami(&s(&again, "access_token")).await.0, 200);
    let (status, me) = server.whoami(&s(&other, "access_token")).await;
    assert_eq!(status, 200);
    assert_eq!(me["device_id"], other["device_id"]);
}

#[tokio::test]
async fn deactivated_accounts_are_told_after_the_password_checks_out() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let session = server.login("alice", "pw", json!({})).await;
    let out = server.admin(&["user", "deactivate", "alice"]);
    assert!(out.status.success());
    let right = server
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "user": "alice", "password": "pw"}),
        )
        .await;
    assert_error(&right, 403, "M_USER_DEACTIVATED");
    let wrong = server
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "user": "alice", "password": "nope"}),
        )
        .await;
    assert_error(&wrong, 403, "M_FORBIDDEN");
    // The admin command wrote to the database behind the server's back; the
    // cache bound (2 s by default) is the longest the old token may live.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_error(
        &server.whoami(&s(&session, "access_token")).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let reuse = server.admin(&["user", "create", "alice", "--password", "x"]);
    assert!(
        !reuse.status.success(),
        "a deactivated name is never reused"
    );
}

#[tokio::test]
async fn imported_synapse_bcrypt_hashes_log_in_and_are_upgraded() {
    let server = Server::start(&[("GATEHOUSE_PASSWORDS__BCRYPT_PEPPER", "spice")]);
    server.create_user("imported", "placeholder", &[]);
    let bcrypt_hash = bcrypt::hash("hunter2spice", 4).unwrap();
    let store = common::database::store_in(&server.data_dir).await;
    let id = gatehouse_core::user_id::UserId::new("imported", "localhost").unwrap();
    store
        .set_password_hash(&id, &bcrypt_hash, gatehouse_store::EndSessions::Keep)
        .await
        .unwrap();
    server.login("imported", "hunter2", json!({})).await;
    let stored = store
        .user(&id)
        .await
        .unwrap()
        .unwrap()
        .password_hash
        .unwrap();
    assert!(
        stored.starts_with("$argon2id$"),
        "rehashed to argon2id on first login: {stored}"
    );
    server.login("imported", "hunter2", json!({})).await;
}

/// A wrong password for an account imported with a bcrypt hash takes as
/// long as bcrypt does; an unknown account's or an Argon2 account's failure
/// must take as long, or answer times would list the legacy accounts. The
/// server learns the cost from the hashes it holds when it starts.
#[tokio::test]
async fn failures_take_as_long_as_a_legacy_accounts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let first = Server::start_in(dir.path(), &[]);
        first.create_user("legacy", "placeholder", &[]);
        first.create_user("modern", "pw", &[]);
    }
    let store = common::database::store_in(dir.path()).await;
    let id = gatehouse_core::user_id::UserId::new("legacy", "localhost").unwrap();
    store
        .set_password_hash(
            &id,
            &bcrypt::hash("right", 10).unwrap(),
            gatehouse_store::EndSessions::Keep,
        )
        .await
        .unwrap();
    drop(store);
    let server = Server::start_in(dir.path(), &[]);
    let median_failure = async |user: &str| {
        let mut took = Vec::new();
        for _ in 0..3 {
            let started = std::time::Instant::now();
            let (status, _) = server
                .post(
                    "/_matrix/client/v3/login",
                    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": "wrong"}),
                )
                .await;
            took.push(started.elapsed());
            assert_eq!(status, 403);
        }
        took.sort();
        took[1]
    };
    // Unknown first: before any bcrypt check has happened in this process.
    let unknown = median_failure("nobody").await;
    let modern = median_failure("modern").await;
    let legacy = median_failure("legacy").await;
    println!("failed login: legacy {legacy:?}, modern {modern:?}, unknown {unknown:?}");
    // Loose (other tests share the CPU and slow bcrypt, not a wait): the
    // difference this catches is a hundredfold.
    for (who, took) in [("unknown", unknown), ("modern", modern)] {
        assert!(
            took.as_secs_f64() >= 0.5 * legacy.as_secs_f64(),
            "{who}'s failure ({took:?}) is quicker than a legacy account's ({legacy:?})"
        );
    }
    // A right password is not held back.
    let started = std::time::Instant::now();
    server.login("modern", "pw", json!({})).await;
    assert!(started.elapsed() < legacy / 2, "{:?}", started.elapsed());
}
