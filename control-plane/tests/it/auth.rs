//! Authentication and authorization against a real PostgreSQL: the bootstrap admin, tokens
//! (expired, revoked, malformed, unknown), operator and project checks, and `/v1/auth` over HTTP.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header::AUTHORIZATION};
use axum::routing::get;
use control_plane::auth::{self, AuthenticationError, BootstrapOutcome, Caller, Role, TokenSecret};
use control_plane::db::identity::{self, NewToken, ProjectKey};
use control_plane::http::error::ApiError;
use control_plane::ids::{ProjectId, TokenId, UserId};
use control_plane::testing::TestDatabase;
use serde_json::{Value, json};
use sqlx::PgPool;

fn bearer(secret: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {secret}")).unwrap());
    headers
}

fn read_token_file(path: &Path) -> TokenSecret {
    TokenSecret::parse(std::fs::read_to_string(path).unwrap().trim()).unwrap()
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(pool).await.unwrap()
}

/// A user with a token, optionally a member of `project`.
async fn user_with_token(
    pool: &PgPool,
    name: &str,
    operator: bool,
    member_of: Option<(ProjectId, Role)>,
) -> (UserId, String) {
    let user = identity::user_create(pool, UserId::new(), name, operator).await.unwrap();
    if let Some((project, role)) = member_of {
        identity::project_member_add(pool, project, user.id, role).await.unwrap();
    }
    let issued = auth::token_issue(pool, user.id, "main", None, None, None).await.unwrap();
    (user.id, issued.secret.expose().to_owned())
}

fn assert_api_error(result: Result<impl std::fmt::Debug, ApiError>, status: StatusCode, code: &str) {
    let err = result.unwrap_err();
    assert_eq!((err.status, err.code), (status, code), "{}", err.message);
}

#[tokio::test]
async fn bootstrap_creates_the_admin_project_and_a_private_token_file_that_authenticates() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");

    let outcome = auth::bootstrap(&pool, &data_dir).await.unwrap();
    let BootstrapOutcome::Created { user_id, project_id, token_id, token_file } = outcome else {
        panic!("the first bootstrap must create the admin: {outcome:?}");
    };
    assert_eq!(token_file, data_dir.join(auth::ADMIN_TOKEN_FILE));
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    // Only the token file is left behind, no temporary file.
    let names: Vec<_> = std::fs::read_dir(&data_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [auth::ADMIN_TOKEN_FILE]);

    let caller = auth::authenticate(&pool, &bearer(read_token_file(&token_file).expose())).await.unwrap();
    let token_id = Some(token_id);
    assert_eq!(
        caller,
        Caller { user_id, is_operator: true, token_id, session_id: None, token_expires_at: None, scope: None }
    );
    assert!(caller.require_operator().is_ok());
    assert_eq!(caller.project_role(&pool, ProjectKey::Id(project_id)).await.unwrap(), (project_id, Role::Admin));
    let admin = identity::user_get(&pool, user_id).await.unwrap().unwrap();
    assert_eq!(admin.name, auth::BOOTSTRAP_USER);
    let projects = identity::project_list_for_user(&pool, user_id).await.unwrap();
    assert_eq!(projects.len(), 1);
    assert_eq!((projects[0].project_name.as_str(), projects[0].role), (auth::BOOTSTRAP_PROJECT, Role::Admin));
    let tokens = identity::token_list_for_user(&pool, user_id).await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!((tokens[0].name.as_str(), tokens[0].expires_at), (auth::BOOTSTRAP_TOKEN_NAME, None));
}

