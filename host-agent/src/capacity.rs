//! What this host offers to instances: configured values, else what the machine has.

use std::path::Path;

use cloud_proto::agent::v1 as pb;

use crate::config::CapacityConfig;

/// Memory kept back for the host itself (agent, QEMU overhead, page cache).
const HOST_RESERVED_MIB: u64 = 1024;

/// The capacity to offer: `[capacity]` where set, measured otherwise.
pub fn total(config: &CapacityConfig, state_dir: &Path) -> pb::Capacity {
    let vcpus = config.vcpus.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let memory_mib = config.memory_mib.unwrap_or_else(|| host_memory_mib().saturating_sub(HOST_RESERVED_MIB).max(256));
    let disk_bytes = match config.disk_gib {
        Some(gib) => gib << 30,
        None => free_disk_bytes(state_dir),
    };
    pb::Capacity { vcpus, memory_bytes: memory_mib << 20, disk_bytes }
}

fn host_memory_mib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

fn free_disk_bytes(dir: &Path) -> u64 {
    // The state directory may not exist before the first join; measure its nearest ancestor.
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    nix::sys::statvfs::statvfs(existing).map_or(0, |s| s.blocks_available() * s.fragment_size())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_values_win_and_measured_ones_are_plausible() {
        let configured = CapacityConfig { vcpus: Some(3), memory_mib: Some(2048), disk_gib: Some(10) };
        let cap = total(&configured, Path::new("/"));
        assert_eq!((cap.vcpus, cap.memory_bytes, cap.disk_bytes), (3, 2048 << 20, 10 << 30));
        let measured = total(&CapacityConfig::default(), Path::new("/nonexistent/dir"));
        assert!(measured.vcpus >= 1 && measured.memory_bytes >= 256 << 20 && measured.disk_bytes > 0);
    }
}
