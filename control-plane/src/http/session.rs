//! Console sign-in through the identity provider, and the session it opens (the logic:
//! [`crate::auth::oidc`]).
//!
//! ```text
//! GET    /auth/login?next=/path  303 to the provider (404 when no provider is configured)
//! GET    /auth/callback          the provider sends the browser back: Set-Cookie, 303 to next
//! POST   /v1/auth/session        signs in with an API token instead (no provider needed)
//! GET    /v1/auth/session        the session's user, CSRF token and end (cookie only)
//! DELETE /v1/auth/session        ends the session (with its X-CSRF-Token), clears the cookie
//! GET  /v1/auth/oidc            the provider and cloudctl's client id there (public)
//! POST /v1/auth/oidc/token      cloudctl's fresh ID token (device code) for an API token
//! ```
//! The cookie is `HttpOnly` (scripts never see it), `SameSite=Lax` (a page of another site
//! cannot make a browser send it with a change) and `Secure` when the API is served over HTTPS.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;

use super::extract::Query;
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
use crate::auth::oidc::{OidcError, set_session_cookie};
use crate::error_chain::ErrorChain;
use crate::ids::UserId;

/// The routes of this module, for the API router to merge.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/v1/auth/session", get(session).post(session_create).delete(session_delete))
        .route("/v1/auth/oidc", get(oidc_info))
        .route("/v1/auth/oidc/token", post(oidc_token))
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
    let cookie = session_cookie_header(&app, signed_in.session.secret.expose(), signed_in.session.max_age_secs())?;
    let location = HeaderValue::from_str(&signed_in.next_path).map_err(|e| ApiError::internal(&e))?;
    Ok((StatusCode::SEE_OTHER, [(SET_COOKIE, cookie), (LOCATION, location)]).into_response())
}

/// The `Set-Cookie` header carrying a session's secret (an empty one and 0 clear it).
fn session_cookie_header(app: &App, value: &str, max_age_secs: i64) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&set_session_cookie(value, max_age_secs, app.secure_cookies))
        .map_err(|e| ApiError::internal(&e))
}

/// Signing in to the console with an API token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionCreateParams {
    /// An API token (`cloud_…`) not limited to a project, e.g. the administrator's token file.
    pub token: String,
}

/// Signs in to the console with an API token (the quickstart has no identity provider): opens a
/// session lasting `oidc.session_hours`, or until the token ends if sooner, and ending when the
/// token is revoked.
#[utoipa::path(post, path = "/v1/auth/session", tag = "auth", request_body = SessionCreateParams,
    responses((status = 200, body = SessionView, description = "Signed in: the session cookie is set"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn session_create(
    State(app): State<Arc<App>>,
    Json(params): Json<SessionCreateParams>,
) -> Result<Response, ApiError> {
    let secret = crate::auth::TokenSecret::parse(params.token.trim())
        .map_err(|e| ApiError::unauthenticated(format!("that is not an API token: {e}")))?;
    let (user_id, opened) = crate::auth::session_open_with_token(&app.pool, &secret, app.session_lifetime)
        .await
        .map_err(|e| ApiError::from(&e))?;
    tracing::info!(user = %user_id, "signed in to the console with an API token");
    let cookie = session_cookie_header(&app, opened.secret.expose(), opened.max_age_secs())?;
    let view = SessionView { user_id, csrf_token: opened.csrf_token, expires_at: opened.expires_at };
    Ok(([(SET_COOKIE, cookie)], axum::Json(view)).into_response())
}

/// Ends the caller's session and clears its cookie (a change: it needs the CSRF token).
#[utoipa::path(delete, path = "/v1/auth/session", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "Signed out: the session cookie is cleared"),
        (status = 404, body = ErrorBody, description = "The request came with an API token, not a session")))]
pub async fn session_delete(State(app): State<Arc<App>>, caller: Caller) -> Result<Response, ApiError> {
    let Some(session) = caller.session_id else {
        return Err(ApiError::not_found("no session: this request came with an API token (revoke the token instead)"));
    };
    crate::db::sessions::session_revoke(&app.pool, session).await.map_err(|e| ApiError::internal(&e))?;
    tracing::info!(user = %caller.user_id, "signed out");
    let mut headers = HeaderMap::new();
    headers.insert(SET_COOKIE, session_cookie_header(&app, "", 0)?);
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
#[utoipa::path(get, path = "/v1/auth/session", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = SessionView),
        (status = 404, body = ErrorBody, description = "The request came with an API token, not a session")))]
pub async fn session(State(app): State<Arc<App>>, caller: Caller) -> Result<Json<SessionView>, ApiError> {
    let Some(id) = caller.session_id else {
        return Err(ApiError::not_found("no session: this request came with an API token"));
    };
    let (csrf_token, expires_at) = crate::db::sessions::session_csrf(&app.pool, id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::unauthenticated("your session ended: sign in again"))?;
    Ok(Json(SessionView { user_id: caller.user_id, csrf_token, expires_at }))
}

/// Where cloudctl signs in.
#[derive(Debug, Serialize, ToSchema)]
pub struct OidcInfo {
    /// The provider's issuer URL.
    pub issuer: String,
    /// cloudctl's client id there (a public client: device code).
    pub client_id: String,
    pub scopes: Vec<String>,
}

/// The identity provider cloudctl signs in with (404 when none is configured).
#[utoipa::path(get, path = "/v1/auth/oidc", tag = "auth",
    responses((status = 200, body = OidcInfo), (status = 404, body = ErrorBody)))]
pub async fn oidc_info(State(app): State<Arc<App>>) -> Result<Json<OidcInfo>, ApiError> {
    let oidc = app.oidc.as_ref().ok_or(OidcError::NotConfigured)?;
    let (issuer, client_id) = oidc.cli_info();
    let scopes = ["openid", "email", "profile"].map(str::to_owned).to_vec();
    Ok(Json(OidcInfo { issuer, client_id, scopes }))
}

/// What cloudctl got from the provider.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcTokenParams {
    /// The ID token the provider issued to cloudctl's client, at most 10 minutes ago.
    pub id_token: String,
    /// Its access token (the provider's userinfo may hold the e-mail address).
    pub access_token: String,
}

/// Trades cloudctl's fresh ID token for an API token of its user (made or matched as at a
/// console sign-in), lasting `oidc.session_hours`.
#[utoipa::path(post, path = "/v1/auth/oidc/token", tag = "auth", request_body = OidcTokenParams,
    responses((status = 201, body = super::auth::TokenCreated), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn oidc_token(
    State(app): State<Arc<App>>,
    Json(params): Json<OidcTokenParams>,
) -> Result<(StatusCode, Json<super::auth::TokenCreated>), ApiError> {
    let oidc = app.oidc.as_ref().ok_or(OidcError::NotConfigured)?;
    let (user, lifetime) = oidc.cli_sign_in(&app.pool, &params.id_token, &params.access_token).await?;
    let name = format!("cloudctl-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let issued = crate::auth::token_issue(&app.pool, user.id, &name, Some(lifetime), None, None).await?;
    tracing::info!(user_id = %user.id, token_id = %issued.token.id, "API token issued to cloudctl after sign-in");
    let secret = issued.secret.expose().to_owned();
    Ok((StatusCode::CREATED, Json(super::auth::TokenCreated { token: issued.token.into(), secret })))
}
