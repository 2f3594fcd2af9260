//! `/v1/auth`: who am I, and the caller's API tokens.
//!
//! ```text
//! GET    /v1/auth/whoami        the caller's user, operator flag and projects with roles
//! POST   /v1/auth/tokens        create a token; the only response that ever shows its secret
//! GET    /v1/auth/tokens        the caller's tokens (no secrets), revoked and expired included
//! DELETE /v1/auth/tokens/{id}   revoke one of them (idempotent)
//! ```
//! Every route needs a valid bearer token ([`Caller`]). Tokens are the caller's own: another
//! user's token id is a 404, like one that does not exist.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;

use super::extract::Path;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::error::{ApiError, ErrorBody};
use crate::app::App;
use crate::auth::{self, AuthError, Caller, Role};
use crate::db::identity::Token;
use crate::ids::{ProjectId, TokenId, UserId};

/// The routes of this module, for the API router to merge.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/auth/whoami", get(whoami))
        .route("/v1/auth/tokens", get(token_list).post(token_create))
        .route("/v1/auth/tokens/{id}", delete(token_revoke))
}

/// The caller's identity.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    pub user: UserView,
    /// Operators manage the fleet; they are not implicitly members of projects.
    pub is_operator: bool,
    /// The API token this request was made with (null: a console session).
    pub token_id: Option<TokenId>,
    /// The projects the caller belongs to, by name.
    pub projects: Vec<ProjectMembershipView>,
}

/// A user.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub name: String,
    pub email: Option<String>,
}

/// A project and the caller's role in it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectMembershipView {
    pub id: ProjectId,
    pub name: String,
    pub role: Role,
}

/// `POST /v1/auth/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreateParams {
    /// A DNS label, unique among the caller's unrevoked tokens.
    #[schema(schema_with = crate::app::validate::schema::dns_label)]
    pub name: String,
    /// Lifetime in seconds (at most five years); absent: the token does not expire (or, made
    /// with a token that does, expires with it).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 157_680_000)]
    pub expires_in_secs: Option<u64>,
    /// Limit the token to this project (name or id); absent: every project of its user (or,
    /// made with a limited token, that token's project). Required with `role`.
    #[serde(default)]
    pub project: Option<String>,
    /// The most the token may do in `project` (at most the caller's own role there; default:
    /// the caller's role).
    #[serde(default)]
    pub role: Option<Role>,
}

/// A token just created.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenCreated {
    pub token: TokenView,
    /// The secret, for `Authorization: Bearer <secret>`. Shown this once: only its hash is kept.
    pub secret: String,
}

/// An API token, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: TokenId,
    pub name: String,
    /// The secret's first characters, to tell tokens apart.
    pub token_prefix: String,
    pub status: TokenStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Refreshed at most once a minute.
    pub last_used_at: Option<DateTime<Utc>>,
    /// The one project the token is limited to, if any.
    pub project_id: Option<ProjectId>,
    /// The most it may do there.
    pub role: Option<Role>,
}

/// Whether a token can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenStatus {
    Active,
    Expired,
    Revoked,
}

/// The caller's tokens.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenView>,
}

impl From<Token> for TokenView {
    fn from(t: Token) -> Self {
        let status = if t.revoked_at.is_some() {
            TokenStatus::Revoked
        } else if t.expires_at.is_some_and(|at| at <= Utc::now()) {
            TokenStatus::Expired
        } else {
            TokenStatus::Active
        };
        Self {
            id: t.id,
            name: t.name,
            token_prefix: t.token_prefix,
            status,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            last_used_at: t.last_used_at,
            project_id: t.project_id,
            // Stored by this program from a Role; an unreadable one shows as the least.
            role: t.role.map(|r| r.parse().unwrap_or(Role::Viewer)),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match &err {
            AuthError::InvalidTokenName { .. }
            | AuthError::InvalidLifetime { .. }
            | AuthError::OutlivesParent { .. } => Self::invalid(err.to_string()),
            AuthError::TokenNameTaken { .. } => Self::conflict(err.to_string()),
            AuthError::TokenNotFound { .. } => Self::not_found(err.to_string()),
            AuthError::UserGone { .. } => Self::unauthenticated("invalid or expired token"),
            AuthError::NoBootstrapAdmin
            | AuthError::Random(_)
            | AuthError::TokenFile { .. }
            | AuthError::TokenFileNotPrivate { .. }
            | AuthError::Transaction(_)
            | AuthError::Store(_) => Self::internal(&err),
        }
    }
}

/// The bearer token scheme (`bearer`) the `/v1` paths require; the OpenAPI document adds it
/// with `modifiers(&BearerAuth)`.
#[derive(Debug)]
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(format!("An API token, `{}…`", auth::TOKEN_PREFIX)))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// States in the document what the derive cannot: a token's `role` needs its `project`
/// (`token_create` refuses a role alone with 400).
#[derive(Debug)]
pub struct TokenScopeRule;

