//! Conformance checks of what delegation and imports added: bulk import,
//! homeserver pushes, account-page sessions, admin and reactivation.

use gatehouse_core::identifier::{Medium, Threepid};

use super::{h, uid, user};
use crate::{Store, StoreError};

pub async fn imports_are_idempotent(store: impl Store) {
    let imported = |hash: &str| crate::ImportedUser {
        user_id: uid("imp"),
        password_hash: Some(hash.into()),
        is_admin: true,
        is_guest: false,
        deactivated: false,
        created_at: 5,
        threepids: vec![Threepid {
            medium: Medium::Email,
            address: "imp@example.org".into(),
        }],
        devices: vec![crate::ImportedDevice {
            device_id: "OLD".into(),
            display_name: Some("old phone".into()),
            last_seen_ip: None,
            last_seen_at: Some(7),
            access_tokens: vec![h("syt_old")],
        }],
    };
    let first = store.import_users(vec![imported("$2b$one")]).await.unwrap();
    assert_eq!(
        first,
        crate::ImportCounts {
            users: 1,
            threepids: 1,
            devices: 1,
            access_tokens: 1
        }
    );
    let again = store.import_users(vec![imported("$2b$two")]).await.unwrap();
    assert_eq!(
        again,
        crate::ImportCounts::default(),
        "a second run adds nothing"
    );
    let user = store.user(&uid("imp")).await.unwrap().unwrap();
    assert_eq!(
        user.password_hash.as_deref(),
        Some("$2b$one"),
        "existing rows are kept"
    );
    assert!(user.is_admin);
    let token = store
        .access_token(&h("syt_old"))
        .await
        .unwrap()
        .expect("token imported");
    assert_eq!(token.device_id, "OLD");
    assert!(token.is_admin);

    // Deactivated here since: importing again brings nothing back.
    store.deactivate_user(&uid("imp")).await.unwrap();
    let after = store.import_users(vec![imported("$2b$one")]).await.unwrap();
    assert_eq!(after, crate::ImportCounts::default());
    assert!(store.devices(&uid("imp")).await.unwrap().is_empty());
    assert!(store.threepids(&uid("imp")).await.unwrap().is_empty());
    store.reactivate_user(&uid("imp")).await.unwrap();
    assert!(
        store.access_token(&h("syt_old")).await.unwrap().is_none(),
        "no session of the deactivated account came back"
    );
}

pub async fn homeserver_syncs_complete_only_their_version(store: impl Store) {
    let change = |erase, devices: &[&str]| crate::HomeserverChange {
        erase,
        reactivate: false,
        deleted_devices: devices.iter().map(|d| (*d).to_owned()).collect(),
    };
    let v1 = store
        .request_homeserver_sync("a", &change(false, &["D1"]), 10)
        .await
        .unwrap();
    let due = store.due_homeserver_syncs(10, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let v2 = store
        .request_homeserver_sync("a", &change(true, &["D2", "D1"]), 11)
        .await
        .unwrap();
    assert!(v2 > v1);
    store.finish_homeserver_sync("a", v1).await.unwrap();
    let due = store.due_homeserver_syncs(11, 10).await.unwrap();
    assert_eq!(due.len(), 1, "a newer request keeps it pending");
    assert!(due[0].erase, "flags accumulate");
    assert_eq!(
        store.homeserver_sync("a").await.unwrap().as_ref(),
        due.first()
    );
    assert_eq!(
        due[0].deleted_devices,
        ["D1", "D2"],
        "so do deleted devices"
    );
    store.postpone_homeserver_sync("a", 100).await.unwrap();
    assert!(store.due_homeserver_syncs(50, 10).await.unwrap().is_empty());
    let due = store.due_homeserver_syncs(100, 10).await.unwrap();
    assert_eq!(due[0].attempts, 1);
    store
        .finish_homeserver_sync("a", due[0].version)
        .await
        .unwrap();
    assert!(
        store
            .due_homeserver_syncs(1000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn web_sessions_expire_and_end(store: impl Store) {
    let alice = user(&store, "alice").await;
    let session = crate::WebSession {
        user_id: alice.clone(),
        csrf_token: "csrf".into(),
        expires_at: 100,
    };
    store.create_web_session(&h("w1"), &session).await.unwrap();
    assert_eq!(
        store.web_session(&h("w1"), 50).await.unwrap(),
        Some(session)
    );
    assert_eq!(
        store.web_session(&h("w1"), 100).await.unwrap(),
        None,
        "expired"
    );
    store.delete_web_session(&h("w1")).await.unwrap();
    assert_eq!(
        store.web_session(&h("w1"), 50).await.unwrap(),
        None,
        "ended"
    );
}

pub async fn admin_and_reactivation(store: impl Store) {
    let alice = user(&store, "alice").await;
    store.set_admin(&alice, true).await.unwrap();
    assert!(store.user(&alice).await.unwrap().unwrap().is_admin);
    store.deactivate_user(&alice).await.unwrap();
    store.reactivate_user(&alice).await.unwrap();
    assert!(!store.user(&alice).await.unwrap().unwrap().deactivated);
    assert!(matches!(
        store.set_admin(&uid("nobody"), true).await,
        Err(StoreError::NoSuchUser)
    ));
}
