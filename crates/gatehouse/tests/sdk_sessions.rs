//! The SDK's session handling against a real Gatehouse: a persisted session
//! shared by clients (as processes share a profile) across refreshes and
//! expiries, the session listener told of a logout, typed errors of locked
//! and suspended accounts, and typed InteractiveAuth on real requests.

mod common;

use std::time::Duration;

use common::Server;
use common::shared_session::{SharedStore, two_clients_take_turns_refreshing};
use gatehouse_client::{
    AuthDict, AuthInputs, AuthType, Client, Error, ErrorCode, InteractiveAuth, LoginRequest,
    UserIdentifier,
};
use serde_json::{Value, json};

async fn login(server: &Server, user: &str) -> gatehouse_client::Session {
    Client::builder(&server.base)
        .build()
        .unwrap()
        .login_request(LoginRequest::password(UserIdentifier::user(user), "pw").refresh_token(true))
        .await
        .unwrap()
        .session()
}

#[tokio::test]
async fn clients_sharing_a_persisted_session_keep_working() {
    let server = Server::start(&[("GATEHOUSE_TOKENS__ACCESS_TOKEN_LIFETIME_MS", "1000")]);
    server.create_user("pia", "pw", &[]);
    two_clients_take_turns_refreshing(&server.base, login(&server, "pia").await).await;

    // Expiries: both refresh at once, one refresh serves both.
    let store = SharedStore::new(login(&server, "pia").await);
    let (a, b) = (store.client(&server.base), store.client(&server.base));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (x, y) = tokio::join!(a.whoami(), b.whoami());
        x.unwrap();
        y.unwrap();
    }
    let refreshes = store.saved.lock().unwrap().len();
    assert!(
        (3..=4).contains(&refreshes),
        "{refreshes} refreshes for 3 expiries"
    );

    // A logout through one ends it for the other, and the store is told.
    a.logout().await.unwrap();
    assert_eq!(store.saved.lock().unwrap().last(), Some(&None));
    assert!(store.session.lock().unwrap().is_none());
    assert!(matches!(b.whoami().await, Err(Error::NotLoggedIn)));
}

#[tokio::test]
async fn the_listener_hears_of_a_logout_and_errors_are_typed() {
    let server = Server::start(&[]);
    server.create_user("lex", "pw", &[]);
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = heard.clone();
    let client = Client::builder(&server.base)
        .on_session_changed(move |s| record.lock().unwrap().push(s.is_some()))
        .build()
        .unwrap();
    client
        .login(LoginRequest::password(UserIdentifier::user("lex"), "pw"))
        .await
        .unwrap();
    // Locked: M_USER_LOCKED, typed, with soft_logout.
    assert!(server.admin(&["user", "lock", "lex"]).status.success());
    tokio::time::sleep(Duration::from_millis(2100)).await; // the token cache
    let locked = client.whoami().await.unwrap_err();
    assert_eq!(locked.errcode(), Some(&ErrorCode::UserLocked), "{locked:?}");
    assert!(locked.matrix().unwrap().soft_logout);
    assert!(
        server
            .admin(&["user", "lock", "lex", "--unlock"])
            .status
            .success()
    );
    // Suspended: removing a contact address is refused, typed.
    assert!(server.admin(&["user", "suspend", "lex"]).status.success());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let suspended = client
        .delete_threepid("email", "lex@example.org")
        .await
        .unwrap_err();
    assert_eq!(
        suspended.errcode(),
        Some(&ErrorCode::UserSuspended),
        "{suspended:?}"
    );
    client.logout().await.unwrap();
    assert_eq!(
        *heard.lock().unwrap(),
        vec![true, false],
        "login, then logout"
    );
}

/// InteractiveAuth typed end to end: the response's own type, AuthDict
/// answers, the stage enum, and the registration token input.
#[tokio::test]
async fn typed_interactive_auth_on_real_requests() {
    let server = Server::start(&[
        ("GATEHOUSE_REGISTRATION__ENABLED", "true"),
        (
            "GATEHOUSE_REGISTRATION__FLOWS",
            r#"[["m.login.registration_token"]]"#,
        ),
    ]);
    server.create_registration_token("sdk-token");
    let anon = Client::builder(&server.base).build().unwrap();
    // The token given as input: nothing is asked of the application.
    let c = anon.clone();
    let ia: InteractiveAuth<Value> = InteractiveAuth::builder(
        move |auth, _| {
            let c = c.clone();
            Box::pin(async move {
                c.register(json!({"username": "ty", "password": "pw"}), auth)
                    .await
            })
        },
        |stage, _| panic!("asked for {stage}"),
    )
    .inputs(AuthInputs {
        registration_token: Some("sdk-token".into()),
        ..AuthInputs::default()
    })
    .build();
    let registered = ia.attempt_auth().await.unwrap();
    assert_eq!(registered["user_id"], "@ty:localhost");

    // Deleting a device: InteractiveAuth<()>, answered with AuthDict.
    let client = Client::builder(&server.base).build().unwrap();
    client
        .login(LoginRequest::password(UserIdentifier::user("ty"), "pw"))
        .await
        .unwrap();
    let other = anon
        .login_request(LoginRequest::password(UserIdentifier::user("ty"), "pw"))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (c, device) = (client.clone(), other.device_id.clone().unwrap());
    let ia: InteractiveAuth<()> = InteractiveAuth::builder(
        move |auth, _| {
            let (c, d) = (c.clone(), device.clone());
            Box::pin(async move { c.delete_device(&d, auth).await })
        },
        move |stage, status| {
            let _ = tx.send((stage.clone(), status.errcode.clone()));
        },
    )
    .build();
    let driver = ia.clone();
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = asked.clone();
    // The driver is held by the task itself: it is aborted at the end.
    let answers = tokio::spawn(async move {
        let me = UserIdentifier::user("ty");
        while let Some((stage, errcode)) = rx.recv().await {
            record
                .lock()
                .unwrap()
                .push((stage.clone(), errcode.clone()));
            assert_eq!(stage, AuthType::Password);
            // A wrong password first: the stage comes back with the error.
            let pw = if errcode.is_none() { "wrong" } else { "pw" };
            driver
                .submit_auth_dict(AuthDict::password(&me, pw), false)
                .await
                .unwrap();
        }
    });
    let () = tokio::time::timeout(Duration::from_secs(20), ia.attempt_auth())
        .await
        .unwrap()
        .unwrap();
    answers.abort();
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked[0], (AuthType::Password, None));
    assert_eq!(asked[1], (AuthType::Password, Some("M_FORBIDDEN".into())));
    let after = client.devices().await.unwrap();
    assert!(
        !after
            .iter()
            .any(|d| Some(&d.device_id) == other.device_id.as_ref())
    );
    // A submission after the end is an error, not silence.
    let late = InteractiveAuth::<()>::builder(|_, _| Box::pin(async { Ok(()) }), |_, _| {})
        .build()
        .submit_auth_dict(AuthDict::dummy(), false)
        .await;
    assert!(matches!(late, Err(Error::UiaNotRunning)));
}
