//! The fleet as operators manage it: join tokens, hosts, draining, declaring a silent host dead,
//! and the fleet's liveness. Everything here is for operators, except [`join_info`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{App, AppError};
use crate::auth::Caller;
use crate::db::hosts::{self as db, DeclareDeadOutcome, DrainOutcome, HostRow};
use crate::db::liveness::{self, FleetLiveness};
use cloud_proto::join_token::JoinToken;

/// Longest join token lifetime an operator may ask for: one week.
const MAX_JOIN_TOKEN_TTL_SECS: u64 = 7 * 24 * 3600;

/// What a joining agent needs before it trusts the control plane.
#[derive(Debug, Serialize, ToSchema)]
pub struct JoinInfo {
    /// The fleet CA certificate (PEM); its SHA-256 must match the one in the join token.
    pub ca_certificate_pem: String,
    pub ca_sha256: String,
    /// Where agents call the control plane over gRPC (mutual TLS).
    pub grpc_url: String,
}

/// Parameters of a new join token.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenParams {
    /// Lifetime in seconds (default: the `fleet.join_token_ttl_secs` setting; at most a week).
    #[schema(minimum = 1, maximum = 604_800)]
    pub ttl_secs: Option<u64>,
}

/// A new join token; the secret is shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub struct JoinTokenCreated {
    pub id: Uuid,
    pub token: String,
    pub expires_at: DateTime<Utc>,
    /// Ready to run on the new host.
    pub command: String,
}

fn no_host(id: Uuid) -> AppError {
    AppError::NotFound(format!("no host {id}"))
}

/// The fleet CA and the gRPC URL. Nothing here is secret; the join token carries the CA hash,
/// so a joining host detects a control plane that is not the one it was told about.
pub fn join_info(app: &App) -> JoinInfo {
    JoinInfo {
        ca_certificate_pem: app.fleet.ca.cert_pem().to_owned(),
        ca_sha256: app.fleet.ca.cert_sha256().to_owned(),
        grpc_url: app.fleet.config.advertised_grpc_url(),
    }
}

/// Creates a single-use, expiring join token.
pub async fn join_token_create(
    app: &App,
    caller: &Caller,
    params: JoinTokenParams,
) -> Result<JoinTokenCreated, AppError> {
    caller.require_operator()?;
    let ttl = params.ttl_secs.unwrap_or(app.fleet.config.join_token_ttl_secs);
    if ttl == 0 || ttl > MAX_JOIN_TOKEN_TTL_SECS {
        return Err(AppError::Invalid(format!("ttl_secs must be between 1 and {MAX_JOIN_TOKEN_TTL_SECS}")));
    }
    let token = JoinToken::generate(app.fleet.ca.cert_sha256());
    let ttl = chrono::Duration::seconds(i64::try_from(ttl).map_err(AppError::internal)?);
    let expires_at = Utc::now() + ttl;
    let mut conn = app.pool.acquire().await?;
    let id = db::join_token_create(&mut conn, &token.secret_hash(), Some(caller.user_id.0), expires_at).await?;
    tracing::info!(token_id = %id, %expires_at, "join token created");
    Ok(JoinTokenCreated {
        id,
        command: format!("host-agent join --control-plane {} --token {token}", app.public_url),
        token: token.to_string(),
        expires_at,
    })
}

/// Every host of the fleet.
pub async fn list(app: &App, caller: &Caller) -> Result<Vec<HostRow>, AppError> {
    caller.require_operator()?;
    Ok(db::host_list(&mut *app.pool.acquire().await?).await?)
}

/// One host.
pub async fn get(app: &App, caller: &Caller, id: Uuid) -> Result<HostRow, AppError> {
    caller.require_operator()?;
    db::host_get(&mut *app.pool.acquire().await?, id).await?.ok_or_else(|| no_host(id))
}

/// Stops (or, `draining` false, resumes) placing new instances on a host; idempotent.
/// Instances already there keep running; the host stays draining across lease lapses until it
/// is undrained.
pub async fn set_draining(app: &App, caller: &Caller, id: Uuid, draining: bool) -> Result<HostRow, AppError> {
    caller.require_operator()?;
    match db::host_set_draining(&mut *app.pool.acquire().await?, id, draining).await? {
        DrainOutcome::Done(host) => {
            tracing::info!(host_id = %id, draining, state = %host.state, "host drain flag set");
            Ok(*host)
        }
        DrainOutcome::NotFound => Err(no_host(id)),
    }
}

/// Declares a silent host dead (idempotent): what an operator does when the fleet is degraded
/// (many hosts silent together, so none is declared dead automatically) and they know a host is
/// gone. Only a host whose lease ran out can be declared dead; its instances become `lost`.
pub async fn declare_dead(app: &App, caller: &Caller, id: Uuid) -> Result<HostRow, AppError> {
    caller.require_operator()?;
    match db::host_declare_dead(&mut *app.pool.acquire().await?, id).await? {
        DeclareDeadOutcome::Dead { host, lost_instances } => {
            tracing::warn!(host_id = %id, lost_instances, operator = %caller.user_id, "host declared dead by an operator");
            Ok(*host)
        }
        DeclareDeadOutcome::NotFound => Err(no_host(id)),
        DeclareDeadOutcome::Alive { lease_expires_at } => Err(AppError::Conflict(format!(
            "host {id} is not silent: it holds a lease until {}",
            lease_expires_at.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339())
        ))),
    }
}

/// The fleet's liveness: `degraded` while many hosts are silent together.
pub async fn fleet_liveness(app: &App, caller: &Caller) -> Result<FleetLiveness, AppError> {
    caller.require_operator()?;
    Ok(liveness::fleet_liveness(&mut *app.pool.acquire().await?).await?)
}
