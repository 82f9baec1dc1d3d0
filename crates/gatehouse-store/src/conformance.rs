//! The conformance suite every [`Store`] backend runs.
//!
//! Each check gets a fresh, empty store and panics with a message naming
//! the broken promise. A backend instantiates the whole suite in its own
//! integration test with [`conformance_tests!`](crate::conformance_tests):
//! one test per check, so a failure names the promise broken and the
//! backend that broke it.

use gatehouse_core::refresh::{Endpoint, Rejection};
use gatehouse_core::token::{self, TokenHash};
use gatehouse_core::user_id::UserId;

#[doc(hidden)]
pub mod accounts;
#[doc(hidden)]
pub mod delegation;
#[doc(hidden)]
pub mod tokens;
#[doc(hidden)]
pub mod uia;
#[doc(hidden)]
pub mod upstream;

use crate::{NewSession, NewTokenPair, NewUser, Store};

/// One `#[tokio::test]` per check, each on a fresh store: `conformance_tests!(fresh)`
/// in a backend's integration test, where `fresh().await` gives a new,
/// empty store and a guard that must outlive it (a temporary directory, a
/// throwaway database).
#[macro_export]
macro_rules! conformance_tests {
    ($fresh:path) => {
        $crate::conformance_tests!(@each $fresh;
            plain: [
                accounts::users_are_unique_and_found,
                accounts::threepids_resolve_to_their_owner,
                accounts::the_highest_bcrypt_cost_is_known,
                tokens::sessions_create_devices_and_relogin_revokes,
                tokens::rotation_keeps_old_token_until_child_used,
                tokens::rotation_by_access_token_use,
                tokens::a_late_rotation_clean_up_touches_no_other_session,
                tokens::pending_children_are_bounded,
                tokens::legacy_rotation_is_single_use,
                tokens::expired_refresh_tokens_are_refused,
                tokens::logout_and_logout_all,
                accounts::deactivation_removes_everything_but_the_name,
                accounts::devices_are_managed,
                uia::registration_tokens_count_uses,
                uia::registration_is_atomic,
                uia::token_uses_of_cut_off_registrations_come_back,
                uia::accepted_policies_keep_the_latest_version,
                uia::threepid_validations_are_idempotent,
                accounts::expired_records_are_pruned,
                accounts::cross_signing_keys_are_replaced,
                tokens::login_tokens_are_single_use,
                tokens::login_tokens_end_with_the_password_and_logout_all,
                delegation::imports_are_idempotent,
                delegation::homeserver_syncs_complete_only_their_version,
                delegation::web_sessions_expire_and_end,
                delegation::admin_and_reactivation,
                upstream::upstream_links_belong_to_one_account,
                upstream::sso_flows_are_single_use,
            ];
            shared: [
                tokens::concurrent_refreshes_all_hand_out_live_tokens,
                uia::uia_sessions_are_consumed_once,
            ];
        );
    };
    (@each $fresh:path; plain: [$($pm:ident :: $pc:ident),* $(,)?]; shared: [$($sm:ident :: $sc:ident),* $(,)?];) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $pc() {
                let (store, _guard) = $fresh().await;
                $crate::conformance::$pm::$pc(store).await;
            }
        )*
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $sc() {
                let (store, _guard) = $fresh().await;
                $crate::conformance::$sm::$sc(::std::sync::Arc::new(store)).await;
            }
        )*
    };
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
