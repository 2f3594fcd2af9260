//! Projects in the datastore: lookups by name or id and the paginated listing of a user's
//! projects. Creating a project and its members lives in [`super::identity`], next to users.
//!
//! Listings are keyset-paginated on `(created_at, id)` (see `http::pagination`): `after` is the
//! key of the previous page's last row, `limit` the number of rows to return.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::identity::{IdentityError, Project};
use crate::ids::{ProjectId, UserId};
use crate::states::Role;

/// A project with the role of the user it was listed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectWithRole {
    pub project: Project,
    pub role: Role,
}

/// The id of the project `key` names, without any authorization check (for operators).
pub async fn project_id_unchecked(
    db: impl PgExecutor<'_>,
    key: super::identity::ProjectKey<'_>,
) -> Result<Option<ProjectId>, IdentityError> {
    let query = match key {
        super::identity::ProjectKey::Id(id) => sqlx::query_scalar("SELECT id FROM projects WHERE id = $1").bind(id),
        super::identity::ProjectKey::Name(name) => {
            sqlx::query_scalar("SELECT id FROM projects WHERE name = $1").bind(name)
        }
    };
    Ok(query.fetch_optional(db).await?)
}

/// A project by id, without any authorization check.
pub async fn project_get_unchecked(db: impl PgExecutor<'_>, id: ProjectId) -> Result<Option<Project>, IdentityError> {
    Ok(sqlx::query_as("SELECT id, name, description, created_at FROM projects WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?)
}

/// One page of the projects `user` belongs to, by `(created_at, id)`, with the user's role.
pub async fn project_list_for_user_page(
    db: impl PgExecutor<'_>,
    user: UserId,
    only: Option<ProjectId>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ProjectWithRole>, IdentityError> {
    let rows: Vec<(ProjectId, String, String, DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT p.id, p.name, p.description, p.created_at, m.role
         FROM project_members m JOIN projects p ON p.id = m.project_id
         WHERE m.user_id = $1 AND ($2::timestamptz IS NULL OR (p.created_at, p.id) > ($2, $3))
           AND ($5::uuid IS NULL OR p.id = $5)
         ORDER BY p.created_at, p.id
         LIMIT $4",
    )
    .bind(user)
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .bind(only)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(id, name, description, created_at, role)| {
            let role = role.parse().map_err(|_| IdentityError::UnknownRole { value: role.clone() })?;
            Ok(ProjectWithRole { project: Project { id, name, description, created_at }, role })
        })
        .collect()
}
