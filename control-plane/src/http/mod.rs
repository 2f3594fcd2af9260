//! The HTTP API: router, middleware (request ids, metrics, tracing) and one module per resource.

pub mod auth;
pub mod caller;
pub mod console;
pub mod error;
pub mod extract;
pub mod health;
pub mod hosts;
pub mod images;
pub mod instances;
pub mod json;
pub mod members;
pub mod openapi;
pub mod operations;
pub mod pagination;
pub mod projects;
pub mod session;
pub mod snapshots;
pub mod ssh_keys;
pub mod tls;
pub mod web;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::app::App;
use error::REQUEST_ID;

/// The request/response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Builds the whole API.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/fleet/join-info", get(hosts::join_info))
        .route("/v1/hosts", get(hosts::host_list))
        .route("/v1/hosts/join-tokens", post(hosts::join_token_create))
        .route("/v1/hosts/{id}", get(hosts::host_get))
        .route("/v1/hosts/{id}/drain", post(hosts::host_drain))
        .route("/v1/hosts/{id}/undrain", post(hosts::host_undrain))
        .route("/v1/hosts/{id}/declare-dead", post(hosts::host_declare_dead))
        .route("/v1/fleet/liveness", get(hosts::fleet_liveness))
        .merge(auth::routes())
        .merge(projects::routes())
        .merge(members::routes())
        .merge(session::routes())
        .merge(ssh_keys::routes())
        .merge(images::routes())
        .merge(instances::routes())
        .merge(snapshots::routes())
        .merge(operations::routes())
        .merge(console::routes())
        .fallback(web::fallback)
        .method_not_allowed_fallback(|| async { error::ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// Gives every request an id (the caller's `x-request-id` if it is sane, else a new UUID),
/// makes it available to error bodies and logs, echoes it in the response, and records metrics.
async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let span = tracing::info_span!("request", %method, path = %req.uri().path(), request_id = %request_id);
    // A caller's W3C trace context makes this request a span of its trace.
    cloud_common::telemetry::set_parent(&span, |name| {
        req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    });
    let mut response =
        REQUEST_ID.scope(request_id.clone(), tracing::Instrument::instrument(next.run(req), span.clone())).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    app.metrics.observe_request(method.as_str(), &route, status, elapsed);
    span.in_scope(|| tracing::debug!(status, elapsed_ms = elapsed.as_millis() as u64, "served"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}
