//! The conformance suite every [`Store`] backend runs.
//!
//! Each check gets a fresh, empty store from the factory and panics with a
//! message naming the broken promise. Backends call [`run_all`] from their
//! own integration test.

use std::future::Future;
use std::sync::Arc;

use gatehouse_core::refresh::{Endpoint, Rejection};
use gatehouse_core::token::{self, TokenHash};
use gatehouse_core::user_id::UserId;

mod accounts;
mod delegation;
mod tokens;
mod uia;

use crate::{NewSession, NewTokenPair, NewUser, Store};

/// Runs every check against fresh stores made by `factory`.
pub async fn run_all<S, F, Fut>(factory: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    accounts::users_are_unique_and_found(factory().await).await;
    accounts::threepids_resolve_to_their_owner(factory().await).await;
    accounts::the_highest_bcrypt_cost_is_known(factory().await).await;
    tokens::sessions_create_devices_and_relogin_revokes(factory().await).await;
    tokens::rotation_keeps_old_token_until_child_used(factory().await).await;
    tokens::rotation_by_access_token_use(factory().await).await;
    tokens::a_late_rotation_clean_up_touches_no_other_session(factory().await).await;
    tokens::pending_children_are_bounded(factory().await).await;
    tokens::legacy_rotation_is_single_use(factory().await).await;
    tokens::concurrent_refreshes_all_hand_out_live_tokens(Arc::new(factory().await)).await;
    tokens::expired_refresh_tokens_are_refused(factory().await).await;
    tokens::logout_and_logout_all(factory().await).await;
    accounts::deactivation_removes_everything_but_the_name(factory().await).await;
    accounts::devices_are_managed(factory().await).await;
    uia::registration_tokens_count_uses(factory().await).await;
    uia::registration_is_atomic(factory().await).await;
    uia::uia_sessions_are_consumed_once(Arc::new(factory().await)).await;
    uia::token_uses_of_cut_off_registrations_come_back(factory().await).await;
    uia::accepted_policies_keep_the_latest_version(factory().await).await;
    uia::threepid_validations_are_idempotent(factory().await).await;
    accounts::expired_records_are_pruned(factory().await).await;
    accounts::cross_signing_keys_are_replaced(factory().await).await;
    tokens::login_tokens_are_single_use(factory().await).await;
    tokens::login_tokens_end_with_the_password_and_logout_all(factory().await).await;
    delegation::imports_are_idempotent(factory().await).await;
    delegation::homeserver_syncs_complete_only_their_version(factory().await).await;
    delegation::web_sessions_expire_and_end(factory().await).await;
    delegation::admin_and_reactivation(factory().await).await;
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
