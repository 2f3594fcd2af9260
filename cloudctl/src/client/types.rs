//! The API's JSON objects, as the client reads and writes them.
//!
//! Response types mirror the server's views field for field and keep whatever else the server
//! sends in `extra` (flattened), so a newer server's fields survive a round trip through the CLI
//! (`-o json` prints them) and never break deserialization. Request types (`*Params`) carry
//! exactly the fields the server accepts: its bodies are `deny_unknown_fields`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Fields of a response object this client does not know (yet).
pub type Extra = Map<String, Value>;

/// A page of a listing: `{"items": [...], "next_cursor": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back as `?cursor=` for the next page; `None` on the last one.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// An instance (a VM) of a project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    /// creating | starting | running | stopping | stopped | rebooting | deleting | deleted | failed | lost
    pub state: String,
    /// Why the instance is `failed` or `lost`.
    #[serde(default)]
    pub state_reason: Option<String>,
    pub generation: i64,
    #[serde(default)]
    pub host_id: Option<Uuid>,
    /// `None` only for a deleted instance whose image was deleted after it.
    #[serde(default)]
    pub image_id: Option<Uuid>,
    pub vcpus: i64,
    pub memory_bytes: i64,
    pub disk_bytes: i64,
    #[serde(default)]
    pub anti_affinity_group: Option<String>,
    /// The private address of the first NIC, once allocated.
    #[serde(default)]
    pub address: Option<String>,
    /// When the guest became reachable in its current boot (SSH answers, host keys known).
    #[serde(default)]
    pub ready_at: Option<DateTime<Utc>>,
    /// The SSH host keys the guest published on its serial console.
    #[serde(default)]
    pub ssh_host_keys: Vec<HostKey>,
    /// Its disaster-recovery priority (restored elsewhere when its host dies); none: no policy.
    #[serde(default)]
    pub dr_priority: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Instance {
    /// Running, and its guest answers: what `--wait` waits for by default.
    pub fn is_ready(&self) -> bool {
        self.state == "running" && self.ready_at.is_some()
    }
}

/// A guest's SSH host public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKey {
    /// e.g. `ssh-ed25519`.
    pub key_type: String,
    /// `<type> <base64>`.
    pub public_key: String,
    /// `SHA256:<base64>`.
    pub fingerprint: String,
}

/// `POST /v1/projects/{project}/instances`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceCreateParams {
    pub name: String,
    /// Image name or id.
    pub image: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// 0: the image's own size.
    #[serde(default)]
    pub disk_gib: u64,
    /// Names or ids of the project's SSH keys.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity_group: Option<String>,
}

/// A durable operation carrying out a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: Uuid,
    #[serde(default)]
    pub project_id: Option<Uuid>,
    /// e.g. `instance_create`
    pub kind: String,
    pub target_kind: String,
    #[serde(default)]
    pub target_id: Option<Uuid>,
    /// pending | running | undoing | succeeded | failed | cancelled
    pub state: String,
    /// The step being carried out (or the last one).
    #[serde(default)]
    pub current_step: Option<String>,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// The trace of the operation (W3C trace id) when the control plane exports traces.
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Operation {
    /// Whether the operation has ended (succeeded, failed or cancelled).
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }

    /// Whether it ended well.
    pub fn succeeded(&self) -> bool {
        self.state == "succeeded"
    }
}

/// A change the API accepted (202): the operation carrying it out and the instance as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceAccepted {
    pub operation: Operation,
    pub instance: Instance,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A snapshot of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: Uuid,
    pub project_id: Uuid,
    /// The instance it was taken of (null once that instance is deleted).
    #[serde(default)]
    pub instance_id: Option<Uuid>,
    pub name: String,
    /// disk | full (with memory and device state)
    pub kind: String,
    /// creating | available | failed | deleting | deleted
    pub state: String,
    #[serde(default)]
    pub state_reason: Option<String>,
    #[serde(default)]
    pub size_bytes: Option<i64>,
    /// The host that holds its files.
    #[serde(default)]
    pub host_id: Option<Uuid>,
    /// Where its files are on that host.
    #[serde(default)]
    pub location: Option<String>,
    /// Taken by the instance's snapshot policy.
    #[serde(default)]
    pub scheduled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /v1/projects/{project}/snapshots`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotCreateParams {
    pub instance: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub memory: bool,
}

/// `POST /v1/projects/{project}/snapshots/{snapshot}/restore`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRestoreParams {
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<String>,
}

/// `POST /v1/projects/{project}/snapshots/{snapshot}/image`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageFromSnapshotParams {
    pub name: String,
}

/// `PUT /v1/projects/{project}/instances/{instance}/dr-policy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrPolicyParams {
    /// 0 to 1000, highest recovered first.
    pub priority: i64,
}

