//! `gatehouse import synapse` against a database written by a real Synapse
//! (1.163.2, through `interop/synapse/synapse.sh`): accounts made through
//! its APIs, then imported, then used on the real `gatehouse serve`.
//!
//! Synapse runs once per test binary: the first test to need its database
//! makes it (users, logins, a deactivation, a lock), stops Synapse so the
//! file is quiescent, and keeps the file's bytes for every test.

mod common;

/// A Synapse on PostgreSQL, made from the fixture.
#[path = "import/synapse_postgres.rs"]
mod synapse_postgres;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::synapse::Synapse;
use common::{BIN, Server, assert_error, base_env, free_port, s};
use serde_json::{Value, json};

/// What the Synapse run left behind.
struct Fixture {
    /// `homeserver.db` (and its WAL, if Synapse left one) after the stop.
    files: Vec<(String, Vec<u8>)>,
    /// Alice's token from a plain login on device ALICEPHONE.
    alice_token: String,
    /// Alice's token from a login with `refresh_token: true` (it expires).
    alice_expiring_token: String,
    /// Synapse's answer to the deactivated account's right password.
    deactivated_on_synapse: (u16, Value),
    /// Synapse's answer to the locked account's right password.
    locked_on_synapse: (u16, Value),
    /// A room alice made and wrote in, before the move.
    alice_room: String,
}

static FIXTURE: tokio::sync::OnceCell<Fixture> = tokio::sync::OnceCell::const_new();

async fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(make_fixture).await
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut req = http.request(method, url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request to Synapse");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn password_login(user: &str, password: &str, extra: Value) -> Value {
    let mut body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    body
}

