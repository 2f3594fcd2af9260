//! Test networks: a bridge in the root namespace and one network namespace per host, joined
//! to it by a veth pair. Everything is named after a per-test id and removed on drop.

use std::net::Ipv4Addr;
use std::process::Command;

/// Runs `ip` with `args`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out =
        Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("cannot run ip (install iproute2): {e}"));
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn ip_quiet(args: &[&str]) -> bool {
    Command::new("ip").args(args).output().is_ok_and(|o| o.status.success())
}

/// A bridge in the root namespace with a /24 of 10.250.0.0/16 that no other test uses.
#[derive(Debug)]
pub struct TestNetwork {
    /// Short unique id used in every name (≤ 5 characters).
    pub id: String,
    pub bridge: String,
    /// The third octet of 10.250.N.0/24.
    pub octet: u8,
    hosts: Vec<String>,
}

impl TestNetwork {
    /// Creates the bridge, picking a free 10.250.N.0/24. Tests run in parallel processes: the
    /// check that a /24 is free and the claim of it happen under one lock file for all of them,
    /// or two tests could both find a /24 free and both take it (their hosts then answer for
    /// each other).
    pub fn create() -> Self {
        crate::require_root();
        let lock = std::fs::File::create(std::env::temp_dir().join("cloud-tests-net.lock"))
            .unwrap_or_else(|e| panic!("cannot create the test network lock file: {e}"));
        lock.lock().unwrap_or_else(|e| panic!("cannot lock the test network lock file: {e}"));
        let seed = std::process::id();
        for attempt in 0..200u32 {
            let octet = ((seed + attempt) % 200 + 20) as u8;
            let id = format!("{octet:03}{}", (seed % 100));
            let bridge = format!("ct{id}br");
            // A namespace an earlier test deleted lives on while anything holds it, and its
            // veths with it: an id whose names are still in use is not free.
            if links_named(&format!("ct{id}")) {
                continue;
            }
            // A MAC of its own: a bridge without one takes its lowest port's, and would change
            // it under the hosts' ARP caches when a later host's veth joins.
            let mac = format!("02:ce:fa:00:{octet:02x}:01");
            if !ip_quiet(&["link", "add", &bridge, "address", &mac, "type", "bridge"]) {
                continue;
            }
            let addr = format!("10.250.{octet}.1/24");
            let in_use = Command::new("ip")
                .args(["-4", "-o", "addr", "show", "to", &format!("10.250.{octet}.0/24")])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty());
            if in_use {
                ip_quiet(&["link", "del", &bridge]);
                continue;
            }
            ip(&["addr", "add", &addr, "dev", &bridge]);
            ip(&["link", "set", &bridge, "up"]);
            return Self { id, bridge, octet, hosts: Vec::new() };
        }
        panic!("no free 10.250.N.0/24 for a test network");
    }

    /// The bridge's own address (where the control plane listens).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.octet, 1)
    }

    /// Creates network namespace number `n` (1-based) attached to the bridge with address .10+n.
    pub fn add_host(&mut self, n: u8) -> HostNet {
        let netns = format!("ct{}h{n}", self.id);
        let outer = format!("ct{}v{n}", self.id);
        let inner = "eth0".to_owned();
        let address = Ipv4Addr::new(10, 250, self.octet, 10 + n);
        ip(&["netns", "add", &netns]);
        self.hosts.push(netns.clone());
        ip(&["link", "add", &outer, "type", "veth", "peer", "name", &format!("ct{}p{n}", self.id)]);
        ip(&["link", "set", &outer, "master", &self.bridge, "up"]);
        ip(&["link", "set", &format!("ct{}p{n}", self.id), "netns", &netns, "name", &inner]);
        ip(&["-n", &netns, "addr", "add", &format!("{address}/24"), "dev", &inner]);
        ip(&["-n", &netns, "link", "set", &inner, "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        HostNet { netns, address }
    }
}

/// Whether any link of the root namespace has a name starting with `prefix`.
fn links_named(prefix: &str) -> bool {
    let out = Command::new("ip").args(["-o", "link", "show"]).output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out).lines().any(|l| l.split(": ").nth(1).is_some_and(|name| name.starts_with(prefix)))
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        for netns in &self.hosts {
            // Deleting the namespace removes its end of the veth and, with it, the root end.
            ip_quiet(&["netns", "del", netns]);
        }
        ip_quiet(&["link", "del", &self.bridge]);
    }
}

/// One host's namespace.
#[derive(Debug, Clone)]
pub struct HostNet {
    pub netns: String,
    pub address: Ipv4Addr,
}

impl HostNet {
    /// A command that runs `program` inside this namespace: its network namespace only
    /// (`nsenter`; `ip netns exec` would also mount a sysfs of its own, which hides the host's
    /// cgroups from an agent that confines VMs in them).
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns)).arg("--").arg(program);
        cmd
    }
}
