//! The conformance suite every [`Store`] backend runs.
//!
//! Each check gets a fresh, empty store from the factory and panics with a
//! message naming the broken promise. Backends call [`run_all`] from their
//! own integration test.

use std::future::Future;
use std::sync::Arc;

use gatehouse_core::identifier::{Medium, Threepid};
use gatehouse_core::refresh::{Endpoint, Rejection};
use gatehouse_core::token::{self, TokenHash};
use gatehouse_core::user_id::UserId;

mod delegation;

use crate::{
    ClientSecretHash, EndSessions, NewRegistration, NewSession, NewTokenPair, NewUser,
    RegistrationToken, Store, StoreError, ThreepidValidation, UiaSessionRecord,
};

/// Runs every check against fresh stores made by `factory`.
pub async fn run_all<S, F, Fut>(factory: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    users_are_unique_and_found(factory().await).await;
    threepids_resolve_to_their_owner(factory().await).await;
    sessions_create_devices_and_relogin_revokes(factory().await).await;
    rotation_keeps_old_token_until_child_used(factory().await).await;
    rotation_by_access_token_use(factory().await).await;
    a_late_rotation_clean_up_touches_no_other_session(factory().await).await;
    pending_children_are_bounded(factory().await).await;
    legacy_rotation_is_single_use(factory().await).await;
    concurrent_refreshes_all_hand_out_live_tokens(Arc::new(factory().await)).await;
    expired_refresh_tokens_are_refused(factory().await).await;
    logout_and_logout_all(factory().await).await;
    deactivation_removes_everything_but_the_name(factory().await).await;
    devices_are_managed(factory().await).await;
    registration_tokens_count_uses(factory().await).await;
    registration_is_atomic(factory().await).await;
    uia_sessions_are_consumed_once(Arc::new(factory().await)).await;
    token_uses_of_cut_off_registrations_come_back(factory().await).await;
    accepted_policies_keep_the_latest_version(factory().await).await;
    threepid_validations_are_idempotent(factory().await).await;
    expired_records_are_pruned(factory().await).await;
    cross_signing_keys_are_replaced(factory().await).await;
    login_tokens_are_single_use(factory().await).await;
    login_tokens_end_with_the_password_and_logout_all(factory().await).await;
    delegation::imports_are_idempotent(factory().await).await;
    delegation::homeserver_syncs_complete_only_their_version(factory().await).await;
    delegation::web_sessions_expire_and_end(factory().await).await;
    delegation::admin_and_reactivation(factory().await).await;
}

async fn login_tokens_are_single_use(store: impl Store) {
    let alice = user(&store, "alice").await;
    store
        .create_login_token(&h("lt"), &alice, 100, 1)
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            store.login_token_owner(&h("lt"), 50).await.unwrap(),
            Some(alice.clone()),
            "looking does not spend it"
        );
    }
    assert_eq!(store.login_token_owner(&h("lt"), 100).await.unwrap(), None);
    assert_eq!(
        store.consume_login_token(&h("lt"), 50).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.login_token_owner(&h("lt"), 50).await.unwrap(), None);
    assert_eq!(
        store.consume_login_token(&h("lt"), 50).await.unwrap(),
        None,
        "used up"
    );
    store
        .create_login_token(&h("old"), &alice, 100, 1)
        .await
        .unwrap();
    assert_eq!(
        store.consume_login_token(&h("old"), 100).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        store.consume_login_token(&h("never"), 1).await.unwrap(),
        None
    );
}

