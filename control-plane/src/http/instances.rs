//! Instances: create, list, get, start, stop, reboot, delete. Every change is a durable
//! operation (202 with the operation); `Idempotency-Key` makes retries return the same one.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::error::ApiError;
use crate::App;
use crate::auth::{Caller, Role};
use crate::db::instances::{self as db, InstanceRow, NewInstance};
use crate::db::operations::{self as ops, NewOperation, OperationRow};
use crate::ids::{InstanceId, ProjectId};
use crate::operations::instances::{InstanceParams, steps};
use crate::scheduler::placement::{Request, Resources};
use crate::states::{InstanceState, OperationKind};

/// Routes of this module.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/projects/{project}/instances", post(instance_create).get(instance_list))
        .route("/v1/projects/{project}/instances/{instance}", get(instance_get).delete(instance_delete))
        .route("/v1/projects/{project}/instances/{instance}/start", post(instance_start))
        .route("/v1/projects/{project}/instances/{instance}/stop", post(instance_stop))
        .route("/v1/projects/{project}/instances/{instance}/reboot", post(instance_reboot))
}

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
    pub name: String,
    /// Image name or id (the project's or a public one).
    pub image: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Size of the instance's disk in GiB (0: the image's own size; for a kernel image without a
    /// disk, a 1 GiB data disk, formatted ext4).
    #[serde(default)]
    pub disk_gib: u64,
    /// Names or ids of the project's SSH keys to inject.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// cloud-init user-data, passed to the guest.
    #[serde(default)]
    pub user_data: Option<String>,
    /// Instances of one group are placed on different hosts.
    #[serde(default)]
    pub anti_affinity_group: Option<String>,
}

/// An accepted change: the operation carrying it out, and the instance as it is now.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceAccepted {
    pub operation: OperationRow,
    pub instance: InstanceRow,
}

/// A page of instances.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceList {
    pub items: Vec<InstanceRow>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// List filters and paging.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InstanceListQuery {
    /// Only instances in this state.
    pub state: Option<String>,
    /// 1 to 1000 (default 100).
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

fn validate(p: &InstanceCreateParams) -> Result<(), ApiError> {
    let bad = |field: &str, problem: &str| Err(ApiError::unprocessable(format!("{field}: {problem}")));
    super::json::require_dns_label("name", &p.name)?;
    if p.vcpus == 0 || p.vcpus > MAX_VCPUS {
        return bad("vcpus", &format!("must be between 1 and {MAX_VCPUS}"));
    }
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&p.memory_mib) {
        return bad("memory_mib", &format!("must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB}"));
    }
    if p.disk_gib > MAX_DISK_GIB {
        return bad("disk_gib", &format!("must be at most {MAX_DISK_GIB}"));
    }
    if p.user_data.as_ref().is_some_and(|u| u.len() > MAX_USER_DATA) {
        return bad("user_data", &format!("must be at most {MAX_USER_DATA} bytes"));
    }
    if let Some(group) = &p.anti_affinity_group {
        super::json::require_dns_label("anti_affinity_group", group)?;
    }
    Ok(())
}

/// The idempotency key of a request, if it sent one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let key = v.to_str().map_err(|_| ApiError::invalid("Idempotency-Key must be printable ASCII"))?;
            if key.is_empty() || key.len() > 255 {
                return Err(ApiError::invalid("Idempotency-Key must be 1 to 255 characters"));
            }
            Ok(Some(key.to_owned()))
        }
    }
}

fn db_err(err: sqlx::Error) -> ApiError {
    if let Some(e) = err.as_database_error()
        && e.is_unique_violation()
    {
        return ApiError::conflict("an instance with this name already exists in the project");
    }
    ApiError::internal(&err)
}

/// The earlier operation for this idempotency key, if the same request was made before.
async fn replay(
    conn: &mut sqlx::PgConnection,
    caller: &Caller,
    key: Option<&str>,
    hash: &[u8],
) -> Result<Option<InstanceAccepted>, ApiError> {
    let Some(key) = key else { return Ok(None) };
    let Some(op) = ops::operation_by_idempotency_key(conn, caller.user_id, key).await.map_err(db_err)? else {
        return Ok(None);
    };
    if op.request_hash.as_deref() != Some(hash) {
        return Err(ApiError::conflict("this Idempotency-Key was used with a different request"));
    }
    let id =
        op.target_id.map(InstanceId::from).ok_or_else(|| ApiError::conflict("the earlier request has no instance"))?;
    let instance = db::instance_get_unchecked(conn, id)
        .await
        .map_err(db_err)?
        .ok_or_else(|| ApiError::not_found("no such instance"))?;
    Ok(Some(InstanceAccepted { operation: op, instance }))
}

