//! Account locking and suspension, as the spec's "Account moderation"
//! section describes them, set with the admin commands.

mod common;

use common::{Server, assert_error, s};
use serde_json::json;

fn refresh_body(rt: &str) -> serde_json::Value {
    json!({ "refresh_token": rt })
}

#[tokio::test]
async fn a_locked_account_keeps_its_sessions_but_can_only_log_out() {
    // No token cache: the admin command is another process.
    let server = Server::start(&[("GATEHOUSE_TOKENS__CACHE_TTL_MS", "0")]);
    server.create_user("alice", "pw", &[]);
    let login = server
        .login("alice", "pw", json!({"refresh_token": true}))
        .await;
    let (at, rt) = (s(&login, "access_token"), s(&login, "refresh_token"));
    let second = server.access_token("alice", "pw").await;
    assert!(server.admin(&["user", "lock", "alice"]).status.success());

    let got = server.whoami(&at).await;
    assert_error(&got, 401, "M_USER_LOCKED");
    assert_eq!(got.1["soft_logout"], true, "{got:?}");
    // No new session, by password or refresh; a wrong password learns nothing.
    let right = json!({"type": "m.login.password", "user": "alice", "password": "pw"});
    let got = server.post("/_matrix/client/v3/login", right.clone()).await;
    assert_error(&got, 401, "M_USER_LOCKED");
    assert_eq!(got.1["soft_logout"], true);
    let wrong = json!({"type": "m.login.password", "user": "alice", "password": "nope"});
    assert_error(
        &server.post("/_matrix/client/v3/login", wrong).await,
        403,
        "M_FORBIDDEN",
    );
    let got = server
        .post("/_matrix/client/v3/refresh", refresh_body(&rt))
        .await;
    assert_error(&got, 401, "M_USER_LOCKED");
    assert_eq!(got.1["soft_logout"], true);
    // Logging out still works.
    let (status, _) = server
        .post_auth("/_matrix/client/v3/logout", &second, json!({}))
        .await;
    assert_eq!(status, 200);

    // Unlocked: the kept session works again, refresh too.
    assert!(
        server
            .admin(&["user", "lock", "alice", "--unlock"])
            .status
            .success()
    );
    assert_eq!(server.whoami(&at).await.0, 200);
    let (status, v) = server
        .post("/_matrix/client/v3/refresh", refresh_body(&rt))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(server.post("/_matrix/client/v3/login", right).await.0, 200);
}

#[tokio::test]
async fn a_suspended_account_logs_in_but_cannot_remove_contacts() {
    let server = Server::start(&[("GATEHOUSE_TOKENS__CACHE_TTL_MS", "0")]);
    server.create_user("bob", "pw", &["--email", "bob@example.org"]);
    let at = server.access_token("bob", "pw").await;
    assert!(server.admin(&["user", "suspend", "bob"]).status.success());
    assert_eq!(server.whoami(&at).await.0, 200, "reading stays open");
    let again = server.access_token("bob", "pw").await;
    assert_eq!(server.whoami(&again).await.0, 200, "logging in stays open");
    let remove = json!({"medium": "email", "address": "bob@example.org"});
    assert_error(
        &server
            .post_auth(
                "/_matrix/client/v3/account/3pid/delete",
                &at,
                remove.clone(),
            )
            .await,
        403,
        "M_USER_SUSPENDED",
    );
    assert!(
        server
            .admin(&["user", "suspend", "bob", "--unsuspend"])
            .status
            .success()
    );
    let (status, v) = server
        .post_auth("/_matrix/client/v3/account/3pid/delete", &at, remove)
        .await;
    assert_eq!(status, 200, "{v}");
}

/// The spec's admin API: administrators lock and suspend, at once (the
/// token cache left on); anyone else learns nothing.
#[tokio::test]
async fn administrators_lock_and_suspend_through_the_admin_api() {
    let server = Server::start(&[]);
    server.create_user("root", "pw", &["--admin"]);
    server.create_user("carol", "pw", &[]);
    let root = server.access_token("root", "pw").await;
    let carol = server.access_token("carol", "pw").await;
    assert_eq!(server.whoami(&carol).await.0, 200, "cached now");
    let lock = "/_matrix/client/v1/admin/lock/@carol:localhost";
    let put = |path: &'static str, token: String, body: serde_json::Value| {
        let server = &server;
        async move {
            server
                .send(
                    server
                        .http
                        .put(server.url(path))
                        .bearer_auth(token)
                        .json(&body),
                )
                .await
        }
    };
    // Not an administrator: refused before any lookup.
    assert_error(
        &put(lock, carol.clone(), json!({"locked": true})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &put(
            "/_matrix/client/v1/admin/lock/@nobody:localhost",
            carol.clone(),
            json!({"locked": true}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &put(
            "/_matrix/client/v1/admin/lock/@nobody:localhost",
            root.clone(),
            json!({"locked": true}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_eq!(
        put(lock, root.clone(), json!({"locked": true})).await,
        (200, json!({"locked": true}))
    );
    assert_eq!(
        server.get(lock, Some(&root)).await,
        (200, json!({"locked": true}))
    );
    assert_error(&server.whoami(&carol).await, 401, "M_USER_LOCKED");
    assert_eq!(
        put(lock, root.clone(), json!({"locked": false})).await,
        (200, json!({"locked": false}))
    );
    assert_eq!(server.whoami(&carol).await.0, 200);
    let suspend = "/_matrix/client/v1/admin/suspend/@carol:localhost";
    assert_eq!(
        put(suspend, root.clone(), json!({"suspended": true})).await,
        (200, json!({"suspended": true}))
    );
    assert_eq!(
        server.get(suspend, Some(&root)).await,
        (200, json!({"suspended": true}))
    );
    assert_error(&put(suspend, root, json!({})).await, 400, "M_MISSING_PARAM");
}
