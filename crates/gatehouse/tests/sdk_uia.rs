//! InteractiveAuth through the SDK against a real Gatehouse: registration
//! (dummy, email with polling), password change, device deletion and
//! deactivation under UIA, fallback URLs and resumed sessions, the
//! busy-changed hook and the `authenticate` loop.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::sdk::logged_in;
use common::{Server, Smtp, link_in};
use gatehouse_client::{
    AuthInputs, Client, Error, ErrorCode, InteractiveAuth, LoginRequest, StageStatus, TokenPurpose,
    UserIdentifier,
};
use serde_json::{Value, json};

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
    server.create_registration_token("resume-me");
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
