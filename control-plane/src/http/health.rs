//! `GET /healthz` (is the database answering?) and `GET /metrics` (Prometheus text format).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorChain};
use crate::app::App;

const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when every dependency answered.
    pub status: String,
    pub version: String,
}

/// Health of the service: 200 when the database answers within 2 s, 503 otherwise.
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, body = Health), (status = 503, body = super::error::ErrorBody)))]
pub async fn healthz(State(app): State<Arc<App>>) -> Result<Json<Health>, ApiError> {
    match tokio::time::timeout(DB_CHECK_TIMEOUT, crate::db::ping(&app.pool)).await {
        Ok(Ok(())) => Ok(Json(Health { status: "ok".to_owned(), version: crate::VERSION.to_owned() })),
        Ok(Err(err)) => {
            tracing::warn!(error = %ErrorChain(&err), "health check: database error");
            Err(ApiError::unavailable("the database is not answering"))
        }
        Err(_) => Err(ApiError::unavailable("the database did not answer within 2 s")),
    }
}

/// Metrics in the OpenMetrics text format (which Prometheus scrapes).
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(app): State<Arc<App>>) -> Result<impl IntoResponse, ApiError> {
    if let Err(e) = app.metrics.read_states(&app.pool).await {
        // The rest of the metrics say more than nothing, the database's trouble included.
        tracing::warn!(error = %crate::error_chain::ErrorChain(&e), "cannot count instances and hosts by state");
    }
    let text = app.metrics.encode(&app.pool).map_err(|e| ApiError::internal(&e))?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text))
}
