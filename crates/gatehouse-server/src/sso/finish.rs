//! What a sign-in does once the provider has vouched for someone: a
//! client's login (an existing link, a link by verified email, or a new
//! account), a link added to a signed-in account, or a UIA stage passed.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use gatehouse_core::ErrorKind;
use gatehouse_core::identifier::{Medium, Threepid, canonical_threepid};
use gatehouse_core::token;
use gatehouse_core::uia;
use gatehouse_core::user_id::UserId;
use gatehouse_store::{NewRegistration, NewUser, StoreError, UpstreamLink};

use super::mapping::{self, Mapped};
use super::{Identity, Provider, Purpose, Stored, pages};
use crate::config::LocalpartTaken;
use crate::state::AppState;

/// How many numbered alternatives `suffix` tries before asking.
const SUFFIX_ATTEMPTS: u32 = 20;

/// Finishes a flow the provider vouched for.
pub async fn finish(
    state: &AppState,
    provider: Provider<'_>,
    identity: Identity,
    purpose: Purpose,
    browser: String,
) -> Response {
    let owner = match state
        .store
        .upstream_link_owner(&identity.provider, &identity.subject)
        .await
    {
        Ok(o) => o,
        Err(e) => return pages::unavailable(state, &e),
    };
    match purpose {
        Purpose::Login { redirect_url } => match owner {
            Some(user) => login_token(state, &user, &redirect_url, false).await,
            None => first_login(state, provider, identity, redirect_url, browser).await,
        },
        Purpose::Link { user_id } => link(state, provider, &identity, owner, &user_id).await,
        Purpose::Account => match owner {
            Some(user) => {
                if let Some(refused) = refusal(state, &user).await {
                    return refused;
                }
                match crate::account_page::open_session(state, user, "/_gatehouse/account").await {
                    Ok(response) => response,
                    Err(()) => pages::error(
                        state,
                        "Something went wrong; please try again.",
                        StatusCode::SERVICE_UNAVAILABLE,
                    ),
                }
            }
            None => pages::error(
                state,
                &format!(
                    "No account here is linked to your {} account.",
                    provider.name()
                ),
                StatusCode::FORBIDDEN,
            ),
        },
        Purpose::Reauth { session, user_id } => {
            if owner.as_ref().map(UserId::as_str) != Some(user_id.as_str()) {
                return pages::error(
                    state,
                    &format!(
                        "The {} account you signed in with is not linked to the account you are confirming.",
                        provider.name()
                    ),
                    StatusCode::FORBIDDEN,
                );
            }
            match complete_stage(state, &session, &user_id).await {
                Ok(()) => pages::stage_done(state),
                Err(e) => pages::error(state, &e.message, StatusCode::BAD_REQUEST),
            }
        }
    }
}