fn request_hash(what: &str, body: &impl Serialize) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(what.as_bytes());
    h.update(serde_json::to_vec(body).unwrap_or_default());
    h.finalize().to_vec()
}

/// Creates an instance (202 with the `instance_create` operation).
#[utoipa::path(post, path = "/v1/projects/{project}/instances", tag = "instances", request_body = InstanceCreateParams,
    params(("project" = String, Path, description = "Project name or id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the same operation")),
    responses((status = 202, body = InstanceAccepted), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody),
              (status = 503, body = super::error::ErrorBody, description = "`no_capacity`: no host fits; the message says why")))]
pub async fn instance_create(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
    headers: HeaderMap,
    super::json::Json(params): super::json::Json<InstanceCreateParams>,
) -> Result<(StatusCode, Json<InstanceAccepted>), ApiError> {
    let project = super::projects::resolve_project(&app.pool, &caller, &project, Role::Member).await?;
    validate(&params)?;
    let key = idempotency_key(&headers)?;
    let hash = request_hash(&format!("instance_create:{project}"), &params);
    let mut tx = app.pool.begin().await.map_err(db_err)?;
    if let Some(earlier) = replay(&mut tx, &caller, key.as_deref(), &hash).await? {
        return Ok((StatusCode::ACCEPTED, Json(earlier)));
    }
    let image = crate::db::images::image_by_name_or_id(&mut tx, project, &params.image)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .filter(|image| image.state == "available")
        .ok_or_else(|| {
            ApiError::unprocessable(format!("image: no available image {:?} in this project or public", params.image))
        })?;
    // A kernel image brings no disk: its instances get a data disk of their own (the guest keeps
    // /root, /home and its host keys there), so stop/start keeps what was written.
    let disk_gib = match params.disk_gib {
        0 if image.disk_sha256.is_none() => DEFAULT_DATA_DISK_GIB,
        gib => gib,
    };
    let image = image.id;
    let mut keys = Vec::new();
    for name in &params.ssh_keys {
        let key = crate::db::ssh_keys::ssh_key_get(&mut tx, project, name)
            .await
            .map_err(|e| ApiError::internal(&e))?
            .ok_or_else(|| ApiError::unprocessable(format!("ssh_keys: no SSH key {name:?} in this project")))?;
        keys.push(key.id);
    }
    let request = Request {
        resources: Resources {
            vcpus: i32::try_from(params.vcpus).unwrap_or(i32::MAX),
            memory_bytes: i64::try_from(params.memory_mib << 20).unwrap_or(i64::MAX),
            disk_bytes: i64::try_from(disk_gib << 30).unwrap_or(i64::MAX),
        },
        project_id: project,
        anti_affinity_group: params.anti_affinity_group.clone(),
    };
    admit(&mut tx, &app, &request).await?;
    let id = InstanceId::new();
    let new = NewInstance {
        id,
        project_id: project,
        name: params.name.clone(),
        image_id: image,
        vcpus: request.resources.vcpus,
        memory_bytes: request.resources.memory_bytes,
        disk_bytes: request.resources.disk_bytes,
        user_data: params.user_data.clone().unwrap_or_default(),
        anti_affinity_group: params.anti_affinity_group.clone(),
        ssh_keys: keys,
    };
    db::instance_insert(&mut tx, &new).await.map_err(db_err)?;
    let op =
        create_operation(&mut tx, &caller, project, OperationKind::InstanceCreate, id, 1, key.as_deref(), hash).await?;
    let accepted = accepted(&mut tx, op, id).await?;
    tx.commit().await.map_err(db_err)?;
    app.executor.wake();
    tracing::info!(instance = %id, name = %params.name, "instance create accepted");
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Refuses a create at once (503 `no_capacity`, nothing recorded) when no host could take it
/// right now. A create admitted here may still be refused by the placement step, when concurrent
/// creates took the room meanwhile: its operation then fails with the same code and reasons.
async fn admit(conn: &mut sqlx::PgConnection, app: &App, request: &Request) -> Result<(), ApiError> {
    use crate::scheduler::reserve::PlacementError;
    // One boolean in the common case; the per-filter reasons only when nothing fits.
    if crate::scheduler::reserve::any_host_fits(conn, request).await.map_err(db_err)? {
        return Ok(());
    }
    match crate::scheduler::reserve::hosts_ranked_for(conn, request, app.scheduler.strategy).await {
        Ok(_) => Ok(()),
        Err(PlacementError::NoHostFits(reasons)) => Err(ApiError::no_capacity(reasons)),
        Err(err) => Err(ApiError::internal(&err)),
    }
}

#[allow(clippy::too_many_arguments)]
async fn create_operation(
    conn: &mut sqlx::PgConnection,
    caller: &Caller,
    project: ProjectId,
    kind: OperationKind,
    id: InstanceId,
    generation: i64,
    key: Option<&str>,
    hash: Vec<u8>,
) -> Result<crate::ids::OperationId, ApiError> {
    let params =
        serde_json::to_value(InstanceParams { instance_id: id, generation }).map_err(|e| ApiError::internal(&e))?;
    ops::operation_create(
        conn,
        &NewOperation {
            project_id: Some(project),
            kind,
            target_kind: "instance",
            target_id: Some(id.0),
            params,
            created_by: Some(caller.user_id),
            idempotency_key: key,
            request_hash: Some(hash),
            steps: steps(kind),
        },
    )
    .await
    .map_err(|err| {
        if err.as_database_error().is_some_and(|e| e.is_unique_violation()) {
            ApiError::conflict("this Idempotency-Key is being used by a concurrent request; retry")
        } else {
            ApiError::internal(&err)
        }
    })
}

async fn accepted(
    conn: &mut sqlx::PgConnection,
    op: crate::ids::OperationId,
    id: InstanceId,
) -> Result<InstanceAccepted, ApiError> {
    let operation =
        ops::operation_get(conn, op).await.map_err(db_err)?.ok_or_else(|| ApiError::not_found("no such operation"))?;
    let instance = db::instance_get_unchecked(conn, id)
        .await
        .map_err(db_err)?
        .ok_or_else(|| ApiError::not_found("no such instance"))?;
    Ok(InstanceAccepted { operation, instance })
}

/// Lists the project's live instances, oldest first.
#[utoipa::path(get, path = "/v1/projects/{project}/instances", tag = "instances",
    params(("project" = String, Path, description = "Project name or id"), InstanceListQuery),
    responses((status = 200, body = InstanceList), (status = 404, body = super::error::ErrorBody)))]
