//! Host networking for instances: one bridge, one tap per NIC, egress NAT.
//!
//! ```text
//!   guest eth0 ── tap-<8 hex id><nic> ──┐
//!   guest eth0 ── tap-…                 ├── bridge (cloudbr0, <subnet>.1/24) ── NAT ── uplink
//!                                       ┘   nft table `ip cloud_agent`: masquerade <subnet>
//!                                           leaving through any interface but the bridge;
//!                                           guests open no connection to the host itself
//!                                           (agent, sshd, databases: input from the bridge
//!                                           is dropped unless it answers the host)
//! ```
//! Everything is created idempotently (look first, then create) by shelling out to `ip` and
//! `nft` (tokio child processes), so an operator can inspect and repair it with the same tools.
//! Taps are named from the instance id, which makes ownership decidable after a crash:
//! [`Network::reconcile`] deletes every `tap-*` device no instance owns. NAT is one table for
//! the whole subnet (no per-instance rules), replaced atomically in one `nft -f` transaction.
//!
//! With [`NetworkConfig::netns`] set, every command runs inside that network namespace
//! (`ip -n NS …`, `ip netns exec NS nft …`): tests give each agent its own namespace this way
//! without moving the test process. In production it is `None`: an agent started with
//! `ip netns exec NS host-agent` needs nothing special.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

pub use cloud_common::net::Ipv4Net;

use crate::spec::InstanceId;

/// Prefix of every tap this agent creates.
pub const TAP_PREFIX: &str = "tap-";
/// Name of the nftables table this agent owns.
pub const NFT_TABLE: &str = "cloud_agent";

/// How the host network is set up.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Bridge name (default `cloudbr0`).
    pub bridge: String,
    /// The host's instance subnet; the bridge gets its `.1`.
    pub subnet: Ipv4Net,
    /// Install the NAT table.
    pub nat: bool,
    /// Set `net.ipv4.ip_forward=1` (off by default: a host-wide setting).
    pub enable_ip_forward: bool,
    /// Run every command in this network namespace (tests); `None` in production.
    pub netns: Option<String>,
    /// The `ip` binary.
    pub ip: PathBuf,
    /// The `nft` binary.
    pub nft: PathBuf,
}

impl NetworkConfig {
    /// Defaults for `subnet`: bridge `cloudbr0`, NAT on, no sysctl, no namespace.
    pub fn new(subnet: Ipv4Net) -> NetworkConfig {
        NetworkConfig {
            bridge: "cloudbr0".into(),
            subnet,
            nat: true,
            enable_ip_forward: false,
            netns: None,
            ip: "ip".into(),
            nft: "nft".into(),
        }
    }
}

/// Network command failures.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A required program is not installed.
    #[error("{program} not found (install the Debian package {package})")]
    ProgramNotFound {
        /// The program.
        program: PathBuf,
        /// Its Debian package.
        package: &'static str,
    },
    /// The program could not be run.
    #[error("cannot run `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The program failed.
    #[error("`{command}` failed with {status}: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status.
        status: ExitStatus,
        /// Its stderr.
        stderr: String,
    },
    /// `ip -j` printed something we cannot parse.
    #[error("cannot parse the output of `{command}`")]
    Parse {
        /// The command line.
        command: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
}

/// The host network. Stateless: every method re-reads the kernel's state.
#[derive(Debug, Clone)]
pub struct Network {
    config: NetworkConfig,
}

#[derive(Deserialize)]
struct LinkInfo {
    ifname: String,
}