async fn login_tokens_end_with_the_password_and_logout_all(store: impl Store) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let mint = |name: &'static str, who: &UserId| {
        let who = who.clone();
        let store = &store;
        async move {
            store
                .create_login_token(&h(name), &who, 100, 1)
                .await
                .unwrap();
        }
    };
    let usable = |name: &'static str| {
        let store = &store;
        async move {
            store
                .login_token_owner(&h(name), 50)
                .await
                .unwrap()
                .is_some()
        }
    };
    mint("bob's", &bob).await;
    // Re-hashing the same password is no change: tokens stay.
    mint("kept", &alice).await;
    store
        .upgrade_password_hash(&alice, "$hash", "$stronger")
        .await
        .unwrap();
    assert!(usable("kept").await, "an upgraded hash keeps login tokens");
    // A password change ends them, whichever sessions it keeps.
    for (i, sessions) in [
        EndSessions::Keep,
        EndSessions::AllBut("A".into()),
        EndSessions::All,
    ]
    .into_iter()
    .enumerate()
    {
        mint("before", &alice).await;
        store
            .set_password_hash(&alice, &format!("$changed{i}"), sessions.clone())
            .await
            .unwrap();
        assert!(
            !usable("before").await,
            "a login token minted before a password change ({sessions:?}) is dead"
        );
        assert_eq!(
            store.consume_login_token(&h("before"), 50).await.unwrap(),
            None
        );
    }
    assert!(!usable("kept").await);
    // So does logout from every device.
    mint("before logout", &alice).await;
    store.delete_all_devices(&alice).await.unwrap();
    assert_eq!(
        store
            .consume_login_token(&h("before logout"), 50)
            .await
            .unwrap(),
        None,
        "a login token minted before /logout/all is dead"
    );
    assert!(
        usable("bob's").await,
        "another user's login tokens are untouched"
    );
}

async fn devices_are_managed(store: impl Store) {
    let alice = user(&store, "alice").await;
    for (d, t) in [("A", "a"), ("B", "b"), ("C", "c")] {
        login(&store, &alice, d, t, None).await;
    }
    assert!(
        store
            .rename_device(&alice, "A", Some("Laptop"))
            .await
            .unwrap()
    );
    assert!(!store.rename_device(&alice, "Z", Some("x")).await.unwrap());
    assert_eq!(
        store
            .device(&alice, "A")
            .await
            .unwrap()
            .unwrap()
            .display_name
            .as_deref(),
        Some("Laptop")
    );
    store
        .touch_device(&alice, "A", "10.1.2.3", 77)
        .await
        .unwrap();
    let a = store.device(&alice, "A").await.unwrap().unwrap();
    assert_eq!(
        (a.last_seen_ip.as_deref(), a.last_seen_at),
        (Some("10.1.2.3"), Some(77))
    );
    let rec = store.access_token(&h("a")).await.unwrap().unwrap();
    assert_eq!(rec.last_seen_at, Some(77));
    store
        .delete_devices(&alice, &["B".into(), "nope".into()])
        .await
        .unwrap();
    assert!(!alive(&store, "b").await);
    // A password change ends the other sessions in the same transaction.
    store
        .set_password_hash(&alice, "$changed", EndSessions::AllBut("A".into()))
        .await
        .unwrap();
    assert!(alive(&store, "a").await && !alive(&store, "c").await);
    assert_eq!(store.devices(&alice).await.unwrap().len(), 1);
    store
        .set_password_hash(&alice, "$reset", EndSessions::All)
        .await
        .unwrap();
    assert!(!alive(&store, "a").await);
    assert!(store.devices(&alice).await.unwrap().is_empty());
}

