//! The state machine over recorded 401 bodies, with a scripted server.
use super::*;
use crate::error::MatrixError;
use std::collections::VecDeque;

fn flows(f: &[&[&str]]) -> Vec<Vec<String>> {
    f.iter()
        .map(|s| s.iter().map(|x| (*x).to_owned()).collect())
        .collect()
}

#[test]
fn selection_prefers_fewest_supported_stages_and_matches_inputs() {
    let f = flows(&[
        &["m.login.recaptcha", "m.login.terms", DUMMY],
        &[EMAIL],
        &["m.login.password"],
    ]);
    assert_eq!(
        choose_flow(&f, false, false, None).unwrap(),
        vec!["m.login.password"]
    );
    assert_eq!(choose_flow(&f, true, false, None).unwrap(), vec![EMAIL]);
    let supported = vec![
        DUMMY.to_owned(),
        "m.login.terms".to_owned(),
        "m.login.recaptcha".to_owned(),
    ];
    assert_eq!(
        choose_flow(&f, false, false, Some(&supported)).unwrap(),
        f[0]
    );
    match choose_flow(&f, false, true, None) {
        Err(Error::NoAuthFlowFound {
            required_stages,
            flows,
        }) => {
            assert_eq!(required_stages, vec![MSISDN]);
            assert_eq!(flows.len(), 3);
        }
        other => panic!("{other:?}"),
    }
}

fn challenge(body: Value) -> Result<Value, Error> {
    Err(Error::Matrix(
        MatrixError::from_response(401, None, body).unwrap(),
    ))
}

type Seen = Arc<Mutex<Vec<Option<Value>>>>;
type Stages = Arc<Mutex<Vec<(String, StageStatus)>>>;

/// An InteractiveAuth whose `do_request` answers from a script and
/// records the auth dicts it was given.
fn scripted(answers: Vec<Result<Value, Error>>) -> (InteractiveAuthBuilder, Seen, Stages) {
    let script = Arc::new(Mutex::new(VecDeque::from(answers)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stages = Arc::new(Mutex::new(Vec::new()));
    let (s2, st2) = (seen.clone(), stages.clone());
    let builder = InteractiveAuth::builder(
        move |auth, _bg| {
            s2.lock().unwrap().push(auth);
            let next = script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Err(Error::NotLoggedIn));
            Box::pin(async move { next })
        },
        move |stage, status| {
            st2.lock()
                .unwrap()
                .push((stage.as_str().to_owned(), status.clone()))
        },
    );
    (builder, seen, stages)
}

#[tokio::test]
async fn dummy_is_submitted_automatically() {
    let (b, seen, stages) = scripted(vec![
        challenge(json!({"flows": [{"stages": [DUMMY]}], "session": "S"})),
        Ok(json!({"user_id": "@a:hs"})),
    ]);
    let ia = b.build();
    assert_eq!(
        ia.attempt_auth().await.unwrap(),
        json!({"user_id": "@a:hs"})
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0], None);
    assert_eq!(seen[1], Some(json!({"type": DUMMY, "session": "S"})));
    assert!(stages.lock().unwrap().is_empty());
}

#[tokio::test]
async fn errors_inside_a_stage_reach_state_updated_and_the_session_is_kept() {
    let (b, seen, stages) = scripted(vec![
        challenge(
            json!({"flows": [{"stages": ["m.login.password"]}], "session": "S", "params": {"m.login.password": {"x": 1}}}),
        ),
        challenge(
            json!({"flows": [{"stages": ["m.login.password"]}], "session": "S", "errcode": "M_FORBIDDEN", "error": "Invalid password"}),
        ),
        Ok(json!({})),
    ]);
    let ia = b.build();
    let runner = ia.clone();
    let handle = tokio::spawn(async move { runner.attempt_auth().await });
    tokio::task::yield_now().await;
    while stages.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    assert_eq!(ia.stage_params("m.login.password"), Some(json!({"x": 1})));
    assert_eq!(ia.session_id().as_deref(), Some("S"));
    ia.submit_auth_dict(
        json!({"type": "m.login.password", "password": "bad"}),
        false,
    )
    .await
    .unwrap();
    {
        let st = stages.lock().unwrap();
        assert_eq!(st[1].0, "m.login.password");
        assert_eq!(st[1].1.errcode.as_deref(), Some("M_FORBIDDEN"));
    }
    ia.submit_auth_dict(
        json!({"type": "m.login.password", "password": "good"}),
        false,
    )
    .await
    .unwrap();
    assert_eq!(handle.await.unwrap().unwrap(), json!({}));
    assert_eq!(
        seen.lock().unwrap()[2].as_ref().unwrap()["session"],
        "S",
        "the session is added"
    );
}

#[tokio::test]
async fn a_401_without_flows_is_an_error() {
    let e = MatrixError::from_response(
        401,
        None,
        json!({"errcode": "M_UNKNOWN_TOKEN", "error": "x"}),
    )
    .unwrap();
    let (b, _, _) = scripted(vec![Err(Error::Matrix(e))]);
    let err = b.build().attempt_auth().await.unwrap_err();
    assert_eq!(
        err.errcode().map(|c| c.as_str().to_owned()).as_deref(),
        Some("M_UNKNOWN_TOKEN")
    );
}

