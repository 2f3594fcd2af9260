//! The instance operations and their steps.
//!
//! | operation | steps (undo in brackets) |
//! |---|---|
//! | `instance_create` | place [release capacity] → allocate_address [free it] → ensure_on_host [delete on host] → wait_running |
//! | `instance_start` | ensure_on_host → wait_running |
//! | `instance_stop` | stop_on_host → wait_stopped |
//! | `instance_reboot` | reboot_on_host → wait_running |
//! | `instance_delete` | delete_on_host → drop_suspend_state → release_address → release_capacity |
//! | `instance_restore` | place [release capacity] → allocate_address [free it] → restore_on_host [delete on host] → wait_running |
//! | `instance_suspend` | suspend_on_host (a full snapshot) [delete it] → delete_on_host → release_capacity |
//! | `instance_resume` | place, on the host of the saved state if it has room [release capacity] → allocate_address → restore_on_host [delete on host] → wait_running → drop_suspend_state |
//! | `instance_recover` | as `instance_restore`, for the same instance from its latest snapshot after its host died (`reconcilers::disaster_recovery`) |
//!
//! Snapshots are in the shared store, so a restore or a resume runs on any host: the host
//! fetches what it lacks. A memory state continues the guest anywhere: where the instance's
//! address (a new one on another host's subnet) or hostname differs from the snapshotted
//! guest's, the agent re-addresses the running guest through its guest agent, and resets it
//! to boot afresh from the restored disks when it cannot. Disaster recovery always boots
//! afresh from the disks (see `reconcilers::disaster_recovery`).
//!
//! Each operation carries the instance id and the generation the API assigned to the change;
//! the agent applies a request only if its generation is not older than what it applied, so a
//! step that runs twice (a crash between doing and recording it) does nothing the second time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloud_proto::agent::v1 as pb;
use serde::{Deserialize, Serialize};
use tonic::Code;

use super::StepError;
use crate::app::App;
use crate::db::instances as db;
use crate::db::operations::OperationRow;
use crate::ids::{HostId, InstanceId, SnapshotId};
use crate::scheduler::reserve::PlacementError;
use crate::states::{BootMode, Firmware, InstanceState, OperationKind, Step};

/// Steps of each operation kind.
pub fn steps(kind: OperationKind) -> &'static [Step] {
    match kind {
        OperationKind::InstanceCreate => &[Step::Place, Step::AllocateAddress, Step::EnsureOnHost, Step::WaitRunning],
        OperationKind::InstanceStart => &[Step::EnsureOnHost, Step::WaitRunning],
        OperationKind::InstanceStop => &[Step::StopOnHost, Step::WaitStopped],
        OperationKind::InstanceReboot => &[Step::RebootOnHost, Step::WaitRunning],
        OperationKind::InstanceDelete => {
            &[Step::DeleteOnHost, Step::DropSuspendState, Step::ReleaseAddress, Step::ReleaseCapacity]
        }
        OperationKind::InstanceRestore | OperationKind::InstanceRecover => {
            &[Step::Place, Step::AllocateAddress, Step::RestoreOnHost, Step::WaitRunning]
        }
        OperationKind::InstanceSuspend => &[Step::SuspendOnHost, Step::DeleteOnHost, Step::ReleaseCapacity],
        OperationKind::InstanceResume => {
            &[Step::Place, Step::AllocateAddress, Step::RestoreOnHost, Step::WaitRunning, Step::DropSuspendState]
        }
        OperationKind::SnapshotCreate | OperationKind::SnapshotDelete => &[],
    }
}

/// The parameters every instance operation carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceParams {
    pub instance_id: InstanceId,
    pub generation: i64,
    /// The snapshot an `instance_restore` restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<SnapshotId>,
}

/// How long an instance may take to reach `running` or `stopped` on its host.
const WAIT_TIMEOUT: Duration = Duration::from_secs(300);

fn params(op: &OperationRow) -> Result<InstanceParams, StepError> {
    serde_json::from_value(op.params.clone())
        .map_err(|e| StepError::Fail { code: "internal", message: format!("operation parameters are invalid: {e}") })
}

