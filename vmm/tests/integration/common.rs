//! Test helpers: the guest image, network namespaces with a tap, SSH keys and an SSH client,
//! and guards that kill VMs and delete namespaces when a test ends (also on panic).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tempfile::TempDir;
use vmm::config_drive::{self, ConfigDriveFormat, ConfigDriveParams, NicNetwork};
use vmm::qemu::process::{find_program, kill_vm_process, read_pidfile_sync};
use vmm::spec::{Accel, BootSpec, MacAddr, NicSpec};
use vmm::{InstanceDir, LaunchOptions, VmSpec};

/// Guest address inside every test namespace (namespaces isolate tests from each other).
pub const GUEST_IP: &str = "10.200.0.2";
/// Host-side tap address.
pub const HOST_IP: &str = "10.200.0.1";
/// How long a boot to "ready" may take under TCG on a busy 2-core machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process: `<prefix><pid><n>`.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{n}", std::process::id() % 100_000)
}

/// Panics with an install hint when a program is missing.
pub fn require_program(program: &str, package: &str) -> PathBuf {
    find_program(Path::new(program)).unwrap_or_else(|| panic!("{program} is required: apt-get install -y {package}"))
}

/// The minimal guest image (kernel, initrd, kernel command line).
#[derive(Debug, Clone)]
pub struct Image {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

/// Finds the image (`CLOUD_MINIMAL_IMAGE` or /var/cache/cloud/images/minimal) and the programs
/// the tests need; fails loudly with the fix when something is missing.
pub fn minimal_image() -> Image {
    require_program("qemu-system-x86_64", "qemu-system-x86");
    require_program("qemu-img", "qemu-utils");
    require_program("ssh", "openssh-client");
    require_program("ssh-keygen", "openssh-client");
    require_program("ip", "iproute2");
    require_program("mkfs.vfat", "dosfstools");
    require_program("mcopy", "mtools");
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

/// A network namespace with one tap (`HOST_IP/24`), deleted on drop.
#[derive(Debug)]
pub struct TestNet {
    pub netns: String,
    pub tap: String,
}

impl TestNet {
    pub fn create() -> TestNet {
        let net = TestNet { netns: unique("vmmt"), tap: unique("vt") };
        run_ok("ip", &["netns", "add", &net.netns]);
        let ns = net.netns.as_str();
        run_ok("ip", &["-n", ns, "link", "set", "lo", "up"]);
        run_ok("ip", &["-n", ns, "tuntap", "add", "dev", &net.tap, "mode", "tap"]);
        run_ok("ip", &["-n", ns, "addr", "add", &format!("{HOST_IP}/24"), "dev", &net.tap]);
        run_ok("ip", &["-n", ns, "link", "set", &net.tap, "up"]);
        net
    }

    /// True while the tap exists.
    pub fn tap_exists(&self) -> bool {
        std::process::Command::new("ip")
            .args(["-n", &self.netns, "link", "show", &self.tap])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

/// True while the namespace exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn run_ok(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Kills the VM of an instance directory on drop (whatever handle the test holds).
#[derive(Debug)]
pub struct VmGuard {
    pub dir: InstanceDir,
}

impl Drop for VmGuard {
    fn drop(&mut self) {
        if let Some(pid) = read_pidfile_sync(&self.dir) {
            kill_vm_process(pid, &self.dir);
        }
    }
}

/// An SSH key pair in a temporary directory.
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

/// One test VM's files: instance directory, config drive, keys.
#[derive(Debug)]
pub struct Fixture {
    pub tmp: TempDir,
    pub image: Image,
    pub key: SshKey,
    pub other_key: SshKey,
    pub mac: MacAddr,
}

impl Fixture {
    pub fn new() -> Fixture {
        let image = minimal_image();
        let tmp = tempfile::Builder::new().prefix("vmmt").tempdir().unwrap();
        let key = ssh_key(tmp.path(), "alice");
        let other_key = ssh_key(tmp.path(), "mallory");
        Fixture { tmp, image, key, other_key, mac: "52:54:00:c0:ff:ee".parse().unwrap() }
    }

    pub fn instance_dir(&self, name: &str) -> InstanceDir {
        InstanceDir::new(self.tmp.path().join(name))
    }

    /// Writes the config drive (alice's key, static IP) into `dir` and returns a spec using it.
    pub async fn spec(&self, dir: &InstanceDir, net: &TestNet, hostname: &str) -> VmSpec {
        std::fs::create_dir_all(dir.root()).unwrap();
        let params = ConfigDriveParams {
            instance_id: format!("i-{hostname}"),
            hostname: hostname.into(),
            ssh_authorized_keys: vec![self.key.public.clone()],
            user_data: None,
            network: vec![NicNetwork {
                mac: self.mac,
                addresses: vec![format!("{GUEST_IP}/24").parse().unwrap()],
                gateway: Some(HOST_IP.parse().unwrap()),
                nameservers: vec![],
            }],
        };
        config_drive::build(&params, ConfigDriveFormat::Vfat, &dir.config_drive()).await.unwrap();
        VmSpec {
            name: hostname.into(),
            vcpus: 1,
            memory_mib: 256,
            boot: BootSpec::DirectKernel {
                kernel: self.image.kernel.clone(),
                initrd: Some(self.image.initrd.clone()),
                cmdline: self.image.cmdline.clone(),
            },
            disks: vec![],
            nics: vec![NicSpec { tap: net.tap.clone(), mac: self.mac }],
            config_drive: Some(dir.config_drive()),
            accel: Accel::Auto,
            netns: Some(net.netns.clone()),
            confinement: None,
            guest_agent: false,
        }
    }
}

/// Launch options for tests: the VM starts paused so the console can be attached first.
pub fn paused_start() -> LaunchOptions {
    LaunchOptions { start_paused: true, ..LaunchOptions::default() }
}

/// Runs `ssh root@GUEST_IP command` inside the namespace with `key`.
pub async fn ssh(net: &TestNet, key: &Path, command: &str) -> Result<Output> {
    tokio::process::Command::new("ip")
        .args(["netns", "exec", &net.netns, "ssh", "-i"])
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
            &format!("root@{GUEST_IP}"),
            command,
        ])
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run ssh")
}

/// Runs a command over SSH and returns its trimmed stdout; fails on a non-zero exit.
pub async fn ssh_ok(net: &TestNet, key: &Path, command: &str) -> Result<String> {
    let out = ssh(net, key, command).await?;
    ensure!(out.status.success(), "ssh {command:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Retries SSH (with backoff) until `command` succeeds or `timeout` passes.
pub async fn wait_for_ssh(net: &TestNet, key: &Path, command: &str, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        match ssh_ok(net, key, command).await {
            Ok(out) => return Ok(out),
            Err(e) if Instant::now() >= deadline => bail!("SSH never succeeded: {e:#}"),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The guest's uptime in seconds.
pub async fn guest_uptime(net: &TestNet, key: &Path) -> Result<f64> {
    let up = ssh_ok(net, key, "cut -d' ' -f1 /proc/uptime").await?;
    up.parse().context("uptime")
}

/// True when something accepts a TCP connection on the guest's port 22 within 2 s.
pub async fn ssh_port_open(net: &TestNet) -> bool {
    tokio::process::Command::new("ip")
        .args(["netns", "exec", &net.netns, "timeout", "2", "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{GUEST_IP}/22"))
        .kill_on_drop(true)
        .output()
        .await
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Waits (with backoff, up to 5 s) until `path` contains `text`; returns the content.
pub async fn wait_for_file_text(path: &Path, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut delay = Duration::from_millis(10);
    loop {
        let content = std::fs::read_to_string(path).unwrap_or_default();
        if content.contains(text) || Instant::now() >= deadline {
            assert!(content.contains(text), "{text:?} not in {}: {content}", path.display());
            return content;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}
