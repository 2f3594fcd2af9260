//! The web console's files (`console_dir`, the output of `web-console/build.sh`), served at `/`
//! by the router's fallback: what no API route matched.
//!
//! ```text
//!  /v1/… /auth/… /healthz /metrics   an API route, or the API's 404 body
//!  /assets/<name>.<hash>.js           the file; cached for a year (its name changes with it)
//!  /index.html, /favicon.svg, …       the file; revalidated every time
//!  /projects/p/instances (no dot)     index.html: the console's own router shows the page
//! ```
//! Only GET and HEAD; paths with `..`, a backslash or a hidden segment are refused, so nothing
//! outside the directory is ever read. HTML pages carry a Content-Security-Policy that allows
//! scripts, styles and connections (WebSockets included) of this origin only, and no framing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::app::App;

/// Prefixes that belong to the API: a miss there is the API's 404, never the console's page.
const API_PREFIXES: [&str; 4] = ["/v1/", "/auth/", "/healthz", "/metrics"];

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; \
     frame-ancestors 'none'";

/// The router's fallback: a console file or page, else the API's 404.
pub async fn fallback(State(app): State<Arc<App>>, req: Request) -> Response {
    let path = req.uri().path();
    let is_read = req.method() == Method::GET || req.method() == Method::HEAD;
    if !is_read || API_PREFIXES.iter().any(|p| path.starts_with(p)) || path == "/v1" {
        return ApiError::route_not_found().into_response();
    }
    let Some(dir) = app.console_dir.as_deref() else {
        return not_installed();
    };
    let head = req.method() == Method::HEAD;
    match resolve(dir, path) {
        Some(Target::File(file)) => serve(&file, head).await,
        Some(Target::Page) => serve(&dir.join("index.html"), head).await,
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// What a path names in the console's directory.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    File(PathBuf),
    /// A page of the console's router: `index.html`.
    Page,
}

fn resolve(dir: &Path, path: &str) -> Option<Target> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return Some(Target::Page);
    }
    let safe = rel.split('/').all(|seg| !seg.is_empty() && !seg.starts_with('.') && !seg.contains(['\\', '\0']));
    if !safe {
        return None;
    }
    let file = dir.join(rel);
    if file.is_file() {
        return Some(Target::File(file));
    }
    // A name with a dot in its last segment is a file that is not there; anything else is a
    // page of the console.
    let last = rel.rsplit('/').next().unwrap_or(rel);
    if last.contains('.') { None } else { Some(Target::Page) }
}

async fn serve(file: &Path, head: bool) -> Response {
    let bytes = match tokio::fs::read(file).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return not_installed(),
        Err(e) => return ApiError::internal(&e).into_response(),
    };
    let content_type = content_type(file);
    let immutable = file.components().any(|c| c.as_os_str() == "assets");
    let cache = if immutable { "public, max-age=31536000, immutable" } else { "no-cache" };
    let mut response = if head { Body::empty() } else { Body::from(bytes) }.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
    headers.insert(HeaderName::from_static("referrer-policy"), HeaderValue::from_static("same-origin"));
    if content_type.starts_with("text/html") {
        headers.insert(HeaderName::from_static("content-security-policy"), HeaderValue::from_static(CSP));
        headers.insert(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
    }
    response
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()).unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// `/` when the control plane has no console to serve.
fn not_installed() -> Response {
    let text = "The web console is not installed on this control plane: build it with web-console/build.sh \
                and set console_dir (CLOUD_CONSOLE_DIR) to web-console/dist. The API is at /v1/ \
                (GET /v1/openapi.json describes it).\n";
    (StatusCode::NOT_FOUND, [(CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_resolve_to_files_pages_or_nothing_outside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("assets/app.1234.js"), "x").unwrap();
        std::fs::write(dir.path().join("index.html"), "<html>").unwrap();
        assert_eq!(resolve(dir.path(), "/"), Some(Target::Page));
        assert_eq!(
            resolve(dir.path(), "/assets/app.1234.js"),
            Some(Target::File(dir.path().join("assets/app.1234.js")))
        );
        assert_eq!(resolve(dir.path(), "/projects/default/instances"), Some(Target::Page));
        assert_eq!(resolve(dir.path(), "/assets/gone.js"), None);
        for bad in ["/../etc/passwd", "/assets/../../x", "/.git/config", "/a//b", "/a\\b"] {
            assert_eq!(resolve(dir.path(), bad), None, "{bad}");
        }
    }
}
