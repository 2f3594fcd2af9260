//! Host reports written in batches: the reports that arrive while one batch is being written
//! are written together by the next, in four statements whatever their number (the hosts'
//! leases and capacity, what the guests said, the instances' steady states, the instances each
//! host owns), instead of three or more statements per report.
//!
//! ```text
//!  Report ─▶ submit: queue it; no writer running? spawn one ─────▶ await its answer
//!  writer: loop { take up to MAX_BATCH queued reports (one per host: the latest)
//!                 hosts_report ─▶ instances_apply_reports ─▶ hosts_instance_ids ─▶ answer each }
//!          queue empty ─▶ stop (a report queued meanwhile starts the next writer)
//! ```
//! Under light load a batch is one report and nothing waits; under heavy load a batch holds
//! what queued during the previous one, so the writes per second stay flat as reports grow.
//! The writer runs as its own task: a caller that goes away cancels nobody else's report.
//!
//! The writer has a database connection of its own ([`ReportWriter::connect`]), apart from the
//! API's and the executor's: reports renew the hosts' leases, and requests holding every API
//! connection must not make a fleet look silent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::db::hosts::{self, HostCapacity, LeaseRenewal};
use crate::db::instances::{self, InstanceReport};

/// The most reports written in one batch.
const MAX_BATCH: usize = 512;

/// One host's report, as the database takes it.
#[derive(Debug, Clone)]
pub struct HostReport {
    pub host_id: Uuid,
    /// vCPUs, memory bytes, disk bytes.
    pub capacity: (i32, i64, i64),
    pub instances: Vec<InstanceReport>,
}

/// What a report got: the host's renewed lease and the instances it owns; `None` for a host
/// the database does not know.
pub type Reported = Option<(LeaseRenewal, Vec<Uuid>)>;

type Answer = Result<Reported, Arc<sqlx::Error>>;

#[derive(Debug)]
struct Pending {
    report: HostReport,
    reply: oneshot::Sender<Answer>,
}

/// The queue of reports waiting to be written, whether a writer runs, and what it writes with.
pub struct ReportWriter {
    queue: Mutex<Vec<Pending>>,
    writing: AtomicBool,
    pool: sqlx::PgPool,
    /// How long a report keeps a host's lease.
    lease_secs: u32,
    /// Called when a report changed an instance (wakes the requests waiting for one).
    changed: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for ReportWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportWriter").field("writing", &self.writing).field("lease_secs", &self.lease_secs).finish()
    }
}

impl ReportWriter {
    /// A writer with its own pool of the database of `options`: one connection, as one batch
    /// is written at a time.
    pub fn connect(
        options: sqlx::postgres::PgConnectOptions,
        lease_secs: u32,
        changed: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        let pool = crate::db::pool_of(options, 1);
        let changed = Box::new(changed);
        Self { queue: Mutex::default(), writing: AtomicBool::new(false), pool, lease_secs, changed }
    }

    /// The writer's pool (to follow a new primary with the others).
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }
}

/// Writes `report` with the others queued now; its outcome once written.
pub async fn submit(writer: &Arc<ReportWriter>, report: HostReport) -> Answer {
    let (reply, answer) = oneshot::channel();
    writer.queue.lock().unwrap_or_else(|e| e.into_inner()).push(Pending { report, reply });
    if !writer.writing.swap(true, Ordering::SeqCst) {
        let writer = writer.clone();
        tokio::spawn(async move { write_queued(&writer).await });
    }
    answer.await.unwrap_or_else(|_| Err(Arc::new(sqlx::Error::PoolClosed)))
}

/// Writes batches until the queue is empty, then lets the next report start a writer.
async fn write_queued(writer: &ReportWriter) {
    // Should this task die (a panic), the next report must still find no writer running.
    struct Stopped<'a>(&'a AtomicBool);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.store(false, Ordering::SeqCst);
            }
        }
    }
    let _stopped = Stopped(&writer.writing);
    loop {
        let batch: Vec<Pending> = {
            let mut queue = writer.queue.lock().unwrap_or_else(|e| e.into_inner());
            let n = queue.len().min(MAX_BATCH);
            queue.drain(..n).collect()
        };
        if batch.is_empty() {
            writer.writing.store(false, Ordering::SeqCst);
            // A report queued after the take but before the store saw a writer running and
            // started none: take it over, unless a new writer already did.
            let more = !writer.queue.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
            if more && !writer.writing.swap(true, Ordering::SeqCst) {
                continue;
            }
            return;
        }
        write_batch(writer, batch).await;
    }
}

async fn write_batch(writer: &ReportWriter, batch: Vec<Pending>) {
    // One report per host (the latest): a statement must not update a row twice.
    let mut latest: HashMap<Uuid, &HostReport> = HashMap::with_capacity(batch.len());
    for pending in &batch {
        latest.insert(pending.report.host_id, &pending.report);
    }
    let result = write(writer, &latest).await.map_err(Arc::new);
    for pending in batch {
        let answer = match &result {
            Ok(reported) => Ok(reported.get(&pending.report.host_id).cloned()),
            Err(e) => Err(e.clone()),
        };
        let _ = pending.reply.send(answer);
    }
}

async fn write(
    writer: &ReportWriter,
    reports: &HashMap<Uuid, &HostReport>,
) -> Result<HashMap<Uuid, (LeaseRenewal, Vec<Uuid>)>, sqlx::Error> {
    let mut conn = writer.pool.acquire().await?;
    let capacities: Vec<HostCapacity> =
        reports.values().map(|r| HostCapacity { host_id: r.host_id, capacity: r.capacity }).collect();
    let renewed = hosts::hosts_report(&mut conn, &capacities, writer.lease_secs).await?;
    // Only the known hosts' instances: an unknown host's report changes nothing.
    let known: Vec<Uuid> = renewed.iter().map(|(id, _)| *id).collect();
    let statuses: Vec<InstanceReport> =
        known.iter().filter_map(|id| reports.get(id)).flat_map(|r| r.instances.iter().cloned()).collect();
    if instances::instances_apply_reports(&mut conn, &statuses).await? > 0 {
        (writer.changed)();
    }
    let mut owned = hosts::hosts_instance_ids(&mut conn, &known).await?;
    Ok(renewed
        .into_iter()
        .map(|(id, renewal)| {
            if renewal.previous_state == crate::states::HostState::Dead {
                tracing::warn!(host_id = %id, "a host declared dead reports again: taken back with its identity and instances");
            }
            (id, (renewal, owned.remove(&id).unwrap_or_default()))
        })
        .collect())
}
