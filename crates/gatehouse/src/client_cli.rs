//! `gatehouse client …`: a command-line Matrix client for the
//! authentication API, built on `gatehouse-client`, for any homeserver.
//!
//! Sessions are kept per profile in `$GATEHOUSE_CLIENT_DIR` (default
//! `~/.config/gatehouse/`), one JSON file each, readable only by the user.
//! Prompts read from the terminal without echo for secrets; when standard
//! input is not a terminal they read one line each from it (scripts).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use gatehouse_client::discovery::AutoDiscovery;
use gatehouse_client::sso::SsoCallback;
use gatehouse_client::{
    AuthInputs, Client, InteractiveAuth, LoginRequest, Session, StageStatus, TokenPurpose,
    UserIdentifier,
};
use gatehouse_client::{SsoAction, SsoKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Args)]
pub struct ClientArgs {
    /// Which stored session to use.
    #[arg(long, global = true, default_value = "default")]
    profile: String,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Find a server's client configuration from its domain (.well-known).
    Discover {
        domain: String,
        /// Use http:// (for local servers).
        #[arg(long)]
        insecure_http: bool,
    },
    /// Log in with a password and store the session.
    Login {
        /// Homeserver base URL.
        #[arg(long)]
        homeserver: String,
        /// User ID or localpart.
        #[arg(long, conflicts_with_all = ["email", "phone"])]
        user: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Phone number as dialled; with --country.
        #[arg(long, requires = "country")]
        phone: Option<String>,
        #[arg(long)]
        country: Option<String>,
        #[arg(long)]
        device_id: Option<String>,
        /// Ask for a refresh token (the SDK refreshes by itself).
        #[arg(long)]
        refresh: bool,
        /// Log in through the server's SSO in a browser: prints the URL,
        /// catches the login token on a loopback callback.
        #[arg(long, conflicts_with_all = ["user", "email", "phone"])]
        sso: bool,
        /// With --sso: the identity provider to use.
        #[arg(long, requires = "sso")]
        idp: Option<String>,
    },
    /// Register an account (answering the server's UIA stages) and store the session.
    Register {
        #[arg(long)]
        homeserver: String,
        #[arg(long)]
        username: String,
        /// An email address, for servers that verify one.
        #[arg(long)]
        email: Option<String>,
    },
    /// Show who the stored session belongs to.
    Whoami,
    /// Exchange the refresh token for new tokens now.
    Refresh,
    /// End the session (or every session of the account with --all).
    Logout {
        #[arg(long)]
        all: bool,
    },
    /// Devices of the account.
    Devices {
        #[command(subcommand)]
        command: DevicesCommand,
    },
    /// Change the password (asks for the current one).
    Passwd {
        /// Keep the other devices logged in.
        #[arg(long)]
        keep_devices: bool,
    },
    /// Deactivate the account, for good.
    Deactivate {
        /// Also ask the server to forget the account's data.
        #[arg(long)]
        erase: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum DevicesCommand {
    List,
    Rename { device_id: String, name: String },
    Delete { device_ids: Vec<String> },
}

/// What a profile file holds.
#[derive(Serialize, Deserialize)]
struct Stored {
    homeserver: String,
    session: Session,
}

fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("GATEHOUSE_CLIENT_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".config")
        });
    base.join("gatehouse")
}

fn profile_path(profile: &str) -> Result<PathBuf, String> {
    if profile.is_empty()
        || !profile
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err("a profile name is letters, digits, '-', '_' and '.'".into());
    }
    Ok(state_dir().join(format!("{profile}.json")))
}

fn save(profile: &str, homeserver: &str, session: &Session) -> Result<(), String> {
    let path = profile_path(profile)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&Stored {
        homeserver: homeserver.to_owned(),
        session: session.clone(),
    })
    .map_err(|e| e.to_string())?;
    let tmp = path.with_extension("json.tmp");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        // `mode` applies only when the file is created; a leftover one keeps
        // whatever it had, so set it again before writing the tokens.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| e.to_string())
}

