//! The instance and operation endpoints in-process (no executor runs, so operations stay
//! pending): tenant isolation, roles, and bad input that must create nothing.

use std::sync::Arc;

use control_plane::auth::Role;
use control_plane::http;
use control_plane::testing::TestDatabase;
use reqwest::Method;
use serde_json::{Value, json};

use crate::projects::{project, user_with_token};

pub struct Api {
    base: String,
    pub pool: sqlx::PgPool,
    client: reqwest::Client,
    _db: TestDatabase,
    _dir: tempfile::TempDir,
}

impl Api {
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn instances(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM instances").fetch_one(&self.pool).await.unwrap()
    }
}

pub async fn serve_api() -> Api {
    serve_api_with(None).await
}

/// [`serve_api`], with the operation executor running when `operations` is given. Its one host
/// (`hv-1`) has an agent endpoint nothing answers at (TEST-NET-1).
pub async fn serve_api_with(operations: Option<control_plane::operations::OperationsConfig>) -> Api {
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = control_plane::config::Config { data_dir: dir.path().to_owned(), ..Default::default() };
    config.store.dir = dir.path().join("store");
    let run_executor = operations.is_some();
    if let Some(ops) = operations {
        config.operations = ops;
    }
    let app = Arc::new(control_plane::testing::app_with(pool.clone(), config));
    if run_executor {
        let app = app.clone();
        tokio::spawn(async move { app.executor.clone().run(app, std::future::pending()).await });
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, http::router(app)).await.unwrap() });
    sqlx::query(
        "INSERT INTO images (id, project_id, name, state, boot_mode, kernel_sha256)
         VALUES ($1, NULL, 'img', 'available', 'direct_kernel', repeat('a', 64))",
    )
    .bind(uuid::Uuid::new_v4())
    .execute(&pool)
    .await
    .unwrap();
    control_plane::testing::add_host(&pool, "hv-1", 32, 256, 1000).await.unwrap();
    Api { base, pool, client: reqwest::Client::new(), _db: db, _dir: dir }
}

