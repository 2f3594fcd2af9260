//! Proto ⇄ domain conversions: the only place the agent's domain types meet `cloud.agent.v1`.

use cloud_proto::agent::v1 as pb;
use tonic::Status;

use crate::instances::{BootMode, DesiredInstance, ImageRef, InstanceId, InstanceState, InstanceStatus, NicConfig};

const MIB: u64 = 1 << 20;

/// Parses an instance id field.
pub fn instance_id(text: &str) -> Result<InstanceId, Status> {
    text.parse().map_err(|_| Status::invalid_argument(format!("instance_id {text:?} is not a UUID")))
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
                gateway: match nic.gateway.as_str() {
                    "" => None,
                    gw => Some(
                        gw.parse().map_err(|_| invalid(format!("nics[{i}].gateway {gw:?} is not an IPv4 address")))?,
                    ),
                },
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
        },
        nics,
        ssh_authorized_keys: spec.ssh_authorized_keys,
        user_data: (!spec.user_data.is_empty()).then_some(spec.user_data),
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
        observed_at: Some(prost_types::Timestamp {
            seconds: s.observed_at.timestamp(),
            nanos: i32::try_from(s.observed_at.timestamp_subsec_nanos()).unwrap_or(0),
        }),
    }
}
