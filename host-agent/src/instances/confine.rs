//! What confines each VM on this host: a user and group of its own, and cgroups that bound its
//! memory, CPU and processes.
//!
//! ```text
//!  instance ──▶ uid = gid = user_base + n (n from the id; the next free on a clash)
//!      │          recorded as the group of its directory: root:<gid> 01770, read back at start
//!      └─────▶ cgroups  v1: /sys/fs/cgroup/{memory,cpu,pids}/cloud-agent/<instance id>
//!                       v2: /sys/fs/cgroup/cloud-agent/<instance id>
//!              memory = VM memory + overhead, CPU = its vCPUs' worth, processes = 64 per vCPU + 64
//! ```
//! Users are plain numbers (no passwd entries): QEMU needs no name, and nothing else runs as
//! them. The group of the instance directory says which user an instance has, so an agent that
//! restarts finds the same users without a record of its own. A VM whose QEMU the kernel killed
//! for its memory limit shows it: [`Cgroups::oom_killed`] reads the group's `oom_kill` count.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use vmm::qemu::jail::Confinement;

use super::InstanceId;

/// How many users the agent hands out from its base (ids are `base .. base + SPAN`).
pub const SPAN: u32 = 1 << 24;
/// The cgroup (per hierarchy) under which each VM gets one of its own.
pub const CGROUP_PARENT: &str = "cloud-agent";

/// The users of this host's VMs.
#[derive(Debug)]
pub struct VmUsers {
    base: u32,
    taken: Mutex<HashMap<InstanceId, u32>>,
}

impl VmUsers {
    /// Users from `base` (which leaves room for [`SPAN`] of them below `u32::MAX`).
    pub fn new(base: u32) -> VmUsers {
        VmUsers { base, taken: Mutex::new(HashMap::new()) }
    }

    /// The user of instance `id`: the one it has (the group of `dir`, when in range and not
    /// another instance's), else a new one.
    pub fn user_of(&self, id: InstanceId, dir: &Path) -> u32 {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(uid) = taken.get(&id) {
            return *uid;
        }
        let in_use = |uid: u32, taken: &HashMap<InstanceId, u32>| taken.values().any(|u| *u == uid);
        let recorded = std::fs::metadata(dir).ok().map(|m| m.gid()).filter(|g| self.in_range(*g));
        let uid = match recorded {
            Some(gid) if !in_use(gid, &taken) => gid,
            _ => {
                let start = u32::from_be_bytes(id.0.as_bytes()[..4].try_into().unwrap_or_default()) % SPAN;
                (0..SPAN).map(|n| self.base + (start + n) % SPAN).find(|u| !in_use(*u, &taken)).unwrap_or(self.base)
            }
        };
        taken.insert(id, uid);
        uid
    }

    /// Forgets instance `id`'s user (it was destroyed).
    pub fn release(&self, id: InstanceId) -> Option<u32> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
    }

    fn in_range(&self, id: u32) -> bool {
        id >= self.base && id - self.base < SPAN
    }
}

/// Which cgroup hierarchy the host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// cgroup v1: one hierarchy per controller under this root (memory, cpu, pids).
    V1(PathBuf),
    /// cgroup v2: one unified hierarchy at this root.
    V2(PathBuf),
}

/// Resource limits of one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory, bytes (the VM's memory plus QEMU's own).
    pub memory_bytes: u64,
    /// vCPUs' worth of CPU time.
    pub vcpus: u32,
    /// Processes and threads.
    pub pids: u32,
}

impl Limits {
    /// The limits of a VM of `vcpus` and `memory_mib`, with `overhead_mib` for QEMU itself.
    pub fn for_vm(vcpus: u32, memory_mib: u64, overhead_mib: u64) -> Limits {
        Limits { memory_bytes: (memory_mib + overhead_mib) << 20, vcpus, pids: 64 * vcpus + 64 }
    }
}

const CPU_PERIOD_US: u64 = 100_000;
/// QEMU's own threads (its main loop: device emulation, I/O, the console) on top of the vCPUs,
/// in CPU time per period: half a CPU.
const VMM_CPU_US: u64 = 50_000;

