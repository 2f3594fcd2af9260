//! `/v1/projects/{project}/images` over HTTP against a real PostgreSQL, with files registered
//! from this machine into the blob store.

use std::path::{Path, PathBuf};

use control_plane::auth::Role;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::projects::{Served, project, serve_resources, user_with_token};

/// Image files in a temporary directory: `vmlinuz`, `initrd.img`, `disk.img`.
pub struct ImageFiles {
    pub dir: tempfile::TempDir,
}

impl ImageFiles {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Three small files with distinct contents.
pub fn image_files() -> ImageFiles {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vmlinuz"), b"kernel bytes").unwrap();
    std::fs::write(dir.path().join("initrd.img"), b"initrd bytes").unwrap();
    std::fs::write(dir.path().join("disk.img"), vec![7u8; 3 << 20]).unwrap();
    ImageFiles { dir }
}

/// A `direct_kernel` registration of the three files.
pub fn direct_kernel_image(name: &str, files: &ImageFiles) -> Value {
    json!({
        "name": name,
        "boot_mode": "direct_kernel",
        "kernel_path": files.path("vmlinuz"),
        "initrd_path": files.path("initrd.img"),
        "disk_path": files.path("disk.img"),
        "kernel_cmdline": "console=ttyS0 root=/dev/vda",
    })
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// The names of the files in the blob store, sorted.
fn blobs(s: &Served) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(&s.blob_dir) else { return Vec::new() };
    let mut names: Vec<_> = entries.map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn registering_copies_the_files_into_the_blob_store_by_sha256_once() {
    let s = serve_resources().await;
    let p = project(&s.pool, "web").await;
    let ops = user_with_token(&s.pool, "ops", true, &[(p, Role::Member)]).await;
    let files = image_files();
    let base = "/v1/projects/web/images";

    let image = s.expect(Method::POST, base, Some(&ops), Some(direct_kernel_image("debian", &files)), 201).await;
    let (kernel, initrd, disk) =
        (sha256_of(&files.path("vmlinuz")), sha256_of(&files.path("initrd.img")), sha256_of(&files.path("disk.img")));
    assert_eq!(image["kernel_sha256"], kernel.as_str());
    assert_eq!(image["initrd_sha256"], initrd.as_str());
    assert_eq!(image["disk_sha256"], disk.as_str());
    assert_eq!(image["disk_size_bytes"], 3 << 20);
    assert_eq!((image["state"].clone(), image["boot_mode"].clone()), (json!("available"), json!("direct_kernel")));
    assert_eq!((image["public"].clone(), image["project_id"].clone()), (json!(false), json!(p.to_string())));
    assert_eq!(image["kernel_cmdline"], "console=ttyS0 root=/dev/vda");
    let mut expected = vec![kernel.clone(), initrd.clone(), disk.clone()];
    expected.sort();
    assert_eq!(blobs(&s), expected);
    for sha in &expected {
        assert_eq!(&sha256_of(&s.blob_dir.join(sha)), sha);
    }

    // The same files again (another name, and a public image): nothing new in the store, and
    // no temporary file left behind.
    s.expect(Method::POST, base, Some(&ops), Some(direct_kernel_image("debian-copy", &files)), 201).await;
    let firmware =
        json!({"name": "bios", "boot_mode": "firmware", "disk_path": files.path("disk.img"), "public": true});
    let public = s.expect(Method::POST, base, Some(&ops), Some(firmware.clone()), 201).await;
    assert_eq!((public["public"].clone(), public["project_id"].clone()), (json!(true), Value::Null));
    assert_eq!(public["kernel_sha256"], Value::Null);
    assert_eq!(public["firmware"], "uefi", "whole-disk images boot with UEFI unless told otherwise");
    assert_eq!(blobs(&s), expected);
    let mut bios = firmware.clone();
    bios["name"] = json!("legacy");
    bios["firmware"] = json!("bios");
    let legacy = s.expect(Method::POST, base, Some(&ops), Some(bios), 201).await;
    assert_eq!(legacy["firmware"], "bios");
    s.expect(Method::DELETE, &format!("{base}/legacy"), Some(&ops), None, 204).await;

    // Names are unique per owner: 409 before anything is copied.
    let message = s
        .expect_error(Method::POST, base, Some(&ops), Some(direct_kernel_image("debian", &files)), 409, "conflict")
        .await;
    assert!(message.contains("debian"), "{message}");
    s.expect_error(Method::POST, base, Some(&ops), Some(firmware), 409, "conflict").await;
    assert_eq!(s.count("images").await, 3);

    // Get by name or id, list (paginated), delete.
    let id = image["id"].as_str().unwrap();
    for key in ["debian", id] {
        assert_eq!(s.expect(Method::GET, &format!("{base}/{key}"), Some(&ops), None, 200).await, image);
    }
    let page = s.expect(Method::GET, &format!("{base}?limit=2"), Some(&ops), None, 200).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = s.expect(Method::GET, &format!("{base}?cursor={cursor}"), Some(&ops), None, 200).await;
    let names: Vec<_> = [&page, &rest]
        .iter()
        .flat_map(|p| p["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(names, ["debian", "debian-copy", "bios"]);
    s.expect(Method::DELETE, &format!("{base}/{id}"), Some(&ops), None, 204).await;
    s.expect_error(Method::DELETE, &format!("{base}/{id}"), Some(&ops), None, 404, "not_found").await;
    s.expect_error(Method::GET, &format!("{base}/debian"), Some(&ops), None, 404, "not_found").await;
    // Blobs outlive their images (another image may share them).
    assert_eq!(blobs(&s), expected);
}

#[tokio::test]
async fn public_images_are_seen_by_every_project_and_deleted_only_by_operators() {
    let s = serve_resources().await;
    let (a, b) = (project(&s.pool, "proj-a").await, project(&s.pool, "proj-b").await);
    let ops = user_with_token(&s.pool, "ops", true, &[(a, Role::Member)]).await;
    let bob = user_with_token(&s.pool, "bob", false, &[(b, Role::Admin)]).await;
    let files = image_files();
    let public = json!({"name": "bios", "boot_mode": "firmware", "disk_path": files.path("disk.img"), "public": true});
    let image = s.expect(Method::POST, "/v1/projects/proj-a/images", Some(&ops), Some(public), 201).await;

    let listed = s.expect(Method::GET, "/v1/projects/proj-b/images", Some(&bob), None, 200).await;
    assert_eq!(listed["items"], json!([image]));
    assert_eq!(s.expect(Method::GET, "/v1/projects/proj-b/images/bios", Some(&bob), None, 200).await, image);
    // A project image of the same name hides the public one from its project only.
    let own = json!({"name": "bios", "boot_mode": "firmware", "disk_path": files.path("vmlinuz")});
    let shadow = s.expect(Method::POST, "/v1/projects/proj-a/images", Some(&ops), Some(own), 201).await;
    assert_eq!(s.expect(Method::GET, "/v1/projects/proj-a/images/bios", Some(&ops), None, 200).await, shadow);
    assert_eq!(s.expect(Method::GET, "/v1/projects/proj-b/images/bios", Some(&bob), None, 200).await, image);

    // Registering from host files is for operators, even a project's admin may not.
    let mine = json!({"name": "mine", "boot_mode": "firmware", "disk_path": files.path("disk.img")});
    let message =
        s.expect_error(Method::POST, "/v1/projects/proj-b/images", Some(&bob), Some(mine), 403, "forbidden").await;
    assert!(message.contains("operators"), "{message}");
    s.expect_error(Method::DELETE, "/v1/projects/proj-b/images/bios", Some(&bob), None, 403, "forbidden").await;
    s.expect(
        Method::DELETE,
        &format!("/v1/projects/proj-a/images/{}", image["id"].as_str().unwrap()),
        Some(&ops),
        None,
        204,
    )
    .await;
    s.expect_error(Method::GET, "/v1/projects/proj-b/images/bios", Some(&bob), None, 404, "not_found").await;
}

#[tokio::test]
async fn bad_registrations_are_refused_naming_the_field_and_store_nothing() {
    let s = serve_resources().await;
    let p = project(&s.pool, "web").await;
    let ops = user_with_token(&s.pool, "ops", true, &[(p, Role::Member)]).await;
    let files = image_files();
    let good = direct_kernel_image("img", &files);
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases = [
        (with("size", json!(1)), "size"),
        (with("boot_mode", json!("pxe")), "boot_mode"),
        (with("public", json!("yes")), "public"),
        (with("name", json!("Debian 12")), "name"),
        (with("kernel_path", json!("vmlinuz")), "kernel_path"),
        (with("disk_path", json!("../disk.img")), "disk_path"),
        (with("kernel_cmdline", json!("quiet\ninit=/bin/sh")), "kernel_cmdline"),
        (with("kernel_cmdline", json!("x".repeat(5000))), "kernel_cmdline"),
        (without("kernel_path"), "kernel_path"),
        (json!({"name": "fw", "boot_mode": "firmware"}), "disk_path"),
        (with("boot_mode", json!("firmware")), "kernel_path"),
        (with("firmware", json!("uefi")), "firmware"),
        (with("firmware", json!("coreboot")), "firmware"),
    ];
    for (body, field) in cases {
        let message = s
            .expect_error(Method::POST, "/v1/projects/web/images", Some(&ops), Some(body.clone()), 422, "unprocessable")
            .await;
        assert!(message.contains(field), "{body}: {message}");
    }
    // No file at a path is 404, naming the field.
    for (body, field) in [
        (with("initrd_path", json!(files.path("missing.img"))), "initrd_path"),
        (with("disk_path", json!(files.dir.path())), "disk_path"),
    ] {
        let message = s
            .expect_error(Method::POST, "/v1/projects/web/images", Some(&ops), Some(body.clone()), 404, "not_found")
            .await;
        assert!(message.contains(field), "{body}: {message}");
    }
    let huge = with("kernel_cmdline", json!("x".repeat(2 << 20)));
    s.expect_error(Method::POST, "/v1/projects/web/images", Some(&ops), Some(huge), 413, "too_large").await;
    assert_eq!(s.count("images").await, 0);
    // A missing file is only noticed after the others were copied: those blobs may stay (they
    // are content-addressed and harmless), but no temporary file does.
    assert!(blobs(&s).iter().all(|name| name.len() == 64), "{:?}", blobs(&s));
}

#[tokio::test]
async fn an_image_used_by_an_instance_cannot_be_deleted() {
    let s = serve_resources().await;
    let p = project(&s.pool, "web").await;
    let alice = user_with_token(&s.pool, "alice", false, &[(p, Role::Member)]).await;
    crate::ssh_keys::instance_using(&s.pool, p, "vm-1", None).await;
    let message =
        s.expect_error(Method::DELETE, "/v1/projects/web/images/img-vm-1", Some(&alice), None, 409, "conflict").await;
    assert!(message.contains("vm-1"), "{message}");
    assert_eq!(s.count("images").await, 1);

    // Once the instance is deleted (its row stays as history), the image can go.
    sqlx::query("UPDATE instances SET state = 'deleted', deleted_at = now() WHERE name = 'vm-1'")
        .execute(&s.pool)
        .await
        .unwrap();
    s.expect(Method::DELETE, "/v1/projects/web/images/img-vm-1", Some(&alice), None, 204).await;
    assert_eq!(s.count("images").await, 0);
    let image: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT image_id FROM instances WHERE name = 'vm-1'").fetch_one(&s.pool).await.unwrap();
    assert_eq!(image, None, "the deleted instance's row stays, without its image");
}
