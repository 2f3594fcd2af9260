//! `/v1/projects/{project}/ssh-keys` over HTTP against a real PostgreSQL.

use control_plane::auth::Role;
use control_plane::db::images::{self, NewImage};
use control_plane::ids::{ImageId, ProjectId};
use reqwest::Method;
use serde_json::{Value, json};

use crate::projects::{project, serve_resources, user_with_token};

/// A real key (`ssh-keygen -t ed25519`) and its fingerprint as `ssh-keygen -l` prints it.
pub const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPiJZlyjkwiOZ6ioeiVhl3Mr9UKSGYM4Ux9okeXfgTH1 alice@laptop";
const ED25519_FINGERPRINT: &str = "SHA256:27dgv7R7ToeA8LV4pFPPcl/rULKrMnDHR+caT2igzWs";
const ECDSA384: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBOg3kmApkdJl6N0oeXv0KB9MlHP417vPKwL7UrnA6h3DKr44e1ZH2AsdN3I/WpvbzYObA/RW+WB55ygG7nvYDSg7tROTvMUO6pVreqPoQuADYwJ9pvMQ53hcr75rKU+0gA==";

#[tokio::test]
async fn keys_are_added_listed_found_and_deleted() {
    let s = serve_resources().await;
    let p = project(&s.pool, "web").await;
    let alice = user_with_token(&s.pool, "alice", false, &[(p, Role::Member)]).await;
    let base = "/v1/projects/web/ssh-keys";

    // Surrounding whitespace (a pasted file's newline) is dropped.
    let body = json!({"name": "laptop", "public_key": format!("{ED25519}\n")});
    let created = s.expect(Method::POST, base, Some(&alice), Some(body.clone()), 201).await;
    assert_eq!(created["public_key"], ED25519);
    assert_eq!(created["fingerprint"], ED25519_FINGERPRINT);
    assert_eq!((created["name"].clone(), created["project_id"].clone()), (json!("laptop"), json!(p.to_string())));
    assert!(created["created_by"].is_string());
    let id = created["id"].as_str().unwrap().to_owned();
    let message = s.expect_error(Method::POST, base, Some(&alice), Some(body), 409, "conflict").await;
    assert!(message.contains("laptop"), "{message}");

    // The same key may be added under another name; another type too; by project id as well.
    let path = format!("/v1/projects/{p}/ssh-keys");
    s.expect(Method::POST, &path, Some(&alice), Some(json!({"name": "again", "public_key": ED25519})), 201).await;
    let ecdsa =
        s.expect(Method::POST, base, Some(&alice), Some(json!({"name": "hsm", "public_key": ECDSA384})), 201).await;
    assert_eq!(ecdsa["fingerprint"], "SHA256:l5eVuFIUnFqc3GgffmuDul81/0Zw8rwcJcf1qtPKs+U");

    for key in ["laptop", id.as_str()] {
        assert_eq!(s.expect(Method::GET, &format!("{base}/{key}"), Some(&alice), None, 200).await, created);
    }
    let page = s.expect(Method::GET, &format!("{base}?limit=2"), Some(&alice), None, 200).await;
    let names: Vec<_> = page["items"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["laptop", "again"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = s.expect(Method::GET, &format!("{base}?limit=2&cursor={cursor}"), Some(&alice), None, 200).await;
    assert_eq!((rest["items"][0]["name"].clone(), rest["next_cursor"].clone()), (json!("hsm"), Value::Null));

    // Delete by id, then by name; a second delete is a 404.
    s.expect(Method::DELETE, &format!("{base}/{id}"), Some(&alice), None, 204).await;
    s.expect(Method::DELETE, &format!("{base}/again"), Some(&alice), None, 204).await;
    for key in ["laptop", id.as_str(), "again"] {
        s.expect_error(Method::DELETE, &format!("{base}/{key}"), Some(&alice), None, 404, "not_found").await;
        s.expect_error(Method::GET, &format!("{base}/{key}"), Some(&alice), None, 404, "not_found").await;
    }
    assert_eq!(s.count("ssh_keys").await, 1);
}

#[tokio::test]
async fn bad_keys_and_bodies_are_refused_naming_the_field_and_create_nothing() {
    let s = serve_resources().await;
    let p = project(&s.pool, "web").await;
    let alice = user_with_token(&s.pool, "alice", false, &[(p, Role::Member)]).await;
    let base = "/v1/projects/web/ssh-keys";
    let body = ED25519.split(' ').nth(1).unwrap();
    let cases = [
        (json!({"name": "k", "public_key": ED25519, "comment": "x"}), 422, "unprocessable", "comment"),
        (json!({"name": "k", "public_key": 42}), 422, "unprocessable", "public_key"),
        (json!({"name": "k"}), 422, "unprocessable", "public_key"),
        (json!({"name": "My Key", "public_key": ED25519}), 422, "unprocessable", "name"),
        (json!({"name": "k", "public_key": ""}), 422, "unprocessable", "public_key"),
        (json!({"name": "k", "public_key": "ssh-ed25519"}), 422, "unprocessable", "public_key"),
        (json!({"name": "k", "public_key": "ssh-ed25519 !!!"}), 422, "unprocessable", "public_key"),
        (json!({"name": "k", "public_key": format!("ssh-rsa {body}")}), 422, "unprocessable", "public_key"),
        (json!({"name": "k", "public_key": format!("ssh-dss {body}")}), 422, "unprocessable", "public_key"),
        (json!({"name": "k", "public_key": format!("no-pty {ED25519}")}), 422, "unprocessable", "public_key"),
        // A second line smuggled in through the comment, in several spellings.
        (
            json!({"name": "k", "public_key": format!("{ED25519}\nssh-ed25519 {body} evil")}),
            422,
            "unprocessable",
            "public_key",
        ),
        (json!({"name": "k", "public_key": format!("ssh-ed25519 {body} a\rb")}), 422, "unprocessable", "public_key"),
        (json!({"name": "k", "public_key": format!("ssh-ed25519 {body} a\u{0}b")}), 422, "unprocessable", "public_key"),
        (
            json!({"name": "k", "public_key": format!("{ED25519} {}", "x".repeat(17 * 1024))}),
            422,
            "unprocessable",
            "public_key",
        ),
        (json!({"name": "k", "public_key": "x".repeat(2 << 20)}), 413, "too_large", "larger than"),
    ];
    for (body, status, code, field) in cases {
        let message = s.expect_error(Method::POST, base, Some(&alice), Some(body.clone()), status, code).await;
        assert!(message.contains(field), "{body}: {message}");
    }
    assert_eq!(s.count("ssh_keys").await, 0);
}

#[tokio::test]
async fn a_key_used_by_an_instance_cannot_be_deleted() {
    let s = serve_resources().await;
    let p = project(&s.pool, "web").await;
    let alice = user_with_token(&s.pool, "alice", false, &[(p, Role::Member)]).await;
    let key = json!({"name": "laptop", "public_key": ED25519});
    let created = s.expect(Method::POST, "/v1/projects/web/ssh-keys", Some(&alice), Some(key), 201).await;
    instance_using(&s.pool, p, "vm-1", Some(&created["id"])).await;

    let message =
        s.expect_error(Method::DELETE, "/v1/projects/web/ssh-keys/laptop", Some(&alice), None, 409, "conflict").await;
    assert!(message.contains("vm-1"), "{message}");
    assert_eq!(s.count("ssh_keys").await, 1);
}

/// An instance row of `project` on a fresh image, injected with the key `key_id` (if any);
/// returns the image's id. The instance API is not needed to test what references keys/images.
pub async fn instance_using(pool: &sqlx::PgPool, project: ProjectId, name: &str, key_id: Option<&Value>) -> ImageId {
    let mut conn = pool.acquire().await.unwrap();
    let image = NewImage {
        id: ImageId::new(),
        project_id: Some(project),
        name: &format!("img-{name}"),
        state: control_plane::states::ImageState::Available,
        boot_mode: control_plane::states::BootMode::Firmware,
        disk_sha256: Some(&"0".repeat(64)),
        disk_size_bytes: Some(1),
        disk_virtual_bytes: Some(1),
        kernel_sha256: None,
        initrd_sha256: None,
        kernel_cmdline: "",
        firmware: Some("uefi"),
    };
    let image = images::image_create(&mut conn, &image).await.unwrap();
    instance_on_image(pool, project, name, image.id, key_id).await;
    image.id
}

/// An instance row of `project` booting `image`, injected with the key `key_id` (if any).
pub async fn instance_on_image(
    pool: &sqlx::PgPool,
    project: ProjectId,
    name: &str,
    image: ImageId,
    key_id: Option<&Value>,
) {
    let instance = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO instances (id, project_id, name, image_id, vcpus, memory_bytes, disk_bytes)
         VALUES ($1, $2, $3, $4, 1, 134217728, 1073741824)",
    )
    .bind(instance)
    .bind(project)
    .bind(name)
    .bind(image)
    .execute(pool)
    .await
    .unwrap();
    if let Some(key) = key_id {
        let key: uuid::Uuid = key.as_str().unwrap().parse().unwrap();
        sqlx::query("INSERT INTO instance_ssh_keys (instance_id, ssh_key_id) VALUES ($1, $2)")
            .bind(instance)
            .bind(key)
            .execute(pool)
            .await
            .unwrap();
    }
}
