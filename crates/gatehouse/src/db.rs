//! `gatehouse db status | migrate | copy`: the database's schema, looked
//! at and brought up to date on purpose (the server also migrates when it
//! starts), so that an operator can do it before a deployment rather than
//! during; and moving a deployment from SQLite to PostgreSQL.

use std::path::PathBuf;

use clap::Subcommand;
use gatehouse_server::config::Config;
use gatehouse_store::{PostgresOptions, PostgresStore, SqliteStore};

#[derive(Subcommand)]
pub enum DbCommand {
    /// Show the database's schema version and the migrations this build
    /// would apply; changes nothing.
    Status,
    /// Apply the pending migrations.
    Migrate,
    /// Copy every account, device, token, session and pending change from
    /// an SQLite database into an empty PostgreSQL one, in one transaction.
    /// Stop the server first: writes made during the copy are not carried.
    Copy {
        /// `sqlite://PATH` of the database file (e.g.
        /// `sqlite://gatehouse-data/gatehouse.sqlite`).
        #[arg(long)]
        from: String,
        /// `postgres://…` of the target (migrated first if needed).
        #[arg(long)]
        to: String,
    },
}

pub async fn run(config: &Config, command: DbCommand) -> Result<(), String> {
    match (command, config.database.postgres()) {
        (DbCommand::Copy { from, to }, _) => copy(config, &from, &to).await,
        (command, Some(options)) => postgres(&options, command).await,
        (command, None) => sqlite(config, command),
    }
}

async fn copy(config: &Config, from: &str, to: &str) -> Result<(), String> {
    let path = PathBuf::from(
        from.strip_prefix("sqlite://")
            .ok_or("--from must be sqlite://PATH")?,
    );
    if !path.exists() {
        return Err(format!("{}: no such database", path.display()));
    }
    // The configured pool, timeouts and TLS roots, for the target's URL.
    let options = config
        .database
        .postgres_at(to)
        .map_err(|e| format!("--to: {e}"))?;
    // Opening migrates the source to this build's schema: the copy reads
    // the tables as this build knows them.
    SqliteStore::open(&path, gatehouse_store::sqlite::Durability::Full)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let target = PostgresStore::connect(&options)
        .await
        .map_err(|e| format!("{}: {e}", options.redacted_url()))?;
    let report = gatehouse_store::copy::sqlite_to_postgres(&path, &target)
        .await
        .map_err(|e| format!("copy failed, nothing was written: {e}"))?;
    for (table, rows) in &report {
        println!("{table}: {rows} rows");
    }
    println!("copied {} into {}", path.display(), options.redacted_url());
    Ok(())
}

async fn postgres(options: &PostgresOptions, command: DbCommand) -> Result<(), String> {
    let shown = options.redacted_url();
    let store = PostgresStore::connect_without_migrating(options).map_err(|e| e.to_string())?;
    let latest = PostgresStore::schema_version();
    let current = store
        .current_schema_version()
        .await
        .map_err(|e| format!("{shown}: {e}"))?;
    match command {
        DbCommand::Status => describe(&shown, Some(current).filter(|v| *v > 0), latest)?,
        _ => {
            let applied = store.migrate().await.map_err(|e| format!("{shown}: {e}"))?;
            migrated(&shown, current, latest, applied.is_empty());
        }
    }
    Ok(())
}

fn sqlite(config: &Config, command: DbCommand) -> Result<(), String> {
    let path = config.database_path();
    let shown = path.display().to_string();
    let latest = SqliteStore::schema_version();
    let current = SqliteStore::schema_version_of(&path).map_err(|e| e.to_string())?;
    match command {
        DbCommand::Status => describe(&shown, current, latest)?,
        _ => {
            gatehouse_server::open_sqlite(config).map_err(|e| e.to_string())?;
            let before = current.unwrap_or(0);
            migrated(&shown, before, latest, before == latest);
        }
    }
    Ok(())
}

fn describe(shown: &str, current: Option<usize>, latest: usize) -> Result<(), String> {
    match current {
        None => {
            println!("{shown}: no database yet (created at schema version {latest} on first use)")
        }
        Some(v) if v == latest => println!("{shown}: schema version {v}, up to date"),
        Some(v) if v > latest => {
            return Err(format!(
                "{shown}: schema version {v}, newer than this build's {latest}: run a newer Gatehouse"
            ));
        }
        Some(v) => println!(
            "{shown}: schema version {v} of {latest}: {} migration(s) pending (`gatehouse db migrate`)",
            latest - v
        ),
    }
    Ok(())
}

fn migrated(shown: &str, before: usize, latest: usize, nothing: bool) {
    if nothing {
        println!("{shown}: schema version {latest}, nothing to do");
    } else {
        println!("{shown}: migrated from schema version {before} to {latest}");
    }
}
