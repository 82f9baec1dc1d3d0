//! Admin commands, run against the same database as the server.

use std::io::IsTerminal;
use std::sync::Arc;

use clap::Subcommand;
use gatehouse_core::identifier::{Medium, canonical_threepid};
use gatehouse_core::user_id::UserId;
use gatehouse_core::{Clock, SystemClock};
use gatehouse_server::config::Config;
use gatehouse_server::homeserver::Homeserver;
use gatehouse_store::{
    HomeserverChange, Moderation, NewUser, RegistrationToken, Store, StoreError,
};
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an account.
    Create {
        /// Localpart (e.g. alice) or full user ID.
        name: String,
        /// The password; prompted for (without echo) when absent.
        #[arg(long)]
        password: Option<String>,
        /// Bind an email address.
        #[arg(long)]
        email: Option<String>,
        /// Bind a phone number, in international form (+447400123456).
        #[arg(long)]
        phone: Option<String>,
        /// Make the account a server admin.
        #[arg(long)]
        admin: bool,
    },
    /// List accounts.
    List,
    /// Set an account's password.
    SetPassword {
        /// Localpart (e.g. alice) or full user ID.
        name: String,
        /// The new password; prompted for (without echo) when absent.
        #[arg(long)]
        password: Option<String>,
    },
    /// Deactivate an account: it can no longer log in, its sessions end, its
    /// third-party IDs are released; the name is never reused.
    Deactivate {
        /// Localpart (e.g. alice) or full user ID.
        name: String,
        /// Also erase the profile on the homeserver (with delegation).
        #[arg(long)]
        erase: bool,
    },
    /// Let a deactivated account log in again (its old sessions, 3PIDs and
    /// keys stay gone).
    Reactivate {
        /// Localpart (e.g. alice) or full user ID.
        name: String,
    },
    /// Make an account a server admin (with delegation: the homeserver's
    /// admin API too), or no longer one with --revoke.
    Admin {
        /// Localpart (e.g. alice) or full user ID.
        name: String,
        /// Take the admin rights away instead.
        #[arg(long)]
        revoke: bool,
    },
    /// Lock an account (every request but logout gets M_USER_LOCKED; its
    /// sessions are kept for when it is unlocked), or unlock it.
    Lock {
        /// Localpart (e.g. alice) or full user ID.
        name: String,
        /// Lift the lock instead.
        #[arg(long)]
        unlock: bool,
    },
    /// Suspend an account (it may log in and manage itself, but not remove
    /// contact addresses; the homeserver refuses the rest), or lift it.
    Suspend {
        /// Localpart (e.g. alice) or full user ID.
        name: String,
        /// Lift the suspension instead.
        #[arg(long)]
        unsuspend: bool,
    },
    /// Bind an email address or phone number to an account.
    AddThreepid {
        /// Localpart (e.g. alice) or full user ID.
        name: String,
        /// The email address to bind.
        #[arg(long, required_unless_present = "phone")]
        email: Option<String>,
        /// The phone number to bind, in international form (+447400123456).
        #[arg(long, conflicts_with = "email")]
        phone: Option<String>,
    },
    /// List the identities at upstream providers (single sign-on) that
    /// sign in to an account.
    Links {
        /// Localpart (e.g. alice) or full user ID.
        name: String,
    },
    /// Link an identity at an upstream provider to an account: signing in
    /// there then signs in to it.
    Link {
        /// Localpart (e.g. alice) or full user ID.
        name: String,
        /// The provider's `idp_id` in `[sso]`.
        #[arg(long)]
        provider: String,
        /// The provider's name for the person (OIDC `sub`, CAS user).
        #[arg(long)]
        subject: String,
    },
    /// Unlink an identity; refused when it is the account's last way to
    /// sign in (no password, no other link).
    Unlink {
        /// Localpart (e.g. alice) or full user ID.
        name: String,
        #[arg(long)]
        provider: String,
        #[arg(long)]
        subject: String,
    },
}

