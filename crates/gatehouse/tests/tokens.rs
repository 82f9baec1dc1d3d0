//! Access and refresh tokens: expiry, rotation, logout, the legacy v1 API,
//! and durability across a crash.

mod common;

use common::{Server, assert_error, s};
use serde_json::json;

async fn refresh(server: &Server, rt: &str) -> (u16, serde_json::Value) {
    server
        .post("/_matrix/client/v3/refresh", json!({"refresh_token": rt}))
        .await
}

#[tokio::test]
async fn missing_malformed_revoked_and_expired_tokens() {
    let server = Server::start(&[("GATEHOUSE_TOKENS__ACCESS_TOKEN_LIFETIME_MS", "1000")]);
    server.create_user("alice", "pw", &[]);
    assert_error(
        &server.get("/_matrix/client/v3/account/whoami", None).await,
        401,
        "M_MISSING_TOKEN",
    );
    let bad = server.whoami("ghat_not-a-real-token").await;
    assert_error(&bad, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(bad.1["soft_logout"], false);
    // A well-formed token with a broken checksum is refused the same way.
    let login = server
        .login("alice", "pw", json!({"refresh_token": true}))
        .await;
    let at = s(&login, "access_token");
    let mut flipped = at.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'a' { 'b' } else { 'a' });
    assert_eq!(server.whoami(&flipped).await.1["soft_logout"], false);

    assert_eq!(login["expires_in_ms"], 1000);
    assert_eq!(server.whoami(&at).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let expired = server.whoami(&at).await;
    assert_error(&expired, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(
        expired.1["soft_logout"], true,
        "expired tokens are a soft logout"
    );
    // Non-refreshing clients get tokens that do not expire.
    let plain = server.login("alice", "pw", json!({})).await;
    assert!(plain.get("expires_in_ms").is_none());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(server.whoami(&s(&plain, "access_token")).await.0, 200);
    // Revoked: soft_logout false.
    assert_eq!(
        server
            .post_auth(
                "/_matrix/client/v3/logout",
                &s(&plain, "access_token"),
                json!({})
            )
            .await
            .0,
        200
    );
    let revoked = server.whoami(&s(&plain, "access_token")).await;
    assert_error(&revoked, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(revoked.1["soft_logout"], false);
    // v3 never accepts the query parameter (removed in v1.20).
    let (status, v) = server
        .get(
            &format!("/_matrix/client/v3/account/whoami?access_token={at}"),
            None,
        )
        .await;
    assert_error(&(status, v), 401, "M_MISSING_TOKEN");
    // An expired token can still log out (its device goes), as in Synapse;
    // afterwards it is revoked, not merely expired.
    assert_eq!(
        server
            .post_auth("/_matrix/client/v3/logout", &at, json!({}))
            .await,
        (200, json!({}))
    );
    assert_eq!(server.whoami(&at).await.1["soft_logout"], false);
}

#[tokio::test]
async fn refresh_rotation_follows_the_spec() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let login = server
        .login("alice", "pw", json!({"refresh_token": true}))
        .await;
    let (at0, rt0) = (s(&login, "access_token"), s(&login, "refresh_token"));
    assert!(rt0.starts_with("ghrt_"));
    // The expired access token sent along (as matrix-js-sdk does) is ignored.
    let (status, r1) = server
        .send(
            server
                .http
                .post(server.url("/_matrix/client/v3/refresh"))
                .bearer_auth("ghat_garbage")
                .json(&json!({"refresh_token": rt0})),
        )
        .await;
    assert_eq!(status, 200, "{r1}");
    assert!(r1["expires_in_ms"].as_u64().unwrap() > 0);
    // The answer "was lost": the old refresh token still works.
    let (status, r2) = refresh(&server, &rt0).await;
    assert_eq!(status, 200);
    // Using the new access token retires the old refresh token and its sibling.
    let (status, me) = server.whoami(&s(&r2, "access_token")).await;
    assert_eq!(status, 200);
    assert_eq!(
        me["device_id"], login["device_id"],
        "refreshed tokens stay on the device"
    );
    // Retired by a rotation: that session goes on under the new token, so
    // this one may not resume (no soft logout).
    for dead in [&rt0, &s(&r1, "refresh_token")] {
        let got = refresh(&server, dead).await;
        assert_error(&got, 401, "M_UNKNOWN_TOKEN");
        assert_eq!(got.1["soft_logout"], false, "{got:?}");
    }
    assert_error(&server.whoami(&at0).await, 401, "M_UNKNOWN_TOKEN");
    // Using the new refresh token also retires its parent.
    let (status, r3) = refresh(&server, &s(&r2, "refresh_token")).await;
    assert_eq!(status, 200);
    let (status, _) = refresh(&server, &s(&r3, "refresh_token")).await;
    assert_eq!(status, 200);
    assert_error(
        &refresh(&server, &s(&r2, "refresh_token")).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    // Unknown and malformed refresh tokens.
    let unknown = refresh(&server, "ghrt_nope").await;
    assert_error(&unknown, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(unknown.1["soft_logout"], false);
    assert_error(
        &server.post("/_matrix/client/v3/refresh", json!({})).await,
        400,
        "M_MISSING_PARAM",
    );
}

/// `soft_logout: true` only where the session may resume: an expired
/// refresh token. A logged-out, deleted or deactivated session is over.
#[tokio::test]
async fn refresh_soft_logout_only_for_an_expired_session() {
    let server = Server::start(&[("GATEHOUSE_TOKENS__REFRESH_TOKEN_LIFETIME_MS", "1500")]);
    server.create_user("alice", "pw", &[]);
    let login = |_: ()| server.login("alice", "pw", json!({"refresh_token": true}));
    // Expired: may resume.
    let expiring = login(()).await;
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let got = refresh(&server, &s(&expiring, "refresh_token")).await;
    assert_error(&got, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(got.1["soft_logout"], true, "{got:?}");
    // Logged out: over.
    let out = login(()).await;
    let (status, _) = server
        .post_auth(
            "/_matrix/client/v3/logout",
            &s(&out, "access_token"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let got = refresh(&server, &s(&out, "refresh_token")).await;
    assert_error(&got, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(got.1["soft_logout"], false, "{got:?}");
    // Every session ended by /logout/all: over.
    let all = login(()).await;
    let (status, _) = server
        .post_auth(
            "/_matrix/client/v3/logout/all",
            &s(&all, "access_token"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let got = refresh(&server, &s(&all, "refresh_token")).await;
    assert_error(&got, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(got.1["soft_logout"], false, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_hand_out_only_live_tokens() {
    let server = std::sync::Arc::new(Server::start(&[]));
    server.create_user("alice", "pw", &[]);
    let login = server
        .login("alice", "pw", json!({"refresh_token": true}))
        .await;
    let rt0 = s(&login, "refresh_token");
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (server, rt0) = (server.clone(), rt0.clone());
        tasks.push(tokio::spawn(async move { refresh(&server, &rt0).await }));
    }
    let mut pairs = Vec::new();
    for t in tasks {
        let (status, v) = t.await.unwrap();
        assert_eq!(
            status, 200,
            "every concurrent refresh of a live token succeeds: {v}"
        );
        pairs.push(v);
    }
    // Each handed-out refresh token is alive: any one of them can be used…
    let winner = &pairs[7];
    let (status, _) = refresh(&server, &s(winner, "refresh_token")).await;
    assert_eq!(status, 200, "a handed-out token was already dead");
    // …and once one is used, its siblings are retired.
    for (i, p) in pairs.iter().enumerate().filter(|(i, _)| *i != 7) {
        assert_eq!(
            server.whoami(&s(p, "access_token")).await.0,
            401,
            "sibling {i} survived"
        );
    }
}

#[tokio::test]
async fn logout_and_logout_all() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    server.create_user("bob", "pw", &[]);
    let a1 = server
        .login("alice", "pw", json!({"refresh_token": true}))
        .await;
    let a2 = server.login("alice", "pw", json!({})).await;
    let b1 = server.login("bob", "pw", json!({})).await;
    let at1 = s(&a1, "access_token");
    assert_eq!(
        server
            .post_auth("/_matrix/client/v3/logout", &at1, json!({}))
            .await,
        (200, json!({}))
    );
    assert_error(&server.whoami(&at1).await, 401, "M_UNKNOWN_TOKEN");
    assert_error(
        &refresh(&server, &s(&a1, "refresh_token")).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(server.whoami(&s(&a2, "access_token")).await.0, 200);
    // An empty body (no JSON at all) is fine for logout.
    let (status, _) = server
        .send(
            server
                .http
                .post(server.url("/_matrix/client/v3/logout/all"))
                .bearer_auth(s(&a2, "access_token")),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.whoami(&s(&a2, "access_token")).await.0, 401);
    assert_eq!(
        server.whoami(&s(&b1, "access_token")).await.0,
        200,
        "other users untouched"
    );
    assert_error(
        &server.post("/_matrix/client/v3/logout", json!({})).await,
        401,
        "M_MISSING_TOKEN",
    );
}

#[tokio::test]
async fn legacy_v1_login_and_tokenrefresh() {
    let server = Server::start(&[("GATEHOUSE_SERVER_NAME", "matrix.org")]);
    server.create_user("cheeky_monkey", "ilovebananas", &[]);
    // Seed 004's example, including its "m.login.pasword" typo: 400 M_UNKNOWN.
    let typo = server
        .post(
            "/_matrix/client/api/v1/login",
            json!({"type": "m.login.pasword", "user": "cheeky_monkey", "password": "ilovebananas"}),
        )
        .await;
    assert_error(&typo, 400, "M_UNKNOWN");
    let (status, v) = server
        .post("/_matrix/client/api/v1/login", json!({"type": "m.login.password", "user": "cheeky_monkey", "password": "ilovebananas"}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["user_id"], "@cheeky_monkey:matrix.org");
    assert_eq!(v["home_server"], "matrix.org");
    let rt = s(&v, "refresh_token");
    let wrong = server
        .post(
            "/_matrix/client/api/v1/login",
            json!({"type": "m.login.password", "user": "cheeky_monkey", "password": "x"}),
        )
        .await;
    assert_error(&wrong, 403, "M_FORBIDDEN");
    assert_error(
        &server
            .post(
                "/_matrix/client/api/v1/login",
                json!({"type": "m.login.password"}),
            )
            .await,
        400,
        "M_MISSING_PARAM",
    );

    let (status, r) = server
        .post(
            "/_matrix/client/api/v1/tokenrefresh",
            json!({"refresh_token": rt}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r.as_object().unwrap().len(),
        2,
        "exactly access_token and refresh_token: {r}"
    );
    assert_eq!(server.whoami(&s(&r, "access_token")).await.0, 200);
    let reuse = server
        .post(
            "/_matrix/client/api/v1/tokenrefresh",
            json!({"refresh_token": rt}),
        )
        .await;
    assert_error(&reuse, 403, "M_FORBIDDEN");
    let (status, r2) = server
        .post(
            "/_matrix/client/api/v1/tokenrefresh",
            json!({"refresh_token": s(&r, "refresh_token")}),
        )
        .await;
    assert_eq!(status, 200);
    // The v1 API accepted `access_token` in the query string.
    let at = s(&r2, "access_token");
    let (status, _) = server
        .send(
            server
                .http
                .post(server.url(&format!("/_matrix/client/api/v1/logout?access_token={at}")))
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.whoami(&at).await.0, 401);
}

#[tokio::test]
async fn acknowledged_writes_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (at, rt, logged_out) = {
        let mut server = Server::start_in(dir.path(), &[]);
        server.create_user("alice", "pw", &[]);
        let a = server
            .login("alice", "pw", json!({"refresh_token": true}))
            .await;
        let b = server.login("alice", "pw", json!({})).await;
        assert_eq!(
            server
                .post_auth(
                    "/_matrix/client/v3/logout",
                    &s(&b, "access_token"),
                    json!({})
                )
                .await
                .0,
            200
        );
        let (status, r) = refresh(&server, &s(&a, "refresh_token")).await;
        assert_eq!(status, 200);
        server.crash();
        (
            s(&r, "access_token"),
            s(&r, "refresh_token"),
            s(&b, "access_token"),
        )
    };
    let server = Server::start_in(dir.path(), &[]);
    assert_eq!(
        server.whoami(&at).await.0,
        200,
        "a refreshed token survives"
    );
    assert_eq!(
        server.whoami(&logged_out).await.0,
        401,
        "a revocation survives"
    );
    assert_eq!(
        refresh(&server, &rt).await.0,
        200,
        "a refresh token survives"
    );
}