/// Someone the provider knows but no account is linked to yet.
async fn first_login(
    state: &AppState,
    provider: Provider<'_>,
    identity: Identity,
    redirect_url: String,
    browser: String,
) -> Response {
    let mapping = provider.mapping();
    let mapped = mapping::map(mapping, provider.is_cas(), &identity.claims);
    // An existing account with the same address, when the provider vouches
    // for the address and the operator asked for it.
    if mapping.link_by_email
        && let Some(email) = verified_email(&identity, &mapped)
    {
        let owner = state
            .store
            .user_by_threepid(&Threepid {
                medium: Medium::Email,
                address: email,
            })
            .await;
        // An account already linked to someone at this provider is theirs:
        // an address the provider has since given a new person (recycled)
        // does not hand it over.
        let linked_here = match &owner {
            Ok(Some(account)) => match state.store.upstream_links(&account.user_id).await {
                Ok(links) => links.iter().any(|l| l.provider == identity.provider),
                Err(e) => return pages::unavailable(state, &e),
            },
            _ => false,
        };
        match owner {
            Ok(Some(account)) if !account.deactivated && !linked_here => {
                let link = new_link(state, &account.user_id, &identity);
                return match state.store.add_upstream_link(&link).await {
                    Ok(()) => login_token(state, &account.user_id, &redirect_url, false).await,
                    // Linked meanwhile (the same person, signing in twice
                    // at once): to whichever account won.
                    Err(StoreError::LinkInUse) => {
                        match state
                            .store
                            .upstream_link_owner(&identity.provider, &identity.subject)
                            .await
                        {
                            Ok(Some(owner)) => {
                                login_token(state, &owner, &redirect_url, false).await
                            }
                            Ok(None) => {
                                pages::error(state, "Please try again.", StatusCode::CONFLICT)
                            }
                            Err(e) => pages::unavailable(state, &e),
                        }
                    }
                    Err(e) => pages::unavailable(state, &e),
                };
            }
            Ok(_) => {}
            Err(e) => return pages::unavailable(state, &e),
        }
    }
    if !mapping.allow_registration {
        return pages::error(
            state,
            &format!(
                "No account here is linked to your {} account.",
                provider.name()
            ),
            StatusCode::FORBIDDEN,
        );
    }
    let attempts = match (&mapped.localpart, mapping.on_localpart_taken) {
        (None, _) => 0,
        (Some(_), LocalpartTaken::Choose) => 1,
        (Some(_), LocalpartTaken::Suffix) => SUFFIX_ATTEMPTS + 1,
    };
    if let Some(wanted) = &mapped.localpart {
        for n in 0..attempts {
            let candidate = if n == 0 {
                wanted.clone()
            } else {
                gatehouse_core::sso::suffixed(wanted, n)
            };
            match register(state, &candidate, &identity, &mapped).await {
                Ok(user) => return login_token(state, &user, &redirect_url, false).await,
                Err(Registered::Taken) => {}
                Err(Registered::Failed(response)) => return response,
            }
        }
    }
    // The person picks a name.
    let key = token::random_alphanumeric(32);
    let pending = Stored::Pending {
        idp_id: identity.provider.clone(),
        subject: identity.subject.clone(),
        claims: identity.claims.clone(),
        email_verified: identity.email_verified,
        redirect_url,
        browser,
    };
    if let Err(e) = super::keep(state, &key, &pending).await {
        return pages::unavailable(state, &e);
    }
    let message = mapped
        .localpart
        .as_ref()
        .map(|l| format!("The username {l} is taken. Please choose another."));
    pages::choose_username(
        state,
        &key,
        mapped.localpart.as_deref(),
        message.as_deref(),
        StatusCode::OK,
    )
}

/// The username page's answer.
pub async fn chosen_username(
    state: &AppState,
    headers: &HeaderMap,
    key: &str,
    username: &str,
) -> Response {
    let pending = match super::take(state, key).await {
        Ok(Some(p @ Stored::Pending { .. })) => p,
        Ok(_) => {
            return pages::error(
                state,
                "This sign-in has expired or was already finished. Please start again from your application.",
                StatusCode::BAD_REQUEST,
            );
        }
        Err(e) => return pages::unavailable(state, &e),
    };
    // Kept whole: a refused name asks again under a new key.
    let Stored::Pending {
        idp_id,
        subject,
        claims,
        email_verified,
        redirect_url,
        browser,
    } = pending.clone()
    else {
        return pages::error(
            state,
            "This sign-in cannot continue.",
            StatusCode::BAD_REQUEST,
        );
    };
    if !super::same_browser(headers, &browser) {
        return pages::error(
            state,
            "This sign-in was started in another browser.",
            StatusCode::FORBIDDEN,
        );
    }
    let Some(provider) = state.sso.get(&idp_id) else {
        return pages::error(
            state,
            "This provider is no longer configured.",
            StatusCode::BAD_REQUEST,
        );
    };
    let identity = Identity {
        provider: idp_id,
        subject,
        claims,
        email_verified,
    };
    let mapped = mapping::map(provider.mapping(), provider.is_cas(), &identity.claims);
    let wanted = username.trim().to_ascii_lowercase();
    let refusal = match register(state, &wanted, &identity, &mapped).await {
        Ok(user) => return login_token(state, &user, &redirect_url, true).await,
        Err(Registered::Taken) => {
            format!("The username {wanted} is taken or not allowed. Please choose another.")
        }
        Err(Registered::Failed(response)) => return response,
    };
    // Asked again under a new key: the old one is spent.
    let key = token::random_alphanumeric(32);
    if let Err(e) = super::keep(state, &key, &pending).await {
        return pages::unavailable(state, &e);
    }
    pages::choose_username(
        state,
        &key,
        Some(&wanted),
        Some(&refusal),
        StatusCode::BAD_REQUEST,
    )
}