fn user_id(config: &Config, name: &str) -> Result<UserId, String> {
    let local = match name.strip_prefix('@') {
        Some(rest) => {
            let (local, server) = rest
                .split_once(':')
                .ok_or("a full user ID needs a server name")?;
            if server != config.server_name {
                return Err(format!(
                    "{name} is not on this server ({})",
                    config.server_name
                ));
            }
            local
        }
        None => name,
    };
    UserId::new(local, &config.server_name).map_err(|e| format!("invalid user name '{name}': {e}"))
}

fn password_from(arg: Option<String>) -> Result<Zeroizing<String>, String> {
    if let Some(p) = arg {
        return Ok(Zeroizing::new(p));
    }
    if !std::io::stdin().is_terminal() {
        // Scripts pipe the password in: one line, no prompt, no echo to worry about.
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let password = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
        if password.is_empty() {
            return Err("the password is empty".into());
        }
        return Ok(password);
    }
    let first =
        Zeroizing::new(rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?);
    let second = Zeroizing::new(rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?);
    if first != second {
        return Err("passwords do not match".into());
    }
    if first.is_empty() {
        return Err("the password is empty".into());
    }
    Ok(first)
}

fn threepid_of(
    email: Option<&str>,
    phone: Option<&str>,
) -> Result<Option<gatehouse_core::identifier::Threepid>, String> {
    let found = match (email, phone) {
        (Some(e), _) => Some(canonical_threepid(Medium::Email, e)),
        (None, Some(p)) => Some(canonical_threepid(Medium::Msisdn, p)),
        (None, None) => None,
    };
    found.transpose().map_err(|e| e.to_string())
}

