//! The [`Caller`] extractor, and how authentication and authorization failures are answered:
//! the HTTP side of `auth` (which decides; this module only speaks HTTP).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::app::App;
use crate::auth::{AuthenticationError, AuthzError, Caller, authenticate_request};
use crate::error_chain::ErrorChain;
use crate::limits::CallerKey;

/// The API's answer to a failed authentication: 401 `unauthenticated` naming what is wrong as
/// far as that is safe to say, or 500 (logged) when the database failed.
impl From<&AuthenticationError> for ApiError {
    fn from(err: &AuthenticationError) -> Self {
        match err {
            AuthenticationError::Missing => {
                ApiError::unauthenticated("missing bearer token: send `Authorization: Bearer <token>`")
            }
            AuthenticationError::Malformed(_) => ApiError::unauthenticated(format!(
                "malformed bearer token: expected `Authorization: Bearer {}…`",
                crate::auth::TOKEN_PREFIX
            )),
            AuthenticationError::Expired { .. } => ApiError::unauthenticated("token expired"),
            AuthenticationError::SessionEnded => ApiError::unauthenticated("your session ended: sign in again"),
            AuthenticationError::Csrf => ApiError::forbidden(
                "a change made with a console session needs its CSRF token in X-CSRF-Token (GET /v1/auth/session)",
            ),
            AuthenticationError::Unknown
            | AuthenticationError::Revoked { .. }
            | AuthenticationError::UserDisabled { .. } => ApiError::unauthenticated("invalid or expired token"),
            AuthenticationError::LimitedToken | AuthenticationError::CrossOrigin => {
                ApiError::forbidden(err.to_string())
            }
            AuthenticationError::Store(err) => ApiError::internal(err),
            AuthenticationError::Session(err) => ApiError::internal(err),
        }
    }
}

/// As the application layer reports it ([`crate::app::AppError`]).
impl From<AuthzError> for ApiError {
    fn from(err: AuthzError) -> Self {
        crate::app::AppError::from(err).into()
    }
}

/// Extracts the caller from `State<Arc<App>>`'s pool. The rejection is the API's error body,
/// with `WWW-Authenticate: Bearer` on 401 (RFC 6750). The caller is cached in the request's
/// extensions, so extracting it twice costs one lookup.
impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(*caller);
        }
        match authenticate_request(&app.pool, &parts.method, &parts.headers).await {
            Ok(caller) => {
                if let Some(Err(wait)) = limit_key(&caller).map(|key| app.rate_limiter.admit(key)) {
                    app.metrics.rate_limited();
                    return Err(super::error::rate_limited(wait));
                }
                parts.extensions.insert(caller);
                Ok(caller)
            }
            Err(err @ (AuthenticationError::Store(_) | AuthenticationError::Session(_))) => {
                Err(ApiError::from(&err).into_response())
            }
            Err(err) => {
                tracing::debug!(reason = %ErrorChain(&err), "request not authenticated");
                let challenge = [(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"cloud\""))];
                Err((challenge, ApiError::from(&err)).into_response())
            }
        }
    }
}

/// Whose limits a caller's requests count against: its API token's, or its console session's.
pub fn limit_key(caller: &Caller) -> Option<CallerKey> {
    match (caller.token_id, caller.session_id) {
        (Some(token), _) => Some(CallerKey::Token(token.0)),
        (None, Some(session)) => Some(CallerKey::Session(session)),
        (None, None) => None,
    }
}
