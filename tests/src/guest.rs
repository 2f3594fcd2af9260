//! Guests: the `minimal` image, SSH keys, and SSH into a guest from a host's namespace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// The `minimal` guest image built by `deploy/images/build-minimal.sh`.
#[derive(Debug, Clone)]
pub struct MinimalImage {
    pub dir: PathBuf,
    pub kernel_sha256: String,
    pub initrd_sha256: String,
    pub cmdline: String,
}

/// Finds the minimal image (`CLOUD_MINIMAL_IMAGE` or the default cache), or fails with the hint.
pub fn minimal_image() -> MinimalImage {
    let dir = PathBuf::from(
        std::env::var("CLOUD_MINIMAL_IMAGE").unwrap_or_else(|_| "/var/cache/cloud/images/minimal".into()),
    );
    let text = std::fs::read_to_string(dir.join("manifest.json"))
        .unwrap_or_else(|_| panic!("no guest image in {}: run deploy/images/build-minimal.sh first", dir.display()));
    let m: Value = serde_json::from_str(&text).expect("manifest.json");
    let file_sha = |name: &str| m["files"][name]["sha256"].as_str().expect("sha256 in manifest").to_owned();
    MinimalImage {
        kernel_sha256: file_sha("vmlinuz"),
        initrd_sha256: file_sha("initrd.img"),
        cmdline: m["boot"]["cmdline"].as_str().unwrap_or("console=ttyS0").to_owned(),
        dir,
    }
}

impl MinimalImage {
    /// Puts the kernel and initrd into a control plane's blob store (`<data_dir>/blobs/sha256`).
    pub fn seed_blobs(&self, control_plane_data_dir: &Path) {
        let blobs = control_plane_data_dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("blob dir");
        for (file, sha) in [("vmlinuz", &self.kernel_sha256), ("initrd.img", &self.initrd_sha256)] {
            std::fs::copy(self.dir.join(file), blobs.join(sha)).expect("seed blob");
        }
    }
}

/// A fresh ed25519 key pair in `dir`; returns (private key path, public key line).
pub fn ssh_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen (install openssh-client): {e}"));
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    (key, public.trim().to_owned())
}

/// Runs `command` on the guest at `ip` over SSH from inside `netns`; returns stdout on success.
pub fn ssh(netns: &str, key: &Path, ip: &str, command: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "ssh", "-i"])
        .arg(key)
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("root@{ip}"))
        .arg(command)
        .output()
        .map_err(|e| format!("cannot run ssh: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Retries [`ssh`] until it succeeds or `timeout` passes.
pub async fn wait_for_ssh(netns: &str, key: &Path, ip: &str, timeout: Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let (ns, k, addr) = (netns.to_owned(), key.to_path_buf(), ip.to_owned());
        let result = tokio::task::spawn_blocking(move || ssh(&ns, &k, &addr, "uname -a")).await.expect("ssh task");
        match result {
            Ok(out) => return out,
            Err(err) if std::time::Instant::now() > deadline => panic!("no SSH to {ip} within {timeout:?}: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// The `debian-12` guest image built by `deploy/images/build-debian12.sh`: its directory and
/// manifest (`CLOUD_DEBIAN12_IMAGE` or the default cache), or the build hint.
pub fn debian12_image() -> (PathBuf, Value) {
    let dir = PathBuf::from(
        std::env::var("CLOUD_DEBIAN12_IMAGE").unwrap_or_else(|_| "/var/cache/cloud/images/debian-12".into()),
    );
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap_or_else(|_| {
        panic!("no guest image in {}: run deploy/images/build-debian12.sh (as root) first", dir.display())
    });
    (dir, serde_json::from_str(&text).expect("manifest.json"))
}
