//! Instances: create, list, get, and the lifecycle changes (start, stop, reboot, delete). Every
//! change is a durable operation; an idempotency key makes a retried request return the
//! operation of the first one.
//!
//! A create is validated once here, resolves its image and SSH keys once, and turns the sizes
//! into the scheduler's units once ([`Resources`]), failing loudly where a value does not fit;
//! everything after it (the operation's steps, the agent's spec) reads the instance row.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{App, AppError, Window, projects, validate};
use crate::agents::AgentClient;
use crate::auth::{Caller, Role};
use crate::db::instances::{self as db, InstanceRow, NewInstance};
use crate::db::operations::{self as ops, NewOperation, OperationRow};
use crate::ids::{InstanceId, ProjectId, SnapshotId, SshKeyId};
use crate::operations::instances::InstanceParams;
use crate::scheduler::placement::{Request, Resources};
use crate::scheduler::reserve::{self, PlacementError};
use crate::states::{ImageState, InstanceState, OperationKind, SnapshotState};

/// Limits of what an instance may ask for.
const MAX_VCPUS: u32 = 64;
const MIN_MEMORY_MIB: u64 = 128;
const MAX_MEMORY_MIB: u64 = 1024 * 1024;
const MAX_DISK_GIB: u64 = 16 * 1024;
const MAX_USER_DATA: usize = 64 * 1024;
/// The data disk of an instance of a kernel image (one without a disk) when none is asked for.
const DEFAULT_DATA_DISK_GIB: u64 = 1;

/// What a new instance is.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceCreateParams {
    /// DNS label, unique among the project's live instances; also the guest's hostname.
    #[schema(schema_with = crate::app::validate::schema::dns_label)]
    pub name: String,
    /// Image name or id (the project's or a public one).
    pub image: String,
    #[schema(minimum = 1, maximum = 64)]
    pub vcpus: u32,
    #[schema(minimum = 128, maximum = 1_048_576)]
    pub memory_mib: u64,
    /// Size of the instance's disk in GiB (0: the image's own size; for a kernel image without a
    /// disk, a 1 GiB data disk, formatted ext4).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 16_384)]
    pub disk_gib: u64,
    /// Names or ids of the project's SSH keys to inject.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// cloud-init user-data, passed to the guest: at most 65536 characters, its first line
    /// `#cloud-config`, `#!…` (a script), `#cloud-boothook` or `#include` (empty: none).
    #[serde(default)]
    #[schema(schema_with = user_data_schema)]
    pub user_data: Option<String>,
    /// Instances of one group are placed on different hosts.
    #[serde(default)]
    #[schema(schema_with = crate::app::validate::schema::dns_label_or_null)]
    pub anti_affinity_group: Option<String>,
}

/// The schema of a create's user-data.
fn user_data_schema() -> utoipa::openapi::schema::Object {
    crate::app::validate::schema::user_data_or_null(MAX_USER_DATA)
}

/// An accepted change: the operation carrying it out, and the instance as it is now.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceAccepted {
    pub operation: OperationRow,
    pub instance: InstanceRow,
}

/// A lifecycle change of an existing instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Starts a stopped or failed instance, or resumes a suspended one.
    Start,
    Stop,
    Reboot,
    /// Saves memory and disks on the host and frees its capacity.
    Suspend,
    Delete,
}

impl Change {
    /// The operation kind, the states the change is allowed from, and the state it moves to, for
    /// an instance that is `now`.
    fn transition(self, now: InstanceState) -> (OperationKind, &'static [InstanceState], InstanceState) {
        use InstanceState as S;
        match self {
            Change::Start if now == S::Suspended => (OperationKind::InstanceResume, &[S::Suspended], S::Starting),
            Change::Start => (OperationKind::InstanceStart, &[S::Stopped, S::Failed], S::Starting),
            Change::Suspend => (OperationKind::InstanceSuspend, &[S::Running], S::Suspending),
            Change::Stop => (OperationKind::InstanceStop, &[S::Running], S::Stopping),
            Change::Reboot => (OperationKind::InstanceReboot, &[S::Running], S::Rebooting),
            // A create or start in progress is cancelled by a delete: its next step sees `deleting`.
            Change::Delete => (
                OperationKind::InstanceDelete,
                &[S::Creating, S::Starting, S::Running, S::Stopped, S::Failed, S::Lost, S::Suspended],
                S::Deleting,
            ),
        }
    }
}