pub async fn instance_list(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
    Query(q): Query<InstanceListQuery>,
) -> Result<Json<InstanceList>, ApiError> {
    let project = super::projects::resolve_project(&app.pool, &caller, &project, Role::Viewer).await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let after = q.cursor.as_deref().map(super::pagination::decode_cursor).transpose()?;
    let mut conn = app.pool.acquire().await.map_err(db_err)?;
    let state = q
        .state
        .as_deref()
        .map(str::parse::<InstanceState>)
        .transpose()
        .map_err(|e| ApiError::invalid(format!("state: {e}")))?;
    let items = db::instance_list(&mut conn, project, state, after, limit + 1).await.map_err(db_err)?;
    let (items, next_cursor) = super::pagination::split_page(items, limit, |i| (i.created_at, i.id.0));
    Ok(Json(InstanceList { items, next_cursor }))
}

async fn find(
    app: &App,
    caller: &Caller,
    project: &str,
    instance: &str,
    role: Role,
) -> Result<(ProjectId, InstanceRow), ApiError> {
    let project = super::projects::resolve_project(&app.pool, caller, project, role).await?;
    let mut conn = app.pool.acquire().await.map_err(db_err)?;
    let row = db::instance_get(&mut conn, project, instance)
        .await
        .map_err(db_err)?
        .ok_or_else(|| ApiError::not_found(format!("no instance {instance:?} in this project")))?;
    Ok((project, row))
}

/// One instance, by name or id.
#[utoipa::path(get, path = "/v1/projects/{project}/instances/{instance}", tag = "instances",
    params(("project" = String, Path), ("instance" = String, Path, description = "Instance name or id")),
    responses((status = 200, body = InstanceRow), (status = 404, body = super::error::ErrorBody)))]
pub async fn instance_get(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, instance)): Path<(String, String)>,
) -> Result<Json<InstanceRow>, ApiError> {
    Ok(Json(find(&app, &caller, &project, &instance, Role::Viewer).await?.1))
}

