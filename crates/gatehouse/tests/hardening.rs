//! Attacks that once worked, each pinned by a test: a login token that
//! outlived the password or `/logout/all` it was minted before, a 3PID
//! validation's `client_secret` kept in clear, and `next_link` as an open
//! redirect.

mod common;

use common::{Server, Smtp, assert_error, link_in, open_link, s};
use reqwest::Method;
use serde_json::{Value, json};

const GET_TOKEN: &str = "/_matrix/client/v1/login/get_token";
const REQUEST_TOKEN: &str = "/_matrix/client/v3/register/email/requestToken";

/// A login token for `user`, minted under UIA with `password`.
async fn login_token(server: &Server, at: &str, user: &str, password: &str) -> String {
    let (status, v) = server
        .with_password_uia(Method::POST, GET_TOKEN, at, json!({}), user, password)
        .await;
    assert_eq!(status, 200, "{v}");
    s(&v, "login_token")
}

async fn token_login(server: &Server, token: &str) -> (u16, Value) {
    server
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.token", "token": token}),
        )
        .await
}

#[tokio::test]
async fn a_password_change_ends_outstanding_login_tokens() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let at = server.access_token("alice", "pw").await;
    // Keeping the other sessions (`logout_devices: false`) or not, the
    // tokens minted under the old password die with it.
    for (old, new, logout_devices) in [("pw", "pw2", false), ("pw2", "pw3", true)] {
        let before = login_token(&server, &at, "alice", old).await;
        let (status, v) = server
            .with_password_uia(
                Method::POST,
                "/_matrix/client/v3/account/password",
                &at,
                json!({"new_password": new, "logout_devices": logout_devices}),
                "alice",
                old,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_error(&token_login(&server, &before).await, 403, "M_FORBIDDEN");
    }
    // A token minted after the change works: the refusal above is the
    // change's doing, not a broken login.
    let after = login_token(&server, &at, "alice", "pw3").await;
    let (status, v) = token_login(&server, &after).await;
    assert_eq!(
        (status, v["user_id"].as_str()),
        (200, Some("@alice:localhost")),
        "{v}"
    );
}

#[tokio::test]
async fn logout_all_ends_outstanding_login_tokens() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let at = server.access_token("alice", "pw").await;
    let before = login_token(&server, &at, "alice", "pw").await;
    let (status, v) = server
        .post_auth("/_matrix/client/v3/logout/all", &at, json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_error(&token_login(&server, &before).await, 403, "M_FORBIDDEN");
    // A new session's new token works.
    let at = server.access_token("alice", "pw").await;
    let after = login_token(&server, &at, "alice", "pw").await;
    assert_eq!(token_login(&server, &after).await.0, 200);
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn client_secrets_are_stored_as_hashes_only() {
    let smtp = Smtp::start();
    let mut settings = smtp.settings();
    settings.push(("GATEHOUSE_REGISTRATION__ENABLED", "true".into()));
    settings.push((
        "GATEHOUSE_REGISTRATION__FLOWS",
        r#"[["m.login.email.identity"]]"#.into(),
    ));
    let server = Server::start_public(settings);
    let secret = "Recognisable.client-secret_0123456789";
    let (status, v) = server
        .post(
            REQUEST_TOKEN,
            json!({"client_secret": secret, "email": "carol@example.org", "send_attempt": 1}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let sid = s(&v, "sid");

    // Everything stored (the SQLite file and its WAL, or every row of
    // every PostgreSQL table).
    let stored = common::database::stored_bytes(&server.data_dir).await;
    assert!(
        contains(&stored, &sid),
        "the validation is there (so the next check is not vacuous)"
    );
    assert!(
        !contains(&stored, secret),
        "the client_secret is not stored in clear"
    );

    // The emailed link (which carries the secret itself) still validates,
    // and UIA still accepts the session with the secret.
    let link = link_in(&smtp.wait_for(1));
    assert!(link.contains(secret), "{link}");
    let (status, v) = server
        .post(
            "/_gatehouse/threepid/submit_token",
            json!({"sid": sid, "client_secret": "another-secret", "token": "x"}),
        )
        .await;
    assert_eq!((status, v), (200, json!({"success": false})));
    assert_eq!(open_link(&server, &link).await.0, 200);
    let body = json!({"username": "carol", "password": "pw"});
    let (status, c) = server
        .post("/_matrix/client/v3/register", body.clone())
        .await;
    assert_eq!(status, 401, "{c}");
    let mut step = body;
    step["auth"] = json!({
        "type": "m.login.email.identity",
        "session": s(&c, "session"),
        "threepid_creds": {"sid": sid, "client_secret": "not-the-secret"},
    });
    let wrong = server
        .post("/_matrix/client/v3/register", step.clone())
        .await;
    assert_eq!(wrong.0, 401, "{}", wrong.1);
    assert_eq!(wrong.1["errcode"], "M_THREEPID_AUTH_FAILED", "{}", wrong.1);
    step["auth"]["threepid_creds"]["client_secret"] = secret.into();
    let (status, v) = server.post("/_matrix/client/v3/register", step).await;
    assert_eq!(status, 200, "{v}");
}

fn ask(next_link: &str) -> Value {
    json!({"client_secret": "c", "email": "dave@example.org", "send_attempt": 1, "next_link": next_link})
}

#[tokio::test]
async fn next_link_is_limited_to_the_own_origin_by_default() {
    let smtp = Smtp::start();
    let server = Server::start_public(smtp.settings());
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    for bad in [
        "https://evil.example/".to_owned(),
        "https://evil.example/_gatehouse/account".to_owned(),
        // Same host, another port or scheme: another origin.
        format!("http://127.0.0.1:{}/", port.parse::<u16>().unwrap() ^ 1),
        format!("https://127.0.0.1:{port}/"),
        format!("ftp://127.0.0.1:{port}/"),
        // The own host hidden in the user info is still evil.example.
        format!("http://127.0.0.1:{port}@evil.example/"),
    ] {
        assert_error(
            &server.post(REQUEST_TOKEN, ask(&bad)).await,
            400,
            "M_INVALID_PARAM",
        );
    }
    let own = format!("{}/_gatehouse/account?from=mail", server.base);
    let (status, v) = server.post(REQUEST_TOKEN, ask(&own)).await;
    assert_eq!(status, 200, "the server's own origin is allowed: {v}");
}

#[tokio::test]
async fn next_link_may_name_a_configured_host() {
    let smtp = Smtp::start();
    let mut settings = smtp.settings();
    settings.push((
        "GATEHOUSE_EMAIL__NEXT_LINK_DOMAINS",
        r#"["app.example.org"]"#.into(),
    ));
    let server = Server::start_public(settings);
    assert_error(
        &server
            .post(REQUEST_TOKEN, ask("https://evil.example/"))
            .await,
        400,
        "M_INVALID_PARAM",
    );
    for good in [
        "https://app.example.org/welcome".to_owned(),
        "http://APP.example.org:8080/".to_owned(),
        format!("{}/_gatehouse/account", server.base),
    ] {
        let (status, v) = server.post(REQUEST_TOKEN, ask(&good)).await;
        assert_eq!(status, 200, "{good}: {v}");
    }
}
