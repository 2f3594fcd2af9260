//! Fleet endpoints: join-info for joining agents, join tokens and hosts for operators. The
//! logic is [`crate::app::hosts`].

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::extract::Path;
use axum::http::StatusCode;
use uuid::Uuid;

use super::error::ApiError;
use crate::app::App;
use crate::app::hosts::{self as app, JoinInfo, JoinTokenCreated, JoinTokenParams};
use crate::auth::Caller;
use crate::db::hosts::HostRow;
use crate::db::liveness::FleetLiveness;

/// Public: the fleet CA and the gRPC URL. Nothing here is secret; the join token carries the
/// CA hash, so a joining host detects a control plane that is not the one it was told about.
#[utoipa::path(get, path = "/v1/fleet/join-info", tag = "hosts", responses((status = 200, body = JoinInfo)))]
pub async fn join_info(State(app): State<Arc<App>>) -> Json<JoinInfo> {
    Json(app::join_info(&app))
}

/// Creates a single-use, expiring join token (operators only); `{}` takes the default lifetime.
#[utoipa::path(post, path = "/v1/hosts/join-tokens", tag = "hosts", security(("bearer" = [])), request_body = JoinTokenParams,
    responses((status = 201, body = JoinTokenCreated), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn join_token_create(
    State(app): State<Arc<App>>,
    caller: Caller,
    super::json::Json(params): super::json::Json<JoinTokenParams>,
) -> Result<(StatusCode, Json<JoinTokenCreated>), ApiError> {
    Ok((StatusCode::CREATED, Json(app::join_token_create(&app, &caller, params).await?)))
}

/// Every host of the fleet (operators only).
#[utoipa::path(get, path = "/v1/hosts", tag = "hosts", security(("bearer" = [])),
    responses((status = 200, body = [HostRow]), (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn host_list(State(app): State<Arc<App>>, caller: Caller) -> Result<Json<Vec<HostRow>>, ApiError> {
    Ok(Json(app::list(&app, &caller).await?))
}

/// One host (operators only).
#[utoipa::path(get, path = "/v1/hosts/{id}", tag = "hosts", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = HostRow), (status = 404, body = super::error::ErrorBody)))]
pub async fn host_get(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<HostRow>, ApiError> {
    Ok(Json(app::get(&app, &caller, id).await?))
}

/// Stops placing new instances on a host (operators only; idempotent). Instances already there
/// keep running; the host stays draining across lease lapses until it is undrained.
#[utoipa::path(post, path = "/v1/hosts/{id}/drain", tag = "hosts", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = HostRow), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn host_drain(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<HostRow>, ApiError> {
    Ok(Json(app::set_draining(&app, &caller, id, true).await?))
}

/// Lets the scheduler place instances on a drained host again (operators only; idempotent).
#[utoipa::path(post, path = "/v1/hosts/{id}/undrain", tag = "hosts", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = HostRow), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn host_undrain(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<HostRow>, ApiError> {
    Ok(Json(app::set_draining(&app, &caller, id, false).await?))
}

/// Declares a silent host dead (operators only; idempotent): what an operator does when the
/// fleet is degraded (many hosts silent together, so none is declared dead automatically) and
/// they know a host is gone. Only a host whose lease ran out can be declared dead (409
/// otherwise); its instances become `lost`. A dead host that reports again is taken back.
#[utoipa::path(post, path = "/v1/hosts/{id}/declare-dead", tag = "hosts", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = HostRow), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn host_declare_dead(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<HostRow>, ApiError> {
    Ok(Json(app::declare_dead(&app, &caller, id).await?))
}

/// The fleet's liveness (operators only): `degraded` while many hosts are silent together.
#[utoipa::path(get, path = "/v1/fleet/liveness", tag = "hosts", security(("bearer" = [])),
    responses((status = 200, body = FleetLiveness),
              (status = 403, body = super::error::ErrorBody)))]
pub async fn fleet_liveness(State(app): State<Arc<App>>, caller: Caller) -> Result<Json<FleetLiveness>, ApiError> {
    Ok(Json(app::fleet_liveness(&app, &caller).await?))
}
