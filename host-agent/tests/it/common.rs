//! Test helpers: a network namespace per test (the manager's bridge, taps, NAT and QEMU live in
//! it through `ManagerConfig::netns`), the minimal image seeded into a `DirBlobSource` by
//! digest, SSH keys and an SSH client, and guards that kill VMs and delete namespaces on drop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use host_agent::images::DirBlobSource;
use host_agent::instances::{
    BootMode, DesiredInstance, DriverKind, ImageRef, InstanceId, InstanceManager, ManagerConfig, NicConfig,
};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// How long a boot to SSH may take under TCG on a busy 2-core machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// The test hosts' instance subnet (each test has its own namespace, so they may overlap).
pub const SUBNET: &str = "10.100.3.0/24";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process: `<prefix><pid><n>`.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{n}", std::process::id() % 100_000)
}

fn run_ok(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs a command and returns (success, stdout).
pub fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(program).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace (loopback up), deleted on drop after killing the VMs of `instances_dir`.
#[derive(Debug)]
pub struct TestHost {
    pub netns: String,
    pub tmp: TempDir,
    pub seed: PathBuf,
}

impl TestHost {
    pub fn create() -> TestHost {
        let netns = unique("hat");
        run_ok("ip", &["netns", "add", &netns]);
        run_ok("ip", &["-n", &netns, "link", "set", "lo", "up"]);
        let tmp = tempfile::Builder::new().prefix("hat").tempdir().unwrap();
        let seed = tmp.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        TestHost { netns, tmp, seed }
    }

    pub fn instances_dir(&self) -> PathBuf {
        self.tmp.path().join("instances")
    }

    pub fn images_dir(&self) -> PathBuf {
        self.tmp.path().join("images")
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.tmp.path().join("snapshots")
    }

    /// A QEMU-driver manager configuration whose network lives in this namespace.
    pub fn config(&self) -> ManagerConfig {
        let mut c = ManagerConfig::new(SUBNET.parse().unwrap());
        c.instances_dir = self.instances_dir();
        c.images_dir = self.images_dir();
        c.snapshots_dir = self.snapshots_dir();
        c.netns = Some(self.netns.clone());
        c.enable_ip_forward = true;
        c.stop_timeout = Duration::from_secs(20);
        c.driver = DriverKind::Qemu(Box::default());
        c
    }

    pub async fn start_manager(&self) -> InstanceManager {
        InstanceManager::start(self.config(), Arc::new(DirBlobSource::new(&self.seed))).await.unwrap()
    }

    /// Runs `ip -n NS args` and returns whether it succeeded.
    pub fn ip_ok(&self, args: &[&str]) -> bool {
        let mut full = vec!["-n", self.netns.as_str()];
        full.extend_from_slice(args);
        run("ip", &full).0
    }

    /// The namespace's nftables ruleset.
    pub fn nft_ruleset(&self) -> String {
        run("ip", &["netns", "exec", &self.netns, "nft", "list", "ruleset"]).1
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.instances_dir()) {
            for e in entries.flatten() {
                let dir = vmm::InstanceDir::new(e.path());
                if let Some(pid) = vmm::qemu::process::read_pidfile_sync(&dir) {
                    vmm::qemu::process::kill_vm_process(pid, &dir);
                }
            }
        }
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

/// The minimal image (`CLOUD_MINIMAL_IMAGE` or /var/cache/cloud/images/minimal).
#[derive(Debug, Clone)]
pub struct Image {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

pub fn minimal_image() -> Image {
    let dir = PathBuf::from(
        std::env::var("CLOUD_MINIMAL_IMAGE").unwrap_or_else(|_| "/var/cache/cloud/images/minimal".into()),
    );
    let manifest = std::fs::read(dir.join("manifest.json")).unwrap_or_else(|_| {
        panic!("guest image missing in {}: run deploy/images/build-minimal.sh (as root) first", dir.display())
    });
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    Image {
        kernel: dir.join(manifest["boot"]["kernel"].as_str().unwrap_or("vmlinuz")),
        initrd: dir.join(manifest["boot"]["initrd"].as_str().unwrap_or("initrd.img")),
        cmdline: manifest["boot"]["cmdline"].as_str().unwrap_or("console=ttyS0").to_owned(),
    }
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Copies `file` into the seed directory under its digest; returns the digest.
pub fn seed_blob(host: &TestHost, file: &Path) -> String {
    let digest = sha256_file(file);
    std::fs::copy(file, host.seed.join(&digest)).unwrap();
    digest
}

/// An SSH key pair.
#[derive(Debug)]
pub struct SshKey {
    pub private: PathBuf,
    pub public: String,
}

pub fn ssh_key(dir: &Path, name: &str) -> SshKey {
    let private = dir.join(name);
    run_ok("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", private.to_str().unwrap()]);
    let public = std::fs::read_to_string(private.with_extension("pub")).unwrap().trim().to_owned();
    SshKey { private, public }
}

/// A desired instance booting the minimal image (seeded by digest), 1 vCPU / 256 MiB, one NIC
/// at `ip`, a 64 MiB blank data disk.
pub fn minimal_instance(host: &TestHost, key: &SshKey, hostname: &str, ip: &str) -> DesiredInstance {
    let image = minimal_image();
    let kernel = seed_blob(host, &image.kernel);
    let initrd = seed_blob(host, &image.initrd);
    DesiredInstance {
        id: InstanceId(uuid::Uuid::new_v4()),
        hostname: hostname.into(),
        vcpus: 1,
        memory_mib: 256,
        disk_bytes: 64 * 1024 * 1024,
        image: ImageRef {
            image_id: "minimal".into(),
            boot_mode: BootMode::DirectKernel,
            disk_sha256: None,
            disk_size_bytes: None,
            kernel_sha256: Some(kernel),
            initrd_sha256: Some(initrd),
            kernel_cmdline: image.cmdline,
            firmware: vmm::spec::Firmware::Ovmf,
        },
        nics: vec![NicConfig {
            mac: "52:54:00:12:34:02".parse().unwrap(),
            address: format!("{ip}/24").parse().unwrap(),
            gateway: "10.100.3.1".parse().unwrap(),
        }],
        ssh_authorized_keys: vec![key.public.clone()],
        user_data: None,
        project: None,
    }
}

/// Runs `ssh root@ip command` inside the namespace; returns trimmed stdout on success.
pub async fn ssh_ok(host: &TestHost, key: &Path, ip: &str, command: &str) -> Result<String> {
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", &host.netns, "ssh", "-i"])
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=3",
            "-o",
            "LogLevel=ERROR",
            &format!("root@{ip}"),
            command,
        ])
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run ssh")?;
    ensure!(out.status.success(), "ssh {command:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Retries SSH (with backoff) until `command` succeeds or `timeout` passes.
pub async fn wait_for_ssh(host: &TestHost, key: &Path, ip: &str, command: &str, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(200);
    loop {
        match ssh_ok(host, key, ip, command).await {
            Ok(out) => return Ok(out),
            Err(e) if Instant::now() >= deadline => bail!("SSH never succeeded: {e:#}"),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// True while a process with `pid` exists and is not a zombie (a daemonized QEMU is reaped by
/// whoever adopted it, maybe late).
pub fn process_exists(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    matches!(state, Some(s) if s != 'Z')
}

/// QEMU's pid of an instance directory.
pub fn qemu_pid(instances_dir: &Path, id: InstanceId) -> Option<i32> {
    vmm::qemu::process::read_pidfile_sync(&vmm::InstanceDir::new(instances_dir.join(id.to_string())))
}
