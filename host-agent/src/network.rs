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
//! Isolation (nft table `bridge cloud_agent`, see [`Network::isolation_ruleset`]): every tap
//! the agent registered as a [`Port`] sends only from its own MAC and IPv4 address (ARP
//! included; no IPv6, no DHCP server answers, no routing through the gateway back into the
//! subnet), and the bridge forwards its frames only to taps of the same project. A tap the
//! agent has not registered passes nothing. The table is rebuilt from the registered ports in
//! one transaction whenever one comes or goes, so the kernel never holds a partial version.
//!
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

/// One tap on the bridge as isolation sees it: who may send through it and whom it may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The tap.
    pub tap: String,
    /// The only source MAC its frames may carry (the guest NIC's).
    pub mac: vmm::spec::MacAddr,
    /// The only source IPv4 address its packets (and ARP) may carry.
    pub address: std::net::Ipv4Addr,
    /// Its network: ports with the same segment reach each other, no other.
    pub segment: String,
}

/// The host network. Every method re-reads the kernel's state, except isolation, which is
/// rebuilt from the ports registered here (the instances' records, at start and as they change).
#[derive(Debug, Clone)]
pub struct Network {
    config: NetworkConfig,
    /// The registered ports by tap; the lock also orders rebuilds of the table.
    ports: std::sync::Arc<tokio::sync::Mutex<std::collections::BTreeMap<String, Port>>>,
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
        Network { config, ports: Default::default() }
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

