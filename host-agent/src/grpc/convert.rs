//! Proto ⇄ domain conversions: the only place the agent's domain types meet `cloud.agent.v1`.

use cloud_proto::agent::v1 as pb;
use tonic::Status;

use crate::instances::{
    BootMode, DesiredInstance, ImageRef, InstanceId, InstanceState, InstanceStatus, NicConfig, SnapshotId,
    SnapshotInfo, SnapshotKind,
};

const MIB: u64 = 1 << 20;

/// Parses an instance id field.
pub fn instance_id(text: &str) -> Result<InstanceId, Status> {
    text.parse().map_err(|_| Status::invalid_argument(format!("instance_id {text:?} is not a UUID")))
}

/// Parses a snapshot id field.
pub fn snapshot_id(text: &str) -> Result<SnapshotId, Status> {
    text.parse().map_err(|_| Status::invalid_argument(format!("snapshot_id {text:?} is not a UUID")))
}

/// Proto snapshot kind → domain (unspecified is refused).
pub fn snapshot_kind(kind: i32) -> Result<SnapshotKind, Status> {
    match pb::SnapshotKind::try_from(kind) {
        Ok(pb::SnapshotKind::Disk) => Ok(SnapshotKind::Disk),
        Ok(pb::SnapshotKind::Full) => Ok(SnapshotKind::Full),
        _ => Err(Status::invalid_argument("kind must be DISK or FULL")),
    }
}

/// Domain snapshot info → proto (the location is a local path for now).
pub fn snapshot_info(info: &SnapshotInfo) -> pb::SnapshotInfo {
    let kind = match info.kind {
        SnapshotKind::Disk => pb::SnapshotKind::Disk,
        SnapshotKind::Full => pb::SnapshotKind::Full,
    };
    pb::SnapshotInfo {
        snapshot_id: info.snapshot_id.to_string(),
        instance_id: info.instance_id.to_string(),
        kind: kind as i32,
        size_bytes: info.size_bytes,
        location: info.location.display().to_string(),
        created_at: Some(timestamp(info.created_at)),
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0) }
}

fn optional_digest(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// `InstanceSpec` → `DesiredInstance` (then validated by the manager).
pub fn desired_instance(spec: pb::InstanceSpec) -> Result<DesiredInstance, Status> {
    let invalid = |msg: String| Status::invalid_argument(msg);
    if spec.memory_bytes == 0 || !spec.memory_bytes.is_multiple_of(MIB) {
        return Err(invalid(format!("memory_bytes {} is not a positive multiple of 1 MiB", spec.memory_bytes)));
    }
    let image = spec.image.ok_or_else(|| invalid("image is required".to_owned()))?;
    let boot_mode = match pb::BootMode::try_from(image.boot_mode) {
        Ok(pb::BootMode::DirectKernel) => BootMode::DirectKernel,
        Ok(pb::BootMode::Firmware) => BootMode::Firmware,
        _ => return Err(invalid("image.boot_mode must be DIRECT_KERNEL or FIRMWARE".to_owned())),
    };
    let nics = spec
        .nics
        .iter()
        .enumerate()
        .map(|(i, nic)| {
            Ok(NicConfig {
                mac: nic
                    .mac
                    .parse()
                    .map_err(|_| invalid(format!("nics[{i}].mac {:?} is not a MAC address", nic.mac)))?,
                address: nic
                    .address
                    .parse()
                    .map_err(|_| invalid(format!("nics[{i}].address {:?} is not an IPv4 CIDR", nic.address)))?,
                gateway: nic
                    .gateway
                    .parse()
                    .map_err(|_| invalid(format!("nics[{i}].gateway {:?} is not an IPv4 address", nic.gateway)))?,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(DesiredInstance {
        id: instance_id(&spec.instance_id)?,
        hostname: spec.hostname,
        vcpus: spec.vcpus,
        memory_mib: spec.memory_bytes / MIB,
        disk_bytes: spec.disk_bytes,
        image: ImageRef {
            image_id: image.image_id,
            boot_mode,
            disk_sha256: optional_digest(&image.disk_sha256),
            disk_size_bytes: (image.disk_size_bytes > 0).then_some(image.disk_size_bytes),
            kernel_sha256: optional_digest(&image.kernel_sha256),
            initrd_sha256: optional_digest(&image.initrd_sha256),
            kernel_cmdline: image.kernel_cmdline,
            firmware: match pb::Firmware::try_from(image.firmware) {
                Ok(pb::Firmware::Bios) => vmm::spec::Firmware::Seabios,
                _ => vmm::spec::Firmware::Ovmf,
            },
        },
        nics,
        ssh_authorized_keys: spec.ssh_authorized_keys,
        user_data: (!spec.user_data.is_empty()).then_some(spec.user_data),
        project: (!spec.project_id.is_empty()).then_some(spec.project_id),
    })
}

/// Domain state → proto state.
pub fn state(state: InstanceState) -> pb::InstanceState {
    match state {
        InstanceState::Creating => pb::InstanceState::Creating,
        InstanceState::Starting => pb::InstanceState::Starting,
        InstanceState::Running => pb::InstanceState::Running,
        InstanceState::Stopping => pb::InstanceState::Stopping,
        InstanceState::Stopped => pb::InstanceState::Stopped,
        InstanceState::Rebooting => pb::InstanceState::Rebooting,
        InstanceState::Snapshotting => pb::InstanceState::Snapshotting,
        InstanceState::Restoring => pb::InstanceState::Restoring,
        InstanceState::Paused => pb::InstanceState::Paused,
        InstanceState::Deleting => pb::InstanceState::Deleting,
        InstanceState::Deleted => pb::InstanceState::Deleted,
        InstanceState::Failed => pb::InstanceState::Failed,
    }
}

/// Domain status → proto status.
pub fn status(s: &InstanceStatus) -> pb::InstanceStatus {
    pb::InstanceStatus {
        instance_id: s.id.to_string(),
        state: state(s.state) as i32,
        generation: s.generation,
        reason: s.reason.clone().unwrap_or_default(),
        observed_at: Some(timestamp(s.observed_at)),
        ready_at: s.ready_at.map(timestamp),
        ssh_host_keys: s.ssh_host_keys.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_fields_are_checked_and_mapped() {
        assert_eq!(snapshot_kind(pb::SnapshotKind::Full as i32).unwrap(), SnapshotKind::Full);
        assert_eq!(snapshot_kind(pb::SnapshotKind::Disk as i32).unwrap(), SnapshotKind::Disk);
        assert_eq!(
            snapshot_kind(pb::SnapshotKind::Unspecified as i32).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(snapshot_id("../etc").unwrap_err().code(), tonic::Code::InvalidArgument);
        let id: SnapshotId = "6f1c1b9e-3a52-4c1e-9d51-0d7f1a1b2c3d".parse().unwrap();
        let info = SnapshotInfo {
            snapshot_id: id,
            instance_id: "0b6f3a8e-93a4-4d3b-a1c4-5e3c8d9f0a1b".parse().unwrap(),
            kind: SnapshotKind::Disk,
            size_bytes: 42,
            location: "/var/lib/cloud-agent/snapshots/x".into(),
            created_at: chrono::Utc::now(),
        };
        let p = snapshot_info(&info);
        assert_eq!(p.snapshot_id, id.to_string());
        assert_eq!((p.kind, p.size_bytes), (pb::SnapshotKind::Disk as i32, 42));
        assert_eq!(p.location, "/var/lib/cloud-agent/snapshots/x");
        assert!(p.created_at.is_some());
    }
}