/// Checks the fields of a create that need nothing but themselves (422 naming the field); the
/// image, keys and quotas are checked against the database afterwards. Public for the
/// `api_request` fuzz target, which checks that what passes also fits the scheduler's units
/// and renders a config drive.
pub fn validate(p: &InstanceCreateParams) -> Result<(), AppError> {
    let bad = |field: &str, problem: String| Err(AppError::Unprocessable(format!("{field}: {problem}")));
    validate::require_dns_label("name", &p.name)?;
    if p.vcpus == 0 || p.vcpus > MAX_VCPUS {
        return bad("vcpus", format!("must be between 1 and {MAX_VCPUS}"));
    }
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&p.memory_mib) {
        return bad("memory_mib", format!("must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB}"));
    }
    if p.disk_gib > MAX_DISK_GIB {
        return bad("disk_gib", format!("must be at most {MAX_DISK_GIB}"));
    }
    if let Some(user_data) = p.user_data.as_deref().filter(|u| !u.is_empty()) {
        if user_data.chars().count() > MAX_USER_DATA {
            return bad("user_data", format!("must be at most {MAX_USER_DATA} characters"));
        }
        // The agent's config drive takes no other kind: refused here, not as a failed create.
        if vmm::config_drive::user_data_content_type(user_data).is_none() {
            return bad("user_data", "its first line must be #cloud-config, #!…, #cloud-boothook or #include".into());
        }
    }
    if let Some(group) = &p.anti_affinity_group {
        validate::require_dns_label("anti_affinity_group", group)?;
    }
    Ok(())
}

/// The scheduler's units (bytes, signed as the database stores them), converted once; a value
/// that does not fit is an error, never a substitute.
pub fn resources(vcpus: u32, memory_mib: u64, disk_gib: u64) -> Result<Resources, AppError> {
    let too_large = |field: &str| AppError::Unprocessable(format!("{field}: too large"));
    let bytes = |n: u64, shift: u32| n.checked_mul(1 << shift).and_then(|b| i64::try_from(b).ok());
    Ok(Resources {
        vcpus: i32::try_from(vcpus).map_err(|_| too_large("vcpus"))?,
        memory_bytes: bytes(memory_mib, 20).ok_or_else(|| too_large("memory_mib"))?,
        disk_bytes: bytes(disk_gib, 30).ok_or_else(|| too_large("disk_gib"))?,
    })
}

/// A unique violation recording a new instance: its name is taken, or its idempotency key is
/// in use by a concurrent request. Anything else as [`AppError`] has it.
fn taken(err: sqlx::Error) -> AppError {
    let unique = err.as_database_error().filter(|e| e.is_unique_violation());
    match unique.and_then(|e| e.constraint()) {
        Some("instances_project_name_idx") => {
            AppError::Conflict("an instance with this name already exists in the project".to_owned())
        }
        Some("operations_idempotency_idx") => super::operations::key_in_use(),
        _ => err.into(),
    }
}

/// What identifies a request for its idempotency key: the same key with another request is a
/// conflict.
fn request_hash(what: &str, body: &impl Serialize) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(what.as_bytes());
    h.update(serde_json::to_vec(body).unwrap_or_default());
    h.finalize().to_vec()
}

/// The earlier operation for this idempotency key, if the same request was made before.
async fn replay(
    conn: &mut sqlx::PgConnection,
    caller: &Caller,
    key: Option<&str>,
    hash: &[u8],
) -> Result<Option<InstanceAccepted>, AppError> {
    let Some(key) = key else { return Ok(None) };
    let Some(op) = ops::operation_by_idempotency_key(conn, caller.user_id, key).await? else {
        return Ok(None);
    };
    if op.request_hash.as_deref() != Some(hash) {
        return Err(AppError::Conflict("this Idempotency-Key was used with a different request".to_owned()));
    }
    let id = op
        .target_id
        .map(InstanceId::from)
        .ok_or_else(|| AppError::Conflict("the earlier request has no instance".to_owned()))?;
    let instance =
        db::instance_get_unchecked(conn, id).await?.ok_or_else(|| AppError::NotFound("no such instance".to_owned()))?;
    Ok(Some(InstanceAccepted { operation: op, instance }))
}

