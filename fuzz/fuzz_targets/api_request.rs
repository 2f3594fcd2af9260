//! The control plane's JSON request bodies, through the path every handler's `Json` extractor
//! takes (`control_plane::http::json::parse`), then the checks of the app layer that need no
//! database.
//!
//! The first byte picks the body's type (every type a handler takes), the rest is the body.
//! Properties:
//! - a body is refused with 400 or 422 only: 400 exactly when serde_json cannot read it as one
//!   JSON value, 422 (its faults are the fields') otherwise;
//! - a body that parses and has a `Serialize` form writes back to a body that parses equal
//!   (idempotency keys hash that form);
//! - what the app layer accepts is what the layers after it accept: an instance create's sizes
//!   fit the scheduler's units and the VM spec's limits, its name is a hostname, and its
//!   user-data renders a config drive; an SSH key is stored in a form the agent and the config
//!   drive accept, and that reads back as the same key; names that become hostnames are ones.
#![no_main]

use control_plane::app::images::ImageFromSnapshotParams;
use control_plane::app::instances::{self, InstanceCreateParams, InstanceRestoreParams};
use control_plane::app::members::{MemberAddParams, MemberSetParams};
use control_plane::app::projects::{MAX_DESCRIPTION_CHARS, ProjectCreateParams};
use control_plane::app::snapshots::{SnapshotCreateParams, SnapshotPolicyParams};
use control_plane::app::ssh_keys::SshKeyCreateParams;
use control_plane::app::{AppError, validate};
use control_plane::http::json;
use control_plane::openssh::PublicKey;
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use vmm::config_drive::{ConfigDriveParams, render, validate_hostname, validate_ssh_key};

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    match which % 16 {
        0 => instance_create(body),
        1 => {
            if let Some(p) = parse::<InstanceRestoreParams>(body) {
                written_back(&p);
                becomes_hostname(&p.name);
            }
        }
        2 => ssh_key_create(body),
        3 => project_create(body),
        4 => {
            if let Some(name) = parse::<SnapshotCreateParams>(body).and_then(|p| p.name) {
                dns_label(&name);
            }
        }
        5 => drop(parse::<SnapshotPolicyParams>(body)),
        6 => {
            if let Some(p) = parse::<control_plane::app::recovery::DrPolicyParams>(body) {
                written_back(&p);
            }
        }
        7 => drop(parse::<control_plane::app::images::ImageRegisterParams>(body)),
        8 => {
            if let Some(p) = parse::<ImageFromSnapshotParams>(body) {
                dns_label(&p.name);
            }
        }
        9 => drop(parse::<MemberAddParams>(body)),
        10 => drop(parse::<MemberSetParams>(body)),
        11 => drop(parse::<control_plane::app::hosts::JoinTokenParams>(body)),
        12 => {
            if let Some(q) = parse::<control_plane::quotas::Settable>(body) {
                written_back(&q);
            }
        }
        13 => drop(parse::<control_plane::http::auth::TokenCreateParams>(body)),
        14 => drop(parse::<control_plane::http::session::SessionCreateParams>(body)),
        _ => drop(parse::<control_plane::http::session::OidcTokenParams>(body)),
    }
});

/// The body as a handler gets it, or `None` after checking how it was refused.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    let err = match json::parse::<T>(body) {
        Ok(value) => return Some(value),
        Err(err) => err,
    };
    // JSON as serde_json reads a document: RFC 8259's grammar within its limits (numbers a
    // double can hold, 128 levels of nesting). A text beyond them (`1e999`) is refused as not
    // JSON: no field could take it anyway.
    let json_value = serde_json::from_slice::<serde_json::Value>(body).is_ok();
    match (err.status.as_u16(), err.code) {
        (400, "invalid") => assert!(!json_value, "a JSON document refused as not JSON: {}", err.message),
        (422, "unprocessable") => {
            assert!(json_value, "not JSON, yet refused for its fields: {}", err.message);
            assert!(err.message.starts_with("invalid request body: "), "{}", err.message);
        }
        other => panic!("a body refused with {other:?}: {}", err.message),
    }
    None
}

