//! A bare QEMU boot of the `minimal` image, what benchmarks compare our launch paths with: a
//! network namespace of its own with one tap, a config drive with an SSH key, a hand-written
//! QEMU command line (as root, no sandbox, no cgroup, no QMP), and SSH polled until it answers.
//! Benchmark support only (`vmm-bench`, the launch benchmark of the tests); no service uses it.
//!
//! ```text
//!  BareNet::create ── netns <name>, tap <name> 10.201.0.1/24 ──┐
//!  BareGuest::prepare ── ssh key, cidata.img (10.201.0.2/24) ──┴─▶ boot ─▶ console line, SSH
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::config_drive::{self, ConfigDriveFormat, ConfigDriveParams, NicNetwork};
use crate::spec::MacAddr;

/// The guest's address on the tap's /24.
pub const GUEST_IP: &str = "10.201.0.2";
/// The tap's (the host's) address.
pub const HOST_IP: &str = "10.201.0.1";
/// The line `/init` of the `minimal` image prints first.
pub const FIRST_CONSOLE_LINE: &str = "cloud-minimal: init start";

/// A network namespace with one tap for a guest; deleted on drop.
#[derive(Debug)]
pub struct BareNet {
    pub netns: String,
    pub tap: String,
}

impl BareNet {
    /// Creates namespace and tap `<tag><pid>` (`tag`: a few letters, the tap name is short).
    pub fn create(tag: &str) -> io::Result<BareNet> {
        let id = std::process::id();
        let net = BareNet { netns: format!("{tag}{id}"), tap: format!("{}{id}", &tag[..tag.len().min(4)]) };
        let ns = net.netns.clone();
        sh("ip", &["netns", "add", &ns])?;
        sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        sh("ip", &["-n", &ns, "tuntap", "add", "dev", &net.tap, "mode", "tap"])?;
        sh("ip", &["-n", &ns, "addr", "add", &format!("{HOST_IP}/24"), "dev", &net.tap])?;
        sh("ip", &["-n", &ns, "link", "set", &net.tap, "up"])?;
        Ok(net)
    }
}

impl Drop for BareNet {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

fn sh(program: &str, args: &[&str]) -> io::Result<()> {
    let status = std::process::Command::new(program).args(args).status()?;
    if !status.success() {
        return Err(io::Error::other(format!("{program} {args:?} failed ({status})")));
    }
    Ok(())
}

/// What a bare boot needs: the image's files, an SSH key, and a config drive for `GUEST_IP`.
#[derive(Debug, Clone)]
pub struct BareGuest {
    /// The private key (its `.pub` beside it) the guest accepts.
    pub key: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub cidata: PathBuf,
    pub mac: MacAddr,
}

impl BareGuest {
    /// Reads the `minimal` image in `image_dir` and writes a key and a config drive into `dir`.
    pub async fn prepare(image_dir: &Path, dir: &Path) -> io::Result<BareGuest> {
        let manifest = std::fs::read(image_dir.join("manifest.json")).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("no minimal image in {}: run deploy/images/build-minimal.sh", image_dir.display()),
            )
        })?;
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).map_err(io::Error::other)?;
        let cmdline = manifest["boot"]["cmdline"].as_str().unwrap_or("console=ttyS0").to_owned();
        let key = dir.join("id");
        sh("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f", &key.display().to_string()])?;
        let public = std::fs::read_to_string(key.with_extension("pub"))?;
        let mac: MacAddr = "52:54:00:be:0c:01".parse().map_err(io::Error::other)?;
        let cidata = dir.join("cidata.img");
        let params = ConfigDriveParams {
            instance_id: "i-bench".into(),
            hostname: "bench".into(),
            ssh_authorized_keys: vec![public.trim().to_owned()],
            user_data: None,
            network: vec![NicNetwork {
                mac,
                addresses: vec![format!("{GUEST_IP}/24").parse().map_err(io::Error::other)?],
                gateway: Some(HOST_IP.parse().map_err(io::Error::other)?),
                nameservers: vec![],
            }],
        };
        config_drive::build(&params, ConfigDriveFormat::Vfat, &cidata).await.map_err(io::Error::other)?;
        Ok(BareGuest {
            key,
            kernel: image_dir.join("vmlinuz"),
            initrd: image_dir.join("initrd.img"),
            cmdline,
            cidata,
            mac,
        })
    }
}

