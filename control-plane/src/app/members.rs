//! Who may do what: a project's members and their roles (managed by the project's admins),
//! and the fleet's operators (granted and revoked by operators).
//!
//! A member is named by what a person would type: the user's id, name, e-mail address or
//! identity-provider subject. Adding an e-mail address no user has yet creates that user,
//! known only by the address: their first sign-in through the identity provider (matched by
//! that verified address) is then theirs. A project always keeps an admin, and the fleet an
//! operator: the change that would leave none is refused (409), under a lock, so two admins
//! removing each other cannot both succeed.

use serde::Deserialize;
use utoipa::ToSchema;

use super::{App, AppError, projects};
use crate::auth::{AuthzError, Caller, Role};
use crate::db::identity::{self as db, Member, User};
use crate::ids::UserId;

/// `POST /v1/projects/{project}/members`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberAddParams {
    /// The user: id, name, e-mail address or identity-provider subject. An e-mail address no
    /// user has yet is a new user, who signs in with it later.
    #[schema(schema_with = user_key)]
    pub user: String,
    /// Their role in the project.
    pub role: Role,
}

/// `PATCH /v1/projects/{project}/members/{user}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberSetParams {
    /// Their new role in the project.
    pub role: Role,
}

/// The longest e-mail address accepted (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;

/// The schema of a user's key: 1 to 254 characters, none a control character.
fn user_key() -> utoipa::openapi::schema::Object {
    let mut schema = crate::app::validate::schema::plain_text(MAX_EMAIL, false);
    schema.min_length = Some(1);
    schema
}

/// The user `key` names; for an e-mail address no user has, a new user (when `create`).
async fn user(app: &App, key: &str, create: bool) -> Result<User, AppError> {
    if key.is_empty() || key.chars().count() > MAX_EMAIL || key.chars().any(char::is_control) {
        return Err(AppError::Invalid(format!(
            "user must be a user's id, name, e-mail address or subject (1 to {MAX_EMAIL} printable characters)"
        )));
    }
    if let Some(found) = db::user_find(&app.pool, key).await? {
        return Ok(found);
    }
    if create && looks_like_email(key) {
        let id = UserId(uuid::Uuid::new_v4());
        return match db::user_create_invited(&app.pool, id, key).await {
            Ok(user) => {
                tracing::info!(user = %user.id, "user created for a membership, to sign in later by e-mail");
                Ok(user)
            }
            // A concurrent request created them first.
            Err(db::IdentityError::AlreadyExists { .. }) => db::user_find(&app.pool, key)
                .await?
                .ok_or_else(|| AppError::Conflict(format!("user {key:?} was created and removed meanwhile"))),
            Err(e) => Err(e.into()),
        };
    }
    Err(AppError::NotFound(format!("no user {key:?} (give an e-mail address to add someone who has not signed in)")))
}

fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c == '/')
}

/// The members of a project (any member may see them).
pub async fn list(app: &App, caller: &Caller, project: &str) -> Result<Vec<Member>, AppError> {
    let project = projects::resolve(app, caller, project, Role::Viewer).await?;
    Ok(db::member_list(&app.pool, project).await?)
}