#[tokio::test]
async fn another_project_sees_404_a_viewer_cannot_mutate_and_no_token_is_401() {
    let api = serve_api().await;
    let a = project(&api.pool, "team-a").await;
    let b = project(&api.pool, "team-b").await;
    let alice = user_with_token(&api.pool, "alice", false, &[(a, Role::Admin)]).await;
    let bob = user_with_token(&api.pool, "bob", false, &[(b, Role::Admin)]).await;
    let vic = user_with_token(&api.pool, "vic", false, &[(a, Role::Viewer)]).await;

    let body = json!({"name": "web-1", "image": "img", "vcpus": 1, "memory_mib": 256});
    let (status, created) =
        api.call(Method::POST, "/v1/projects/team-a/instances", Some(&alice), Some(body.clone())).await;
    assert_eq!(status, 202, "{created}");
    let op = created["operation"]["id"].as_str().unwrap().to_owned();
    let id = created["instance"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["operation"]["state"], "pending");

    let a_paths = [
        (Method::GET, "/v1/projects/team-a/instances".to_owned()),
        (Method::GET, "/v1/projects/team-a/instances/web-1".to_owned()),
        (Method::GET, format!("/v1/projects/team-a/instances/{id}")),
        (Method::POST, "/v1/projects/team-a/instances/web-1/start".to_owned()),
        (Method::POST, "/v1/projects/team-a/instances/web-1/stop".to_owned()),
        (Method::POST, "/v1/projects/team-a/instances/web-1/reboot".to_owned()),
        (Method::DELETE, "/v1/projects/team-a/instances/web-1".to_owned()),
        (Method::GET, format!("/v1/projects/{a}/operations")),
        (Method::GET, format!("/v1/operations/{op}")),
        (Method::GET, format!("/v1/operations/{op}/wait?timeout_secs=1")),
    ];
    // Bob (another project): everything of team-a is a 404, indistinguishable from nothing.
    for (method, path) in &a_paths {
        let (status, err) = api.call(method.clone(), path, Some(&bob), None).await;
        assert_eq!(status, 404, "bob {method} {path}: {err}");
        assert_eq!(err["error"]["code"], "not_found");
    }
    let (status, _) = api.call(Method::POST, "/v1/projects/team-a/instances", Some(&bob), Some(body.clone())).await;
    assert_eq!(status, 404);
    // Through his own project he cannot reach it either.
    let (status, _) = api.call(Method::GET, &format!("/v1/projects/{b}/instances/{id}"), Some(&bob), None).await;
    assert_eq!(status, 404);

    // Vic (viewer of team-a): reads work, changes are 403.
    let (status, got) = api.call(Method::GET, "/v1/projects/team-a/instances/web-1", Some(&vic), None).await;
    assert_eq!((status, got["name"].clone()), (200, json!("web-1")));
    let (status, _) = api.call(Method::GET, &format!("/v1/operations/{op}"), Some(&vic), None).await;
    assert_eq!(status, 200);
    let mut other = body.clone();
    other["name"] = json!("web-2");
    let (status, err) = api.call(Method::POST, "/v1/projects/team-a/instances", Some(&vic), Some(other)).await;
    assert_eq!(status, 403, "{err}");
    for (method, path) in &a_paths[3..7] {
        let (status, err) = api.call(method.clone(), path, Some(&vic), None).await;
        assert_eq!(status, 403, "vic {method} {path}: {err}");
    }

    // Nobody without a token.
    for (method, path) in &a_paths {
        let (status, _) = api.call(method.clone(), path, None, None).await;
        assert_eq!(status, 401, "anonymous {method} {path}");
    }
    assert_eq!(api.instances().await, 1);
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_creates_nothing() {
    let api = serve_api().await;
    let a = project(&api.pool, "team-a").await;
    let alice = user_with_token(&api.pool, "alice", false, &[(a, Role::Admin)]).await;
    let good = json!({"name": "web-1", "image": "img", "vcpus": 1, "memory_mib": 256});
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"name": "web-1", "image": "img", "vcpus": 1, "memory_mib": 256, "colour": "red"}), 422, "colour"),
        (json!({"name": "web-1", "image": "img", "vcpus": "one", "memory_mib": 256}), 422, "vcpus"),
        (json!({"name": "Web_1", "image": "img", "vcpus": 1, "memory_mib": 256}), 422, "name"),
        (json!({"name": "web-1", "image": "img", "vcpus": 0, "memory_mib": 256}), 422, "vcpus"),
        (json!({"name": "web-1", "image": "img", "vcpus": 1, "memory_mib": 4}), 422, "memory_mib"),
        // What the body names and does not exist is 404, naming the field.
        (json!({"name": "web-1", "image": "nope", "vcpus": 1, "memory_mib": 256}), 404, "image"),
        (
            json!({"name": "web-1", "image": "img", "vcpus": 1, "memory_mib": 256, "ssh_keys": ["nobody"]}),
            404,
            "ssh_keys",
        ),
        // Valid, but no host has 48 vCPUs: refused at once, saying which filter removed it.
        (json!({"name": "web-1", "image": "img", "vcpus": 48, "memory_mib": 256}), 503, "not enough vCPUs"),
    ];
    for (body, status, field) in cases {
        let (got, err) =
            api.call(Method::POST, "/v1/projects/team-a/instances", Some(&alice), Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {err}");
        assert!(err["error"]["message"].as_str().unwrap_or("").contains(field), "{body}: {err}");
    }
    assert_eq!(api.instances().await, 0);
    let ops: i64 = sqlx::query_scalar("SELECT count(*) FROM operations").fetch_one(&api.pool).await.unwrap();
    assert_eq!(ops, 0);

    // A duplicate name is a 409; a lifecycle change in the wrong state is a 409 too.
    let (status, _) = api.call(Method::POST, "/v1/projects/team-a/instances", Some(&alice), Some(good.clone())).await;
    assert_eq!(status, 202);
    let (status, err) = api.call(Method::POST, "/v1/projects/team-a/instances", Some(&alice), Some(good)).await;
    assert_eq!((status, err["error"]["code"].clone()), (409, json!("conflict")), "{err}");
    let (status, err) = api.call(Method::POST, "/v1/projects/team-a/instances/web-1/stop", Some(&alice), None).await;
    assert_eq!(status, 409, "stopping an instance that is still being created: {err}");
    assert_eq!(api.instances().await, 1);
}