impl utoipa::Modify for TokenScopeRule {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::Schema;
        let schemas = openapi.components.as_mut().map(|c| &mut c.schemas);
        if let Some(RefOr::T(Schema::Object(params))) = schemas.and_then(|s| s.get_mut("TokenCreateParams")) {
            // With a role that is not null, the project must be there and not null.
            let rule = serde_json::json!({ "role": { "anyOf": [
                { "properties": { "role": { "type": "null" } } },
                { "properties": { "project": { "type": "string" } }, "required": ["project"] },
            ] } });
            params.extensions.get_or_insert_with(Default::default).insert("dependentSchemas".to_owned(), rule);
        }
    }
}

/// Who the caller is: user, operator flag, and projects with roles.
#[utoipa::path(get, path = "/v1/auth/whoami", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub async fn whoami(State(app): State<Arc<App>>, caller: Caller) -> Result<Json<WhoAmI>, ApiError> {
    let identity = auth::whoami(&app.pool, &caller).await?;
    Ok(Json(WhoAmI {
        user: UserView { id: identity.user.id, name: identity.user.name, email: identity.user.email },
        // The token's: one limited to a project is no operator's, whoever its user is.
        is_operator: caller.is_operator,
        token_id: caller.token_id,
        projects: identity
            .memberships
            .into_iter()
            .map(|m| ProjectMembershipView { id: m.project_id, name: m.project_name, role: m.role })
            .collect(),
    }))
}

/// Creates an API token for the caller. The response is the only place its secret appears.
#[utoipa::path(post, path = "/v1/auth/tokens", tag = "auth", security(("bearer" = [])),
    request_body = TokenCreateParams,
    responses((status = 201, body = TokenCreated), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody, description = "No such project"),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn token_create(
    State(app): State<Arc<App>>,
    caller: Caller,
    super::json::Json(params): super::json::Json<TokenCreateParams>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let lifetime = params.expires_in_secs.map(Duration::from_secs);
    // A token never does more than the one that makes it: a limited token makes tokens of its
    // project, with at most its role.
    let scope = match (params.project.as_deref(), params.role) {
        (None, Some(_)) => {
            return Err(ApiError::invalid("a role limits a token within a project: give the project too"));
        }
        (None, None) => caller.scope,
        (Some(key), role) => {
            let min = role.unwrap_or(Role::Viewer);
            let (project, own) = crate::app::projects::resolve_with_role(&app, &caller, key, min).await?;
            Some((project, role.unwrap_or(own)))
        }
    };
    let issued =
        auth::token_issue(&app.pool, caller.user_id, &params.name, lifetime, caller.token_expires_at, scope).await?;
    tracing::info!(user_id = %caller.user_id, token_id = %issued.token.id, name = %params.name, "API token created");
    let secret = issued.secret.expose().to_owned();
    Ok((StatusCode::CREATED, Json(TokenCreated { token: issued.token.into(), secret })))
}

/// The caller's tokens, oldest first, revoked and expired ones included; never their secrets.
#[utoipa::path(get, path = "/v1/auth/tokens", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = TokenList), (status = 401, body = ErrorBody)))]
pub async fn token_list(State(app): State<Arc<App>>, caller: Caller) -> Result<Json<TokenList>, ApiError> {
    let tokens = auth::token_list(&app.pool, &caller).await?;
    Ok(Json(TokenList { items: tokens.into_iter().map(TokenView::from).collect() }))
}

/// Revokes one of the caller's tokens, possibly the one in use; revoking twice is fine.
#[utoipa::path(delete, path = "/v1/auth/tokens/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = TokenId, Path, description = "The token's id")),
    responses((status = 204, description = "Revoked"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn token_revoke(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<TokenId>,
) -> Result<StatusCode, ApiError> {
    auth::token_revoke(&app.pool, &caller, id).await?;
    tracing::info!(user_id = %caller.user_id, token_id = %id, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}