async fn make_fixture() -> Fixture {
    let synapse = tokio::task::spawn_blocking(Synapse::start).await.unwrap();
    let http = reqwest::Client::new();
    let base = synapse.base.clone();
    let post = async |path: &str, token: Option<&str>, body: Value| {
        call(
            &http,
            reqwest::Method::POST,
            format!("{base}{path}"),
            token,
            body,
        )
        .await
    };
    let login = "/_matrix/client/v3/login";

    let (status, admin) = post(
        login,
        None,
        password_login("admin", "admin-password", json!({})),
    )
    .await;
    assert_eq!(status, 200, "{admin}");
    let admin = s(&admin, "access_token");
    for (user, password, email) in [
        ("alice", "alice-pw", Some("Alice@Example.org")),
        ("bob", "bob-pw", None),
        ("carol", "carol-pw", None),
        ("dave", "dave-pw", None),
        ("erin", "erin-pw", None),
    ] {
        let mut body = json!({"password": password});
        if let Some(email) = email {
            body["threepids"] = json!([{"medium": "email", "address": email}]);
        }
        if user == "carol" {
            body["admin"] = json!(true);
        }
        let (status, answer) = call(
            &http,
            reqwest::Method::PUT,
            format!("{base}/_synapse/admin/v2/users/@{user}:localhost"),
            Some(&admin),
            body,
        )
        .await;
        assert_eq!(status, 201, "creating {user}: {answer}");
    }

    let (status, plain) = post(
        login,
        None,
        password_login(
            "alice",
            "alice-pw",
            json!({"device_id": "ALICEPHONE", "initial_device_display_name": "Alice's phone"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{plain}");
    let alice_token = s(&plain, "access_token");
    assert!(alice_token.starts_with("syt_"), "{alice_token}");
    let (status, refreshable) = post(
        login,
        None,
        password_login("alice", "alice-pw", json!({"refresh_token": true})),
    )
    .await;
    assert_eq!(status, 200, "{refreshable}");
    let alice_expiring_token = s(&refreshable, "access_token");
    let (status, room) = post(
        "/_matrix/client/v3/createRoom",
        Some(&alice_token),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{room}");
    let alice_room = s(&room, "room_id");
    let (status, sent) = call(
        &http,
        reqwest::Method::PUT,
        format!("{base}/_matrix/client/v3/rooms/{alice_room}/send/m.room.message/before-the-move"),
        Some(&alice_token),
        json!({"msgtype": "m.text", "body": "written before the move"}),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    // Bob and carol have sessions too (their devices are imported).
    for (user, password) in [("bob", "bob-pw"), ("carol", "carol-pw")] {
        let (status, answer) = post(login, None, password_login(user, password, json!({}))).await;
        assert_eq!(status, 200, "{answer}");
    }

    let (status, answer) = post(
        "/_synapse/admin/v1/deactivate/@dave:localhost",
        Some(&admin),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = call(
        &http,
        reqwest::Method::PUT,
        format!("{base}/_synapse/admin/v2/users/@erin:localhost"),
        Some(&admin),
        json!({"locked": true}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let deactivated_on_synapse =
        post(login, None, password_login("dave", "dave-pw", json!({}))).await;
    let locked_on_synapse = post(login, None, password_login("erin", "erin-pw", json!({}))).await;

    tokio::task::spawn_blocking(move || {
        synapse.stop();
        let mut files = Vec::new();
        for name in ["homeserver.db", "homeserver.db-wal"] {
            if let Ok(bytes) = std::fs::read(synapse.dir().join(name)) {
                files.push((name.to_owned(), bytes));
            }
        }
        assert!(!files.is_empty(), "no homeserver.db in {:?}", synapse.dir());
        Fixture {
            files,
            alice_token,
            alice_expiring_token,
            deactivated_on_synapse,
            locked_on_synapse,
            alice_room,
        }
    })
    .await
    .unwrap()
}

/// A copy of Synapse's database in `dir`; its path.
fn synapse_db(fixture: &Fixture, dir: &Path) -> String {
    for (name, bytes) in &fixture.files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    dir.join("homeserver.db").display().to_string()
}

/// Runs `gatehouse ARGS` on the data directory `data`, as an operator would.
fn gatehouse(data: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let database = common::database::postgres_for(data);
    Command::new(BIN)
        .args(args)
        .envs(base_env())
        .env("GATEHOUSE_DATA_DIR", data)
        .envs(database.map(|url| ("GATEHOUSE_DATABASE__URL", url)))
        .envs(extra_env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The numbers of the summary line `imported N users (M new), T threepids,
/// D devices, K access tokens in S s (R users/s)`: [N, M, T, D, K].
fn summary(stdout: &str) -> [u64; 5] {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("imported "))
        .unwrap_or_else(|| panic!("no summary line in {stdout:?}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .take(5)
        .map(|w| w.parse().unwrap())
        .collect();
    numbers.try_into().unwrap()
}

async fn user_login(server: &Server, user: &str, password: &str) -> (u16, Value) {
    server
        .post(
            "/_matrix/client/v3/login",
            password_login(user, password, json!({})),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synapse_deployment_moves_over_with_its_sessions() {
    let fixture = fixture().await;
    let tmp = tempfile::tempdir().unwrap();
    let db = synapse_db(fixture, tmp.path());
    let data = tmp.path().join("gatehouse");

    let first = gatehouse(
        &data,
        &["import", "synapse", "--database", &db, "--tokens"],
        &[],
    );
    let (stdout, stderr) = (text(&first.stdout), text(&first.stderr));
    assert!(first.status.success(), "{stdout}{stderr}");
    // admin, alice, bob, carol, dave, erin; alice's email.
    let [users, new, threepids, devices, tokens] = summary(&stdout);
    assert_eq!((users, new, threepids), (6, 6, 1), "{stdout}");
    // Alice's 2 devices, bob's and carol's, and the admin's (at least 1).
    assert!(devices >= 5, "{stdout}");
    // Alice's plain token, bob's, carol's and the admin's: the refreshable
    // one expires, so it stays behind.
    assert!(tokens >= 4, "{stdout}");
    assert!(stderr.contains("6/6 users read"), "progress: {stderr}");
    assert!(
        stderr.contains("1 access tokens with an expiry skipped")
            || stderr.contains("1 expired access tokens skipped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 locked users imported as deactivated"),
        "{stderr}"
    );

    let list = text(&gatehouse(&data, &["user", "list"], &[]).stdout);
    for line in [
        "@alice:localhost\t\temail:alice@example.org",
        "@bob:localhost\t\t",
        "@carol:localhost\tadmin\t",
        "@dave:localhost\tdeactivated\t",
        "@erin:localhost\tdeactivated\t",
        "@admin:localhost\tadmin\t",
    ] {
        assert!(list.lines().any(|l| l == line), "{line:?} not in\n{list}");
    }

    let server = Server::start_in(&data, &[]);
    // Synapse's bcrypt hashes verify as they are.
    for (user, password) in [
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        ("carol", "carol-pw"),
    ] {
        let (status, answer) = user_login(&server, user, password).await;
        assert_eq!(status, 200, "{user}: {answer}");
        assert_eq!(answer["user_id"], format!("@{user}:localhost"));
    }
    assert_error(
        &user_login(&server, "alice", "wrong").await,
        403,
        "M_FORBIDDEN",
    );
    // Login by the imported email, in any capitalisation.
    let (status, by_email) = server
        .post(
            "/_matrix/client/v3/login",
            json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "ALICE@example.ORG"},
                "password": "alice-pw",
            }),
        )
        .await;
    assert_eq!(status, 200, "{by_email}");
    assert_eq!(by_email["user_id"], "@alice:localhost");

    // Synapse erases the password of an account it deactivates, so the
    // right password is as wrong as any other, there and here alike.
    let dave = user_login(&server, "dave", "dave-pw").await;
    assert_eq!(
        (dave.0, &dave.1["errcode"]),
        (
            fixture.deactivated_on_synapse.0,
            &fixture.deactivated_on_synapse.1["errcode"]
        ),
        "Synapse said {:?}, Gatehouse {dave:?}",
        fixture.deactivated_on_synapse
    );
    assert_error(&dave, 403, "M_FORBIDDEN");
    // A locked account keeps its password; it could not log in on Synapse
    // and arrives deactivated.
    assert_ne!(
        fixture.locked_on_synapse.0, 200,
        "{:?}",
        fixture.locked_on_synapse
    );
    assert_error(
        &user_login(&server, "erin", "erin-pw").await,
        403,
        "M_USER_DEACTIVATED",
    );

    // The session alice had on Synapse goes on, on the same device.
    let (status, me) = server.whoami(&fixture.alice_token).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], "@alice:localhost");
    assert_eq!(me["device_id"], "ALICEPHONE");
    let (status, mine) = server
        .get("/_matrix/client/v3/devices", Some(&fixture.alice_token))
        .await;
    assert_eq!(status, 200, "{mine}");
    let phone = mine["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == "ALICEPHONE")
        .unwrap_or_else(|| panic!("{mine}"));
    assert_eq!(phone["display_name"], "Alice's phone");
    assert_error(
        &server.whoami(&fixture.alice_expiring_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );

    // A second run adds nothing and undoes nothing: alice's login above
    // upgraded her hash to Argon2id, and that stays.
    let again = gatehouse(
        &data,
        &["import", "synapse", "--database", &db, "--tokens"],
        &[],
    );
    let stdout = text(&again.stdout);
    assert!(again.status.success(), "{stdout}{}", text(&again.stderr));
    assert_eq!(summary(&stdout), [6, 0, 0, 0, 0], "{stdout}");
    assert_eq!(text(&gatehouse(&data, &["user", "list"], &[]).stdout), list);
    let store = common::database::store_in(&data).await;
    let alice = store
        .user(&gatehouse_core::user_id::UserId::new("alice", "localhost").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        alice
            .password_hash
            .as_deref()
            .is_some_and(|h| h.starts_with("$argon2id$")),
        "{alice:?}"
    );
    let (status, again_mine) = server
        .get("/_matrix/client/v3/devices", Some(&fixture.alice_token))
        .await;
    assert_eq!(status, 200, "{again_mine}");
    let names = |v: &Value| -> Vec<(Value, Value)> {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["device_id"].clone(), d["display_name"].clone()))
            .collect()
    };
    assert_eq!(names(&again_mine), names(&mine));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_accounts_and_devices_come_but_sessions_do_not() {
    let fixture = fixture().await;
    let tmp = tempfile::tempdir().unwrap();
    let db = synapse_db(fixture, tmp.path());
    let data = tmp.path().join("gatehouse");
    let out = gatehouse(
        &data,
        &["import", "synapse", "--database", &db, "--batch-size", "2"],
        &[],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let [users, new, threepids, devices, tokens] = summary(&stdout);
    assert_eq!((users, new, threepids, tokens), (6, 6, 1, 0), "{stdout}");
    assert!(devices >= 5, "{stdout}");
    // Batches of two: a progress line per batch.
    assert_eq!(
        text(&out.stderr).matches("users read").count(),
        3,
        "{}",
        text(&out.stderr)
    );

    let server = Server::start_in(&data, &[]);
    assert_error(
        &server.whoami(&fixture.alice_token).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let token = server.access_token("alice", "alice-pw").await;
    let (status, mine) = server.get("/_matrix/client/v3/devices", Some(&token)).await;
    assert_eq!(status, 200, "{mine}");
    assert!(
        mine["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["device_id"] == "ALICEPHONE"),
        "{mine}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_imported_is_refused_before_anything_is_written() {
    let fixture = fixture().await;
    let tmp = tempfile::tempdir().unwrap();
    let db = synapse_db(fixture, tmp.path());
    let data = tmp.path().join("gatehouse");

    let pg = gatehouse(
        &data,
        &[
            "import",
            "synapse",
            "--database",
            "postgres://synapse@db/synapse",
        ],
        &[],
    );
    assert!(!pg.status.success());
    assert!(
        text(&pg.stderr).contains("postgres://synapse@db/synapse"),
        "an unreachable PostgreSQL Synapse is named: {}",
        text(&pg.stderr)
    );

    // Synapse's users are @…:localhost; user IDs cannot be renamed.
    let other = gatehouse(
        &data,
        &["import", "synapse", "--database", &db],
        &[("GATEHOUSE_SERVER_NAME", "example.org")],
    );
    assert!(!other.status.success());
    let stderr = text(&other.stderr);
    assert!(
        stderr.contains("not on this server's server_name 'example.org'")
            && stderr.contains("server name 'localhost'"),
        "{stderr}"
    );

    let empty = tmp.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let not_synapse = gatehouse(
        &data,
        &["import", "synapse", "--database", empty.to_str().unwrap()],
        &[],
    );
    assert!(!not_synapse.status.success());
    assert!(
        text(&not_synapse.stderr).contains("is not a Synapse database"),
        "{}",
        text(&not_synapse.stderr)
    );
    let missing = gatehouse(
        &data,
        &[
            "import",
            "synapse",
            "--database",
            "/nonexistent/homeserver.db",
        ],
        &[],
    );
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("no such file"));
    assert!(!data.exists(), "a refused import wrote {data:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_synapse_apis_no_longer_make_are_handled_too() {
    let fixture = fixture().await;
    let tmp = tempfile::tempdir().unwrap();
    let db = synapse_db(fixture, tmp.path());
    // Rows today's Synapse only keeps from older versions or writes for
    // other purposes, added to its real schema as it would hold them.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "INSERT INTO users (name, password_hash, creation_ts, admin, is_guest, deactivated)
             SELECT '@Hist:localhost', password_hash, 1600000000, 0, 0, 0
             FROM users WHERE name = '@alice:localhost';
         INSERT INTO users (name, password_hash, creation_ts, admin, is_guest, deactivated)
             VALUES ('@bad user:localhost', NULL, 1600000000, 0, 0, 0);
         INSERT INTO users (name, password_hash, creation_ts, admin, is_guest, deactivated, appservice_id)
             VALUES ('@irc_bob:localhost', NULL, 1600000000, 0, 0, 0, 'irc');
         INSERT INTO user_threepids (user_id, medium, address, validated_at, added_at)
             VALUES ('@Hist:localhost', 'email', 'hist@example.org', 1, 1),
                    ('@Hist:localhost', 'msisdn', 'not a number', 1, 1);
         INSERT INTO devices (user_id, device_id, display_name, hidden)
             VALUES ('@Hist:localhost', 'HISTDEV', 'old client', 0),
                    ('@alice:localhost', 'MASTERKEY', NULL, 1);
         INSERT INTO access_tokens (id, user_id, device_id, token)
             VALUES (1000, '@Hist:localhost', 'HISTDEV', 'syt_SGlzdA_histhisthisthisthisth_0abcde'),
                    (1001, '@Hist:localhost', 'HISTDEV', 'MDAxOGxvY2F0aW9uIGxvY2FsaG9zdAo');
         INSERT INTO access_tokens (id, user_id, device_id, token, puppets_user_id)
             VALUES (1002, '@admin:localhost', NULL, 'syt_YWRtaW4_puppetpuppetpuppetpupp_0abcde', '@bob:localhost');",
    )
    .unwrap();
    drop(conn);

    let data = tmp.path().join("gatehouse");
    let out = gatehouse(
        &data,
        &["import", "synapse", "--database", &db, "--tokens"],
        &[],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    let [users, new, threepids, ..] = summary(&stdout);
    assert_eq!((users, new, threepids), (7, 7, 2), "{stdout}");
    for line in [
        "1 users with historical IDs imported",
        "1 users skipped: their IDs are not valid Matrix user IDs",
        "1 application-service users skipped",
        "1 third-party IDs that do not canonicalise skipped (e.g. @Hist:localhost (msisdn:",
        "1 hidden devices skipped",
        "1 access tokens of admins acting as another user skipped",
        "1 access tokens not in Synapse's syt_ format skipped",
    ] {
        assert!(stderr.contains(line), "{line:?} not in\n{stderr}");
    }

    let server = Server::start_in(&data, &[]);
    let (status, by_email) = server
        .post(
            "/_matrix/client/v3/login",
            json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "hist@example.org"},
                "password": "alice-pw",
            }),
        )
        .await;
    assert_eq!(status, 200, "{by_email}");
    assert_eq!(by_email["user_id"], "@Hist:localhost");
    // Today's grammar lower-cases what is typed: the name does not find it.
    assert_error(
        &user_login(&server, "Hist", "alice-pw").await,
        403,
        "M_FORBIDDEN",
    );
    let (status, me) = server
        .whoami("syt_SGlzdA_histhisthisthisthisth_0abcde")
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (&me["user_id"], &me["device_id"]),
        (&json!("@Hist:localhost"), &json!("HISTDEV"))
    );
    let token = server.access_token("alice", "alice-pw").await;
    let (_, mine) = server.get("/_matrix/client/v3/devices", Some(&token)).await;
    assert!(
        !mine.to_string().contains("MASTERKEY"),
        "a hidden device was imported: {mine}"
    );
}

/// The whole move: Synapse's database, imported, then served by the same
/// Synapse delegating to Gatehouse. People log in at Gatehouse with their
/// Synapse passwords and find their rooms and messages.
#[tokio::test]
async fn after_the_move_people_log_in_at_gatehouse_and_reach_their_rooms() {
    let fixture = fixture().await;
    let tmp = tempfile::tempdir().unwrap();
    let synapse_dir = tmp.path().join("synapse");
    std::fs::create_dir_all(&synapse_dir).unwrap();
    synapse_db(fixture, &synapse_dir);
    let data = tmp.path().join("gatehouse");
    let imported = gatehouse(
        &data,
        &[
            "import",
            "synapse",
            "--database",
            &synapse_dir.join("homeserver.db").display().to_string(),
        ],
        &[],
    );
    assert!(imported.status.success(), "{}", text(&imported.stderr));

    // The same database, now behind Gatehouse.
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "import-test-shared-secret-0123456789\n").unwrap();
    let (gatehouse_port, synapse_port) = (free_port(), free_port());
    let auth_url = format!("http://127.0.0.1:{gatehouse_port}/");
    let started = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../interop/synapse/synapse.sh"
        ))
        .args([
            "start-delegated",
            &synapse_dir.display().to_string(),
            &synapse_port.to_string(),
            &auth_url,
        ])
        .arg(&secret)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(started.status.success(), "{}", text(&started.stderr));
    let synapse_base = format!("http://127.0.0.1:{synapse_port}");
    let stop = scopeguard(&synapse_dir);
    let server = Server::start_in(
        &data,
        &[
            ("GATEHOUSE_LISTEN", &format!("127.0.0.1:{gatehouse_port}")),
            ("GATEHOUSE_PUBLIC_BASEURL", &auth_url),
            ("GATEHOUSE_HOMESERVER__URL", &synapse_base),
            (
                "GATEHOUSE_HOMESERVER__SECRET_PATH",
                &secret.display().to_string(),
            ),
        ],
    );

    let (status, login) = user_login(&server, "alice", "alice-pw").await;
    assert_eq!(status, 200, "{login}");
    let token = s(&login, "access_token");
    let http = reqwest::Client::new();
    let get = async |path: String| {
        call(
            &http,
            reqwest::Method::GET,
            format!("{synapse_base}{path}"),
            Some(&token),
            Value::Null,
        )
        .await
    };
    let (status, rooms) = get("/_matrix/client/v3/joined_rooms".into()).await;
    assert_eq!(status, 200, "{rooms}");
    assert!(
        rooms["joined_rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == fixture.alice_room.as_str()),
        "{rooms}"
    );
    let (status, messages) = get(format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20",
        fixture.alice_room
    ))
    .await;
    assert_eq!(status, 200, "{messages}");
    assert!(
        messages.to_string().contains("written before the move"),
        "{messages}"
    );
    drop(stop);
}

/// Stops the Synapse of `dir` when dropped (also when the test panics).
fn scopeguard(dir: &Path) -> impl Drop + use<> {
    struct Stop(std::path::PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("bash")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../interop/synapse/synapse.sh"
                ))
                .arg("stop")
                .arg(&self.0)
                .stdin(Stdio::null())
                .output();
        }
    }
    Stop(dir.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synapse_on_postgresql_moves_over_alike() {
    let fixture = fixture().await;
    let tmp = tempfile::tempdir().unwrap();
    let sqlite = synapse_db(fixture, tmp.path());
    let url = synapse_postgres::port(&sqlite, tmp.path()).await;
    let (a, b) = (
        tmp.path().join("from-sqlite"),
        tmp.path().join("from-postgres"),
    );
    let from_sqlite = gatehouse(
        &a,
        &["import", "synapse", "--database", &sqlite, "--tokens"],
        &[],
    );
    let from_postgres = gatehouse(
        &b,
        &["import", "synapse", "--database", &url, "--tokens"],
        &[],
    );
    let (one, other) = (text(&from_sqlite.stdout), text(&from_postgres.stdout));
    assert!(
        from_postgres.status.success(),
        "{other}{}",
        text(&from_postgres.stderr)
    );
    println!("from PostgreSQL: {other}");
    assert_eq!(
        summary(&one),
        summary(&other),
        "the same Synapse, either database"
    );
    assert_eq!(
        text(&gatehouse(&a, &["user", "list"], &[]).stdout),
        text(&gatehouse(&b, &["user", "list"], &[]).stdout)
    );
    let server = Server::start_in(&b, &[]);
    let (status, answer) = user_login(&server, "alice", "alice-pw").await;
    assert_eq!(status, 200, "Synapse's bcrypt hash came over: {answer}");
    assert_eq!(
        server.whoami(&fixture.alice_token).await.1["device_id"],
        "ALICEPHONE",
        "a Synapse session came over"
    );
}
