//! `[database]`: SQLite in the data directory (the default), or PostgreSQL
//! for several instances on one database.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/dbname[?sslmode=require]`; unset:
    /// the embedded SQLite database in `data_dir`.
    pub url: Option<String>,
    /// A file holding the URL instead (it carries the password).
    pub url_path: Option<PathBuf>,
    /// PostgreSQL connections this instance keeps open at most.
    pub pool_size: usize,
    /// How long opening a connection may take.
    pub connect_timeout_ms: u64,
    /// How long a request waits for a free connection before it fails.
    pub pool_timeout_ms: u64,
    /// Longest a statement may run; 0: no limit.
    pub statement_timeout_ms: u64,
    /// PEM certificate authorities trusted for TLS to PostgreSQL (default:
    /// the public web roots). TLS itself follows the URL's `sslmode`.
    pub ca_file: Option<PathBuf>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            url_path: None,
            pool_size: 16,
            connect_timeout_ms: 5_000,
            pool_timeout_ms: 10_000,
            statement_timeout_ms: 30_000,
            ca_file: None,
        }
    }
}

impl DatabaseConfig {
    /// The PostgreSQL connection settings, when a URL is configured.
    pub fn postgres(&self) -> Option<gatehouse_store::PostgresOptions> {
        self.url.as_deref().map(|url| self.options(url))
    }

    /// These settings (pool, timeouts, TLS roots) for another database:
    /// the target of `db copy`, a Synapse to import from.
    pub fn postgres_at(&self, url: &str) -> Result<gatehouse_store::PostgresOptions, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("not a postgres:// URL".into());
        }
        Ok(self.options(url))
    }

    fn options(&self, url: &str) -> gatehouse_store::PostgresOptions {
        let mut options = gatehouse_store::PostgresOptions::new(url);
        options.pool_size = self.pool_size;
        options.connect_timeout = Duration::from_millis(self.connect_timeout_ms);
        options.pool_timeout = Duration::from_millis(self.pool_timeout_ms);
        options.statement_timeout = Duration::from_millis(self.statement_timeout_ms);
        options.ca_file.clone_from(&self.ca_file);
        options
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        };
        if let Some(url) = &self.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return invalid(
                "database.url",
                "must be a postgres:// URL (leave it unset for SQLite in data_dir)",
            );
        }
        if self.pool_size == 0 {
            return invalid("database.pool_size", "must be at least 1");
        }
        if self.connect_timeout_ms == 0 || self.pool_timeout_ms == 0 {
            return invalid(
                "database.connect_timeout_ms",
                "timeouts must be greater than 0",
            );
        }
        Ok(())
    }
}
