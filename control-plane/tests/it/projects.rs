//! `/v1/projects` over HTTP against a real PostgreSQL, the shared request-body and pagination
//! behaviour, and the tenant isolation matrix of the project-scoped resources (projects, SSH
//! keys, images). Helpers here serve the SSH key and image tests too.

use std::path::PathBuf;
use std::sync::Arc;

use control_plane::auth::{self, Role};
use control_plane::db::identity;
use control_plane::http;
use control_plane::ids::{ProjectId, UserId};
use control_plane::testing::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

/// The project-scoped resources and `/v1/auth`, served in-process.
pub struct Served {
    pub base: String,
    pub pool: PgPool,
    /// The app's blob store (`<data_dir>/blobs/sha256`).
    pub blob_dir: PathBuf,
    pub client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
    _db: TestDatabase,
    _dir: tempfile::TempDir,
}

impl Served {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `method path` with `token` (if any) and a JSON `body` (if any).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    /// Like [`Served::call`], expecting `status`; returns the JSON body (`Null` when empty).
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let resp = self.call(method.clone(), path, token, body).await;
        let got = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(got.as_u16(), status, "{method} {path}: {text}");
        if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() }
    }

    /// Expects the error body with `status` and `code`; returns its message.
    pub async fn expect_error(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        status: u16,
        code: &str,
    ) -> String {
        let error = self.expect(method.clone(), path, token, body, status).await;
        assert_eq!(error["error"]["code"], code, "{method} {path}: {error}");
        assert!(error["error"]["request_id"].is_string());
        error["error"]["message"].as_str().unwrap().to_owned()
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&self.pool).await.unwrap()
    }
}

/// A fresh database and the resources' routes on a local port.
pub async fn serve_resources() -> Served {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = Arc::new(control_plane::testing::app(pool.clone(), dir.path()));
    let blob_dir = app.blob_dir.clone();
    let router = http::projects::routes()
        .merge(http::ssh_keys::routes())
        .merge(http::images::routes())
        .merge(http::auth::routes())
        .merge(http::members::routes())
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Served { base, pool, blob_dir, client: reqwest::Client::new(), _stop: stop, _db: db, _dir: dir }
}

/// A user with a token, a member of `member_of` with the given roles.
pub async fn user_with_token(pool: &PgPool, name: &str, operator: bool, member_of: &[(ProjectId, Role)]) -> String {
    let user = identity::user_create(pool, UserId::new(), name, operator).await.unwrap();
    for (project, role) in member_of {
        identity::project_member_add(pool, *project, user.id, *role).await.unwrap();
    }
    auth::token_issue(pool, user.id, "main", None, None, None).await.unwrap().secret.expose().to_owned()
}

/// A project nobody is a member of yet.
pub async fn project(pool: &PgPool, name: &str) -> ProjectId {
    identity::project_create(pool, ProjectId::new(), name, "").await.unwrap().id
}

