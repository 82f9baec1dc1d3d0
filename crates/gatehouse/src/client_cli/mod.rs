//! `gatehouse client …`: a command-line Matrix client for the
//! authentication API, built on `gatehouse-client`, for any homeserver.
//!
//! Sessions are kept per profile (see [`profile`]). Everything that can be
//! checked is checked before the person is asked anything: the server is
//! found and its login flows read before a password prompt, a username's
//! availability before a new password, device IDs before UIA.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use gatehouse_client::discovery::{AutoDiscovery, DiscoveryState};
use gatehouse_client::sso::SsoCallback;
use gatehouse_client::{
    AuthInputs, Client, LoginRequest, LoginResponse, SsoAction, SsoKind, UserIdentifier,
};
use serde_json::{Value, json};

mod profile;
mod prompt;
mod server;
mod uia;

use profile::{Profile, Stored};
use prompt::{Spinner, ask_async, confirm, new_password};
use uia::{PasswordStage, with_uia};

#[derive(Args)]
pub struct ClientArgs {
    /// Which stored session to use: a name of letters, digits, '-', '_', '.'.
    #[arg(long, global = true, default_value = "default")]
    profile: String,
    /// Print results, and errors, as JSON on standard output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Find a server's client configuration from its name (.well-known).
    Discover {
        /// The server name, such as example.org.
        server_name: String,
        /// Use http:// rather than https:// (local test servers).
        #[arg(long)]
        insecure_http: bool,
    },
    /// Log in (password or SSO) and store the session in the profile.
    Login {
        /// The server: its name (example.org, found by discovery) or a
        /// homeserver URL (https://matrix.example.org).
        #[arg(long)]
        homeserver: String,
        /// User ID or localpart.
        #[arg(long, conflicts_with_all = ["email", "phone"])]
        user: Option<String>,
        /// Log in with an email address bound to the account.
        #[arg(long)]
        email: Option<String>,
        /// A phone number bound to the account, as dialled; with --country.
        #[arg(long, requires = "country")]
        phone: Option<String>,
        /// The phone number's two-letter country code (GB, US…).
        #[arg(long)]
        country: Option<String>,
        /// Log in to this device ID (default: a new device).
        #[arg(long)]
        device_id: Option<String>,
        /// Name of a new device (default: "gatehouse CLI on <host name>").
        #[arg(long)]
        device_name: Option<String>,
        /// Ask for a refresh token (the session then refreshes by itself).
        #[arg(long)]
        refresh: bool,
        /// Log in through the server's SSO in a browser: prints the URL,
        /// catches the login token on a loopback callback.
        #[arg(long, conflicts_with_all = ["user", "email", "phone"])]
        sso: bool,
        /// With --sso: the identity provider to use.
        #[arg(long, requires = "sso")]
        idp: Option<String>,
        /// Use http:// for a server name given without a scheme.
        #[arg(long)]
        insecure_http: bool,
    },
    /// Register an account (answering the server's UIA stages) and store the session.
    Register {
        /// The server: its name (found by discovery) or a homeserver URL.
        #[arg(long)]
        homeserver: String,
        /// The new account's localpart.
        #[arg(long)]
        username: String,
        /// An email address, for servers that verify one.
        #[arg(long)]
        email: Option<String>,
        /// Name of the new device (default: "gatehouse CLI on <host name>").
        #[arg(long)]
        device_name: Option<String>,
        /// Ask for a refresh token.
        #[arg(long)]
        refresh: bool,
        /// Use http:// for a server name given without a scheme.
        #[arg(long)]
        insecure_http: bool,
    },
    /// Show who the stored session belongs to.
    Whoami,
    /// Exchange the refresh token for new tokens now.
    Refresh,
    /// End the session (or every session of the account with --all).
    Logout {
        /// Log out every device of the account.
        #[arg(long)]
        all: bool,
        /// Only forget the stored session; the server is not told (the
        /// device stays logged in there).
        #[arg(long, conflicts_with = "all")]
        local: bool,
    },
    /// Devices of the account.
    Devices {
        #[command(subcommand)]
        command: DevicesCommand,
    },
    /// Change the password (asks for the new one twice, then the current one).
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
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum DevicesCommand {
    /// List the account's devices; `*` marks this profile's own.
    List,
    /// Rename a device.
    Rename {
        /// The device to rename.
        device_id: String,
        /// Its new name.
        name: String,
    },
    /// Delete devices (asks for the password).
    Delete {
        /// The devices to delete.
        #[arg(required = true)]
        device_ids: Vec<String>,
        /// Do not ask before deleting this profile's own device.
        #[arg(long)]
        yes: bool,
    },
}

/// A failed command: what to tell the person, and the Matrix error code
/// behind it, if any (for `--json`).
#[derive(Debug)]
pub struct CliError {
    message: String,
    errcode: Option<String>,
    /// Already shown (as part of the command's own output).
    reported: bool,
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        Self {
            message,
            errcode: None,
            reported: false,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

impl From<gatehouse_client::Error> for CliError {
    fn from(e: gatehouse_client::Error) -> Self {
        Self {
            errcode: e.errcode().map(|c| c.as_str().to_owned()),
            message: e.to_string(),
            reported: false,
        }
    }
}

/// Writes `text` and a newline to standard output. A closed pipe (`| head`)
/// ends the output quietly instead of panicking as `println!` would.
fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

fn print(json_mode: bool, value: &Value, human: impl FnOnce() -> String) {
    if json_mode {
        out(&value.to_string());
    } else {
        out(&human());
    }
}

/// Runs a client command to its exit status; errors go to standard error,
/// or as JSON to standard output with `--json`.
pub fn main(args: ClientArgs, cli: &mut clap::Command) -> ExitCode {
    let json_mode = args.json;
    let result = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(args, cli)),
        Err(e) => Err(format!("cannot start the runtime: {e}").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.reported => ExitCode::FAILURE,
        Err(e) => {
            if json_mode {
                out(&json!({"error": e.message, "errcode": e.errcode}).to_string());
            } else {
                eprintln!("gatehouse: {}", e.message);
            }
            ExitCode::FAILURE
        }
    }
}

/// How long `login --sso` waits for the browser to come back.
const SSO_WAIT: Duration = Duration::from_secs(600);

/// A client on the profile's session, persisted both ways: refreshed
/// tokens are saved (under the profile's lock, shared with every other
/// process using it), and a session the server ended is forgotten.
fn client_for(profile: &Profile) -> Result<(Client, Stored), CliError> {
    let stored = profile.load()?;
    let (reader, writer) = (profile.clone(), profile.clone());
    let (hs_read, hs_write) = (stored.homeserver.clone(), stored.homeserver.clone());
    let client = Client::builder(&stored.homeserver)
        .session(stored.session.clone())
        .session_callbacks(
            move || {
                Ok(reader
                    .read()?
                    .filter(|s| s.homeserver == hs_read)
                    .map(|s| s.session))
            },
            move |session| match session {
                Some(s) => writer.save(&hs_write, s),
                None => writer.remove().map(drop),
            },
        )
        .cross_process_refresh_lock(profile.refresh_lock())
        // A hard logout (token revoked, device deleted elsewhere): the
        // stored session can never work again, and is gone. After a soft
        // logout it is kept, so that its user and device are still known.
        .on_logged_out(|e| {
            if !e.soft_logout {
                eprintln!(
                    "gatehouse: the server ended this session ({}); profile removed, log in again with `gatehouse client login`",
                    e.message
                );
            }
        })
        .build()?;
    Ok((client, stored))
}

/// Sends a login request and stores the session.
async fn finish_login(
    client: &Client,
    request: LoginRequest,
    profile: &Profile,
    json_mode: bool,
) -> Result<(), CliError> {
    let r = client.login_request(request).await?;
    if let Some(old) = profile.read()? {
        eprintln!(
            "note: profile '{}' held {}'s session; replaced",
            profile.name, old.session.user_id
        );
    }
    profile.save(client.base_url(), &r.session())?;
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

async fn run(args: ClientArgs, cli: &mut clap::Command) -> Result<(), CliError> {
    let profile = Profile::named(&args.profile)?;
    let json_mode = args.json;
    match args.command {
        ClientCommand::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, cli, "gatehouse", &mut script);
            let _ = std::io::stdout().lock().write_all(&script);
        }
        ClientCommand::Discover {
            server_name,
            insecure_http,
        } => discover(&server_name, insecure_http, json_mode).await?,
        ClientCommand::Login {
            homeserver,
            user,
            email,
            phone,
            country,
            device_id,
            device_name,
            refresh,
            sso,
            idp,
            insecure_http,
        } => {
            let identifier = match (sso, user, email, phone, country) {
                (true, ..) => None,
                (false, Some(u), ..) => Some(UserIdentifier::user(u)),
                (false, None, Some(e), ..) => Some(UserIdentifier::email(e)),
                (false, None, None, Some(p), Some(c)) => Some(UserIdentifier::phone(c, p)),
                _ => return Err("give --user, --email, --phone with --country, or --sso".into()),
            };
            let base = server::resolve(&homeserver, insecure_http).await?;
            let client = Client::builder(&base).build()?;
            let request = match identifier {
                None => {
                    server::require_login_flow(&client, "m.login.sso", idp.as_deref()).await?;
                    LoginRequest::token(sso_login_token(&client, idp.as_deref()).await?)
                }
                Some(identifier) => {
                    server::require_login_flow(&client, "m.login.password", None).await?;
                    let password = ask_async("Password: ", true).await?;
                    LoginRequest::password(identifier, password)
                }
            };
            let mut request = request.refresh_token(refresh).initial_device_display_name(
                device_name.unwrap_or_else(server::default_device_name),
            );
            if let Some(d) = device_id {
                request = request.device_id(d);
            }
            finish_login(&client, request, &profile, json_mode).await?;
        }
        ClientCommand::Register {
            homeserver,
            username,
            email,
            device_name,
            refresh,
            insecure_http,
        } => {
            if let Some(old) = profile.read()? {
                return Err(format!(
                    "profile '{}' holds {}'s session: choose another with --profile NAME, or log out first",
                    profile.name, old.session.user_id
                )
                .into());
            }
            let base = server::resolve(&homeserver, insecure_http).await?;
            let client = Client::builder(&base).build()?;
            // The name first: no password is typed for a name that cannot be had.
            if !client.is_username_available(&username).await? {
                return Err(format!("the username '{username}' is taken").into());
            }
            let password = new_password().await?;
            let body = json!({
                "username": username,
                "password": password,
                "initial_device_display_name": device_name.unwrap_or_else(server::default_device_name),
                "refresh_token": refresh,
            });
            let inputs = AuthInputs {
                email_address: email,
                ..AuthInputs::default()
            };
            let c = client.clone();
            let v = with_uia(
                &client,
                None,
                inputs,
                Box::new(move |auth| {
                    let (c, body) = (c.clone(), body.clone());
                    Box::pin(async move { c.register(body, auth).await })
                }),
            )
            .await?;
            let user_id = v["user_id"].as_str().unwrap_or_default().to_owned();
            if let Ok(registered) = serde_json::from_value::<LoginResponse>(v) {
                profile.save(client.base_url(), &registered.session())?;
            }
            print(json_mode, &json!({"user_id": user_id}), || {
                format!("Registered {user_id}")
            });
        }
        ClientCommand::Whoami => {
            let (client, _) = client_for(&profile)?;
            let me = client.whoami().await?;
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
            let (client, stored) = client_for(&profile)?;
            if stored.session.refresh_token.is_none() {
                return Err(format!(
                    "profile '{}' has no refresh token: its session does not expire (log in with --refresh for one that does)",
                    profile.name
                )
                .into());
            }
            let s = client.refresh().await?;
            print(
                json_mode,
                &json!({"expires_at_ms": s.expires_at_ms}),
                || "Tokens refreshed".into(),
            );
        }
        ClientCommand::Logout { all, local } => {
            if local {
                let stored = profile.load()?;
                profile.remove()?;
                print(json_mode, &json!({}), || {
                    format!(
                        "Forgot {}'s session (the server was not told; the device stays logged in there)",
                        stored.session.user_id
                    )
                });
                return Ok(());
            }
            let (client, _) = client_for(&profile)?;
            if all {
                client.logout_all().await?;
            } else {
                client.logout().await?;
            }
            print(json_mode, &json!({}), || "Logged out".into());
        }
        ClientCommand::Devices { command } => devices(&profile, command, json_mode).await?,
        ClientCommand::Passwd { keep_devices } => {
            let (client, stored) = client_for(&profile)?;
            let new = new_password().await?;
            let c = client.clone();
            with_uia(
                &client,
                Some(PasswordStage {
                    user_id: stored.session.user_id,
                    prompt: "Current password: ".into(),
                }),
                AuthInputs::default(),
                Box::new(move |auth| {
                    let (c, new) = (c.clone(), new.clone());
                    Box::pin(async move {
                        c.set_password(&new, !keep_devices, auth)
                            .await
                            .map(|()| json!({}))
                    })
                }),
            )
            .await?;
            print(json_mode, &json!({}), || "Password changed".into());
        }
        ClientCommand::Deactivate { erase, yes } => {
            let (client, stored) = client_for(&profile)?;
            let user = stored.session.user_id;
            if !yes && !confirm(format!("Deactivate {user} for good?")).await? {
                return Err("not deactivated".into());
            }
            let c = client.clone();
            with_uia(
                &client,
                Some(PasswordStage {
                    prompt: format!("Password for {user}: "),
                    user_id: user,
                }),
                AuthInputs::default(),
                Box::new(move |auth| {
                    let c = c.clone();
                    Box::pin(async move { c.deactivate_account(auth, erase).await })
                }),
            )
            .await?;
            profile.remove()?;
            print(json_mode, &json!({}), || "Account deactivated".into());
        }
    }
    Ok(())
}

/// `discover`: the states of matrix-js-sdk; anything but success or "nothing
/// published" fails, with the reason.
async fn discover(server_name: &str, insecure_http: bool, json_mode: bool) -> Result<(), CliError> {
    let d = if insecure_http {
        AutoDiscovery::new().with_scheme("http")
    } else {
        AutoDiscovery::new()
    };
    let found = d.find_client_config(server_name).await;
    let hs = &found.homeserver;
    let is = &found.identity_server;
    let value = json!({
        "state": format!("{:?}", hs.state), "base_url": hs.base_url, "error": hs.error,
        "identity_server": {"state": format!("{:?}", is.state), "base_url": is.base_url, "error": is.error},
    });
    let failed = matches!(
        hs.state,
        DiscoveryState::FailPrompt | DiscoveryState::FailError
    );
    if failed && !json_mode {
        return Err(format!("{:?}: {}", hs.state, hs.error.clone().unwrap_or_default()).into());
    }
    print(json_mode, &value, || match (&hs.base_url, hs.state) {
        (Some(url), _) => format!("{:?}: {url}", hs.state),
        (None, DiscoveryState::Prompt) => {
            format!("Prompt: {server_name} publishes no client configuration")
        }
        (None, _) => format!("{:?}", hs.state),
    });
    if failed {
        return Err(CliError {
            message: hs.error.clone().unwrap_or_default(),
            errcode: None,
            reported: true,
        });
    }
    Ok(())
}

/// Sends the person to the server's SSO page and waits for the login token.
async fn sso_login_token(client: &Client, idp: Option<&str>) -> Result<String, CliError> {
    let callback = SsoCallback::bind().await?;
    let url = client.sso_login_url(callback.url(), SsoKind::Sso, idp, Some(SsoAction::Login));
    // On stderr, like every prompt: stdout stays clean for --json.
    eprintln!("Open this URL in your browser to log in:\n{url}");
    let _spinner = Spinner::start("Waiting for the browser to come back from the login page");
    Ok(tokio::time::timeout(SSO_WAIT, callback.login_token())
        .await
        .map_err(|_| "no SSO redirect arrived within 10 minutes".to_owned())??)
}

async fn devices(
    profile: &Profile,
    command: DevicesCommand,
    json_mode: bool,
) -> Result<(), CliError> {
    let (client, stored) = client_for(profile)?;
    let own = stored.session.device_id.clone().unwrap_or_default();
    match command {
        DevicesCommand::List => {
            let devices = client.devices().await?;
            let value = json!(devices.iter().map(|d| json!({"device_id": d.device_id, "display_name": d.display_name, "last_seen_ip": d.last_seen_ip, "last_seen_ts": d.last_seen_ts, "current": d.device_id == own})).collect::<Vec<_>>());
            print(json_mode, &value, || {
                devices
                    .iter()
                    .map(|d| {
                        format!(
                            "{} {}\t{}\t{}",
                            if d.device_id == own { '*' } else { ' ' },
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
            client.set_device_display_name(&device_id, &name).await?;
            print(json_mode, &json!({}), || format!("Renamed {device_id}"));
        }
        DevicesCommand::Delete { device_ids, yes } => {
            // Checked first: the server answers success for an unknown ID.
            let known = client.devices().await?;
            if let Some(unknown) = device_ids
                .iter()
                .find(|id| !known.iter().any(|d| &d.device_id == *id))
            {
                return Err(format!(
                    "no device {unknown} on this account (see `gatehouse client devices list`)"
                )
                .into());
            }
            let own_too = device_ids.contains(&own);
            if own_too
                && !yes
                && !confirm(format!(
                    "{own} is this profile's own device: deleting it logs this profile out. Continue?"
                ))
                .await?
            {
                return Err("nothing deleted".into());
            }
            let user = stored.session.user_id;
            let (c, ids) = (client.clone(), device_ids.clone());
            with_uia(
                &client,
                Some(PasswordStage {
                    prompt: format!("Password for {user}: "),
                    user_id: user,
                }),
                AuthInputs::default(),
                Box::new(move |auth| {
                    let (c, ids) = (c.clone(), ids.clone());
                    Box::pin(async move { c.delete_devices(&ids, auth).await.map(|()| json!({})) })
                }),
            )
            .await?;
            if own_too {
                profile.remove()?;
            }
            print(json_mode, &json!({"deleted": device_ids}), || {
                format!("Deleted {}", device_ids.join(", "))
            });
        }
    }
    Ok(())
}
