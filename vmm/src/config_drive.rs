//! The NoCloud config drive: a small vfat (or iso9660) volume labelled `CIDATA` with
//! `meta-data`, `user-data` and `network-config`, read by cloud-init (real images) and by the
//! minimal image's `/init`.
//!
//! Injection safety: nothing from the caller reaches the YAML unvalidated or unquoted. Hostnames
//! must be RFC 1123 names, instance ids `[A-Za-z0-9._-]`, SSH keys one line of printable ASCII
//! of the form `<known type> <base64> [comment]`, addresses parse as IPs. Every string value is
//! then written as a JSON string, which is a YAML double-quoted scalar, so even a value that
//! slipped through could not start a new key.
//!
//! User data: without the caller's own user-data, `user-data` is our `#cloud-config` with
//! `ssh_authorized_keys`. With it, `user-data` is a MIME multipart (what cloud-init calls
//! "mime-multi"): our part first, carrying `Merge-Type: list(append)+dict(no_replace,recurse_list)+str()`
//! so the caller's `ssh_authorized_keys` are appended to ours rather than replacing them, then
//! the caller's part, passed through unchanged with a content type chosen from its first line
//! (`#cloud-config`, `#!`, `#cloud-boothook`, `#include`; anything else is refused).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::spec::MacAddr;

/// On-disk format of the drive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigDriveFormat {
    /// FAT (mkfs.vfat + mcopy: Debian packages dosfstools, mtools).
    #[default]
    Vfat,
    /// ISO 9660 (xorriso: Debian package xorriso).
    Iso9660,
}

/// What goes on the drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigDriveParams {
    /// `instance-id` (cloud-init reruns per-instance modules when it changes).
    pub instance_id: String,
    /// `local-hostname`.
    pub hostname: String,
    /// OpenSSH public keys for root / the default user.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// The caller's own user-data, merged as described in the module docs.
    #[serde(default)]
    pub user_data: Option<String>,
    /// Static network configuration per NIC.
    #[serde(default)]
    pub network: Vec<NicNetwork>,
}

/// Static addressing for the NIC with `mac`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicNetwork {
    /// The NIC, matched by MAC address.
    pub mac: MacAddr,
    /// Addresses with prefix length, e.g. `10.0.0.2/24`.
    pub addresses: Vec<Cidr>,
    /// Default gateway (written as a route `to: 0.0.0.0/0`, or `::/0` for IPv6).
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// DNS servers.
    #[serde(default)]
    pub nameservers: Vec<IpAddr>,
}

/// An address with prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = ConfigDriveError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ConfigDriveError::InvalidAddress { address: s.to_owned() };
        let (addr, len) = s.split_once('/').ok_or_else(err)?;
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let prefix_len: u8 = len.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(err());
        }
        Ok(Cidr { addr, prefix_len })
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The three files, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDriveFiles {
    /// `meta-data`.
    pub meta_data: String,
    /// `user-data`.
    pub user_data: String,
    /// `network-config`.
    pub network_config: String,
}

/// Config drive errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    /// Not an RFC 1123 hostname.
    #[error("invalid hostname {hostname:?}")]
    InvalidHostname {
        /// The value given.
        hostname: String,
    },
    /// Instance id outside `[A-Za-z0-9._-]{1,128}`.
    #[error("invalid instance id {instance_id:?}")]
    InvalidInstanceId {
        /// The value given.
        instance_id: String,
    },
    /// Not a single-line OpenSSH public key of a known type.
    #[error("invalid SSH public key #{index}")]
    InvalidSshKey {
        /// Position in the list.
        index: usize,
    },
    /// Not `address/prefix`.
    #[error("invalid address {address:?} (expected address/prefix)")]
    InvalidAddress {
        /// The value given.
        address: String,
    },
    /// User data in a format we cannot pass through.
    #[error("unsupported user-data (must start with #cloud-config, #!, #cloud-boothook or #include)")]
    UnsupportedUserData,
    /// A required program is not installed.
    #[error("{program} not found (install the Debian package {package})")]
    ProgramNotFound {
        /// The program.
        program: &'static str,
        /// Its Debian package.
        package: &'static str,
    },
    /// A file could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A tool failed.
    #[error("{program} failed with {status}")]
    Tool {
        /// The program.
        program: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// Its stderr.
        stderr: String,
    },
}

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Checks an OpenSSH public key line: `<type> <base64> [comment]`, printable ASCII only.
pub fn validate_ssh_key(key: &str) -> bool {
    if key.is_empty() || key.len() > 16 * 1024 || !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return false;
    }
    let mut parts = key.splitn(3, ' ');
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return false;
    };
    KEY_TYPES.contains(&kind)
        && blob.len() >= 16
        && blob.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

