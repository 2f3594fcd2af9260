//! JSON request bodies: the [`Json`] extractor every handler uses instead of axum's, so a bad
//! body gets the API's one error body. (The checks of fields are the app's: `app::validate`.)
//!
//! ```text
//!  Content-Type not application/json (or */*+json) ─────▶ 400 invalid
//!  Content-Length or the bytes read > LIMIT (1 MiB) ────▶ 413 too_large
//!  not JSON, truncated, trailing garbage ───────────────▶ 400 invalid
//!  unknown field, missing field, wrong type ────────────▶ 422 unprocessable, naming the field
//! ```
//! A number with no fractional part is an integer, whatever its spelling (`7`, `7.0`, `7e0`), as
//! JSON Schema says: the document's `"type": "integer"` fields take all three.
//! The field is named by its path in the document (`name: invalid type: integer ...`,
//! `disks[1].size: ...`), from `serde_path_to_error` through axum's deserializer; unknown and
//! missing fields are named by serde itself. Inputs use `#[serde(deny_unknown_fields)]`.
//!
//! The body is read by this extractor with its own limit rather than axum's
//! `DefaultBodyLimit` (2 MB), so the limit holds whatever layers the router has.

use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tokio_stream::StreamExt;

use super::error::ApiError;

/// The default body limit of [`Json`]: 1 MiB.
pub const DEFAULT_LIMIT: usize = 1024 * 1024;

/// A JSON request body of at most `LIMIT` bytes, deserialized into `T`; rejections are
/// [`ApiError`]s (see the module docs). Also a response: `Json(value)` serializes like axum's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T, const LIMIT: usize = DEFAULT_LIMIT>(pub T);

impl<T, S, const LIMIT: usize> FromRequest<S> for Json<T, LIMIT>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok())) {
            return Err(ApiError::invalid("the request body must be JSON (Content-Type: application/json)"));
        }
        let too_large = || ApiError::too_large(format!("the request body is larger than {LIMIT} bytes"));
        let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > LIMIT as u64) {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(declared.map_or(0, |len| len as usize));
        let mut stream = req.into_body().into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| ApiError::invalid("the request body could not be read"))?;
            if body.len() + chunk.len() > LIMIT {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        parse(&body).map(Self)
    }
}

impl<T: serde::Serialize, const LIMIT: usize> IntoResponse for Json<T, LIMIT> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Deserializes a JSON document, with the API's errors: 400 for bad JSON, 422 naming the field
/// for a document of the wrong shape or a string holding a NUL character (which no field takes:
/// PostgreSQL text cannot hold one).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|err| ApiError::invalid(format!("the request body is not valid JSON: {err}")))?;
    let mut path = String::new();
    normalize(&mut value, &mut path)
        .map_err(|at| ApiError::unprocessable(format!("invalid request body: {at}: contains a NUL character")))?;
    serde_path_to_error::deserialize(value)
        .map_err(|err| ApiError::unprocessable(format!("invalid request body: {err}")))
}

