//! Prometheus metrics of the control plane, served at `GET /metrics`.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sqlx::PgPool;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    kind: &'static str,
    step: &'static str,
    /// `done`, `retry` or `failed`.
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FilterLabels {
    filter: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// The registry and the handles the service updates.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    db_connections: Gauge,
    db_idle_connections: Gauge,
    fleet_degraded: Gauge,
    fleet_silent_hosts: Gauge,
    embedded_db_restarts: Counter,
    rate_limited: Counter,
    operations: Family<OperationLabels, Counter>,
    steps: Family<StepLabels, Histogram>,
    instances: Family<StateLabels, Gauge>,
    hosts: Family<StateLabels, Gauge>,
    placements: Family<OutcomeLabels, Counter>,
    filtered: Family<FilterLabels, Counter>,
    report_seconds: Histogram,
    report_lag: Histogram,
    agent_channels: Gauge,
}

/// Encoding the text format failed (only on a formatter error).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the metrics")]
pub struct EncodeError(#[source] std::fmt::Error);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `cloud` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cloud");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests served", requests.clone());
        let durations = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register("http_request_duration_seconds", "Time to serve HTTP requests", durations.clone());
        let db_connections = Gauge::default();
        registry.register("db_pool_connections", "Open database connections", db_connections.clone());
        let db_idle_connections = Gauge::default();
        registry.register("db_pool_idle_connections", "Idle database connections", db_idle_connections.clone());
        let fleet_degraded = Gauge::default();
        registry.register(
            "fleet_degraded",
            "1 while many hosts are silent together (a partition): no host is declared dead automatically",
            fleet_degraded.clone(),
        );
        let fleet_silent_hosts = Gauge::default();
        registry.register("fleet_silent_hosts", "Hosts whose lease ran out (suspect)", fleet_silent_hosts.clone());
        let embedded_db_restarts = Counter::default();
        registry.register(
            "embedded_db_restarts",
            "Times the embedded PostgreSQL exited and was started again",
            embedded_db_restarts.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited_requests",
            "Requests refused with 429 because their token or session was over its rate",
            rate_limited.clone(),
        );
        let operations = Family::<OperationLabels, Counter>::default();
        registry.register("operations", "Operations this replica finished, by kind and outcome", operations.clone());
        let steps = Family::<StepLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 18))
        });
        registry.register(
            "operation_step_duration_seconds",
            "Time of each attempt at an operation step, by kind, step and outcome (done, retry, failed)",
            steps.clone(),
        );
        let instances = Family::<StateLabels, Gauge>::default();
        registry.register("instances", "Instances by state (read at each scrape)", instances.clone());
        let hosts = Family::<StateLabels, Gauge>::default();
        registry.register("hosts", "Hosts by state (read at each scrape)", hosts.clone());
        let placements = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "scheduler_placements",
            "Placement decisions by outcome: placed, or why not (no_host_fits, host_full, contended, deleted, error)",
            placements.clone(),
        );
        let filtered = Family::<FilterLabels, Counter>::default();
        registry.register(
            "scheduler_hosts_filtered",
            "Hosts a failed placement found unfit, by the first filter that removed each",
            filtered.clone(),
        );
        let report_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register("report_duration_seconds", "Time to apply one host's report", report_seconds.clone());
        let report_lag = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "report_lag_seconds",
            "Age of a report's freshest instance observation when it is applied (the agent's clock against this replica's)",
            report_lag.clone(),
        );
        let agent_channels = Gauge::default();
        registry.register(
            "agent_channels",
            "Channels to host agents this replica holds (dialed ahead of their first call, or opened by one)",
            agent_channels.clone(),
        );
        let build = Family::<Vec<(String, String)>, Gauge>::default();
        build.get_or_create(&vec![("version".to_owned(), crate::VERSION.to_owned())]).set(1);
        registry.register("build_info", "Version of the running control plane", build);
        Self {
            registry: Mutex::new(registry),
            requests,
            durations,
            db_connections,
            db_idle_connections,
            fleet_degraded,
            fleet_silent_hosts,
            embedded_db_restarts,
            rate_limited,
            operations,
            steps,
            instances,
            hosts,
            placements,
            filtered,
            report_seconds,
            report_lag,
            agent_channels,
        }
    }

    /// A host's report was applied in `took`; `lag`: the age of its freshest observation.
    pub fn report_applied(&self, took: Duration, lag: Option<Duration>) {
        self.report_seconds.observe(took.as_secs_f64());
        if let Some(lag) = lag {
            self.report_lag.observe(lag.as_secs_f64());
        }
    }

    /// Counts a placement decision (`placed`, or why not); `filtered` says, for a placement no
    /// host fitted, how many hosts each filter removed.
    pub fn placement(&self, outcome: &'static str, filtered: &[(&'static str, usize)]) {
        self.placements.get_or_create(&OutcomeLabels { outcome }).inc();
        for (filter, hosts) in filtered {
            self.filtered.get_or_create(&FilterLabels { filter }).inc_by(*hosts as u64);
        }
    }

    /// Counts an operation that ended (`succeeded`, `failed`, `cancelled`).
    pub fn operation_finished(&self, kind: &'static str, outcome: &'static str) {
        self.operations.get_or_create(&OperationLabels { kind, outcome }).inc();
    }

    /// Records one attempt at a step.
    pub fn step_attempted(&self, kind: &'static str, step: &'static str, outcome: &'static str, took: Duration) {
        self.steps.get_or_create(&StepLabels { kind, step, outcome }).observe(took.as_secs_f64());
    }

    /// Reads how many instances and hosts are in each state, for the next encoding (states no
    /// longer held by any row are dropped).
    pub async fn read_states(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let instances: Vec<(String, i64)> =
            sqlx::query_as("SELECT state::text, count(*) FROM instances GROUP BY state").fetch_all(pool).await?;
        let hosts: Vec<(String, i64)> =
            sqlx::query_as("SELECT state::text, count(*) FROM hosts GROUP BY state").fetch_all(pool).await?;
        for (family, rows) in [(&self.instances, instances), (&self.hosts, hosts)] {
            family.clear();
            for (state, n) in rows {
                family.get_or_create(&StateLabels { state }).set(n);
            }
        }
        Ok(())
    }

    /// Records the fleet's liveness after a pass.
    pub fn set_fleet_liveness(&self, degraded: bool, silent_hosts: u64) {
        self.fleet_degraded.set(i64::from(degraded));
        self.fleet_silent_hosts.set(i64::try_from(silent_hosts).unwrap_or(i64::MAX));
    }

    /// Records how many channels to agents are held.
    pub fn set_agent_channels(&self, held: usize) {
        self.agent_channels.set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// Counts a restart of the embedded database.
    pub fn embedded_db_restarted(&self) {
        self.embedded_db_restarts.inc();
    }

    /// Counts a request refused for its caller's rate.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// Records one served request. `route` is the matched route template (never the raw path);
    /// a method outside the standard ones counts as `other`: whatever a client sends, the
    /// series stay a bounded set.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
        let method = if KNOWN.contains(&method) { method } else { "other" };
        let (method, route) = (method.to_owned(), route.to_owned());
        self.requests.get_or_create(&RequestLabels { method: method.clone(), route: route.clone(), status }).inc();
        self.durations.get_or_create(&RouteLabels { method, route }).observe(elapsed.as_secs_f64());
    }

    /// The text exposition of every metric, with the pool gauges read now.
    pub fn encode(&self, pool: &PgPool) -> Result<String, EncodeError> {
        self.db_connections.set(i64::from(pool.size()));
        self.db_idle_connections.set(pool.num_idle() as i64);
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        prometheus_client::encoding::text::encode(&mut out, &registry).map_err(EncodeError)?;
        Ok(out)
    }
}
