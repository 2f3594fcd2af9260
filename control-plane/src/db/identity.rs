//! Identity in the datastore: users, projects, project members and API tokens.
//!
//! Every statement is a single query, so each function takes any executor (`&PgPool`,
//! `&mut PgConnection`, `&mut *transaction`); the caller decides what runs in one transaction.
//! Unique violations come back as [`IdentityError::AlreadyExists`] (the API's 409). Token
//! secrets never reach this module: only their SHA-256 and a short display prefix do.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::ids::{ProjectId, TokenId, UserId};
use crate::states::Role;

/// Errors of the identity queries.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A unique name is taken (user, project, token name of a user, membership).
    #[error("{what} {name:?} already exists")]
    AlreadyExists { what: &'static str, name: String },
    /// A `project_members.role` the code does not know (the schema's CHECK forbids it).
    #[error("unknown role {value:?} in the database")]
    UnknownRole { value: String },
    /// What names a user (an e-mail address, a subject) is several users'.
    #[error("{key:?} names more than one user: use the user's id or name")]
    Ambiguous { key: String },
    #[error("identity query failed")]
    Query(#[from] sqlx::Error),
}

/// Turns a unique violation into [`IdentityError::AlreadyExists`], anything else into `Query`.
fn conflict_as(what: &'static str, name: &str) -> impl FnOnce(sqlx::Error) -> IdentityError {
    move |err| match err.as_database_error() {
        Some(db) if db.is_unique_violation() => IdentityError::AlreadyExists { what, name: name.to_owned() },
        _ => IdentityError::Query(err),
    }
}

/// A row of `users` (what operators see of a user).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub email: Option<String>,
    /// Operators manage the fleet; they are not implicitly members of any project.
    pub is_operator: bool,
    pub created_at: DateTime<Utc>,
    /// Set when the user may no longer authenticate.
    pub disabled_at: Option<DateTime<Utc>>,
}

/// A row of `projects`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
}

/// A project a user belongs to, with the user's role in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub project_id: ProjectId,
    pub project_name: String,
    pub role: Role,
}

/// A row of `api_tokens`, without the hash.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Token {
    pub id: TokenId,
    pub user_id: UserId,
    pub name: String,
    /// The first characters of the secret, to tell tokens apart in listings.
    pub token_prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// The one project it is limited to (with `role`), if any.
    pub project_id: Option<ProjectId>,
    /// Its role there (`viewer`, `member` or `admin`).
    pub role: Option<String>,
}

/// What [`token_create`] stores.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub id: TokenId,
    pub user_id: UserId,
    pub name: &'a str,
    /// SHA-256 of the whole secret (`cloud_…`).
    pub hash: [u8; 32],
    pub prefix: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
    /// Limited to one project and a role there.
    pub scope: Option<(ProjectId, Role)>,
}

/// A token found by its hash, joined with its user; the time checks use the database's clock,
/// so every replica judges expiry alike.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenLookup {
    pub token_id: TokenId,
    pub user_id: UserId,
    pub is_operator: bool,
    /// The user is disabled.
    pub user_disabled: bool,
    pub revoked: bool,
    pub expired: bool,
    /// When it expires (`None`: never).
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The one project it is limited to (with `role`), if any.
    pub project_id: Option<ProjectId>,
    /// Its role there.
    pub role: Option<String>,
    /// `last_used_at` is more than [`LAST_USED_GRANULARITY_SECS`] old (or unset).
    pub last_used_stale: bool,
}

/// `last_used_at` is refreshed at most this often, so a busy script costs one write a minute.
pub const LAST_USED_GRANULARITY_SECS: i32 = 60;

const USER_COLUMNS: &str = "id, name, email, is_operator, created_at, disabled_at";
const TOKEN_COLUMNS: &str =
    "id, user_id, name, token_prefix, created_at, expires_at, revoked_at, last_used_at, project_id, role";

/// Creates a local user (no OIDC identity).
pub async fn user_create(
    db: impl PgExecutor<'_>,
    id: UserId,
    name: &str,
    is_operator: bool,
) -> Result<User, IdentityError> {
    sqlx::query_as(&format!("INSERT INTO users (id, name, is_operator) VALUES ($1, $2, $3) RETURNING {USER_COLUMNS}"))
        .bind(id)
        .bind(name)
        .bind(is_operator)
        .fetch_one(db)
        .await
        .map_err(conflict_as("user", name))
}