enum Registered {
    /// The name is not available (or not a valid localpart).
    Taken,
    /// Something else failed; the page to show.
    Failed(Response),
}

/// Makes the account for a new person: no password, their identity
/// linked, their address added when the provider vouches for it and no
/// account has it. On a delegating homeserver, provisioned there first.
async fn register(
    state: &AppState,
    localpart: &str,
    identity: &Identity,
    mapped: &Mapped,
) -> Result<UserId, Registered> {
    let user_id = match crate::routes::register::check_username(state, localpart).await {
        Ok(id) => id,
        Err(e)
            if matches!(
                e.kind,
                ErrorKind::InvalidUsername | ErrorKind::UserInUse | ErrorKind::Exclusive
            ) =>
        {
            return Err(Registered::Taken);
        }
        Err(e) => {
            return Err(Registered::Failed(pages::error(
                state,
                &e.message,
                StatusCode::SERVICE_UNAVAILABLE,
            )));
        }
    };
    let mut threepids = Vec::new();
    if let Some(email) = verified_email(identity, mapped) {
        let tp = Threepid {
            medium: Medium::Email,
            address: email,
        };
        if matches!(state.store.user_by_threepid(&tp).await, Ok(None)) {
            threepids.push(tp);
        }
    }
    if let Some(homeserver) = &state.homeserver {
        let emails: Vec<String> = threepids.iter().map(|t| t.address.clone()).collect();
        if let Err(e) = homeserver
            .provision_new_user(&user_id, &emails, mapped.display_name.as_deref())
            .await
        {
            return Err(Registered::Failed(pages::error(
                state,
                &format!("The homeserver could not be reached: {e}"),
                StatusCode::BAD_GATEWAY,
            )));
        }
    }
    let now = state.clock.now_ms();
    let registration = NewRegistration {
        user: NewUser {
            user_id: user_id.clone(),
            password_hash: None,
            is_admin: false,
            is_guest: false,
            created_at: now,
        },
        threepids,
        registration_token: None,
        session: None,
        upstream_link: Some(new_link(state, &user_id, identity)),
    };
    match state.store.register(registration).await {
        Ok(()) => {
            tracing::info!(user_id = %user_id, provider = %identity.provider, "registered through single sign-on");
            Ok(user_id)
        }
        Err(StoreError::UserExists) => Err(Registered::Taken),
        // The same person finished signing up in another window meanwhile.
        Err(StoreError::LinkInUse) => Err(Registered::Failed(pages::error(
            state,
            "Your account was just created in another window. Please sign in again from your application.",
            StatusCode::CONFLICT,
        ))),
        Err(e) => Err(Registered::Failed(pages::unavailable(state, &e))),
    }
}

fn new_link(state: &AppState, user_id: &UserId, identity: &Identity) -> UpstreamLink {
    UpstreamLink {
        user_id: user_id.clone(),
        provider: identity.provider.clone(),
        subject: identity.subject.clone(),
        created_at: state.clock.now_ms(),
    }
}

/// Why `user` may not sign in (deactivated, locked), as the page to show;
/// `None` when they may.
async fn refusal(state: &AppState, user: &UserId) -> Option<Response> {
    let refused = |message| Some(pages::error(state, message, StatusCode::FORBIDDEN));
    match state.store.user(user).await {
        Ok(Some(account)) if account.deactivated => refused("This account has been deactivated."),
        Ok(Some(account)) if account.locked => refused("This account has been locked."),
        Ok(Some(_)) => None,
        Ok(None) => refused("This account no longer exists."),
        Err(e) => Some(pages::unavailable(state, &e)),
    }
}

/// The mapped address, when the provider vouches for exactly it: its
/// `email` claim (or attribute) is verified and is the address the
/// template made. An address built from other claims (a username the
/// person chose) is never taken as verified.
fn verified_email(identity: &Identity, mapped: &Mapped) -> Option<String> {
    let claimed = identity.claims["email"].as_str()?;
    let claimed = canonical_threepid(Medium::Email, claimed).ok()?;
    (identity.email_verified && mapped.email.as_deref() == Some(claimed.address.as_str()))
        .then_some(claimed.address)
}

