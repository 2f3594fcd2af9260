//! Projects: how every project-scoped request finds its project ([`resolve`]), and the caller's
//! projects. A project the caller is not a member of is not found, exactly like one that does
//! not exist; a member whose role is too low is forbidden. Operators are not implicitly members.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{App, AppError, Window, validate};
use crate::auth::{Caller, Role};
use crate::db::identity::{self, IdentityError, Project, ProjectKey};
use crate::db::projects as db;
use crate::ids::ProjectId;

/// The longest project description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;

/// `POST /v1/projects`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectCreateParams {
    /// A DNS label, unique in the whole cloud.
    #[schema(schema_with = crate::app::validate::schema::dns_label)]
    pub name: String,
    /// Free text, at most 1024 characters, one line.
    #[serde(default)]
    #[schema(schema_with = description)]
    pub description: String,
}

/// The schema of a project's description.
fn description() -> utoipa::openapi::schema::Object {
    crate::app::validate::schema::plain_text(MAX_DESCRIPTION_CHARS, false)
}

/// A project, as one of its members sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectView {
    pub id: ProjectId,
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    /// The caller's role in the project.
    pub role: Role,
}

impl ProjectView {
    fn new(project: Project, role: Role) -> Self {
        Self {
            id: project.id,
            name: project.name,
            description: project.description,
            created_at: project.created_at,
            role,
        }
    }
}

/// A taken name is a conflict; anything else is internal.
impl From<IdentityError> for AppError {
    fn from(err: IdentityError) -> Self {
        match &err {
            IdentityError::AlreadyExists { .. } => Self::Conflict(err.to_string()),
            IdentityError::Ambiguous { .. } => Self::Unprocessable(err.to_string()),
            IdentityError::UnknownRole { .. } | IdentityError::Query(_) => Self::internal(err),
        }
    }
}

/// The project named or identified by `key` (a UUID is always an id; names never are), if the
/// caller's role in it is at least `min`. Every project-scoped request starts here.
pub async fn resolve(app: &App, caller: &Caller, key: &str, min: Role) -> Result<ProjectId, AppError> {
    resolve_on(&app.pool, caller, key, min).await
}

/// [`resolve`] through `db`: a connection the request holds already saves taking (and handing
/// back) another from the pool.
pub async fn resolve_on(
    db: impl sqlx::PgExecutor<'_>,
    caller: &Caller,
    key: &str,
    min: Role,
) -> Result<ProjectId, AppError> {
    Ok(caller.require_role(db, project_key(key), min).await?.0)
}

/// [`resolve`], also returning the caller's role in the project.
pub async fn resolve_with_role(
    app: &App,
    caller: &Caller,
    key: &str,
    min: Role,
) -> Result<(ProjectId, Role), AppError> {
    Ok(caller.require_role(&app.pool, project_key(key), min).await?)
}

/// The caller's projects in `window`.
pub async fn list(app: &App, caller: &Caller, window: Window) -> Result<Vec<ProjectView>, AppError> {
    let only = caller.scope.map(|(project, _)| project);
    let rows = db::project_list_for_user_page(&app.pool, caller.user_id, only, window.after, window.fetch).await?;
    let cap = caller.scope.map_or(Role::Admin, |(_, role)| role);
    Ok(rows.into_iter().map(|r| ProjectView::new(r.project, r.role.min(cap))).collect())
}

/// Creates a project; the caller becomes its admin.
pub async fn create(app: &App, caller: &Caller, params: ProjectCreateParams) -> Result<ProjectView, AppError> {
    if caller.scope.is_some() {
        return Err(crate::auth::AuthzError::LimitedToken.into());
    }
    validate::require_dns_label("name", &params.name)?;
    validate::require_plain_text("description", &params.description, MAX_DESCRIPTION_CHARS)?;
    let mut tx = app.pool.begin().await?;
    let project = identity::project_create(&mut *tx, ProjectId::new(), &params.name, &params.description).await?;
    identity::project_member_add(&mut *tx, project.id, caller.user_id, Role::Admin).await?;
    tx.commit().await?;
    tracing::info!(project_id = %project.id, name = %project.name, user_id = %caller.user_id, "project created");
    Ok(ProjectView::new(project, Role::Admin))
}

/// One of the caller's projects, by name or id.
pub async fn get(app: &App, caller: &Caller, key: &str) -> Result<ProjectView, AppError> {
    let (id, role) = resolve_with_role(app, caller, key, Role::Viewer).await?;
    let project = db::project_get_unchecked(&app.pool, id)
        .await?
        .ok_or_else(|| AppError::NotFound("no such project".to_owned()))?;
    Ok(ProjectView::new(project, role))
}

/// A project's quotas (0: no limit) and what it holds now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuotasView {
    pub limits: crate::quotas::Amounts,
    pub usage: crate::quotas::Amounts,
}

async fn quotas_of(app: &App, project: ProjectId) -> Result<QuotasView, AppError> {
    let standing = crate::quotas::standing(&mut *app.pool.acquire().await?, project, &app.quotas)
        .await?
        .ok_or_else(|| AppError::NotFound("no such project".to_owned()))?;
    Ok(QuotasView { limits: standing.limits, usage: standing.usage })
}

/// A project's quotas and usage (any member; an operator for any project).
pub async fn quotas_get(app: &App, caller: &Caller, key: &str) -> Result<QuotasView, AppError> {
    let project = match caller.require_operator() {
        Ok(()) => project_unchecked(app, key).await?,
        Err(_) => resolve(app, caller, key, Role::Viewer).await?,
    };
    quotas_of(app, project).await
}

/// Sets a project's own quotas; each one left out takes the `[quotas]` default again
/// (operators only).
pub async fn quotas_set(
    app: &App,
    caller: &Caller,
    key: &str,
    quotas: crate::quotas::Settable,
) -> Result<QuotasView, AppError> {
    caller.require_operator()?;
    let fields = [
        ("instances", quotas.instances.map(i64::from)),
        ("vcpus", quotas.vcpus.map(i64::from)),
        ("memory_bytes", quotas.memory_bytes),
        ("disk_bytes", quotas.disk_bytes),
        ("snapshots", quotas.snapshots.map(i64::from)),
    ];
    if let Some((field, _)) = fields.iter().find(|(_, v)| v.is_some_and(|v| v < 0)) {
        return Err(AppError::Invalid(format!("{field}: must be at least 0 (0: no limit)")));
    }
    let project = project_unchecked(app, key).await?;
    crate::quotas::set(&mut *app.pool.acquire().await?, project, &quotas).await?;
    tracing::info!(project_id = %project, ?quotas, user_id = %caller.user_id, "project quotas set");
    quotas_of(app, project).await
}

/// Any project by name or id, without a membership check (for operators).
async fn project_unchecked(app: &App, key: &str) -> Result<ProjectId, AppError> {
    db::project_id_unchecked(&app.pool, project_key(key))
        .await?
        .ok_or_else(|| AppError::NotFound("no such project".to_owned()))
}

/// How a request names a project: a UUID is always an id, names never are.
fn project_key(key: &str) -> ProjectKey<'_> {
    match Uuid::parse_str(key) {
        Ok(id) => ProjectKey::Id(ProjectId(id)),
        Err(_) => ProjectKey::Name(key),
    }
}
