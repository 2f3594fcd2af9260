//! Sign-ins under way and browser sessions (`oidc_logins`, `sessions`). A session's secret
//! never reaches the database: only its SHA-256 does, like an API token's.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::ids::{TokenId, UserId};

/// A sign-in under way: what the provider's answer is checked against.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingLogin {
    pub pkce_verifier: String,
    pub nonce: String,
    pub next_path: String,
}

/// How long the provider has to send the browser back.
pub const LOGIN_TTL_SECS: i32 = 600;

/// Records a sign-in that was sent to the provider (and forgets those nobody finished in time:
/// starting a sign-in needs no credentials, so the table must not grow with abandoned ones).
pub async fn login_begin(db: impl PgExecutor<'_>, state: &str, login: &PendingLogin) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH old AS (DELETE FROM oidc_logins WHERE created_at < now() - make_interval(secs => $5))
         INSERT INTO oidc_logins (state, pkce_verifier, nonce, next_path) VALUES ($1, $2, $3, $4)",
    )
    .bind(state)
    .bind(&login.pkce_verifier)
    .bind(&login.nonce)
    .bind(&login.next_path)
    .bind(f64::from(LOGIN_TTL_SECS))
    .execute(db)
    .await
    .map(drop)
}

/// Takes the sign-in `state` names (once: it is deleted), if it is not older than
/// [`LOGIN_TTL_SECS`]; old ones are deleted on the way.
pub async fn login_take(db: impl PgExecutor<'_>, state: &str) -> Result<Option<PendingLogin>, sqlx::Error> {
    sqlx::query_as(
        "WITH gone AS (DELETE FROM oidc_logins WHERE state = $1 OR created_at < now() - make_interval(secs => $2)
                       RETURNING state, pkce_verifier, nonce, next_path, created_at)
         SELECT pkce_verifier, nonce, next_path FROM gone
         WHERE state = $1 AND created_at >= now() - make_interval(secs => $2)",
    )
    .bind(state)
    .bind(f64::from(LOGIN_TTL_SECS))
    .fetch_optional(db)
    .await
}

/// A session found by its secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionLookup {
    pub id: Uuid,
    pub user_id: UserId,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
    pub is_operator: bool,
    /// Expired, revoked, or its user disabled.
    pub dead: bool,
}

/// A session to open.
#[derive(Debug)]
pub struct NewSession<'a> {
    pub id: Uuid,
    pub hash: &'a [u8; 32],
    pub user: UserId,
    pub csrf_token: &'a str,
    pub expires_at: DateTime<Utc>,
    /// The API token signed in with, if any: the session ends with it.
    pub token: Option<TokenId>,
}

/// Opens a session.
pub async fn session_create(db: impl PgExecutor<'_>, new: &NewSession<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, secret_hash, user_id, csrf_token, expires_at, token_id)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new.id)
    .bind(&new.hash[..])
    .bind(new.user)
    .bind(new.csrf_token)
    .bind(new.expires_at)
    .bind(new.token)
    .execute(db)
    .await
    .map(drop)
}

/// The session whose secret hashes to `hash` (the database's clock judges expiry).
pub async fn session_find(db: impl PgExecutor<'_>, hash: &[u8; 32]) -> Result<Option<SessionLookup>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.id, s.user_id, s.csrf_token, s.expires_at, u.is_operator,
                (s.expires_at <= now() OR s.revoked_at IS NOT NULL OR u.disabled_at IS NOT NULL
                 OR t.revoked_at IS NOT NULL OR coalesce(t.expires_at <= now(), false)) AS dead
         FROM sessions s JOIN users u ON u.id = s.user_id LEFT JOIN api_tokens t ON t.id = s.token_id
         WHERE s.secret_hash = $1",
    )
    .bind(&hash[..])
    .fetch_optional(db)
    .await
}

/// Ends a session (signing out); idempotent.
pub async fn session_revoke(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1")
        .bind(id)
        .execute(db)
        .await
        .map(drop)
}

/// A session's CSRF token and end, by id.
pub async fn session_csrf(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT csrf_token, expires_at FROM sessions WHERE id = $1").bind(id).fetch_optional(db).await
}