async fn registration_tokens_count_uses(store: impl Store) {
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

async fn registration_is_atomic(store: impl Store) {
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

async fn uia_sessions_are_consumed_once<S: Store>(store: Arc<S>) {
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
async fn token_uses_of_cut_off_registrations_come_back(store: impl Store) {
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

async fn accepted_policies_keep_the_latest_version(store: impl Store) {
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

async fn expired_records_are_pruned(store: impl Store) {
    const DAY: u64 = 24 * 60 * 60 * 1000;
    let alice = user(&store, "alice").await;
    store
        .upsert_threepid_validation(&ThreepidValidation {
            sid: "old".into(),
            client_secret: ClientSecretHash::of("c"),
            threepid: Threepid {
                medium: Medium::Email,
                address: "a@example.org".into(),
            },
            token_hash: h("t"),
            send_attempt: 1,
            validated_at: None,
            created_at: 1,
            expires_at: 100,
            next_link: None,
            failed_attempts: 0,
        })
        .await
        .unwrap();
    store
        .create_login_token(&h("lt"), &alice, 100, 1)
        .await
        .unwrap();
    store
        .create_registration_token(
            &RegistrationToken {
                token: "tok".into(),
                uses_allowed: Some(1),
                pending: 0,
                completed: 0,
                expiry: None,
            },
            1,
        )
        .await
        .unwrap();
    assert!(store.reserve_registration_token("tok", 1).await.unwrap());
    let session = UiaSessionRecord {
        id: "s".into(),
        binding: gatehouse_core::uia::Binding::new(None, "POST", "/r", &serde_json::json!({})),
        completed: vec![],
        data: serde_json::json!({"registration_token": "tok"}),
        created_at: 1,
        expires_at: 100,
        consumed: false,
    };
    store.create_uia_session(&session, 1).await.unwrap();
    store.prune_expired(50).await.unwrap();
    assert!(
        store.uia_session("s").await.unwrap().is_some(),
        "not expired yet"
    );
    assert!(store.threepid_validation("old").await.unwrap().is_some());
    store.prune_expired(100 + DAY).await.unwrap();
    assert!(store.uia_session("s").await.unwrap().is_none());
    assert_eq!(
        store
            .registration_token("tok")
            .await
            .unwrap()
            .unwrap()
            .pending,
        0,
        "its reserved use is given back"
    );
    assert!(
        store
            .create_login_token(&h("lt2"), &alice, 10 * DAY, 1)
            .await
            .is_ok()
    );
    assert!(
        store
            .login_token_owner(&h("lt"), 50)
            .await
            .unwrap()
            .is_none(),
        "expired token removed"
    );
    assert!(
        store.threepid_validation("old").await.unwrap().is_some(),
        "kept for a day after expiry"
    );
    store.prune_expired(101 + DAY).await.unwrap();
    assert!(store.threepid_validation("old").await.unwrap().is_none());
}

async fn threepid_validations_are_idempotent(store: impl Store) {
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

async fn cross_signing_keys_are_replaced(store: impl Store) {
    let alice = user(&store, "alice").await;
    assert!(store.cross_signing_keys(&alice).await.unwrap().is_none());
    store
        .set_cross_signing_keys(&alice, &serde_json::json!({"master_key": 1}), 1)
        .await
        .unwrap();
    store
        .set_cross_signing_keys(&alice, &serde_json::json!({"master_key": 2}), 2)
        .await
        .unwrap();
    assert_eq!(
        store.cross_signing_keys(&alice).await.unwrap(),
        Some(serde_json::json!({"master_key": 2}))
    );
}

fn uid(local: &str) -> UserId {
    UserId::new(local, "test").expect("valid test user id")
}

fn h(s: &str) -> TokenHash {
    token::hash(s)
}

fn pair(access: &str, refresh: Option<&str>) -> NewTokenPair {
    NewTokenPair {
        access: h(access),
        access_expires_at: None,
        refresh: refresh.map(h),
        refresh_expires_at: None,
    }
}

async fn user(store: &impl Store, local: &str) -> UserId {
    let id = uid(local);
    store
        .create_user(NewUser {
            user_id: id.clone(),
            password_hash: Some("$hash".into()),
            is_admin: false,
            is_guest: false,
            created_at: 1,
        })
        .await
        .expect("create user");
    id
}

async fn login(
    store: &impl Store,
    user: &UserId,
    device: &str,
    access: &str,
    refresh: Option<&str>,
) {
    store
        .create_session(NewSession {
            user_id: user.clone(),
            device_id: device.into(),
            initial_display_name: Some("phone".into()),
            tokens: pair(access, refresh),
            now: 10,
        })
        .await
        .expect("create session");
}

async fn alive(store: &impl Store, access: &str) -> bool {
    store
        .access_token(&h(access))
        .await
        .expect("lookup")
        .is_some()
}

async fn refresh(
    store: &impl Store,
    rt: &str,
    new_at: &str,
    new_rt: &str,
    ep: Endpoint,
) -> Result<(), Rejection> {
    store
        .refresh(&h(rt), ep, pair(new_at, Some(new_rt)), 20)
        .await
        .expect("refresh")
        .map(|_| ())
}

/// Uses an access token the way the server does: first use completes a rotation.
async fn use_token(store: &impl Store, access: &str) -> bool {
    match store.access_token(&h(access)).await.expect("lookup") {
        None => false,
        Some(rec) => {
            if let (Some(parent), Some(with)) = (rec.pending_parent, rec.refresh_id) {
                store
                    .complete_rotation(parent, with)
                    .await
                    .expect("complete rotation");
            }
            true
        }
    }
}

async fn users_are_unique_and_found(store: impl Store) {
    let alice = user(&store, "alice").await;
    let again = store
        .create_user(NewUser {
            user_id: alice.clone(),
            password_hash: None,
            is_admin: true,
            is_guest: false,
            created_at: 2,
        })
        .await;
    assert!(
        matches!(again, Err(StoreError::UserExists)),
        "duplicate user must be refused"
    );
    let rec = store.user(&alice).await.unwrap().expect("user is found");
    assert_eq!(rec.password_hash.as_deref(), Some("$hash"));
    assert!(!rec.deactivated && !rec.is_admin);
    assert!(store.user(&uid("nobody")).await.unwrap().is_none());
    store
        .set_password_hash(&alice, "$new", EndSessions::Keep)
        .await
        .unwrap();
    assert_eq!(
        store
            .user(&alice)
            .await
            .unwrap()
            .unwrap()
            .password_hash
            .as_deref(),
        Some("$new")
    );
    assert!(matches!(
        store
            .set_password_hash(&uid("nobody"), "$x", EndSessions::Keep)
            .await,
        Err(StoreError::NoSuchUser)
    ));
    // An upgrade applies only over the hash that was checked.
    assert!(
        !store
            .upgrade_password_hash(&alice, "$hash", "$upgraded")
            .await
            .unwrap(),
        "the password changed meanwhile: the newer one stays"
    );
    assert!(
        store
            .upgrade_password_hash(&alice, "$new", "$upgraded")
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .user(&alice)
            .await
            .unwrap()
            .unwrap()
            .password_hash
            .as_deref(),
        Some("$upgraded")
    );
    user(&store, "bob").await;
    let all: Vec<_> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.user_id)
        .collect();
    assert_eq!(all, vec![uid("alice"), uid("bob")]);
}

async fn threepids_resolve_to_their_owner(store: impl Store) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let email = Threepid {
        medium: Medium::Email,
        address: "a@example.org".into(),
    };
    store.add_threepid(&alice, &email, 5).await.unwrap();
    assert!(matches!(
        store.add_threepid(&bob, &email, 6).await,
        Err(StoreError::ThreepidInUse)
    ));
    assert!(matches!(
        store.add_threepid(&uid("ghost"), &email, 6).await,
        Err(StoreError::NoSuchUser)
    ));
    let owner = store
        .user_by_threepid(&email)
        .await
        .unwrap()
        .expect("3pid resolves");
    assert_eq!(owner.user_id, alice);
    let phone = Threepid {
        medium: Medium::Msisdn,
        address: "a@example.org".into(),
    };
    assert!(
        store.user_by_threepid(&phone).await.unwrap().is_none(),
        "media are distinct"
    );
    let bound = store.threepids(&alice).await.unwrap();
    assert_eq!(
        bound.iter().map(|t| t.threepid.clone()).collect::<Vec<_>>(),
        vec![email]
    );
    assert_eq!(bound[0].added_at, 5);
}

async fn sessions_create_devices_and_relogin_revokes(store: impl Store) {
    let alice = user(&store, "alice").await;
    login(&store, &alice, "DEV1", "at1", Some("rt1")).await;
    login(&store, &alice, "DEV2", "at2", None).await;
    let rec = store
        .access_token(&h("at1"))
        .await
        .unwrap()
        .expect("token stored");
    assert_eq!(
        (rec.user_id.clone(), rec.device_id.as_str()),
        (alice.clone(), "DEV1")
    );
    assert!(rec.pending_parent.is_none());
    let devices = store.devices(&alice).await.unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0].display_name.as_deref(), Some("phone"));
    // Logging in again on DEV1 revokes DEV1's old tokens, and only those.
    login(&store, &alice, "DEV1", "at1b", None).await;
    assert!(
        !alive(&store, "at1").await,
        "old access token of a reused device must die"
    );
    assert_eq!(
        refresh(&store, "rt1", "x", "y", Endpoint::Spec).await,
        Err(Rejection::Dead)
    );
    assert!(alive(&store, "at1b").await && alive(&store, "at2").await);
    assert_eq!(store.devices(&alice).await.unwrap().len(), 2);
}

async fn rotation_keeps_old_token_until_child_used(store: impl Store) {
    let alice = user(&store, "alice").await;
    login(&store, &alice, "D", "at0", Some("rt0")).await;
    refresh(&store, "rt0", "at1", "rt1", Endpoint::Spec)
        .await
        .expect("first refresh");
    // The client lost the answer and retries: still allowed.
    refresh(&store, "rt0", "at2", "rt2", Endpoint::Spec)
        .await
        .expect("retry with the old token");
    assert!(alive(&store, "at1").await && alive(&store, "at2").await);
    // Using the newest refresh token retires rt0 and the unused sibling.
    refresh(&store, "rt2", "at3", "rt3", Endpoint::Spec)
        .await
        .expect("refresh with the child");
    assert_eq!(
        refresh(&store, "rt0", "a", "b", Endpoint::Spec).await,
        Err(Rejection::Dead)
    );
    assert_eq!(
        refresh(&store, "rt1", "a", "b", Endpoint::Spec).await,
        Err(Rejection::Dead)
    );
    assert!(!alive(&store, "at0").await && !alive(&store, "at1").await);
    assert!(
        alive(&store, "at2").await,
        "the used chain's access token lives on until rotated out"
    );
    let rec = store.access_token(&h("at3")).await.unwrap().unwrap();
    assert_eq!(rec.device_id, "D");
}

async fn rotation_by_access_token_use(store: impl Store) {
    let alice = user(&store, "alice").await;
    login(&store, &alice, "D", "at0", Some("rt0")).await;
    refresh(&store, "rt0", "at1", "rt1", Endpoint::Spec)
        .await
        .unwrap();
    assert!(
        store
            .access_token(&h("at1"))
            .await
            .unwrap()
            .unwrap()
            .pending_parent
            .is_some()
    );
    assert!(use_token(&store, "at1").await);
    assert!(
        store
            .access_token(&h("at1"))
            .await
            .unwrap()
            .unwrap()
            .pending_parent
            .is_none()
    );
    assert_eq!(
        refresh(&store, "rt0", "a", "b", Endpoint::Spec).await,
        Err(Rejection::Dead)
    );
    assert!(
        !alive(&store, "at0").await,
        "the parent's access token dies with it"
    );
    // complete_rotation is idempotent.
    let rec = store.access_token(&h("at1")).await.unwrap().unwrap();
    store
        .complete_rotation(1, rec.refresh_id.unwrap())
        .await
        .unwrap();
    assert!(alive(&store, "at1").await);
    refresh(&store, "rt1", "at2", "rt2", Endpoint::Spec)
        .await
        .expect("the surviving chain refreshes");
}

/// The clean-up of a rotation is decided from a read made outside its
/// transaction. Run late — after that session ended and others began — it
/// must not touch them: token IDs are never reused, and it re-checks.
async fn a_late_rotation_clean_up_touches_no_other_session(store: impl Store) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    login(&store, &alice, "A", "a-at0", Some("a-rt0")).await;
    refresh(&store, "a-rt0", "a-at1", "a-rt1", Endpoint::Spec)
        .await
        .unwrap();
    // The server reads the new access token (first use pending)…
    let stale = store.access_token(&h("a-at1")).await.unwrap().unwrap();
    let (parent, child) = (stale.pending_parent.unwrap(), stale.refresh_id.unwrap());
    // …alice's device is deleted meanwhile, and bob logs in and rotates.
    store.delete_device(&alice, "A").await.unwrap();
    login(&store, &bob, "B", "b-at0", Some("b-rt0")).await;
    refresh(&store, "b-rt0", "b-at1", "b-rt1", Endpoint::Spec)
        .await
        .unwrap();
    let bobs = store.access_token(&h("b-at1")).await.unwrap().unwrap();
    assert!(
        bobs.refresh_id.unwrap() > child && bobs.pending_parent.unwrap() > child,
        "token IDs are never reused"
    );
    // The late clean-up of alice's rotation runs now.
    store.complete_rotation(parent, child).await.unwrap();
    // Bob never used his new access token: his answer may have been lost,
    // so his old refresh token must still work.
    refresh(&store, "b-rt0", "b-at2", "b-rt2", Endpoint::Spec)
        .await
        .expect("bob's session is untouched");
}

/// Refreshing with the same parent again and again (lost answers, or an
/// attack) keeps only its newest children; the parent keeps working.
async fn pending_children_are_bounded(store: impl Store) {
    let alice = user(&store, "alice").await;
    login(&store, &alice, "D", "at0", Some("rt0")).await;
    let tries = 3 * gatehouse_core::refresh::MAX_PENDING_CHILDREN;
    for i in 0..tries {
        refresh(
            &store,
            "rt0",
            &format!("at-{i}"),
            &format!("rt-{i}"),
            Endpoint::Spec,
        )
        .await
        .expect("the parent keeps refreshing");
    }
    let mut alive_children = 0;
    for i in 0..tries {
        if alive(&store, &format!("at-{i}")).await {
            alive_children += 1;
            assert!(
                i >= tries - gatehouse_core::refresh::MAX_PENDING_CHILDREN,
                "the oldest children go first ({i} is alive)"
            );
        }
    }
    assert_eq!(
        alive_children,
        gatehouse_core::refresh::MAX_PENDING_CHILDREN
    );
    // Using the newest child retires the parent and its few siblings.
    let newest = format!("at-{}", tries - 1);
    assert!(use_token(&store, &newest).await);
    assert_eq!(
        refresh(&store, "rt0", "x", "y", Endpoint::Spec).await,
        Err(Rejection::Dead)
    );
}

async fn legacy_rotation_is_single_use(store: impl Store) {
    let alice = user(&store, "alice").await;
    login(&store, &alice, "D", "at0", Some("rt0")).await;
    refresh(&store, "rt0", "at1", "rt1", Endpoint::LegacyV1)
        .await
        .unwrap();
    assert_eq!(
        refresh(&store, "rt0", "a", "b", Endpoint::LegacyV1).await,
        Err(Rejection::Dead)
    );
    let rec = store.access_token(&h("at1")).await.unwrap().unwrap();
    assert!(
        rec.pending_parent.is_none(),
        "legacy tokens need no first-use step"
    );
    refresh(&store, "rt1", "at2", "rt2", Endpoint::LegacyV1)
        .await
        .unwrap();
}

async fn concurrent_refreshes_all_hand_out_live_tokens<S: Store>(store: Arc<S>) {
    let alice = user(&*store, "alice").await;
    login(&*store, &alice, "D", "at0", Some("rt0")).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let (at, rt) = (format!("at-{i}"), format!("rt-{i}"));
            store
                .refresh(&h("rt0"), Endpoint::Spec, pair(&at, Some(&rt)), 20)
                .await
                .expect("refresh")
                .map(|_| at)
        }));
    }
    let mut handed_out = Vec::new();
    for t in tasks {
        handed_out.push(
            t.await
                .expect("task")
                .expect("every concurrent refresh succeeds"),
        );
    }
    for at in &handed_out {
        assert!(alive(&*store, at).await, "{at} was handed out dead");
    }
    // The first one used wins; the others die then.
    assert!(use_token(&*store, &handed_out[3]).await);
    let survivors = {
        let mut n = 0;
        for at in &handed_out {
            n += usize::from(alive(&*store, at).await);
        }
        n
    };
    assert_eq!(survivors, 1, "exactly one chain survives");
}

