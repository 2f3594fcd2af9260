//! The lifecycle handle of one running VM.
//!
//! ```text
//!            start / attach                 pause            shutdown (ACPI, then force)
//!   (none) ───────────────▶ Running ◀──────────────▶ Paused ──────────────────────▶ Dead
//!                             │  ▲      resume                 force_stop (quit, SIGKILL)
//!                     reboot  └──┘  (system_reset)
//! ```
//! A [`Vm`] is a pid (verified against `/proc/<pid>/cmdline`) plus a QMP session. Dropping it
//! leaves QEMU running; [`Vm::attach`] rebuilds it from the instance directory (`config.json`,
//! `qemu.pid`, `qmp.sock`) after the caller restarted, and reports [`VmError::Dead`] for a VM
//! that died meanwhile. QEMU exiting is noticed through the QMP connection closing.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::instance_dir::InstanceDir;
use crate::qemu::process::{self, LaunchError, LaunchOptions};
use crate::qmp::{QmpClient, QmpError, QmpEvent};
use crate::spec::VmSpec;

/// What QEMU says the VM is doing, or that QEMU is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmStatus {
    /// vCPUs are running.
    Running,
    /// Paused by `stop` (or started with `-S`).
    Paused,
    /// Waiting for or receiving an incoming migration (restore in progress).
    Restoring,
    /// Saved by an outgoing migration and paused (snapshot taken).
    Saved,
    /// The guest shut down but QEMU has not exited yet.
    Shutdown,
    /// Any other QEMU run state (e.g. `guest-panicked`, `internal-error`).
    Other(String),
    /// The QEMU process no longer exists.
    Dead,
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// The guest powered off after the ACPI power button.
    Graceful,
    /// The guest did not react in time and QEMU was stopped by force.
    Forced,
}

