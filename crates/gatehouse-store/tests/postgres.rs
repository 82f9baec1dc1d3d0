//! The PostgreSQL backend against the conformance suite, each check on a
//! database of its own, plus what only PostgreSQL has: schema versions in
//! a ledger, and two pools (two instances) on one database.

use gatehouse_store::postgres::testing::fresh_database;
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