/// The bridge's fixed MAC: locally administered, from the gateway address (unique per host
/// subnet, the same across restarts; guests' MACs start with 52:54).
pub fn bridge_mac(gateway: std::net::Ipv4Addr) -> String {
    let [a, b, c, d] = gateway.octets();
    format!("02:c1:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The tap name of NIC `index` of instance `id`: `tap-<first 8 hex of id><index>` (≤ 15 chars).
pub fn tap_name(id: InstanceId, index: usize) -> String {
    let simple = id.0.simple().to_string();
    format!("{TAP_PREFIX}{}{index}", &simple[..8])
}

impl Network {
    /// A handle for `config`.
    pub fn new(config: NetworkConfig) -> Network {
        Network { config }
    }

    /// The configuration.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Creates the bridge with the gateway address, the NAT table and (if configured) enables
    /// IPv4 forwarding. Idempotent.
    pub async fn ensure_host(&self) -> Result<(), NetworkError> {
        let br = self.config.bridge.clone();
        if !self.link_exists(&br).await? {
            self.ip(&["link", "add", &br, "type", "bridge"]).await?;
        }
        // A bridge without an address of its own takes the lowest of its ports' (the taps'):
        // a tap added or removed would change the gateway's MAC under every guest's ARP cache.
        self.ip(&["link", "set", &br, "address", &bridge_mac(self.config.subnet.gateway())]).await?;
        let gw = format!("{}/{}", self.config.subnet.gateway(), self.config.subnet.prefix);
        self.ip(&["addr", "replace", &gw, "dev", &br]).await?;
        self.ip(&["link", "set", &br, "up"]).await?;
        if self.config.enable_ip_forward {
            self.run(Tool::Sysctl, &["-q", "-w", "net.ipv4.ip_forward=1"], None).await?;
        }
        if self.config.nat {
            self.ensure_nat().await?;
        }
        Ok(())
    }

    /// The nftables ruleset of [`NFT_TABLE`] (replaces any previous version atomically).
    pub fn nat_ruleset(&self) -> String {
        let subnet = self.config.subnet;
        let br = &self.config.bridge;
        format!(
            "table ip {NFT_TABLE}\n\
             delete table ip {NFT_TABLE}\n\
             table ip {NFT_TABLE} {{\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tip saddr {subnet} oifname != \"{br}\" masquerade\n\
             \t}}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tiifname \"{br}\" accept\n\
             \t\toifname \"{br}\" ct state established,related accept\n\
             \t}}\n\
             \tchain input {{\n\
             \t\ttype filter hook input priority filter; policy accept;\n\
             \t\tiifname \"{br}\" ct state established,related accept\n\
             \t\tiifname \"{br}\" drop\n\
             \t}}\n\
             }}\n"
        )
    }

    async fn ensure_nat(&self) -> Result<(), NetworkError> {
        let ruleset = self.nat_ruleset();
        self.run(Tool::Nft, &["-f", "-"], Some(&ruleset)).await?;
        Ok(())
    }

    /// Removes the NAT table (operators, tests). Missing is fine.
    pub async fn remove_nat(&self) -> Result<(), NetworkError> {
        match self.run(Tool::Nft, &["delete", "table", "ip", NFT_TABLE], None).await {
            Ok(_) => Ok(()),
            Err(NetworkError::Command { stderr, .. }) if stderr.contains("No such file") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates tap `name` on the bridge and sets it up. Idempotent.
    pub async fn ensure_tap(&self, name: &str) -> Result<(), NetworkError> {
        if !self.link_exists(name).await? {
            self.ip(&["tuntap", "add", "dev", name, "mode", "tap"]).await?;
        }
        self.ip(&["link", "set", name, "master", &self.config.bridge]).await?;
        self.ip(&["link", "set", name, "up"]).await?;
        Ok(())
    }

    /// Deletes tap `name`; a missing tap is fine.
    pub async fn remove_tap(&self, name: &str) -> Result<(), NetworkError> {
        if self.link_exists(name).await? {
            match self.ip(&["link", "del", name]).await {
                Ok(_) => {}
                Err(NetworkError::Command { stderr, .. }) if stderr.contains("Cannot find device") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// True when a link named `name` exists.
    pub async fn link_exists(&self, name: &str) -> Result<bool, NetworkError> {
        match self.ip(&["link", "show", "dev", name]).await {
            Ok(_) => Ok(true),
            Err(NetworkError::Command { stderr, .. }) if stderr.contains("does not exist") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Names of all links whose name starts with [`TAP_PREFIX`].
    pub async fn list_taps(&self) -> Result<Vec<String>, NetworkError> {
        let out = self.ip(&["-j", "link", "show"]).await?;
        let links: Vec<LinkInfo> = serde_json::from_str(&out)
            .map_err(|source| NetworkError::Parse { command: "ip -j link show".into(), source })?;
        Ok(links.into_iter().map(|l| l.ifname).filter(|n| n.starts_with(TAP_PREFIX)).collect())
    }

    /// Deletes every `tap-*` link not in `owned`; returns the names deleted.
    pub async fn reconcile(&self, owned: &HashSet<String>) -> Result<Vec<String>, NetworkError> {
        let mut removed = Vec::new();
        for tap in self.list_taps().await? {
            if !owned.contains(&tap) {
                tracing::info!(tap, "removing tap no instance owns");
                self.remove_tap(&tap).await?;
                removed.push(tap);
            }
        }
        Ok(removed)
    }

    async fn ip(&self, args: &[&str]) -> Result<String, NetworkError> {
        self.run(Tool::Ip, args, None).await
    }

    async fn run(&self, tool: Tool, args: &[&str], stdin: Option<&str>) -> Result<String, NetworkError> {
        let ip = resolve(&self.config.ip, "iproute2")?;
        let (program, mut full): (PathBuf, Vec<String>) = match (tool, &self.config.netns) {
            (Tool::Ip, None) => (ip, vec![]),
            (Tool::Ip, Some(ns)) => (ip, vec!["-n".into(), ns.clone()]),
            (other, None) => (other.resolve(&self.config)?, vec![]),
            (other, Some(ns)) => {
                let prog = other.resolve(&self.config)?;
                (ip, vec!["netns".into(), "exec".into(), ns.clone(), prog.to_string_lossy().into_owned()])
            }
        };
        full.extend(args.iter().map(|s| (*s).to_owned()));
        let command = format!("{} {}", program.display(), full.join(" "));
        let mut cmd = Command::new(&program);
        cmd.args(&full)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| NetworkError::Spawn { command: command.clone(), source })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .await
                .map_err(|source| NetworkError::Spawn { command: command.clone(), source })?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|source| NetworkError::Spawn { command: command.clone(), source })?;
        if !out.status.success() {
            return Err(NetworkError::Command {
                command,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

#[derive(Debug, Clone, Copy)]
enum Tool {
    Ip,
    Nft,
    Sysctl,
}

impl Tool {
    fn resolve(self, config: &NetworkConfig) -> Result<PathBuf, NetworkError> {
        match self {
            Tool::Ip => resolve(&config.ip, "iproute2"),
            Tool::Nft => resolve(&config.nft, "nftables"),
            Tool::Sysctl => resolve(Path::new("sysctl"), "procps"),
        }
    }
}

fn resolve(program: &Path, package: &'static str) -> Result<PathBuf, NetworkError> {
    vmm::qemu::process::find_program(program)
        .or_else(|| {
            // sysctl lives in /usr/sbin, which a non-root PATH may lack.
            let sbin = Path::new("/usr/sbin").join(program);
            sbin.is_file().then_some(sbin)
        })
        .ok_or_else(|| NetworkError::ProgramNotFound { program: program.to_owned(), package })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_an_interface_name() {
        let id = InstanceId("0123abcd-0000-4000-8000-000000000000".parse().unwrap());
        assert_eq!(tap_name(id, 0), "tap-0123abcd0");
        assert!(tap_name(id, 15).len() <= 15);
    }

    #[test]
    fn the_bridge_mac_is_local_unicast_and_per_subnet() {
        assert_eq!(bridge_mac("10.100.3.1".parse().unwrap()), "02:c1:0a:64:03:01");
        assert_ne!(bridge_mac("10.100.3.1".parse().unwrap()), bridge_mac("10.100.4.1".parse().unwrap()));
    }

    #[test]
    fn nat_ruleset_names_subnet_and_bridge() {
        let n = Network::new(NetworkConfig::new("10.100.3.0/24".parse().unwrap()));
        let rules = n.nat_ruleset();
        assert!(rules.contains("ip saddr 10.100.3.0/24 oifname != \"cloudbr0\" masquerade"));
        assert!(
            rules.contains("iifname \"cloudbr0\" ct state established,related accept\n\t\tiifname \"cloudbr0\" drop")
        );
    }

    #[tokio::test]
    async fn missing_binaries_name_their_package() {
        let mut cfg = NetworkConfig::new("10.1.0.0/24".parse().unwrap());
        cfg.nft = "/nonexistent/nft".into();
        let err = Network::new(cfg).ensure_nat().await.unwrap_err();
        assert!(matches!(err, NetworkError::ProgramNotFound { package: "nftables", .. }));
    }
}
