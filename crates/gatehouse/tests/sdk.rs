//! The client SDK (`gatehouse-client`) against a real Gatehouse server:
//! every seed 000-002 flow, through the SDK's public API.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, Smtp, free_port, link_in};
use gatehouse_client::discovery::{AutoDiscovery, DiscoveryState};
use gatehouse_client::{
    AuthInputs, Client, Error, ErrorCode, InteractiveAuth, LoginRequest, Session, StageStatus,
    TokenPurpose, UserIdentifier,
};
use serde_json::{Value, json};

async fn logged_in(server: &Server, user: &str, refresh: bool) -> Client {
    let temp = Client::builder(&server.base).build().unwrap();
    let r = temp
        .login_request(
            LoginRequest::password(UserIdentifier::user(user), "pw").refresh_token(refresh),
        )
        .await
        .unwrap();
    Client::builder(&server.base)
        .session(r.session())
        .refresh_margin(Duration::ZERO)
        .build()
        .unwrap()
}

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

/// Runs InteractiveAuth where every stage the app is asked for is answered
/// by `answer` (returning `None` gives up).
async fn run_uia(
    ia_builder: impl FnOnce(Arc<dyn Fn(&str, &StageStatus) + Send + Sync>) -> InteractiveAuth,
    answer: impl Fn(&str, &StageStatus) -> Option<Value> + Send + Sync + 'static,
) -> Result<Value, Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, StageStatus)>();
    let ia = ia_builder(Arc::new(move |stage, status| {
        let _ = tx.send((stage.to_owned(), status.clone()));
    }));
    let driver = ia.clone();
    tokio::spawn(async move {
        while let Some((stage, status)) = rx.recv().await {
            match answer(&stage, &status) {
                Some(auth) => driver.submit_auth_dict(auth, false).await.unwrap(),
                None => return,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), ia.attempt_auth())
        .await
        .expect("UIA finished in time")
}

fn password_answer(
    user: &'static str,
    password: &'static str,
) -> impl Fn(&str, &StageStatus) -> Option<Value> + Send + Sync {
    move |stage, status| {
        if status.errcode.is_some() {
            return None;
        }
        (stage == "m.login.password")
            .then(|| json!({"type": stage, "identifier": {"type": "m.id.user", "user": user}, "password": password}))
    }
}

#[tokio::test]
async fn interactive_auth_for_registration_password_devices_and_deactivation() {
    let server = Server::start(&[("GATEHOUSE_REGISTRATION__ENABLED", "true")]);
    let anon = Client::builder(&server.base).build().unwrap();
    assert!(anon.is_username_available("newbie").await.unwrap());
    // Registration with the dummy stage, done by the SDK itself.
    let c = anon.clone();
    let body =
        json!({"username": "newbie", "password": "pw", "initial_device_display_name": "SDK"});
    let registered = run_uia(
        move |state_updated| {
            let body = body.clone();
            InteractiveAuth::builder(
                move |auth, _| {
                    let (c, body) = (c.clone(), body.clone());
                    Box::pin(async move { c.register(body, auth).await })
                },
                move |s, st| state_updated(s.as_str(), st),
            )
            .build()
        },
        |_, _| None,
    )
    .await
    .unwrap();
    assert_eq!(registered["user_id"], "@newbie:localhost");
    let taken = anon.is_username_available("newbie").await.unwrap_err();
    assert_eq!(taken.errcode(), Some(&ErrorCode::UserInUse));

    let client = logged_in(&server, "newbie", false).await;
    let second = logged_in(&server, "newbie", false).await;
    let second_device = second.session().unwrap().device_id.unwrap();
    // setPassword through InteractiveAuth (password stage answered by the "user").
    let c = client.clone();
    run_uia(
        move |su| {
            InteractiveAuth::builder(
                move |auth, _| {
                    let c = c.clone();
                    Box::pin(
                        async move { c.set_password("pw2", true, auth).await.map(|()| json!({})) },
                    )
                },
                move |s, st| su(s.as_str(), st),
            )
            .build()
        },
        password_answer("newbie", "pw"),
    )
    .await
    .unwrap();
    assert!(
        matches!(second.whoami().await, Err(Error::LoggedOut(_))),
        "logout_devices"
    );
    // A wrong password inside the stage is reported, not fatal.
    let statuses: Arc<Mutex<Vec<StageStatus>>> = Arc::default();
    let record = statuses.clone();
    let attempts = Arc::new(AtomicUsize::new(0));
    let c = client.clone();
    let third = logged_in_with(&server, "newbie", "pw2").await;
    let third_device = third.session().unwrap().device_id.unwrap();
    run_uia(
        move |su| {
            InteractiveAuth::builder(
                move |auth, _| {
                    let (c, d) = (c.clone(), third_device.clone());
                    Box::pin(async move { c.delete_device(&d, auth).await.map(|()| json!({})) })
                },
                move |s, st| su(s.as_str(), st),
            )
            .build()
        },
        move |stage, status| {
            record.lock().unwrap().push(status.clone());
            let pw = if attempts.fetch_add(1, Ordering::SeqCst) == 0 { "wrong" } else { "pw2" };
            Some(json!({"type": stage, "identifier": {"type": "m.id.user", "user": "newbie"}, "password": pw}))
        },
    )
    .await
    .unwrap();
    let statuses = statuses.lock().unwrap().clone();
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses[1].errcode.as_deref(), Some("M_FORBIDDEN"));
    assert!(matches!(third.whoami().await, Err(Error::LoggedOut(_))));
    let devices = client.devices().await.unwrap();
    assert_eq!(devices.len(), 1);
    assert!(!devices.iter().any(|d| d.device_id == second_device));
    // deactivateAccount(auth, erase = true).
    let c = client.clone();
    let result = run_uia(
        move |su| {
            InteractiveAuth::builder(
                move |auth, _| {
                    let c = c.clone();
                    Box::pin(async move { c.deactivate_account(auth, true).await })
                },
                move |s, st| su(s.as_str(), st),
            )
            .build()
        },
        password_answer("newbie", "pw2"),
    )
    .await
    .unwrap();
    assert_eq!(result["id_server_unbind_result"], "success");
    let gone = anon
        .login_request(LoginRequest::password(
            UserIdentifier::user("newbie"),
            "pw2",
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.errcode(), Some(&ErrorCode::UserDeactivated));
}

async fn logged_in_with(server: &Server, user: &str, password: &str) -> Client {
    let temp = Client::builder(&server.base).build().unwrap();
    let r = temp
        .login_request(LoginRequest::password(UserIdentifier::user(user), password))
        .await
        .unwrap();
    Client::builder(&server.base)
        .session(r.session())
        .build()
        .unwrap()
}

#[tokio::test]
async fn email_registration_with_poll_and_no_auth_flow_found() {
    let smtp = Smtp::start();
    let mut settings = smtp.settings();
    settings.push(("GATEHOUSE_REGISTRATION__ENABLED", "true".into()));
    settings.push((
        "GATEHOUSE_REGISTRATION__FLOWS",
        r#"[["m.login.email.identity"]]"#.into(),
    ));
    let server = Server::start_public(settings);
    let anon = Client::builder(&server.base).build().unwrap();
    let body = json!({"username": "mailer", "password": "pw"});
    let (c1, c2) = (anon.clone(), anon.clone());
    let next_link = format!("{}/_matrix/client/versions", server.base);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<StageStatus>();
    let ia = InteractiveAuth::builder(
        move |auth, _| {
            let (c, body) = (c1.clone(), body.clone());
            Box::pin(async move { c.register(body, auth).await })
        },
        move |_stage, status| {
            let _ = tx.send(status.clone());
        },
    )
    .inputs(AuthInputs {
        email_address: Some("mailer@example.org".into()),
        ..AuthInputs::default()
    })
    .request_email_token(move |email, secret, attempt, _session| {
        let (c, next) = (c2.clone(), next_link.clone());
        Box::pin(async move {
            Ok(c.request_email_token(
                TokenPurpose::Register,
                &email,
                &secret,
                attempt,
                Some(&next),
            )
            .await?
            .sid)
        })
    })
    .build();
    let runner = ia.clone();
    let done = tokio::spawn(async move { runner.attempt_auth().await });
    let status = rx.recv().await.unwrap();
    assert!(
        status.email_sid.is_some(),
        "the SDK requested the email token itself: {status:?}"
    );
    ia.poll().await; // not clicked yet: nothing happens
    let link = link_in(&smtp.wait_for(1));
    let opened = reqwest::get(&link).await.unwrap();
    assert_eq!(
        opened.url().as_str(),
        format!("{}/_matrix/client/versions", server.base),
        "the validated link redirected to the next_link the SDK sent"
    );
    ia.poll().await;
    let registered = tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(registered["user_id"], "@mailer:localhost");

    // A phone number as input, but the server only offers email: NoAuthFlowFound.
    let c3 = anon.clone();
    let ia = InteractiveAuth::builder(
        move |auth, _| {
            let c = c3.clone();
            Box::pin(async move {
                c.register(json!({"username": "phoney", "password": "pw"}), auth)
                    .await
            })
        },
        |_, _| {},
    )
    .inputs(AuthInputs {
        phone_country: Some("GB".into()),
        phone_number: Some("07400123456".into()),
        ..AuthInputs::default()
    })
    .build();
    match ia.attempt_auth().await {
        Err(Error::NoAuthFlowFound {
            required_stages,
            flows,
        }) => {
            assert_eq!(required_stages, vec!["m.login.msisdn"]);
            assert_eq!(flows, vec![vec!["m.login.email.identity".to_owned()]]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn fallback_urls_and_session_resume() {
    let server = Server::start(&[
        ("GATEHOUSE_REGISTRATION__ENABLED", "true"),
        (
            "GATEHOUSE_REGISTRATION__FLOWS",
            r#"[["m.login.registration_token"]]"#,
        ),
    ]);
    assert!(
        server
            .admin(&["registration-token", "create", "--token", "resume-me"])
            .status
            .success()
    );
    let anon = Client::builder(&server.base).build().unwrap();
    assert!(anon.registration_token_validity("resume-me").await.unwrap());
    let body = json!({"username": "resumer", "password": "pw"});
    // First InteractiveAuth: learns the session, then the app "crashes".
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (c1, b1) = (anon.clone(), body.clone());
    let first = InteractiveAuth::builder(
        move |auth, _| {
            let (c, b) = (c1.clone(), b1.clone());
            Box::pin(async move { c.register(b, auth).await })
        },
        move |stage, _| {
            let _ = tx.send(stage.as_str().to_owned());
        },
    )
    .build();
    let runner = first.clone();
    tokio::spawn(async move { runner.attempt_auth().await });
    assert_eq!(rx.recv().await.unwrap(), "m.login.registration_token");
    let session = first.session_id().unwrap();
    let url = anon.fallback_auth_url("m.login.registration_token", &session);
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 200, "{url}");
    // Second InteractiveAuth resumes the stored session.
    let (c2, b2) = (anon.clone(), body.clone());
    let resumed = run_uia(
        move |su| {
            InteractiveAuth::builder(
                move |auth, _| {
                    let (c, b) = (c2.clone(), b2.clone());
                    Box::pin(async move { c.register(b, auth).await })
                },
                move |s, st| su(s.as_str(), st),
            )
            .session_id(session)
            .build()
        },
        |stage, _| Some(json!({"type": stage, "token": "resume-me"})),
    )
    .await
    .unwrap();
    assert_eq!(resumed["user_id"], "@resumer:localhost");
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

#[tokio::test]
async fn busy_changed_brackets_foreground_requests() {
    let server = Server::start(&[("GATEHOUSE_REGISTRATION__ENABLED", "true")]);
    let anon = Client::builder(&server.base).build().unwrap();
    let events: Arc<Mutex<Vec<bool>>> = Arc::default();
    let record = events.clone();
    let c = anon.clone();
    let ia = InteractiveAuth::builder(
        move |auth, _| {
            let c = c.clone();
            Box::pin(async move {
                c.register(json!({"username": "busy", "password": "pw"}), auth)
                    .await
            })
        },
        |_, _| {},
    )
    .busy_changed(move |b| record.lock().unwrap().push(b))
    .build();
    ia.attempt_auth().await.unwrap();
    assert_eq!(
        *events.lock().unwrap(),
        vec![true, false, true, false],
        "challenge, then the dummy stage"
    );
}

#[tokio::test]
async fn login_tokens_sign_in_another_device() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let client = logged_in(&server, "alice", false).await;
    let flows = client.login_flows().await.unwrap();
    assert!(
        flows
            .iter()
            .any(|f| f.kind == "m.login.token" && f.get_login_token),
        "{flows:?}"
    );
    let c = client.clone();
    let token = run_uia(
        move |su| {
            InteractiveAuth::builder(
                move |auth, _| {
                    let c = c.clone();
                    Box::pin(async move {
                        c.login_token(auth)
                            .await
                            .map(|t| json!({"t": t.login_token, "ms": t.expires_in_ms}))
                    })
                },
                move |s, st| su(s.as_str(), st),
            )
            .build()
        },
        password_answer("alice", "pw"),
    )
    .await
    .unwrap();
    assert_eq!(token["ms"], 120_000);
    let t = token["t"].as_str().unwrap().to_owned();
    assert!(t.starts_with("ghlt_"));
    let anon = Client::builder(&server.base).build().unwrap();
    // A refused device_id (a cross-signing key ID) does not spend the token.
    let key_id = "K".repeat(43);
    client
        .upload_device_signing_keys(
            json!({"master_key": {"user_id": "@alice:localhost", "usage": ["master"], "keys": {format!("ed25519:{key_id}"): key_id}}}),
            None,
        )
        .await
        .unwrap();
    let clash = anon
        .login_request(LoginRequest::token(t.clone()).device_id(key_id))
        .await
        .unwrap_err();
    assert_eq!(clash.errcode(), Some(&ErrorCode::Forbidden));
    let r = anon
        .login_request(LoginRequest::token(t.clone()).initial_device_display_name("TV"))
        .await
        .unwrap();
    assert_eq!(r.user_id, "@alice:localhost");
    let again = anon
        .login_request(LoginRequest::token(t))
        .await
        .unwrap_err();
    let m = again.matrix().unwrap();
    assert_eq!(
        (m.status, &m.errcode),
        (403, &ErrorCode::Forbidden),
        "single use"
    );
    let bogus = anon
        .login_request(LoginRequest::token("ghlt_nope"))
        .await
        .unwrap_err();
    assert_eq!(bogus.errcode(), Some(&ErrorCode::Forbidden));
}

#[tokio::test]
async fn authenticate_runs_the_whole_loop_and_gives_up_cleanly() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let client = logged_in(&server, "alice", false).await;
    let other = logged_in(&server, "alice", false).await;
    let target = other.session().unwrap().device_id.unwrap();
    // Giving up: the server's challenge comes back as the error.
    let c = client.clone();
    let t = target.clone();
    let gave_up = gatehouse_client::authenticate(
        move |auth| {
            let (c, t) = (c.clone(), t.clone());
            Box::pin(async move { c.delete_device(&t, auth).await.map(|()| json!({})) })
        },
        |_, _, _| Box::pin(async { None }),
    )
    .await
    .unwrap_err();
    assert!(
        gave_up.matrix().is_some_and(|m| m.is_uia_challenge()),
        "{gave_up:?}"
    );
    // Answering the password stage deletes the device.
    let c = client.clone();
    gatehouse_client::authenticate(
        move |auth| {
            let (c, t) = (c.clone(), target.clone());
            Box::pin(async move { c.delete_device(&t, auth).await.map(|()| json!({})) })
        },
        |stage, _, session| {
            assert!(session.is_some());
            Box::pin(async move { Some(json!({"type": stage, "identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw"})) })
        },
    )
    .await
    .unwrap();
    assert!(matches!(other.whoami().await, Err(Error::LoggedOut(_))));
}