impl Limits {
    /// CPU time per [`CPU_PERIOD_US`]: the vCPUs' worth plus QEMU's own share.
    fn cpu_quota_us(&self) -> u64 {
        CPU_PERIOD_US * u64::from(self.vcpus) + VMM_CPU_US
    }
}

impl Cgroups {
    /// The host's hierarchy under `/sys/fs/cgroup`, or `None` when neither has the memory
    /// controller (then VMs run without limits, which the agent logs at start).
    pub fn detect() -> Option<Cgroups> {
        Self::detect_at(Path::new("/sys/fs/cgroup"))
    }

    fn detect_at(root: &Path) -> Option<Cgroups> {
        let unified = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        if unified.split_whitespace().any(|c| c == "memory") {
            return Some(Cgroups::V2(root.to_owned()));
        }
        let v1 = ["memory", "cpu", "pids"].iter().all(|c| root.join(c).join("cgroup.procs").exists());
        v1.then(|| Cgroups::V1(root.to_owned()))
    }

    /// The groups of instance `id`, one per hierarchy.
    pub fn dirs(&self, id: InstanceId) -> Vec<PathBuf> {
        let name = id.to_string();
        match self {
            Cgroups::V1(root) => {
                ["memory", "cpu", "pids"].iter().map(|c| root.join(c).join(CGROUP_PARENT).join(&name)).collect()
            }
            Cgroups::V2(root) => vec![root.join(CGROUP_PARENT).join(name)],
        }
    }

    /// Creates (or updates) the groups of instance `id` with `limits`; returns their
    /// directories for QEMU to join.
    pub fn ensure(&self, id: InstanceId, limits: Limits) -> std::io::Result<Vec<PathBuf>> {
        let dirs = self.dirs(id);
        // A fresh group per launch (QEMU is not running): its counters (`oom_kill`) start at 0.
        for dir in &dirs {
            let _ = std::fs::remove_dir(dir);
        }
        let write = |dir: &Path, file: &str, value: String| {
            let path = dir.join(file);
            std::fs::write(&path, value)
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
        };
        match self {
            Cgroups::V1(_) => {
                for dir in &dirs {
                    std::fs::create_dir_all(dir)?;
                }
                let (memory, cpu, pids) = (&dirs[0], &dirs[1], &dirs[2]);
                write(memory, "memory.limit_in_bytes", limits.memory_bytes.to_string())?;
                // Past its limit a VM is stopped, never pushed into the host's swap.
                let _ = write(memory, "memory.swappiness", "0".to_owned());
                write(cpu, "cpu.cfs_period_us", CPU_PERIOD_US.to_string())?;
                write(cpu, "cpu.cfs_quota_us", limits.cpu_quota_us().to_string())?;
                write(pids, "pids.max", limits.pids.to_string())?;
            }
            Cgroups::V2(root) => {
                let parent = root.join(CGROUP_PARENT);
                std::fs::create_dir_all(&parent)?;
                for dir in [root.as_path(), parent.as_path()] {
                    write(dir, "cgroup.subtree_control", "+memory +cpu +pids".to_owned())?;
                }
                let dir = &dirs[0];
                std::fs::create_dir_all(dir)?;
                write(dir, "memory.max", limits.memory_bytes.to_string())?;
                write(dir, "memory.swap.max", "0".to_owned()).or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(()),
                    _ => Err(e),
                })?;
                write(dir, "cpu.max", format!("{} {CPU_PERIOD_US}", limits.cpu_quota_us()))?;
                write(dir, "pids.max", limits.pids.to_string())?;
            }
        }
        Ok(dirs)
    }

    /// How many times the kernel killed a process of instance `id` for its memory limit.
    pub fn oom_kills(&self, id: InstanceId) -> u64 {
        let dirs = self.dirs(id);
        let file = match self {
            Cgroups::V1(_) => dirs[0].join("memory.oom_control"),
            Cgroups::V2(_) => dirs[0].join("memory.events"),
        };
        let text = std::fs::read_to_string(file).unwrap_or_default();
        text.lines().filter_map(|l| l.strip_prefix("oom_kill ")).find_map(|n| n.trim().parse().ok()).unwrap_or(0)
    }

    /// Whether the kernel killed instance `id`'s QEMU for its memory limit.
    pub fn oom_killed(&self, id: InstanceId) -> bool {
        self.oom_kills(id) > 0
    }

    /// Removes the groups of instance `id` (its QEMU is gone); missing ones are fine.
    pub fn remove(&self, id: InstanceId) {
        for dir in self.dirs(id) {
            if let Err(e) = std::fs::remove_dir(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a VM's cgroup");
            }
        }
    }
}

