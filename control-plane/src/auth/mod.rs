//! Authentication and authorization: who is calling, and what they may touch.
//!
//! ## Who is calling
//! Every API request but health and metrics carries `Authorization: Bearer cloud_…`, an API
//! token (see [`token`] for its format). The [`Caller`] extractor hashes the secret, finds the
//! token by its SHA-256 and checks, with the database's clock, that it is neither revoked nor
//! expired and that its user is not disabled. A token belongs to one user and acts with that
//! user's rights (or less: limited to a project and role). The web console signs in through an
//! OpenID Connect provider ([`oidc`]) and sends a session cookie instead; its changes carry
//! the session's CSRF token too. Either way the request gets the same [`Caller`]: a user is a
//! user, whatever proved it.
//!
//! ## What they may touch
//! ```text
//!  fleet (hosts, join tokens)   operator flag on the user       403 forbidden for others
//!  a project's resources        role in project_members:        404 not_found for non-members
//!                               viewer < member < admin         403 forbidden for a low role
//! ```
//! A caller who is not a member of a project gets the same 404 as for a project that does not
//! exist, so nobody can probe for other tenants' projects or resources. Operators are not
//! implicitly members of projects. Within a project, `viewer` reads, `member` also creates and
//! changes resources, `admin` also manages the project's members.
//!
//! ## The first start
//! [`bootstrap`] creates the `admin` operator, the `default` project and a token written to
//! `<data_dir>/admin-token` (mode 0600), once per database; see `auth::bootstrap`.

mod bootstrap;
mod caller;
pub mod oidc;
pub mod token;

use std::path::PathBuf;
use std::time::Duration;

use sqlx::PgPool;

pub use bootstrap::{
    ADMIN_TOKEN_FILE, BOOTSTRAP_PROJECT, BOOTSTRAP_TOKEN_NAME, BOOTSTRAP_USER, BootstrapOutcome, bootstrap,
    issue_admin_token_unchecked,
};
pub use caller::{AuthenticationError, AuthzError, Caller, authenticate, authenticate_request, session_cookie};
pub use token::{MalformedToken, TOKEN_PREFIX, TokenSecret};

use crate::db::identity::{self, IdentityError, Membership, NewToken, Token, User};
use crate::ids::{ProjectId, TokenId, UserId};

/// The longest lifetime a token can be given: five years.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

pub use crate::states::{Role, UnknownRole};