#[tokio::test]
async fn a_second_bootstrap_changes_nothing() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let first = auth::bootstrap(&pool, dir.path()).await.unwrap();
    assert!(matches!(first, BootstrapOutcome::Created { .. }));
    let file = dir.path().join(auth::ADMIN_TOKEN_FILE);
    let contents = std::fs::read(&file).unwrap();

    let second = auth::bootstrap(&pool, dir.path()).await.unwrap();
    assert!(matches!(second, BootstrapOutcome::AlreadyBootstrapped { token_file_present: true, .. }));
    assert_eq!(std::fs::read(&file).unwrap(), contents);
    assert_eq!(
        (count(&pool, "users").await, count(&pool, "api_tokens").await, count(&pool, "projects").await),
        (1, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bootstraps_create_exactly_one_admin() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    // Two replicas, each with its own data directory.
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = tokio::join!(
        tokio::spawn({
            let (pool, dir) = (pool.clone(), dir_a.path().to_path_buf());
            async move { auth::bootstrap(&pool, &dir).await.unwrap() }
        }),
        tokio::spawn({
            let (pool, dir) = (pool.clone(), dir_b.path().to_path_buf());
            async move { auth::bootstrap(&pool, &dir).await.unwrap() }
        }),
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    let created: Vec<_> = outcomes.iter().filter(|o| matches!(o, BootstrapOutcome::Created { .. })).collect();
    assert_eq!(created.len(), 1, "{outcomes:?}");
    assert_eq!(
        (count(&pool, "users").await, count(&pool, "api_tokens").await, count(&pool, "projects").await),
        (1, 1, 1)
    );
    // Exactly one data directory got the token, and it works.
    let files: Vec<_> =
        [dir_a.path(), dir_b.path()].iter().map(|d| d.join(auth::ADMIN_TOKEN_FILE)).filter(|f| f.exists()).collect();
    assert_eq!(files.len(), 1);
    auth::authenticate(&pool, &bearer(read_token_file(&files[0]).expose())).await.unwrap();
}

/// The race itself, made deterministic: a second first-admin insert waits for the first
/// transaction and then inserts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_racing_first_admin_insert_waits_for_the_first_and_yields() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let mut first = pool.begin().await.unwrap();
    let created = identity::user_create_if_none_exist(&mut *first, UserId::new(), "admin", true).await.unwrap();
    assert!(created.is_some());
    let second = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let row = identity::user_create_if_none_exist(&mut *tx, UserId::new(), "admin", true).await.unwrap();
            tx.commit().await.unwrap();
            row
        }
    });
    // The second insert blocks on the first one's uncommitted row until it commits.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the second insert never waited for the first");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!second.is_finished());
    first.commit().await.unwrap();
    assert_eq!(second.await.unwrap(), None);
    assert_eq!(count(&pool, "users").await, 1);
}

#[tokio::test]
async fn a_deleted_token_file_is_not_replaced_until_an_operator_asks() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    auth::bootstrap(&pool, dir.path()).await.unwrap();
    let file = dir.path().join(auth::ADMIN_TOKEN_FILE);
    let old = read_token_file(&file);
    std::fs::remove_file(&file).unwrap();

    let outcome = auth::bootstrap(&pool, dir.path()).await.unwrap();
    assert!(matches!(outcome, BootstrapOutcome::AlreadyBootstrapped { token_file_present: false, .. }));
    assert!(!file.exists());
    assert_eq!(count(&pool, "api_tokens").await, 1);

    let written = auth::issue_admin_token_unchecked(&pool, dir.path()).await.unwrap();
    assert_eq!(written, file);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let new = read_token_file(&file);
    assert_ne!(new, old);
    let caller = auth::authenticate(&pool, &bearer(new.expose())).await.unwrap();
    assert!(caller.is_operator);
    // The old token still works: recovery adds a token, it does not revoke any.
    auth::authenticate(&pool, &bearer(old.expose())).await.unwrap();
}

