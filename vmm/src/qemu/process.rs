//! Launching QEMU and recognising it afterwards.
//!
//! [`launch`] prepares the instance directory (overlays, NVRAM, log rotation, `config.json`),
//! hands the files QEMU needs to the VM's user ([`super::jail::Confinement`]), opens its taps,
//! and starts QEMU in a session of its own ([`super::jail::prepare`]), so it outlives a
//! restarting host agent. The launch is done once QEMU's QMP socket exists; QEMU exiting before
//! that is the launch's failure, with the end of `vmm.log`. A task of the caller's reaps it.
//!
//! A pid alone is not an identity (pids are reused), so [`vm_process_alive`] also requires
//! `/proc/<pid>/cmdline` to carry this instance's QMP socket argument, and rejects zombies.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;

use super::cmdline::{self, CommandPlan, OVMF_CODE, OVMF_VARS_TEMPLATE};
use super::{host, jail};
use crate::console;
use crate::instance_dir::InstanceDir;
use crate::spec::{BootSpec, Firmware, SpecError, VmSpec};

/// Knobs of the launch path that are not part of the VM spec (host configuration).
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// QEMU binary (looked up in `PATH` when relative).
    pub qemu: PathBuf,
    /// `qemu-img` binary.
    pub qemu_img: PathBuf,
    /// `qemu-io` binary (writes stored disk layers back into an overlay).
    pub qemu_io: PathBuf,
    /// Pass `-sandbox` (seccomp).
    pub sandbox: bool,
    /// Start with vCPUs stopped; resume with [`crate::vm::Vm::resume`].
    pub start_paused: bool,
    /// Override the host TSC frequency used for `tsc_early_khz=` (default: `/proc/cpuinfo`).
    pub tsc_khz: Option<u64>,
    /// Rotate `console.log` to `console.log.1` at start when larger than this.
    pub console_log_max_bytes: u64,
    /// How long QEMU may take to initialise.
    pub startup_timeout: Duration,
    /// Timeout for connecting to QMP and for each command.
    pub qmp_timeout: Duration,
    /// OVMF code image for firmware boots with [`Firmware::Ovmf`].
    pub ovmf_code: PathBuf,
    /// OVMF variable store template copied to `nvram.fd`.
    pub ovmf_vars_template: PathBuf,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            qemu: "qemu-system-x86_64".into(),
            qemu_img: "qemu-img".into(),
            qemu_io: "qemu-io".into(),
            sandbox: true,
            start_paused: false,
            tsc_khz: None,
            console_log_max_bytes: 4 * 1024 * 1024,
            startup_timeout: Duration::from_secs(30),
            qmp_timeout: Duration::from_secs(10),
            ovmf_code: OVMF_CODE.into(),
            ovmf_vars_template: OVMF_VARS_TEMPLATE.into(),
        }
    }
}