/// Creates racing with one Idempotency-Key, each for another name: one is recorded, with its
/// operation; every other answer is a conflict (the key was used for another request, or is in
/// use by a concurrent one), never an error of the server.
#[tokio::test]
async fn creates_racing_with_one_idempotency_key_record_one_instance() {
    let api = serve_api().await;
    let a = project(&api.pool, "team-a").await;
    let alice = user_with_token(&api.pool, "alice", false, &[(a, Role::Admin)]).await;
    let url = format!("{}/v1/projects/team-a/instances", api.base);
    let answers = futures::future::join_all((0..16).map(|n| {
        let request = api
            .client
            .post(&url)
            .bearer_auth(&alice)
            .header("Idempotency-Key", "race-1")
            .json(&json!({"name": format!("web-{n}"), "image": "img", "vcpus": 1, "memory_mib": 256}));
        async move {
            let resp = request.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    }))
    .await;
    let accepted: Vec<&Value> = answers.iter().filter(|(status, _)| *status == 202).map(|(_, body)| body).collect();
    assert_eq!(accepted.len(), 1, "{answers:?}");
    for (status, body) in &answers {
        assert!(*status == 202 || (*status == 409 && body["error"]["code"] == json!("conflict")), "{status}: {body}");
    }
    assert_eq!(api.instances().await, 1);
    let ops: i64 = sqlx::query_scalar("SELECT count(*) FROM operations").fetch_one(&api.pool).await.unwrap();
    assert_eq!(ops, 1);
}

/// Pages of instances (oldest first) and of operations (newest first) walked with their cursors
/// give every item once, in order, and the query plans read the list indexes.
#[tokio::test]
async fn instance_and_operation_lists_page_through_everything_once_in_order() {
    let api = serve_api().await;
    let a = project(&api.pool, "team-a").await;
    let alice = user_with_token(&api.pool, "alice", false, &[(a, Role::Admin)]).await;
    let mut names = Vec::new();
    for n in 0..5 {
        let name = format!("web-{n}");
        let body = json!({"name": name, "image": "img", "vcpus": 1, "memory_mib": 256});
        let (status, created) = api.call(Method::POST, "/v1/projects/team-a/instances", Some(&alice), Some(body)).await;
        assert_eq!(status, 202, "{created}");
        names.push(name);
    }
    let walk = |first: String| {
        let (api, alice) = (&api, &alice);
        async move {
            let (mut seen, mut path) = (Vec::new(), first.clone());
            loop {
                let (status, page) = api.call(Method::GET, &path, Some(alice), None).await;
                assert_eq!(status, 200, "{page}");
                let items = page["items"].as_array().unwrap();
                assert!(items.len() <= 2, "{page}");
                seen.extend(items.iter().cloned());
                match page["next_cursor"].as_str() {
                    Some(cursor) => path = format!("{first}&cursor={cursor}"),
                    None => return seen,
                }
            }
        }
    };
    let instances = walk("/v1/projects/team-a/instances?limit=2".to_owned()).await;
    let listed: Vec<&str> = instances.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(listed, names, "oldest first, each once");
    let operations = walk(format!("/v1/projects/{a}/operations?limit=2")).await;
    let targets: Vec<&str> = operations.iter().map(|o| o["target_id"].as_str().unwrap()).collect();
    let mut ids: Vec<&str> = instances.iter().map(|i| i["id"].as_str().unwrap()).collect();
    ids.reverse();
    assert_eq!(targets, ids, "newest first, each once");

    // With many rows the pages are read through the list indexes, from the cursor.
    let mut conn = api.pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off").execute(&mut *conn).await.unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM instances i WHERE i.project_id = $1 AND i.deleted_at IS NULL
           AND (i.created_at, i.id) > (now(), gen_random_uuid()) ORDER BY i.created_at, i.id LIMIT 100",
    )
    .bind(a)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(plan.join("\n").contains("instances_project_list_idx"), "{plan:#?}");
}