fn agent_error(status: &tonic::Status) -> StepError {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => StepError::Retry {
            reason: format!("the host agent is unreachable: {}", status.message()),
            after: Duration::from_secs(2),
        },
        Code::FailedPrecondition => StepError::Fail {
            code: "conflict",
            message: format!("the host has already applied a newer change: {}", status.message()),
        },
        _ => StepError::Fail { code: "host_error", message: format!("the host refused: {}", status.message()) },
    }
}

/// The host a resume prefers: the one that saved the instance's state (its memory state
/// continues the guest there, with its address); `None` for any host.
async fn preferred_host(app: &App, op: &OperationRow, p: &InstanceParams) -> Result<Option<HostId>, StepError> {
    match op.kind {
        OperationKind::InstanceResume => Ok(suspend_state(app, p.instance_id).await?.1),
        _ => Ok(None),
    }
}

/// Where an instance's suspended state is: its snapshot id and host.
async fn suspend_state(app: &App, id: InstanceId) -> Result<(Option<SnapshotId>, Option<HostId>), StepError> {
    let mut conn = app.work_pool.acquire().await.map_err(|e| StepError::db(&e))?;
    db::instance_suspend_state(&mut conn, id).await.map_err(|e| StepError::db(&e))
}

/// Deletes an instance's suspended state on its host (skipped while the host cannot be called:
/// a dead host's files went with it) and in the store (left there, logged, while the store is
/// away: a resume does not wait for it) and forgets it.
async fn drop_suspend_state(app: &App, id: InstanceId) -> Result<(), StepError> {
    let (snapshot, host) = suspend_state(app, id).await?;
    if let Some(snapshot) = snapshot {
        // The host that saved it, and the one that resumed it (which rebuilt it from the store).
        let now_on = spec(app, id).await.ok().and_then(|s| s.host_id);
        super::snapshots::forget(app, snapshot, &[host, now_on], super::snapshots::Store::BestEffort).await?;
    }
    let mut conn = app.work_pool.acquire().await.map_err(|e| StepError::db(&e))?;
    db::instance_set_suspend_state(&mut conn, id, None, None).await.map_err(|e| StepError::db(&e))
}

async fn spec(app: &App, id: InstanceId) -> Result<db::AgentSpecRow, StepError> {
    spec_on(&mut *app.work_pool.acquire().await.map_err(|e| StepError::db(&e))?, id).await
}

async fn spec_on(conn: &mut sqlx::PgConnection, id: InstanceId) -> Result<db::AgentSpecRow, StepError> {
    db::instance_agent_spec(conn, id)
        .await
        .map_err(|e| StepError::db(&e))?
        .ok_or(StepError::Fail { code: "not_found", message: "the instance no longer exists".to_owned() })
}

/// The agent of a host that can be called: `None` when the instance has no host, or its host
/// is dead (a dead host that returns destroys what it no longer owns before resuming anything).
fn live_client(app: &App, spec: &db::AgentSpecRow) -> Result<Option<crate::agents::AgentClient>, StepError> {
    if spec.host_state.as_deref().and_then(|s| s.parse().ok()) == Some(crate::states::HostState::Dead) {
        tracing::info!(instance = %spec.id, "its host is dead: not called; it cleans up when it reports again");
        return Ok(None);
    }
    client(app, spec)
}

fn client(app: &App, spec: &db::AgentSpecRow) -> Result<Option<crate::agents::AgentClient>, StepError> {
    match (spec.host_id, &spec.agent_endpoint) {
        (Some(host), Some(endpoint)) => app
            .agents
            .client(&app.fleet, host, endpoint)
            .map(Some)
            .map_err(|e| StepError::Fail { code: "host_error", message: e.to_string() }),
        _ => Ok(None),
    }
}

fn placed_client(app: &App, spec: &db::AgentSpecRow) -> Result<crate::agents::AgentClient, StepError> {
    client(app, spec)?.ok_or(StepError::Fail { code: "internal", message: "the instance has no host".to_owned() })
}

