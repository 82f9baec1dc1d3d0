//! Connecting: the pool, its timeouts, TLS, and migrating on open.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{PostgresStore, backend, migrations};
use crate::{StoreError, StoreResult};

/// How to reach the database. TLS follows the URL's `sslmode`
/// (`disable`, `prefer` — tokio-postgres's default — or `require`); when
/// TLS is used the server's certificate is always verified, against
/// `ca_file` if given, otherwise the public web roots.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/dbname?sslmode=…`
    pub url: String,
    /// Connections kept open at most (each PostgreSQL backend costs the
    /// server a process: several instances share `max_connections`).
    pub pool_size: usize,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// How long a request waits for a free pooled connection before it
    /// fails (a clear error instead of a pile-up behind a stuck database).
    pub pool_timeout: Duration,
    /// Longest a statement may run (`statement_timeout`); zero: no limit.
    pub statement_timeout: Duration,
    /// PEM file of the certificate authorities to trust for TLS.
    pub ca_file: Option<PathBuf>,
}

impl PostgresOptions {
    /// The defaults around a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            pool_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
            ca_file: None,
        }
    }

    /// The URL without its password, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// One connection outside any pool, with this configuration's TLS and
    /// timeouts (for one-off work: reading a Synapse database to import).
    /// Its connection task is spawned on the current runtime.
    pub async fn connect_one(&self) -> StoreResult<tokio_postgres::Client> {
        let (client, connection) = self
            .pg_config()?
            .connect(self.tls()?)
            .await
            .map_err(super::db)?;
        tokio::spawn(connection);
        Ok(client)
    }

    pub(super) fn pg_config(&self) -> StoreResult<tokio_postgres::Config> {
        let mut config = tokio_postgres::Config::from_str(&self.url).map_err(|e| {
            StoreError::Backend(format!("bad database URL {}: {e}", self.redacted_url()))
        })?;
        config.connect_timeout(self.connect_timeout);
        config.application_name("gatehouse");
        if !self.statement_timeout.is_zero() {
            // Added to the URL's own `options`, if any.
            let timeout = format!(
                "-c statement_timeout={}",
                self.statement_timeout.as_millis()
            );
            let options = match config.get_options() {
                Some(given) => format!("{given} {timeout}"),
                None => timeout,
            };
            config.options(options);
        }
        Ok(config)
    }

    pub(super) fn tls(&self) -> StoreResult<MakeRustlsConnect> {
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for cert in CertificateDer::pem_file_iter(path).map_err(|e| {
                    StoreError::Backend(format!("cannot read {}: {e}", path.display()))
                })? {
                    roots.add(cert.map_err(backend)?).map_err(backend)?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(backend)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &self.redacted_url())
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`; a
/// `password=` parameter too.
pub fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let start = scheme_end + 3 + colon + 1;
            out.replace_range(start..scheme_end + 3 + at, "***");
        }
    }
    if let Some(p) = out.find("password=") {
        let start = p + "password=".len();
        let end = out[start..].find('&').map_or(out.len(), |e| start + e);
        out.replace_range(start..end, "***");
    }
    out
}

impl PostgresStore {
    /// Connects, then brings the schema up to date (several instances
    /// starting at once migrate one after the other).
    pub async fn connect(options: &PostgresOptions) -> StoreResult<Self> {
        let store = Self::connect_without_migrating(options)?;
        let mut client = store.client().await?;
        migrations::run(&mut client).await?;
        Ok(store)
    }

    /// The pool alone: connections are opened when first needed.
    pub fn connect_without_migrating(options: &PostgresOptions) -> StoreResult<Self> {
        let manager = Manager::from_config(
            options.pg_config()?,
            options.tls()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(options.pool_timeout))
            .create_timeout(Some(options.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(backend)?;
        Ok(Self {
            pool,
            options: Arc::new(options.clone()),
        })
    }

    /// The schema version this build migrates to.
    pub fn schema_version() -> usize {
        migrations::latest()
    }

    /// The database's schema version as it stands (0: empty).
    pub async fn current_schema_version(&self) -> StoreResult<usize> {
        migrations::current(&self.client().await?).await
    }

    /// Brings the schema up to date; the versions applied.
    pub async fn migrate(&self) -> StoreResult<Vec<usize>> {
        migrations::run(&mut self.client().await?).await
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://gh:s3cret@db:5432/gh?sslmode=require"),
            "postgres://gh:***@db:5432/gh?sslmode=require"
        );
        assert_eq!(
            redact("postgres://gh@db/gh?password=s3cret&sslmode=require"),
            "postgres://gh@db/gh?password=***&sslmode=require"
        );
        assert_eq!(redact("postgres://gh@db/gh"), "postgres://gh@db/gh");
    }
}