/// Creates an instance: the row (state `creating`) and its `instance_create` operation, in one
/// transaction; the executor is woken to carry it out.
pub async fn create(
    app: &App,
    caller: &Caller,
    project: &str,
    params: InstanceCreateParams,
    idempotency_key: Option<&str>,
) -> Result<InstanceAccepted, AppError> {
    // No transaction: these reads decide nothing the one statement recording the create does
    // not check again (the image row it references, the room on some host, the quotas).
    let mut conn = app.pool.acquire().await?;
    let project = projects::resolve_on(&mut *conn, caller, project, Role::Member).await?;
    validate(&params)?;
    let hash = request_hash(&format!("instance_create:{project}"), &params);
    if let Some(earlier) = replay(&mut conn, caller, idempotency_key, &hash).await? {
        return Ok(earlier);
    }
    let image = crate::db::images::image_by_name_or_id(&mut conn, project, &params.image)
        .await?
        .filter(|image| image.state == ImageState::Available)
        .ok_or_else(|| {
            AppError::NotFound(format!("image: no available image {:?} in this project or public", params.image))
        })?;
    // A kernel image brings no disk: its instances get a data disk of their own (the guest keeps
    // /root, /home and its host keys there), so stop/start keeps what was written. A disk image's
    // instances get a disk at least as large as the image's (by default exactly that, in whole
    // GiB): what is reserved is what the disk can grow to.
    let image_gib = image.disk_virtual_bytes.and_then(|b| u64::try_from(b).ok()).map(|b| b.div_ceil(1 << 30));
    let disk_gib = match (params.disk_gib, image_gib) {
        (0, _) if image.disk_sha256.is_none() => DEFAULT_DATA_DISK_GIB,
        (0, Some(gib)) => gib,
        (gib, Some(min)) if gib < min => {
            return Err(AppError::Unprocessable(format!(
                "disk_gib: must be at least {min}, the size of image {}'s disk",
                image.name
            )));
        }
        (gib, _) => gib,
    };
    let keys = key_ids(&mut conn, project, &params.ssh_keys).await?;
    let request = Request {
        resources: resources(params.vcpus, params.memory_mib, disk_gib)?,
        project_id: project,
        anti_affinity_group: params.anti_affinity_group.clone(),
    };
    let id = InstanceId::new();
    let new = NewInstance {
        id,
        project_id: project,
        name: params.name.clone(),
        image_id: image.id,
        vcpus: request.resources.vcpus,
        memory_bytes: request.resources.memory_bytes,
        disk_bytes: request.resources.disk_bytes,
        user_data: params.user_data.clone().unwrap_or_default(),
        anti_affinity_group: params.anti_affinity_group.clone(),
        ssh_keys: keys,
    };
    let kind = OperationKind::InstanceCreate;
    let operation = new_operation(Some(caller.user_id), kind, Target::new(&new, None), idempotency_key, Some(hash))?;
    let accepted = record_new(&mut conn, app, &new, Some(&request), &operation).await?;
    app.executor.wake();
    tracing::info!(instance = %id, name = %params.name, "instance create accepted");
    Ok(accepted)
}

/// Records a new instance and the operation creating it, in one statement
/// ([`db::instance_create`]). With `request`, only while some host could take it: else refused
/// at once, nothing recorded, with each host's reason (`NoCapacity`). A create admitted here may
/// still be refused by the placement step, when concurrent creates took the room meanwhile: its
/// operation then fails with the same code and reasons.
async fn record_new(
    conn: &mut sqlx::PgConnection,
    app: &App,
    new: &NewInstance,
    request: Option<&Request>,
    operation: &NewOperation<'_>,
) -> Result<InstanceAccepted, AppError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let created = db::instance_create(conn, new, request.is_some(), &app.quotas, operation).await.map_err(taken)?;
        if let Some((instance, operation)) = created {
            return Ok(InstanceAccepted { operation, instance });
        }
        let Some(request) = request else { return Err(AppError::NotFound("no such project".to_owned())) };
        match reserve::hosts_ranked_for(conn, request, app.scheduler.strategy).await {
            // Room freed between the statement and the reasons: taken at once, once.
            Ok(_) if tries < 2 => continue,
            Ok(_) => {
                return Err(AppError::NoCapacity(
                    "concurrent creates took the room on every host that could take this one; retry".to_owned(),
                ));
            }
            Err(PlacementError::NoHostFits(reasons)) => return Err(AppError::NoCapacity(reasons.to_string())),
            Err(err) => return Err(AppError::internal(err)),
        }
    }
}