/// Hands a login token to the client at `redirect_url`: straight away when
/// the URL is on the allow-list, otherwise after a page that names where
/// it goes. `after_form` when answering a form post (whose redirects the
/// page's CSP would stop): the page then moves on by itself.
pub async fn login_token(
    state: &AppState,
    user: &UserId,
    redirect_url: &str,
    after_form: bool,
) -> Response {
    if let Some(refused) = refusal(state, user).await {
        return refused;
    }
    let minted = token::generate(token::TokenKind::Login);
    let now = state.clock.now_ms();
    let lifetime = state.config.tokens.login_token_lifetime_ms;
    if let Err(e) = state
        .store
        .create_login_token(
            &token::hash(&minted),
            user,
            now.saturating_add(lifetime),
            now,
        )
        .await
    {
        return pages::unavailable(state, &e);
    }
    let url = gatehouse_core::sso::with_login_token(redirect_url, &minted);
    let trusted =
        gatehouse_core::sso::redirect_trusted(redirect_url, &state.config.sso.client_allowlist);
    tracing::info!(user_id = %user, trusted, "single sign-on login token issued");
    if trusted && !after_form {
        return pages::redirect(&url);
    }
    pages::confirm(state, user, redirect_url, &url, trusted)
}

/// Adds `identity` to the signed-in account `user_id`.
async fn link(
    state: &AppState,
    provider: Provider<'_>,
    identity: &Identity,
    owner: Option<UserId>,
    user_id: &str,
) -> Response {
    let user = UserId::from_trusted(user_id.to_owned());
    let message = match owner {
        Some(o) if o == user => format!("Your {} account was already linked.", provider.name()),
        Some(_) => {
            return pages::error(
                state,
                &format!(
                    "This {} account is linked to another account.",
                    provider.name()
                ),
                StatusCode::CONFLICT,
            );
        }
        None => match state
            .store
            .add_upstream_link(&new_link(state, &user, identity))
            .await
        {
            Ok(()) => format!(
                "Your {} account is now linked: you can sign in with it.",
                provider.name()
            ),
            Err(StoreError::LinkInUse) => {
                return pages::error(
                    state,
                    &format!(
                        "This {} account is linked to another account.",
                        provider.name()
                    ),
                    StatusCode::CONFLICT,
                );
            }
            Err(e) => return pages::unavailable(state, &e),
        },
    };
    pages::linked(state, &message)
}

/// Marks `m.login.sso` done for a UIA session of `user_id`, when it is
/// a stage that session may take next.
async fn complete_stage(
    state: &AppState,
    session_id: &str,
    user_id: &str,
) -> crate::error::ApiResult<()> {
    let gone = || {
        crate::error::ApiError::new(
            ErrorKind::Unknown,
            "This session is unknown, expired or already used.",
        )
    };
    let mut session = crate::uia::live_session(state, session_id)
        .await?
        .ok_or_else(gone)?;
    if session.binding.user_id.as_deref() != Some(user_id) {
        return Err(gone());
    }
    let (_, flows) = crate::uia::session_flows(state, &session).await?;
    if !uia::stage_allowed(&flows, &session.completed, uia::SSO) {
        return Err(crate::error::ApiError::new(
            ErrorKind::Unauthorized,
            "This session does not need this step now.",
        ));
    }
    let seen = session.clone();
    uia::record(&mut session.completed, uia::SSO);
    crate::uia::save_progress(state, &seen, &session).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn identity(email: &str, verified: bool) -> Identity {
        Identity {
            provider: "acme".into(),
            subject: "1".into(),
            claims: json!({ "email": email, "preferred_username": "ceo" }),
            email_verified: verified,
        }
    }

    fn mapped(email: &str) -> Mapped {
        Mapped {
            email: Some(email.into()),
            ..Mapped::default()
        }
    }

    #[test]
    fn only_the_address_the_provider_verified_counts() {
        let verified = identity("Ann@Corp.example", true);
        assert_eq!(
            verified_email(&verified, &mapped("ann@corp.example")).as_deref(),
            Some("ann@corp.example")
        );
        // Made from another claim (a name the person chose): not verified.
        assert_eq!(verified_email(&verified, &mapped("ceo@corp.example")), None);
        assert_eq!(
            verified_email(
                &identity("ann@corp.example", false),
                &mapped("ann@corp.example")
            ),
            None
        );
    }
}
