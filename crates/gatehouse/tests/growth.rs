//! Nothing a client can grow is unbounded: UIA sessions opened without an
//! access token (`POST /register`, password reset) are limited per client
//! address (`rate_limits.uia_sessions_per_address`), and so are refreshes
//! (`rate_limits.refreshes_per_address`), on top of the store's cap on the
//! unused children of one refresh token.

mod common;

use common::{Server, assert_error};
use serde_json::{Value, json};

/// The default limit (see `UIA_SESSIONS_PER_ADDRESS` in the configuration).
const BURST: usize = 20;
const FLOOD: usize = 300;
/// Requests in flight at once (below `http.max_connections_per_address`).
const BATCH: usize = 25;

/// The limit at its default (`base_env` raises every limit for other tests).
fn default_limit() -> [(&'static str, &'static str); 2] {
    [
        (
            "GATEHOUSE_RATE_LIMITS__UIA_SESSIONS_PER_ADDRESS__PER_SECOND",
            "0.5",
        ),
        (
            "GATEHOUSE_RATE_LIMITS__UIA_SESSIONS_PER_ADDRESS__BURST_COUNT",
            "20",
        ),
    ]
}

/// Rows in the server's `uia_sessions` table, read beside the running server.
async fn uia_session_rows(server: &Server) -> usize {
    common::database::count_rows(&server.data_dir, "uia_sessions").await
}

/// `FLOOD` requests to `path` with `body`, `BATCH` at a time, from the one
/// address the test client has; returns (challenged, limited).
async fn flood(server: &Server, path: &str, body: &Value) -> (usize, usize) {
    let (mut challenged, mut limited) = (0, 0);
    for _ in 0..FLOOD / BATCH {
        let batch = (0..BATCH).map(|_| server.post(path, body.clone()));
        for (status, resp) in futures_util::future::join_all(batch).await {
            match status {
                401 => {
                    assert!(resp["session"].is_string(), "challenge: {resp}");
                    challenged += 1;
                }
                429 => {
                    assert_error(&(status, resp.clone()), 429, "M_LIMIT_EXCEEDED");
                    let retry = resp["retry_after_ms"].as_u64();
                    assert!(retry.is_some_and(|ms| ms > 0), "retry_after_ms: {resp}");
                    limited += 1;
                }
                _ => panic!("unexpected answer {status}: {resp}"),
            }
        }
    }
    (challenged, limited)
}

/// The answer to `path` with `body` from `ip` (the server trusts the
/// proxy's `X-Forwarded-For`).
async fn from_address(server: &Server, ip: &str, path: &str, body: &Value) -> (u16, Value) {
    server
        .send(
            server
                .http
                .post(server.url(path))
                .header("X-Forwarded-For", ip)
                .json(body),
        )
        .await
}

#[tokio::test]
async fn registration_requests_cannot_fill_the_session_table() {
    let mut env = vec![
        ("GATEHOUSE_REGISTRATION__ENABLED", "true"),
        ("GATEHOUSE_TRUST_X_FORWARDED_FOR", "true"),
    ];
    env.extend(default_limit());
    let server = Server::start(&env);
    let path = "/_matrix/client/v3/register";
    let (challenged, limited) = flood(&server, path, &json!({})).await;
    let rows = uia_session_rows(&server).await;
    println!(
        "POST /register: {FLOOD} requests from one address: {rows} sessions created, {limited} limited (429)"
    );
    // The bucket leaks 0.5/s while the flood runs: a little slack.
    assert!(rows <= BURST + 5, "{rows} sessions stored");
    assert_eq!(rows, challenged, "every challenge is one stored session");
    assert_eq!(challenged + limited, FLOOD);

    // Another address is not held off by the first one's flood.
    let (status, resp) = from_address(&server, "10.9.8.7", path, &json!({})).await;
    assert_eq!(status, 401, "another address gets its challenge: {resp}");
    assert!(resp["session"].is_string(), "{resp}");
    // And a session once opened goes on being usable from the flooded
    // address: only new sessions are counted.
    let (status, resp) = server
        .post(
            path,
            json!({
                "username": "late",
                "password": "a long enough password",
                "auth": {"type": "m.login.dummy", "session": resp["session"]},
            }),
        )
        .await;
    assert_eq!(status, 200, "registration in an open session: {resp}");
}

#[tokio::test]
async fn password_reset_requests_cannot_fill_the_session_table() {
    // Password reset is offered only with email (and so a public base URL).
    let server = Server::start_public(
        [
            ("GATEHOUSE_EMAIL__ENABLED", "true"),
            ("GATEHOUSE_EMAIL__SMTP_HOST", "127.0.0.1"),
            ("GATEHOUSE_TRUST_X_FORWARDED_FOR", "true"),
        ]
        .into_iter()
        .chain(default_limit())
        .map(|(k, v)| (k, v.to_owned()))
        .collect(),
    );
    let path = "/_matrix/client/v3/account/password";
    let body = json!({"new_password": "a new password"});
    let (challenged, limited) = flood(&server, path, &body).await;
    let rows = uia_session_rows(&server).await;
    println!(
        "POST /account/password (no token): {FLOOD} requests from one address: {rows} sessions created, {limited} limited (429)"
    );
    assert!(rows <= BURST + 5, "{rows} sessions stored");
    assert_eq!(rows, challenged, "every challenge is one stored session");
    assert_eq!(challenged + limited, FLOOD);
    let (status, resp) = from_address(&server, "10.9.8.7", path, &body).await;
    println!("POST /account/password (no token) from another address afterwards: {status}");
    assert_eq!(status, 401, "another address gets its challenge: {resp}");
}