/// The spec the agent gets. Values out of their range are an error here, never replaced by a
/// default; the NIC's prefix and gateway come from the host's subnet as the database has it.
fn agent_spec(s: &db::AgentSpecRow) -> Result<pb::InstanceSpec, StepError> {
    let invalid =
        |what: &str| StepError::Fail { code: "internal", message: format!("instance {}: invalid {what}", s.id) };
    let nics = match (&s.mac, &s.address, &s.subnet) {
        (Some(mac), Some(address), Some(subnet)) => {
            let subnet: cloud_common::net::Ipv4Net = subnet.parse().map_err(|_| invalid("host subnet"))?;
            let gateway = subnet.nth(1).ok_or_else(|| invalid("host subnet"))?;
            vec![pb::NicSpec {
                mac: mac.clone(),
                address: format!("{address}/{}", subnet.prefix),
                gateway: gateway.to_string(),
            }]
        }
        _ => Vec::new(),
    };
    Ok(pb::InstanceSpec {
        instance_id: s.id.to_string(),
        hostname: s.name.clone(),
        vcpus: u32::try_from(s.vcpus).map_err(|_| invalid("vCPU count"))?,
        memory_bytes: u64::try_from(s.memory_bytes).map_err(|_| invalid("memory size"))?,
        disk_bytes: u64::try_from(s.disk_bytes).map_err(|_| invalid("disk size"))?,
        image: Some(pb::ImageRef {
            image_id: s.image_id.to_string(),
            disk_sha256: s.disk_sha256.clone().unwrap_or_default(),
            disk_size_bytes: s
                .disk_size_bytes
                .map(u64::try_from)
                .transpose()
                .map_err(|_| invalid("image size"))?
                .unwrap_or(0),
            boot_mode: match s.boot_mode {
                BootMode::Firmware => pb::BootMode::Firmware,
                BootMode::DirectKernel => pb::BootMode::DirectKernel,
            } as i32,
            kernel_sha256: s.kernel_sha256.clone().unwrap_or_default(),
            initrd_sha256: s.initrd_sha256.clone().unwrap_or_default(),
            kernel_cmdline: s.kernel_cmdline.clone(),
            firmware: match s.firmware.as_deref().map(str::parse::<Firmware>).transpose() {
                Ok(Some(Firmware::Bios)) => pb::Firmware::Bios,
                Ok(Some(Firmware::Uefi)) => pb::Firmware::Uefi,
                Ok(None) => pb::Firmware::Unspecified,
                Err(_) => return Err(invalid("image firmware")),
            } as i32,
        }),
        nics,
        ssh_authorized_keys: s.ssh_keys.clone(),
        user_data: s.user_data.clone(),
        project_id: s.project_id.to_string(),
    })
}

