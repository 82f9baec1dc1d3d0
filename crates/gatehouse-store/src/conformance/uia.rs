//! Conformance checks of registration: UIA sessions, registration tokens,
//! 3PID validations and accepted policies.

use std::sync::Arc;

use gatehouse_core::identifier::{Medium, Threepid};

use super::{alive, h, pair, uid, user};
use crate::{
    ClientSecretHash, NewRegistration, NewSession, NewUser, RegistrationToken, Store, StoreError,
    ThreepidValidation, UiaSessionRecord,
};

pub async fn registration_tokens_count_uses(store: impl Store) {
    let t = RegistrationToken {
        token: "tok".into(),
        uses_allowed: Some(2),
        pending: 0,
        completed: 0,
        expiry: Some(100),
    };
    store.create_registration_token(&t, 1).await.unwrap();
    assert!(matches!(
        store.create_registration_token(&t, 1).await,
        Err(StoreError::TokenExists)
    ));
    assert!(store.reserve_registration_token("tok", 10).await.unwrap());
    assert!(store.reserve_registration_token("tok", 10).await.unwrap());
    assert!(
        !store.reserve_registration_token("tok", 10).await.unwrap(),
        "pending uses count"
    );
    store.release_registration_token("tok").await.unwrap();
    assert!(store.reserve_registration_token("tok", 10).await.unwrap());
    assert!(!store.reserve_registration_token("nope", 10).await.unwrap());
    let got = store.registration_token("tok").await.unwrap().unwrap();
    assert_eq!((got.pending, got.completed), (2, 0));
    assert!(!got.usable(10));
    let late = RegistrationToken {
        token: "late".into(),
        uses_allowed: None,
        pending: 0,
        completed: 0,
        expiry: Some(100),
    };
    store.create_registration_token(&late, 1).await.unwrap();
    assert!(
        !store.reserve_registration_token("late", 100).await.unwrap(),
        "expired"
    );
    assert_eq!(store.registration_tokens().await.unwrap().len(), 2);
    assert!(store.delete_registration_token("late").await.unwrap());
    assert!(!store.delete_registration_token("late").await.unwrap());
}

pub async fn registration_is_atomic(store: impl Store) {
    let t = RegistrationToken {
        token: "tok".into(),
        uses_allowed: Some(1),
        pending: 0,
        completed: 0,
        expiry: None,
    };
    store.create_registration_token(&t, 1).await.unwrap();
    assert!(store.reserve_registration_token("tok", 2).await.unwrap());
    let email = Threepid {
        medium: Medium::Email,
        address: "new@example.org".into(),
    };
    let reg = |local: &str, token: Option<&str>| NewRegistration {
        user: NewUser {
            user_id: uid(local),
            password_hash: Some("$h".into()),
            is_admin: false,
            is_guest: false,
            created_at: 3,
        },
        threepids: vec![email.clone()],
        registration_token: token.map(str::to_owned),
        session: Some(NewSession {
            user_id: uid(local),
            device_id: "D".into(),
            initial_display_name: None,
            tokens: pair(&format!("at-{local}"), None),
            now: 3,
        }),
        upstream_link: None,
    };
    store.register(reg("newbie", Some("tok"))).await.unwrap();
    assert!(alive(&store, "at-newbie").await);
    assert_eq!(
        store
            .user_by_threepid(&email)
            .await
            .unwrap()
            .unwrap()
            .user_id,
        uid("newbie")
    );
    let t = store.registration_token("tok").await.unwrap().unwrap();
    assert_eq!((t.pending, t.completed), (0, 1));
    // The email is taken: nothing of the second registration remains.
    assert!(matches!(
        store.register(reg("second", None)).await,
        Err(StoreError::ThreepidInUse)
    ));
    assert!(store.user(&uid("second")).await.unwrap().is_none());
    assert!(!alive(&store, "at-second").await);
    // A token with no reserved use cannot complete a registration.
    let mut third = reg("third", Some("tok"));
    third.threepids.clear();
    assert!(matches!(
        store.register(third).await,
        Err(StoreError::TokenUnusable)
    ));
    assert!(store.user(&uid("third")).await.unwrap().is_none());
}

