//! Conformance checks of accounts: users, threepids, devices, deactivation,
//! cross-signing keys and pruning of expired records.

use gatehouse_core::identifier::{Medium, Threepid};

use super::{alive, h, login, pair, uid, user};
use crate::{
    ClientSecretHash, EndSessions, NewSession, NewUser, RegistrationToken, Store, StoreError,
    ThreepidValidation, UiaSessionRecord,
};

pub async fn users_are_unique_and_found(store: impl Store) {
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
    assert_eq!(store.highest_bcrypt_cost().await.unwrap(), None);
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

pub async fn threepids_resolve_to_their_owner(store: impl Store) {
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

pub async fn devices_are_managed(store: impl Store) {
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

pub async fn deactivation_removes_everything_but_the_name(store: impl Store) {
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

pub async fn cross_signing_keys_are_replaced(store: impl Store) {
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

pub async fn expired_records_are_pruned(store: impl Store) {
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

pub async fn the_highest_bcrypt_cost_is_known(store: impl Store) {
    assert_eq!(store.highest_bcrypt_cost().await.unwrap(), None, "empty");
    for (name, hash) in [
        ("a", "$2b$10$abcdefghijklmnopqrstuv"),
        ("b", "$2a$12$abcdefghijklmnopqrstuv"),
        ("c", "$argon2id$v=19$m=19456,t=2,p=1$x$y"),
    ] {
        let id = user(&store, name).await;
        store
            .set_password_hash(&id, hash, EndSessions::Keep)
            .await
            .unwrap();
    }
    assert_eq!(store.highest_bcrypt_cost().await.unwrap(), Some(12));
    store
        .upgrade_password_hash(&uid("b"), "$2a$12$abcdefghijklmnopqrstuv", "$argon2id$new")
        .await
        .unwrap();
    assert_eq!(
        store.highest_bcrypt_cost().await.unwrap(),
        Some(10),
        "upgraded hashes no longer count"
    );
}
