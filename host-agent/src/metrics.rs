//! Prometheus metrics of a host agent, which `agent` serves at `GET /metrics` on
//! `metrics_listen` (plain HTTP; off unless set): its instances by state, how long its guests
//! take from QEMU's start (or a resume) to answering SSH, and what snapshots and image fetches
//! move and take.
//!
//! Every label has a bounded set of values (states, `boot`/`resumed`): the series are as many as
//! the host has kinds of things, whatever it runs.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StartLabels {
    /// `boot` (QEMU started the guest from its disks) or `resumed` (from a memory state).
    start: &'static str,
}

/// The agent's metrics.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Mutex<Registry>,
    instances: Family<StateLabels, Gauge>,
    ready: Family<StartLabels, Histogram>,
    snapshot_bytes: Counter,
    snapshot_seconds: Histogram,
    image_bytes: Counter,
    image_seconds: Histogram,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    /// Registers every metric under the `cloud_agent` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cloud_agent");
        let instances = Family::<StateLabels, Gauge>::default();
        registry.register("instances", "Instances on this host by state (read at each scrape)", instances.clone());
        let ready = Family::<StartLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.05, 1.6, 16))
        });
        registry.register(
            "guest_ready_seconds",
            "From QEMU's start (boot) or the memory state's load (resumed) to the guest answering SSH",
            ready.clone(),
        );
        let snapshot_bytes = Counter::default();
        registry.register(
            "snapshot_uploaded_bytes",
            "Bytes of new chunks snapshots uploaded to the store",
            snapshot_bytes.clone(),
        );
        let snapshot_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        registry.register(
            "snapshot_upload_seconds",
            "Time to upload a snapshot to the store",
            snapshot_seconds.clone(),
        );
        let image_bytes = Counter::default();
        registry.register("image_fetched_bytes", "Bytes of image files fetched into the cache", image_bytes.clone());
        let image_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        registry.register("image_fetch_seconds", "Time to fetch one image file into the cache", image_seconds.clone());
        Self {
            registry: Mutex::new(registry),
            instances,
            ready,
            snapshot_bytes,
            snapshot_seconds,
            image_bytes,
            image_seconds,
        }
    }

    /// A guest answered SSH `took` after its start (`resumed`: from a memory state).
    pub fn guest_ready(&self, resumed: bool, took: Duration) {
        let start = if resumed { "resumed" } else { "boot" };
        self.ready.get_or_create(&StartLabels { start }).observe(took.as_secs_f64());
    }

    /// A snapshot uploaded `bytes` of new chunks in `took`.
    pub fn snapshot_uploaded(&self, bytes: u64, took: Duration) {
        self.snapshot_bytes.inc_by(bytes);
        self.snapshot_seconds.observe(took.as_secs_f64());
    }

    /// An image file of `bytes` was fetched into the cache in `took`.
    pub fn image_fetched(&self, bytes: u64, took: Duration) {
        self.image_bytes.inc_by(bytes);
        self.image_seconds.observe(took.as_secs_f64());
    }

    /// The text exposition, with the instances counted from `states` now.
    pub fn encode(&self, states: impl IntoIterator<Item = &'static str>) -> Result<String, std::fmt::Error> {
        self.instances.clear();
        for state in states {
            self.instances.get_or_create(&StateLabels { state }).inc();
        }
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}