fn load(profile: &str) -> Result<Stored, String> {
    let path = profile_path(profile)?;
    let text = std::fs::read_to_string(&path).map_err(|_| {
        format!("no session for profile '{profile}': run `gatehouse client login` first")
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A client on the stored session that writes refreshed tokens back.
fn client_for(profile: &str) -> Result<(Client, String), String> {
    let stored = load(profile)?;
    let (p, hs) = (profile.to_owned(), stored.homeserver.clone());
    let gone = profile_path(profile)?;
    let client = Client::builder(&stored.homeserver)
        .session(stored.session)
        .on_session_changed(move |s| {
            if let Err(e) = save(&p, &hs, s) {
                eprintln!("gatehouse: could not store the refreshed session: {e}");
            }
        })
        // A hard logout (token revoked, device deleted elsewhere): the stored
        // session can never work again. After a soft logout it is kept, so
        // that its user and device are still known.
        .on_logged_out(move |e| {
            if !e.soft_logout && std::fs::remove_file(&gone).is_ok() {
                eprintln!("gatehouse: the server ended this session; profile removed");
            }
        })
        .build()
        .map_err(|e| e.to_string())?;
    Ok((client, stored.homeserver))
}

/// Reads one answer: without echo from a terminal when `secret`, else a line.
fn ask(prompt: &str, secret: bool) -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        if secret {
            return rpassword::prompt_password(prompt).map_err(|e| e.to_string());
        }
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.is_empty() {
        return Err(format!(
            "no answer to '{}' on standard input",
            prompt.trim()
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn ask_async(prompt: String, secret: bool) -> Result<String, String> {
    tokio::task::spawn_blocking(move || ask(&prompt, secret))
        .await
        .map_err(|e| e.to_string())?
}

fn print(json_mode: bool, value: &Value, human: impl FnOnce() -> String) {
    if json_mode {
        println!("{value}");
    } else {
        println!("{}", human());
    }
}

/// How long `login --sso` waits for the browser to come back.
const SSO_WAIT: Duration = Duration::from_secs(600);

/// Runs a UIA-protected request, prompting in the terminal for each stage.
async fn with_uia(
    client: &Client,
    user_id: Option<String>,
    inputs: AuthInputs,
    request: impl Fn(
        Option<Value>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Value, gatehouse_client::Error>> + Send>,
    > + Send
    + Sync
    + 'static,
) -> Result<Value, String> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, StageStatus)>();
    let email_client = client.clone();
    let ia = InteractiveAuth::builder(
        move |auth, _| request(auth),
        move |stage, status| {
            let _ = tx.send((stage.to_owned(), status.clone()));
        },
    )
    .inputs(inputs)
    .request_email_token(move |email, secret, attempt, _| {
        let c = email_client.clone();
        Box::pin(async move {
            Ok(
                c.request_email_token(TokenPurpose::Register, &email, &secret, attempt, None)
                    .await?
                    .sid,
            )
        })
    })
    .build();
    let driver = ia.clone();
    let fallback = client.clone();
    let prompter = tokio::spawn(async move {
        'stages: while let Some((stage, status)) = rx.recv().await {
            if let Some(err) = &status.error {
                eprintln!("{err}");
            }
            let auth = match stage.as_str() {
                "m.login.password" => {
                    let Some(user) = user_id.clone() else {
                        return Err("the server asks for a password".to_owned());
                    };
                    let pw = ask_async("Password: ".into(), true).await?;
                    json!({"type": stage, "identifier": {"type": "m.id.user", "user": user}, "password": pw})
                }
                "m.login.registration_token" => {
                    let token = ask_async("Registration token: ".into(), false).await?;
                    json!({"type": stage, "token": token.trim()})
                }
                "m.login.terms" => {
                    for (name, p) in driver
                        .stage_params(&stage)
                        .and_then(|p| p.get("policies").cloned())
                        .and_then(|p| p.as_object().cloned())
                        .unwrap_or_default()
                    {
                        let en = p.get("en").cloned().unwrap_or_default();
                        eprintln!(
                            "{name}: {} {}",
                            en["name"].as_str().unwrap_or(""),
                            en["url"].as_str().unwrap_or("")
                        );
                    }
                    let yes = ask_async("Accept these policies? [y/N] ".into(), false).await?;
                    if !yes.trim().eq_ignore_ascii_case("y") {
                        return Err("policies not accepted".into());
                    }
                    json!({"type": stage})
                }
                "m.login.email.identity" => {
                    eprintln!("Open the link we emailed you; waiting…");
                    let spinner = ['|', '/', '-', '\\'];
                    for i in 0..600 {
                        if std::io::stderr().is_terminal() {
                            eprint!("\r{} ", spinner[i % 4]);
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        driver.poll().await;
                        // The link was opened and the server asks for the
                        // next stage (or the stage again, with an error).
                        if !rx.is_empty() {
                            if std::io::stderr().is_terminal() {
                                eprint!("\r");
                            }
                            continue 'stages;
                        }
                    }
                    return Err("the email link was not opened in time".into());
                }
                other => {
                    let session = driver.session_id().unwrap_or_default();
                    eprintln!(
                        "Complete '{other}' in a browser: {}",
                        fallback.fallback_auth_url(other, &session)
                    );
                    ask_async("Press Enter when done. ".into(), false).await?;
                    json!({})
                }
            };
            driver.submit_auth_dict(auth, false).await;
        }
        Ok(())
    });
    // Whichever ends first: authentication, or the user (no more answers).
    let mut prompter = prompter;
    tokio::select! {
        result = ia.attempt_auth() => {
            prompter.abort();
            result.map_err(|e| e.to_string())
        }
        asked = &mut prompter => match asked {
            Ok(Err(e)) => Err(e),
            _ => Err("authentication was abandoned".into()),
        },
    }
}

/// Sends a login request (password or token) and stores the session.
async fn finish_login(
    client: &Client,
    request: LoginRequest,
    refresh: bool,
    device_id: Option<String>,
    profile: &str,
    homeserver: &str,
    json_mode: bool,
) -> Result<(), String> {
    let mut request = request
        .refresh_token(refresh)
        .initial_device_display_name("gatehouse CLI");
    if let Some(d) = device_id {
        request = request.device_id(d);
    }
    let r = client
        .login_request(request)
        .await
        .map_err(|e| e.to_string())?;
    save(profile, homeserver, &r.session())?;
    print(
        json_mode,
        &json!({"user_id": r.user_id, "device_id": r.device_id}),
        || {
            format!(
                "Logged in as {} (device {})",
                r.user_id,
                r.device_id.clone().unwrap_or_default()
            )
        },
    );
    Ok(())
}

pub async fn run(args: ClientArgs, cli: &mut clap::Command) -> Result<(), String> {
    let (profile, json_mode) = (args.profile, args.json);
    match args.command {
        ClientCommand::Completions { shell } => {
            clap_complete::generate(shell, cli, "gatehouse", &mut std::io::stdout());
        }
        ClientCommand::Discover {
            domain,
            insecure_http,
        } => {
            let d = if insecure_http {
                AutoDiscovery::new().with_scheme("http")
            } else {
                AutoDiscovery::new()
            };
            let found = d.find_client_config(&domain).await;
            let hs = &found.homeserver;
            let value = json!({"state": format!("{:?}", hs.state), "base_url": hs.base_url, "error": hs.error,
                "identity_server": {"state": format!("{:?}", found.identity_server.state), "base_url": found.identity_server.base_url}});
            print(json_mode, &value, || match &hs.base_url {
                Some(url) => format!("{:?}: {url}", hs.state),
                None => format!("{:?}: {}", hs.state, hs.error.clone().unwrap_or_default()),
            });
        }
        ClientCommand::Login {
            homeserver,
            sso: true,
            idp,
            device_id,
            refresh,
            ..
        } => {
            let client = Client::builder(&homeserver)
                .build()
                .map_err(|e| e.to_string())?;
            let callback = SsoCallback::bind().await.map_err(|e| e.to_string())?;
            let url = client.sso_login_url(
                callback.url(),
                SsoKind::Sso,
                idp.as_deref(),
                Some(SsoAction::Login),
            );
            // On stderr, like every prompt: stdout stays clean for --json.
            eprintln!("Open this URL in your browser to log in:\n{url}");
            let token = tokio::time::timeout(SSO_WAIT, callback.login_token())
                .await
                .map_err(|_| "no SSO redirect arrived within 10 minutes".to_owned())?
                .map_err(|e| e.to_string())?;
            let req = LoginRequest::token(token);
            finish_login(
                &client,
                req,
                refresh,
                device_id,
                &profile,
                &homeserver,
                json_mode,
            )
            .await?;
        }
        ClientCommand::Login {
            homeserver,
            user,
            email,
            phone,
            country,
            device_id,
            refresh,
            ..
        } => {
            let identifier = match (user, email, phone, country) {
                (Some(u), _, _, _) => UserIdentifier::user(u),
                (None, Some(e), _, _) => UserIdentifier::email(e),
                (None, None, Some(p), Some(c)) => UserIdentifier::phone(c, p),
                _ => return Err("give --user, --email, or --phone with --country".into()),
            };
            let password = ask_async("Password: ".into(), true).await?;
            let client = Client::builder(&homeserver)
                .build()
                .map_err(|e| e.to_string())?;
            let req = LoginRequest::password(identifier, password);
            finish_login(
                &client,
                req,
                refresh,
                device_id,
                &profile,
                &homeserver,
                json_mode,
            )
            .await?;
        }
        ClientCommand::Register {
            homeserver,
            username,
            email,
        } => {
            let password = ask_async("New password: ".into(), true).await?;
            let client = Client::builder(&homeserver)
                .build()
                .map_err(|e| e.to_string())?;
            let c = client.clone();
            let body = json!({"username": username, "password": password, "initial_device_display_name": "gatehouse CLI"});
            let inputs = AuthInputs {
                email_address: email,
                ..AuthInputs::default()
            };
            let v = with_uia(&client, None, inputs, move |auth| {
                let (c, body) = (c.clone(), body.clone());
                Box::pin(async move { c.register(body, auth).await })
            })
            .await?;
            let user_id = v["user_id"].as_str().unwrap_or_default().to_owned();
            if let Some(at) = v["access_token"].as_str() {
                let session = Session {
                    access_token: at.to_owned(),
                    user_id: user_id.clone(),
                    device_id: v["device_id"].as_str().map(str::to_owned),
                    ..Session::default()
                };
                save(&profile, &homeserver, &session)?;
            }
            print(json_mode, &json!({"user_id": user_id}), || {
                format!("Registered {user_id}")
            });
        }
        ClientCommand::Whoami => {
            let (client, _) = client_for(&profile)?;
            let me = client.whoami().await.map_err(|e| e.to_string())?;
            print(
                json_mode,
                &json!({"user_id": me.user_id, "device_id": me.device_id, "is_guest": me.is_guest}),
                || {
                    format!(
                        "{} (device {})",
                        me.user_id,
                        me.device_id.clone().unwrap_or_default()
                    )
                },
            );
        }
        ClientCommand::Refresh => {
            let (client, _) = client_for(&profile)?;
            let s = client.refresh().await.map_err(|e| e.to_string())?;
            print(
                json_mode,
                &json!({"expires_at_ms": s.expires_at_ms}),
                || "Tokens refreshed".into(),
            );
        }
        ClientCommand::Logout { all } => {
            let (client, _) = client_for(&profile)?;
            if all {
                client.logout_all().await
            } else {
                client.logout().await
            }
            .map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(profile_path(&profile)?);
            print(json_mode, &json!({}), || "Logged out".into());
        }
        ClientCommand::Devices { command } => {
            let (client, _) = client_for(&profile)?;
            let user = client.session().map(|s| s.user_id);
            match command {
                DevicesCommand::List => {
                    let devices = client.devices().await.map_err(|e| e.to_string())?;
                    let value = json!(devices.iter().map(|d| json!({"device_id": d.device_id, "display_name": d.display_name, "last_seen_ip": d.last_seen_ip, "last_seen_ts": d.last_seen_ts})).collect::<Vec<_>>());
                    print(json_mode, &value, || {
                        devices
                            .iter()
                            .map(|d| {
                                format!(
                                    "{}\t{}\t{}",
                                    d.device_id,
                                    d.display_name.clone().unwrap_or_default(),
                                    d.last_seen_ip.clone().unwrap_or_default()
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    });
                }
                DevicesCommand::Rename { device_id, name } => {
                    client
                        .set_device_display_name(&device_id, &name)
                        .await
                        .map_err(|e| e.to_string())?;
                    print(json_mode, &json!({}), || format!("Renamed {device_id}"));
                }
                DevicesCommand::Delete { device_ids } => {
                    let c = client.clone();
                    let ids = device_ids.clone();
                    with_uia(&client, user, AuthInputs::default(), move |auth| {
                        let (c, ids) = (c.clone(), ids.clone());
                        Box::pin(
                            async move { c.delete_devices(&ids, auth).await.map(|()| json!({})) },
                        )
                    })
                    .await?;
                    print(json_mode, &json!({"deleted": device_ids}), || {
                        format!("Deleted {}", device_ids.join(", "))
                    });
                }
            }
        }
        ClientCommand::Passwd { keep_devices } => {
            let (client, _) = client_for(&profile)?;
            let user = client.session().map(|s| s.user_id);
            let new = ask_async("New password: ".into(), true).await?;
            let again = ask_async("New password again: ".into(), true).await?;
            if new != again {
                return Err("the new passwords do not match".into());
            }
            let c = client.clone();
            with_uia(&client, user, AuthInputs::default(), move |auth| {
                let (c, new) = (c.clone(), new.clone());
                Box::pin(async move {
                    c.set_password(&new, !keep_devices, auth)
                        .await
                        .map(|()| json!({}))
                })
            })
            .await?;
            print(json_mode, &json!({}), || "Password changed".into());
        }
        ClientCommand::Deactivate { erase, yes } => {
            let (client, _) = client_for(&profile)?;
            let user = client.session().map(|s| s.user_id);
            if !yes {
                let answer = ask_async(
                    format!(
                        "Deactivate {} for good? Type 'yes': ",
                        user.clone().unwrap_or_default()
                    ),
                    false,
                )
                .await?;
                if answer.trim() != "yes" {
                    return Err("not deactivated".into());
                }
            }
            let c = client.clone();
            with_uia(&client, user, AuthInputs::default(), move |auth| {
                let c = c.clone();
                Box::pin(async move { c.deactivate_account(auth, erase).await })
            })
            .await?;
            let _ = std::fs::remove_file(profile_path(&profile)?);
            print(json_mode, &json!({}), || "Account deactivated".into());
        }
    }
    Ok(())
}
