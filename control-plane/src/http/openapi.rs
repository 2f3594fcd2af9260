//! `GET /v1/openapi.json`: the API's OpenAPI document, generated from the handlers (utoipa).

use axum::Json;

use utoipa::OpenApi;

use super::auth::BearerAuth;

/// The OpenAPI document of the whole API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "cloud control plane", description = "REST API of the cloud's control plane."),
    paths(
        super::health::healthz,
        super::health::metrics,
        document,
        super::hosts::join_info,
        super::hosts::join_token_create,
        super::hosts::host_list,
        super::hosts::host_get,
        super::auth::whoami,
        super::auth::token_create,
        super::auth::token_list,
        super::auth::token_revoke,
    ),
    modifiers(&BearerAuth),
    components(schemas(
        super::error::ErrorBody,
        super::error::ErrorDetail,
        super::health::Health,
        super::hosts::JoinInfo,
        super::hosts::JoinTokenParams,
        super::hosts::JoinTokenCreated,
        crate::db::hosts::HostRow,
        super::auth::WhoAmI,
        super::auth::UserView,
        super::auth::ProjectMembershipView,
        super::auth::TokenCreateParams,
        super::auth::TokenCreated,
        super::auth::TokenView,
        super::auth::TokenStatus,
        super::auth::TokenList,
        crate::auth::Role,
    )),
    tags(
        (name = "service", description = "Health, metrics and API description"),
        (name = "hosts", description = "The fleet: hosts and join tokens (operators)"),
        (name = "auth", description = "Who you are, and your API tokens")
    )
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