/// Why a VM could not be launched.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The spec is invalid.
    #[error("invalid VM spec")]
    Spec(#[from] SpecError),
    /// A required program is not installed.
    #[error("{program} not found (install the Debian package {package})")]
    ProgramNotFound {
        /// The program as configured.
        program: PathBuf,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// A firmware file is not installed.
    #[error("firmware file {path} not found (install the Debian package {package})")]
    FirmwareNotFound {
        /// The file as configured.
        path: PathBuf,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// The instance directory path cannot be used on QEMU's command line.
    #[error("unusable instance directory {dir}: {reason}")]
    InvalidDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A QEMU for this instance directory is already running.
    #[error("a VM is already running in {dir} (pid {pid})")]
    AlreadyRunning {
        /// The instance directory.
        dir: PathBuf,
        /// Its pid.
        pid: i32,
    },
    /// Preparing a file in the instance directory failed.
    #[error("cannot prepare {path}")]
    Prepare {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A helper program (qemu-img) failed; its stderr is in `stderr`.
    #[error("{program} failed with {status} for {path}")]
    Tool {
        /// The program.
        program: PathBuf,
        /// Exit status.
        status: ExitStatus,
        /// The file it worked on.
        path: PathBuf,
        /// Its stderr.
        stderr: String,
    },
    /// A tap could not be opened for QEMU (missing, or its namespace is).
    #[error("cannot open tap {tap}{}", netns.as_ref().map(|n| format!(" in network namespace {n}")).unwrap_or_default())]
    Tap {
        /// The tap.
        tap: String,
        /// Its namespace.
        netns: Option<String>,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// QEMU could not be spawned.
    #[error("cannot spawn {program}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited during initialisation; the reason is at the end of `vmm.log`.
    #[error("QEMU failed to start ({status}); see {vmm_log}")]
    QemuFailed {
        /// Exit status of the launching process.
        status: ExitStatus,
        /// The log with QEMU's error.
        vmm_log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },
    /// QEMU did not finish initialising in time (it was killed).
    #[error("QEMU did not start within {after:?}")]
    StartupTimeout {
        /// The timeout.
        after: Duration,
    },
}

/// Resolves a program name through `PATH` (absolute and relative paths are checked as given).
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// Validates, prepares the directory and starts QEMU daemonized; returns its pid.
#[tracing::instrument(name = "vmm.launch", skip_all, fields(incoming = incoming))]
pub async fn launch(
    spec: &VmSpec,
    dir: &InstanceDir,
    opts: &LaunchOptions,
    incoming: bool,
) -> Result<i32, LaunchError> {
    spec.validate()?;
    check_dir(dir)?;
    let qemu = find_program(&opts.qemu)
        .ok_or_else(|| LaunchError::ProgramNotFound { program: opts.qemu.clone(), package: "qemu-system-x86" })?;
    let prep = |path: &Path| {
        let path = path.to_owned();
        move |source| LaunchError::Prepare { path, source }
    };
    tokio::fs::create_dir_all(dir.root()).await.map_err(prep(dir.root()))?;
    if let Some(pid) = read_pidfile(dir).await
        && vm_process_alive(pid, dir)
    {
        return Err(LaunchError::AlreadyRunning { dir: dir.root().to_owned(), pid });
    }
    for stale in [dir.pidfile(), dir.qmp_socket(), dir.serial_socket()] {
        match tokio::fs::remove_file(&stale).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(prep(&stale)(e)),
        }
    }

    for disk in &spec.disks {
        if let Some(base) = &disk.base
            && !disk.path.exists()
        {
            create_overlay(opts, &base.path, base.format.as_str(), &disk.path).await?;
        }
    }
    if let BootSpec::Firmware { firmware: Firmware::Ovmf } = spec.boot {
        for firmware in [&opts.ovmf_code, &opts.ovmf_vars_template] {
            if !tokio::fs::try_exists(firmware).await.unwrap_or(false) {
                return Err(LaunchError::FirmwareNotFound { path: firmware.clone(), package: "ovmf" });
            }
        }
    }
    if let BootSpec::Firmware { firmware: Firmware::Ovmf } = spec.boot
        && !dir.nvram().exists()
    {
        tokio::fs::copy(&opts.ovmf_vars_template, dir.nvram()).await.map_err(prep(&dir.nvram()))?;
    }
    console::rotate_console_log(dir, opts.console_log_max_bytes).await.map_err(prep(&dir.console_log()))?;
    rotate_vmm_log(dir).await.map_err(prep(&dir.vmm_log()))?;
    write_config_json(spec, dir).await?;
    if let Some(jail) = &spec.confinement {
        hand_over(spec, dir, jail).await?;
    }

    let cpuinfo = host::read_cpuinfo().await;
    let accel = host::resolve_accel(spec.accel, &cpuinfo);
    let plan = CommandPlan {
        spec,
        dir,
        accel,
        tsc_khz: opts.tsc_khz.or_else(|| host::tsc_khz(&cpuinfo)),
        sandbox: opts.sandbox,
        start_paused: opts.start_paused,
        incoming,
        ovmf_code: &opts.ovmf_code,
    };
    let cmd = cmdline::command(&qemu, &plan);
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(dir.vmm_log()).map_err(prep(&dir.vmm_log()))?;
    let log2 = log.try_clone().map_err(prep(&dir.vmm_log()))?;
    let (taps, procs) = open_handed_over(spec).await?;
    tracing::info!(name = spec.name, dir = %dir.root().display(), accel = accel.as_str(), "launching QEMU");
    tracing::debug!(program = %cmd.program.display(), args = ?cmd.args, "QEMU command line");
    let mut command = Command::new(&cmd.program);
    command.args(&cmd.args).stdin(Stdio::null()).stdout(log).stderr(log2);
    let user = spec.confinement.as_ref().map(|j| (j.uid, j.gid));
    jail::prepare(&mut command, &taps, &procs, user);
    let mut child = command.spawn().map_err(|source| LaunchError::Spawn { program: cmd.program.clone(), source })?;
    drop((taps, procs));
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + opts.startup_timeout;
    let mut delay = Duration::from_millis(2);
    let started = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Err(status),
            Ok(None) if tokio::fs::try_exists(dir.qmp_socket()).await.unwrap_or(false) => break Ok(()),
            Ok(None) | Err(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(LaunchError::StartupTimeout { after: opts.startup_timeout });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(5));
    };
    if let Err(status) = started {
        let log_tail = tail(&dir.vmm_log(), 2048).await;
        tracing::warn!(%status, log_tail, "QEMU failed to start");
        return Err(LaunchError::QemuFailed { status, vmm_log: dir.vmm_log(), log_tail });
    }
    // Reaped here while the caller lives; by init once it is gone.
    tokio::spawn(async move {
        let status = child.wait().await;
        tracing::debug!(pid, ?status, "QEMU exited");
    });
    Ok(pid)
}

/// Opens what QEMU gets as descriptors: its taps (in the spec's namespace) and the
/// `cgroup.procs` files of its cgroups.
async fn open_handed_over(spec: &VmSpec) -> Result<(Vec<OwnedFd>, Vec<OwnedFd>), LaunchError> {
    let taps: Vec<String> = spec.nics.iter().map(|n| n.tap.clone()).collect();
    let netns = spec.netns.clone();
    let cgroups = spec.confinement.as_ref().map(|j| j.cgroups.clone()).unwrap_or_default();
    tokio::task::spawn_blocking(move || {
        let taps = taps
            .iter()
            .map(|tap| {
                jail::open_tap(tap, netns.as_deref()).map_err(|source| LaunchError::Tap {
                    tap: tap.clone(),
                    netns: netns.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let procs = jail::open_cgroup_procs(&cgroups)
            .map_err(|source| LaunchError::Prepare { path: PathBuf::from("cgroup.procs"), source })?;
        Ok((taps, procs))
    })
    .await
    .map_err(|e| LaunchError::Prepare { path: PathBuf::from("/dev/net/tun"), source: std::io::Error::other(e) })?
}

/// Gives the VM's user what QEMU opens itself: the instance directory (its group may create
/// sockets and the pidfile there; the sticky bit keeps the agent's files out of its reach),
/// the files QEMU writes (disks, NVRAM, console log) and reads (config drive) there, and read
/// access to the shared image files it boots from (an ACL entry for its user alone).
async fn hand_over(spec: &VmSpec, dir: &InstanceDir, jail: &jail::Confinement) -> Result<(), LaunchError> {
    let prep = |path: &Path| {
        let path = path.to_owned();
        move |source| LaunchError::Prepare { path, source }
    };
    if jail.uid == 0 || jail.gid == 0 {
        return Err(prep(dir.root())(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a VM's user and group must not be root",
        )));
    }
    let console = dir.console_log();
    if !tokio::fs::try_exists(&console).await.unwrap_or(false) {
        tokio::fs::write(&console, b"").await.map_err(prep(&console))?;
    }
    let mut own: Vec<PathBuf> = vec![console];
    own.extend(spec.disks.iter().filter(|d| d.path.starts_with(dir.root())).map(|d| d.path.clone()));
    own.extend(spec.config_drive.iter().cloned());
    if dir.nvram().exists() {
        own.push(dir.nvram());
    }
    let (root, uid, gid) = (dir.root().to_owned(), jail.uid, jail.gid);
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::PermissionsExt;
        for file in &own {
            std::os::unix::fs::chown(file, Some(uid), Some(gid)).map_err(prep(file))?;
        }
        std::os::unix::fs::chown(&root, Some(0), Some(gid)).map_err(prep(&root))?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o1770)).map_err(prep(&root))
    })
    .await
    .map_err(|e| LaunchError::Prepare { path: dir.root().to_owned(), source: std::io::Error::other(e) })??;
    let shared = spec.shared_files();
    jail::grant_read(&shared, jail.uid).await.map_err(|source| LaunchError::Prepare {
        path: shared.first().map(|f| f.to_path_buf()).unwrap_or_default(),
        source,
    })?;
    Ok(())
}

/// Longest Unix socket path (`sun_path` holds 108 bytes including the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The directory must be absolute (QEMU runs in `/`), UTF-8 without commas (QEMU's option
/// syntax) and short enough for its socket paths.
fn check_dir(dir: &InstanceDir) -> Result<(), LaunchError> {
    let invalid = |reason| Err(LaunchError::InvalidDir { dir: dir.root().to_owned(), reason });
    if !dir.root().is_absolute() {
        return invalid("not an absolute path");
    }
    match dir.root().to_str() {
        None => return invalid("not UTF-8"),
        Some(s) if s.contains(',') || s.chars().any(char::is_control) => {
            return invalid("contains a comma or a control character");
        }
        Some(_) => {}
    }
    let longest = dir.serial_socket().as_os_str().len();
    if longest > MAX_SOCKET_PATH {
        return invalid("too long for a Unix socket path");
    }
    Ok(())
}

async fn create_overlay(opts: &LaunchOptions, base: &Path, base_format: &str, path: &Path) -> Result<(), LaunchError> {
    let qemu_img = find_program(&opts.qemu_img)
        .ok_or_else(|| LaunchError::ProgramNotFound { program: opts.qemu_img.clone(), package: "qemu-utils" })?;
    let out = Command::new(&qemu_img)
        .arg("create")
        .args(["-q", "-f", "qcow2", "-F", base_format, "-b"])
        .arg(base)
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| LaunchError::Spawn { program: qemu_img.clone(), source })?;
    if !out.status.success() {
        return Err(LaunchError::Tool {
            program: qemu_img,
            status: out.status,
            path: path.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

async fn write_config_json(spec: &VmSpec, dir: &InstanceDir) -> Result<(), LaunchError> {
    let path = dir.config_json();
    let tmp = dir.root().join(".config.json.tmp");
    let json = serde_json::to_vec_pretty(spec)
        .map_err(|e| LaunchError::Prepare { path: path.clone(), source: std::io::Error::other(e) })?;
    tokio::fs::write(&tmp, json).await.map_err(|source| LaunchError::Prepare { path: tmp.clone(), source })?;
    tokio::fs::rename(&tmp, &path).await.map_err(|source| LaunchError::Prepare { path, source })
}

/// Keeps one previous `vmm.log` (QEMU truncates its `-D` file when it opens it).
async fn rotate_vmm_log(dir: &InstanceDir) -> std::io::Result<()> {
    match tokio::fs::rename(dir.vmm_log(), dir.root().join("vmm.log.1")).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

async fn tail(path: &Path, max: usize) -> String {
    let bytes = tokio::fs::read(path).await.unwrap_or_default();
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
}

/// Reads `qemu.pid`.
pub async fn read_pidfile(dir: &InstanceDir) -> Option<i32> {
    let s = tokio::fs::read_to_string(dir.pidfile()).await.ok()?;
    s.trim().parse().ok().filter(|p| *p > 0)
}

/// Reads `qemu.pid` without an async runtime (for `Drop` guards and synchronous callers).
pub fn read_pidfile_sync(dir: &InstanceDir) -> Option<i32> {
    let s = std::fs::read_to_string(dir.pidfile()).ok()?;
    s.trim().parse().ok().filter(|p| *p > 0)
}

/// True when `pid` is a live (non-zombie) QEMU serving this instance directory.
pub fn vm_process_alive(pid: i32, dir: &InstanceDir) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let expected = cmdline::qmp_chardev_arg(dir);
    let ours = cmdline.split(|b| *b == 0).any(|arg| arg == expected.as_bytes());
    if !ours {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself contain ')'.
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Sends SIGKILL to `pid` if it is still this instance's QEMU; returns whether it was.
pub fn kill_vm_process(pid: i32, dir: &InstanceDir) -> bool {
    if !vm_process_alive(pid, dir) {
        return false;
    }
    tracing::info!(pid, dir = %dir.root().display(), "killing QEMU");
    kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
}

/// Waits (with backoff) until `pid` is no longer this instance's live QEMU, nor a process
/// still exiting: one whose memory is gone (its command line reads empty) keeps its files, the
/// taps among them, open until it is a zombie.
pub async fn wait_for_exit(pid: i32, dir: &InstanceDir, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(5);
    let exiting = || {
        let empty = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.is_empty());
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
        // A zombie leader whose other threads (a vCPU) are still exiting still holds the
        // process's files, its taps among them: a new VM opening them would get EBUSY.
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map(Iterator::count).unwrap_or(0);
        (empty && !matches!(state, Some("Z" | "X") | None)) || (state == Some("Z") && threads > 1)
    };
    loop {
        if !vm_process_alive(pid, dir) && !exiting() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn find_program_checks_path_and_explicit_paths() {
        assert!(find_program(Path::new("sh")).is_some());
        assert!(find_program(Path::new("/nonexistent/qemu")).is_none());
        assert!(find_program(Path::new("definitely-not-a-program-xyz")).is_none());
    }

    #[test]
    fn instance_dirs_must_fit_on_the_command_line() {
        assert!(check_dir(&InstanceDir::new("/var/lib/cloud/instances/x")).is_ok());
        for bad in ["relative/dir", "/a,b", "/a\nb"] {
            assert!(matches!(check_dir(&InstanceDir::new(bad)), Err(LaunchError::InvalidDir { .. })), "{bad:?}");
        }
        let long = format!("/{}", "d".repeat(100));
        assert!(matches!(check_dir(&InstanceDir::new(long)), Err(LaunchError::InvalidDir { .. })));
    }

    #[test]
    fn our_own_process_is_not_a_vm() {
        let dir = InstanceDir::new("/nonexistent");
        assert!(!vm_process_alive(std::process::id() as i32, &dir));
        assert!(!vm_process_alive(i32::MAX, &dir));
    }
}
