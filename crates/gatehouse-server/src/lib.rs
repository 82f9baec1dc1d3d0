//! The Gatehouse server: the Matrix client-server authentication endpoints
//! over axum, on any [`gatehouse_store::Store`].
//!
//! [`router`] builds the service so it can be embedded or tested without a
//! socket; [`serve`] is what `gatehouse serve` runs.

mod account_links;
mod account_page;
pub mod appservice;
pub mod config;
pub mod error;
pub mod extract;
mod fallback;
pub mod hashing;
pub mod homeserver;
mod issue;
pub mod listener;
mod login_fallback;
pub mod messenger;
pub mod metrics;
mod middleware;
mod password_auth;
pub mod ratelimit;
mod routes;
pub mod sessions;
mod sso;
pub mod state;
pub mod uia;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::Config;
pub use routes::router;
pub use state::AppState;

use gatehouse_core::SystemClock;
use gatehouse_store::sqlite::Durability;
use gatehouse_store::{PostgresStore, SqliteStore, Store};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Store(#[from] gatehouse_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    #[error("configuration error: {0}")]
    Config(#[from] config::ConfigError),
}

/// The database a configuration names, opened.
#[derive(Clone)]
pub enum Database {
    /// The embedded file in `data_dir`.
    Sqlite(SqliteStore),
    /// `database.url`.
    Postgres(PostgresStore),
}

impl Database {
    /// The store every handler works through.
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite(s) => Arc::new(s.clone()),
            Self::Postgres(p) => Arc::new(p.clone()),
        }
    }
}

/// Opens the database the configuration names (PostgreSQL when
/// `database.url` is set, otherwise SQLite in `data_dir`, creating the
/// directory), migrating the schema as needed.
pub async fn open_database(config: &Config) -> Result<Database, ServeError> {
    match config.database.postgres() {
        Some(options) => Ok(Database::Postgres(PostgresStore::connect(&options).await?)),
        None => Ok(Database::Sqlite(open_sqlite(config)?)),
    }
}

/// Opens the SQLite store in the configuration's data directory, creating
/// the directory and migrating the schema as needed.
pub fn open_sqlite(config: &Config) -> Result<SqliteStore, ServeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let durability = match config.sqlite.durability {
        config::Durability::Full => Durability::Full,
        config::Durability::Normal => Durability::Normal,
    };
    Ok(SqliteStore::open(&config.database_path(), durability)?)
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    // Read before anything starts: a missing secret file is a clear error.
    if config.homeserver.url.is_some() {
        config.homeserver.read_secret()?;
    }
    let database = open_database(&config).await?;
    let listen = config.listen;
    let metrics_listen = config.metrics_listen;
    let limits = listener::ConnectionLimits::from_config(&config);
    let state = AppState::new(config, database.store(), Arc::new(SystemClock));
    // Before the first request: the answer time of a failed login must not
    // tell legacy accounts apart from the start.
    if let Some(cost) = state.store.highest_bcrypt_cost().await? {
        if state.hasher.learn_bcrypt_cost(cost).await.is_err() {
            tracing::warn!("hashing pool busy; bcrypt cost not measured");
        }
        tracing::info!(cost, floor = ?state.hasher.failure_floor(), "legacy bcrypt hashes present");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
    let local = listener.local_addr()?;
    if let Some(addr) = metrics_listen {
        let metrics = state.metrics.clone();
        let metrics_listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        tracing::info!(%addr, "metrics listening");
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        );
        tokio::spawn(crate::listener::serve(
            metrics_listener,
            app,
            limits,
            std::future::pending(),
        ));
    }
    tokio::spawn(prune_periodically(state.clone()));
    // Other instances' logouts, for this one's token cache.
    let (store, sessions) = (state.store.clone(), state.sessions.clone());
    tokio::spawn(async move {
        let on_revoked = Arc::new(move |r: gatehouse_store::Revoked| sessions.revoked(&r));
        if let Err(e) = store.watch_revocations(on_revoked).await {
            tracing::error!(error = %e, "revocation listener stopped");
        }
    });
    if let Some(homeserver) = &state.homeserver {
        tokio::spawn(homeserver.clone().retry_forever());
    }
    // stdout, unbuffered: scripts and the benchmark wait for this line.
    println!("Gatehouse listening on http://{local}");
    tracing::info!(%local, "listening");
    // Handlers still see `ConnectInfo<SocketAddr>`: the loop inserts it.
    crate::listener::serve(listener, router(state), limits, shutdown_signal()).await;
    Ok(())
}

/// How often expired records are swept out of the store.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Sweeps expired UIA sessions, login tokens and 3PID validations, so that
/// nothing grows without bound (each instance does; sweeping is idempotent).
async fn prune_periodically(state: AppState) {
    // The first sweep one period after start: not a write at start-up.
    let mut every =
        tokio::time::interval_at(tokio::time::Instant::now() + PRUNE_EVERY, PRUNE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match state.store.prune_expired(state.clock.now_ms()).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "expired records pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning expired records failed"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down");
}