pub async fn run(config: &Config, command: UserCommand) -> Result<(), String> {
    let store: Arc<dyn Store> = gatehouse_server::open_database(config)
        .await
        .map_err(|e| e.to_string())?
        .store();
    let now = SystemClock.now_ms();
    let policy = config.password_policy().map_err(|e| e.to_string())?;
    let homeserver = Homeserver::from_config(config, store.clone(), Arc::new(SystemClock))
        .map_err(|e| e.to_string())?;
    // Changes the homeserver must learn go through it (recorded, made,
    // pushed); without delegation they are just made.
    let told = |id: UserId, change: HomeserverChange| {
        let homeserver = homeserver.as_ref();
        async move |local: std::pin::Pin<
            Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>,
        >| {
            let out = match homeserver {
                Some(h) => h.change(&id, change, local).await,
                None => local.await,
            };
            if let Some(h) = homeserver
                && out.is_ok()
                && !h.in_step(&id).await
            {
                eprintln!(
                    "note: the homeserver could not be told yet; the running server retries until it is"
                );
            }
            out.map_err(|e| format!("{id}: {e}"))
        }
    };
    match command {
        UserCommand::Create {
            name,
            password,
            email,
            phone,
            admin,
        } => {
            let id = user_id(config, &name)?;
            let mut threepids = Vec::new();
            if let Some(tp) = threepid_of(email.as_deref(), None)? {
                threepids.push(tp);
            }
            if let Some(tp) = threepid_of(None, phone.as_deref())? {
                threepids.push(tp);
            }
            let password = password_from(password)?;
            let hash = tokio::task::spawn_blocking(move || policy.hash(&password))
                .await
                .map_err(|e| e.to_string())?;
            store
                .create_user(NewUser {
                    user_id: id.clone(),
                    password_hash: Some(hash),
                    is_admin: admin,
                    is_guest: false,
                    created_at: now,
                })
                .await
                .map_err(|e| format!("cannot create {id}: {e}"))?;
            for tp in threepids {
                store
                    .add_threepid(&id, &tp, now)
                    .await
                    .map_err(|e| format!("cannot bind {}: {e}", tp.address))?;
            }
            println!("created {id}");
        }
        UserCommand::List => {
            for u in store.list_users().await.map_err(|e| e.to_string())? {
                let mut flags = Vec::new();
                if u.is_admin {
                    flags.push("admin");
                }
                if u.deactivated {
                    flags.push("deactivated");
                }
                let threepids = store
                    .threepids(&u.user_id)
                    .await
                    .map_err(|e| e.to_string())?;
                let tps: Vec<String> = threepids
                    .iter()
                    .map(|t| format!("{}:{}", t.threepid.medium.as_str(), t.threepid.address))
                    .collect();
                println!("{}\t{}\t{}", u.user_id, flags.join(","), tps.join(","));
            }
        }
        UserCommand::SetPassword { name, password } => {
            let id = user_id(config, &name)?;
            let password = password_from(password)?;
            let hash = tokio::task::spawn_blocking(move || policy.hash(&password))
                .await
                .map_err(|e| e.to_string())?;
            store
                .set_password_hash(&id, &hash, gatehouse_store::EndSessions::Keep)
                .await
                .map_err(|e| format!("{id}: {e}"))?;
            println!("password set for {id}");
        }
        UserCommand::Deactivate { name, erase } => {
            let id = user_id(config, &name)?;
            let change = HomeserverChange {
                erase,
                ..HomeserverChange::default()
            };
            told(id.clone(), change)(Box::pin(store.deactivate_user(&id))).await?;
            println!("deactivated {id}");
        }
        UserCommand::Reactivate { name } => {
            let id = user_id(config, &name)?;
            let change = HomeserverChange {
                reactivate: true,
                ..HomeserverChange::default()
            };
            told(id.clone(), change)(Box::pin(store.reactivate_user(&id))).await?;
            println!("reactivated {id}");
        }
        UserCommand::Admin { name, revoke } => {
            let id = user_id(config, &name)?;
            store
                .set_admin(&id, !revoke)
                .await
                .map_err(|e| format!("{id}: {e}"))?;
            // Tokens already introspected keep their old scope for as long
            // as the homeserver caches them (two minutes in Synapse).
            println!(
                "{id} is {}a server admin",
                if revoke { "no longer " } else { "" }
            );
        }
        UserCommand::Lock { name, unlock } => {
            let id = user_id(config, &name)?;
            told(id.clone(), HomeserverChange::default())(Box::pin(store.set_moderation(
                &id,
                Moderation::Lock,
                !unlock,
            )))
            .await?;
            // A running server sees it within `tokens.cache_ttl_ms`; the
            // admin API (`PUT /_matrix/client/v1/admin/lock/{userId}`) at once.
            println!("{id} is {}", if unlock { "unlocked" } else { "locked" });
        }
        UserCommand::Suspend { name, unsuspend } => {
            let id = user_id(config, &name)?;
            // The homeserver enforces most of a suspension, and only its
            // admin API (with an administrator's token) can set it: a
            // suspension made here alone would leave the two disagreeing.
            if homeserver.is_some() {
                return Err(format!(
                    "{id}: with a homeserver, suspend through the admin API \
                     (PUT /_matrix/client/v1/admin/suspend/{id} with a server admin's token), \
                     which tells the homeserver too"
                ));
            }
            store
                .set_moderation(&id, Moderation::Suspension, !unsuspend)
                .await
                .map_err(|e| format!("{id}: {e}"))?;
            println!(
                "{id} is {}",
                if unsuspend {
                    "no longer suspended"
                } else {
                    "suspended"
                }
            );
        }
        UserCommand::AddThreepid { name, email, phone } => {
            let id = user_id(config, &name)?;
            let tp = threepid_of(email.as_deref(), phone.as_deref())?
                .ok_or("give --email or --phone")?;
            told(id.clone(), HomeserverChange::default())(Box::pin(
                store.add_threepid(&id, &tp, now),
            ))
            .await
            .map_err(|e| format!("cannot bind {}: {e}", tp.address))?;
            println!("bound {}:{} to {id}", tp.medium.as_str(), tp.address);
        }
        UserCommand::Links { name } => {
            let id = user_id(config, &name)?;
            for link in store.upstream_links(&id).await.map_err(|e| e.to_string())? {
                println!("{}\t{}", link.provider, link.subject);
            }
        }
        UserCommand::Link {
            name,
            provider,
            subject,
        } => {
            let id = user_id(config, &name)?;
            if store.user(&id).await.map_err(|e| e.to_string())?.is_none() {
                return Err(format!("{id}: no such user"));
            }
            if !config.sso.providers().any(|p| p.idp_id == provider) {
                return Err(format!("{provider}: no such provider in [sso]"));
            }
            let link = gatehouse_store::UpstreamLink {
                user_id: id.clone(),
                provider: provider.clone(),
                subject: subject.clone(),
                created_at: now,
            };
            match store.add_upstream_link(&link).await {
                Ok(()) => println!("linked {provider}:{subject} to {id}"),
                Err(gatehouse_store::StoreError::LinkInUse) => {
                    return Err(format!(
                        "{provider}:{subject} is already linked to an account"
                    ));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        UserCommand::Unlink {
            name,
            provider,
            subject,
        } => {
            let id = user_id(config, &name)?;
            match store
                .remove_upstream_link(&id, &provider, &subject)
                .await
                .map_err(|e| e.to_string())?
            {
                gatehouse_store::Unlinked::Removed => {
                    println!("unlinked {provider}:{subject} from {id}")
                }
                gatehouse_store::Unlinked::LastWayIn => {
                    return Err(format!(
                        "{provider}:{subject} is {id}'s only way to sign in: set a password or link another identity first"
                    ));
                }
                gatehouse_store::Unlinked::NotFound => {
                    return Err(format!("{provider}:{subject} is not linked to {id}"));
                }
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it.
    Create {
        /// The token (letters, digits, '.', '_', '~', '-'); random when absent.
        #[arg(long)]
        token: Option<String>,
        /// How many registrations may use it; unlimited when absent.
        #[arg(long)]
        uses: Option<u32>,
        /// Validity in seconds from now; forever when absent.
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// List tokens with their use counts.
    List,
    /// Revoke a token.
    Revoke {
        /// The token to revoke.
        token: String,
    },
}

pub async fn run_tokens(config: &Config, command: TokenCommand) -> Result<(), String> {
    let store: Arc<dyn Store> = gatehouse_server::open_database(config)
        .await
        .map_err(|e| e.to_string())?
        .store();
    let now = SystemClock.now_ms();
    match command {
        TokenCommand::Create {
            token,
            uses,
            expires_in,
        } => {
            let token = token.unwrap_or_else(|| gatehouse_core::token::random_alphanumeric(16));
            let grammar = |b: u8| b.is_ascii_alphanumeric() || b"._~-".contains(&b);
            if token.is_empty() || token.len() > 64 || !token.bytes().all(grammar) {
                return Err(
                    "a token is 1-64 characters of A-Z, a-z, 0-9, '.', '_', '~', '-'".into(),
                );
            }
            let expiry = expires_in.map(|s| now.saturating_add(s.saturating_mul(1000)));
            let record = RegistrationToken {
                token: token.clone(),
                uses_allowed: uses,
                pending: 0,
                completed: 0,
                expiry,
            };
            store
                .create_registration_token(&record, now)
                .await
                .map_err(|e| format!("{token}: {e}"))?;
            println!("{token}");
        }
        TokenCommand::List => {
            for t in store
                .registration_tokens()
                .await
                .map_err(|e| e.to_string())?
            {
                let uses = t
                    .uses_allowed
                    .map_or_else(|| "unlimited".to_owned(), |u| u.to_string());
                let expiry = t
                    .expiry
                    .map_or_else(|| "never".to_owned(), |e| e.to_string());
                let state = if t.usable(now) {
                    "valid"
                } else {
                    "exhausted-or-expired"
                };
                println!(
                    "{}\tuses={uses}\tpending={}\tcompleted={}\texpiry_ms={expiry}\t{state}",
                    t.token, t.pending, t.completed
                );
            }
        }
        TokenCommand::Revoke { token } => {
            if !store
                .delete_registration_token(&token)
                .await
                .map_err(|e| e.to_string())?
            {
                return Err(format!("no such token: {token}"));
            }
            println!("revoked {token}");
        }
    }
    Ok(())
}
