//! The executor's handle and configuration: what the rest of the control plane holds (to wake
//! it after creating an operation) apart from the run loop in [`super`], which needs the whole
//! [`crate::app::App`].

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// `[operations]` configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperationsConfig {
    /// Seconds a claim lasts without renewal: how soon another replica resumes the work of one
    /// that died. Renewed every third of it.
    pub lease_secs: u32,
    /// How many operations one replica drives at once.
    pub concurrency: u32,
    /// Database connections the executor uses, apart from the API's `database.max_connections`.
    /// Its statements are short and CPU-bound on the database (waits for agents hold no
    /// connection): more of them than the database has cores to spare make operations no faster
    /// and take the cores requests need.
    pub max_connections: u32,
    /// How long a step may keep asking to be retried before the operation fails.
    pub step_timeout_secs: u32,
    /// Time limits of particular steps (by step name), overriding `step_timeout_secs`.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub step_timeouts: std::collections::BTreeMap<String, u32>,
}

impl Default for OperationsConfig {
    fn default() -> Self {
        Self {
            lease_secs: 30,
            concurrency: 32,
            max_connections: 2,
            step_timeout_secs: 600,
            step_timeouts: Default::default(),
        }
    }
}

impl OperationsConfig {
    /// How long `step` may retry.
    pub fn step_timeout(&self, step: crate::states::Step) -> Duration {
        let secs = self.step_timeouts.get(step.as_str()).copied().unwrap_or(self.step_timeout_secs);
        Duration::from_secs(u64::from(secs))
    }
}

/// The executor of one replica. Cheap to clone; `wake()` after creating an operation.
#[derive(Debug, Clone)]
pub struct Executor {
    pub(super) owner: String,
    pub(super) notify: Arc<Notify>,
    pub(super) lease: Duration,
    pub(super) concurrency: usize,
    pub(super) config: OperationsConfig,
}

impl Executor {
    /// An executor whose leases name this process.
    pub fn new(config: &OperationsConfig) -> Self {
        let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
        Self {
            owner: format!("{host}/{}/{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            notify: Arc::new(Notify::new()),
            lease: Duration::from_secs(u64::from(config.lease_secs.max(1))),
            concurrency: usize::try_from(config.concurrency.max(1)).unwrap_or(1),
            config: config.clone(),
        }
    }

    /// Tells the executor there is new work.
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}
