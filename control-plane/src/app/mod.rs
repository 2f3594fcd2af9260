//! The application layer: what the API does, one module per resource, between the HTTP
//! handlers (which parse, authenticate and serialize) and `db` (which only runs SQL).
//!
//! Every function here takes the [`App`], the [`Caller`](crate::auth::Caller) and typed input,
//! authorizes, validates once, and returns a typed result or an [`AppError`]; the HTTP layer
//! turns the latter into a status and an error body with `From`.

pub mod changes;
pub mod error;
pub mod hosts;
pub mod images;
pub mod instances;
pub mod members;
pub mod operations;
pub mod projects;
pub mod recovery;
pub mod snapshots;
pub mod ssh_keys;
pub mod validate;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Config;
pub use error::AppError;

/// Shared state of the HTTP handlers and gRPC services (`State<Arc<App>>`).
#[derive(Debug)]
pub struct App {
    /// The API's connections.
    pub pool: PgPool,
    /// The operation executor's own connections (`operations.max_connections`): background
    /// work never queues ahead of a request for a connection, and is bounded in how much of
    /// the database it keeps busy.
    pub work_pool: PgPool,
    pub metrics: crate::metrics::Metrics,
    pub fleet: crate::fleet::Fleet,
    /// The API's URL as clients see it.
    pub public_url: String,
    /// Content-addressed blobs (image disks, kernels, initrds): `<dir>/<sha256 hex>`.
    pub blob_dir: std::path::PathBuf,
    /// Channels to host agents.
    pub agents: crate::agents::Agents,
    pub scheduler: crate::scheduler::SchedulerConfig,
    /// This replica's operation executor (handlers wake it after creating an operation).
    pub executor: crate::operations::executor::Executor,
    /// The shared snapshot store (the control plane deletes from it and collects its garbage).
    pub store: cloud_store::Store,
    /// Wakes the requests waiting for an operation to finish or a guest to become ready.
    pub changes: changes::Changes,
    /// Sign-in through an OpenID Connect provider (`None`: not configured).
    pub oidc: Option<crate::auth::oidc::Oidc>,
    /// How long console sessions last (`oidc.session_hours`, whatever signs them in).
    pub session_lifetime: std::time::Duration,
    /// Session cookies get `Secure`: the API is served over HTTPS.
    pub secure_cookies: bool,
    /// The web console's built files, served at `/` (`console_dir`; `None`: not installed).
    pub console_dir: Option<std::path::PathBuf>,
    /// Host reports waiting to be written in the next batch.
    pub reports: std::sync::Arc<crate::fleet::reports::ReportWriter>,
    /// Requests per token or session (`[limits]`).
    pub rate_limiter: crate::limits::RateLimiter,
    /// The console and tunnel WebSockets open here, and their caps (`[limits]`).
    pub connections: crate::limits::Connections,
    /// How long a console or tunnel WebSocket may stay quiet (`None`: forever).
    pub websocket_idle: Option<std::time::Duration>,
    /// Every project's quotas unless an operator set its own (`[quotas]`; 0: no limit).
    pub quotas: crate::quotas::Amounts,
}

impl App {
    /// The state shared by every request.
    pub fn new(pool: PgPool, fleet: crate::fleet::Fleet, config: &Config) -> Result<Self, crate::StartError> {
        let changes = changes::Changes::default();
        let notify = changes.clone();
        let options = pool.connect_options().as_ref().clone();
        let reports =
            crate::fleet::reports::ReportWriter::connect(options.clone(), fleet.config.lease_secs, move || {
                notify.notify()
            });
        let work_pool = crate::db::pool_of(options, config.operations.max_connections);
        Ok(Self {
            pool,
            work_pool,
            metrics: crate::metrics::Metrics::new(),
            fleet,
            public_url: config.public_url(),
            blob_dir: config.data_dir.join("blobs").join("sha256"),
            agents: crate::agents::Agents::default(),
            scheduler: config.scheduler.clone(),
            executor: crate::operations::executor::Executor::new(&config.operations),
            store: cloud_store::Store::open(&config.store, &config.data_dir.join("chunks"))?,
            changes,
            oidc: crate::auth::oidc::Oidc::new(&config.oidc, &config.public_url())?,
            session_lifetime: config.oidc.session_lifetime(),
            secure_cookies: config.public_url().starts_with("https://"),
            console_dir: config.console_dir.clone(),
            reports: std::sync::Arc::new(reports),
            rate_limiter: crate::limits::RateLimiter::new(&config.limits),
            connections: crate::limits::Connections::new(&config.limits),
            websocket_idle: config.limits.websocket_idle(),
            quotas: config.quotas.amounts(),
        })
    }
}

/// Which rows of a list to read: those after `after` (the `(created_at, id)` of the last row
/// seen), oldest first, at most `fetch` (one more than a page, so the caller knows if another
/// page follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub fetch: i64,
}