/// Lifecycle errors.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Launching QEMU failed.
    #[error("cannot launch VM")]
    Launch(#[from] LaunchError),
    /// A QMP exchange failed.
    #[error("QMP exchange failed")]
    Qmp(#[from] QmpError),
    /// The instance directory has no usable `config.json`.
    #[error("cannot read VM config {path}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The VM's QEMU process is not running (died, or was never started here).
    #[error("VM in {dir} is not running")]
    Dead {
        /// The instance directory.
        dir: PathBuf,
    },
    /// QEMU survived SIGKILL for longer than the timeout.
    #[error("QEMU (pid {pid}) did not exit")]
    StopTimeout {
        /// Its pid.
        pid: i32,
    },
}

/// A handle on a running VM. Dropping it does not stop the VM.
#[derive(Debug)]
pub struct Vm {
    dir: InstanceDir,
    spec: VmSpec,
    pid: i32,
    qmp: QmpClient,
}

#[derive(Deserialize)]
struct StatusInfo {
    status: String,
}

impl Vm {
    /// Validates `spec`, launches QEMU in `dir` and connects to it.
    pub async fn start(spec: VmSpec, dir: InstanceDir, opts: &LaunchOptions) -> Result<Vm, VmError> {
        Vm::launch(spec, dir, opts, false).await
    }

    /// Launches and connects; `incoming` starts QEMU waiting for a migration stream.
    pub(crate) async fn launch(
        spec: VmSpec,
        dir: InstanceDir,
        opts: &LaunchOptions,
        incoming: bool,
    ) -> Result<Vm, VmError> {
        let pid = process::launch(&spec, &dir, opts, incoming).await?;
        // The socket exists from QEMU's bind; it answers from its listen, a moment later.
        let deadline = tokio::time::Instant::now() + opts.startup_timeout;
        let connected = loop {
            match QmpClient::connect(&dir.qmp_socket(), opts.qmp_timeout).await {
                Err(QmpError::Connect { source, .. })
                    if source.kind() == std::io::ErrorKind::ConnectionRefused
                        && tokio::time::Instant::now() < deadline
                        && process::vm_process_alive(pid, &dir) =>
                {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                other => break other,
            }
        };
        match connected {
            Ok(qmp) => {
                tracing::info!(pid, name = spec.name, "VM started");
                Ok(Vm { dir, spec, pid, qmp })
            }
            Err(e) => {
                // Never leave a VM behind that nobody can control.
                process::kill_vm_process(pid, &dir);
                Err(e.into())
            }
        }
    }

    /// Reconnects to the VM running from `dir`.
    ///
    /// Errors: [`VmError::Config`] without `config.json`, [`VmError::Dead`] when no live QEMU
    /// matches the pidfile, [`VmError::Qmp`] when QEMU lives but its QMP socket does not answer
    /// (then [`kill_unattached`] is the way to stop it).
    pub async fn attach(dir: InstanceDir, opts: &LaunchOptions) -> Result<Vm, VmError> {
        let path = dir.config_json();
        let json = tokio::fs::read(&path).await.map_err(|source| VmError::Config { path: path.clone(), source })?;
        let spec: VmSpec = serde_json::from_slice(&json)
            .map_err(|e| VmError::Config { path, source: std::io::Error::new(std::io::ErrorKind::InvalidData, e) })?;
        let pid = match process::read_pidfile(&dir).await {
            Some(pid) if process::vm_process_alive(pid, &dir) => pid,
            _ => {
                return Err(VmError::Dead { dir: dir.root().to_owned() });
            }
        };
        let qmp = QmpClient::connect(&dir.qmp_socket(), opts.qmp_timeout).await?;
        tracing::info!(pid, name = spec.name, "attached to VM");
        Ok(Vm { dir, spec, pid, qmp })
    }

    /// The instance directory.
    pub fn dir(&self) -> &InstanceDir {
        &self.dir
    }

    /// The launched spec.
    pub fn spec(&self) -> &VmSpec {
        &self.spec
    }

    /// QEMU's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The QMP session, for commands this handle does not wrap.
    pub fn qmp(&self) -> &QmpClient {
        &self.qmp
    }

    /// Subscribes to QEMU events (SHUTDOWN, STOP, RESUME, RESET, POWERDOWN, …).
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<QmpEvent> {
        self.qmp.events()
    }

    /// True while the QEMU process is alive.
    pub fn is_alive(&self) -> bool {
        process::vm_process_alive(self.pid, &self.dir)
    }

    /// The current status (`query-status`), or [`VmStatus::Dead`].
    pub async fn status(&self) -> Result<VmStatus, VmError> {
        if !self.is_alive() {
            return Ok(VmStatus::Dead);
        }
        match self.qmp.execute("query-status", None).await {
            Ok(v) => {
                let info: StatusInfo = serde_json::from_value(v)
                    .map_err(|source| QmpError::Decode { command: "query-status".into(), source })?;
                Ok(match info.status.as_str() {
                    "running" => VmStatus::Running,
                    "paused" | "prelaunch" => VmStatus::Paused,
                    "inmigrate" => VmStatus::Restoring,
                    "postmigrate" | "finish-migrate" => VmStatus::Saved,
                    "shutdown" => VmStatus::Shutdown,
                    other => VmStatus::Other(other.to_owned()),
                })
            }
            Err(QmpError::Disconnected) if !self.is_alive() => Ok(VmStatus::Dead),
            Err(e) => Err(e.into()),
        }
    }

    /// Pauses the vCPUs (`stop`).
    pub async fn pause(&self) -> Result<(), VmError> {
        self.command("stop").await
    }

    /// Resumes the vCPUs (`cont`).
    pub async fn resume(&self) -> Result<(), VmError> {
        self.command("cont").await
    }

    /// Hard-resets the guest (`system_reset`), like pressing the reset button.
    pub async fn reboot(&self) -> Result<(), VmError> {
        self.command("system_reset").await
    }

    /// Presses the ACPI power button (`system_powerdown`) without waiting.
    pub async fn powerdown(&self) -> Result<(), VmError> {
        self.command("system_powerdown").await
    }

    /// Presses the power button and waits up to `timeout` for QEMU to exit; then stops it by
    /// force.
    pub async fn shutdown(&self, timeout: Duration) -> Result<ShutdownOutcome, VmError> {
        match self.powerdown().await {
            Ok(()) => {}
            Err(VmError::Qmp(QmpError::Disconnected)) => {}
            Err(e) => return Err(e),
        }
        if self.wait_for_exit(timeout).await {
            tracing::info!(pid = self.pid, "VM powered off");
            return Ok(ShutdownOutcome::Graceful);
        }
        tracing::warn!(pid = self.pid, ?timeout, "guest ignored powerdown; forcing");
        self.force_stop().await?;
        Ok(ShutdownOutcome::Forced)
    }

    /// Stops QEMU now: `quit` (flushes disks), then SIGKILL if it lingers.
    pub async fn force_stop(&self) -> Result<(), VmError> {
        let quit = self.qmp.execute_with_timeout("quit", None, Duration::from_secs(2)).await;
        if let Err(e) = quit {
            tracing::debug!(error = %e, "quit failed; killing");
        }
        if self.wait_for_exit(Duration::from_secs(5)).await {
            return Ok(());
        }
        process::kill_vm_process(self.pid, &self.dir);
        if process::wait_for_exit(self.pid, &self.dir, Duration::from_secs(10)).await {
            Ok(())
        } else {
            Err(VmError::StopTimeout { pid: self.pid })
        }
    }

    /// Kills QEMU with SIGKILL, no questions asked (what a crash looks like to the guest).
    pub async fn kill(&self) -> Result<(), VmError> {
        process::kill_vm_process(self.pid, &self.dir);
        if process::wait_for_exit(self.pid, &self.dir, Duration::from_secs(10)).await {
            Ok(())
        } else {
            Err(VmError::StopTimeout { pid: self.pid })
        }
    }

    /// Waits up to `timeout` for QEMU to exit; returns whether it did.
    pub async fn wait_for_exit(&self, timeout: Duration) -> bool {
        let closed = tokio::time::timeout(timeout, self.qmp.closed()).await.is_ok();
        // The monitor closes just before the process is gone; allow a moment for the rest.
        closed && process::wait_for_exit(self.pid, &self.dir, Duration::from_secs(5)).await
    }

    async fn command(&self, cmd: &str) -> Result<(), VmError> {
        match self.qmp.execute(cmd, None).await {
            Ok(_) => Ok(()),
            Err(QmpError::Disconnected) if !self.is_alive() => Err(VmError::Dead { dir: self.dir.root().to_owned() }),
            Err(e) => Err(e.into()),
        }
    }
}

/// Kills the QEMU of `dir` found through its pidfile, without a QMP session (for a VM whose
/// control socket is gone). Returns whether a process was killed.
pub async fn kill_unattached(dir: &InstanceDir) -> bool {
    let Some(pid) = process::read_pidfile(dir).await else {
        return false;
    };
    let killed = process::kill_vm_process(pid, dir);
    if killed {
        process::wait_for_exit(pid, dir, Duration::from_secs(10)).await;
    }
    killed
}
