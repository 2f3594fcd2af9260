//! The datastore: connecting to PostgreSQL and migrating it. Every SQL statement of the control
//! plane lives under this module; functions take `&mut PgConnection` or a transaction.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The schema, embedded from `migrations/` at build time (forward-only, `NNNN_verb_noun.sql`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Errors reaching or preparing the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("the database could not be reached within {waited:?} ({attempts} attempts)")]
    Unreachable {
        waited: Duration,
        attempts: u32,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot apply the database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
}

/// Parses a `postgres://` URL into connection options.
pub fn options_from_url(url: &str) -> Result<PgConnectOptions, DbError> {
    url.parse().map_err(DbError::InvalidUrl)
}

/// Opens a pool on the primary among `hosts` (see [`primary`]), retrying with exponential
/// backoff (100 ms up to 5 s) until `timeout` has passed; each failed attempt is logged, so an
/// operator sees why the service is waiting.
pub async fn connect(hosts: &[PgConnectOptions], max_connections: u32, timeout: Duration) -> Result<PgPool, DbError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut attempts = 0;
    loop {
        attempts += 1;
        // One plain connection per attempt: the pool's own connect would wait out its whole
        // acquire timeout before reporting anything.
        let remaining = timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
        let attempt = tokio::time::timeout(remaining.min(Duration::from_secs(10)), primary::find(hosts));
        let source = match attempt.await {
            Ok(Ok(options)) => {
                if hosts.len() > 1 {
                    tracing::info!(primary = %primary::describe(&options), "using the database primary");
                }
                return Ok(pool_of(options, max_connections));
            }
            Ok(Err(err)) => err,
            Err(_) => sqlx::Error::PoolTimedOut,
        };
        let waited = started.elapsed();
        if waited + delay > timeout {
            return Err(DbError::Unreachable { waited, attempts, source });
        }
        tracing::warn!(error = %source, attempt = attempts, retry_in = ?delay, "database not reachable yet");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// A pool of `max_connections` to the database of `options`, opened in the background from
/// the start, so the first requests do not wait for connections to be set up.
///
/// A connection idle for a second or more is pinged before it is handed out (a broken one is
/// replaced unseen); one in steady use is not, since a ping is a round trip of its own and
/// the executor takes a connection for each statement. So a connection that broke within a
/// second of its last use fails its next statement, like the statements in flight when it
/// broke (503 to an API caller, a retried step to the executor); sqlx's ping as a connection
/// comes back to the pool keeps a broken one out of it.
pub fn pool_of(options: PgConnectOptions, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options)
}

/// How long a pooled connection may sit idle before it is pinged on its way out.
const PING_IDLE: Duration = Duration::from_secs(1);

/// Applies every migration not yet applied (a no-op on an up-to-date database).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await.map_err(DbError::Migrate)
}

/// Whether `err` says the database is away for the moment — unreachable, shutting down or
/// starting, or no longer the primary after a failover (SQLSTATE 25006, read-only) — rather than
/// that the statement or the data is wrong: the same request may succeed when retried.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exceptions; 57P01-03: admin or crash shutdown, starting up.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "25006")),
        _ => false,
    }
}

/// Whether `err`, or an error it was caused by, is a database error of [`is_unavailable`].
pub fn unavailable_in(err: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(err), |e| e.source())
        .any(|e| e.downcast_ref::<sqlx::Error>().is_some_and(is_unavailable))
}

/// `SELECT 1`: the health check's proof that the database answers.
pub async fn ping(pool: &PgPool) -> Result<(), DbError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}
/// `count` parameter placeholders from `$first` on, for statements assembled from parts that
/// each bind their own values in turn.
pub(crate) fn placeholders(first: usize, count: usize) -> Vec<String> {
    (first..first + count).map(|n| format!("${n}")).collect()
}

/// The keyset condition of a list page: with a cursor, `(created_at, id) <op> ($n, $n+1)` on
/// `columns` (e.g. `i.created_at, i.id`), a range the project's list index is scanned from, so a
/// page costs the same however far in it is; without one, a no-op on those (NULL) parameters.
pub(crate) fn page_from(has_cursor: bool, columns: &str, op: &str, n: u8) -> String {
    if has_cursor {
        format!("AND ({columns}) {op} (${n}, ${})", n + 1)
    } else {
        format!("AND ${n}::timestamptz IS NULL AND ${}::uuid IS NULL", n + 1)
    }
}

pub mod hosts;
pub mod identity;
pub mod images;
pub mod instances;
pub mod liveness;
pub mod operations;
pub mod pki;
pub mod placement;
pub mod primary;
pub mod projects;
pub mod recovery;
pub mod sessions;
pub mod snapshot_policies;
pub mod snapshots;
pub mod ssh_keys;
