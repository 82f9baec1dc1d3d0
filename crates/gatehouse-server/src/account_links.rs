//! The account page's sign-in providers: the identities that sign in to
//! the account (listed, added through the provider, removed — never the
//! last way in), and "sign in with" on the page's own sign-in form, for
//! people who have no password.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use gatehouse_core::user_id::UserId;
use gatehouse_store::{Unlinked, WebSession};
use minijinja::context;

use crate::fallback::same_secret;
use crate::sso::{self, Purpose, pages};
use crate::state::AppState;

/// The account's links (with the provider's name), and the configured
/// providers it is not linked to yet.
pub(crate) async fn listed(
    state: &AppState,
    user: &UserId,
) -> (Vec<minijinja::Value>, Vec<minijinja::Value>) {
    let links = state.store.upstream_links(user).await.unwrap_or_default();
    let linked = links
        .iter()
        .map(|l| {
            let name = state
                .sso
                .get(&l.provider)
                .map_or_else(|| l.provider.clone(), |p| p.name().to_owned());
            context! { provider => &l.provider, subject => &l.subject, name }
        })
        .collect();
    let linkable = state
        .sso
        .all()
        .into_iter()
        .filter(|p| !links.iter().any(|l| l.provider == p.id()))
        .map(|p| context! { idp => p.id(), name => p.name() })
        .collect();
    (linked, linkable)
}

/// "Sign in with …" links for the page's sign-in form.
pub(crate) fn sign_in_options(state: &AppState) -> Vec<minijinja::Value> {
    state
        .sso
        .all()
        .into_iter()
        .map(|p| {
            context! {
                name => p.name(),
                href => format!("{}/account/{}", sso::PATH, sso::encode(p.id())),
            }
        })
        .collect()
}

/// `GET /_gatehouse/account?action=link&idp=…&csrf=…`: to the provider, to
/// link what it says to this account. A link, not a form (the page's CSP
/// stops a form's redirect to another site), so it carries the form token.
pub(crate) async fn start_link(
    state: &AppState,
    headers: &HeaderMap,
    session: &WebSession,
    idp: Option<String>,
    csrf: Option<String>,
) -> Response {
    if !csrf.is_some_and(|c| same_secret(&session.csrf_token, &c)) {
        return pages::error(
            state,
            "This link has expired or did not come from your account page. Reload the page and try again.",
            StatusCode::FORBIDDEN,
        );
    }
    let Some(provider) = idp.as_deref().and_then(|i| state.sso.get(i)) else {
        return pages::error(state, "Unknown identity provider.", StatusCode::NOT_FOUND);
    };
    let user_id = session.user_id.to_string();
    sso::start(state, headers, provider, Purpose::Link { user_id }).await
}

/// Removes one of the account's links; the message to show either way.
pub(crate) async fn unlink(
    state: &AppState,
    user: &UserId,
    provider: &str,
    subject: &str,
) -> Result<String, String> {
    let name = state
        .sso
        .get(provider)
        .map_or_else(|| provider.to_owned(), |p| p.name().to_owned());
    // Links to providers no longer configured are no way in: the store's
    // own check counts every link, so the configured ones are counted here.
    let has_password = match state.store.user(user).await {
        Ok(account) => account.is_some_and(|a| a.password_hash.is_some()),
        Err(e) => {
            tracing::error!(error = %e, "could not read an account");
            return Err("Something went wrong; nothing was changed. Try again shortly.".into());
        }
    };
    let others = state
        .store
        .upstream_links(user)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|l| !(l.provider == provider && l.subject == subject))
        .filter(|l| state.sso.get(&l.provider).is_some())
        .count();
    if !has_password && others == 0 {
        return Err(format!(
            "{name} is your only way to sign in. Link another provider first."
        ));
    }
    match state
        .store
        .remove_upstream_link(user, provider, subject)
        .await
    {
        Ok(Unlinked::Removed) => Ok(format!("{name} no longer signs in to your account.")),
        Ok(Unlinked::LastWayIn) => Err(format!(
            "{name} is your only way to sign in. Link another provider first."
        )),
        Ok(Unlinked::NotFound) => Err("That provider is not linked to your account.".into()),
        Err(e) => {
            tracing::error!(error = %e, "could not unlink an identity");
            Err("Something went wrong; nothing was changed. Try again shortly.".into())
        }
    }
}