/// Checks an RFC 1123 hostname (labels of `[a-zA-Z0-9-]`, not starting or ending with `-`).
pub fn validate_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A YAML double-quoted scalar (a JSON string is one).
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Validates the parameters and renders the three files (pure).
pub fn render(params: &ConfigDriveParams) -> Result<ConfigDriveFiles, ConfigDriveError> {
    if !validate_hostname(&params.hostname) {
        return Err(ConfigDriveError::InvalidHostname { hostname: params.hostname.clone() });
    }
    let id = &params.instance_id;
    if id.is_empty()
        || id.len() > 128
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(ConfigDriveError::InvalidInstanceId { instance_id: id.clone() });
    }
    for (index, key) in params.ssh_authorized_keys.iter().enumerate() {
        if !validate_ssh_key(key) {
            return Err(ConfigDriveError::InvalidSshKey { index });
        }
    }

    let mut meta = String::new();
    let _ = writeln!(meta, "instance-id: {}", q(id));
    let _ = writeln!(meta, "local-hostname: {}", q(&params.hostname));
    meta.push_str(&yaml_list("public-keys", "", &params.ssh_authorized_keys));

    let mut ours = String::from("#cloud-config\n");
    ours.push_str(&yaml_list("ssh_authorized_keys", "", &params.ssh_authorized_keys));
    let user_data = match &params.user_data {
        None => ours,
        Some(theirs) => multipart(&ours, theirs)?,
    };

    Ok(ConfigDriveFiles { meta_data: meta, user_data, network_config: network_config(&params.network) })
}

fn yaml_list(key: &str, indent: &str, items: &[String]) -> String {
    if items.is_empty() {
        return format!("{indent}{key}: []\n");
    }
    let mut s = format!("{indent}{key}:\n");
    for item in items {
        let _ = writeln!(s, "{indent}  - {}", q(item));
    }
    s
}

fn network_config(nics: &[NicNetwork]) -> String {
    let mut s = String::from("version: 2\n");
    if nics.is_empty() {
        s.push_str("ethernets: {}\n");
        return s;
    }
    s.push_str("ethernets:\n");
    for (i, nic) in nics.iter().enumerate() {
        let _ = writeln!(s, "  nic{i}:");
        s.push_str("    match:\n");
        let _ = writeln!(s, "      macaddress: {}", q(&nic.mac.to_string()));
        let addrs: Vec<String> = nic.addresses.iter().map(ToString::to_string).collect();
        s.push_str(&yaml_list("addresses", "    ", &addrs));
        if let Some(gw) = nic.gateway {
            let to = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
            s.push_str("    routes:\n");
            let _ = writeln!(s, "      - to: {}", q(to));
            let _ = writeln!(s, "        via: {}", q(&gw.to_string()));
        }
        if !nic.nameservers.is_empty() {
            let ns: Vec<String> = nic.nameservers.iter().map(ToString::to_string).collect();
            s.push_str("    nameservers:\n");
            s.push_str(&yaml_list("addresses", "      ", &ns));
        }
    }
    s
}

/// [`user_data_content_type`]'s rule as a regular expression (ECMA-262, and Python's `re` alike),
/// with the empty string (no user-data) allowed too.
pub const USER_DATA_PATTERN: &str = r"^(?![\s\S])|^#!|^(#cloud-config|#cloud-boothook|#include)[ \t\r]*(\n|$)";

/// The MIME type the caller's user-data goes in, chosen from its first line (`#cloud-config`,
/// `#!…`, `#cloud-boothook`, `#include`, each but `#!` with nothing after it but spaces, tabs or
/// a carriage return); `None` for anything else, which [`render`] refuses. The control plane
/// checks user-data with it when an instance is created, and its API document states the same
/// rule as [`USER_DATA_PATTERN`].
pub fn user_data_content_type(user_data: &str) -> Option<&'static str> {
    let first = user_data.split('\n').next().unwrap_or_default().trim_end_matches([' ', '\t', '\r']);
    if first == "#cloud-config" {
        Some("text/cloud-config")
    } else if first.starts_with("#!") {
        Some("text/x-shellscript")
    } else if first == "#cloud-boothook" {
        Some("text/cloud-boothook")
    } else if first == "#include" {
        Some("text/x-include-url")
    } else {
        None
    }
}