/// Written back as JSON, `value` reads back the same.
fn written_back<T: Serialize + DeserializeOwned>(value: &T) {
    let text = serde_json::to_vec(value).expect("an accepted body serializes");
    let back: T = json::parse(&text).unwrap_or_else(|e| panic!("written back, refused: {}", e.message));
    assert_eq!(serde_json::to_vec(&back).expect("serializes"), text);
}

/// Checks `name` as the app layer does; if it passes, it is a hostname too.
fn dns_label(name: &str) -> bool {
    match validate::require_dns_label("name", name) {
        Ok(()) => {
            becomes_hostname(name);
            true
        }
        Err(AppError::Unprocessable(message)) => {
            assert!(message.starts_with("name: "), "{message}");
            false
        }
        Err(other) => panic!("a name refused with {other:?}"),
    }
}

/// A name the app accepts where the guest's hostname will be it.
fn becomes_hostname(name: &str) {
    if validate::require_dns_label("name", name).is_ok() {
        assert!(validate_hostname(name), "{name:?} accepted, not a hostname");
        assert!(uuid::Uuid::parse_str(name).is_err(), "{name:?} accepted, but it reads as an id");
    }
}

fn instance_create(body: &[u8]) {
    let Some(p) = parse::<InstanceCreateParams>(body) else { return };
    written_back(&p);
    match instances::validate(&p) {
        Ok(()) => {}
        Err(AppError::Unprocessable(message)) => {
            let fields = ["name: ", "vcpus: ", "memory_mib: ", "disk_gib: ", "user_data: ", "anti_affinity_group: "];
            assert!(fields.iter().any(|f| message.starts_with(f)), "{message}");
            return;
        }
        Err(other) => panic!("a create refused with {other:?}"),
    }
    // The disk is at least the default data disk (1 GiB) once the image is known.
    let r = instances::resources(p.vcpus, p.memory_mib, p.disk_gib.max(1))
        .unwrap_or_else(|e| panic!("validated sizes do not fit the scheduler's units: {e:?}"));
    assert_eq!(u32::try_from(r.vcpus).ok(), Some(p.vcpus));
    assert_eq!(u64::try_from(r.memory_bytes).ok(), p.memory_mib.checked_mul(1 << 20));
    assert!((1..=vmm::spec::MAX_VCPUS).contains(&p.vcpus), "{} vCPUs accepted; a VM has at most 255", p.vcpus);
    assert!(p.memory_mib >= vmm::spec::MIN_MEMORY_MIB);
    becomes_hostname(&p.name);
    // What the agent renders for it (host-agent storage::config_drive_params; empty user-data
    // travels as none).
    let drive = ConfigDriveParams {
        instance_id: "0b9e5c9e-8f0a-4c1e-9d55-3e1f4f6a2b71".to_owned(),
        hostname: p.name.clone(),
        ssh_authorized_keys: Vec::new(),
        user_data: p.user_data.clone().filter(|u| !u.is_empty()),
        network: Vec::new(),
    };
    if let Err(e) = render(&drive) {
        panic!("create accepted, its config drive refused: {e} ({:?})", p.user_data);
    }
}

fn ssh_key_create(body: &[u8]) {
    let Some(p) = parse::<SshKeyCreateParams>(body) else { return };
    dns_label(&p.name);
    let Ok(key) = PublicKey::parse(&p.public_key) else { return };
    // What is stored and sent to agents.
    let stored = key.to_openssh();
    assert!(validate_ssh_key(&stored), "stored as {stored:?}, which the agent and the config drive refuse");
    let again = PublicKey::parse(&stored).unwrap_or_else(|e| panic!("stored as {stored:?}, which reads back as {e}"));
    assert_eq!(again, key);
    assert_eq!(again.fingerprint(), key.fingerprint());
}

fn project_create(body: &[u8]) {
    let Some(p) = parse::<ProjectCreateParams>(body) else { return };
    if !dns_label(&p.name) {
        return;
    }
    if validate::require_plain_text("description", &p.description, MAX_DESCRIPTION_CHARS).is_ok() {
        assert!(p.description.chars().count() <= MAX_DESCRIPTION_CHARS);
        assert!(!p.description.contains(['\n', '\r', '\t', '\0']), "{:?}", p.description);
    }
}
