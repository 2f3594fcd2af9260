//! The [`Caller`] extractor: the authenticated user behind a request, and the checks handlers
//! make with it (operator, project role).
//!
//! ```text
//!  Authorization header   absent ───────────────────────────▶ 401 "missing bearer token"
//!        │                not `Bearer cloud_<43 base64url>` ─▶ 401 "malformed bearer token"
//!        ▼
//!  SHA-256 → api_tokens   no row, revoked, user disabled ────▶ 401 "invalid or expired token"
//!        │                expires_at passed ─────────────────▶ 401 "token expired"
//!        ▼
//!     Caller ── last_used_at refreshed (at most once a minute per token)
//! ```
//! Only a holder of the secret can learn that it expired; unknown, revoked and disabled are
//! one answer, so a response never says whether a token ever existed.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sqlx::PgPool;

use super::Role;
use super::token::{MalformedToken, TokenSecret};
use crate::db::identity::{self, IdentityError, ProjectKey};
use crate::error_chain::ErrorChain;
use crate::ids::{ProjectId, TokenId, UserId};

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    /// Operators manage the fleet (hosts, join tokens).
    pub is_operator: bool,
    /// The API token the request presented (`None`: a console session).
    pub token_id: Option<TokenId>,
    /// The console session the request came with (`None`: an API token).
    pub session_id: Option<uuid::Uuid>,
    /// When that token expires (`None`: never): a token it makes may not outlive it.
    pub token_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The one project that token is limited to, and the most it may do there (`None`: every
    /// project of its user, with its user's roles).
    pub scope: Option<(ProjectId, Role)>,
}

