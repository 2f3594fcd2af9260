//! A whole small cloud for a test: a control plane and one host on a test network (more can
//! join), cloudctl set up for them, and the SSH key `alice` registered. Everything stops and is
//! removed on drop (the agents and their VMs first).

use serde_json::Value;

use crate::cloudctl::Cloudctl;
use crate::guest::ssh_keygen;
use crate::net::TestNetwork;
use crate::otlp::OtlpReceiver;
use crate::process::{Agent, ControlPlane, shared_store, spawn_agent_with, spawn_control_plane_with};
use crate::s3::S3Server;

/// Where a test cloud keeps its snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// A local directory shared by the control plane and the agents (the embedded default).
    Local,
    /// A real S3 server (s3s-fs) on the test network's gateway.
    S3,
}

/// A control plane with one host (`agent`; more in `more` once added), cloudctl, and the key
/// `alice` (its private file in `key`).
#[derive(Debug)]
pub struct OneHostCloud {
    pub cli: Cloudctl,
    /// The private key of `alice`.
    pub key: String,
    pub agent: Agent,
    /// Hosts added with [`OneHostCloud::add_host`].
    pub more: Vec<Agent>,
    pub cp: ControlPlane,
    /// Flags every service gets (the snapshot store's).
    flags: Vec<String>,
    /// The S3 server of [`Store::S3`].
    pub s3: Option<S3Server>,
    /// The trace receiver both services export to ([`OneHostCloud::start_traced`]).
    pub otlp: Option<OtlpReceiver>,
    net: TestNetwork,
    pub dir: tempfile::TempDir,
}

impl OneHostCloud {
    /// Starts it and waits until the host is active.
    pub async fn start() -> OneHostCloud {
        Self::start_with(Store::Local).await
    }

    /// [`OneHostCloud::start`] with its snapshot store on `store`.
    pub async fn start_with(store: Store) -> OneHostCloud {
        Self::start_with_flags(store, &[]).await
    }

    /// [`OneHostCloud::start_with`], with extra flags for the control plane (e.g. a short lease).
    pub async fn start_with_flags(store: Store, cp_flags: &[&str]) -> OneHostCloud {
        Self::start_custom(store, cp_flags, &[]).await
    }

    /// [`OneHostCloud::start_with_flags`], with extra flags for every agent too.
    pub async fn start_custom(store: Store, cp_flags: &[&str], agent_flags: &[&str]) -> OneHostCloud {
        Self::start_inner(store, cp_flags, agent_flags, false).await
    }

    /// [`OneHostCloud::start`] with both services exporting their traces to [`OneHostCloud::otlp`].
    pub async fn start_traced() -> OneHostCloud {
        Self::start_inner(Store::Local, &[], &[], true).await
    }

    async fn start_inner(store: Store, cp_flags: &[&str], agent_flags: &[&str], traced: bool) -> OneHostCloud {
        let mut net = TestNetwork::create();
        let dir = tempfile::tempdir().expect("temporary directory");
        let s3 = match store {
            Store::Local => None,
            Store::S3 => Some(S3Server::start_on(dir.path(), net.gateway()).await),
        };
        let otlp = if traced { Some(OtlpReceiver::start_on(net.gateway()).await) } else { None };
        let mut flags = s3.as_ref().map(S3Server::flags).unwrap_or_default();
        if let Some(otlp) = &otlp {
            flags.extend(["--log-otlp-endpoint".to_owned(), otlp.endpoint()]);
        }
        let cp_refs: Vec<String> = flags.iter().cloned().chain(cp_flags.iter().map(|f| (*f).to_owned())).collect();
        flags.extend(agent_flags.iter().map(|f| (*f).to_owned()));
        let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        let cp_refs: Vec<&str> = cp_refs.iter().map(String::as_str).collect();
        let cp = spawn_control_plane_with(&net, dir.path(), &cp_refs).await;
        let agent = spawn_agent_with(&mut net, 1, &cp, dir.path(), &refs).await;
        cp.wait_active_hosts(1).await;
        let cli = Cloudctl::new(&cp, &dir.path().join("home"));
        let (key, _) = ssh_keygen(dir.path(), "alice");
        let key = key.to_str().expect("UTF-8 path").to_owned();
        cli.run(&["ssh-key", "create", "alice", "--public-key", &format!("@{key}.pub")]).await.ok("ssh-key create");
        OneHostCloud { cli, key, agent, more: Vec::new(), cp, flags, s3, otlp, net, dir }
    }

    /// The snapshot store as the services see it, opened with a chunk cache of the test's own.
    pub fn store(&self) -> cloud_store::Store {
        let config = match &self.s3 {
            Some(s3) => s3.config(),
            None => cloud_store::StoreConfig {
                dir: shared_store(&self.dir.path().join("control-plane")),
                ..cloud_store::StoreConfig::default()
            },
        };
        cloud_store::Store::open(&config, &self.dir.path().join("test-chunks")).expect("the test's store")
    }

    /// Joins one more host and waits until it is active; its host id.
    pub async fn add_host(&mut self) -> String {
        let n = u8::try_from(self.more.len() + 2).expect("a few hosts");
        let refs: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        let agent = spawn_agent_with(&mut self.net, n, &self.cp, self.dir.path(), &refs).await;
        self.cp.wait_active_hosts(usize::from(n)).await;
        let id = agent.host_id();
        self.more.push(agent);
        id
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