/// What one bare boot took, from spawning QEMU.
#[derive(Debug, Clone, Copy)]
pub struct BareBoot {
    pub first_console_line: Duration,
    pub ssh: Duration,
    /// QEMU's resident set once SSH answered.
    pub rss_kib: Option<f64>,
}

/// Boots `guest` under a bare QEMU (TCG, 256 MiB, 1 vCPU, microvm) on `net`'s tap until SSH
/// answers, then kills it.
pub async fn boot(guest: &BareGuest, net: &BareNet, timeout: Duration) -> io::Result<BareBoot> {
    let tsc = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| crate::qemu::host::tsc_khz(&c));
    let append = match tsc {
        Some(khz) => format!("{} tsc_early_khz={khz}", guest.cmdline),
        None => guest.cmdline.clone(),
    };
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", &net.netns, "qemu-system-x86_64"])
        .args(["-machine", "microvm,acpi=on", "-accel", "tcg", "-m", "256M", "-smp", "1"])
        .args(["-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(&guest.kernel)
        .arg("-initrd")
        .arg(&guest.initrd)
        .args(["-append", &append])
        .arg("-drive")
        .arg(format!("if=none,id=c,format=raw,readonly=on,file={}", guest.cidata.display()))
        .args(["-device", "virtio-blk-device,drive=c"])
        .args(["-netdev", &format!("tap,id=n,ifname={},script=no,downscript=no", net.tap)])
        .args(["-device", &format!("virtio-net-device,netdev=n,mac={}", guest.mac)])
        .args(["-object", "rng-random,id=r,filename=/dev/urandom"])
        .args(["-device", "virtio-rng-device,rng=r"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| io::Error::other("QEMU has no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(timeout, async {
        while let Some(line) = lines.next_line().await? {
            if line.contains(FIRST_CONSOLE_LINE) {
                return Ok::<bool, io::Error>(true);
            }
        }
        Ok(false)
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no first console line"))??;
    if !found {
        return Err(io::Error::other("bare QEMU exited before the first console line"));
    }
    let first_console_line = t0.elapsed();
    // Keep draining the console so the guest never blocks on a full pipe.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    wait_for_ssh(net, &guest.key, timeout).await?;
    let ssh = t0.elapsed();
    // `ip netns exec` execs QEMU, so the child's pid is QEMU's.
    let rss_kib = child.id().and_then(|pid| rss_kib(i32::try_from(pid).ok()?));
    child.kill().await?;
    drain.abort();
    Ok(BareBoot { first_console_line, ssh, rss_kib })
}

/// True when `ssh root@GUEST_IP true` with `key` works from `net`'s namespace.
pub async fn ssh_ok(net: &BareNet, key: &Path) -> bool {
    tokio::process::Command::new("ip")
        .args(["netns", "exec", &net.netns, "ssh", "-i"])
        .arg(key)
        .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=2"])
        .args(["-o", "LogLevel=ERROR", &format!("root@{GUEST_IP}"), "true"])
        .stdin(Stdio::null())
        .output()
        .await
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// True when `GUEST_IP:22` accepts a connection within 250 ms (a SYN the guest's network does
/// not answer yet is given up at once, not retried for a second as `ssh` would).
async fn port_open(net: &BareNet) -> bool {
    tokio::process::Command::new("timeout")
        .args(["0.25", "ip", "netns", "exec", &net.netns, "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{GUEST_IP}/22"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Waits until the guest's port 22 accepts (probed every 20 ms, as the host agent does), then
/// polls [`ssh_ok`] every 50 ms until it works; for at most `timeout` in all.
pub async fn wait_for_ssh(net: &BareNet, key: &Path, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    while !port_open(net).await {
        if Instant::now() >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the guest's port 22 did not open"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while !ssh_ok(net, key).await {
        if Instant::now() >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "SSH did not come up"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The resident set of process `pid`, in KiB.
pub fn rss_kib(pid: i32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