/// Why a request is not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthenticationError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed authorization header")]
    Malformed(#[source] MalformedHeader),
    #[error("unknown token")]
    Unknown,
    #[error("revoked token")]
    Revoked { token_id: TokenId },
    #[error("expired token")]
    Expired { token_id: TokenId },
    #[error("the token's user is disabled")]
    UserDisabled { user_id: UserId },
    /// The console session expired, was signed out of, or its user is disabled.
    #[error("the session ended")]
    SessionEnded,
    /// A change made with a session, without its CSRF token.
    #[error("missing or wrong X-CSRF-Token")]
    Csrf,
    /// A WebSocket opened with a session cookie from a page of another origin.
    #[error("a WebSocket opened with a console session must come from the console's own origin")]
    CrossOrigin,
    /// Console sign-in with a token limited to one project.
    #[error("this token is limited to one project: sign in to the console with a token that is not")]
    LimitedToken,
    #[error("cannot look the token up")]
    Store(#[from] IdentityError),
    #[error("cannot open a session")]
    Session(#[source] Box<super::AuthError>),
}

/// What is wrong with the `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedHeader {
    #[error("the header is not `Bearer <token>`")]
    NotBearer,
    #[error("the bearer token is not an API token")]
    Token(#[source] MalformedToken),
}

/// Finds the caller of a request from its `Authorization` header.
pub async fn authenticate(pool: &PgPool, headers: &HeaderMap) -> Result<Caller, AuthenticationError> {
    caller_of_token(pool, &bearer_token(headers)?).await
}

/// The caller an API token stands for, once checked.
pub(super) async fn caller_of_token(pool: &PgPool, secret: &TokenSecret) -> Result<Caller, AuthenticationError> {
    let found = identity::token_find_by_hash(pool, &secret.hash()).await?.ok_or(AuthenticationError::Unknown)?;
    if found.revoked {
        return Err(AuthenticationError::Revoked { token_id: found.token_id });
    }
    if found.user_disabled {
        return Err(AuthenticationError::UserDisabled { user_id: found.user_id });
    }
    if found.expired {
        return Err(AuthenticationError::Expired { token_id: found.token_id });
    }
    if found.last_used_stale {
        // Bookkeeping only: a failure here must not fail the request.
        if let Err(err) = identity::token_touch(pool, found.token_id).await {
            tracing::warn!(error = %ErrorChain(&err), token_id = %found.token_id, "cannot record the token's last use");
        }
    }
    // A limited token with an unreadable role may do the least (the schema allows none).
    let scope =
        found.project_id.map(|p| (p, found.role.as_deref().and_then(|r| r.parse().ok()).unwrap_or(Role::Viewer)));
    Ok(Caller {
        user_id: found.user_id,
        // A token limited to a project is never an operator's.
        is_operator: found.is_operator && scope.is_none(),
        token_id: Some(found.token_id),
        session_id: None,
        token_expires_at: found.expires_at,
        scope,
    })
}

/// Finds the caller of a request: its API token (`Authorization: Bearer …`) when it has one,
/// else its console session cookie. A change (any method but GET, HEAD and OPTIONS) made with a
/// session must also carry the session's CSRF token in `X-CSRF-Token`: a cookie alone is what a
/// page of another site can make a browser send.
pub async fn authenticate_request(
    pool: &PgPool,
    method: &axum::http::Method,
    headers: &HeaderMap,
) -> Result<Caller, AuthenticationError> {
    if headers.contains_key(AUTHORIZATION) {
        return authenticate(pool, headers).await;
    }
    let Some(secret) = session_cookie(headers) else { return Err(AuthenticationError::Missing) };
    let found = crate::db::sessions::session_find(pool, &secret.hash())
        .await
        .map_err(|e| AuthenticationError::Store(IdentityError::Query(e)))?
        .ok_or(AuthenticationError::SessionEnded)?;
    if found.dead {
        return Err(AuthenticationError::SessionEnded);
    }
    let safe = matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS);
    if is_websocket(headers) && !same_origin(headers) {
        // A WebSocket needs no CSRF token, and a browser sends the cookie with one opened by a
        // page of any origin of the same site: only the console's own pages may.
        return Err(AuthenticationError::CrossOrigin);
    }
    if !safe {
        let sent = headers.get(super::oidc::CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if !constant_time_eq(sent.as_bytes(), found.csrf_token.as_bytes()) {
            return Err(AuthenticationError::Csrf);
        }
    }
    Ok(Caller {
        user_id: found.user_id,
        is_operator: found.is_operator,
        token_id: None,
        session_id: Some(found.id),
        token_expires_at: Some(found.expires_at),
        scope: None,
    })
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The request's `Origin` names the host it was sent to (`Host`), whatever the scheme.
fn same_origin(headers: &HeaderMap) -> bool {
    let header = |name| headers.get(name).and_then(|v: &axum::http::HeaderValue| v.to_str().ok());
    let (Some(origin), Some(host)) = (header(axum::http::header::ORIGIN), header(axum::http::header::HOST)) else {
        return false;
    };
    origin.split_once("://").is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

/// The session secret in the `Cookie` header, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<TokenSecret> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == super::oidc::SESSION_COOKIE)
        .and_then(|(_, value)| TokenSecret::parse(value.trim()).ok())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 7235).
fn bearer_token(headers: &HeaderMap) -> Result<TokenSecret, AuthenticationError> {
    let value = headers.get(AUTHORIZATION).ok_or(AuthenticationError::Missing)?;
    let malformed = AuthenticationError::Malformed;
    let text = value.to_str().map_err(|_| malformed(MalformedHeader::NotBearer))?;
    let (scheme, token) = text.split_once(' ').ok_or(malformed(MalformedHeader::NotBearer))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed(MalformedHeader::NotBearer));
    }
    TokenSecret::parse(token.trim()).map_err(|e| malformed(MalformedHeader::Token(e)))
}

/// Why the caller may not do what it asked.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// A fleet endpoint, and the caller is no operator.
    #[error("this endpoint is for operators")]
    NotOperator,
    /// The caller is no member of the project (or it does not exist: the same answer).
    #[error("no such project")]
    NoSuchProject,
    /// A member whose role is below what the request needs.
    #[error("your role in this project is {role}; this needs {min}")]
    RoleTooLow { role: Role, min: Role },
    /// A token limited to one project asked for something beyond it (a new project).
    #[error("this token is limited to one project")]
    LimitedToken,
    /// The memberships could not be read.
    #[error("cannot read the caller's project memberships")]
    Store(#[source] IdentityError),
}

impl Caller {
    /// Fleet endpoints: refused unless the caller is an operator. (The fleet is not
    /// project-scoped, so saying it exists leaks nothing.)
    pub fn require_operator(&self) -> Result<(), AuthzError> {
        if self.is_operator { Ok(()) } else { Err(AuthzError::NotOperator) }
    }

    /// The project's id and the caller's role in it; [`AuthzError::NoSuchProject`] when the
    /// caller is not a member, exactly as when the project does not exist.
    pub async fn project_role(
        &self,
        db: impl sqlx::PgExecutor<'_>,
        project: ProjectKey<'_>,
    ) -> Result<(ProjectId, Role), AuthzError> {
        let (id, role) = match identity::project_member_role(db, project, self.user_id).await {
            Ok(Some(found)) => found,
            Ok(None) => return Err(AuthzError::NoSuchProject),
            Err(err) => return Err(AuthzError::Store(err)),
        };
        match self.scope {
            Some((only, _)) if only != id => Err(AuthzError::NoSuchProject),
            Some((_, cap)) => Ok((id, role.min(cap))),
            None => Ok((id, role)),
        }
    }

    /// The project's id and the caller's role in it, if that is at least `min` (see
    /// [`Caller::project_role`]).
    pub async fn require_role(
        &self,
        db: impl sqlx::PgExecutor<'_>,
        project: ProjectKey<'_>,
        min: Role,
    ) -> Result<(ProjectId, Role), AuthzError> {
        let (id, role) = self.project_role(db, project).await?;
        if role.allows(min) { Ok((id, role)) } else { Err(AuthzError::RoleTooLow { role, min }) }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(value) {
            map.insert(AUTHORIZATION, v);
        }
        map
    }

    #[test]
    fn bearer_tokens_are_parsed_and_bad_headers_named() {
        let secret = TokenSecret::parse(&format!("cloud_{}", "a".repeat(43))).ok();
        assert_eq!(bearer_token(&headers(&format!("Bearer cloud_{}", "a".repeat(43)))).ok(), secret);
        assert_eq!(bearer_token(&headers(&format!("bearer  cloud_{}", "a".repeat(43)))).ok(), secret);
        assert!(matches!(bearer_token(&HeaderMap::new()), Err(AuthenticationError::Missing)));
        assert!(matches!(
            bearer_token(&headers("Basic dXNlcjpwYXNz")),
            Err(AuthenticationError::Malformed(MalformedHeader::NotBearer))
        ));
        assert!(matches!(
            bearer_token(&headers("Bearer")),
            Err(AuthenticationError::Malformed(MalformedHeader::NotBearer))
        ));
        assert!(matches!(
            bearer_token(&headers("Bearer ghp_abc")),
            Err(AuthenticationError::Malformed(MalformedHeader::Token(MalformedToken::Prefix)))
        ));
    }
}
