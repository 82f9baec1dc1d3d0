//! `gatehouse db status | migrate`: the database's schema, looked at and
//! brought up to date on purpose (the server also migrates when it starts),
//! so that an operator can do it before a deployment rather than during.

use clap::Subcommand;
use gatehouse_server::config::Config;
use gatehouse_store::SqliteStore;

#[derive(Subcommand)]
pub enum DbCommand {
    /// Show the database's schema version and the migrations this build
    /// would apply; changes nothing.
    Status,
    /// Apply the pending migrations.
    Migrate,
}

pub fn run(config: &Config, command: DbCommand) -> Result<(), String> {
    let path = config.database_path();
    let latest = SqliteStore::schema_version();
    let current = SqliteStore::schema_version_of(&path).map_err(|e| e.to_string())?;
    match command {
        DbCommand::Status => {
            let shown = path.display();
            match current {
                None => println!(
                    "{shown}: no database yet (created at schema version {latest} on first use)"
                ),
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
        }
        DbCommand::Migrate => {
            let before = current.unwrap_or(0);
            gatehouse_server::open_store(config).map_err(|e| e.to_string())?;
            if before == latest {
                println!("{}: schema version {latest}, nothing to do", path.display());
            } else {
                println!(
                    "{}: migrated from schema version {before} to {latest}",
                    path.display()
                );
            }
        }
    }
    Ok(())
}
