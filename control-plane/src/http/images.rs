//! `/v1/projects/{project}/images`: the base images instances boot from.
//!
//! ```text
//! GET    /v1/projects/{project}/images           the project's and the public images (viewer)
//! POST   /v1/projects/{project}/images           register from files on the control plane host
//!                                                (operators who are members of the project)
//! GET    /v1/projects/{project}/images/{image}   one, by name or id (viewer)
//! DELETE /v1/projects/{project}/images/{image}   204; 404 when absent; 409 while an instance
//!                                                uses it; public images: operators only
//! ```
//! The logic, and why registration is for operators: [`crate::app::images`].

use std::sync::Arc;

use axum::Router;
use axum::extract::State;

use super::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;

use super::error::{ApiError, ErrorBody};
use super::json::Json;
use super::pagination::{Page, PageParams, PageRequest};
use crate::app::App;
use crate::app::images::{self as app, ImageRegisterParams, ImageView};
use crate::auth::Caller;

/// The routes of this module, for the API router to merge.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/projects/{project}/images", get(image_list).post(image_register))
        .route("/v1/projects/{project}/images/{image}", get(image_get).delete(image_delete))
}

/// A page of images.
pub type ImageList = Page<ImageView>;

/// The images the project can boot from: its own and the public ones, oldest first.
#[utoipa::path(get, path = "/v1/projects/{project}/images", tag = "images", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"), PageParams),
    responses((status = 200, body = Page<ImageView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn image_list(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
    page: PageRequest,
) -> Result<Json<ImageList>, ApiError> {
    let rows = app::list(&app, &caller, &project, page.window()).await?;
    Ok(Json(Page::from_rows(rows, &page, |i| (i.created_at, i.id.0))))
}

/// Registers an image from files on the control plane host, copied into the blob store
/// (operators who are members of the project; `public` images belong to no project).
#[utoipa::path(post, path = "/v1/projects/{project}/images", tag = "images", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id")),
    request_body = ImageRegisterParams,
    responses((status = 201, body = ImageView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn image_register(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(project): Path<String>,
    Json(params): Json<ImageRegisterParams>,
) -> Result<(StatusCode, Json<ImageView>), ApiError> {
    Ok((StatusCode::CREATED, Json(app::register(&app, &caller, &project, params).await?)))
}

/// One image the project sees, by name or id (its own first, then a public one).
#[utoipa::path(get, path = "/v1/projects/{project}/images/{image}", tag = "images", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"),
        ("image" = String, Path, description = "The image's name or id")),
    responses((status = 200, body = ImageView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn image_get(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, image)): Path<(String, String)>,
) -> Result<Json<ImageView>, ApiError> {
    Ok(Json(app::get(&app, &caller, &project, &image).await?))
}

/// Deletes an image: the project's own (members) or a public one (operators). 404 when there
/// is none (a retry after a success is a 404 too); 409 while an instance uses it. Its blobs
/// stay in the store.
#[utoipa::path(delete, path = "/v1/projects/{project}/images/{image}", tag = "images", security(("bearer" = [])),
    params(("project" = String, Path, description = "The project's name or id"),
        ("image" = String, Path, description = "The image's name or id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn image_delete(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, image)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    app::delete(&app, &caller, &project, &image).await?;
    Ok(StatusCode::NO_CONTENT)
}
