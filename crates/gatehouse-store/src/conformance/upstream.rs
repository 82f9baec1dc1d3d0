//! Single sign-on: upstream links and SSO flows.

use serde_json::json;

use super::{h, uid, user};
use crate::{NewRegistration, NewUser, Store, StoreError, Unlinked, UpstreamLink};

fn link(user_id: &gatehouse_core::user_id::UserId, provider: &str, subject: &str) -> UpstreamLink {
    UpstreamLink {
        user_id: user_id.clone(),
        provider: provider.into(),
        subject: subject.into(),
        created_at: 5,
    }
}

/// An identity signs in to one account; an account may have several, and
/// loses one only while another way in remains.
pub async fn upstream_links_belong_to_one_account(store: impl Store) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    store
        .add_upstream_link(&link(&alice, "acme", "sub-1"))
        .await
        .expect("first link");
    assert!(
        matches!(
            store.add_upstream_link(&link(&bob, "acme", "sub-1")).await,
            Err(StoreError::LinkInUse)
        ),
        "an identity linked to one account cannot be linked to another"
    );
    store
        .add_upstream_link(&link(&alice, "cas", "alice"))
        .await
        .expect("a second identity for the same account");
    assert_eq!(
        store.upstream_link_owner("acme", "sub-1").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.upstream_link_owner("other", "sub-1").await.unwrap(),
        None,
        "subjects are per provider"
    );
    let links = store.upstream_links(&alice).await.unwrap();
    assert_eq!(links.len(), 2);
    assert_eq!(
        store
            .remove_upstream_link(&alice, "acme", "nobody")
            .await
            .unwrap(),
        Unlinked::NotFound
    );
    assert_eq!(
        store
            .remove_upstream_link(&bob, "acme", "sub-1")
            .await
            .unwrap(),
        Unlinked::NotFound,
        "nobody unlinks another account's identity"
    );

    // An account made through SSO, with no password: its last link stays.
    let sso_only = uid("carol");
    store
        .register(NewRegistration {
            user: NewUser {
                user_id: sso_only.clone(),
                password_hash: None,
                is_admin: false,
                is_guest: false,
                created_at: 2,
            },
            threepids: Vec::new(),
            registration_token: None,
            session: None,
            upstream_link: Some(link(&sso_only, "acme", "sub-carol")),
        })
        .await
        .expect("register with a link");
    assert_eq!(
        store
            .upstream_link_owner("acme", "sub-carol")
            .await
            .unwrap(),
        Some(sso_only.clone()),
        "registration links atomically"
    );
    store
        .add_upstream_link(&link(&sso_only, "cas", "carol"))
        .await
        .unwrap();
    assert_eq!(
        store
            .remove_upstream_link(&sso_only, "acme", "sub-carol")
            .await
            .unwrap(),
        Unlinked::Removed,
        "another link remains"
    );
    assert_eq!(
        store
            .remove_upstream_link(&sso_only, "cas", "carol")
            .await
            .unwrap(),
        Unlinked::LastWayIn,
        "the last way in of an account without a password stays"
    );
    assert!(
        store
            .upstream_link_owner("cas", "carol")
            .await
            .unwrap()
            .is_some()
    );

    // A password is a way in: Alice may drop both links.
    for (p, s) in [("acme", "sub-1"), ("cas", "alice")] {
        assert_eq!(
            store.remove_upstream_link(&alice, p, s).await.unwrap(),
            Unlinked::Removed
        );
    }
    assert!(store.upstream_links(&alice).await.unwrap().is_empty());

    // A registration whose identity is taken makes nothing.
    let dave = uid("dave");
    let taken = store
        .register(NewRegistration {
            user: NewUser {
                user_id: dave.clone(),
                password_hash: None,
                is_admin: false,
                is_guest: false,
                created_at: 2,
            },
            threepids: Vec::new(),
            registration_token: None,
            session: None,
            upstream_link: Some(link(&dave, "cas", "carol")),
        })
        .await;
    assert!(matches!(taken, Err(StoreError::LinkInUse)), "{taken:?}");
    assert!(
        store.user(&dave).await.unwrap().is_none(),
        "no account without its link"
    );
}

/// A flow is taken once, and not after it expired.
pub async fn sso_flows_are_single_use(store: impl Store) {
    let data = json!({ "idp": "acme", "redirect_url": "http://127.0.0.1/cb" });
    store
        .create_sso_flow(&h("flow-1"), &data, 100, 10)
        .await
        .unwrap();
    store
        .create_sso_flow(&h("flow-2"), &data, 100, 10)
        .await
        .unwrap();
    assert_eq!(
        store.take_sso_flow(&h("flow-1"), 50).await.unwrap(),
        Some(data)
    );
    assert_eq!(
        store.take_sso_flow(&h("flow-1"), 50).await.unwrap(),
        None,
        "taken once"
    );
    assert_eq!(
        store.take_sso_flow(&h("flow-2"), 100).await.unwrap(),
        None,
        "expired"
    );
    store
        .create_sso_flow(&h("flow-3"), &json!({}), 100, 10)
        .await
        .unwrap();
    assert!(store.prune_expired(200).await.unwrap() >= 1, "pruned");
    assert_eq!(store.take_sso_flow(&h("flow-3"), 50).await.unwrap(), None);
}
