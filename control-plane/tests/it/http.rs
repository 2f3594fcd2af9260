//! The HTTP service in-process: health, metrics, OpenAPI, the error body.

use std::sync::Arc;

use control_plane::http;
use control_plane::testing::TestDatabase;
use futures::StreamExt;
use serde_json::Value;

struct Served {
    base: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn serve_app(pool: sqlx::PgPool) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let app = Arc::new(control_plane::testing::app(pool, dir.path()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, http::router(app))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Served { base, _stop: stop, _dir: dir }
}

#[tokio::test]
async fn healthz_metrics_and_openapi_answer() {
    let db = TestDatabase::create().await.unwrap();
    let served = serve_app(db.migrated_pool().await.unwrap()).await;
    let client = reqwest::Client::new();

    let health = client.get(format!("{}/healthz", served.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("x-request-id"));
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    let doc: Value = client.get(format!("{}/v1/openapi.json", served.base)).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/healthz", "/metrics", "/v1/openapi.json"] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    // Every parameter is where the server reads it: a path parameter names a `{segment}` of its
    // path, anything else is a query parameter (a generated client sends what the doc says).
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for param in op["parameters"].as_array().into_iter().flatten() {
                let name = param["name"].as_str().unwrap();
                if param["in"] == "header" {
                    continue;
                }
                let in_path = path.contains(&format!("{{{name}}}"));
                let want = if in_path { "path" } else { "query" };
                assert_eq!(param["in"], want, "{method} {path}: parameter {name}");
            }
        }
    }

    let metrics = client.get(format!("{}/metrics", served.base)).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains(r#"cloud_http_requests_total{method="GET",route="/healthz",status="200"} 1"#), "{text}");
    assert!(text.contains("cloud_db_pool_connections"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"));
}

/// Made-up methods and paths from anyone add a handful of series to `/metrics`, not one each.
#[tokio::test]
async fn metrics_stay_bounded_whatever_methods_and_paths_clients_send() {
    let db = TestDatabase::create().await.unwrap();
    let served = serve_app(db.migrated_pool().await.unwrap()).await;
    let client = reqwest::Client::new();
    // One line per series: the counter's, and each histogram's `_count`.
    let series = |text: &str| {
        let lines = text.lines();
        lines.filter(|l| l.starts_with("cloud_http_requests_total{") || l.contains("_seconds_count{")).count()
    };
    let before = series(&client.get(format!("{}/metrics", served.base)).send().await.unwrap().text().await.unwrap());
    let requests = (0..10_000u32).map(|i| {
        let method = reqwest::Method::from_bytes(format!("M{}", i % 997).as_bytes()).unwrap();
        let method = if i % 3 == 0 { reqwest::Method::GET } else { method };
        client.request(method, format!("{}/v1/x{i}/y{}", served.base, i * 7919)).send()
    });
    let statuses: Vec<u16> =
        futures::stream::iter(requests).buffer_unordered(32).map(|r| r.unwrap().status().as_u16()).collect().await;
    assert!(statuses.iter().all(|s| *s == 404 || *s == 405), "{:?}", &statuses[..10]);
    let text = client.get(format!("{}/metrics", served.base)).send().await.unwrap().text().await.unwrap();
    // GET and `other` on the unmatched route, and the scrape itself: a counter and a histogram each.
    let added = series(&text) - before;
    assert!(added <= 6, "10,000 made-up requests added {added} series:\n{text}");
    assert!(text.contains(r#"method="other""#), "{text}");
}

#[tokio::test]
async fn unknown_routes_get_the_error_body_with_the_callers_request_id() {
    let db = TestDatabase::create().await.unwrap();
    let served = serve_app(db.migrated_pool().await.unwrap()).await;
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/nothing-here", served.base))
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["x-request-id"], "req-123");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(body["error"]["request_id"], "req-123");

    // A known path with a method it does not take: 405 with the same body.
    let resp = reqwest::Client::new().put(format!("{}/healthz", served.base)).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn healthz_is_503_when_the_database_does_not_answer() {
    // A pool that points at a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy(&format!("postgres://nobody@127.0.0.1:{port}/none"))
        .unwrap();
    let served = serve_app(pool).await;
    let resp = reqwest::get(format!("{}/healthz", served.base)).await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(!body["error"]["request_id"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn an_api_call_while_the_database_is_away_or_read_only_is_503_not_500() {
    use control_plane::db::{identity, is_unavailable};
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let user = identity::user_create(&pool, control_plane::ids::UserId::new(), "ops", true).await.unwrap();
    let token = control_plane::auth::token_issue(&pool, user.id, "main", None, None, None).await.unwrap();
    let bearer = format!("Bearer {}", token.secret.expose());

    // Connections that cannot write, as to a primary demoted by a failover (SQLSTATE 25006).
    let read_only = sqlx::postgres::PgPoolOptions::new()
        .connect_with(db.options().options([("default_transaction_read_only", "on")]))
        .await
        .unwrap();
    let err =
        sqlx::query("INSERT INTO fleet_ca (cert_pem, key_pem) VALUES ('', '')").execute(&read_only).await.unwrap_err();
    assert!(is_unavailable(&err), "{err}");
    // A statement that is wrong stays a failure of the server, retrying would not help.
    let err = sqlx::query("SELECT no_such_column").execute(&read_only).await.unwrap_err();
    assert!(!is_unavailable(&err), "{err}");

    // A database that does not answer at all.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let away = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy(&format!("postgres://nobody@127.0.0.1:{port}/none"))
        .unwrap();

    for pool in [read_only, away] {
        let served = serve_app(pool).await;
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/projects", served.base))
            .header("authorization", &bearer)
            .json(&serde_json::json!({"name": "during-a-failover"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
    }
}