    /// The nftables ruleset of the bridge table isolating `ports` (replaces any previous
    /// version atomically). Frames entering from a tap go through the tap's own chain
    /// (anti-spoofing) at prerouting, then through its segment's chain (who it may reach) at
    /// forward; frames of taps not listed are dropped.
    pub fn isolation_ruleset<'a>(&self, ports: impl IntoIterator<Item = &'a Port>) -> String {
        let ports: Vec<&Port> = ports.into_iter().collect();
        let subnet = self.config.subnet;
        let gateway = subnet.gateway();
        let bridge_mac = bridge_mac(gateway);
        let mut segments: Vec<&str> = ports.iter().map(|p| p.segment.as_str()).collect();
        segments.sort_unstable();
        segments.dedup();
        let segment_index = |segment: &str| segments.binary_search(&segment).unwrap_or_default();
        let vmap = |target: &dyn Fn(usize, &Port) -> String| {
            let entries: Vec<String> =
                ports.iter().enumerate().map(|(i, p)| format!("\"{}\" : jump {}", p.tap, target(i, p))).collect();
            entries.join(", ")
        };
        let mut out =
            format!("table bridge {NFT_TABLE}\ndelete table bridge {NFT_TABLE}\ntable bridge {NFT_TABLE} {{\n");
        out += "\tchain prerouting {\n\t\ttype filter hook prerouting priority filter; policy accept;\n";
        if !ports.is_empty() {
            out += &format!("\t\tiifname vmap {{ {} }}\n", vmap(&|i, _| format!("port_{i}")));
        }
        out += &format!("\t\tiifname \"{TAP_PREFIX}*\" drop\n\t}}\n");
        out += "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n";
        if !ports.is_empty() {
            out +=
                &format!("\t\tiifname vmap {{ {} }}\n", vmap(&|_, p| format!("segment_{}", segment_index(&p.segment))));
        }
        out += &format!("\t\tiifname \"{TAP_PREFIX}*\" drop\n\t}}\n");
        for (i, p) in ports.iter().enumerate() {
            let (mac, ip) = (p.mac, p.address);
            out += &format!(
                "\tchain port_{i} {{\n\
                 \t\tether saddr != {mac} drop\n\
                 \t\tether type arp arp saddr ether {mac} arp saddr ip {ip} accept\n\
                 \t\tether type ip ip saddr {ip} udp sport 67 drop\n\
                 \t\tether type ip ip saddr {ip} ether daddr {bridge_mac} ip daddr {subnet} ip daddr != {gateway} drop\n\
                 \t\tether type ip ip saddr {ip} accept\n\
                 \t\tdrop\n\
                 \t}}\n"
            );
        }
        for (i, segment) in segments.iter().enumerate() {
            let members: Vec<String> =
                ports.iter().filter(|p| p.segment == *segment).map(|p| format!("\"{}\"", p.tap)).collect();
            out +=
                &format!("\tchain segment_{i} {{\n\t\toifname {{ {} }} accept\n\t\tdrop\n\t}}\n", members.join(", "));
        }
        out += "}\n";
        out
    }

    /// Registers `ports` (replacing any registered under the same tap) and rebuilds the
    /// isolation table.
    pub async fn add_ports(&self, ports: &[Port]) -> Result<(), NetworkError> {
        let mut registered = self.ports.lock().await;
        for port in ports {
            registered.insert(port.tap.clone(), port.clone());
        }
        self.apply_isolation(&registered).await
    }

    /// Makes `ports` the whole set of registered ports (at start, from the instances' records)
    /// and rebuilds the isolation table.
    pub async fn set_ports(&self, ports: Vec<Port>) -> Result<(), NetworkError> {
        let mut registered = self.ports.lock().await;
        *registered = ports.into_iter().map(|p| (p.tap.clone(), p)).collect();
        self.apply_isolation(&registered).await
    }

    /// Forgets every port whose tap starts with `prefix` and rebuilds the isolation table if
    /// one was registered.
    pub async fn remove_ports(&self, prefix: &str) -> Result<(), NetworkError> {
        let mut registered = self.ports.lock().await;
        let before = registered.len();
        registered.retain(|tap, _| !tap.starts_with(prefix));
        if registered.len() == before {
            return Ok(());
        }
        self.apply_isolation(&registered).await
    }

    async fn apply_isolation(&self, ports: &std::collections::BTreeMap<String, Port>) -> Result<(), NetworkError> {
        let ruleset = self.isolation_ruleset(ports.values());
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
        // One `ip` for all of it when the tap is new (a launch waits for its taps); a tap that
        // exists already (an agent restarted, a QEMU holding it) is only attached and set up.
        let attach = format!("link set {name} master {}\nlink set {name} up\n", self.config.bridge);
        let create = format!("tuntap add dev {name} mode tap\n{attach}");
        match self.run(Tool::Ip, &["-batch", "-"], Some(&create)).await {
            Ok(_) => Ok(()),
            Err(e) if self.link_exists(name).await? => {
                tracing::debug!(tap = name, error = %e, "the tap exists: attaching it");
                self.run(Tool::Ip, &["-batch", "-"], Some(&attach)).await.map(drop)
            }
            Err(e) => Err(e),
        }
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

    fn port(tap: &str, mac: &str, ip: &str, segment: &str) -> Port {
        Port { tap: tap.into(), mac: mac.parse().unwrap(), address: ip.parse().unwrap(), segment: segment.into() }
    }

    #[test]
    fn isolation_ruleset_pins_each_port_and_forwards_within_its_segment() {
        let n = Network::new(NetworkConfig::new("10.100.3.0/24".parse().unwrap()));
        let ports = [
            port("tap-aaaaaaaa0", "52:54:00:00:00:0a", "10.100.3.10", "project a"),
            port("tap-bbbbbbbb0", "52:54:00:00:00:0b", "10.100.3.11", "project b"),
            port("tap-cccccccc0", "52:54:00:00:00:0c", "10.100.3.12", "project a"),
        ];
        let rules = n.isolation_ruleset(&ports);
        assert!(rules.starts_with("table bridge cloud_agent\ndelete table bridge cloud_agent\n"));
        assert!(rules.contains(
            "iifname vmap { \"tap-aaaaaaaa0\" : jump port_0, \"tap-bbbbbbbb0\" : jump port_1, \"tap-cccccccc0\" : jump port_2 }"
        ));
        assert!(rules.contains(
            "iifname vmap { \"tap-aaaaaaaa0\" : jump segment_0, \"tap-bbbbbbbb0\" : jump segment_1, \"tap-cccccccc0\" : jump segment_0 }"
        ));
        assert!(
            rules.contains("chain segment_0 {\n\t\toifname { \"tap-aaaaaaaa0\", \"tap-cccccccc0\" } accept\n\t\tdrop")
        );
        assert!(rules.contains("chain segment_1 {\n\t\toifname { \"tap-bbbbbbbb0\" } accept\n\t\tdrop"));
        assert!(rules.contains("ether saddr != 52:54:00:00:00:0b drop"));
        assert!(rules.contains("arp saddr ether 52:54:00:00:00:0b arp saddr ip 10.100.3.11 accept"));
        assert!(rules.contains("ether daddr 02:c1:0a:64:03:01 ip daddr 10.100.3.0/24 ip daddr != 10.100.3.1 drop"));
        assert_eq!(rules.matches("iifname \"tap-*\" drop").count(), 2, "unregistered taps pass nothing");
        let none = n.isolation_ruleset(&[]);
        assert!(!none.contains("vmap") && none.contains("iifname \"tap-*\" drop"), "{none}");
    }

    #[tokio::test]
    async fn missing_binaries_name_their_package() {
        let mut cfg = NetworkConfig::new("10.1.0.0/24".parse().unwrap());
        cfg.nft = "/nonexistent/nft".into();
        let err = Network::new(cfg).ensure_nat().await.unwrap_err();
        assert!(matches!(err, NetworkError::ProgramNotFound { package: "nftables", .. }));
    }
}
