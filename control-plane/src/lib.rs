//! The control plane: the REST API customers and scripts talk to, the scheduler, durable
//! operations and the fleet registry. Any number of replicas run against one PostgreSQL, which
//! holds all durable state; replicas share work through lease rows, never in-memory state.
//!
//! Layers (see docs/architecture.md): `http` (handlers, errors) → app logic → `db` (all SQL).
//! Today the service answers health, metrics and its OpenAPI document; the resources arrive
//! with the control-plane issue (#5).
#![forbid(unsafe_code)]

pub mod config;
pub mod db;
pub mod embedded_db;
pub mod http;
pub mod metrics;
pub mod telemetry;
pub mod testing;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use config::Config;
use embedded_db::{EmbeddedDbOptions, EmbeddedPostgres};

/// The control plane's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Shared state of the HTTP handlers (`State<Arc<App>>`).
#[derive(Debug)]
pub struct App {
    pub pool: PgPool,
    pub metrics: metrics::Metrics,
}

/// Why the control plane could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the embedded database")]
    EmbeddedDb(#[from] embedded_db::EmbeddedDbError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// The database the control plane uses: the configured URL, or the embedded cluster.
#[derive(Debug)]
pub struct Database {
    pub pool: PgPool,
    /// Set when the control plane runs its own PostgreSQL; stopped after the pool is closed.
    pub embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects (with retries) to the configured database, or starts the embedded one, and
    /// applies the migrations.
    pub async fn open(config: &Config) -> Result<Self, StartError> {
        let timeout = Duration::from_secs(config.database.connect_timeout_secs);
        let (options, embedded) = match &config.database.url {
            Some(url) => (db::options_from_url(url)?, None),
            None => {
                let pg = EmbeddedPostgres::start(embedded_options(config)).await?;
                (pg.connect_options(embedded_db::DATABASE), Some(pg))
            }
        };
        let pool = db::connect(options, config.database.max_connections, timeout).await?;
        db::migrate(&pool).await?;
        tracing::info!(migrations = db::MIGRATOR.iter().count(), "database ready");
        Ok(Self { pool, embedded })
    }

    /// Closes the pool, then stops the embedded database (if any).
    pub async fn close(self) -> Result<(), StartError> {
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            pg.stop().await?;
        }
        Ok(())
    }
}

/// The embedded database's options, from the configuration.
pub fn embedded_options(config: &Config) -> EmbeddedDbOptions {
    EmbeddedDbOptions {
        data_dir: config.data_dir.clone(),
        bin_dir: config.embedded_database.bin_dir.clone(),
        port: config.embedded_database.port,
        unsafe_no_fsync: false,
    }
}

/// Runs the control plane until `shutdown` resolves, then drains requests, closes the pool and
/// stops the embedded database.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
    let database = Database::open(&config).await?;
    let app = Arc::new(App { pool: database.pool.clone(), metrics: metrics::Metrics::new() });
    let served = serve_http(&config, app, shutdown).await;
    let closed = database.close().await;
    served.and(closed)
}

async fn serve_http(
    config: &Config,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.listen, source })?;
    tracing::info!(%addr, version = VERSION, "control plane listening");
    axum::serve(listener, http::router(app)).with_graceful_shutdown(shutdown).await.map_err(StartError::Serve)?;
    tracing::info!("HTTP server stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
}
