//! Console sign-in through the identity provider, and the session it opens (the logic:
//! [`crate::auth::oidc`]).
//!
//! ```text
//! GET  /auth/login?next=/path   303 to the provider (404 when no provider is configured)
//! GET  /auth/callback           the provider sends the browser back: Set-Cookie, 303 to next
//! POST /auth/logout             ends the session (with its X-CSRF-Token), clears the cookie
//! GET  /v1/auth/session         the session's user, CSRF token and end (cookie only)
//! ```
//! The cookie is `HttpOnly` (scripts never see it), `SameSite=Lax` (a page of another site
//! cannot make a browser send it with a change) and `Secure` when the API is served over HTTPS.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::json::Json;
use crate::app::App;
use crate::auth::Caller;
use crate::auth::oidc::{OidcError, SESSION_COOKIE};
use crate::error_chain::ErrorChain;
use crate::ids::UserId;

/// The routes of this module, for the API router to merge.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout))
        .route("/v1/auth/session", get(session))
}

impl From<OidcError> for ApiError {
    fn from(err: OidcError) -> Self {
        match &err {
            OidcError::NotConfigured => ApiError::not_found(err.to_string()),
            OidcError::UnknownLogin | OidcError::Refused(_) | OidcError::BadToken(_) => {
                tracing::warn!(error = %ErrorChain(&err), "sign-in refused");
                ApiError::unauthenticated(err.to_string())
            }
            OidcError::Provider(_) => {
                tracing::warn!(error = %ErrorChain(&err), "the identity provider failed");
                ApiError::unavailable(err.to_string())
            }
            OidcError::Config(_) | OidcError::Identity(_) | OidcError::Db(_) => ApiError::internal(&err),
        }
    }
}

/// Where to go once signed in.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    /// A path of the console (anything else is `/`).
    pub next: Option<String>,
}

/// Sends the browser to the identity provider.
pub async fn login(State(app): State<Arc<App>>, Query(q): Query<LoginQuery>) -> Result<Response, ApiError> {
    let oidc = app.oidc.as_ref().ok_or(OidcError::NotConfigured)?;
    let url = oidc.begin(&app.pool, q.next.as_deref().unwrap_or("/")).await?;
    let location = HeaderValue::from_str(&url).map_err(|e| ApiError::internal(&e))?;
    Ok((StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response())
}

/// What the provider sends back.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// RFC 9207: the issuer that answered (checked by the ID token instead).
    #[allow(dead_code)]
    pub iss: Option<String>,
}

/// Finishes the sign-in: the session cookie, then the page the sign-in started from.
pub async fn callback(State(app): State<Arc<App>>, Query(q): Query<CallbackQuery>) -> Result<Response, ApiError> {
    let oidc = app.oidc.as_ref().ok_or(OidcError::NotConfigured)?;
    if let Some(error) = q.error {
        let detail = q.error_description.map(|d| format!(": {d}")).unwrap_or_default();
        return Err(OidcError::Refused(format!("{error}{detail}")).into());
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return Err(ApiError::invalid("the identity provider sent no code and state"));
    };
    let signed_in = oidc.finish(&app.pool, &code, &state).await?;
    let secure = if oidc.secure_cookies { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        signed_in.cookie_value, signed_in.max_age_secs
    );
    let headers = [
        (SET_COOKIE, HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal(&e))?),
        (LOCATION, HeaderValue::from_str(&signed_in.next_path).map_err(|e| ApiError::internal(&e))?),
    ];
    Ok((StatusCode::SEE_OTHER, headers).into_response())
}

/// Ends the caller's session and clears its cookie (a change: it needs the CSRF token).
pub async fn logout(State(app): State<Arc<App>>, caller: Caller) -> Result<Response, ApiError> {
    let Some(session) = caller.session_id else {
        return Err(ApiError::invalid("this request came with an API token, not a session: revoke the token instead"));
    };
    crate::db::sessions::session_revoke(&app.pool, session).await.map_err(|e| ApiError::internal(&e))?;
    tracing::info!(user = %caller.user_id, "signed out");
    let secure = app.oidc.as_ref().is_some_and(|o| o.secure_cookies);
    let cookie =
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}", if secure { "; Secure" } else { "" });
    let mut headers = HeaderMap::new();
    headers.insert(SET_COOKIE, HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal(&e))?);
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

/// The caller's console session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub user_id: UserId,
    /// Send it back in `X-CSRF-Token` with every change made with this session.
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// The session the request came with: its CSRF token, for the console's changes.
#[utoipa::path(get, path = "/v1/auth/session", tag = "auth",
    responses((status = 200, body = SessionView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn session(State(app): State<Arc<App>>, caller: Caller) -> Result<Json<SessionView>, ApiError> {
    let Some(id) = caller.session_id else {
        return Err(ApiError::invalid("this request came with an API token, not a session"));
    };
    let (csrf_token, expires_at) = crate::db::sessions::session_csrf(&app.pool, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::unauthenticated("your session ended: sign in again"))?;
    Ok(Json(SessionView { user_id: caller.user_id, csrf_token, expires_at }))
}
