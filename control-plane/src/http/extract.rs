//! Path and query extractors: axum's, with the API's one error body. axum's own rejections are
//! `text/plain`, which neither the OpenAPI document nor a client expects from this API.
//!
//! ```text
//!  a path segment of the wrong type (a host id that is not a UUID) ─▶ 400 invalid
//!  a query parameter that does not parse (`?limit=ten`) ───────────▶ 400 invalid
//!  a NUL character (`%00`) in the path or the query ─────────────────▶ 400 invalid
//!  an `Idempotency-Key` that is not 1 to 255 printable characters ──▶ 400 invalid
//!  a WebSocket route asked without the WebSocket handshake ─────────▶ 400 invalid
//! ```

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The path parameters of the route, deserialized into `T`; a rejection is 400 `invalid`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        refuse_nul("path", parts.uri.path())?;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::invalid(format!("path: {}", rejection.body_text()))),
        }
    }
}

/// The query string, deserialized into `T`; a rejection is 400 `invalid`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        refuse_nul("query", parts.uri.query().unwrap_or_default())?;
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::invalid(format!("query: {}", rejection.body_text()))),
        }
    }
}

/// 400 when the percent-encoded `text` holds a NUL character: no name, id or filter has one,
/// and PostgreSQL text cannot hold one.
fn refuse_nul(what: &str, text: &str) -> Result<(), ApiError> {
    if text.as_bytes().windows(3).any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0') {
        return Err(ApiError::invalid(format!("{what}: contains a NUL character (%00)")));
    }
    Ok(())
}

/// `Idempotency-Key` of a change: a retry with the same key gets the same operation.
#[derive(Debug, Clone, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// Retries with the same key return the same operation: 1 to 255 printable ASCII characters.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255, pattern = "^[!-~]([ -~]*[!-~])?$")]
    pub key: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else { return Ok(Self { key: None }) };
        let key = value.to_str().map_err(|_| ApiError::invalid("Idempotency-Key must be printable ASCII"))?;
        if key.is_empty() || key.len() > 255 {
            return Err(ApiError::invalid("Idempotency-Key must be 1 to 255 characters"));
        }
        Ok(Self { key: Some(key.to_owned()) })
    }
}

/// The WebSocket handshake of a console or tunnel route; a request without it is 400.
pub struct WebSocketUpgrade(pub axum::extract::ws::WebSocketUpgrade);

impl std::fmt::Debug for WebSocketUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebSocketUpgrade")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::ws::WebSocketUpgrade::from_request_parts(parts, state).await {
            Ok(upgrade) => Ok(Self(upgrade)),
            Err(rejection) => {
                let why = rejection.into_response().status();
                Err(ApiError::invalid(format!(
                    "this route is a WebSocket: open it with the WebSocket handshake ({why})"
                )))
            }
        }
    }
}

/// The request headers of the WebSocket handshake, for the routes that take one.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct WebSocketHandshake {
    #[param(rename = "Connection", pattern = "^[Uu]pgrade$")]
    connection: String,
    #[param(rename = "Upgrade", pattern = "^websocket$")]
    upgrade: String,
    #[param(rename = "Sec-WebSocket-Version", pattern = "^13$")]
    version: String,
    /// 16 random bytes, base64.
    #[param(rename = "Sec-WebSocket-Key", pattern = "^[A-Za-z0-9+/]{22}==$")]
    key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_refused_wherever_they_are_encoded() {
        assert!(refuse_nul("path", "/v1/projects/web").is_ok());
        assert!(refuse_nul("query", "limit=100&cursor=abc%20").is_ok());
        for bad in ["/v1/projects/a%00b", "%00", "state=%00running"] {
            let err = refuse_nul("path", bad).err().map(|e| (e.status, e.code));
            assert_eq!(err, Some((axum::http::StatusCode::BAD_REQUEST, "invalid")), "{bad}");
        }
    }
}