#[tokio::test]
async fn projects_are_created_listed_and_found_by_name_or_id() {
    let s = serve_resources().await;
    let alice = user_with_token(&s.pool, "alice", false, &[]).await;
    let empty = s.expect(Method::GET, "/v1/projects", Some(&alice), None, 200).await;
    assert_eq!(empty, json!({"items": [], "next_cursor": null}));

    let body = json!({"name": "team-a", "description": "Team A's builds"});
    let created = s.expect(Method::POST, "/v1/projects", Some(&alice), Some(body.clone()), 201).await;
    assert_eq!((created["name"].clone(), created["role"].clone()), (json!("team-a"), json!("admin")));
    assert_eq!(created["description"], "Team A's builds");
    let id = created["id"].as_str().unwrap().to_owned();
    let message = s.expect_error(Method::POST, "/v1/projects", Some(&alice), Some(body), 409, "conflict").await;
    assert!(message.contains("team-a"), "{message}");

    for key in ["team-a", id.as_str()] {
        let got = s.expect(Method::GET, &format!("/v1/projects/{key}"), Some(&alice), None, 200).await;
        assert_eq!(got, created);
    }
    // The description is optional; names are the creator's to choose among free ones.
    for name in ["team-b", "team-c"] {
        s.expect(Method::POST, "/v1/projects", Some(&alice), Some(json!({"name": name})), 201).await;
    }

    // Pages of one, walked with the cursor, then the last page says there is no more.
    let mut names = Vec::new();
    let mut path = "/v1/projects?limit=1".to_owned();
    loop {
        let page = s.expect(Method::GET, &path, Some(&alice), None, 200).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
        names.push(page["items"][0]["name"].as_str().unwrap().to_owned());
        match page["next_cursor"].as_str() {
            Some(cursor) if names.len() < 3 => path = format!("/v1/projects?limit=1&cursor={cursor}"),
            Some(cursor) => {
                let last =
                    s.expect(Method::GET, &format!("/v1/projects?cursor={cursor}"), Some(&alice), None, 200).await;
                assert_eq!(last, json!({"items": [], "next_cursor": null}));
                break;
            }
            None => break,
        }
    }
    assert_eq!(names, ["team-a", "team-b", "team-c"]);
    let all = s.expect(Method::GET, "/v1/projects?limit=3", Some(&alice), None, 200).await;
    assert_eq!((all["items"].as_array().unwrap().len(), all["next_cursor"].clone()), (3, Value::Null));

    for query in ["limit=0", "limit=1001", "limit=x", "cursor=nonsense"] {
        let message =
            s.expect_error(Method::GET, &format!("/v1/projects?{query}"), Some(&alice), None, 400, "invalid").await;
        let field = query.split('=').next().unwrap();
        assert!(message.contains(field), "{query}: {message}");
    }
}

#[tokio::test]
async fn bad_project_bodies_are_refused_naming_the_field_and_create_nothing() {
    let s = serve_resources().await;
    let alice = user_with_token(&s.pool, "alice", false, &[]).await;
    let cases = [
        (json!({"name": "ok", "colour": "red"}), 422, "unprocessable", "colour"),
        (json!({"name": 7}), 422, "unprocessable", "name"),
        (json!({"description": "no name"}), 422, "unprocessable", "name"),
        (json!({"name": "Team A"}), 422, "unprocessable", "name"),
        (json!({"name": "team-"}), 422, "unprocessable", "name"),
        (json!({"name": "a".repeat(64)}), 422, "unprocessable", "name"),
        (json!({"name": "deadbeef-dead-beef-dead-beefdeadbeef"}), 422, "unprocessable", "name"),
        (json!({"name": "ok", "description": "two\nlines"}), 422, "unprocessable", "description"),
        (json!({"name": "ok", "description": "d".repeat(1025)}), 422, "unprocessable", "description"),
        (json!({"name": "ok", "description": "d".repeat(2 << 20)}), 413, "too_large", "larger than"),
    ];
    for (body, status, code, field) in cases {
        let message =
            s.expect_error(Method::POST, "/v1/projects", Some(&alice), Some(body.clone()), status, code).await;
        assert!(message.contains(field), "{body}: {message}");
    }
    // Not JSON at all, or not said to be JSON.
    let raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut req = s.client.post(s.url("/v1/projects")).bearer_auth(&alice).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    for (body, content_type) in [(r#"{"name": "ok""#, Some("application/json")), (r#"{"name": "ok"}"#, None)] {
        let resp = raw(body, content_type).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body} {content_type:?}");
        assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "invalid");
    }
    // A body over the limit without a Content-Length (chunked) is cut off too.
    assert_eq!(post_chunked(&s, &alice, 3 << 19).await, 413);
    assert_eq!((s.count("projects").await, s.count("project_members").await), (0, 0));
}