/// Creates a local user only when the table has no user at all; `None` when users exist.
///
/// Two transactions racing here cannot both succeed: the second one's insert waits on the
/// first one's uncommitted row with the same (unique) name, then does nothing. This is how
/// concurrent first starts of several replicas create exactly one bootstrap admin.
pub async fn user_create_if_none_exist(
    db: impl PgExecutor<'_>,
    id: UserId,
    name: &str,
    is_operator: bool,
) -> Result<Option<User>, IdentityError> {
    Ok(sqlx::query_as(&format!(
        "INSERT INTO users (id, name, is_operator)
         SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM users)
         ON CONFLICT (name) DO NOTHING
         RETURNING {USER_COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(is_operator)
    .fetch_optional(db)
    .await?)
}

/// Whether any user exists.
pub async fn user_any_exists(db: impl PgExecutor<'_>) -> Result<bool, IdentityError> {
    Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)").fetch_one(db).await?)
}

/// A user by id.
pub async fn user_get(db: impl PgExecutor<'_>, id: UserId) -> Result<Option<User>, IdentityError> {
    Ok(sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1")).bind(id).fetch_optional(db).await?)
}

/// A user by name.
pub async fn user_get_by_name(db: impl PgExecutor<'_>, name: &str) -> Result<Option<User>, IdentityError> {
    Ok(sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
        .bind(name)
        .fetch_optional(db)
        .await?)
}

/// A user by what a person would type for them: their id, their name, their e-mail address, or
/// their identity provider's subject. `Err(Ambiguous)` when the e-mail or subject is several
/// users' (different issuers).
pub async fn user_find(db: impl PgExecutor<'_>, key: &str) -> Result<Option<User>, IdentityError> {
    let id = uuid::Uuid::parse_str(key).ok();
    let found: Vec<User> = sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users
         WHERE id = $1 OR name = $2 OR lower(email) = lower($2) OR oidc_subject = $2
         ORDER BY (id = $1) DESC NULLS LAST, (name = $2) DESC LIMIT 3"
    ))
    .bind(id)
    .bind(key)
    .fetch_all(db)
    .await?;
    match found.as_slice() {
        [] => Ok(None),
        [one, ..] if Some(one.id.0) == id || one.name == key => Ok(Some(one.clone())),
        [one] => Ok(Some(one.clone())),
        _ => Err(IdentityError::Ambiguous { key: key.to_owned() }),
    }
}

/// Creates a user known only by e-mail (a member added before their first sign-in, matched to
/// it then by that address); their name is the address.
pub async fn user_create_invited(db: impl PgExecutor<'_>, id: UserId, email: &str) -> Result<User, IdentityError> {
    sqlx::query_as(&format!("INSERT INTO users (id, name, email) VALUES ($1, $2, $2) RETURNING {USER_COLUMNS}"))
        .bind(id)
        .bind(email)
        .fetch_one(db)
        .await
        .map_err(conflict_as("user", email))
}

/// The user with this identity at this provider.
pub async fn user_find_oidc(
    db: impl PgExecutor<'_>,
    issuer: &str,
    subject: &str,
) -> Result<Option<User>, IdentityError> {
    Ok(sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE oidc_issuer = $1 AND oidc_subject = $2"))
        .bind(issuer)
        .bind(subject)
        .fetch_optional(db)
        .await?)
}

/// Gives the oldest user known only by `email` (added as a member before signing in) this
/// provider identity; `None` when there is none.
pub async fn user_claim_by_email(
    db: impl PgExecutor<'_>,
    issuer: &str,
    subject: &str,
    email: &str,
) -> Result<Option<User>, IdentityError> {
    Ok(sqlx::query_as(&format!(
        "UPDATE users SET oidc_issuer = $1, oidc_subject = $2
         WHERE id = (SELECT id FROM users WHERE lower(email) = lower($3) AND oidc_issuer IS NULL
                     ORDER BY created_at LIMIT 1)
         RETURNING {USER_COLUMNS}"
    ))
    .bind(issuer)
    .bind(subject)
    .bind(email)
    .fetch_optional(db)
    .await?)
}