/// Errors of bootstrapping and of managing tokens.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "the administrator's token file {path} is open to other users (mode {mode:o}): run `chmod 600 {path}`, or issue a new token with `control-plane issue-admin-token`"
    )]
    TokenFileNotPrivate { path: std::path::PathBuf, mode: u32 },
    #[error(
        "token name {name:?} is not a DNS label (a lowercase letter, then up to 62 lowercase letters, digits or hyphens)"
    )]
    InvalidTokenName { name: String },
    #[error("expires_in_secs must be between 1 and {max_secs}, not {secs}", max_secs = MAX_TOKEN_LIFETIME.as_secs())]
    InvalidLifetime { secs: u64 },
    #[error(
        "a token cannot outlive the token that makes it, which expires at {parent_expires_at}: ask for a shorter expires_in_secs, or none to expire with it"
    )]
    OutlivesParent { parent_expires_at: chrono::DateTime<chrono::Utc> },
    #[error("you already have an unrevoked token named {name:?}")]
    TokenNameTaken { name: String },
    #[error("no such token")]
    TokenNotFound { id: TokenId },
    #[error("the authenticated user no longer exists")]
    UserGone { id: UserId },
    #[error("the bootstrap user {BOOTSTRAP_USER:?} does not exist (the database was never bootstrapped)")]
    NoBootstrapAdmin,
    #[error("cannot draw random bytes from the operating system")]
    Random(#[source] getrandom::Error),
    #[error("cannot write the admin token file {path}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database transaction failed")]
    Transaction(#[source] sqlx::Error),
    #[error("identity store failed")]
    Store(#[from] IdentityError),
}

/// A token just created: its row and the secret, which exists nowhere else from now on.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: Token,
    pub secret: TokenSecret,
}

/// A console session just opened: the cookie's secret exists nowhere else from now on.
#[derive(Debug)]
pub struct OpenedSession {
    pub secret: TokenSecret,
    /// What changes made with it send in `X-CSRF-Token`.
    pub csrf_token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl OpenedSession {
    /// Seconds until it ends (the cookie's `Max-Age`).
    pub fn max_age_secs(&self) -> i64 {
        (self.expires_at - chrono::Utc::now()).num_seconds().max(0)
    }
}

/// Opens a console session for `user` until `expires_at`; with `token`, the API token the user
/// signed in with, it also ends when that token is revoked or expires. Whatever proved who the
/// user is (the identity provider, an API token), the session is the same.
pub async fn session_open(
    pool: &PgPool,
    user: UserId,
    expires_at: chrono::DateTime<chrono::Utc>,
    token: Option<TokenId>,
) -> Result<OpenedSession, AuthError> {
    let secret = TokenSecret::generate().map_err(AuthError::Random)?;
    let csrf = TokenSecret::generate().map_err(AuthError::Random)?;
    let new = crate::db::sessions::NewSession {
        id: uuid::Uuid::new_v4(),
        hash: &secret.hash(),
        user,
        csrf_token: csrf.expose(),
        expires_at,
        token,
    };
    crate::db::sessions::session_create(pool, &new).await.map_err(AuthError::Transaction)?;
    Ok(OpenedSession { secret, csrf_token: csrf.expose().to_owned(), expires_at })
}

/// Signs in to the console with an API token: the token must be valid and not limited to a
/// project (a session acts with all of its user's rights). The session lasts `lifetime`, or
/// until the token ends if sooner.
pub async fn session_open_with_token(
    pool: &PgPool,
    secret: &TokenSecret,
    lifetime: Duration,
) -> Result<(UserId, OpenedSession), AuthenticationError> {
    let caller = caller::caller_of_token(pool, secret).await?;
    let Some(token) = caller.token_id else { return Err(AuthenticationError::Unknown) };
    if caller.scope.is_some() {
        return Err(AuthenticationError::LimitedToken);
    }
    let mut expires_at = chrono::Utc::now() + chrono::Duration::seconds(lifetime.as_secs() as i64);
    if let Some(end) = caller.token_expires_at {
        expires_at = expires_at.min(end);
    }
    let opened = session_open(pool, caller.user_id, expires_at, Some(token))
        .await
        .map_err(|e| AuthenticationError::Session(Box::new(e)))?;
    Ok((caller.user_id, opened))
}

/// Who the caller is: the user and the projects they belong to.
#[derive(Debug)]
pub struct Identity {
    pub user: User,
    pub memberships: Vec<Membership>,
}

/// Checks a token name: a DNS label, like every other name in the API.
pub fn validate_token_name(name: &str) -> Result<(), AuthError> {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(AuthError::InvalidTokenName { name: name.to_owned() })
    }
}

/// Creates a token for `user`, valid for `lifetime` (forever when `None`), and returns its
/// secret. The name must be free among the user's unrevoked tokens. A token made with a token
/// that expires (`not_after`) never outlives it: without a lifetime it expires with it, and a
/// longer one is refused.
pub async fn token_issue(
    db: impl sqlx::PgExecutor<'_>,
    user: UserId,
    name: &str,
    lifetime: Option<Duration>,
    not_after: Option<chrono::DateTime<chrono::Utc>>,
    scope: Option<(ProjectId, Role)>,
) -> Result<IssuedToken, AuthError> {
    validate_token_name(name)?;
    let expires_at = match lifetime {
        None => None,
        Some(d) if d.is_zero() || d > MAX_TOKEN_LIFETIME => {
            return Err(AuthError::InvalidLifetime { secs: d.as_secs() });
        }
        Some(d) => {
            let d = chrono::Duration::from_std(d).map_err(|_| AuthError::InvalidLifetime { secs: d.as_secs() })?;
            Some(chrono::Utc::now() + d)
        }
    };
    let expires_at = match (expires_at, not_after) {
        (None, parent) => parent,
        (Some(own), Some(parent)) if own > parent => {
            return Err(AuthError::OutlivesParent { parent_expires_at: parent });
        }
        (own, _) => own,
    };
    let secret = TokenSecret::generate().map_err(AuthError::Random)?;
    let new = NewToken {
        id: TokenId::new(),
        user_id: user,
        name,
        hash: secret.hash(),
        prefix: secret.display_prefix(),
        expires_at,
        scope,
    };
    let token = identity::token_create(db, &new).await.map_err(|err| match err {
        IdentityError::AlreadyExists { .. } => AuthError::TokenNameTaken { name: name.to_owned() },
        other => AuthError::Store(other),
    })?;
    Ok(IssuedToken { token, secret })
}

/// The caller's tokens, revoked and expired ones included.
pub async fn token_list(pool: &PgPool, caller: &Caller) -> Result<Vec<Token>, AuthError> {
    Ok(identity::token_list_for_user(pool, caller.user_id).await?)
}

/// Revokes one of the caller's tokens (possibly the one in use). Revoking a revoked token
/// succeeds; another user's token is [`AuthError::TokenNotFound`], like a missing one.
pub async fn token_revoke(pool: &PgPool, caller: &Caller, id: TokenId) -> Result<(), AuthError> {
    if identity::token_revoke(pool, caller.user_id, id).await? { Ok(()) } else { Err(AuthError::TokenNotFound { id }) }
}

/// The caller's user and memberships.
pub async fn whoami(pool: &PgPool, caller: &Caller) -> Result<Identity, AuthError> {
    let user = identity::user_get(pool, caller.user_id).await?.ok_or(AuthError::UserGone { id: caller.user_id })?;
    let mut memberships = identity::project_list_for_user(pool, caller.user_id).await?;
    // A token limited to a project sees that project alone, with its own role there at most.
    if let Some((only, cap)) = caller.scope {
        memberships.retain(|m| m.project_id == only);
        for m in &mut memberships {
            m.role = m.role.min(cap);
        }
    }
    Ok(Identity { user, memberships })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_round_trip() {
        assert!(Role::Admin.allows(Role::Member));
        assert!(Role::Member.allows(Role::Member));
        assert!(!Role::Viewer.allows(Role::Member));
        for role in [Role::Viewer, Role::Member, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>().ok(), Some(role));
        }
        assert!(matches!("owner".parse::<Role>(), Err(UnknownRole(r)) if r == "owner"));
    }

    #[test]
    fn token_names_are_dns_labels() {
        for ok in ["ci", "a", "deploy-2", &"a".repeat(63)] {
            assert!(validate_token_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "2fa", "CI", "ci token", "ci_token", "-x", &"a".repeat(64)] {
            assert!(matches!(validate_token_name(bad), Err(AuthError::InvalidTokenName { .. })), "{bad}");
        }
    }
}