/// Waits until the agent reports `want` at `generation` or later.
async fn wait_for(
    app: &App,
    op: &OperationRow,
    id: InstanceId,
    generation: i64,
    want: pb::InstanceState,
) -> Result<(), StepError> {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    let mut delay = Duration::from_millis(200);
    loop {
        let s = spec(app, id).await?;
        check_not_cancelled(op, &s)?;
        let mut agent = placed_client(app, &s)?;
        match agent.get_instance(pb::GetInstanceRequest { instance_id: id.to_string() }).await {
            Ok(status) => {
                let status = status.into_inner();
                if reached(&status, generation, want) {
                    return Ok(());
                }
                if status.state == pb::InstanceState::Failed as i32 {
                    return Err(StepError::Fail { code: "instance_failed", message: status.reason });
                }
            }
            Err(status) if matches!(agent_error(&status), StepError::Retry { .. }) => {}
            Err(status) => return Err(agent_error(&status)),
        }
        if Instant::now() >= deadline {
            return Err(StepError::Fail {
                code: "timeout",
                message: format!("the instance did not become {} within {WAIT_TIMEOUT:?}", want.as_str_name()),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Whether the agent's `status` is `want` at `generation` or later.
fn reached(status: &pb::InstanceStatus, generation: i64, want: pb::InstanceState) -> bool {
    status.generation >= u64::try_from(generation).unwrap_or(0) && status.state == want as i32
}

/// What a step that asked the agent for a change records: the instance's state as the agent's
/// answer gave it, which the wait that follows needs not ask again.
#[derive(Debug, Serialize, Deserialize)]
struct Answered {
    state: String,
    generation: u64,
}

impl Answered {
    fn output(status: &pb::InstanceStatus) -> Option<serde_json::Value> {
        let state = pb::InstanceState::try_from(status.state).ok()?.as_str_name().to_owned();
        serde_json::to_value(Answered { state, generation: status.generation }).ok()
    }

    /// Whether `prior` (the output of the step just done) already says `want` at `generation`.
    fn reached(prior: Option<&serde_json::Value>, generation: i64, want: pb::InstanceState) -> bool {
        let Some(answered) = prior.and_then(|v| serde_json::from_value::<Answered>(v.clone()).ok()) else {
            return false;
        };
        let status = pb::InstanceStatus {
            state: pb::InstanceState::from_str_name(&answered.state).map_or(-1, |s| s as i32),
            generation: answered.generation,
            ..Default::default()
        };
        reached(&status, generation, want)
    }
}

/// Fails a create or start whose instance is being deleted (the delete cancels it).
fn check_not_cancelled(op: &OperationRow, s: &db::AgentSpecRow) -> Result<(), StepError> {
    if matches!(op.kind, OperationKind::InstanceCreate | OperationKind::InstanceStart) && s.state.is_going_away() {
        return Err(StepError::Fail {
            code: "cancelled",
            message: "cancelled: the instance is being deleted".to_owned(),
        });
    }
    Ok(())
}

/// Runs one step; `Ok(output)` is recorded with the step. `prior` is the output of the step
/// done just before in the same run, if any. A create or start whose instance is being deleted
/// fails `cancelled` at its next step (placement and addressing refuse such an instance too).
pub async fn run_step(
    app: &Arc<App>,
    op: &OperationRow,
    step: Step,
    prior: Option<&serde_json::Value>,
) -> Result<Option<serde_json::Value>, StepError> {
    let p = params(op)?;
    let id = p.instance_id;
    let generation = u64::try_from(p.generation).unwrap_or(0);
    match step {
        Step::Place => {
            // Read before the transaction: it holds a connection, and the pool may have no other.
            let preferred = preferred_host(app, op, &p).await?;
            let mut tx = app.work_pool.begin().await.map_err(|e| StepError::db(&e))?;
            let placement = match preferred {
                Some(host) => match crate::scheduler::reserve::place_instance_on(&mut tx, id, host).await {
                    Err(PlacementError::HostFull { .. } | PlacementError::NoHostFits(_)) => {
                        tracing::info!(instance = %id, %host, "the saved state's host has no room: resuming elsewhere");
                        crate::scheduler::reserve::place_instance(&mut tx, id, app.scheduler.strategy).await
                    }
                    other => other,
                },
                None => crate::scheduler::reserve::place_instance(&mut tx, id, app.scheduler.strategy).await,
            };
            let (outcome, filtered): (_, Vec<_>) = match &placement {
                Ok(_) => ("placed", Vec::new()),
                Err(PlacementError::NoHostFits(why)) => {
                    ("no_host_fits", why.removed_by.iter().map(|(f, n)| (f.as_str(), *n)).collect())
                }
                Err(PlacementError::HostFull { .. }) => ("host_full", Vec::new()),
                Err(PlacementError::Contended { .. }) => ("contended", Vec::new()),
                Err(PlacementError::InstanceDeleted { .. }) => ("deleted", Vec::new()),
                Err(_) => ("error", Vec::new()),
            };
            app.metrics.placement(outcome, &filtered);
            match placement {
                Ok(placement) => {
                    tx.commit().await.map_err(|e| StepError::db(&e))?;
                    Ok(Some(serde_json::json!({ "host_id": placement.host_id })))
                }
                Err(PlacementError::NoHostFits(reasons)) => {
                    Err(StepError::Fail { code: "no_capacity", message: reasons.to_string() })
                }
                Err(err @ PlacementError::HostFull { .. }) => {
                    Err(StepError::Fail { code: "no_capacity", message: err.to_string() })
                }
                Err(PlacementError::InstanceDeleted { .. }) => Err(StepError::Fail {
                    code: "cancelled",
                    message: "cancelled: the instance is being deleted".to_owned(),
                }),
                Err(PlacementError::Db { source, .. } | PlacementError::ReadHosts(source)) => {
                    Err(StepError::db(&source))
                }
                Err(err @ PlacementError::Contended { .. }) => {
                    Err(StepError::Retry { reason: err.to_string(), after: Duration::from_millis(200) })
                }
                Err(err) => Err(StepError::Fail { code: "internal", message: err.to_string() }),
            }
        }
        Step::AllocateAddress => {
            let mut conn = app.work_pool.acquire().await.map_err(|e| StepError::db(&e))?;
            let s = spec_on(&mut conn, id).await?;
            let host = s
                .host_id
                .ok_or(StepError::Fail { code: "internal", message: "the instance has no host".to_owned() })?;
            let (mac, address) = match db::nic_allocate(&mut conn, id, host).await {
                Err(sqlx::Error::RowNotFound) => {
                    return Err(StepError::Fail {
                        code: "cancelled",
                        message: "cancelled: the instance is being deleted".to_owned(),
                    });
                }
                other => other.map_err(|e| StepError::db(&e))?,
            };
            Ok(Some(serde_json::json!({ "mac": mac, "address": address.to_string() })))
        }
        Step::EnsureOnHost => {
            let s = spec(app, id).await?;
            check_not_cancelled(op, &s)?;
            let mut agent = placed_client(app, &s)?;
            let request = pb::EnsureInstanceRequest {
                spec: Some(agent_spec(&s)?),
                desired_power_state: pb::PowerState::Running as i32,
                generation,
            };
            let status = agent.ensure_instance(request).await.map_err(|e| agent_error(&e))?.into_inner();
            set_state(app, id, InstanceState::Starting).await?;
            Ok(Answered::output(&status))
        }
        Step::RestoreOnHost => {
            // A resume or a restore continues the guest from its memory when the snapshot has
            // it, on any host: the agent re-addresses a guest whose address or hostname changed
            // (or boots it afresh when it cannot). Disaster recovery boots afresh from the disks.
            let s = spec(app, id).await?;
            let (snapshot, fresh_boot) = match op.kind {
                OperationKind::InstanceResume => (suspend_state(app, id).await?.0, false),
                OperationKind::InstanceRecover => (p.snapshot_id, true),
                _ => (p.snapshot_id, false),
            };
            let snapshot = snapshot
                .ok_or(StepError::Fail { code: "internal", message: "a restore without its snapshot".to_owned() })?;
            let mut agent = placed_client(app, &s)?;
            let request = pb::RestoreInstanceRequest {
                spec: Some(agent_spec(&s)?),
                snapshot_id: snapshot.to_string(),
                snapshot_location: String::new(),
                generation,
                fresh_boot,
            };
            let status = agent.restore_instance(request).await.map_err(|e| agent_error(&e))?.into_inner();
            set_state(app, id, InstanceState::Starting).await?;
            Ok(Answered::output(&status))
        }
        // The agent's answer to the step before said so already: nothing to ask.
        Step::WaitRunning if Answered::reached(prior, p.generation, pb::InstanceState::Running) => Ok(None),
        Step::WaitRunning => wait_for(app, op, id, p.generation, pb::InstanceState::Running).await.map(|()| None),
        Step::StopOnHost => {
            let s = spec(app, id).await?;
            let mut agent = placed_client(app, &s)?;
            agent
                .stop_instance(pb::InstanceActionRequest { instance_id: id.to_string(), generation })
                .await
                .map_err(|e| agent_error(&e))?;
            Ok(None)
        }
        Step::WaitStopped => wait_for(app, op, id, p.generation, pb::InstanceState::Stopped).await.map(|()| None),
        Step::RebootOnHost => {
            let s = spec(app, id).await?;
            let mut agent = placed_client(app, &s)?;
            agent
                .reboot_instance(pb::InstanceActionRequest { instance_id: id.to_string(), generation })
                .await
                .map_err(|e| agent_error(&e))?;
            Ok(None)
        }
        Step::SuspendOnHost => {
            let s = spec(app, id).await?;
            let host = s
                .host_id
                .ok_or(StepError::Fail { code: "internal", message: "the instance has no host".to_owned() })?;
            // The id is recorded before the host is asked, so a step run again asks for the same.
            let snapshot = match suspend_state(app, id).await?.0 {
                Some(snapshot) => snapshot,
                None => {
                    let snapshot = SnapshotId::new();
                    let mut conn = app.work_pool.acquire().await.map_err(|e| StepError::db(&e))?;
                    db::instance_set_suspend_state(&mut conn, id, Some(snapshot), Some(host))
                        .await
                        .map_err(|e| StepError::db(&e))?;
                    snapshot
                }
            };
            let mut agent = placed_client(app, &s)?;
            let request = pb::SnapshotInstanceRequest {
                instance_id: id.to_string(),
                snapshot_id: snapshot.to_string(),
                kind: pb::SnapshotKind::Full as i32,
                generation,
            };
            agent.snapshot_instance(request).await.map_err(|e| agent_error(&e))?;
            Ok(Some(serde_json::json!({ "snapshot_id": snapshot })))
        }
        Step::DropSuspendState => {
            drop_suspend_state(app, id).await?;
            Ok(None)
        }
        Step::DeleteOnHost => {
            let s = spec(app, id).await?;
            // A suspend deletes the VM it has just saved: the snapshot was taken at this
            // operation's generation, so the delete needs a newer one.
            let generation = match op.kind {
                OperationKind::InstanceSuspend => {
                    let mut conn = app.work_pool.acquire().await.map_err(|e| StepError::db(&e))?;
                    let g = db::instance_bump_generation(&mut conn, id).await.map_err(|e| StepError::db(&e))?;
                    u64::try_from(g).map_err(|_| StepError::Fail {
                        code: "internal",
                        message: format!("instance generation {g} is out of range"),
                    })?
                }
                _ => generation,
            };
            if let Some(mut agent) = live_client(app, &s)? {
                match agent.delete_instance(pb::InstanceActionRequest { instance_id: id.to_string(), generation }).await
                {
                    Ok(_) => {}
                    Err(status) if status.code() == Code::FailedPrecondition => {} // a newer request deleted it
                    Err(status) => return Err(agent_error(&status)),
                }
            }
            Ok(None)
        }
        Step::ReleaseAddress => {
            let mut conn = app.work_pool.acquire().await.map_err(|e| StepError::db(&e))?;
            db::nic_release(&mut conn, id).await.map_err(|e| StepError::db(&e))?;
            Ok(None)
        }
        Step::ReleaseCapacity => {
            let mut tx = app.work_pool.begin().await.map_err(|e| StepError::db(&e))?;
            release(&mut tx, id).await?;
            tx.commit().await.map_err(|e| StepError::db(&e))?;
            Ok(None)
        }
        Step::SnapshotOnHost | Step::DeleteSnapshotOnHost => {
            Err(StepError::Fail { code: "internal", message: format!("{step} is no instance step") })
        }
    }
}

/// Undoes one step of a failed operation (idempotent).
pub async fn undo_step(
    app: &Arc<App>,
    op: &OperationRow,
    step: Step,
    _output: Option<&serde_json::Value>,
) -> Result<(), StepError> {
    let p = params(op)?;
    let id = p.instance_id;
    match (op.kind, step) {
        (
            OperationKind::InstanceCreate | OperationKind::InstanceRestore | OperationKind::InstanceRecover,
            Step::Place,
        ) => {
            let mut tx = app.work_pool.begin().await.map_err(|e| StepError::db(&e))?;
            release(&mut tx, id).await?;
            tx.commit().await.map_err(|e| StepError::db(&e))
        }
        (
            OperationKind::InstanceCreate | OperationKind::InstanceRestore | OperationKind::InstanceRecover,
            Step::AllocateAddress,
        ) => {
            let mut conn = app.work_pool.acquire().await.map_err(|e| StepError::db(&e))?;
            db::nic_release(&mut conn, id).await.map_err(|e| StepError::db(&e))
        }
        (OperationKind::InstanceSuspend, Step::SuspendOnHost) => drop_suspend_state(app, id).await,
        (OperationKind::InstanceResume, Step::Place) => {
            let mut tx = app.work_pool.begin().await.map_err(|e| StepError::db(&e))?;
            release(&mut tx, id).await?;
            tx.commit().await.map_err(|e| StepError::db(&e))
        }
        (
            OperationKind::InstanceCreate
            | OperationKind::InstanceRestore
            | OperationKind::InstanceResume
            | OperationKind::InstanceRecover,
            Step::EnsureOnHost | Step::RestoreOnHost | Step::WaitRunning,
        ) => {
            let s = spec(app, id).await?;
            if let Some(mut agent) = live_client(app, &s)? {
                // A generation above the create's, so the delete wins over a late ensure.
                let generation = u64::try_from(p.generation + 1).unwrap_or(u64::MAX);
                match agent.delete_instance(pb::InstanceActionRequest { instance_id: id.to_string(), generation }).await
                {
                    Ok(_) => {}
                    Err(status) if status.code() == Code::FailedPrecondition => {}
                    Err(status) => return Err(agent_error(&status)),
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

async fn release(conn: &mut sqlx::PgConnection, id: InstanceId) -> Result<(), StepError> {
    match crate::scheduler::reserve::release_instance(conn, id).await {
        Ok(_) => Ok(()),
        Err(PlacementError::Db { source, .. }) => Err(StepError::db(&source)),
        Err(err) => Err(StepError::Fail { code: "internal", message: err.to_string() }),
    }
}

async fn set_state(app: &App, id: InstanceId, state: InstanceState) -> Result<(), StepError> {
    let mut conn = app.work_pool.acquire().await.map_err(|e| StepError::db(&e))?;
    db::instance_set_state(&mut conn, id, state, None).await.map_err(|e| StepError::db(&e))
}

/// Records the outcome of a successful operation on the instance.
pub async fn on_success(conn: &mut sqlx::PgConnection, op: &OperationRow) -> Result<(), StepError> {
    let id = params(op)?.instance_id;
    let done = match op.kind {
        OperationKind::InstanceSuspend => db::instance_set_state(conn, id, InstanceState::Suspended, None).await,
        OperationKind::InstanceCreate
        | OperationKind::InstanceRestore
        | OperationKind::InstanceResume
        | OperationKind::InstanceRecover
        | OperationKind::InstanceStart
        | OperationKind::InstanceReboot => db::instance_set_state(conn, id, InstanceState::Running, None).await,
        OperationKind::InstanceStop => db::instance_set_state(conn, id, InstanceState::Stopped, None).await,
        OperationKind::InstanceDelete => db::instance_mark_deleted(conn, id).await,
        OperationKind::SnapshotCreate | OperationKind::SnapshotDelete => Ok(()),
    };
    done.map_err(|e| StepError::db(&e))
}

/// Records a failed (and undone) operation on the instance, with the reason. A restore that
/// failed leaves no instance behind (everything it made is undone; the operation says why); a
/// recovery that failed leaves it `lost`, to be tried again later or restored by hand.
pub async fn on_failure(app: &Arc<App>, op: &OperationRow, reason: &str) -> Result<(), StepError> {
    let id = params(op)?.instance_id;
    let mut conn = app.work_pool.acquire().await.map_err(|e| StepError::db(&e))?;
    let done = match op.kind {
        OperationKind::InstanceRestore => db::instance_mark_deleted(&mut conn, id).await,
        OperationKind::InstanceRecover => {
            let reason = format!("disaster recovery failed: {reason}");
            db::instance_set_state(&mut conn, id, InstanceState::Lost, Some(&reason)).await
        }
        _ => db::instance_set_state(&mut conn, id, InstanceState::Failed, Some(reason)).await,
    };
    done.map_err(|e| StepError::db(&e))
}
