//! The client SDK (`gatehouse-client`) against a real Gatehouse server:
//! discovery, login, refresh, logout, rate limits and misbehaving servers,
//! through the SDK's public API (UIA is in sdk_uia.rs, shared sessions in
//! sdk_sessions.rs).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::sdk::logged_in;
use common::{Server, free_port};
use gatehouse_client::discovery::{AutoDiscovery, DiscoveryState};
use gatehouse_client::{Client, Error, ErrorCode, LoginRequest, Session, UserIdentifier};
use serde_json::json;

#[tokio::test]
async fn discovery_states() {
    let server = Server::start_public(vec![]);
    let domain = server.base.trim_start_matches("http://").to_owned();
    let d = AutoDiscovery::new().with_scheme("http");
    let found = d.find_client_config(&domain).await;
    assert_eq!(found.homeserver.state, DiscoveryState::Success, "{found:?}");
    assert_eq!(
        found.homeserver.base_url.as_deref(),
        Some(server.base.as_str())
    );
    assert_eq!(found.identity_server.state, DiscoveryState::Prompt);
    // No .well-known published: PROMPT.
    let plain = Server::start(&[]);
    let found = d
        .find_client_config(plain.base.trim_start_matches("http://"))
        .await;
    assert_eq!(found.homeserver.state, DiscoveryState::Prompt);
    // Nothing listening: FAIL_PROMPT.
    let found = d
        .find_client_config(&format!("127.0.0.1:{}", free_port()))
        .await;
    assert_eq!(found.homeserver.state, DiscoveryState::FailPrompt);
    // A base URL that is not a homeserver: FAIL_ERROR.
    let wk = json!({"m.homeserver": {"base_url": format!("{}/not-matrix", server.base)}});
    assert_eq!(
        d.from_discovery_config(&wk).await.homeserver.state,
        DiscoveryState::FailError
    );
    // A working homeserver with a broken identity server: the homeserver
    // is usable, the identity server is FAIL_PROMPT.
    let wk = json!({"m.homeserver": {"base_url": server.base}, "m.identity_server": {"base_url": server.base}});
    let found = d.from_discovery_config(&wk).await;
    assert_eq!(found.homeserver.state, DiscoveryState::Success);
    assert_eq!(
        (
            found.identity_server.state,
            found.identity_server.base_url.as_deref()
        ),
        (DiscoveryState::FailPrompt, Some(server.base.as_str()))
    );
}

#[tokio::test]
async fn login_flows_identifiers_whoami_and_logout() {
    let server = Server::start(&[]);
    server.create_user(
        "alice",
        "pw",
        &["--email", "alice@example.org", "--phone", "+447400123456"],
    );
    let client = Client::builder(&server.base).build().unwrap();
    let flows = client.login_flows().await.unwrap();
    assert_eq!(flows[0].kind, "m.login.password");
    for id in [
        UserIdentifier::user("alice"),
        UserIdentifier::email("Alice@Example.org"),
        UserIdentifier::phone("GB", "07400 123456"),
        UserIdentifier::ThirdParty {
            medium: "msisdn".into(),
            address: "447400123456".into(),
        },
    ] {
        let r = client
            .login_request(LoginRequest::password(id, "pw").initial_device_display_name("SDK"))
            .await
            .unwrap();
        assert_eq!(r.user_id, "@alice:localhost");
    }
    // Seed 000: a fresh client from the response.
    let r = client
        .login_request(LoginRequest::password(UserIdentifier::user("alice"), "pw"))
        .await
        .unwrap();
    let real = Client::builder(&server.base)
        .session(r.session())
        .build()
        .unwrap();
    let me = real.whoami().await.unwrap();
    assert_eq!(
        (me.user_id.as_str(), me.device_id.clone()),
        ("@alice:localhost", r.device_id.clone())
    );
    let wrong = client
        .login_request(LoginRequest::password(
            UserIdentifier::user("alice"),
            "nope",
        ))
        .await
        .unwrap_err();
    let m = wrong.matrix().unwrap();
    assert_eq!((m.status, &m.errcode), (403, &ErrorCode::Forbidden));
    real.logout().await.unwrap();
    assert!(real.session().is_none());
    assert!(matches!(real.whoami().await, Err(Error::NotLoggedIn)));
}

