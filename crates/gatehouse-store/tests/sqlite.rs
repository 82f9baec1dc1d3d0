//! The SQLite backend against the conformance suite, plus what only a real
//! file can show: acknowledged writes survive reopening.

use gatehouse_core::token;
use gatehouse_core::user_id::UserId;
use gatehouse_store::prelude::*;
use gatehouse_store::sqlite::Durability;
use gatehouse_store::{NewSession, NewTokenPair, NewUser, SqliteStore};

/// A new store on a file of its own; the directory goes with the guard.
async fn fresh() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("gatehouse.sqlite"), Durability::Full).unwrap();
    (store, dir)
}

/// The conformance suite, one test per check.
mod conformance_suite {
    use super::fresh;

    gatehouse_store::conformance_tests!(fresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.sqlite");
    let alice = UserId::new("alice", "hs").unwrap();
    {
        let store = SqliteStore::open(&path, Durability::Full).unwrap();
        store
            .create_user(NewUser {
                user_id: alice.clone(),
                password_hash: None,
                is_admin: false,
                is_guest: false,
                created_at: 1,
            })
            .await
            .unwrap();
        let tokens = NewTokenPair {
            access: token::hash("at"),
            access_expires_at: None,
            refresh: None,
            refresh_expires_at: None,
        };
        store
            .create_session(NewSession {
                user_id: alice.clone(),
                device_id: "D".into(),
                initial_display_name: None,
                tokens,
                now: 1,
            })
            .await
            .unwrap();
    }
    let store = SqliteStore::open(&path, Durability::Full).unwrap();
    assert!(store.user(&alice).await.unwrap().is_some());
    assert!(
        store
            .access_token(&token::hash("at"))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.devices(&alice).await.unwrap().len(), 1);
}

#[test]
fn a_database_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.sqlite");
    drop(SqliteStore::open(&path, Durability::Full).unwrap());
    let newer = i64::try_from(SqliteStore::schema_version()).unwrap() + 1;
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let err = SqliteStore::open(&path, Durability::Full)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("newer than this build"), "{err}");
}
