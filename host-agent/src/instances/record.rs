//! An instance's record on its host, `agent.json` in its directory: the desired spec, power,
//! applied generation and last state, written whole before the runner acts on a new generation
//! (so a restarted agent acts on what was last asked) and read back at start. It holds the
//! tenant's user-data: only the agent reads it (0600).

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vmm::InstanceDir;

use super::{DesiredInstance, InstanceError, InstanceState, PowerState};

/// The record file of an instance directory.
pub(super) const AGENT_JSON: &str = "agent.json";
/// Present while an instance's first apply is in progress.
pub(super) const CREATING_MARKER: &str = "creating";

/// `agent.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct AgentRecord {
    pub desired: DesiredInstance,
    pub power: PowerState,
    pub generation: u64,
    pub state: InstanceState,
    #[serde(default)]
    pub reason: Option<String>,
    /// When the guest became reachable in its current boot (cleared whenever it stops running).
    #[serde(default)]
    pub ready_at: Option<DateTime<Utc>>,
    /// The SSH host public keys the guest last printed on its console.
    #[serde(default)]
    pub ssh_host_keys: Vec<String>,
}

/// Replaces `path` with `value` as JSON, atomically and durably (0600: records hold tenants'
/// user-data).
pub(super) async fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), InstanceError> {
    let persist = |source| InstanceError::Persist { path: path.to_owned(), source };
    let json = serde_json::to_vec_pretty(value).map_err(|e| persist(std::io::Error::other(e)))?;
    let target = path.to_owned();
    tokio::task::spawn_blocking(move || cloud_common::fs::write_atomic(&target, &json, 0o600))
        .await
        .map_err(|e| persist(std::io::Error::other(e)))?
        .map_err(persist)
}

/// Writes `agent.json` atomically.
pub(super) async fn write_record(dir: &InstanceDir, record: &AgentRecord) -> Result<(), InstanceError> {
    write_json(&dir.root().join(AGENT_JSON), record).await
}

/// Reads `agent.json`.
pub(super) async fn read_record(dir: &InstanceDir) -> Result<AgentRecord, InstanceError> {
    let path = dir.root().join(AGENT_JSON);
    let bytes = tokio::fs::read(&path).await.map_err(|source| InstanceError::Persist { path: path.clone(), source })?;
    serde_json::from_slice(&bytes).map_err(|e| InstanceError::Persist { path, source: std::io::Error::other(e) })
}