/// A lifecycle change: the operation `kind`, allowed from the states `from`, moves the instance
/// to `to` with a new generation.
#[derive(Debug)]
struct Transition {
    kind: OperationKind,
    from: &'static [InstanceState],
    to: InstanceState,
}

const START: Transition = Transition {
    kind: OperationKind::InstanceStart,
    from: &[InstanceState::Stopped, InstanceState::Failed],
    to: InstanceState::Starting,
};
const STOP: Transition =
    Transition { kind: OperationKind::InstanceStop, from: &[InstanceState::Running], to: InstanceState::Stopping };
const REBOOT: Transition =
    Transition { kind: OperationKind::InstanceReboot, from: &[InstanceState::Running], to: InstanceState::Rebooting };
/// A create or start in progress is cancelled by a delete: its next step sees `deleting`.
const DELETE: Transition = Transition {
    kind: OperationKind::InstanceDelete,
    from: &[
        InstanceState::Creating,
        InstanceState::Starting,
        InstanceState::Running,
        InstanceState::Stopped,
        InstanceState::Failed,
        InstanceState::Lost,
    ],
    to: InstanceState::Deleting,
};

async fn change(
    app: &Arc<App>,
    caller: &Caller,
    (project, instance): (String, String),
    headers: &HeaderMap,
    t: &Transition,
) -> Result<(StatusCode, Json<InstanceAccepted>), ApiError> {
    let (kind, from, state) = (t.kind, t.from, t.to);
    let (project, row) = find(app, caller, &project, &instance, Role::Member).await?;
    let key = idempotency_key(headers)?;
    let hash = request_hash(&format!("{kind}:{}", row.id), &());
    let mut tx = app.pool.begin().await.map_err(db_err)?;
    if let Some(earlier) = replay(&mut tx, caller, key.as_deref(), &hash).await? {
        return Ok((StatusCode::ACCEPTED, Json(earlier)));
    }
    let generation = db::instance_transition(&mut tx, row.id, from, state).await.map_err(db_err)?.ok_or_else(|| {
        ApiError::conflict(format!(
            "instance {} is {}; {} needs it to be {}",
            row.name,
            row.state,
            kind.as_str().trim_start_matches("instance_"),
            from.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or ")
        ))
    })?;
    let op = create_operation(&mut tx, caller, project, kind, row.id, generation, key.as_deref(), hash).await?;
    let accepted = accepted(&mut tx, op, row.id).await?;
    tx.commit().await.map_err(db_err)?;
    app.executor.wake();
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Starts a stopped instance.
#[utoipa::path(post, path = "/v1/projects/{project}/instances/{instance}/start", tag = "instances",
    params(("project" = String, Path), ("instance" = String, Path)),
    responses((status = 202, body = InstanceAccepted), (status = 409, body = super::error::ErrorBody)))]
pub async fn instance_start(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<InstanceAccepted>), ApiError> {
    change(&app, &caller, path, &headers, &START).await
}

/// Stops a running instance (ACPI shutdown, forced after a timeout).
#[utoipa::path(post, path = "/v1/projects/{project}/instances/{instance}/stop", tag = "instances",
    params(("project" = String, Path), ("instance" = String, Path)),
    responses((status = 202, body = InstanceAccepted), (status = 409, body = super::error::ErrorBody)))]
pub async fn instance_stop(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<InstanceAccepted>), ApiError> {
    change(&app, &caller, path, &headers, &STOP).await
}

/// Reboots a running instance.
#[utoipa::path(post, path = "/v1/projects/{project}/instances/{instance}/reboot", tag = "instances",
    params(("project" = String, Path), ("instance" = String, Path)),
    responses((status = 202, body = InstanceAccepted), (status = 409, body = super::error::ErrorBody)))]
pub async fn instance_reboot(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<InstanceAccepted>), ApiError> {
    change(&app, &caller, path, &headers, &REBOOT).await
}

/// Deletes an instance: its VM, address and capacity are freed.
#[utoipa::path(delete, path = "/v1/projects/{project}/instances/{instance}", tag = "instances",
    params(("project" = String, Path), ("instance" = String, Path)),
    responses((status = 202, body = InstanceAccepted), (status = 409, body = super::error::ErrorBody)))]
pub async fn instance_delete(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<InstanceAccepted>), ApiError> {
    change(&app, &caller, path, &headers, &DELETE).await
}