#[tokio::test]
async fn unknown_stages_are_handed_to_the_application() {
    let (b, _, stages) = scripted(vec![challenge(
        json!({"flows": [{"stages": ["org.example.custom"]}], "session": "S"}),
    )]);
    let ia = b.build();
    let runner = ia.clone();
    tokio::spawn(async move { runner.attempt_auth().await });
    while stages.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    assert_eq!(stages.lock().unwrap()[0].0, "org.example.custom");
}

#[tokio::test]
async fn background_failures_are_quiet_and_poll_before_start_does_nothing() {
    let (b, seen, stages) = scripted(vec![
        challenge(json!({"flows": [{"stages": [EMAIL]}], "session": "S"})),
        Err(Error::Http {
            status: 502,
            body: "bad gateway".into(),
        }),
        Ok(json!({"done": true})),
    ]);
    let ia = b.email_sid("sid-1").client_secret("cs").build();
    ia.poll().await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "poll before start sends nothing"
    );
    let runner = ia.clone();
    let handle = tokio::spawn(async move { runner.attempt_auth().await });
    while stages.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        stages.lock().unwrap()[0].1.email_sid.as_deref(),
        Some("sid-1")
    );
    ia.poll().await; // 502 in the background: not fatal
    ia.poll().await;
    assert_eq!(handle.await.unwrap().unwrap(), json!({"done": true}));
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[1].as_ref().unwrap()["threepid_creds"],
        json!({"sid": "sid-1", "client_secret": "cs"})
    );
}

#[tokio::test]
async fn no_flow_for_the_inputs_is_no_auth_flow_found() {
    let (b, _, _) = scripted(vec![challenge(
        json!({"flows": [{"stages": [DUMMY]}], "session": "S"}),
    )]);
    let ia = b
        .inputs(AuthInputs {
            email_address: Some("a@example.org".into()),
            ..AuthInputs::default()
        })
        .build();
    assert!(matches!(
        ia.attempt_auth().await,
        Err(Error::NoAuthFlowFound { .. })
    ));
}

#[tokio::test]
async fn resuming_sends_the_stored_session_first() {
    let (b, seen, _) = scripted(vec![Ok(json!({"ok": 1}))]);
    let ia = b.session_id("OLD").build();
    assert_eq!(ia.attempt_auth().await.unwrap(), json!({"ok": 1}));
    assert_eq!(seen.lock().unwrap()[0], Some(json!({"session": "OLD"})));
}

#[tokio::test]
async fn a_challenge_with_every_stage_completed_ends_instead_of_hanging() {
    let (b, _, stages) = scripted(vec![challenge(
        json!({"flows": [{"stages": ["m.login.password"]}], "session": "S", "completed": ["m.login.password"]}),
    )]);
    let ia = b.build();
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), ia.attempt_auth())
        .await
        .expect("no hang");
    assert!(
        matches!(result, Err(Error::InvalidResponse(_))),
        "{result:?}"
    );
    assert!(stages.lock().unwrap().is_empty());
}

#[tokio::test]
async fn submissions_outside_attempt_auth_are_errors_and_poll_sends_the_session() {
    let (b, seen, stages) = scripted(vec![
        challenge(json!({"flows": [{"stages": ["m.login.recaptcha"]}], "session": "S"})),
        Ok(json!({"done": true})),
    ]);
    let ia = b.session_id("S").build();
    let early = ia.submit_auth_dict(AuthDict::recaptcha("r"), false).await;
    assert!(matches!(early, Err(Error::UiaNotRunning)), "{early:?}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing sent before attempt_auth"
    );
    let runner = ia.clone();
    let handle = tokio::spawn(async move { runner.attempt_auth().await });
    while stages.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    // Completed in a fallback page elsewhere: poll asks with the session only.
    ia.poll().await;
    assert_eq!(handle.await.unwrap().unwrap(), json!({"done": true}));
    assert_eq!(seen.lock().unwrap()[1], Some(json!({"session": "S"})));
}

#[tokio::test]
async fn a_refused_email_token_request_fails_the_attempt() {
    let (b, _, stages) = scripted(vec![challenge(
        json!({"flows": [{"stages": ["m.login.terms", EMAIL]}], "session": "S"}),
    )]);
    let ia = b
        .inputs(AuthInputs {
            email_address: Some("taken@example.org".into()),
            ..AuthInputs::default()
        })
        .request_email_token(|_, _, _, _| {
            Box::pin(async {
                Err(Error::Matrix(
                    MatrixError::from_response(
                        400,
                        None,
                        json!({"errcode": "M_THREEPID_IN_USE", "error": "in use"}),
                    )
                    .unwrap(),
                ))
            })
        })
        .build();
    match ia.attempt_auth().await {
        Err(Error::Matrix(e)) => assert_eq!(e.errcode.as_str(), "M_THREEPID_IN_USE"),
        other => panic!("{other:?}"),
    }
    assert!(
        stages.lock().unwrap().is_empty(),
        "asked for as soon as the flow was chosen, before the terms stage"
    );
}