#[tokio::test]
async fn past_a_quota_a_create_is_refused_naming_it_and_changes_nothing() {
    let api = serve_api().await;
    let a = project(&api.pool, "team-q").await;
    let alice = user_with_token(&api.pool, "alice", false, &[(a, Role::Admin)]).await;
    let ops = user_with_token(&api.pool, "ops", true, &[]).await;
    let create = |name: String, vcpus: u32| {
        let body = json!({"name": name, "image": "img", "vcpus": vcpus, "memory_mib": 256});
        api.call(Method::POST, "/v1/projects/team-q/instances", Some(&alice), Some(body))
    };

    // The defaults ([quotas]) until an operator sets the project's own; members may read them.
    let (status, quotas) = api.call(Method::GET, "/v1/projects/team-q/quotas", Some(&alice), None).await;
    assert_eq!(status, 200, "{quotas}");
    assert_eq!(quotas["limits"]["instances"], 1000);
    assert_eq!(quotas["usage"]["instances"], 0);
    // Only operators set them, and never below 0.
    let three = json!({"instances": 3, "vcpus": 4});
    let (status, err) = api.call(Method::PUT, "/v1/projects/team-q/quotas", Some(&alice), Some(three.clone())).await;
    assert_eq!((status, err["error"]["code"].as_str()), (403, Some("forbidden")), "{err}");
    let (status, err) =
        api.call(Method::PUT, "/v1/projects/team-q/quotas", Some(&ops), Some(json!({"vcpus": -1}))).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().starts_with("vcpus:"), "{err}");
    let (status, set) = api.call(Method::PUT, "/v1/projects/team-q/quotas", Some(&ops), Some(three)).await;
    assert_eq!(status, 200, "{set}");
    assert_eq!((set["limits"]["instances"].as_i64(), set["limits"]["vcpus"].as_i64()), (Some(3), Some(4)));

    // Ten creates at once of one vCPU against 3 instances: exactly 3 are accepted.
    let results = futures::future::join_all((0..10).map(|i| create(format!("q-{i}"), 1))).await;
    let accepted = results.iter().filter(|(s, _)| *s == 202).count();
    assert_eq!(accepted, 3, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != 202) {
        assert_eq!(*status, 403, "{body}");
        assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("quotas.instances") && message.contains("at most 3 instances"), "{message}");
    }
    // Room for a fourth instance, but not for its vCPUs: that quota is named.
    let (status, _) = api
        .call(Method::PUT, "/v1/projects/team-q/quotas", Some(&ops), Some(json!({"instances": 10, "vcpus": 4})))
        .await;
    assert_eq!(status, 200);
    let (status, err) = create("big".to_owned(), 2).await;
    assert_eq!(status, 403, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("quotas.vcpus"), "{err}");
    assert_eq!(api.instances().await, 3, "a refused create leaves nothing behind");
    let (status, quotas) = api.call(Method::GET, "/v1/projects/team-q/quotas", Some(&alice), None).await;
    assert_eq!(status, 200);
    assert_eq!((quotas["usage"]["instances"].as_i64(), quotas["usage"]["vcpus"].as_i64()), (Some(3), Some(3)));
    // An instance deleted (as the delete operation ends: `deleted_at` set) frees its room.
    let first = &results.iter().find(|(s, _)| *s == 202).unwrap().1["instance"]["id"];
    let mut conn = api.pool.acquire().await.unwrap();
    control_plane::db::instances::instance_mark_deleted(&mut conn, first.as_str().unwrap().parse().unwrap())
        .await
        .unwrap();
    drop(conn);
    let (_, quotas) = api.call(Method::GET, "/v1/projects/team-q/quotas", Some(&alice), None).await;
    assert_eq!((quotas["usage"]["instances"].as_i64(), quotas["usage"]["vcpus"].as_i64()), (Some(2), Some(2)));
    let (status, body) = create("big".to_owned(), 2).await;
    assert_eq!(status, 202, "{body}");
    // Two creates that both passed the check (no lock is taken there): the database refuses the
    // one that commits second, with the same message.
    let (status, _) =
        api.call(Method::PUT, "/v1/projects/team-q/quotas", Some(&ops), Some(json!({"instances": 4}))).await;
    assert_eq!(status, 200);
    let ask = control_plane::quotas::Ask { instances: 1, vcpus: 1, ..Default::default() };
    let defaults = control_plane::quotas::QuotasConfig::default().amounts();
    let mut racing = Vec::new();
    for name in ["race-1", "race-2"] {
        let mut tx = api.pool.begin().await.unwrap();
        let fits = control_plane::quotas::check(&mut tx, a, &defaults, &ask).await.unwrap();
        assert_eq!(fits, Ok(()), "{name} fits when checked");
        sqlx::query(
            "INSERT INTO instances (id, project_id, name, image_id, vcpus, memory_bytes, disk_bytes)
             SELECT $1, $2, $3, id, 1, 256 << 20, 1 << 30 FROM images WHERE name = 'img'",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(a)
        .bind(name)
        .execute(&mut *tx)
        .await
        .unwrap();
        racing.push(tx);
    }
    let second = racing.pop().unwrap();
    racing.pop().unwrap().commit().await.expect("the first to commit takes the last room");
    let refused = control_plane::app::AppError::from(second.commit().await.expect_err("no room left at commit"));
    let control_plane::app::AppError::QuotaExceeded(message) = refused else { panic!("{refused:?}") };
    assert!(message.contains("quotas.instances") && message.contains("at most 4 instances"), "{message}");
    let (_, quotas) = api.call(Method::GET, "/v1/projects/team-q/quotas", Some(&alice), None).await;
    assert_eq!(quotas["usage"]["instances"], 4, "{quotas}");
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM instances WHERE project_id = $1 AND deleted_at IS NULL")
        .bind(a)
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(live, 4, "the refused commit left nothing behind");
    // Leaving a quota out sets it back to the default.
    let (_, reset) = api.call(Method::PUT, "/v1/projects/team-q/quotas", Some(&ops), Some(json!({}))).await;
    assert_eq!(reset["limits"]["instances"], 1000, "{reset}");
}
