//! The control plane: the REST API customers and scripts talk to, the scheduler, durable
//! operations and the fleet registry. Any number of replicas run against one PostgreSQL, which
//! holds all durable state; replicas share work through lease rows, never in-memory state.
//!
//! Layers (see docs/architecture.md): `http` (handlers: parse, authenticate, serialize) →
//! `app` (one module per resource: the logic) → `db` (all SQL). `operations`, `scheduler`,
//! `fleet` and `reconcilers` sit beside `app` and use `db` the same way.
#![forbid(unsafe_code)]

pub mod agents;
pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod embedded_db;
pub mod error_chain;
pub mod fault;
pub mod fleet;
pub mod http;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod openssh;
pub mod operations;
pub mod quotas;
pub mod reconcilers;
pub mod scheduler;
pub mod states;

pub mod testing;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

pub use app::App;
use config::Config;
use embedded_db::{EmbeddedDbOptions, EmbeddedPostgres};

/// The control plane's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why the control plane could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the embedded database")]
    EmbeddedDb(#[from] embedded_db::EmbeddedDbError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("cannot create the bootstrap administrator")]
    Bootstrap(#[from] auth::AuthError),
    #[error("fleet PKI")]
    Pki(#[from] fleet::pki::PkiError),
    #[error("cannot load the fleet CA")]
    Fleet(#[from] fleet::FleetLoadError),
    #[error("cannot open the snapshot store")]
    Store(#[from] cloud_store::StoreError),
    #[error("the fleet gRPC server failed")]
    Grpc(#[source] tonic::transport::Error),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
    #[error("cannot set up HTTPS for the API")]
    Tls(#[from] http::tls::TlsError),
    #[error("cannot set up sign-in through the identity provider")]
    Oidc(#[from] auth::oidc::OidcError),
}

/// The embedded cluster, shared by its supervisor and the shutdown path.
pub type SharedEmbedded = std::sync::Arc<std::sync::Mutex<EmbeddedPostgres>>;

/// The database the control plane uses: the configured URL, or the embedded cluster.
#[derive(Debug)]
pub struct Database {
    pub pool: PgPool,
    /// Set when the control plane runs its own PostgreSQL; stopped after the pool is closed.
    pub embedded: Option<SharedEmbedded>,
    /// The hosts of `database.url`; with several, the pools follow the primary among them.
    pub hosts: Vec<sqlx::postgres::PgConnectOptions>,
}

impl Database {
    /// Connects (with retries) to the configured database, or starts the embedded one, and
    /// applies the migrations.
    pub async fn open(config: &Config) -> Result<Self, StartError> {
        let timeout = Duration::from_secs(config.database.connect_timeout_secs);
        let (hosts, embedded) = match &config.database.url {
            Some(url) => (db::primary::hosts_from_url(url)?, None),
            None => {
                let pg = EmbeddedPostgres::start(embedded_options(config)).await?;
                (vec![pg.connect_options(embedded_db::DATABASE)], Some(std::sync::Arc::new(std::sync::Mutex::new(pg))))
            }
        };
        let pool = db::connect(&hosts, config.database.max_connections, timeout).await?;
        db::migrate(&pool).await?;
        tracing::info!(migrations = db::MIGRATOR.iter().count(), "database ready");
        Ok(Self { pool, embedded, hosts })
    }

    /// Closes the pool, then stops the embedded database (if any).
    pub async fn close(self) -> Result<(), StartError> {
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            tokio::task::spawn_blocking(move || {
                pg.lock().unwrap_or_else(std::sync::PoisonError::into_inner).stop_in_place()
            })
            .await
            .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))?;
        }
        Ok(())
    }
}

/// Keeps the embedded database running until `stop`: when it exits (a crash, an OOM kill) it is
/// started again, with backoff from 1 s to 30 s between failed attempts; every restart is
/// logged and counted (`cloud_embedded_db_restarts`). Meanwhile `/healthz` says 503 and the
/// pool reconnects by itself once the server is back.
pub async fn supervise_embedded_db(pg: SharedEmbedded, app: Arc<App>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut backoff = Duration::from_secs(1);
    let mut wait = Duration::from_millis(250);
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut stop => return,
        }
        let pg = pg.clone();
        let checked = tokio::task::spawn_blocking(move || {
            pg.lock().unwrap_or_else(std::sync::PoisonError::into_inner).restart_if_exited()
        })
        .await;
        match checked {
            Ok(Ok(None)) => wait = Duration::from_millis(250),
            Ok(Ok(Some(status))) => {
                app.metrics.embedded_db_restarted();
                tracing::warn!(%status, "the embedded database was restarted");
                backoff = Duration::from_secs(1);
                wait = Duration::from_millis(250);
            }
            Ok(Err(err)) => {
                tracing::error!(error = %error_chain::ErrorChain(&err), retry_in = ?backoff, "cannot restart the embedded database");
                wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
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
    let served = serve_with(&config, &database, shutdown).await;
    let closed = database.close().await;
    served.and(closed)
}

async fn serve_with(
    config: &Config,
    database: &Database,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let (pool, embedded) = (database.pool.clone(), database.embedded.clone());
    let outcome = auth::bootstrap(&pool, &config.data_dir).await?;
    tracing::info!(?outcome, "bootstrap checked");
    let fleet = fleet::Fleet::load(&pool, &config.data_dir, config.fleet.clone()).await?;
    let tls = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => Some(http::tls::acceptor(cert, key)?),
        _ => None,
    };
    let app = Arc::new(App::new(pool, fleet, config)?);
    let listen = |addr: SocketAddr| move |source| StartError::Listen { addr, source };
    let http_listener = tokio::net::TcpListener::bind(config.listen).await.map_err(listen(config.listen))?;
    let grpc_listener = fleet::grpc::bind(config.fleet.grpc_listen).await.map_err(listen(config.fleet.grpc_listen))?;
    let http_addr = http_listener.local_addr().map_err(listen(config.listen))?;
    let grpc_addr = grpc_listener.local_addr().map_err(listen(config.fleet.grpc_listen))?;
    tracing::info!(%http_addr, %grpc_addr, https = tls.is_some(), version = VERSION, "control plane listening");

    // One shutdown signal, fanned out to both servers.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let executor = {
        let (app, stop) = (app.clone(), stopped(stop_rx.clone()));
        tokio::spawn(async move { app.executor.clone().run(app, stop).await })
    };
    let liveness = {
        let policy = reconcilers::host_liveness::LivenessPolicy::from_config(&config.fleet);
        let (app, stop) = (app.clone(), stopped(stop_rx.clone()));
        tokio::spawn(reconcilers::host_liveness::run(app, policy, stop))
    };
    let policies = {
        let (app, stop) = (app.clone(), stopped(stop_rx.clone()));
        tokio::spawn(reconcilers::snapshot_policies::run(app, stop))
    };
    let recovery = {
        let (app, stop) = (app.clone(), stopped(stop_rx.clone()));
        tokio::spawn(reconcilers::disaster_recovery::run(app, stop))
    };
    let channels = config.fleet.keep_agent_connections.then(|| {
        let (app, stop) = (app.clone(), stopped(stop_rx.clone()));
        tokio::spawn(reconcilers::agent_channels::run(app, stop))
    });
    let store_gc = {
        let (app, stop) = (app.clone(), stopped(stop_rx.clone()));
        tokio::spawn(reconcilers::store_gc::run(app, stop))
    };
    let primary = (database.hosts.len() > 1).then(|| {
        let pools = vec![app.pool.clone(), app.work_pool.clone(), app.reports.pool().clone()];
        tokio::spawn(db::primary::follow(database.hosts.clone(), pools, stopped(stop_rx.clone())))
    });
    let supervisor = embedded.map(|pg| {
        let (app, stop) = (app.clone(), stopped(stop_rx.clone()));
        tokio::spawn(supervise_embedded_db(pg, app, stop))
    });
    let router = http::router(app.clone());
    let http = async {
        match tls {
            Some(acceptor) => {
                let listener = http::tls::TlsListener::new(http_listener, acceptor)?;
                axum::serve(listener, router).with_graceful_shutdown(stopped(stop_rx.clone())).await
            }
            None => {
                let listener = axum::serve::ListenerExt::tap_io(http_listener, |tcp| cloud_common::tcp::no_delay(tcp));
                axum::serve(listener, router).with_graceful_shutdown(stopped(stop_rx.clone())).await
            }
        }
    };
    let grpc = fleet::grpc::serve(app, grpc_listener, stopped(stop_rx.clone()));
    let (http, grpc) = tokio::join!(http, grpc);
    let _ = tokio::join!(executor, liveness, policies, recovery, store_gc);
    if let Some(channels) = channels {
        let _ = channels.await;
    }
    if let Some(supervisor) = supervisor {
        let _ = supervisor.await;
    }
    if let Some(primary) = primary {
        let _ = primary.await;
    }
    tracing::info!("servers stopped");
    http.map_err(StartError::Serve)?;
    grpc.map_err(StartError::Grpc)
}
