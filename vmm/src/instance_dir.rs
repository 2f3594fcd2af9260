//! The instance directory: the files one VM is made of, named so an operator can find them
//! (see DESIGN.md, "The instance directory").
//!
//! ```text
//! <dir>/config.json    the spec that was launched
//!       disk-N.qcow2   disks (when the agent puts them here)
//!       cidata.img     config drive
//!       nvram.fd       UEFI variables (OVMF)
//!       console.log    serial output, appended across VMM restarts, rotated to console.log.1
//!       vmm.log        QEMU's stderr (previous run in vmm.log.1)
//!       qemu.pid       QEMU's pid
//!       qmp.sock serial.sock
//!       snapshots/<id>/
//! ```

use std::path::{Path, PathBuf};

/// Paths inside one instance directory. Cheap to clone; does no I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceDir {
    root: PathBuf,
}

impl InstanceDir {
    /// Wraps a directory path (absolute, so QEMU, which runs in `/`, sees the same files).
    pub fn new(root: impl Into<PathBuf>) -> InstanceDir {
        InstanceDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.json`: the launched spec.
    pub fn config_json(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// `qmp.sock`: QMP control socket.
    pub fn qmp_socket(&self) -> PathBuf {
        self.root.join("qmp.sock")
    }

    /// `qga.sock`: the channel to the guest agent (see [`crate::guest_agent`]).
    pub fn guest_agent_socket(&self) -> PathBuf {
        self.root.join("qga.sock")
    }

    /// `serial.sock`: serial console socket (one client at a time).
    pub fn serial_socket(&self) -> PathBuf {
        self.root.join("serial.sock")
    }

    /// `console.log`: everything the guest wrote to its serial port.
    pub fn console_log(&self) -> PathBuf {
        self.root.join("console.log")
    }

    /// The older part of the console's output, `console.log.1` (see `console::rotate_console_log`).
    pub fn console_log_rotated(&self) -> PathBuf {
        self.root.join("console.log.1")
    }

    /// `vmm.log`: QEMU's own stderr.
    pub fn vmm_log(&self) -> PathBuf {
        self.root.join("vmm.log")
    }

    /// `qemu.pid`: written by QEMU (`-pidfile`).
    pub fn pidfile(&self) -> PathBuf {
        self.root.join("qemu.pid")
    }

    /// `nvram.fd`: the per-VM UEFI variable store.
    pub fn nvram(&self) -> PathBuf {
        self.root.join("nvram.fd")
    }

    /// `cidata.img`: the conventional config drive location.
    pub fn config_drive(&self) -> PathBuf {
        self.root.join("cidata.img")
    }

    /// `disk-<index>.qcow2`: the conventional location of disk `index`.
    pub fn disk(&self, index: usize) -> PathBuf {
        self.root.join(format!("disk-{index}.qcow2"))
    }

    /// `snapshots/<id>`: local snapshot state.
    pub fn snapshot(&self, id: &str) -> PathBuf {
        self.root.join("snapshots").join(id)
    }
}
