//! The one error body of the API: `{"error": {"code", "message", "request_id"}}`.
//!
//! Details of server-side failures (5xx) go to the log under the request id, never into the
//! response.

use crate::app::AppError;
pub use crate::error_chain::ErrorChain;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

tokio::task_local! {
    /// The id of the request being served (set by the request-id middleware).
    pub static REQUEST_ID: String;
}

/// The current request's id, or `-` outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_else(|_| "-".to_owned())
}

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The JSON error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for machines (`code`) and people (`message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable error code, e.g. `not_found`.
    pub code: String,
    pub message: String,
    /// Quote this when reporting a problem; the server's logs carry it.
    pub request_id: String,
}

impl ApiError {
    /// 503: a dependency (the database, a host) cannot serve the request right now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, code: "unavailable", message: message.into() }
    }

    /// 503 `no_capacity`: no host can take the request now; `reasons` says what each filter removed.
    pub fn no_capacity(reasons: impl std::fmt::Display) -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, code: "no_capacity", message: reasons.to_string() }
    }

    /// 405 for a method a known path does not take.
    /// 429 `rate_limited`; the response needs `Retry-After` too ([`rate_limited`]).
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: format!(
                "too many requests from this token or session: retry in {retry_after_secs}s (see limits.requests_per_second)"
            ),
        }
    }

    /// 403 `quota_exceeded`: the request would take its project over a quota; the message names
    /// it, its limit and the usage.
    pub fn quota_exceeded(message: impl Into<String>) -> Self {
        Self { status: StatusCode::FORBIDDEN, code: "quota_exceeded", message: message.into() }
    }

    /// 429 `too_many_connections`: a console or tunnel over its cap (no time makes room; a
    /// connection closing does).
    pub fn too_many_connections(cap: crate::limits::ConnectionCap) -> Self {
        Self { status: StatusCode::TOO_MANY_REQUESTS, code: "too_many_connections", message: cap.to_string() }
    }

    pub fn method_not_allowed() -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            message: "this path does not take that method".to_owned(),
        }
    }

    /// 404 for any path the API does not know.
    pub fn route_not_found() -> Self {
        Self { status: StatusCode::NOT_FOUND, code: "not_found", message: "no such API route".to_owned() }
    }

    /// 500; `err` is logged with its whole chain and not shown to the caller. Unless the cause
    /// is the database being away (down, restarting, or a failover under way): then 503
    /// `unavailable`, which says retrying helps, as the API's document promises.
    pub fn internal(err: &(dyn std::error::Error + 'static)) -> Self {
        if crate::db::unavailable_in(err) {
            tracing::warn!(error = %ErrorChain(err), request_id = %current_request_id(), "the database is unavailable");
            return Self::unavailable("the database is unavailable for the moment; try again");
        }
        tracing::error!(error = %ErrorChain(err), request_id = %current_request_id(), "internal error");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error; the request id identifies it in the server's logs".to_owned(),
        }
    }
}

/// Each kind of application error has one status and code.
impl From<AppError> for ApiError {
    fn from(err: AppError) -> Self {
        match err {
            AppError::Invalid(m) => Self::invalid(m),
            AppError::Unprocessable(m) => Self::unprocessable(m),
            AppError::NotFound(m) => Self::not_found(m),
            AppError::Forbidden(m) => Self::forbidden(m),
            AppError::Conflict(m) => Self::conflict(m),
            AppError::TooLarge(m) => Self::too_large(m),
            AppError::QuotaExceeded(m) => Self::quota_exceeded(m),
            AppError::NoCapacity(m) => Self::no_capacity(m),
            AppError::Unavailable(m) => Self::unavailable(m),
            AppError::Internal(source) => Self::internal(&*source),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail { code: self.code.to_owned(), message: self.message, request_id: current_request_id() },
        };
        (self.status, Json(body)).into_response()
    }
}

/// The client errors (4xx) the handlers report.
impl ApiError {
    /// 400 `invalid`: the request is malformed or a field is out of range; say which field.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "invalid", message: message.into() }
    }

    /// 401 `unauthenticated`: no credentials, or ones that are not (or no longer) valid.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNAUTHORIZED, code: "unauthenticated", message: message.into() }
    }

    /// 403 `forbidden`: authenticated, but not allowed. Only where existence is no secret
    /// (the fleet, or a project the caller is a member of); elsewhere use `not_found`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self { status: StatusCode::FORBIDDEN, code: "forbidden", message: message.into() }
    }

    /// 404 `not_found`: no such resource, or one outside the caller's projects.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, code: "not_found", message: message.into() }
    }

    /// 409 `conflict`: a name is taken, or the resource's state does not allow the change.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self { status: StatusCode::CONFLICT, code: "conflict", message: message.into() }
    }
}

/// Client errors about request bodies and their fields (see [`super::json`]).
impl ApiError {
    /// 422 `unprocessable`: well-formed, but a field is unknown, of the wrong type, or has a
    /// value the API cannot accept; the message names the field.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, code: "unprocessable", message: message.into() }
    }

    /// 413 `too_large`: the request body is over the endpoint's limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self { status: StatusCode::PAYLOAD_TOO_LARGE, code: "too_large", message: message.into() }
    }
}

/// The answer to a caller over its rate: 429 with `Retry-After` (whole seconds, at least 1).
pub fn rate_limited(wait: std::time::Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let retry_after = [(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs))];
    (retry_after, ApiError::too_many_requests(secs)).into_response()
}