pub async fn uia_sessions_are_consumed_once<S: Store>(store: Arc<S>) {
    let binding = gatehouse_core::uia::Binding::new(
        Some("@a:test"),
        "POST",
        "/x",
        &serde_json::json!({"a": 1}),
    );
    let session = UiaSessionRecord {
        id: "sess".into(),
        binding: binding.clone(),
        completed: vec![],
        data: serde_json::json!({"registration_token": "tok"}),
        created_at: 1,
        expires_at: 100,
        consumed: false,
    };
    store.create_uia_session(&session, 1).await.unwrap();
    assert_eq!(store.uia_session("sess").await.unwrap().unwrap(), session);
    assert!(
        store
            .update_uia_session(
                "sess",
                &["m.login.dummy".into()],
                &serde_json::json!({"registration_token": "tok", "x": 1}),
                &[],
                &serde_json::json!({"registration_token": "tok"}),
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .update_uia_session(
                "sess",
                &["m.login.terms".into()],
                &serde_json::json!({"y": 2}),
                &[],
                &serde_json::json!({"registration_token": "tok"}),
            )
            .await
            .unwrap(),
        "a concurrent request changed it first: the stale update loses"
    );
    let got = store.uia_session("sess").await.unwrap().unwrap();
    assert_eq!(got.completed, vec!["m.login.dummy".to_owned()]);
    assert_eq!(got.binding, binding);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.consume_uia_session("sess").await.unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1, "exactly one concurrent completion wins");
    assert!(
        !store
            .update_uia_session(
                "sess",
                &[],
                &serde_json::json!({}),
                &["m.login.dummy".into()],
                &serde_json::json!({"registration_token": "tok", "x": 1}),
            )
            .await
            .unwrap(),
        "a consumed session cannot change"
    );
    assert!(store.uia_session("sess").await.unwrap().unwrap().consumed);
    // Creating a session later expires old ones, releasing reserved token uses.
    let t = RegistrationToken {
        token: "tok".into(),
        uses_allowed: Some(1),
        pending: 0,
        completed: 0,
        expiry: None,
    };
    store.create_registration_token(&t, 1).await.unwrap();
    assert!(store.reserve_registration_token("tok", 1).await.unwrap());
    let pending = UiaSessionRecord {
        id: "p".into(),
        consumed: false,
        ..session.clone()
    };
    store.create_uia_session(&pending, 2).await.unwrap();
    let next = UiaSessionRecord {
        id: "q".into(),
        data: serde_json::json!({}),
        created_at: 200,
        expires_at: 300,
        ..session
    };
    store.create_uia_session(&next, 200).await.unwrap();
    assert!(
        store.uia_session("p").await.unwrap().is_none(),
        "expired sessions are removed"
    );
    assert_eq!(
        store
            .registration_token("tok")
            .await
            .unwrap()
            .unwrap()
            .pending,
        0,
        "and their reserved uses released"
    );
    // A released session can be consumed again, once.
    assert!(store.consume_uia_session("q").await.unwrap());
    assert!(!store.consume_uia_session("q").await.unwrap());
    store.release_uia_session("q").await.unwrap();
    assert!(!store.uia_session("q").await.unwrap().unwrap().consumed);
    assert!(store.consume_uia_session("q").await.unwrap());
}

/// A registration whose session was consumed but which never finished (the
/// server crashed, the client went away) gives its token use back when the
/// session expires; one that finished keeps it completed, not released.
pub async fn token_uses_of_cut_off_registrations_come_back(store: impl Store) {
    let t = RegistrationToken {
        token: "tok".into(),
        uses_allowed: Some(2),
        pending: 0,
        completed: 0,
        expiry: None,
    };
    store.create_registration_token(&t, 1).await.unwrap();
    let session = |id: &str| UiaSessionRecord {
        id: id.into(),
        binding: gatehouse_core::uia::Binding::new(
            None,
            "POST",
            "/_matrix/client/v3/register",
            &serde_json::json!({}),
        ),
        completed: vec!["m.login.registration_token".into()],
        data: serde_json::json!({"registration_token": "tok"}),
        created_at: 1,
        expires_at: 100,
        consumed: false,
    };
    for id in ["finished", "cut-off"] {
        assert!(store.reserve_registration_token("tok", 1).await.unwrap());
        store.create_uia_session(&session(id), 1).await.unwrap();
        assert!(store.consume_uia_session(id).await.unwrap());
    }
    // One registration finishes; the other is cut off after its consume.
    store
        .register(NewRegistration {
            user: NewUser {
                user_id: uid("finished"),
                password_hash: None,
                is_admin: false,
                is_guest: false,
                created_at: 2,
            },
            threepids: Vec::new(),
            registration_token: Some("tok".into()),
            session: None,
            upstream_link: None,
        })
        .await
        .unwrap();
    let now = store.registration_token("tok").await.unwrap().unwrap();
    assert_eq!((now.pending, now.completed), (1, 1));
    // Both sessions expire; the next one created sweeps them.
    let later = UiaSessionRecord {
        id: "later".into(),
        data: serde_json::json!({}),
        created_at: 200,
        expires_at: 300,
        ..session("x")
    };
    store.create_uia_session(&later, 200).await.unwrap();
    let after = store.registration_token("tok").await.unwrap().unwrap();
    assert_eq!(
        (after.pending, after.completed),
        (0, 1),
        "the cut-off use came back, the finished one stayed completed"
    );
}

