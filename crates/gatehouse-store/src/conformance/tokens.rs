//! Conformance checks of sessions and their tokens: login, rotation,
//! refresh, logout and single-use login tokens.

use std::sync::Arc;

use gatehouse_core::refresh::{Endpoint, Rejection};
use gatehouse_core::user_id::UserId;

use super::{alive, h, login, pair, refresh, use_token, user};
use crate::{EndSessions, NewSession, NewTokenPair, Store};

pub async fn login_tokens_are_single_use(store: impl Store) {
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

pub async fn login_tokens_end_with_the_password_and_logout_all(store: impl Store) {
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

pub async fn sessions_create_devices_and_relogin_revokes(store: impl Store) {
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

pub async fn rotation_keeps_old_token_until_child_used(store: impl Store) {
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

pub async fn rotation_by_access_token_use(store: impl Store) {
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
pub async fn a_late_rotation_clean_up_touches_no_other_session(store: impl Store) {
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
pub async fn pending_children_are_bounded(store: impl Store) {
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

pub async fn legacy_rotation_is_single_use(store: impl Store) {
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

pub async fn concurrent_refreshes_all_hand_out_live_tokens<S: Store>(store: Arc<S>) {
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

pub async fn expired_refresh_tokens_are_refused(store: impl Store) {
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

pub async fn logout_and_logout_all(store: impl Store) {
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