/// A typed response: `attempt_auth` gives the request's own type.
#[tokio::test]
async fn the_result_has_the_requests_own_type() {
    #[derive(Debug, PartialEq)]
    struct Registered(String);
    let script = Arc::new(Mutex::new(VecDeque::from(vec![
        challenge(json!({"flows": [{"stages": [DUMMY]}], "session": "S"})).map(|_| unreachable!()),
        Ok(Registered("@a:hs".into())),
    ])));
    let ia: InteractiveAuth<Registered> = InteractiveAuth::builder(
        move |_auth, _bg| {
            let next = script.lock().unwrap().pop_front().unwrap();
            Box::pin(async move { next })
        },
        |_, _| {},
    )
    .build();
    assert_eq!(ia.attempt_auth().await.unwrap(), Registered("@a:hs".into()));
}

/// Some servers answer a failed stage with a 401 that has no flows: the
/// known flows, session and completed stages are kept, and the stage is
/// asked again with the error.
#[tokio::test]
async fn a_401_without_flows_keeps_the_known_flows() {
    let (b, seen, stages) = scripted(vec![
        challenge(json!({"flows": [{"stages": ["m.login.password"]}], "session": "S"})),
        Err(Error::Matrix(
            MatrixError::from_response(
                401,
                None,
                json!({"errcode": "M_FORBIDDEN", "error": "Wrong password"}),
            )
            .unwrap(),
        )),
        Ok(json!({"ok": true})),
    ]);
    let ia = b.build();
    let runner = ia.clone();
    let handle = tokio::spawn(async move { runner.attempt_auth().await });
    while stages.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    let pw = AuthDict::password(&crate::login::UserIdentifier::user("a"), "bad");
    ia.submit_auth_dict(pw, false).await.unwrap();
    {
        let st = stages.lock().unwrap();
        assert_eq!(st.len(), 2, "asked again, not failed: {st:?}");
        assert_eq!(st[1].0, "m.login.password");
        assert_eq!(st[1].1.errcode.as_deref(), Some("M_FORBIDDEN"));
    }
    assert_eq!(ia.session_id().as_deref(), Some("S"));
    assert_eq!(ia.flows(), flows(&[&["m.login.password"]]));
    let pw = AuthDict::password(&crate::login::UserIdentifier::user("a"), "good");
    ia.submit_auth_dict(pw, false).await.unwrap();
    assert_eq!(handle.await.unwrap().unwrap(), json!({"ok": true}));
    assert_eq!(seen.lock().unwrap()[2].as_ref().unwrap()["session"], "S");
}

/// The `registration_token` input answers that stage by itself, once.
#[tokio::test]
async fn a_registration_token_given_as_input_is_submitted() {
    let (b, seen, stages) = scripted(vec![
        challenge(json!({"flows": [{"stages": ["m.login.registration_token"]}], "session": "S"})),
        Ok(json!({"user_id": "@a:hs"})),
    ]);
    let ia = b
        .inputs(AuthInputs {
            registration_token: Some("tok-1".into()),
            ..AuthInputs::default()
        })
        .build();
    assert_eq!(
        ia.attempt_auth().await.unwrap(),
        json!({"user_id": "@a:hs"})
    );
    assert!(
        stages.lock().unwrap().is_empty(),
        "nothing asked of the app"
    );
    assert_eq!(
        seen.lock().unwrap()[1],
        Some(json!({"type": "m.login.registration_token", "token": "tok-1", "session": "S"}))
    );
}

/// The email can be sent again (a new send_attempt), and client secrets
/// come from the OS's random source: 32 characters, never the same.
#[tokio::test]
async fn the_email_token_can_be_requested_again() {
    let (b, _, stages) = scripted(vec![challenge(
        json!({"flows": [{"stages": [EMAIL]}], "session": "S"}),
    )]);
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let recorded = attempts.clone();
    let ia = b
        .inputs(AuthInputs {
            email_address: Some("a@example.org".into()),
            ..AuthInputs::default()
        })
        .request_email_token(move |_, secret, attempt, _| {
            recorded.lock().unwrap().push((secret, attempt));
            Box::pin(async move { Ok(format!("sid{attempt}")) })
        })
        .build();
    let runner = ia.clone();
    tokio::spawn(async move { runner.attempt_auth().await });
    while stages.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    ia.resend_email_token().await.unwrap();
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 2);
    assert_eq!((attempts[0].1, attempts[1].1), (1, 2), "a new send_attempt");
    assert_eq!(attempts[0].0, attempts[1].0, "the same client_secret");
    assert_eq!(ia.email_sid().as_deref(), Some("sid2"));
    let secret = ia.client_secret();
    assert_eq!(secret.len(), 32);
    assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric()));
    let other =
        InteractiveAuth::<Value>::builder(|_, _| Box::pin(async { Ok(json!({})) }), |_, _| {})
            .build()
            .client_secret();
    assert_ne!(secret, other);
}