/// The ids of the project's SSH keys named (or identified) in `names`.
async fn key_ids(
    conn: &mut sqlx::PgConnection,
    project: ProjectId,
    names: &[String],
) -> Result<Vec<SshKeyId>, AppError> {
    let mut keys = Vec::new();
    for name in names {
        let key = crate::db::ssh_keys::ssh_key_get(conn, project, name)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("ssh_keys: no SSH key {name:?} in this project")))?;
        keys.push(key.id);
    }
    Ok(keys)
}

/// `POST /v1/projects/{project}/snapshots/{snapshot}/restore`: a new instance from a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceRestoreParams {
    /// The new instance's name: a DNS label, unique among the project's live instances.
    #[schema(schema_with = crate::app::validate::schema::dns_label)]
    pub name: String,
    /// Names or ids of the project's SSH keys to inject (the disks keep the ones injected before).
    #[serde(default)]
    pub ssh_keys: Vec<String>,
}

/// Restores a snapshot into a new instance with the snapshotted instance's image and sizes, on
/// the host that holds the snapshot: the instance row and its `instance_restore` operation in
/// one transaction. The new instance has a new address, so it boots from the snapshot's disks
/// (even a snapshot with memory: that memory keeps the old address).
pub async fn restore(
    app: &App,
    caller: &Caller,
    project: &str,
    snapshot: &str,
    params: InstanceRestoreParams,
    idempotency_key: Option<&str>,
) -> Result<InstanceAccepted, AppError> {
    let mut conn = app.pool.acquire().await?;
    let project = projects::resolve_on(&mut *conn, caller, project, Role::Member).await?;
    validate::require_dns_label("name", &params.name)?;
    let hash = request_hash(&format!("instance_restore:{project}:{snapshot}"), &params);
    if let Some(earlier) = replay(&mut conn, caller, idempotency_key, &hash).await? {
        return Ok(earlier);
    }
    let snap = crate::db::snapshots::snapshot_get(&mut conn, project, snapshot)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no snapshot {snapshot:?} in this project")))?;
    if snap.state != SnapshotState::Available {
        return Err(AppError::Conflict(format!(
            "snapshot {} is {}; only an available one can be restored",
            snap.name, snap.state
        )));
    }
    let source = crate::db::snapshots::snapshot_source(&mut conn, snap.id).await?;
    let (Some(image_id), Some(vcpus), Some(memory_bytes), Some(disk_bytes)) =
        source.map(|s| (s.image_id, s.vcpus, s.memory_bytes, s.disk_bytes)).unwrap_or_default()
    else {
        return Err(AppError::Unprocessable(format!(
            "snapshot {} cannot be restored: its image was deleted (or it predates restores)",
            snap.name
        )));
    };
    let keys = key_ids(&mut conn, project, &params.ssh_keys).await?;
    let id = InstanceId::new();
    let new = NewInstance {
        id,
        project_id: project,
        name: params.name.clone(),
        image_id,
        vcpus,
        memory_bytes,
        disk_bytes,
        user_data: String::new(),
        anti_affinity_group: None,
        ssh_keys: keys,
    };
    let kind = OperationKind::InstanceRestore;
    let on = Target::new(&new, Some(snap.id));
    let operation = new_operation(Some(caller.user_id), kind, on, idempotency_key, Some(hash))?;
    // It is placed on the snapshot's host, whose room the restore step checks.
    let accepted = record_new(&mut conn, app, &new, None, &operation).await?;
    app.executor.wake();
    tracing::info!(instance = %id, name = %params.name, snapshot = %snap.id, "instance restore accepted");
    Ok(accepted)
}

/// What an instance operation acts on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target {
    pub project: ProjectId,
    pub id: InstanceId,
    pub generation: i64,
    pub snapshot_id: Option<SnapshotId>,
}

impl Target {
    /// A new instance (generation 1), restored from `snapshot_id` if given.
    fn new(instance: &NewInstance, snapshot_id: Option<SnapshotId>) -> Self {
        Self { project: instance.project_id, id: instance.id, generation: 1, snapshot_id }
    }
}