/// Adds a member (admins). Adding a member again with the same role changes nothing and
/// returns them (`false`: not new); with another role it is a conflict (change it with
/// [`set_role`]).
pub async fn add(
    app: &App,
    caller: &Caller,
    project: &str,
    params: MemberAddParams,
) -> Result<(Member, bool), AppError> {
    let project = projects::resolve(app, caller, project, Role::Admin).await?;
    let user = user(app, &params.user, true).await?;
    match db::project_member_add(&app.pool, project, user.id, params.role).await {
        Ok(()) => {}
        Err(db::IdentityError::AlreadyExists { .. }) => {
            let member = db::member_get(&app.pool, project, user.id)
                .await?
                .ok_or_else(|| AppError::Conflict("the membership changed meanwhile: try again".to_owned()))?;
            if member.role == params.role {
                return Ok((member, false));
            }
            return Err(AppError::Conflict(format!(
                "{} is already a member, as {}: change the role with `member set`",
                member.name, member.role
            )));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(%project, user = %user.id, role = %params.role, by = %caller.user_id, "member added");
    let member = db::member_get(&app.pool, project, user.id)
        .await?
        .ok_or_else(|| AppError::Conflict("the membership changed meanwhile: try again".to_owned()))?;
    Ok((member, true))
}

/// Changes a member's role (admins); the last admin stays one.
pub async fn set_role(
    app: &App,
    caller: &Caller,
    project: &str,
    member: &str,
    params: MemberSetParams,
) -> Result<Member, AppError> {
    let project = projects::resolve(app, caller, project, Role::Admin).await?;
    let user = user(app, member, false).await?;
    let mut tx = app.pool.begin().await?;
    let admins = db::member_admins_locked(&mut *tx, project).await?;
    still_admin(&admins, caller)?;
    if params.role != Role::Admin && admins == [user.id] {
        return Err(AppError::Conflict(format!(
            "{} is the project's only admin: make another member admin first",
            user.name
        )));
    }
    if !db::member_set_role(&mut *tx, project, user.id, params.role).await? {
        return Err(AppError::NotFound(format!("{} is not a member of this project", user.name)));
    }
    tx.commit().await?;
    tracing::info!(%project, user = %user.id, role = %params.role, by = %caller.user_id, "member role changed");
    db::member_get(&app.pool, project, user.id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("{} is not a member of this project", user.name)))
}

/// Removes a member (admins; a member may also leave); the last admin stays.
pub async fn remove(app: &App, caller: &Caller, project: &str, member: &str) -> Result<(), AppError> {
    let (project, role) = projects::resolve_with_role(app, caller, project, Role::Viewer).await?;
    let user = user(app, member, false).await?;
    // Leaving needs no admin role; removing someone else does.
    let leaving = user.id == caller.user_id;
    if !leaving && !role.allows(Role::Admin) {
        return Err(AuthzError::RoleTooLow { role, min: Role::Admin }.into());
    }
    let mut tx = app.pool.begin().await?;
    let admins = db::member_admins_locked(&mut *tx, project).await?;
    if !leaving {
        still_admin(&admins, caller)?;
    }
    if admins == [user.id] {
        return Err(AppError::Conflict(format!(
            "{} is the project's only admin: make another member admin first",
            user.name
        )));
    }
    if !db::member_remove(&mut *tx, project, user.id).await? {
        return Err(AppError::NotFound(format!("{} is not a member of this project", user.name)));
    }
    tx.commit().await?;
    tracing::info!(%project, user = %user.id, by = %caller.user_id, "member removed");
    Ok(())
}

/// Checks, under the lock of the project's admin rows, that the caller is still one of them
/// (a change racing with the caller's own demotion must not go through).
fn still_admin(admins: &[UserId], caller: &Caller) -> Result<(), AppError> {
    if admins.contains(&caller.user_id) {
        Ok(())
    } else {
        Err(AppError::Forbidden("you are no longer an admin of this project".to_owned()))
    }
}

/// Grants (`true`) or revokes the operator role (operators, with a token of their own, not one
/// limited to a project); the last operator stays one. Idempotent.
pub async fn set_operator(app: &App, caller: &Caller, key: &str, operator: bool) -> Result<User, AppError> {
    caller.require_operator()?;
    if caller.scope.is_some() {
        return Err(AuthzError::LimitedToken.into());
    }
    let user = user(app, key, false).await?;
    let mut tx = app.pool.begin().await?;
    let operators = db::operators_locked(&mut *tx).await?;
    if !operators.contains(&caller.user_id) {
        return Err(AppError::Forbidden("you are no longer an operator".to_owned()));
    }
    if !operator && operators == [user.id] {
        return Err(AppError::Conflict(format!("{} is the only operator: grant another user first", user.name)));
    }
    db::user_set_operator(&mut *tx, user.id, operator).await?;
    tx.commit().await?;
    if user.is_operator != operator {
        tracing::info!(user = %user.id, operator, by = %caller.user_id, "operator role changed");
    }
    let user = db::user_get(&app.pool, user.id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("user {key:?} was removed meanwhile")))?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e_mail_addresses_are_told_from_names() {
        for yes in ["ada@example.com", "a.b+c@mail.example.org"] {
            assert!(looks_like_email(yes), "{yes}");
        }
        for no in ["ada", "ada@", "@example.com", "ada@localhost", "a@b@example.com", "ada @example.com", "ada@.com"] {
            assert!(!looks_like_email(no), "{no}");
        }
    }
}
