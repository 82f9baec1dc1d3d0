//! The PostgreSQL backend against the conformance suite, each check on a
//! database of its own, plus what only PostgreSQL has: schema versions in
//! a ledger, and two pools (two instances) on one database.

use gatehouse_store::postgres::testing::fresh_database;
use gatehouse_store::prelude::*;
use gatehouse_store::{PostgresOptions, PostgresStore};

/// A new store on a database of its own (dropped with the cluster).
async fn fresh() -> (PostgresStore, ()) {
    let url = fresh_database().await;
    let store = PostgresStore::connect(&PostgresOptions::new(url))
        .await
        .expect("connect and migrate");
    (store, ())
}

/// The conformance suite, one test per check.
mod conformance_suite {
    use super::fresh;

    gatehouse_store::conformance_tests!(fresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_recorded_and_rerun_harmlessly() {
    let url = fresh_database().await;
    let store =
        PostgresStore::connect_without_migrating(&PostgresOptions::new(url.clone())).unwrap();
    assert_eq!(store.current_schema_version().await.unwrap(), 0);
    let applied = store.migrate().await.unwrap();
    assert_eq!(
        applied,
        (1..=PostgresStore::schema_version()).collect::<Vec<_>>()
    );
    assert!(
        store.migrate().await.unwrap().is_empty(),
        "nothing left to apply"
    );
    assert_eq!(
        store.current_schema_version().await.unwrap(),
        PostgresStore::schema_version()
    );
    // Two instances starting together: both open, one migrates.
    let url2 = fresh_database().await;
    let options = PostgresOptions::new(url2);
    let (a, b) = tokio::join!(
        PostgresStore::connect(&options),
        PostgresStore::connect(&options)
    );
    assert!(a.is_ok() && b.is_ok(), "{:?} {:?}", a.err(), b.err());
}

/// Two instances' pools on one database.
async fn two_instances() -> [std::sync::Arc<PostgresStore>; 2] {
    let url = fresh_database().await;
    let a = PostgresStore::connect(&PostgresOptions::new(url.clone()))
        .await
        .unwrap();
    let b = PostgresStore::connect(&PostgresOptions::new(url))
        .await
        .unwrap();
    [std::sync::Arc::new(a), std::sync::Arc::new(b)]
}

/// Runs `n` calls of `f` at once, alternating between the two instances;
/// how many answered `true`.
async fn race<F, Fut>(stores: &[std::sync::Arc<PostgresStore>; 2], n: usize, f: F) -> usize
where
    F: Fn(std::sync::Arc<PostgresStore>, usize) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(f(stores[i % 2].clone(), i)))
        .collect();
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap() {
            won += 1;
        }
    }
    won
}

/// The single-use and counted rules hold when the concurrent requests land
/// on different instances (each on its own pool of connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_hold_across_instances() {
    use gatehouse_core::token::hash;
    use gatehouse_core::user_id::UserId;
    use gatehouse_store::{NewSession, NewTokenPair, NewUser, RegistrationToken, UiaSessionRecord};

    let stores = two_instances().await;
    let [a, _] = &stores;
    let alice = UserId::new("alice", "test").unwrap();
    a.create_user(NewUser {
        user_id: alice.clone(),
        password_hash: None,
        is_admin: false,
        is_guest: false,
        created_at: 1,
    })
    .await
    .unwrap();

    // A registration token allowing 5 uses, reserved 40 times at once.
    let token = RegistrationToken {
        token: "invite".into(),
        uses_allowed: Some(5),
        pending: 0,
        completed: 0,
        expiry: None,
    };
    a.create_registration_token(&token, 1).await.unwrap();
    let reserved = race(&stores, 40, |s, _| async move {
        s.reserve_registration_token("invite", 10).await.unwrap()
    })
    .await;
    assert_eq!(reserved, 5, "uses handed out");

    // A login token consumed 20 times at once: once.
    a.create_login_token(&hash("login"), &alice, 1_000, 1)
        .await
        .unwrap();
    let logged_in = race(&stores, 20, |s, _| async move {
        s.consume_login_token(&hash("login"), 10)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    assert_eq!(logged_in, 1, "logins with one login token");

    // A UIA session: its stage saved once from one reading, and spent once.
    let session = UiaSessionRecord {
        id: "uia".into(),
        binding: gatehouse_core::uia::Binding::new(
            None,
            "POST",
            "/register",
            &serde_json::json!({}),
        ),
        completed: vec![],
        data: serde_json::json!({}),
        created_at: 1,
        expires_at: 1_000_000,
        consumed: false,
    };
    a.create_uia_session(&session, 1).await.unwrap();
    let progressed = race(&stores, 20, |s, i| async move {
        let stage = vec![format!("stage-{i}")];
        s.update_uia_session(
            "uia",
            &stage,
            &serde_json::json!({}),
            &[],
            &serde_json::json!({}),
        )
        .await
        .unwrap()
    })
    .await;
    assert_eq!(progressed, 1, "saves from the same reading");
    let spent = race(&stores, 20, |s, _| async move {
        s.consume_uia_session("uia").await.unwrap()
    })
    .await;
    assert_eq!(spent, 1, "operations one UIA session authorised");

    // A refresh token rotated 10 times at once: every answer is a live
    // token, and the first use of one child leaves one chain.
    a.create_session(NewSession {
        user_id: alice.clone(),
        device_id: "PHONE".into(),
        initial_display_name: None,
        tokens: NewTokenPair {
            access: hash("at0"),
            access_expires_at: None,
            refresh: Some(hash("rt0")),
            refresh_expires_at: None,
        },
        now: 1,
    })
    .await
    .unwrap();
    let rotated = race(&stores, 10, |s, i| async move {
        let pair = NewTokenPair {
            access: hash(&format!("at{}", i + 1)),
            access_expires_at: None,
            refresh: Some(hash(&format!("rt{}", i + 1))),
            refresh_expires_at: None,
        };
        s.refresh(
            &hash("rt0"),
            gatehouse_core::refresh::Endpoint::Spec,
            pair,
            20,
        )
        .await
        .unwrap()
        .is_ok()
    })
    .await;
    assert_eq!(rotated, 10, "every concurrent refresh answered");
    let used = a
        .access_token(&hash("at3"))
        .await
        .unwrap()
        .expect("a live child");
    a.complete_rotation(used.pending_parent.unwrap(), used.refresh_id.unwrap())
        .await
        .unwrap();
    for i in 0..=10 {
        let live = stores[i % 2]
            .access_token(&hash(&format!("at{i}")))
            .await
            .unwrap();
        assert_eq!(live.is_some(), i == 3, "at{i} after the chain settled");
    }
}