/// An operation of `kind` on an instance (by a user, or by the control plane itself).
fn new_operation(
    created_by: Option<crate::ids::UserId>,
    kind: OperationKind,
    on: Target,
    key: Option<&str>,
    hash: Option<Vec<u8>>,
) -> Result<NewOperation<'_>, AppError> {
    let params = InstanceParams { instance_id: on.id, generation: on.generation, snapshot_id: on.snapshot_id };
    Ok(NewOperation {
        project_id: Some(on.project),
        kind,
        target_kind: "instance",
        target_id: Some(on.id.0),
        params: serde_json::to_value(params).map_err(AppError::internal)?,
        created_by,
        idempotency_key: key,
        request_hash: hash,
        steps: crate::operations::steps(kind),
    })
}

/// Records an operation of `kind` on an instance (by a user, or by the control plane itself).
pub(super) async fn instance_operation(
    conn: &mut sqlx::PgConnection,
    created_by: Option<crate::ids::UserId>,
    kind: OperationKind,
    on: Target,
    key: Option<&str>,
    hash: Option<Vec<u8>>,
) -> Result<OperationRow, AppError> {
    super::operations::record(conn, &new_operation(created_by, kind, on, key, hash)?).await
}

/// The project's live instances in `window`, only those in `state` if given.
pub async fn list(
    app: &App,
    caller: &Caller,
    project: &str,
    state: Option<InstanceState>,
    window: Window,
) -> Result<Vec<InstanceRow>, AppError> {
    let project = projects::resolve(app, caller, project, Role::Viewer).await?;
    let mut conn = app.pool.acquire().await?;
    Ok(db::instance_list(&mut conn, project, state, window.after, window.fetch).await?)
}

/// The instance named or identified by `instance` in `project`, if the caller's role is at
/// least `role`.
pub(super) async fn find(
    app: &App,
    caller: &Caller,
    project: &str,
    instance: &str,
    role: Role,
) -> Result<(ProjectId, InstanceRow), AppError> {
    let project = projects::resolve(app, caller, project, role).await?;
    let mut conn = app.pool.acquire().await?;
    let row = db::instance_get(&mut conn, project, instance)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no instance {instance:?} in this project")))?;
    Ok((project, row))
}

/// One instance, by name or id.
pub async fn get(app: &App, caller: &Caller, project: &str, instance: &str) -> Result<InstanceRow, AppError> {
    Ok(find(app, caller, project, instance, Role::Viewer).await?.1)
}

/// Where on its way to running a wait for an instance ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitUntil {
    /// Its VM runs.
    Running,
    /// Its VM runs and its guest is reachable (`ready_at` is set).
    #[default]
    Ready,
}

/// The instance once it is where `until` says, or as soon as it is in a state it will not get
/// there from by itself (stopped, failed, suspended, deleted…), or as it is after `timeout`
/// (at most [`super::operations::MAX_WAIT`]). Woken by the reports that change it.
pub async fn wait(
    app: &App,
    caller: &Caller,
    project: &str,
    instance: &str,
    until: WaitUntil,
    timeout: std::time::Duration,
) -> Result<InstanceRow, AppError> {
    let timeout = timeout.clamp(std::time::Duration::from_secs(1), super::operations::MAX_WAIT);
    let deadline = tokio::time::Instant::now() + timeout;
    app.changes
        .watch(deadline, || async {
            let row = get(app, caller, project, instance).await?;
            let done = match row.state {
                InstanceState::Running => until == WaitUntil::Running || row.ready_at.is_some(),
                InstanceState::Creating
                | InstanceState::Starting
                | InstanceState::Rebooting
                | InstanceState::Restoring
                | InstanceState::Snapshotting => false,
                _ => true,
            };
            Ok((row, done))
        })
        .await
}