/// POSTs a project whose JSON body of about `len` bytes is sent in chunks, without a
/// Content-Length; returns the response's status.
async fn post_chunked(s: &Served, token: &str, len: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/projects HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut chunks = vec![br#"{"name": "ok", "description": ""#.to_vec()];
    chunks.extend(std::iter::repeat_n(vec![b'x'; 64 * 1024], len / (64 * 1024) + 1));
    chunks.push(br#""}"#.to_vec());
    for chunk in chunks {
        let framed = [format!("{:x}\r\n", chunk.len()).into_bytes(), chunk, b"\r\n".to_vec()].concat();
        // The server may answer and close before the whole body is sent.
        if conn.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut response = vec![0u8; 12];
    conn.read_exact(&mut response).await.unwrap();
    let status = String::from_utf8_lossy(&response[9..12]).into_owned();
    status.parse().unwrap()
}

/// Every route of the project-scoped resources: another tenant's project and everything in it
/// is a 404 exactly like nothing at all, a viewer cannot change anything (403), and no token is
/// a 401.
#[tokio::test]
async fn tenants_cannot_see_or_touch_other_projects_and_viewers_cannot_change_anything() {
    let s = serve_resources().await;
    let (a, b) = (project(&s.pool, "proj-a").await, project(&s.pool, "proj-b").await);
    let alice = user_with_token(&s.pool, "alice", false, &[(a, Role::Member)]).await;
    let victor = user_with_token(&s.pool, "victor", false, &[(a, Role::Viewer)]).await;
    let bob = user_with_token(&s.pool, "bob", true, &[(b, Role::Admin)]).await;
    let files = crate::images::image_files();

    // Bob's project has a key and an image; so does Alice's.
    let key = |name: &str| json!({"name": name, "public_key": crate::ssh_keys::ED25519});
    let image = |name: &str| crate::images::direct_kernel_image(name, &files);
    let b_key = s.expect(Method::POST, "/v1/projects/proj-b/ssh-keys", Some(&bob), Some(key("bobs")), 201).await;
    let b_image = s.expect(Method::POST, "/v1/projects/proj-b/images", Some(&bob), Some(image("bobs")), 201).await;
    s.expect(Method::POST, "/v1/projects/proj-a/ssh-keys", Some(&alice), Some(key("alices")), 201).await;
    let alices_image = image("alices");
    let admin_a = user_with_token(&s.pool, "ops-a", true, &[(a, Role::Admin)]).await;
    s.expect(Method::POST, "/v1/projects/proj-a/images", Some(&admin_a), Some(alices_image), 201).await;

    let (b_id, b_key_id, b_image_id) = (b.to_string(), b_key["id"].as_str().unwrap(), b_image["id"].as_str().unwrap());
    let missing = ProjectId::new().to_string();
    let mut routes: Vec<(Method, String, Option<Value>)> = Vec::new();
    for project in ["proj-b", b_id.as_str(), "no-such-project", missing.as_str()] {
        routes.push((Method::GET, format!("/v1/projects/{project}"), None));
        routes.push((Method::GET, format!("/v1/projects/{project}/ssh-keys"), None));
        routes.push((Method::POST, format!("/v1/projects/{project}/ssh-keys"), Some(key("mine"))));
        routes.push((Method::GET, format!("/v1/projects/{project}/images"), None));
        routes.push((Method::POST, format!("/v1/projects/{project}/images"), Some(image("mine"))));
        for k in ["bobs", b_key_id] {
            routes.push((Method::GET, format!("/v1/projects/{project}/ssh-keys/{k}"), None));
            routes.push((Method::DELETE, format!("/v1/projects/{project}/ssh-keys/{k}"), None));
        }
        for i in ["bobs", b_image_id] {
            routes.push((Method::GET, format!("/v1/projects/{project}/images/{i}"), None));
            routes.push((Method::DELETE, format!("/v1/projects/{project}/images/{i}"), None));
        }
    }
    let mut not_found_messages = std::collections::BTreeSet::new();
    for (method, path, body) in &routes {
        for token in [&alice, &victor] {
            let message = s.expect_error(method.clone(), path, Some(token), body.clone(), 404, "not_found").await;
            if !path.contains("/ssh-keys/") && !path.contains("/images/") {
                not_found_messages.insert(message);
            }
        }
    }
    // Bob's resources through Alice's own project are not hers either.
    let cross: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/projects/proj-a/ssh-keys/{b_key_id}"), None),
        (Method::DELETE, format!("/v1/projects/proj-a/ssh-keys/{b_key_id}"), None),
        (Method::GET, format!("/v1/projects/proj-a/images/{b_image_id}"), None),
        (Method::DELETE, format!("/v1/projects/proj-a/images/{b_image_id}"), None),
    ];
    for (method, path, body) in &cross {
        s.expect_error(method.clone(), path, Some(&alice), body.clone(), 404, "not_found").await;
    }
    routes.extend(cross);
    // A project that exists and one that does not are told apart by nothing.
    assert_eq!(not_found_messages.len(), 1, "{not_found_messages:?}");
    let listed = s.expect(Method::GET, "/v1/projects", Some(&alice), None, 200).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);

    // The viewer reads Alice's project but changes nothing.
    for path in [
        "/v1/projects/proj-a",
        "/v1/projects/proj-a/ssh-keys",
        "/v1/projects/proj-a/ssh-keys/alices",
        "/v1/projects/proj-a/images",
        "/v1/projects/proj-a/images/alices",
    ] {
        s.expect(Method::GET, path, Some(&victor), None, 200).await;
    }
    let changes = [
        (Method::POST, "/v1/projects/proj-a/ssh-keys", Some(key("viewers"))),
        (Method::DELETE, "/v1/projects/proj-a/ssh-keys/alices", None),
        (Method::POST, "/v1/projects/proj-a/images", Some(image("viewers"))),
        (Method::DELETE, "/v1/projects/proj-a/images/alices", None),
    ];
    for (method, path, body) in changes.clone() {
        s.expect_error(method, path, Some(&victor), body, 403, "forbidden").await;
    }

    // No token: 401 everywhere, before anything else is looked at.
    for (method, path, body) in routes.iter().cloned().chain(changes.map(|(m, p, b)| (m, p.to_owned(), b))) {
        s.expect_error(method, &path, None, body, 401, "unauthenticated").await;
    }
    s.expect_error(Method::GET, "/v1/projects", None, None, 401, "unauthenticated").await;
    s.expect_error(Method::POST, "/v1/projects", None, Some(json!({"name": "x"})), 401, "unauthenticated").await;

    // Nothing of Bob's changed, nothing of the intruders' was created.
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT name FROM ssh_keys ORDER BY name").fetch_all(&s.pool).await.unwrap();
    let images: Vec<String> =
        sqlx::query_scalar("SELECT name FROM images ORDER BY name").fetch_all(&s.pool).await.unwrap();
    assert_eq!(
        (keys, images),
        (vec!["alices".to_owned(), "bobs".to_owned()], vec!["alices".to_owned(), "bobs".to_owned()])
    );
}

/// The paths and schemas of projects, SSH keys and images as the API's OpenAPI document will
/// list them (the lead merges them into `http::openapi`).
#[test]
fn the_resource_endpoints_are_described_for_openapi() {
    use control_plane::app::{images as ai, projects as ap, ssh_keys as ak};
    use control_plane::http::auth::BearerAuth;
    use control_plane::http::{images as i, pagination, projects as p, ssh_keys as k};
    use utoipa::OpenApi;

    #[derive(OpenApi)]
    #[openapi(
        paths(
            p::project_list,
            p::project_create,
            p::project_get,
            k::ssh_key_list,
            k::ssh_key_create,
            k::ssh_key_get,
            k::ssh_key_delete,
            i::image_list,
            i::image_register,
            i::image_get,
            i::image_delete
        ),
        components(schemas(
            ap::ProjectCreateParams,
            ap::ProjectView,
            ak::SshKeyCreateParams,
            ak::SshKeyView,
            ai::ImageRegisterParams,
            ai::ImageView,
            ai::BootMode,
            pagination::Page<ap::ProjectView>,
            pagination::Page<ak::SshKeyView>,
            pagination::Page<ai::ImageView>,
        )),
        modifiers(&BearerAuth)
    )]
    struct Doc;

    let doc = serde_json::to_value(Doc::openapi()).unwrap();
    for (path, methods) in [
        ("/v1/projects", &["get", "post"][..]),
        ("/v1/projects/{project}", &["get"]),
        ("/v1/projects/{project}/ssh-keys", &["get", "post"]),
        ("/v1/projects/{project}/ssh-keys/{key}", &["get", "delete"]),
        ("/v1/projects/{project}/images", &["get", "post"]),
        ("/v1/projects/{project}/images/{image}", &["get", "delete"]),
    ] {
        for method in methods {
            assert_eq!(doc["paths"][path][method]["security"], json!([{"bearer": []}]), "{method} {path}");
        }
    }
    let list = &doc["paths"]["/v1/projects/{project}/ssh-keys"]["get"];
    let params: Vec<_> = list["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(params, ["project", "limit", "cursor"]);
    let page = &list["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(page["$ref"], "#/components/schemas/Page_SshKeyView");
    let schema = &doc["components"]["schemas"]["Page_SshKeyView"];
    assert!(schema["properties"]["items"]["items"]["properties"]["fingerprint"].is_object(), "{schema}");
    assert!(schema["properties"]["next_cursor"].is_object());
    assert_eq!(doc["components"]["schemas"]["BootMode"]["enum"], json!(["direct_kernel", "firmware"]));
}

#[tokio::test]
async fn a_token_limited_to_a_project_and_role_sees_and_does_no_more() {
    let s = serve_resources().await;
    let (a, b) = (project(&s.pool, "proj-a").await, project(&s.pool, "proj-b").await);
    // An operator, admin of both projects.
    let olga = user_with_token(&s.pool, "olga", true, &[(a, Role::Admin), (b, Role::Admin)]).await;
    let key = |name: &str| json!({"name": name, "public_key": crate::ssh_keys::ED25519});

    // A viewer token for proj-a.
    let body = json!({"name": "ci-view", "project": "proj-a", "role": "viewer"});
    let made = s.expect(Method::POST, "/v1/auth/tokens", Some(&olga), Some(body), 201).await;
    assert_eq!(
        (made["token"]["project_id"].clone(), made["token"]["role"].clone()),
        (json!(a.to_string()), json!("viewer"))
    );
    let viewer = made["secret"].as_str().unwrap().to_owned();

    // It sees proj-a alone, as a viewer, and is no operator.
    let listed = s.expect(Method::GET, "/v1/projects", Some(&viewer), None, 200).await;
    let names: Vec<_> =
        listed["items"].as_array().unwrap().iter().map(|p| (p["name"].clone(), p["role"].clone())).collect();
    assert_eq!(names, [(json!("proj-a"), json!("viewer"))]);
    let me = s.expect(Method::GET, "/v1/auth/whoami", Some(&viewer), None, 200).await;
    assert_eq!((me["is_operator"].clone(), me["projects"].as_array().unwrap().len()), (json!(false), 1));
    s.expect(Method::GET, "/v1/projects/proj-b", Some(&viewer), None, 404).await;
    s.expect(Method::GET, "/v1/projects/proj-b/ssh-keys", Some(&viewer), None, 404).await;
    s.expect(Method::GET, "/v1/projects/proj-a/ssh-keys", Some(&viewer), None, 200).await;
    s.expect(Method::POST, "/v1/projects/proj-a/ssh-keys", Some(&viewer), Some(key("nope")), 403).await;
    s.expect(Method::POST, "/v1/projects", Some(&viewer), Some(json!({"name": "proj-c"})), 403).await;

    // What it makes is limited the same way, and never more.
    let child = json!({"name": "child"});
    let made = s.expect(Method::POST, "/v1/auth/tokens", Some(&viewer), Some(child), 201).await;
    assert_eq!(
        (made["token"]["project_id"].clone(), made["token"]["role"].clone()),
        (json!(a.to_string()), json!("viewer"))
    );
    let wider = json!({"name": "wider", "project": "proj-a", "role": "member"});
    s.expect(Method::POST, "/v1/auth/tokens", Some(&viewer), Some(wider), 403).await;
    let elsewhere = json!({"name": "elsewhere", "project": "proj-b"});
    s.expect(Method::POST, "/v1/auth/tokens", Some(&viewer), Some(elsewhere), 404).await;
    let no_project = json!({"name": "half", "role": "viewer"});
    s.expect(Method::POST, "/v1/auth/tokens", Some(&olga), Some(no_project), 400).await;

    // A member token for proj-a can add a key there, and still nothing in proj-b.
    let body = json!({"name": "ci-member", "project": a.to_string(), "role": "member"});
    let member = s.expect(Method::POST, "/v1/auth/tokens", Some(&olga), Some(body), 201).await;
    let member = member["secret"].as_str().unwrap().to_owned();
    s.expect(Method::POST, "/v1/projects/proj-a/ssh-keys", Some(&member), Some(key("ok")), 201).await;
    s.expect(Method::POST, "/v1/projects/proj-b/ssh-keys", Some(&member), Some(key("no")), 404).await;
}
