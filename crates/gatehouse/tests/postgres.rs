//! Several instances on one PostgreSQL database, and moving a deployment
//! there from SQLite (`gatehouse db copy`). Whatever engine the rest of
//! the suite runs on, these always use the test cluster.

mod common;

use std::time::{Duration, Instant};

use common::{Server, assert_error, s};
use gatehouse_store::postgres::testing::fresh_database;
use serde_json::{Value, json};

const DELETE_DEVICES: &str = "/_matrix/client/v3/delete_devices";

async fn refresh(server: &Server, rt: &str) -> (u16, Value) {
    server
        .post("/_matrix/client/v3/refresh", json!({"refresh_token": rt}))
        .await
}

/// Two instances on one database. A long token-cache TTL, so that only the
/// cross-instance notification can explain B refusing what A revoked.
fn pair(url: &str) -> (Server, Server) {
    let settings = [
        ("GATEHOUSE_DATABASE__URL", url),
        ("GATEHOUSE_TOKENS__CACHE_TTL_MS", "60000"),
    ];
    (Server::start(&settings), Server::start(&settings))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_serve_one_deployment() {
    let url = fresh_database().await;
    let (a, b) = pair(&url);
    a.create_user("alice", "pw", &[]);

    // A refresh token issued by A rotates on B, and the new access token's
    // first use (on A) retires the old one everywhere.
    let first = a.login("alice", "pw", json!({"refresh_token": true})).await;
    let (at, rt, device) = (
        s(&first, "access_token"),
        s(&first, "refresh_token"),
        s(&first, "device_id"),
    );
    assert_eq!(b.whoami(&at).await.0, 200, "B knows A's token");
    let (status, rotated) = refresh(&b, &rt).await;
    assert_eq!(status, 200, "{rotated}");
    let (at2, rt2) = (s(&rotated, "access_token"), s(&rotated, "refresh_token"));
    assert_eq!(a.whoami(&at2).await.1["device_id"], device.as_str());
    assert_error(&refresh(&a, &rt).await, 401, "M_UNKNOWN_TOKEN");

    // Concurrent refreshes of one token on A and B leave one chain: both
    // may answer, but the first use of either child retires the other.
    let (on_a, on_b) = tokio::join!(refresh(&a, &rt2), refresh(&b, &rt2));
    assert_eq!((on_a.0, on_b.0), (200, 200), "{} {}", on_a.1, on_b.1);
    assert_eq!(b.whoami(&s(&on_b.1, "access_token")).await.0, 200);
    assert_error(
        &refresh(&a, &s(&on_a.1, "refresh_token")).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(
        common::database::count_rows_at(&url, "refresh_tokens").await,
        1,
        "one chain: one refresh token left"
    );
    let at3 = s(&on_b.1, "access_token");

    // A UIA session begun on A finishes on B.
    let second = s(&a.login("alice", "pw", json!({})).await, "device_id");
    let body = json!({"devices": [second]});
    let (status, challenge) = a.post_auth(DELETE_DEVICES, &at3, body.clone()).await;
    assert_eq!(status, 401, "{challenge}");
    let mut answer = body;
    answer["auth"] = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "pw",
        "session": s(&challenge, "session"),
    });
    let (status, done) = b.post_auth(DELETE_DEVICES, &at3, answer).await;
    assert_eq!(status, 200, "{done}");
    let (_, devices) = a.get("/_matrix/client/v3/devices", Some(&at3)).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1, "{devices}");

    // A logout on A is refused on B (which had the token cached) as soon
    // as A's notification arrives: far within the 60 s cache TTL.
    assert_eq!(b.whoami(&at3).await.0, 200);
    let (status, v) = a
        .post_auth("/_matrix/client/v3/logout", &at3, json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    let logged_out = Instant::now();
    loop {
        let (status, _) = b.whoami(&at3).await;
        if status == 401 {
            break;
        }
        assert!(
            logged_out.elapsed() < Duration::from_secs(2),
            "B still accepts the token A logged out"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "logout on A refused on B after {:.1} ms",
        logged_out.elapsed().as_secs_f64() * 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_moves_from_sqlite_to_postgres_intact() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = [("GATEHOUSE_DATABASE__URL", "")];
    let (at, rt, session, second) = {
        let old = Server::start_in(dir.path(), &sqlite);
        old.create_user("alice", "pw", &["--email", "alice@example.org"]);
        let out = old.admin(&[
            "registration-token",
            "create",
            "--token",
            "invite",
            "--uses",
            "3",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let login = old
            .login("alice", "pw", json!({"refresh_token": true}))
            .await;
        let at = s(&login, "access_token");
        let second = s(&old.login("alice", "pw", json!({})).await, "device_id");
        // A UIA session in progress when the server stops.
        let (status, challenge) = old
            .post_auth(DELETE_DEVICES, &at, json!({"devices": [second]}))
            .await;
        assert_eq!(status, 401, "{challenge}");
        (
            at,
            s(&login, "refresh_token"),
            s(&challenge, "session"),
            second,
        )
    };
    let url = fresh_database().await;
    let from = format!("sqlite://{}", dir.path().join("gatehouse.sqlite").display());
    let copy = |to: &str| {
        std::process::Command::new(common::BIN)
            .args(["db", "copy", "--from", &from, "--to", to])
            .output()
            .unwrap()
    };
    let out = copy(&url);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    for line in [
        "users: 1 rows",
        "devices: 2 rows",
        "refresh_tokens: 1 rows",
        "uia_sessions: 1 rows",
        "registration_tokens: 1 rows",
        "threepids: 1 rows",
    ] {
        assert!(stdout.contains(line), "{line} in {stdout}");
    }
    // Into a database that already has accounts: refused, nothing written.
    let again = copy(&url);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has accounts"));

    let new = Server::start(&[("GATEHOUSE_DATABASE__URL", url.as_str())]);
    assert_eq!(new.whoami(&at).await.1["user_id"], "@alice:localhost");
    let mut answer = json!({"devices": [second]});
    answer["auth"] = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "pw",
        "session": session,
    });
    let (status, done) = new.post_auth(DELETE_DEVICES, &at, answer).await;
    assert_eq!(status, 200, "the UIA session goes on: {done}");
    let (status, rotated) = refresh(&new, &rt).await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(new.whoami(&s(&rotated, "access_token")).await.0, 200);
    // New rows get IDs after the copied ones (the sequences moved on).
    let again = new
        .login("alice", "pw", json!({"refresh_token": true}))
        .await;
    assert_eq!(refresh(&new, &s(&again, "refresh_token")).await.0, 200);
    let (status, v) = new
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "alice@example.org"}, "password": "pw"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let tokens = new.admin(&["registration-token", "list"]);
    assert!(String::from_utf8_lossy(&tokens.stdout).contains("invite"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_status_and_migrate_on_postgres() {
    let url = fresh_database().await;
    let db = |command: &str| {
        let out = std::process::Command::new(common::BIN)
            .args(["db", command])
            .env("GATEHOUSE_DATABASE__URL", &url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let latest = gatehouse_store::PostgresStore::schema_version();
    assert!(db("status").contains("no database yet"), "{}", db("status"));
    let migrated = db("migrate");
    assert!(
        migrated.contains(&format!("migrated from schema version 0 to {latest}")),
        "{migrated}"
    );
    assert!(db("status").contains(&format!("schema version {latest}, up to date")));
    assert!(db("migrate").contains("nothing to do"));
}