#[tokio::test]
async fn expired_revoked_malformed_unknown_and_disabled_tokens_are_rejected() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let (user, good) = user_with_token(&pool, "alice", false, None).await;
    auth::authenticate(&pool, &bearer(&good)).await.unwrap();

    let expired = TokenSecret::generate().unwrap();
    let expired_row = identity::token_create(
        &pool,
        &NewToken {
            id: TokenId::new(),
            user_id: user,
            name: "old",
            hash: expired.hash(),
            prefix: expired.display_prefix(),
            expires_at: Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
            scope: None,
        },
    )
    .await
    .unwrap();
    let err = auth::authenticate(&pool, &bearer(expired.expose())).await.unwrap_err();
    assert!(matches!(err, AuthenticationError::Expired { token_id } if token_id == expired_row.id));

    let revoked = auth::token_issue(&pool, user, "gone", None, None, None).await.unwrap();
    identity::token_revoke(&pool, user, revoked.token.id).await.unwrap();
    let err = auth::authenticate(&pool, &bearer(revoked.secret.expose())).await.unwrap_err();
    assert!(matches!(err, AuthenticationError::Revoked { token_id } if token_id == revoked.token.id));

    let unknown = TokenSecret::generate().unwrap();
    let err = auth::authenticate(&pool, &bearer(unknown.expose())).await.unwrap_err();
    assert!(matches!(err, AuthenticationError::Unknown));

    let err = auth::authenticate(&pool, &bearer("cloud_short")).await.unwrap_err();
    assert!(matches!(err, AuthenticationError::Malformed(_)));
    let err = auth::authenticate(&pool, &HeaderMap::new()).await.unwrap_err();
    assert!(matches!(err, AuthenticationError::Missing));

    identity::user_set_disabled(&pool, user, true).await.unwrap();
    let err = auth::authenticate(&pool, &bearer(&good)).await.unwrap_err();
    assert!(matches!(err, AuthenticationError::UserDisabled { user_id } if user_id == user));
    identity::user_set_disabled(&pool, user, false).await.unwrap();
    auth::authenticate(&pool, &bearer(&good)).await.unwrap();

    // Over HTTP: 401, the one error body, a Bearer challenge, and a message that says only
    // what is safe to say.
    let served = serve(pool.clone()).await;
    let client = reqwest::Client::new();
    let cases: [(Option<String>, &str); 5] = [
        (None, "missing bearer token"),
        (Some("Basic dXNlcjpwYXNz".to_owned()), "malformed bearer token"),
        (Some(format!("Bearer {}", expired.expose())), "token expired"),
        (Some(format!("Bearer {}", revoked.secret.expose())), "invalid or expired token"),
        (Some(format!("Bearer {}", unknown.expose())), "invalid or expired token"),
    ];
    for (header, message) in cases {
        let mut req = client.get(format!("{}/v1/auth/whoami", served.base));
        if let Some(h) = &header {
            req = req.header("authorization", h);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{header:?}");
        assert!(resp.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthenticated");
        assert!(body["error"]["message"].as_str().unwrap().starts_with(message), "{body}");
        assert!(body["error"]["request_id"].is_string());
    }
}

#[tokio::test]
async fn last_use_is_recorded_at_most_once_a_minute() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let (user, secret) = user_with_token(&pool, "bob", false, None).await;
    assert_eq!(identity::token_list_for_user(&pool, user).await.unwrap()[0].last_used_at, None);
    auth::authenticate(&pool, &bearer(&secret)).await.unwrap();
    let first = identity::token_list_for_user(&pool, user).await.unwrap()[0].last_used_at;
    assert!(first.is_some());
    auth::authenticate(&pool, &bearer(&secret)).await.unwrap();
    assert_eq!(identity::token_list_for_user(&pool, user).await.unwrap()[0].last_used_at, first);
}

