//! The first start: an operator, a project and a token to begin with.
//!
//! On a database without users, [`bootstrap`] creates, in one transaction:
//! - the user `admin`, an operator;
//! - the project `default`, with `admin` as its admin;
//! - the API token `bootstrap` of `admin`, without expiry, whose secret goes to
//!   `<data_dir>/admin-token` (mode 0600, one line).
//!
//! Later starts find users and change nothing: the token is never rotated behind the
//! operator's back. If the file was deleted, no new token appears by itself either; a warning
//! says how to get one: create one with a token you still have (`POST /v1/auth/tokens`), or,
//! on a machine with access to the database, run `control-plane issue-admin-token`, which
//! calls [`issue_admin_token_unchecked`] and writes a fresh token to the same file.
//!
//! Several replicas starting together on an empty database create one admin: the insert of
//! `admin` happens only `WHERE NOT EXISTS (SELECT 1 FROM users)` and `ON CONFLICT (name) DO
//! NOTHING`, so a second transaction waits on the first one's uncommitted row and then inserts
//! nothing (no advisory locks). Only the replica that created the admin writes the file, in its
//! own data directory.
//!
//! The file is written before the transaction commits: a temporary file created with mode 0600
//! (never readable by others, not even briefly), synced, then renamed over `admin-token`. A
//! crash before the commit leaves a file whose token is unknown, and the next start (still no
//! users) bootstraps again and replaces it; a crash after the commit leaves a valid file. The
//! opposite order could commit a token nobody ever sees.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use sqlx::PgPool;

use super::{AuthError, Role, TokenSecret, token_issue};
use crate::db::identity;
use crate::ids::{ProjectId, TokenId, UserId};

/// The file in the data directory holding the bootstrap token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The operator created at the first start.
pub const BOOTSTRAP_USER: &str = "admin";
/// The project created at the first start.
pub const BOOTSTRAP_PROJECT: &str = "default";
/// The name of the first token.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap";

/// What [`bootstrap`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// This start created the admin, the project and the token in `token_file`.
    Created { user_id: UserId, project_id: ProjectId, token_id: TokenId, token_file: PathBuf },
    /// Users existed already; nothing was changed.
    AlreadyBootstrapped {
        token_file: PathBuf,
        /// Whether `token_file` exists (a warning was logged when it does not).
        token_file_present: bool,
    },
}

/// Creates the first operator, project and token on a database without users, writing the
/// token to `<data_dir>/admin-token`; does nothing on later starts. Safe to run from several
/// replicas at once.
pub async fn bootstrap(pool: &PgPool, data_dir: &Path) -> Result<BootstrapOutcome, AuthError> {
    let token_file = data_dir.join(ADMIN_TOKEN_FILE);
    if let Ok(Some(mode)) = cloud_common::fs::open_to_others(&token_file) {
        return Err(AuthError::TokenFileNotPrivate { path: token_file, mode });
    }
    if identity::user_any_exists(pool).await? {
        return Ok(already_bootstrapped(token_file).await);
    }
    let mut tx = pool.begin().await.map_err(AuthError::Transaction)?;
    let Some(admin) = identity::user_create_if_none_exist(&mut *tx, UserId::new(), BOOTSTRAP_USER, true).await? else {
        // Another replica bootstrapped in the meantime.
        return Ok(already_bootstrapped(token_file).await);
    };
    let project = identity::project_create(
        &mut *tx,
        ProjectId::new(),
        BOOTSTRAP_PROJECT,
        "Created at the first start of the control plane.",
    )
    .await?;
    identity::project_member_add(&mut *tx, project.id, admin.id, Role::Admin).await?;
    let issued = token_issue(&mut *tx, admin.id, BOOTSTRAP_TOKEN_NAME, None, None, None).await?;
    write_token_file(data_dir, &issued.secret).await?;
    tx.commit().await.map_err(AuthError::Transaction)?;
    tracing::info!(
        user = BOOTSTRAP_USER,
        project = BOOTSTRAP_PROJECT,
        token_file = %token_file.display(),
        "first start: created the admin operator and its API token",
    );
    Ok(BootstrapOutcome::Created { user_id: admin.id, project_id: project.id, token_id: issued.token.id, token_file })
}

/// Issues a new token for the bootstrap `admin` and writes it to `<data_dir>/admin-token`,
/// replacing the file: the way back in for an operator who lost every token. It skips all
/// authorization (whoever runs it can reach the database), so only an operator command may
/// call it.
pub async fn issue_admin_token_unchecked(pool: &PgPool, data_dir: &Path) -> Result<PathBuf, AuthError> {
    let admin = identity::user_get_by_name(pool, BOOTSTRAP_USER).await?.ok_or(AuthError::NoBootstrapAdmin)?;
    let name = format!("recovery-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S"));
    let mut tx = pool.begin().await.map_err(AuthError::Transaction)?;
    let issued = token_issue(&mut *tx, admin.id, &name, None, None, None).await?;
    let path = write_token_file(data_dir, &issued.secret).await?;
    tx.commit().await.map_err(AuthError::Transaction)?;
    tracing::warn!(token = %name, token_file = %path.display(), "issued a new admin token");
    Ok(path)
}

async fn already_bootstrapped(token_file: PathBuf) -> BootstrapOutcome {
    let token_file_present = tokio::fs::try_exists(&token_file).await.unwrap_or(false);
    if !token_file_present {
        tracing::warn!(
            token_file = %token_file.display(),
            "the admin token file does not exist (deleted, or the first start ran on another machine); \
             no new token is created. Create one with a token you have (POST /v1/auth/tokens), or run \
             `control-plane issue-admin-token` where the database is reachable",
        );
    }
    BootstrapOutcome::AlreadyBootstrapped { token_file, token_file_present }
}

/// Writes `secret` to `<dir>/admin-token` atomically with mode 0600 (see the module docs).
async fn write_token_file(dir: &Path, secret: &TokenSecret) -> Result<PathBuf, AuthError> {
    let dir = dir.to_path_buf();
    let contents = format!("{}\n", secret.expose());
    tokio::task::spawn_blocking(move || {
        let path = dir.join(ADMIN_TOKEN_FILE);
        write_private_file(&dir, &path, contents.as_bytes())
            .map_err(|source| AuthError::TokenFile { path: path.clone(), source })?;
        Ok(path)
    })
    .await
    .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

fn write_private_file(dir: &Path, path: &Path, contents: &[u8]) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    cloud_common::fs::write_atomic(path, contents, 0o600)
}