async fn expired_refresh_tokens_are_refused(store: impl Store) {
    let alice = user(&store, "alice").await;
    let tokens = NewTokenPair {
        refresh_expires_at: Some(15),
        ..pair("at0", Some("rt0"))
    };
    store
        .create_session(NewSession {
            user_id: alice,
            device_id: "D".into(),
            initial_display_name: None,
            tokens,
            now: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        refresh(&store, "rt0", "a", "b", Endpoint::Spec).await,
        Err(Rejection::Expired)
    );
}

async fn logout_and_logout_all(store: impl Store) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    login(&store, &alice, "A1", "a1", Some("ra1")).await;
    login(&store, &alice, "A2", "a2", None).await;
    login(&store, &bob, "B1", "b1", None).await;
    store.delete_device(&alice, "A1").await.unwrap();
    assert!(!alive(&store, "a1").await);
    assert_eq!(
        refresh(&store, "ra1", "x", "y", Endpoint::Spec).await,
        Err(Rejection::Dead)
    );
    assert!(alive(&store, "a2").await);
    assert_eq!(store.devices(&alice).await.unwrap().len(), 1);
    store.delete_all_devices(&alice).await.unwrap();
    assert!(!alive(&store, "a2").await);
    assert!(store.devices(&alice).await.unwrap().is_empty());
    assert!(
        alive(&store, "b1").await,
        "another user's sessions are untouched"
    );
}

