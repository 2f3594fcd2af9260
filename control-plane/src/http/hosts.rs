//! Fleet endpoints: join-info for joining agents, join tokens and hosts for operators.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ApiError;
use crate::app::App;
use crate::auth::Caller;
use crate::db::hosts::{self, DrainOutcome, HostRow};
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

/// Public: the fleet CA and the gRPC URL. Nothing here is secret; the join token carries the
/// CA hash, so a joining host detects a control plane that is not the one it was told about.
#[utoipa::path(get, path = "/v1/fleet/join-info", tag = "hosts", responses((status = 200, body = JoinInfo)))]
pub async fn join_info(State(app): State<Arc<App>>) -> Json<JoinInfo> {
    Json(JoinInfo {
        ca_certificate_pem: app.fleet.ca.cert_pem().to_owned(),
        ca_sha256: app.fleet.ca.cert_sha256().to_owned(),
        grpc_url: app.fleet.config.advertised_grpc_url(),
    })
}

/// Parameters of a new join token.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenParams {
    /// Lifetime in seconds (default: the `fleet.join_token_ttl_secs` setting; at most a week).
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

/// Creates a single-use, expiring join token (operators only).
#[utoipa::path(post, path = "/v1/hosts/join-tokens", tag = "hosts", request_body = JoinTokenParams,
    responses((status = 201, body = JoinTokenCreated), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn join_token_create(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Option<Json<JoinTokenParams>>,
) -> Result<(StatusCode, Json<JoinTokenCreated>), ApiError> {
    caller.require_operator()?;
    let params = body.map(|Json(p)| p).unwrap_or_default();
    let ttl = params.ttl_secs.unwrap_or(app.fleet.config.join_token_ttl_secs);
    if ttl == 0 || ttl > MAX_JOIN_TOKEN_TTL_SECS {
        return Err(ApiError::invalid(format!("ttl_secs must be between 1 and {MAX_JOIN_TOKEN_TTL_SECS}")));
    }
    let token = JoinToken::generate(app.fleet.ca.cert_sha256());
    let expires_at = Utc::now() + chrono::Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX));
    let mut conn = super::db_conn(&app).await?;
    let id = hosts::join_token_create(&mut conn, &token.secret_hash(), Some(caller.user_id.0), expires_at)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    tracing::info!(token_id = %id, %expires_at, "join token created");
    Ok((
        StatusCode::CREATED,
        Json(JoinTokenCreated {
            id,
            command: format!("host-agent join --control-plane {} --token {token}", app.public_url),
            token: token.to_string(),
            expires_at,
        }),
    ))
}

/// Every host of the fleet (operators only).
#[utoipa::path(get, path = "/v1/hosts", tag = "hosts",
    responses((status = 200, body = [HostRow]), (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn host_list(State(app): State<Arc<App>>, caller: Caller) -> Result<Json<Vec<HostRow>>, ApiError> {
    caller.require_operator()?;
    let mut conn = super::db_conn(&app).await?;
    Ok(Json(hosts::host_list(&mut conn).await.map_err(|e| ApiError::internal(&e))?))
}

/// One host (operators only).
#[utoipa::path(get, path = "/v1/hosts/{id}", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 200, body = HostRow), (status = 404, body = super::error::ErrorBody)))]
pub async fn host_get(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<HostRow>, ApiError> {
    caller.require_operator()?;
    let mut conn = super::db_conn(&app).await?;
    hosts::host_get(&mut conn, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no host {id}")))
}

/// Stops placing new instances on a host (operators only; idempotent). Instances already there
/// keep running; the host stays draining across lease lapses until it is undrained.
#[utoipa::path(post, path = "/v1/hosts/{id}/drain", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 200, body = HostRow), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn host_drain(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<HostRow>, ApiError> {
    set_draining(&app, &caller, id, true).await
}

/// Lets the scheduler place instances on a drained host again (operators only; idempotent).
#[utoipa::path(post, path = "/v1/hosts/{id}/undrain", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 200, body = HostRow), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn host_undrain(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<HostRow>, ApiError> {
    set_draining(&app, &caller, id, false).await
}

async fn set_draining(app: &App, caller: &Caller, id: Uuid, draining: bool) -> Result<Json<HostRow>, ApiError> {
    caller.require_operator()?;
    let mut conn = super::db_conn(app).await?;
    match hosts::host_set_draining(&mut conn, id, draining).await.map_err(|e| ApiError::internal(&e))? {
        DrainOutcome::Done(host) => {
            tracing::info!(host_id = %id, draining, state = %host.state, "host drain flag set");
            Ok(Json(*host))
        }
        DrainOutcome::NotFound => Err(ApiError::not_found(format!("no host {id}"))),
    }
}

/// Declares a silent host dead (operators only; idempotent): what an operator does when the
/// fleet is degraded (many hosts silent together, so none is declared dead automatically) and
/// they know a host is gone. Only a host whose lease ran out can be declared dead (409
/// otherwise); its instances become `lost`. A dead host that reports again is taken back.
#[utoipa::path(post, path = "/v1/hosts/{id}/declare-dead", tag = "hosts", params(("id" = Uuid, Path)),
    responses((status = 200, body = HostRow), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn host_declare_dead(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<HostRow>, ApiError> {
    caller.require_operator()?;
    let mut conn = super::db_conn(&app).await?;
    match hosts::host_declare_dead(&mut conn, id).await.map_err(|e| ApiError::internal(&e))? {
        hosts::DeclareDeadOutcome::Dead { host, lost_instances } => {
            tracing::warn!(host_id = %id, lost_instances, operator = %caller.user_id, "host declared dead by an operator");
            Ok(Json(*host))
        }
        hosts::DeclareDeadOutcome::NotFound => Err(ApiError::not_found(format!("no host {id}"))),
        hosts::DeclareDeadOutcome::Alive { lease_expires_at } => Err(ApiError::conflict(format!(
            "host {id} is not silent: it holds a lease until {}",
            lease_expires_at.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339())
        ))),
    }
}

/// The fleet's liveness (operators only): `degraded` while many hosts are silent together.
#[utoipa::path(get, path = "/v1/fleet/liveness", tag = "hosts",
    responses((status = 200, body = crate::db::liveness::FleetLiveness),
              (status = 403, body = super::error::ErrorBody)))]
pub async fn fleet_liveness(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<crate::db::liveness::FleetLiveness>, ApiError> {
    caller.require_operator()?;
    let mut conn = super::db_conn(&app).await?;
    Ok(Json(crate::db::liveness::fleet_liveness(&mut conn).await.map_err(|e| ApiError::internal(&e))?))
}