/// Starts, stops, reboots or deletes an instance: moves it to the change's state with a new
/// generation and records the operation, or says which states the change needs.
pub async fn change(
    app: &App,
    caller: &Caller,
    project: &str,
    instance: &str,
    change: Change,
    idempotency_key: Option<&str>,
) -> Result<InstanceAccepted, AppError> {
    let (project, row) = find(app, caller, project, instance, Role::Member).await?;
    let (kind, from, to) = change.transition(row.state);
    let hash = request_hash(&format!("{kind}:{}", row.id), &());
    let mut tx = app.pool.begin().await?;
    if let Some(earlier) = replay(&mut tx, caller, idempotency_key, &hash).await? {
        return Ok(earlier);
    }
    let generation = db::instance_transition(&mut tx, row.id, from, to).await?.ok_or_else(|| {
        AppError::Conflict(format!(
            "instance {} is {}; {} needs it to be {}",
            row.name,
            row.state,
            kind.as_str().trim_start_matches("instance_"),
            from.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or ")
        ))
    })?;
    let on = Target { project, id: row.id, generation, snapshot_id: None };
    let operation = instance_operation(&mut tx, Some(caller.user_id), kind, on, idempotency_key, Some(hash)).await?;
    let instance = db::instance_get_unchecked(&mut tx, row.id)
        .await?
        .ok_or_else(|| AppError::NotFound("no such instance".to_owned()))?;
    let accepted = InstanceAccepted { operation, instance };
    tx.commit().await?;
    app.executor.wake();
    Ok(accepted)
}

/// The agent of the host an instance runs on, and the instance's id, for the console and the
/// SSH tunnel (members only: both reach into the guest).
pub async fn agent_for(
    app: &App,
    caller: &Caller,
    project: &str,
    instance: &str,
) -> Result<(AgentClient, String), AppError> {
    let (_, row) = find(app, caller, project, instance, Role::Member).await?;
    let spec = db::instance_agent_spec(&mut *app.pool.acquire().await?, row.id)
        .await?
        .ok_or_else(|| AppError::NotFound("no such instance".to_owned()))?;
    let (Some(host), Some(endpoint)) = (spec.host_id, spec.agent_endpoint) else {
        return Err(AppError::Conflict(format!("instance {} is {} and has no host yet", row.name, row.state)));
    };
    let client = app.agents.client(&app.fleet, host, &endpoint).map_err(AppError::internal)?;
    Ok((client, row.id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_convert_once_or_fail_loudly() {
        let r = resources(2, 512, 10).ok();
        assert_eq!(r.map(|r| (r.vcpus, r.memory_bytes, r.disk_bytes)), Some((2, 512 << 20, 10 << 30)));
        assert!(matches!(resources(u32::MAX, 512, 1), Err(AppError::Unprocessable(m)) if m.starts_with("vcpus")));
        assert!(matches!(resources(1, u64::MAX, 1), Err(AppError::Unprocessable(m)) if m.starts_with("memory_mib")));
        assert!(matches!(resources(1, 512, 1 << 40), Err(AppError::Unprocessable(m)) if m.starts_with("disk_gib")));
    }

    #[test]
    fn user_data_is_refused_at_create_unless_the_config_drive_takes_it() {
        let params = |user_data: Option<&str>| InstanceCreateParams {
            name: "web-1".into(),
            image: "debian-12".into(),
            vcpus: 1,
            memory_mib: 512,
            disk_gib: 0,
            ssh_keys: Vec::new(),
            user_data: user_data.map(str::to_owned),
            anti_affinity_group: None,
        };
        for ok in [None, Some(""), Some("#cloud-config\npackages: [htop]\n"), Some("#!/bin/sh\necho hi\n")] {
            assert!(validate(&params(ok)).is_ok(), "{ok:?}");
        }
        // Found by the api_request fuzz target: accepted here, the agent then failed the create.
        for bad in ["just text", "#clodu-config\n", " #cloud-config\n", "\n#cloud-config"] {
            let err = validate(&params(Some(bad))).err();
            assert!(matches!(&err, Some(AppError::Unprocessable(m)) if m.starts_with("user_data: ")), "{bad:?}");
        }
        let long = format!("#!/bin/sh\n{}", "#".repeat(MAX_USER_DATA));
        assert!(
            matches!(validate(&params(Some(&long))), Err(AppError::Unprocessable(m)) if m.contains("at most 65536 characters"))
        );
    }

    #[test]
    fn every_change_names_the_states_it_needs() {
        for now in InstanceState::ALL {
            for change in [Change::Start, Change::Stop, Change::Reboot, Change::Suspend, Change::Delete] {
                let (kind, from, to) = change.transition(*now);
                assert!(!from.is_empty() && !from.contains(&to), "{kind}");
            }
        }
        let resume = Change::Start.transition(InstanceState::Suspended);
        assert_eq!(resume.0, OperationKind::InstanceResume);
    }
}