async fn deactivation_removes_everything_but_the_name(store: impl Store) {
    let alice = user(&store, "alice").await;
    let email = Threepid {
        medium: Medium::Email,
        address: "a@example.org".into(),
    };
    store.add_threepid(&alice, &email, 1).await.unwrap();
    login(&store, &alice, "A1", "a1", Some("ra1")).await;
    store
        .set_cross_signing_keys(&alice, &serde_json::json!({"master_key": 1}), 1)
        .await
        .unwrap();
    store
        .create_login_token(&h("lt"), &alice, 100, 1)
        .await
        .unwrap();
    store.deactivate_user(&alice).await.unwrap();
    // A login that checked the password before the deactivation committed
    // gets no session after it.
    let late = store
        .create_session(NewSession {
            user_id: alice.clone(),
            device_id: "LATE".into(),
            initial_display_name: None,
            tokens: pair("late", None),
            now: 2,
        })
        .await;
    assert!(matches!(late, Err(StoreError::UserDeactivated)), "{late:?}");
    let rec = store.user(&alice).await.unwrap().expect("the record stays");
    // The hash stays so that a correct password can be answered with
    // M_USER_DEACTIVATED rather than a misleading M_FORBIDDEN.
    assert!(rec.deactivated);
    assert!(!alive(&store, "a1").await);
    assert!(store.user_by_threepid(&email).await.unwrap().is_none());
    assert!(store.devices(&alice).await.unwrap().is_empty());
    assert!(store.cross_signing_keys(&alice).await.unwrap().is_none());
    assert_eq!(store.consume_login_token(&h("lt"), 2).await.unwrap(), None);
    let reuse = store
        .create_user(NewUser {
            user_id: alice,
            password_hash: None,
            is_admin: false,
            is_guest: false,
            created_at: 3,
        })
        .await;
    assert!(
        matches!(reuse, Err(StoreError::UserExists)),
        "a deactivated name is never reusable"
    );
}