fn multipart(ours: &str, theirs: &str) -> Result<String, ConfigDriveError> {
    let content_type = user_data_content_type(theirs).ok_or(ConfigDriveError::UnsupportedUserData)?;
    // A boundary that cannot occur in either part.
    let mut boundary = String::from("==cloud-vmm-boundary==");
    while ours.contains(&boundary) || theirs.contains(&boundary) {
        boundary.push('=');
    }
    let mut s = String::new();
    let _ = write!(
        s,
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n\
         --{boundary}\nContent-Type: text/cloud-config; charset=\"utf-8\"\n\
         Merge-Type: list(append)+dict(no_replace,recurse_list)+str()\n\n{ours}\n\
         --{boundary}\nContent-Type: {content_type}; charset=\"utf-8\"\n\n{theirs}\n\
         --{boundary}--\n"
    );
    Ok(s)
}

/// Renders and writes the drive to `out` (via `out.tmp` and a rename).
pub async fn build(params: &ConfigDriveParams, format: ConfigDriveFormat, out: &Path) -> Result<(), ConfigDriveError> {
    let files = render(params)?;
    let staging = out.with_extension("staging");
    let tmp = out.with_extension("tmp");
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ConfigDriveError::Write { path, source }
    };
    let _ = tokio::fs::remove_dir_all(&staging).await;
    let _ = tokio::fs::remove_file(&tmp).await;
    tokio::fs::create_dir_all(&staging).await.map_err(write_err(&staging))?;
    // It holds the tenant's user-data: only its owner may read it, staged or built.
    tokio::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700)).await.map_err(write_err(&staging))?;
    let names = ["meta-data", "user-data", "network-config"];
    for (name, body) in names.iter().zip([&files.meta_data, &files.user_data, &files.network_config]) {
        let p = staging.join(name);
        tokio::fs::write(&p, body).await.map_err(write_err(&p))?;
    }
    let paths: Vec<PathBuf> = names.iter().map(|n| staging.join(n)).collect();
    let result = match format {
        ConfigDriveFormat::Vfat => {
            let total: usize =
                [&files.meta_data, &files.user_data, &files.network_config].iter().map(|f| f.len()).sum();
            let kib = (total / 1024 * 2 + 1024).max(1440);
            let mut mkfs = Command::new("mkfs.vfat");
            mkfs.args(["-n", "CIDATA", "-C"]).arg(&tmp).arg(kib.to_string());
            run(mkfs, "mkfs.vfat", "dosfstools").await?;
            let mut mcopy = Command::new("mcopy");
            mcopy.arg("-oi").arg(&tmp).args(&paths).arg("::");
            run(mcopy, "mcopy", "mtools").await
        }
        ConfigDriveFormat::Iso9660 => {
            let mut x = Command::new("xorriso");
            x.args(["-as", "mkisofs", "-quiet", "-volid", "CIDATA", "-joliet", "-rock"])
                .arg("-output")
                .arg(&tmp)
                .args(&paths);
            run(x, "xorriso", "xorriso").await
        }
    };
    let _ = tokio::fs::remove_dir_all(&staging).await;
    result?;
    tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).await.map_err(write_err(&tmp))?;
    tokio::fs::rename(&tmp, out).await.map_err(write_err(out))
}

