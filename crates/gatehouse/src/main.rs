//! `gatehouse`: the server (`serve`), its configuration helper (`config`)
//! and the admin commands (`user …`) that work on the same data directory.

mod admin;
mod client_cli;
mod db;
mod import;
mod import_pg;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatehouse_server::config::{Config, LogFormat, Overrides};

#[derive(Parser)]
#[command(name = "gatehouse", version, about = "Matrix authentication server")]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "GATEHOUSE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory holding the database (default ./gatehouse-data).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8008).
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
    /// Matrix server name (default localhost).
    #[arg(long, global = true)]
    server_name: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// PostgreSQL database URL (`postgres://…`) instead of SQLite in
        /// the data directory (`database.url`; the other commands read it
        /// from the configuration or `GATEHOUSE_DATABASE__URL`).
        #[arg(long)]
        database: Option<String>,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: admin::UserCommand,
    },
    /// A Matrix client: log in, devices, password, deactivation… on any homeserver.
    Client(client_cli::ClientArgs),
    /// Manage registration tokens (for `m.login.registration_token`).
    RegistrationToken {
        #[command(subcommand)]
        command: admin::TokenCommand,
    },
    /// The database's schema: its version, and migrating it.
    Db {
        #[command(subcommand)]
        command: db::DbCommand,
    },
    /// Import accounts from another homeserver.
    Import {
        #[command(subcommand)]
        command: import::ImportCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a complete, commented configuration file.
    Example,
    /// Print the configuration in effect (file + environment + flags).
    Show,
}

/// The command line, as parsed for `args`. The server's flags are global
/// to every server command, and no business of `gatehouse client`: for a
/// client command they are kept at the top, out of its help.
fn command(args: &[std::ffi::OsString]) -> clap::Command {
    let cmd = <Cli as clap::CommandFactory>::command();
    if args.get(1).is_none_or(|a| a != "client") {
        return cmd;
    }
    ["config", "data_dir", "listen", "server_name"]
        .into_iter()
        .fold(cmd, |c, id| c.mut_arg(id, |a| a.global(false)))
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut cmd = command(&args);
    let matches = cmd.clone().get_matches_from(args);
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.format(&mut cmd).exit(),
    };
    if let Command::Config {
        command: ConfigCommand::Example,
    } = cli.command
    {
        print!("{}", gatehouse_server::config::EXAMPLE);
        return ExitCode::SUCCESS;
    }
    // Client commands talk to a homeserver; they need no server configuration.
    if let Command::Client(args) = cli.command {
        return client_cli::main(args, &mut <Cli as clap::CommandFactory>::command());
    }
    let overrides = Overrides {
        data_dir: cli.data_dir,
        database: match &cli.command {
            Command::Serve { database } => database.clone(),
            _ => None,
        },
        listen: cli.listen,
        server_name: cli.server_name,
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    // Two workers are plenty for an auth server on small machines and keep
    // idle memory low; the OS decides the rest.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatehouse: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { .. } => gatehouse_server::serve(config)
                .await
                .map_err(|e| e.to_string()),
            Command::Config {
                command: ConfigCommand::Show,
            } => {
                print!("{}", toml_of(&config));
                Ok(())
            }
            Command::Config {
                command: ConfigCommand::Example,
            }
            | Command::Client(_) => unreachable!("handled above"),
            Command::User { command } => admin::run(&config, command).await,
            Command::RegistrationToken { command } => admin::run_tokens(&config, command).await,
            Command::Import { command } => import::run(&config, command).await,
            Command::Db { command } => db::run(&config, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            ExitCode::FAILURE
        }
    }
}

fn toml_of(config: &Config) -> String {
    let mut c = config.clone();
    let redacted = || "<redacted>".to_owned();
    if !c.passwords.bcrypt_pepper.is_empty() {
        c.passwords.bcrypt_pepper = redacted();
    }
    c.homeserver.secret = c.homeserver.secret.as_ref().map(|_| redacted());
    c.database.url = c
        .database
        .url
        .as_deref()
        .map(gatehouse_store::postgres::redact);
    c.email.smtp_password = c.email.smtp_password.as_ref().map(|_| redacted());
    c.sms.webhook_token = c.sms.webhook_token.as_ref().map(|_| redacted());
    for p in &mut c.sso.oidc {
        p.client_secret = p.client_secret.as_ref().map(|_| redacted());
    }
    if !c.recaptcha.secret_key.is_empty() {
        c.recaptcha.secret_key = redacted();
    }
    toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