/// `PUT /v1/projects/{project}/instances/{instance}/snapshot-policy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotPolicyParams {
    pub every_secs: u64,
    pub keep: u32,
    pub memory: bool,
}

/// An instance's snapshot policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotPolicy {
    pub instance_id: Uuid,
    pub every_secs: i64,
    pub keep: i64,
    pub memory: bool,
    #[serde(default)]
    pub last_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A snapshot change the API accepted (202): its operation and the snapshot as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotAccepted {
    pub operation: Operation,
    pub snapshot: Snapshot,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An SSH public key of a project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SshKey {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    /// `<type> <base64> [comment]`
    pub public_key: String,
    /// `SHA256:<base64>`
    pub fingerprint: String,
    #[serde(default)]
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /v1/projects/{project}/ssh-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshKeyCreateParams {
    pub name: String,
    /// One OpenSSH public key line.
    pub public_key: String,
}

/// A base image instances boot from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub id: Uuid,
    /// `None` for a public image.
    #[serde(default)]
    pub project_id: Option<Uuid>,
    pub name: String,
    #[serde(default)]
    pub public: bool,
    /// uploading | available | failed | deleting
    pub state: String,
    /// direct_kernel | firmware
    pub boot_mode: String,
    #[serde(default)]
    pub kernel_sha256: Option<String>,
    #[serde(default)]
    pub initrd_sha256: Option<String>,
    #[serde(default)]
    pub disk_sha256: Option<String>,
    #[serde(default)]
    pub disk_size_bytes: Option<i64>,
    /// The size of the disk it describes: an instance's disk is at least this.
    #[serde(default)]
    pub disk_virtual_bytes: Option<i64>,
    #[serde(default)]
    pub kernel_cmdline: String,
    /// uefi | bios, for `firmware` images.
    #[serde(default)]
    pub firmware: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /v1/projects/{project}/images`: register files on the control plane host (operators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRegisterParams {
    pub name: String,
    /// `direct_kernel` or `firmware`.
    pub boot_mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_path: Option<String>,
    #[serde(default)]
    pub kernel_cmdline: String,
    /// `uefi` or `bios`, for `firmware` images (default `uefi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    #[serde(default)]
    pub public: bool,
}

/// A project, as one of its members sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub created_at: DateTime<Utc>,
    /// The caller's role in it.
    pub role: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A project's quotas (0: no limit) and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectQuotas {
    pub limits: QuotaAmounts,
    pub usage: QuotaAmounts,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Instances, vCPUs, bytes of memory and disk, snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaAmounts {
    pub instances: i64,
    pub vcpus: i64,
    pub memory_bytes: i64,
    pub disk_bytes: i64,
    pub snapshots: i64,
}

/// `PUT /v1/projects/{project}/quotas`: each one left out takes the default again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaSetParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<i32>,
}