#[tokio::test]
async fn non_operators_are_forbidden_on_the_fleet() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let (_, operator) = user_with_token(&pool, "ops", true, None).await;
    let (_, customer) = user_with_token(&pool, "carol", false, None).await;
    let caller = auth::authenticate(&pool, &bearer(&customer)).await.unwrap();
    assert_api_error(caller.require_operator().map_err(ApiError::from), StatusCode::FORBIDDEN, "forbidden");

    let served = serve(pool.clone()).await;
    let client = reqwest::Client::new();
    let fleet = format!("{}/test/fleet", served.base);
    let resp = client.get(&fleet).bearer_auth(&customer).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "forbidden");
    let resp = client.get(&fleet).bearer_auth(&operator).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn non_members_get_404_and_roles_below_the_minimum_get_403() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let mine = identity::project_create(&pool, ProjectId::new(), "mine", "").await.unwrap();
    let theirs = identity::project_create(&pool, ProjectId::new(), "theirs", "").await.unwrap();
    let (_, viewer) = user_with_token(&pool, "dave", false, Some((mine.id, Role::Viewer))).await;
    // Operators are not implicitly project members.
    let (_, operator) = user_with_token(&pool, "ops", true, None).await;
    let viewer = auth::authenticate(&pool, &bearer(&viewer)).await.unwrap();
    let operator = auth::authenticate(&pool, &bearer(&operator)).await.unwrap();

    let (mine_id, theirs_id) = (ProjectKey::Id(mine.id), ProjectKey::Id(theirs.id));
    assert_eq!(viewer.project_role(&pool, mine_id).await.unwrap(), (mine.id, Role::Viewer));
    // By name, one statement finds the project and the role.
    assert_eq!(viewer.project_role(&pool, ProjectKey::Name("mine")).await.unwrap(), (mine.id, Role::Viewer));
    assert_eq!(viewer.require_role(&pool, mine_id, Role::Viewer).await.unwrap(), (mine.id, Role::Viewer));
    assert_api_error(
        viewer.require_role(&pool, mine_id, Role::Member).await.map_err(ApiError::from),
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // Another tenant's project and a project that does not exist look the same.
    assert_api_error(
        viewer.project_role(&pool, theirs_id).await.map_err(ApiError::from),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_api_error(
        viewer.project_role(&pool, ProjectKey::Name("theirs")).await.map_err(ApiError::from),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_api_error(
        viewer.project_role(&pool, ProjectKey::Id(ProjectId::new())).await.map_err(ApiError::from),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_api_error(
        viewer.project_role(&pool, ProjectKey::Name("nowhere")).await.map_err(ApiError::from),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_api_error(
        viewer.require_role(&pool, theirs_id, Role::Viewer).await.map_err(ApiError::from),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_api_error(
        operator.project_role(&pool, mine_id).await.map_err(ApiError::from),
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn whoami_and_the_token_endpoints_work_over_http() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    auth::bootstrap(&pool, dir.path()).await.unwrap();
    let admin = read_token_file(&dir.path().join(auth::ADMIN_TOKEN_FILE)).expose().to_owned();
    let served = serve(pool.clone()).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", served.base);

    let me: Value = client.get(url("/v1/auth/whoami")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["user"]["name"], "admin");
    assert_eq!(me["is_operator"], true);
    assert_eq!(me["projects"], json!([{"id": me["projects"][0]["id"], "name": "default", "role": "admin"}]));

    // Create a token: the secret is in this response only.
    let resp = client
        .post(url("/v1/auth/tokens"))
        .bearer_auth(&admin)
        .json(&json!({"name": "ci", "expires_in_secs": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let ci = created["secret"].as_str().unwrap().to_owned();
    assert!(ci.starts_with(auth::TOKEN_PREFIX) && ci.starts_with(created["token"]["token_prefix"].as_str().unwrap()));
    assert_eq!(created["token"]["status"], "active");
    assert!(created["token"]["expires_at"].is_string());
    let ci_id = created["token"]["id"].as_str().unwrap().to_owned();
    let me: Value = client.get(url("/v1/auth/whoami")).bearer_auth(&ci).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["token_id"], ci_id.as_str());

    // A token made with a token never outlives it: without a lifetime it expires with it, a
    // longer one is refused and creates nothing, a shorter one is kept.
    let make = |name: &str, lifetime: Option<u64>| {
        let body = match lifetime {
            Some(secs) => json!({"name": name, "expires_in_secs": secs}),
            None => json!({"name": name}),
        };
        client.post(url("/v1/auth/tokens")).bearer_auth(&ci).json(&body).send()
    };
    let child: Value = make("child", None).await.unwrap().json().await.unwrap();
    assert_eq!(child["token"]["expires_at"], created["token"]["expires_at"], "{child}");
    let longer = make("longer", Some(7200)).await.unwrap();
    assert_eq!(longer.status(), 400);
    let refusal: Value = longer.json().await.unwrap();
    assert!(refusal["error"]["message"].as_str().unwrap().contains("cannot outlive"), "{refusal}");
    let shorter: Value = make("shorter", Some(60)).await.unwrap().json().await.unwrap();
    assert!(shorter["token"]["expires_at"].as_str() < created["token"]["expires_at"].as_str(), "{shorter}");

    // Bad input: 400/409/422 with the error body, nothing created.
    for (body, status) in [
        (json!({"name": "ci"}), 409),
        (json!({"name": "Not A Label"}), 400),
        (json!({"name": "x", "expires_in_secs": 0}), 400),
        (json!({"name": "x", "scopes": []}), 422),
        (json!({"name": 7}), 422),
    ] {
        let resp = client.post(url("/v1/auth/tokens")).bearer_auth(&admin).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), status, "{body}");
        let error: Value = resp.json().await.unwrap();
        let code = match status {
            409 => "conflict",
            422 => "unprocessable",
            _ => "invalid",
        };
        assert_eq!(error["error"]["code"], code, "{body}");
    }

    // The listing shows the tokens (the refused one is not among them) and no secret.
    let text = client.get(url("/v1/auth/tokens")).bearer_auth(&admin).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains(&ci) && !text.contains(&admin) && !text.contains("secret"));
    let list: Value = serde_json::from_str(&text).unwrap();
    let names: Vec<_> = list["items"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bootstrap", "ci", "child", "shorter"]);

    // Revoke (twice: idempotent); the token stops working; its name is free again.
    for _ in 0..2 {
        let resp = client.delete(url(&format!("/v1/auth/tokens/{ci_id}"))).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(resp.status(), 204);
    }
    let resp = client.get(url("/v1/auth/whoami")).bearer_auth(&ci).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let list: Value =
        client.get(url("/v1/auth/tokens")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"][1]["status"], "revoked");
    let resp =
        client.post(url("/v1/auth/tokens")).bearer_auth(&admin).json(&json!({"name": "ci"})).send().await.unwrap();
    assert_eq!(resp.status(), 201);

    // Someone else's token, an unknown one and a malformed id.
    let (_, other) = user_with_token(&pool, "erin", false, None).await;
    let resp = client.delete(url(&format!("/v1/auth/tokens/{ci_id}"))).bearer_auth(&other).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp =
        client.delete(url(&format!("/v1/auth/tokens/{}", TokenId::new()))).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client.delete(url("/v1/auth/tokens/not-a-uuid")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let list: Value =
        client.get(url("/v1/auth/tokens")).bearer_auth(&other).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let me: Value = client.get(url("/v1/auth/whoami")).bearer_auth(&other).send().await.unwrap().json().await.unwrap();
    assert_eq!((me["is_operator"].clone(), me["projects"].clone()), (json!(false), json!([])));
}

struct Served {
    base: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// Serves the `/v1/auth` routes, plus `/test/fleet` standing in for an operator-only endpoint.
async fn serve(pool: PgPool) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let app = Arc::new(control_plane::testing::app(pool, dir.path()));
    let router = control_plane::http::auth::routes()
        .route("/test/fleet", get(|caller: Caller| async move { caller.require_operator().map_err(ApiError::from) }))
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
    Served { base, _stop: stop, _dir: dir }
}

/// The `/v1/auth` paths and schemas as the API's OpenAPI document will list them.
#[test]
fn the_auth_endpoints_are_described_for_openapi() {
    use control_plane::http::auth::{self as h, BearerAuth};
    use utoipa::OpenApi;

    #[derive(OpenApi)]
    #[openapi(
        paths(h::whoami, h::token_create, h::token_list, h::token_revoke),
        components(schemas(
            h::WhoAmI,
            h::UserView,
            h::ProjectMembershipView,
            h::TokenCreateParams,
            h::TokenCreated,
            h::TokenView,
            h::TokenStatus,
            h::TokenList,
            Role
        )),
        modifiers(&BearerAuth)
    )]
    struct Doc;

    let doc = serde_json::to_value(Doc::openapi()).unwrap();
    for (path, method) in [
        ("/v1/auth/whoami", "get"),
        ("/v1/auth/tokens", "get"),
        ("/v1/auth/tokens", "post"),
        ("/v1/auth/tokens/{id}", "delete"),
    ] {
        assert_eq!(doc["paths"][path][method]["security"], json!([{"bearer": []}]), "{method} {path}");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    // Typed ids are named schemas (string, uuid), collected from the paths.
    let token = &doc["components"]["schemas"]["TokenView"]["properties"];
    assert_eq!(token["id"]["$ref"], "#/components/schemas/TokenId");
    let id = &doc["components"]["schemas"]["TokenId"];
    assert_eq!((id["type"].clone(), id["format"].clone()), (json!("string"), json!("uuid")));
    assert_eq!(doc["components"]["schemas"]["Role"]["enum"], json!(["viewer", "member", "admin"]));
}

/// The console's sign-in without an identity provider: an API token opens a session (cookie
/// HttpOnly, SameSite, no longer than the token, ended with it); changes need the CSRF token;
/// a WebSocket may use the cookie only from the console's own origin; bad tokens open nothing.
/// The console's files are served at `/`, its pages fall back to `index.html`, the API's misses
/// stay JSON.
#[tokio::test]
async fn a_token_signs_in_to_the_console_and_the_console_is_served() {
    use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE, UPGRADE};

    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    auth::bootstrap(&pool, dir.path()).await.unwrap();
    let admin = read_token_file(&dir.path().join(auth::ADMIN_TOKEN_FILE)).expose().to_owned();
    let console = dir.path().join("console");
    std::fs::create_dir_all(console.join("assets")).unwrap();
    std::fs::write(console.join("index.html"), "<!doctype html><title>console</title>").unwrap();
    std::fs::write(console.join("assets/app.abc123.js"), "console.log(1)").unwrap();
    let config = control_plane::config::Config {
        data_dir: dir.path().to_path_buf(),
        console_dir: Some(console),
        store: cloud_store::StoreConfig { dir: dir.path().join("store"), ..Default::default() },
        ..Default::default()
    };
    let app = Arc::new(control_plane::testing::app_with(pool.clone(), config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, control_plane::http::router(app)).await.unwrap() });
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{base}{path}");
    let sign_in = |token: String| client.post(url("/v1/auth/session")).json(&json!({ "token": token })).send();

    // Bad tokens: refused, no session.
    let limited: Value = client
        .post(url("/v1/auth/tokens"))
        .bearer_auth(&admin)
        .json(&json!({"name": "limited", "project": "default", "role": "viewer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let limited = limited["secret"].as_str().unwrap_or_else(|| panic!("{limited}")).to_owned();
    for (token, status, says) in [
        ("not-a-token".to_owned(), 401, "does not start with `cloud_`"),
        ("cloud_nope".to_owned(), 401, "must have 43 characters"),
        (TokenSecret::generate().unwrap().expose().to_owned(), 401, "invalid or expired"),
        (limited, 403, "limited to one project"),
    ] {
        let resp = sign_in(token).await.unwrap();
        assert_eq!(resp.status(), status);
        assert!(resp.headers().get(SET_COOKIE).is_none());
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains(says), "{body}");
    }
    assert_eq!(count(&pool, "sessions").await, 0);

    // A token that ends in a minute: the session ends with it.
    let short: Value = client
        .post(url("/v1/auth/tokens"))
        .bearer_auth(&admin)
        .json(&json!({"name": "short", "expires_in_secs": 60}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = sign_in(short["secret"].as_str().unwrap().to_owned()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let set_cookie = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax") && !set_cookie.contains("Secure"));
    let max_age: i64 = set_cookie.split("Max-Age=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    assert!((1..=60).contains(&max_age), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let session: Value = resp.json().await.unwrap();
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    let whoami = client.get(url("/v1/auth/whoami")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(whoami.status(), 200);

    // Changes need the CSRF token.
    let make = |csrf: Option<&str>| {
        let req = client.post(url("/v1/auth/tokens")).header(COOKIE, &cookie).json(&json!({"name": "from-console"}));
        match csrf {
            Some(c) => req.header("x-csrf-token", c).send(),
            None => req.send(),
        }
    };
    assert_eq!(make(None).await.unwrap().status(), 403);
    assert_eq!(make(Some("wrong")).await.unwrap().status(), 403);
    assert_eq!(make(Some(&csrf)).await.unwrap().status(), 201);

    // A WebSocket with the cookie: only from this origin.
    let ws = |origin: &str| {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(&cookie).unwrap());
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(HOST, HeaderValue::from_str(base.trim_start_matches("http://")).unwrap());
        if !origin.is_empty() {
            h.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        h
    };
    let get = axum::http::Method::GET;
    assert!(auth::authenticate_request(&pool, &get, &ws(&base)).await.is_ok());
    for origin in ["http://evil.example", "", "http://127.0.0.1:1"] {
        let err = auth::authenticate_request(&pool, &get, &ws(origin)).await.unwrap_err();
        assert!(matches!(err, AuthenticationError::CrossOrigin), "{origin}: {err:?}");
    }

    // Revoking the token ends the session.
    let short_id = short["token"]["id"].as_str().unwrap();
    let resp = client.delete(url(&format!("/v1/auth/tokens/{short_id}"))).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let whoami = client.get(url("/v1/auth/whoami")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(whoami.status(), 401);

    // A session past its end: refused, saying to sign in again.
    let admin_user = auth::whoami(&pool, &auth::authenticate(&pool, &bearer(&admin)).await.unwrap()).await.unwrap();
    let ended = auth::session_open(&pool, admin_user.user.id, chrono::Utc::now() - chrono::Duration::seconds(1), None)
        .await
        .unwrap();
    let resp = client
        .get(url("/v1/auth/whoami"))
        .header(COOKIE, format!("cloud_session={}", ended.secret.expose()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("sign in again"), "{body}");

    // Signing out: with the CSRF token; the cookie is cleared and stops working.
    let resp = sign_in(admin.clone()).await.unwrap();
    let cookie = resp.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
    let csrf = resp.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_owned();
    let out = client.delete(url("/v1/auth/session")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(out.status(), 403);
    let out = client
        .delete(url("/v1/auth/session"))
        .header(COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert!(out.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    let whoami = client.get(url("/v1/auth/whoami")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(whoami.status(), 401);

    // The console's files and pages.
    for path in ["/", "/projects/default/instances", "/index.html"] {
        let resp = client.get(url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        assert!(resp.text().await.unwrap().contains("<title>console</title>"), "{path}");
    }
    let asset = client.get(url("/assets/app.abc123.js")).send().await.unwrap();
    assert_eq!(asset.status(), 200);
    assert!(asset.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(asset.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    for path in ["/assets/missing.js", "/.env", "/assets/..%2f..%2fadmin-token"] {
        assert_eq!(client.get(url(path)).send().await.unwrap().status(), 404, "{path}");
    }
    let api_miss = client.get(url("/v1/no-such-thing")).send().await.unwrap();
    assert_eq!(api_miss.status(), 404);
    let body: Value = api_miss.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(client.post(url("/projects/x")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn a_token_over_its_rate_gets_429_with_retry_after_and_others_are_not_held_back() {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    auth::bootstrap(&pool, dir.path()).await.unwrap();
    let admin = read_token_file(&dir.path().join(auth::ADMIN_TOKEN_FILE)).expose().to_owned();
    let (_, other) = user_with_token(&pool, "erin", false, None).await;
    let mut config = control_plane::config::Config {
        data_dir: dir.path().to_path_buf(),
        store: cloud_store::StoreConfig { dir: dir.path().join("store"), ..Default::default() },
        ..Default::default()
    };
    config.limits = control_plane::limits::LimitsConfig { requests_per_second: 1, burst: 3, ..Default::default() };
    let app = Arc::new(control_plane::testing::app_with(pool.clone(), config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, control_plane::http::router(app)).await.unwrap() });
    let client = reqwest::Client::new();
    let whoami = |token: &str| client.get(format!("{base}/v1/auth/whoami")).bearer_auth(token).send();

    for _ in 0..3 {
        assert_eq!(whoami(&admin).await.unwrap().status(), 200);
    }
    let refused = whoami(&admin).await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(retry_after, 1);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["message"].as_str().unwrap().contains("retry in 1s"), "{body}");
    // Another caller's requests are counted apart.
    assert_eq!(whoami(&other).await.unwrap().status(), 200);
    // Once Retry-After has passed, the token is served again.
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    assert_eq!(whoami(&admin).await.unwrap().status(), 200);
    // Refusals are counted (and a request without credentials is never rate limited as anyone's).
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "cloud_rate_limited_requests_total 1"), "{metrics}");
    assert_eq!(client.get(format!("{base}/v1/auth/whoami")).send().await.unwrap().status(), 401);
}