#[tokio::test]
async fn tokens_refresh_by_themselves_once_for_concurrent_requests() {
    let server = Server::start(&[("GATEHOUSE_TOKENS__ACCESS_TOKEN_LIFETIME_MS", "1000")]);
    server.create_user("alice", "pw", &[]);
    let temp = Client::builder(&server.base).build().unwrap();
    let r = temp
        .login_request(
            LoginRequest::password(UserIdentifier::user("alice"), "pw").refresh_token(true),
        )
        .await
        .unwrap();
    let refreshes = Arc::new(AtomicUsize::new(0));
    let saved: Arc<Mutex<Vec<Session>>> = Arc::default();
    let (count, store) = (refreshes.clone(), saved.clone());
    let client = Client::builder(&server.base)
        .session(r.session())
        .refresh_margin(Duration::ZERO)
        .refresh_hook(Arc::new(move |c: Client, rt: String| {
            count.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                // The default behaviour, counted: POST /refresh without the old token.
                let resp = reqwest::Client::new()
                    .post(format!("{}/_matrix/client/v3/refresh", c.base_url()))
                    .json(&json!({"refresh_token": rt}))
                    .send()
                    .await?;
                resp.json().await.map_err(Error::from)
            })
        }))
        .on_session_changed(move |s| store.lock().unwrap().extend(s.cloned()))
        .build()
        .unwrap();
    client.whoami().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Ten requests at once with an expired token: one refresh serves them all.
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.whoami().await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap().user_id, "@alice:localhost");
    }
    assert_eq!(refreshes.load(Ordering::SeqCst), 1, "one shared refresh");
    let saved = saved.lock().unwrap();
    assert_eq!(saved.len(), 1, "the app was told to persist the new tokens");
    assert_ne!(saved[0].refresh_token, r.refresh_token, "rotated");
    assert_eq!(client.session().unwrap(), saved[0]);
}

#[tokio::test]
async fn default_refresh_and_explicit_refresh() {
    let server = Server::start(&[("GATEHOUSE_TOKENS__ACCESS_TOKEN_LIFETIME_MS", "60000")]);
    server.create_user("alice", "pw", &[]);
    let client = logged_in(&server, "alice", true).await;
    let before = client.session().unwrap();
    let after = client.refresh().await.unwrap();
    assert_ne!(before.access_token, after.access_token);
    assert!(after.expires_at_ms.unwrap() > before.expires_at_ms.unwrap() - 1);
    assert_eq!(client.whoami().await.unwrap().user_id, "@alice:localhost");
}

#[tokio::test]
async fn a_hard_logout_is_reported() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let logged_out = Arc::new(AtomicUsize::new(0));
    let seen = logged_out.clone();
    let other = logged_in(&server, "alice", false).await;
    let temp = Client::builder(&server.base).build().unwrap();
    let r = temp
        .login_request(LoginRequest::password(UserIdentifier::user("alice"), "pw"))
        .await
        .unwrap();
    let client = Client::builder(&server.base)
        .session(r.session())
        .on_logged_out(move |e| {
            assert!(!e.soft_logout);
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    other.logout_all().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = client.whoami().await.unwrap_err();
    assert!(matches!(err, Error::LoggedOut(_)), "{err:?}");
    assert_eq!(logged_out.load(Ordering::SeqCst), 1);
    assert!(
        client.session().is_none(),
        "a hard logout forgets the session"
    );
}

#[tokio::test]
async fn rate_limits_are_typed_and_can_be_retried() {
    let server = Server::start(&[
        ("GATEHOUSE_RATE_LIMITS__LOGIN_PER_ADDRESS__PER_SECOND", "2"),
        ("GATEHOUSE_RATE_LIMITS__LOGIN_PER_ADDRESS__BURST_COUNT", "1"),
    ]);
    server.create_user("alice", "pw", &[]);
    let plain = Client::builder(&server.base).build().unwrap();
    let req = || LoginRequest::password(UserIdentifier::user("alice"), "pw");
    plain.login_request(req()).await.unwrap();
    let err = plain.login_request(req()).await.unwrap_err();
    let m = err.matrix().unwrap();
    assert_eq!(m.errcode, ErrorCode::LimitExceeded);
    assert!(
        m.retry_after.is_some_and(|d| d <= Duration::from_secs(1)),
        "{m:?}"
    );
    let patient = Client::builder(&server.base)
        .retry_rate_limited(2)
        .build()
        .unwrap();
    patient
        .login_request(req())
        .await
        .expect("retried after waiting");
}

#[tokio::test]
async fn short_lived_tokens_are_not_refreshed_before_every_request() {
    let server = Server::start(&[("GATEHOUSE_TOKENS__ACCESS_TOKEN_LIFETIME_MS", "10000")]);
    server.create_user("alice", "pw", &[]);
    let r = Client::builder(&server.base)
        .build()
        .unwrap()
        .login_request(
            LoginRequest::password(UserIdentifier::user("alice"), "pw").refresh_token(true),
        )
        .await
        .unwrap();
    // The default 30 s margin is longer than the token's 10 s life: capped
    // at half of it, so the fresh token is used as it is.
    let client = Client::builder(&server.base)
        .session(r.session())
        .build()
        .unwrap();
    for _ in 0..3 {
        client.whoami().await.unwrap();
    }
    assert_eq!(client.session().unwrap().access_token, r.access_token);
}

/// A server that fails on purpose (what Gatehouse never does), on
/// loopback, and a session with a refresh token to use against it.
async fn misbehaving_server(app: axum::Router) -> (String, Session) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let session = Session {
        access_token: "old".into(),
        user_id: "@a:hs".into(),
        refresh_token: Some("r1".into()),
        ..Session::default()
    };
    (base, session)
}

