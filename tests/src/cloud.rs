//! A whole small cloud for a test: a control plane and one host on a test network, cloudctl
//! set up for them, and the SSH key `alice` registered. Everything stops and is removed on drop
//! (the agent and its VMs first).

use serde_json::Value;

use crate::cloudctl::Cloudctl;
use crate::guest::ssh_keygen;
use crate::net::TestNetwork;
use crate::process::{Agent, ControlPlane, spawn_agent, spawn_control_plane};

/// A control plane with one host, cloudctl, and the key `alice` (its private file in `key`).
#[derive(Debug)]
pub struct OneHostCloud {
    pub cli: Cloudctl,
    /// The private key of `alice`.
    pub key: String,
    pub agent: Agent,
    pub cp: ControlPlane,
    _net: TestNetwork,
    pub dir: tempfile::TempDir,
}

impl OneHostCloud {
    /// Starts it and waits until the host is active.
    pub async fn start() -> OneHostCloud {
        let mut net = TestNetwork::create();
        let dir = tempfile::tempdir().expect("temporary directory");
        let cp = spawn_control_plane(&net, dir.path()).await;
        let agent = spawn_agent(&mut net, 1, &cp, dir.path()).await;
        cp.wait_active_hosts(1).await;
        let cli = Cloudctl::new(&cp, &dir.path().join("home"));
        let (key, _) = ssh_keygen(dir.path(), "alice");
        let key = key.to_str().expect("UTF-8 path").to_owned();
        cli.run(&["ssh-key", "create", "alice", "--public-key", &format!("@{key}.pub")]).await.ok("ssh-key create");
        OneHostCloud { cli, key, agent, cp, _net: net, dir }
    }

    /// `instance ssh NAME -- COMMAND` (one command line for the guest's shell), which must work
    /// at once and print no warning; its output.
    pub async fn ssh(&self, name: &str, command: &str) -> String {
        let run = self.cli.run(&["instance", "ssh", name, "-i", &self.key, "--", command]).await;
        let run = run.ok(&format!("instance ssh {name} -- {command}"));
        assert_eq!(run.err.trim(), "", "instance ssh printed warnings");
        run.text()
    }

    /// Runs a lifecycle verb with `--wait` and returns the instance, which must be `state` (and,
    /// when running, ready).
    pub async fn lifecycle(&self, line: &str, state: &str) -> Value {
        let run = self.cli.line(line).await.ok(line);
        let instance = run.out["instance"].clone();
        assert_eq!(instance["state"], state, "{line}: {}", run.out);
        if state == "running" {
            assert!(instance["ready_at"].is_string(), "{line} returned before the guest was ready: {instance}");
        }
        instance
    }
}