pub async fn accepted_policies_keep_the_latest_version(store: impl Store) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    assert!(store.accepted_policies(&alice).await.unwrap().is_empty());
    let v = |p: &str, v: &str| (p.to_owned(), v.to_owned());
    store
        .accept_policies(&alice, &[v("privacy", "1"), v("tos", "1")], 5)
        .await
        .unwrap();
    store
        .accept_policies(&alice, &[v("privacy", "2")], 6)
        .await
        .unwrap();
    assert_eq!(
        store.accepted_policies(&alice).await.unwrap(),
        vec![v("privacy", "2"), v("tos", "1")]
    );
    assert!(store.accepted_policies(&bob).await.unwrap().is_empty());
}

pub async fn threepid_validations_are_idempotent(store: impl Store) {
    let tp = Threepid {
        medium: Medium::Email,
        address: "a@example.org".into(),
    };
    let v = ThreepidValidation {
        sid: "sid1".into(),
        client_secret: ClientSecretHash::of("secret"),
        threepid: tp.clone(),
        token_hash: h("t1"),
        send_attempt: 1,
        validated_at: None,
        created_at: 1,
        expires_at: 100,
        next_link: Some("https://example.org/one".into()),
        failed_attempts: 0,
    };
    assert_eq!(
        store.upsert_threepid_validation(&v).await.unwrap().sid,
        "sid1"
    );
    let again = ThreepidValidation {
        sid: "sid2".into(),
        token_hash: h("t2"),
        ..v.clone()
    };
    let got = store.upsert_threepid_validation(&again).await.unwrap();
    assert_eq!(
        (got.sid.as_str(), got.token_hash),
        ("sid1", h("t1")),
        "same send_attempt: same session, nothing new"
    );
    assert_eq!(
        store
            .threepid_validation("sid1")
            .await
            .unwrap()
            .unwrap()
            .next_link
            .as_deref(),
        Some("https://example.org/one"),
        "next_link kept"
    );
    // Wrong secrets count (the client secret must match too); after three
    // (the limit given), even the right one is refused.
    for (secret, token) in [("secret", "wrong"), ("other", "t1"), ("secret", "nope")] {
        assert!(
            store
                .redeem_threepid_secret("sid1", &ClientSecretHash::of(secret), &h(token), 10, 3)
                .await
                .unwrap()
                .is_none()
        );
    }
    assert_eq!(
        store
            .threepid_validation("sid1")
            .await
            .unwrap()
            .unwrap()
            .failed_attempts,
        3
    );
    assert!(
        store
            .redeem_threepid_secret("sid1", &ClientSecretHash::of("secret"), &h("t1"), 10, 3)
            .await
            .unwrap()
            .is_none(),
        "dead after three failures"
    );
    assert!(
        store
            .redeem_threepid_secret("nope", &ClientSecretHash::of("secret"), &h("t1"), 10, 3)
            .await
            .unwrap()
            .is_none()
    );
    let next = ThreepidValidation {
        sid: "sid3".into(),
        token_hash: h("t3"),
        send_attempt: 2,
        next_link: None,
        ..v.clone()
    };
    let got = store.upsert_threepid_validation(&next).await.unwrap();
    assert_eq!(
        (got.sid.as_str(), got.token_hash),
        ("sid1", h("t3")),
        "new attempt: same session, new token"
    );
    assert_eq!(
        store
            .threepid_validation("sid1")
            .await
            .unwrap()
            .unwrap()
            .next_link,
        None,
        "the newest attempt's next_link wins"
    );
    assert_eq!(
        store
            .threepid_validation("sid1")
            .await
            .unwrap()
            .unwrap()
            .failed_attempts,
        0,
        "a new secret resets the failures"
    );
    for now in [50, 60] {
        let done = store
            .redeem_threepid_secret("sid1", &ClientSecretHash::of("secret"), &h("t3"), now, 3)
            .await
            .unwrap()
            .expect("the new secret validates");
        assert_eq!(done.validated_at, Some(50), "the first time is kept");
    }
    assert!(
        store
            .redeem_threepid_secret("sid1", &ClientSecretHash::of("secret"), &h("t3"), 100, 3)
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
}