/// A stand-in that is not a homeserver at all: a proxy answering 502 with
/// HTML, then a working refresh. Real HTTP on loopback.
#[tokio::test]
async fn non_json_errors_and_refresh_back_off() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let app = axum::Router::new()
        .route("/_matrix/client/v3/account/whoami", axum::routing::get(|| async { (axum::http::StatusCode::BAD_GATEWAY, "<html>bad gateway</html>") }))
        .route(
            "/_matrix/client/v3/refresh",
            axum::routing::post(move || {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "try later".to_owned())
                    } else {
                        (axum::http::StatusCode::OK, json!({"access_token": "new", "refresh_token": "r2", "expires_in_ms": 60000}).to_string())
                    }
                }
            }),
        );
    let (base, session) = misbehaving_server(app).await;
    let client = Client::builder(&base).session(session).build().unwrap();
    match client.whoami().await {
        Err(Error::Http { status, body }) => {
            assert_eq!((status, body.as_str()), (502, "<html>bad gateway</html>"))
        }
        other => panic!("{other:?}"),
    }
    // Two transient failures, then success: refresh backs off and retries.
    let s = client.refresh().await.unwrap();
    assert_eq!(
        (s.access_token.as_str(), s.refresh_token.as_deref()),
        ("new", Some("r2"))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_failing_server_is_not_a_logout_and_hooks_cannot_deadlock() {
    let app = axum::Router::new().route(
        "/_matrix/client/v3/refresh",
        axum::routing::post(|| async {
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"errcode": "M_UNKNOWN", "error": "Internal server error"})),
            )
        }),
    );
    let (base, session) = misbehaving_server(app).await;
    let logged_out = Arc::new(AtomicUsize::new(0));
    let counter = logged_out.clone();
    let client = Client::builder(&base)
        .session(session.clone())
        .on_logged_out(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    match client.refresh().await {
        Err(Error::Matrix(e)) => assert_eq!(e.status, 500),
        other => panic!("a 500 is transient, not a logout: {other:?}"),
    }
    assert_eq!(logged_out.load(Ordering::SeqCst), 0);
    assert_eq!(
        client.session(),
        Some(session.clone()),
        "the session is kept"
    );

    // Against Gatehouse: a hook that calls refresh() is told so instead of
    // waiting for itself; refresh_request() is the way to the endpoint.
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let r = Client::builder(&server.base)
        .build()
        .unwrap()
        .login_request(
            LoginRequest::password(UserIdentifier::user("alice"), "pw").refresh_token(true),
        )
        .await
        .unwrap();
    let nested = Arc::new(Mutex::new(None));
    let seen = nested.clone();
    let client = Client::builder(&server.base)
        .session(r.session())
        .refresh_hook(Arc::new(move |client: Client, rt: String| {
            let seen = seen.clone();
            Box::pin(async move {
                let inner = tokio::time::timeout(Duration::from_secs(5), client.refresh()).await;
                *seen.lock().unwrap() = Some(inner.is_ok_and(|r| r.is_err()));
                client.refresh_request(&rt).await
            })
        }))
        .build()
        .unwrap();
    let before = client.session().unwrap().access_token;
    let after = client.refresh().await.unwrap();
    assert_ne!(after.access_token, before);
    assert_eq!(
        *nested.lock().unwrap(),
        Some(true),
        "refresh() inside the hook answered an error at once"
    );
    assert_eq!(client.whoami().await.unwrap().user_id, "@alice:localhost");
}