async fn run(mut cmd: Command, program: &'static str, package: &'static str) -> Result<(), ConfigDriveError> {
    let out = cmd.stdin(Stdio::null()).output().await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ConfigDriveError::ProgramNotFound { program, package },
        _ => ConfigDriveError::Write { path: PathBuf::from(program), source: e },
    })?;
    if !out.status.success() {
        return Err(ConfigDriveError::Tool {
            program,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0123456789abcdefghijklmnopqrstuvwxyzABCD alice@example";

    fn params() -> ConfigDriveParams {
        ConfigDriveParams {
            instance_id: "i-0001".into(),
            hostname: "web-1".into(),
            ssh_authorized_keys: vec![KEY.into()],
            user_data: None,
            network: vec![NicNetwork {
                mac: "52:54:00:00:00:01".parse().unwrap(),
                addresses: vec!["10.0.0.2/24".parse().unwrap()],
                gateway: Some("10.0.0.1".parse().unwrap()),
                nameservers: vec!["10.0.0.1".parse().unwrap()],
            }],
        }
    }

    #[test]
    fn renders_the_three_files() {
        let f = render(&params()).unwrap();
        assert_eq!(
            f.meta_data,
            format!("instance-id: \"i-0001\"\nlocal-hostname: \"web-1\"\npublic-keys:\n  - \"{KEY}\"\n")
        );
        assert_eq!(f.user_data, format!("#cloud-config\nssh_authorized_keys:\n  - \"{KEY}\"\n"));
        assert_eq!(
            f.network_config,
            "version: 2\nethernets:\n  nic0:\n    match:\n      macaddress: \"52:54:00:00:00:01\"\n    \
             addresses:\n      - \"10.0.0.2/24\"\n    routes:\n      - to: \"0.0.0.0/0\"\n        \
             via: \"10.0.0.1\"\n    nameservers:\n      addresses:\n        - \"10.0.0.1\"\n"
        );
    }

    #[test]
    fn injection_attempts_are_rejected() {
        let mut p = params();
        p.hostname = "web\nssh_authorized_keys: [evil]".into();
        assert!(matches!(render(&p), Err(ConfigDriveError::InvalidHostname { .. })));
        p.hostname = "a: b".into();
        assert!(matches!(render(&p), Err(ConfigDriveError::InvalidHostname { .. })));

        let mut p = params();
        p.ssh_authorized_keys = vec![format!("{KEY}\nssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAB evil")];
        assert!(matches!(render(&p), Err(ConfigDriveError::InvalidSshKey { index: 0 })));
        p.ssh_authorized_keys = vec!["not a key".into()];
        assert!(matches!(render(&p), Err(ConfigDriveError::InvalidSshKey { .. })));

        let mut p = params();
        p.instance_id = "i\"; rm -rf /".into();
        assert!(matches!(render(&p), Err(ConfigDriveError::InvalidInstanceId { .. })));

        assert!(matches!("10.0.0.2/33".parse::<Cidr>(), Err(ConfigDriveError::InvalidAddress { .. })));
        assert!("10.0.0.2".parse::<Cidr>().is_err());
    }

    #[test]
    fn quotes_in_key_comments_stay_inside_the_string() {
        let mut p = params();
        let key = format!("{KEY} \"quoted\" \\ back");
        p.ssh_authorized_keys = vec![key.clone()];
        let f = render(&p).unwrap();
        let line = f.meta_data.lines().nth(3).unwrap();
        let parsed: String = serde_json::from_str(line.trim_start_matches("  - ")).unwrap();
        assert_eq!(parsed, key);
    }

    #[test]
    fn user_cloud_config_becomes_multipart_and_other_formats_are_refused() {
        let mut p = params();
        p.user_data = Some("#cloud-config\npackages: [htop]\n".into());
        let f = render(&p).unwrap();
        assert!(f.user_data.starts_with("Content-Type: multipart/mixed"));
        assert!(f.user_data.contains("Merge-Type: list(append)"));
        assert!(
            f.user_data
                .contains("Content-Type: text/cloud-config; charset=\"utf-8\"\n\n#cloud-config\npackages: [htop]")
        );
        assert!(f.user_data.contains("ssh_authorized_keys:"));
        p.user_data = Some("#!/bin/sh\necho hi\n".into());
        assert!(render(&p).unwrap().user_data.contains("text/x-shellscript"));
        p.user_data = Some("just text".into());
        assert!(matches!(render(&p), Err(ConfigDriveError::UnsupportedUserData)));
        assert_eq!(user_data_content_type("#cloud-boothook\r\necho hi"), Some("text/cloud-boothook"));
        assert_eq!(user_data_content_type("#include \nhttps://example.com/x"), Some("text/x-include-url"));
        assert_eq!(user_data_content_type(" #cloud-config\n"), None);
        assert_eq!(user_data_content_type(""), None);
    }

    #[tokio::test]
    async fn builds_a_vfat_volume_labelled_cidata() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cidata.img");
        build(&params(), ConfigDriveFormat::Vfat, &out).await.unwrap();
        let listing = std::process::Command::new("mdir").args(["-b", "-i"]).arg(&out).arg("::").output().unwrap();
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert!(listing.contains("meta-data"), "{listing}");
        let label = std::process::Command::new("mlabel").args(["-s", "-i"]).arg(&out).arg("::").output().unwrap();
        assert!(String::from_utf8_lossy(&label.stdout).contains("CIDATA"));
    }

    #[tokio::test]
    async fn builds_an_iso9660_volume() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cidata.iso");
        build(&params(), ConfigDriveFormat::Iso9660, &out).await.unwrap();
        let bytes = std::fs::read(&out).unwrap();
        // The primary volume descriptor at 32 KiB carries the volume id at offset 40.
        assert_eq!(&bytes[32768 + 1..32768 + 6], b"CD001");
        assert_eq!(&bytes[32768 + 40..32768 + 46], b"CIDATA");
    }
}
