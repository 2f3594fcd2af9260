//! Golden outputs of `list` and `get` for instances and SSH keys, rendered from fixed objects.
//! `UPDATE_GOLDEN=1 cargo nextest run -p cloudctl golden` rewrites the files.

use std::path::PathBuf;

use cloudctl::client::{Instance, SshKey};
use cloudctl::output::{Format, render_list, render_one};
use serde_json::json;

fn instances() -> Vec<Instance> {
    let a = json!({
        "id": "0b7f4a8e-2c51-4d0e-9f3a-6e1d2c3b4a50", "project_id": "7d9e1f20-3a4b-4c5d-8e6f-708192a3b4c5",
        "name": "web-1", "state": "running", "state_reason": null, "generation": 3,
        "host_id": "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d", "image_id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        "vcpus": 1, "memory_bytes": 268_435_456_i64, "disk_bytes": 21_474_836_480_i64, "anti_affinity_group": null,
        "address": "10.80.1.5", "ready_at": "2025-03-01T10:00:08Z",
        "ssh_host_keys": [{"key_type": "ssh-ed25519",
            "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMMo2cAuH0peQsTXfAvGoo5dpu6+bo5V0EOLqa4W2aD1",
            "fingerprint": "SHA256:JUXs+kbfJ84YQEqd9C8cFfE5n3lZ+YPW9jB97xuwIBg"}],
        "created_at": "2025-03-01T10:00:00.123456Z", "updated_at": "2025-03-01T10:00:09Z"
    });
    let b = json!({
        "id": "9c8b7a6f-5e4d-4c3b-a2a1-f0e9d8c7b6a5", "project_id": "7d9e1f20-3a4b-4c5d-8e6f-708192a3b4c5",
        "name": "db-1", "state": "failed", "state_reason": "no host has 64 free vCPUs", "generation": 1,
        "host_id": null, "image_id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        "vcpus": 64, "memory_bytes": 2_147_483_648_i64, "disk_bytes": 0, "anti_affinity_group": "db",
        "address": null, "created_at": "2025-03-02T11:30:00Z", "updated_at": "2025-03-02T11:30:01Z"
    });
    vec![serde_json::from_value(a).unwrap(), serde_json::from_value(b).unwrap()]
}

fn ssh_keys() -> Vec<SshKey> {
    let a = json!({
        "id": "3e2d1c0b-a9f8-4e7d-b6c5-a4b3c2d1e0f9", "project_id": "7d9e1f20-3a4b-4c5d-8e6f-708192a3b4c5",
        "name": "alice",
        "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPiJZlyjkwiOZ6ioeiVhl3Mr9UKSGYM4Ux9okeXfgTH1 alice@laptop",
        "fingerprint": "SHA256:Xh5mC4B2Q8p1o0Yw2n9r3k7L6j5H4g3F2d1S0a9Z8x7",
        "created_by": "4f5e6d7c-8b9a-4d0c-9e1f-2a3b4c5d6e7f", "created_at": "2025-02-28T09:15:00Z"
    });
    let b = json!({
        "id": "6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d", "project_id": "7d9e1f20-3a4b-4c5d-8e6f-708192a3b4c5",
        "name": "ci", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmCrDm1LDXwmTbHGEHNqpI6RTqyTt0MmNxqPuW0mMtT",
        "fingerprint": "SHA256:q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c", "created_by": null,
        "created_at": "2025-03-01T00:00:00Z", "labels": {"team": "platform"}
    });
    vec![serde_json::from_value(a).unwrap(), serde_json::from_value(b).unwrap()]
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{name} differs from the golden file (UPDATE_GOLDEN=1 rewrites it)");
}

const FORMATS: [(Format, &str); 3] = [(Format::Table, "txt"), (Format::Json, "json"), (Format::Yaml, "yaml")];

#[test]
fn instance_list_and_get_match_the_golden_files() {
    let items = instances();
    for (format, ext) in FORMATS {
        check(&format!("instance-list.{ext}"), &render_list(&items, format).unwrap());
        check(&format!("instance-get.{ext}"), &render_one(&items[0], format).unwrap());
    }
    assert_eq!(render_list(&items, Format::Name).unwrap(), "web-1\ndb-1\n");
    assert_eq!(render_one(&items[1], Format::Id).unwrap(), "9c8b7a6f-5e4d-4c3b-a2a1-f0e9d8c7b6a5\n");
}

#[test]
fn ssh_key_list_and_get_match_the_golden_files() {
    let items = ssh_keys();
    for (format, ext) in FORMATS {
        check(&format!("ssh-key-list.{ext}"), &render_list(&items, format).unwrap());
        check(&format!("ssh-key-get.{ext}"), &render_one(&items[1], format).unwrap());
    }
    assert_eq!(render_list(&items, Format::Id).unwrap().lines().count(), 2);
}

#[test]
fn json_output_is_the_api_object_unknown_fields_included() {
    let key = &ssh_keys()[1];
    let json: serde_json::Value = serde_json::from_str(&render_one(key, Format::Json).unwrap()).unwrap();
    assert_eq!(json["labels"]["team"], "platform");
    assert_eq!(json["created_by"], serde_json::Value::Null);
    let list: serde_json::Value = serde_json::from_str(&render_list(&instances(), Format::Json).unwrap()).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "a list is a JSON array of every item");
}