/// Spells integral floats (`7.0`) as integers (`7`) and refuses a NUL in any string or key,
/// returning the path to it (`disks[1].name`) in `Err`.
fn normalize(value: &mut serde_json::Value, path: &mut String) -> Result<(), String> {
    use serde_json::Value;
    let nul = |path: &str| if path.is_empty() { ".".to_owned() } else { path.to_owned() };
    match value {
        Value::Number(n) if n.is_f64() => {
            // Within ±2^53 a float is an exact integer; beyond, it stays a float (and whatever
            // range the field has refuses it).
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0) {
                *value = Value::from(f as i64);
            }
        }
        Value::String(s) if s.contains('\0') => return Err(nul(path)),
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                normalize(item, path)?;
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                if key.contains('\0') {
                    return Err(nul(path));
                }
                normalize(item, path)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// `application/json`, or any `application/*+json`, with or without parameters.
fn is_json(content_type: Option<&str>) -> bool {
    let Some(value) = content_type else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Params {
        name: String,
        #[serde(default)]
        tags: Vec<Tag>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Tag {
        key: String,
    }

    fn rejected(body: &str) -> ApiError {
        match parse::<Params>(body.as_bytes()) {
            Ok(p) => panic!("{body} parsed as {p:?}"),
            Err(err) => err,
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Sizes {
        vcpus: u32,
        priority: i64,
        ratio: f64,
        nested: Vec<u64>,
    }

    #[test]
    fn integral_floats_are_integers() {
        let sizes: Sizes = parse(br#"{"vcpus": 2.0, "priority": -3e0, "ratio": 1.0, "nested": [4.0, 5]}"#)
            .expect("integral floats parse");
        assert_eq!(sizes, Sizes { vcpus: 2, priority: -3, ratio: 1.0, nested: vec![4, 5] });
        let err =
            parse::<Sizes>(br#"{"vcpus": 2.5, "priority": 1, "ratio": 1, "nested": []}"#).expect_err("2.5 is no u32");
        assert_eq!((err.status, err.code), (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"), "{}", err.message);
        assert!(err.message.starts_with("invalid request body: vcpus: "), "{}", err.message);
    }

    #[test]
    fn a_nul_character_is_refused_naming_the_field() {
        let err = rejected(r#"{"name": "a", "tags": [{"key": "x\u0000y"}]}"#);
        assert_eq!((err.status, err.code), (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"), "{}", err.message);
        assert_eq!(err.message, "invalid request body: tags[0].key: contains a NUL character");
        // An escaped backslash before `u0000` is text, not a NUL.
        assert!(parse::<Params>(br#"{"name": "a\\u0000"}"#).is_ok());
    }

    #[test]
    fn bad_documents_are_400_and_bad_shapes_422_naming_the_field() {
        assert!(parse::<Params>(br#"{"name": "a"}"#).is_ok());
        for body in ["", "{", r#"{"name": "a"} x"#, "nope"] {
            let err = rejected(body);
            assert_eq!((err.status, err.code), (StatusCode::BAD_REQUEST, "invalid"), "{body}: {}", err.message);
        }
        for (body, field) in [
            (r#"{"name": 7}"#, "name: invalid type"),
            (r#"{"name": "a", "color": "red"}"#, "unknown field `color`"),
            (r#"{}"#, "missing field `name`"),
            (r#"{"name": "a", "tags": [{"key": 1}]}"#, "tags[0].key: invalid type"),
        ] {
            let err = rejected(body);
            assert_eq!((err.status, err.code), (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"), "{body}");
            assert!(err.message.contains(field), "{body}: {}", err.message);
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Color {
        Red,
        Blue,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Paint {
        color: Color,
    }

    /// The document alone decides between 400 and 422 (the `api_request` fuzz target checks the
    /// same): an enum given a number is a wrong field, not bad JSON, and a wrong field ahead of
    /// broken JSON is still bad JSON.
    #[test]
    fn the_document_decides_between_400_and_422() {
        let refused = |body: &[u8]| match parse::<Paint>(body) {
            Ok(p) => panic!("{body:?} parsed as {p:?}"),
            Err(err) => err,
        };
        for body in [r#"{"color": 2}"#, r#"{"color": [1]}"#, r#"[2]"#, r#"{"color": "green"}"#] {
            let err = refused(body.as_bytes());
            assert_eq!((err.status, err.code), (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"), "{body}");
        }
        let err = refused(br#"{"color": 2}"#);
        assert!(err.message.starts_with("invalid request body: color: "), "{}", err.message);
        for body in [&br#"{"name": 7,"#[..], br#"{"color": "red", "x": 1 x"#, b"{\"color\": \"r\xffd\"}"] {
            let err = refused(body);
            assert_eq!((err.status, err.code), (StatusCode::BAD_REQUEST, "invalid"), "{body:?}: {}", err.message);
        }
        assert!(parse::<Paint>(br#"{"color": "blue"}"#).is_ok());
    }

    #[test]
    fn json_content_types_are_recognised() {
        for ok in ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge+json"]
        {
            assert!(is_json(Some(ok)), "{ok}");
        }
        for bad in ["text/plain", "application/jsonx", "multipart/form-data", ""] {
            assert!(!is_json(Some(bad)), "{bad}");
        }
        assert!(!is_json(None));
    }
}