/// Creates a user signed in for the first time through a provider.
pub async fn user_create_oidc(
    db: impl PgExecutor<'_>,
    id: UserId,
    name: &str,
    email: Option<&str>,
    issuer: &str,
    subject: &str,
) -> Result<User, IdentityError> {
    sqlx::query_as(&format!(
        "INSERT INTO users (id, name, email, oidc_issuer, oidc_subject) VALUES ($1, $2, $3, $4, $5)
         RETURNING {USER_COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(email)
    .bind(issuer)
    .bind(subject)
    .fetch_one(db)
    .await
    .map_err(conflict_as("user", name))
}

/// Grants or revokes the operator role; returns whether the user exists.
pub async fn user_set_operator(db: impl PgExecutor<'_>, id: UserId, operator: bool) -> Result<bool, IdentityError> {
    let done =
        sqlx::query("UPDATE users SET is_operator = $2 WHERE id = $1").bind(id).bind(operator).execute(db).await?;
    Ok(done.rows_affected() > 0)
}

/// How many enabled operators there are, the rows locked until the transaction ends (so two
/// revocations cannot both see another operator left).
pub async fn operators_locked(db: impl PgExecutor<'_>) -> Result<Vec<UserId>, IdentityError> {
    Ok(sqlx::query_scalar("SELECT id FROM users WHERE is_operator AND disabled_at IS NULL FOR UPDATE")
        .fetch_all(db)
        .await?)
}

/// A project's member, with the user's names.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct Member {
    pub user_id: UserId,
    pub name: String,
    pub email: Option<String>,
    /// Their role in the project.
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// When they became a member.
    pub created_at: DateTime<Utc>,
}

const MEMBER_SELECT: &str = "SELECT m.user_id, u.name, u.email, m.role, m.created_at
     FROM project_members m JOIN users u ON u.id = m.user_id";

/// A project's members, by name.
pub async fn member_list(db: impl PgExecutor<'_>, project: ProjectId) -> Result<Vec<Member>, IdentityError> {
    Ok(sqlx::query_as(&format!("{MEMBER_SELECT} WHERE m.project_id = $1 ORDER BY u.name"))
        .bind(project)
        .fetch_all(db)
        .await?)
}

/// One member of a project.
pub async fn member_get(
    db: impl PgExecutor<'_>,
    project: ProjectId,
    user: UserId,
) -> Result<Option<Member>, IdentityError> {
    Ok(sqlx::query_as(&format!("{MEMBER_SELECT} WHERE m.project_id = $1 AND m.user_id = $2"))
        .bind(project)
        .bind(user)
        .fetch_optional(db)
        .await?)
}

/// The project's admins, their rows locked until the transaction ends (so that two changes
/// cannot both see another admin left).
pub async fn member_admins_locked(db: impl PgExecutor<'_>, project: ProjectId) -> Result<Vec<UserId>, IdentityError> {
    Ok(sqlx::query_scalar("SELECT user_id FROM project_members WHERE project_id = $1 AND role = 'admin' FOR UPDATE")
        .bind(project)
        .fetch_all(db)
        .await?)
}

/// Sets a member's role; returns whether they are a member.
pub async fn member_set_role(
    db: impl PgExecutor<'_>,
    project: ProjectId,
    user: UserId,
    role: Role,
) -> Result<bool, IdentityError> {
    let done = sqlx::query("UPDATE project_members SET role = $3 WHERE project_id = $1 AND user_id = $2")
        .bind(project)
        .bind(user)
        .bind(role.as_str())
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Removes a member; returns whether they were one.
pub async fn member_remove(db: impl PgExecutor<'_>, project: ProjectId, user: UserId) -> Result<bool, IdentityError> {
    let done = sqlx::query("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2")
        .bind(project)
        .bind(user)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Disables the user (their tokens stop working at once) or enables them again.
pub async fn user_set_disabled(db: impl PgExecutor<'_>, id: UserId, disabled: bool) -> Result<bool, IdentityError> {
    let done =
        sqlx::query("UPDATE users SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now()) END WHERE id = $1")
            .bind(id)
            .bind(disabled)
            .execute(db)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// Creates a project.
pub async fn project_create(
    db: impl PgExecutor<'_>,
    id: ProjectId,
    name: &str,
    description: &str,
) -> Result<Project, IdentityError> {
    sqlx::query_as(
        "INSERT INTO projects (id, name, description) VALUES ($1, $2, $3)
         RETURNING id, name, description, created_at",
    )
    .bind(id)
    .bind(name)
    .bind(description)
    .fetch_one(db)
    .await
    .map_err(conflict_as("project", name))
}

/// Makes `user` a member of `project` with `role`.
pub async fn project_member_add(
    db: impl PgExecutor<'_>,
    project: ProjectId,
    user: UserId,
    role: Role,
) -> Result<(), IdentityError> {
    sqlx::query("INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, $3)")
        .bind(project)
        .bind(user)
        .bind(role.as_str())
        .execute(db)
        .await
        .map_err(conflict_as("membership", &format!("{user} in {project}")))?;
    Ok(())
}

/// A project as a request names it: by id, or by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectKey<'a> {
    Id(ProjectId),
    Name(&'a str),
}

/// The project's id and the user's role in it, in one statement; `None` when the user is not
/// a member (or the project does not exist: the two are deliberately indistinguishable).
pub async fn project_member_role(
    db: impl PgExecutor<'_>,
    project: ProjectKey<'_>,
    user: UserId,
) -> Result<Option<(ProjectId, Role)>, IdentityError> {
    let query = match project {
        ProjectKey::Id(id) => {
            sqlx::query_as("SELECT project_id, role FROM project_members WHERE project_id = $1 AND user_id = $2")
                .bind(id)
        }
        ProjectKey::Name(name) => sqlx::query_as(
            "SELECT m.project_id, m.role FROM project_members m JOIN projects p ON p.id = m.project_id
             WHERE p.name = $1 AND m.user_id = $2",
        )
        .bind(name),
    };
    let row: Option<(ProjectId, String)> = query.bind(user).fetch_optional(db).await?;
    row.map(|(id, role)| Ok((id, parse_role(&role)?))).transpose()
}

/// The projects the user belongs to, by name.
pub async fn project_list_for_user(db: impl PgExecutor<'_>, user: UserId) -> Result<Vec<Membership>, IdentityError> {
    let rows: Vec<(ProjectId, String, String)> = sqlx::query_as(
        "SELECT p.id, p.name, m.role FROM project_members m JOIN projects p ON p.id = m.project_id
         WHERE m.user_id = $1 ORDER BY p.name",
    )
    .bind(user)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(project_id, project_name, role)| Ok(Membership { project_id, project_name, role: parse_role(&role)? }))
        .collect()
}

fn parse_role(value: &str) -> Result<Role, IdentityError> {
    value.parse().map_err(|_| IdentityError::UnknownRole { value: value.to_owned() })
}

/// Stores a new token. Names are unique among a user's unrevoked tokens.
pub async fn token_create(db: impl PgExecutor<'_>, token: &NewToken<'_>) -> Result<Token, IdentityError> {
    sqlx::query_as(&format!(
        "INSERT INTO api_tokens (id, user_id, name, token_hash, token_prefix, expires_at, project_id, role)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {TOKEN_COLUMNS}"
    ))
    .bind(token.id)
    .bind(token.user_id)
    .bind(token.name)
    .bind(&token.hash[..])
    .bind(token.prefix)
    .bind(token.expires_at)
    .bind(token.scope.map(|(project, _)| project))
    .bind(token.scope.map(|(_, role)| role.as_str()))
    .fetch_one(db)
    .await
    .map_err(conflict_as("token", token.name))
}

/// The token with this SHA-256, with its user's flags; `None` when no token has it.
pub async fn token_find_by_hash(
    db: impl PgExecutor<'_>,
    hash: &[u8; 32],
) -> Result<Option<TokenLookup>, IdentityError> {
    Ok(sqlx::query_as(
        "SELECT t.id AS token_id, t.user_id, u.is_operator,
                u.disabled_at IS NOT NULL AS user_disabled,
                t.revoked_at IS NOT NULL AS revoked,
                coalesce(t.expires_at <= now(), false) AS expired, t.expires_at, t.project_id, t.role,
                coalesce(t.last_used_at < now() - $2 * interval '1 second', true) AS last_used_stale
         FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.token_hash = $1",
    )
    .bind(&hash[..])
    .bind(LAST_USED_GRANULARITY_SECS)
    .fetch_optional(db)
    .await?)
}

/// Sets `last_used_at` to now unless another request did within the last minute.
pub async fn token_touch(db: impl PgExecutor<'_>, id: TokenId) -> Result<(), IdentityError> {
    sqlx::query(
        "UPDATE api_tokens SET last_used_at = now()
         WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - $2 * interval '1 second')",
    )
    .bind(id)
    .bind(LAST_USED_GRANULARITY_SECS)
    .execute(db)
    .await?;
    Ok(())
}

/// Revokes the user's token (keeping the first revocation time); `false` when the user has no
/// token with this id. Revoking twice is not an error.
pub async fn token_revoke(db: impl PgExecutor<'_>, user: UserId, id: TokenId) -> Result<bool, IdentityError> {
    let done =
        sqlx::query("UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user)
            .execute(db)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// The user's tokens, revoked and expired ones included, oldest first.
pub async fn token_list_for_user(db: impl PgExecutor<'_>, user: UserId) -> Result<Vec<Token>, IdentityError> {
    Ok(sqlx::query_as(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE user_id = $1 ORDER BY created_at, name"))
        .bind(user)
        .fetch_all(db)
        .await?)
}