/// Each username check tells whether an account exists: one address gets
/// the burst, then 429, instead of tens of thousands a second.
#[tokio::test]
async fn username_checks_are_limited_per_address() {
    let server = Server::start(&[
        ("GATEHOUSE_REGISTRATION__ENABLED", "true"),
        ("GATEHOUSE_TRUST_X_FORWARDED_FOR", "true"),
        (
            "GATEHOUSE_RATE_LIMITS__USERNAME_CHECKS_PER_ADDRESS__PER_SECOND",
            "1",
        ),
        (
            "GATEHOUSE_RATE_LIMITS__USERNAME_CHECKS_PER_ADDRESS__BURST_COUNT",
            "10",
        ),
    ]);
    let check = |ip: &'static str, name: String| {
        server.send(
            server
                .http
                .get(server.url(&format!(
                    "/_matrix/client/v3/register/available?username={name}"
                )))
                .header("X-Forwarded-For", ip),
        )
    };
    let mut answered = 0;
    let mut limited = 0;
    for n in 0..30 {
        match check("10.0.0.1", format!("name{n}")).await {
            (200, _) => answered += 1,
            got @ (429, _) => {
                assert_error(&got, 429, "M_LIMIT_EXCEEDED");
                limited += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    println!("30 username checks from one address: {answered} answered, {limited} limited");
    assert_eq!((answered, limited), (10, 20));
    // Registrations naming a username count too.
    let (status, v) = from_address(
        &server,
        "10.0.0.1",
        "/_matrix/client/v3/register",
        &json!({"username": "late"}),
    )
    .await;
    assert_eq!(status, 429, "{v}");
    // Another address is not held back.
    assert_eq!(check("10.0.0.2", "free".into()).await.0, 200);
}

/// One account replaying its refresh token as fast as it can: each success
/// stores a child pair. The address gets its burst and then 429s; the store
/// keeps at most `MAX_PENDING_CHILDREN` children of the token anyway.
#[tokio::test]
async fn refreshes_are_limited_per_address() {
    const REFRESH_BURST: usize = 50;
    let server = Server::start(&[
        ("GATEHOUSE_TRUST_X_FORWARDED_FOR", "true"),
        (
            "GATEHOUSE_RATE_LIMITS__REFRESHES_PER_ADDRESS__PER_SECOND",
            "5",
        ),
        (
            "GATEHOUSE_RATE_LIMITS__REFRESHES_PER_ADDRESS__BURST_COUNT",
            "50",
        ),
    ]);
    server.create_user("alice", "pw", &[]);
    let login = server
        .login("alice", "pw", json!({"refresh_token": true}))
        .await;
    let body = json!({"refresh_token": login["refresh_token"]});
    let started = std::time::Instant::now();
    let (mut refreshed, mut limited) = (0, 0);
    for _ in 0..FLOOD / BATCH {
        let batch = (0..BATCH)
            .map(|_| from_address(&server, "10.1.1.1", "/_matrix/client/v3/refresh", &body));
        for got in futures_util::future::join_all(batch).await {
            match got.0 {
                200 => refreshed += 1,
                _ => {
                    assert_error(&got, 429, "M_LIMIT_EXCEEDED");
                    limited += 1;
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The legacy endpoint counts in the same bucket. Asked at once: the
    // bucket gives one more refresh every 200 ms.
    let legacy = from_address(
        &server,
        "10.1.1.1",
        "/_matrix/client/api/v1/tokenrefresh",
        &body,
    )
    .await;
    assert_error(&legacy, 429, "M_LIMIT_EXCEEDED");
    let rows = common::database::count_rows(&server.data_dir, "refresh_tokens").await as i64;
    println!(
        "{FLOOD} refreshes of one token from one address in {elapsed:.2} s: \
         {refreshed} answered, {limited} limited; {rows} refresh tokens stored"
    );
    // The burst, plus what leaked out of the bucket meanwhile.
    let allowed = REFRESH_BURST + (5.0 * elapsed).ceil() as usize;
    assert!(refreshed <= allowed, "{refreshed} > {allowed}");
    assert_eq!(refreshed + limited, FLOOD);
    let cap = gatehouse_core::refresh::MAX_PENDING_CHILDREN;
    assert!(rows <= 1 + cap, "{rows} refresh tokens stored");
    // Another address is not held back (the token itself is still good).
    let (status, v) = from_address(&server, "10.1.1.2", "/_matrix/client/v3/refresh", &body).await;
    assert_eq!(status, 200, "{v}");
}