/// `POST /v1/projects`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectCreateParams {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// A hypervisor host of the fleet (operators only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub id: Uuid,
    pub hostname: String,
    pub agent_endpoint: String,
    /// joining | active | draining | suspect | dead
    pub state: String,
    /// An operator asked that no new instances be placed here.
    #[serde(default)]
    pub draining: bool,
    pub accelerator: String,
    pub total_vcpus: i64,
    pub total_memory_bytes: i64,
    pub total_disk_bytes: i64,
    pub reserved_vcpus: i64,
    pub reserved_memory_bytes: i64,
    pub reserved_disk_bytes: i64,
    pub instance_subnet: String,
    #[serde(default)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_report_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The fleet's liveness (operators).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetLiveness {
    /// `healthy`, or `degraded` while many hosts are silent together (no automatic deaths).
    pub state: String,
    #[serde(default)]
    pub degraded_since: Option<DateTime<Utc>>,
    pub silent_hosts: i64,
    pub hosts: i64,
    pub dead_hosts: i64,
    pub last_pass_at: DateTime<Utc>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A host join token just created; `token` is shown only here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinToken {
    pub id: Uuid,
    pub token: String,
    pub expires_at: DateTime<Utc>,
    /// The command to run on the new host.
    pub command: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The caller's identity (`GET /v1/auth/whoami`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub user: User,
    pub is_operator: bool,
    /// Null for a console session.
    #[serde(default)]
    pub token_id: Option<Uuid>,
    #[serde(default)]
    pub projects: Vec<ProjectMembership>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A project and the caller's role in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectMembership {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An API token, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub id: Uuid,
    pub name: String,
    pub token_prefix: String,
    /// active | expired | revoked
    pub status: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// The one project it is limited to, if any.
    #[serde(default)]
    pub project_id: Option<Uuid>,
    /// viewer | member | admin: the most it may do in `project_id`.
    #[serde(default)]
    pub role: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A token just created, with its secret (shown once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenCreated {
    pub token: Token,
    pub secret: String,
}

/// `POST /v1/auth/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreateParams {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
    /// Limit the token to this project (name or id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The most it may do there: viewer | member | admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// The identity provider cloudctl signs in with (`GET /v1/auth/oidc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcInfo {
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /v1/auth/oidc/token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcTokenParams {
    pub id_token: String,
    pub access_token: String,
}

/// A member of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: Uuid,
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    /// viewer | member | admin
    pub role: String,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /v1/projects/{project}/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddParams {
    /// The user's id, name, e-mail address or subject.
    pub user: String,
    pub role: String,
}

/// `PATCH /v1/projects/{project}/members/{user}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSetParams {
    pub role: String,
}

/// A user, as operators see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAccount {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    pub is_operator: bool,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub disabled_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The API's error body: `{"error": {"code", "message", "request_id"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub request_id: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unknown_fields_are_kept_through_a_round_trip() {
        let json = serde_json::json!({
            "id": "8c5d1a52-7a8e-4a43-9a54-0c0f5e0d1b7e", "project_id": "3f1e0d9c-2b4a-4e6f-8a1b-9c8d7e6f5a4b",
            "name": "alice", "public_key": "ssh-ed25519 AAAA", "fingerprint": "SHA256:x",
            "created_by": null, "created_at": "2025-01-02T03:04:05Z", "labels": {"team": "web"}
        });
        let key: SshKey = serde_json::from_value(json).unwrap();
        assert_eq!(key.extra.get("labels"), Some(&serde_json::json!({"team": "web"})));
        let back = serde_json::to_value(&key).unwrap();
        assert_eq!(back["labels"]["team"], "web");
        assert_eq!(back["created_at"], "2025-01-02T03:04:05Z");
    }

    #[test]
    fn optional_request_fields_are_left_out() {
        let params = InstanceCreateParams {
            name: "web-1".into(),
            image: "minimal".into(),
            vcpus: 1,
            memory_mib: 256,
            disk_gib: 0,
            ssh_keys: vec![],
            user_data: None,
            anti_affinity_group: None,
        };
        let json = serde_json::to_value(&params).unwrap();
        assert!(json.get("user_data").is_none());
        assert!(json.get("anti_affinity_group").is_none());
    }
}

/// The fields of a response the client did not know, kept as they came (see [`Extra`]): a
/// test compares them with the served OpenAPI document, so the client cannot drift from it.
pub trait UnknownFields {
    /// Fields of the response that no field of the type names.
    fn unknown_fields(&self) -> &Extra;
}

macro_rules! unknown_fields {
    ($($t:ty),+ $(,)?) => {
        $(impl UnknownFields for $t {
            fn unknown_fields(&self) -> &Extra {
                &self.extra
            }
        })+
    };
}

unknown_fields!(
    ProjectQuotas,
    OidcInfo,
    Member,
    UserAccount,
    Instance,
    Operation,
    InstanceAccepted,
    Snapshot,
    SnapshotAccepted,
    SnapshotPolicy,
    SshKey,
    Image,
    Project,
    Host,
    FleetLiveness,
    JoinToken,
    WhoAmI,
    User,
    ProjectMembership,
    Token,
);
