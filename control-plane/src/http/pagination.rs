//! Cursor pagination of list endpoints: `?limit=` and `?cursor=` in, `{"items", "next_cursor"}`
//! out (the shape of every listing, the auth token list included).
//!
//! Lists are ordered by `(created_at, id)`, a key that never changes and is unique. A cursor is
//! the key of the last item of a page, `<RFC 3339 time with microseconds>,<uuid>` in unpadded
//! base64url: opaque to clients, which pass it back verbatim. The next page is the rows after
//! it, so rows created or deleted between requests never make a page skip or repeat others.
//! A handler asks the datastore for `limit + 1` rows; [`split_page`] keeps `limit` of them and
//! makes the cursor only when the extra row proves there is more.
//!
//! ```text
//!  GET …?limit=2            → items [a, b],  next_cursor = key(b)
//!  GET …?limit=2&cursor=key(b) → items [c],  next_cursor = null
//! ```

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::ApiError;

/// The page size when `limit` is absent.
pub const DEFAULT_LIMIT: i64 = 100;
/// The largest page size a client may ask for.
pub const MAX_LIMIT: i64 = 1000;

/// The position of a row in a listing: `(created_at, id)`.
pub type PageKey = (DateTime<Utc>, Uuid);

/// `?limit=&cursor=` of a list endpoint. Other query parameters (filters) are left to the
/// handler's own `Query`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page; absent for the first page.
    #[param(schema_with = cursor_schema)]
    pub cursor: Option<String>,
}

/// The schema of a cursor: format `cursor`, which only this API makes (a client cannot make
/// one up; a test fuzzer is taught it: `tests/schemathesis/hooks.py`).
fn cursor_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::Custom("cursor".to_owned()))).build()
}

/// A checked page request: how many items, after which key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: i64,
    pub after: Option<PageKey>,
}

impl PageRequest {
    /// Checks `limit` (400 `invalid` outside 1..=1000) and decodes `cursor`.
    pub fn from_params(params: &PageParams) -> Result<Self, ApiError> {
        let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(format!("limit: must be between 1 and {MAX_LIMIT}, not {limit}")));
        }
        let after = params.cursor.as_deref().map(decode_cursor).transpose()?;
        Ok(Self { limit, after })
    }

    /// How many rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch_limit(&self) -> i64 {
        self.limit + 1
    }

    /// The rows to read for this page (one more than it holds).
    pub fn window(&self) -> crate::app::Window {
        crate::app::Window { after: self.after, fetch: self.fetch_limit() }
    }
}

/// Extracts and checks `?limit=&cursor=` (ignoring any other parameter).
impl<S: Send + Sync> FromRequestParts<S> for PageRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let super::extract::Query(params) =
            super::extract::Query::<PageParams>::from_request_parts(parts, state).await?;
        Self::from_params(&params)
    }
}

/// A page of a listing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page from the `limit + 1` rows fetched for it (see [`split_page`]).
    pub fn from_rows(rows: Vec<T>, request: &PageRequest, key: impl Fn(&T) -> PageKey) -> Self {
        let (items, next_cursor) = split_page(rows, request.limit, key);
        Self { items, next_cursor }
    }

    /// The same page with each item converted (row → view).
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { items: self.items.into_iter().map(f).collect(), next_cursor: self.next_cursor }
    }
}

/// Keeps the first `limit` of `rows` (fetched with `limit + 1`) and returns the cursor of the
/// last kept row when a row beyond the page exists.
pub fn split_page<T>(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> PageKey) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit.max(0)).unwrap_or(usize::MAX);
    if rows.len() <= limit {
        return (rows, None);
    }
    rows.truncate(limit);
    let cursor = rows.last().map(|row| encode_cursor(key(row)));
    (rows, cursor)
}

/// The opaque text of a cursor.
pub fn encode_cursor((created_at, id): PageKey) -> String {
    let text = format!("{},{id}", created_at.to_rfc3339_opts(SecondsFormat::Micros, true));
    URL_SAFE_NO_PAD.encode(text)
}

/// The key in a cursor; 400 `invalid` naming `cursor` when it is not one of ours.
pub fn decode_cursor(cursor: &str) -> Result<PageKey, ApiError> {
    let bad = || ApiError::invalid("cursor: not a cursor this API returned");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
    let (at, id) = text.split_once(',').ok_or_else(bad)?;
    let at = DateTime::parse_from_rfc3339(at).map_err(|_| bad())?.with_timezone(&Utc);
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    Ok((at, id))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use chrono::TimeZone;

    use super::*;

    fn key(n: u32) -> PageKey {
        let at = Utc.timestamp_opt(1_700_000_000 + i64::from(n), n * 1000).single().unwrap_or_default();
        (at, Uuid::from_u128(u128::from(n)))
    }

    #[test]
    fn cursors_round_trip_with_microseconds_and_reject_garbage() {
        let k = key(7);
        assert_eq!(decode_cursor(&encode_cursor(k)).ok(), Some(k));
        for bad in ["", "!!", "bm9wZQ", &URL_SAFE_NO_PAD.encode("2024-01-01T00:00:00Z,nope")] {
            let err = decode_cursor(bad).err().map(|e| (e.status, e.code));
            assert_eq!(err, Some((StatusCode::BAD_REQUEST, "invalid")), "{bad}");
        }
    }

    #[test]
    fn a_page_has_a_cursor_only_when_more_rows_exist() {
        let rows: Vec<u32> = (0..3).collect();
        let (items, next) = split_page(rows.clone(), 3, |n| key(*n));
        assert_eq!((items, next), (vec![0, 1, 2], None));
        let (items, next) = split_page(rows, 2, |n| key(*n));
        assert_eq!(items, vec![0, 1]);
        assert_eq!(next.as_deref().map(decode_cursor).and_then(Result::ok), Some(key(1)));
    }

    #[test]
    fn limits_are_checked() {
        let page = |limit| PageRequest::from_params(&PageParams { limit, cursor: None });
        assert_eq!(page(None).ok().map(|p| p.limit), Some(DEFAULT_LIMIT));
        assert_eq!(page(Some(1000)).ok().map(|p| p.fetch_limit()), Some(1001));
        for bad in [0, -1, 1001] {
            assert!(page(Some(bad)).is_err(), "{bad}");
        }
    }
}
