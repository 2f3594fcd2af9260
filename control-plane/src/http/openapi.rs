//! `GET /v1/openapi.json`: the API's OpenAPI document, generated from the handlers (utoipa).

use axum::Json;

use utoipa::OpenApi;

/// The OpenAPI document of the whole API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "cloud control plane", description = "REST API of the cloud's control plane."),
    paths(super::health::healthz, super::health::metrics, document),
    components(schemas(super::error::ErrorBody, super::error::ErrorDetail, super::health::Health)),
    tags((name = "service", description = "Health, metrics and API description"))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "service",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    doc.info.version = crate::VERSION.to_owned();
    Json(doc)
}