/// How the agent confines VMs (from its configuration).
#[derive(Debug)]
pub struct Confiner {
    /// The VMs' users.
    pub users: VmUsers,
    /// The cgroup hierarchy (`None`: no limits can be set here).
    pub cgroups: Option<Cgroups>,
    /// QEMU's own memory on top of the VM's, MiB.
    pub overhead_mib: u64,
}

impl Confiner {
    /// The confinement of instance `id` (in `dir`, of `vcpus` and `memory_mib`): its user, and
    /// its cgroups created with their limits.
    pub fn confine(&self, id: InstanceId, dir: &Path, vcpus: u32, memory_mib: u64) -> std::io::Result<Confinement> {
        let uid = self.users.user_of(id, dir);
        let cgroups = match &self.cgroups {
            Some(c) => c.ensure(id, Limits::for_vm(vcpus, memory_mib, self.overhead_mib))?,
            None => Vec::new(),
        };
        Ok(Confinement { uid, gid: uid, cgroups })
    }

    /// When the kernel killed instance `id`'s QEMU for its memory limit: that limit in MiB (of
    /// a VM of `memory_mib`).
    pub fn oom_killed(&self, id: InstanceId, memory_mib: u64) -> Option<u64> {
        let killed = self.cgroups.as_ref().is_some_and(|c| c.oom_killed(id));
        killed.then_some(memory_mib + self.overhead_mib)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn id(n: u128) -> InstanceId {
        InstanceId(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn users_differ_per_instance_and_stay_in_range() {
        let users = VmUsers::new(1_000_000_000);
        let nowhere = Path::new("/nonexistent");
        // Two ids whose first four bytes agree: the second takes the next free user.
        let (a, b) = (id(1), id(2));
        let (ua, ub) = (users.user_of(a, nowhere), users.user_of(b, nowhere));
        assert_ne!(ua, ub);
        assert!(users.in_range(ua) && users.in_range(ub));
        assert_eq!(users.user_of(a, nowhere), ua, "an instance keeps its user");
        assert_eq!(users.release(a), Some(ua));
    }

    #[test]
    fn the_user_recorded_as_a_directorys_group_is_kept_and_not_given_to_another() {
        assert!(nix::unistd::geteuid().is_root(), "this test gives a directory a group: run it as root");
        let users = VmUsers::new(1_000_000_000);
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), None, Some(1_000_000_005)).unwrap();
        assert_eq!(users.user_of(id(1), dir.path()), 1_000_000_005);
        // Another instance whose directory claims the same group gets a user of its own.
        assert_ne!(users.user_of(id(2), dir.path()), 1_000_000_005);
    }

    #[test]
    fn limits_add_the_overhead_and_scale_with_vcpus() {
        let l = Limits::for_vm(2, 256, 128);
        assert_eq!(l.memory_bytes, 384 << 20);
        assert_eq!((l.vcpus, l.pids), (2, 192));
    }

    #[test]
    fn v1_groups_live_under_each_controller() {
        let c = Cgroups::V1("/sys/fs/cgroup".into());
        let dirs = c.dirs(id(7));
        assert_eq!(dirs.len(), 3);
        assert!(dirs[0].starts_with("/sys/fs/cgroup/memory/cloud-agent"));
        assert_eq!(c.oom_kills(id(7)), 0, "no group: nothing was killed");
    }

    #[test]
    fn detection_reads_the_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(Cgroups::detect_at(root.path()), None);
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        assert_eq!(Cgroups::detect_at(root.path()), Some(Cgroups::V2(root.path().to_owned())));
    }
}
