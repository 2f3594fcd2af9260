//! The processes under test: the control plane and host agents, each stopped by PID on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use control_plane::testing::TestDatabase;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::net::{HostNet, TestNetwork};

/// A child process that is terminated (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout/stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        cmd.stdin(Stdio::null()).stdout(file.try_clone().expect("log file")).stderr(file);
        scrub_env(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { child, name: name.to_owned(), log }
    }

    /// The process id.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// SIGKILL, as a crash would.
    pub fn kill_hard(&mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// Panics with the log's tail if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}); log:\n{}", self.name, tail(&self.log, 40));
        }
    }

    /// The last lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: what the process said is the first thing one wants to see.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("--- last lines of {} ({}):\n{}\n---\n", self.name, self.log.display(), self.log_tail(60))
                    .as_bytes(),
            );
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(self.pid(), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = kill(self.pid(), Signal::SIGKILL);
                let _ = self.child.wait();
            }
        }
    }
}

/// Removes the caller's `CLOUD_*` variables, so only the test's own settings apply.
pub fn scrub_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CLOUD_") {
            cmd.env_remove(key);
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running control plane on the test network, with its own database.
#[derive(Debug)]
pub struct ControlPlane {
    pub proc: Proc,
    pub api: String,
    pub grpc_url: String,
    pub data_dir: PathBuf,
    pub admin_token: String,
    pub http: reqwest::Client,
    _db: TestDatabase,
}

/// Starts a control plane listening on the network's gateway address, and waits until healthy.
pub async fn spawn_control_plane(net: &TestNetwork, dir: &Path) -> ControlPlane {
    let db = TestDatabase::create().await.expect("test database");
    let data_dir = dir.join("control-plane");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let gw = net.gateway();
    let (http_port, grpc_port) = (free_port(gw), free_port(gw));
    let api = format!("http://{gw}:{http_port}");
    let mut cmd = Command::new(crate::binary("control-plane"));
    cmd.arg("--data-dir")
        .arg(&data_dir)
        .args(["--listen", &format!("{gw}:{http_port}")])
        .args(["--fleet-grpc-listen", &format!("{gw}:{grpc_port}")])
        .args(["--database-url", &db.url])
        .args(["--log-filter", "info,control_plane=debug"])
        .arg("serve");
    let mut proc = Proc::spawn("control-plane", cmd, dir.join("control-plane.log"));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
    wait_until(Duration::from_secs(60), "the control plane to be healthy", || {
        proc.assert_running();
        let http = http.clone();
        let url = format!("{api}/healthz");
        async move { http.get(url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    let admin_token =
        std::fs::read_to_string(data_dir.join("admin-token")).expect("admin token file").trim().to_owned();
    ControlPlane { proc, api, grpc_url: format!("https://{gw}:{grpc_port}"), data_dir, admin_token, http, _db: db }
}

impl ControlPlane {
    /// An authenticated request to the API.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.api)).bearer_auth(&self.admin_token)
    }

    /// Creates a join token as the bootstrap operator.
    pub async fn create_join_token(&self) -> String {
        let resp = self
            .request(reqwest::Method::POST, "/v1/hosts/join-tokens")
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("join token");
        assert_eq!(resp.status(), 201, "join token: {}", resp.text().await.unwrap_or_default());
        let body: Value = resp.json().await.expect("json");
        body["token"].as_str().expect("token").to_owned()
    }

    /// `GET /v1/hosts`.
    pub async fn hosts(&self) -> Vec<Value> {
        let resp = self.request(reqwest::Method::GET, "/v1/hosts").send().await.expect("hosts");
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("json")
    }
}

/// A host agent in its own namespace.
#[derive(Debug)]
pub struct Agent {
    pub proc: Option<Proc>,
    pub net: HostNet,
    pub state_dir: PathBuf,
    pub endpoint: String,
    /// The (now spent) token this host joined with.
    pub join_token: String,
    dir: PathBuf,
    n: u8,
}

impl Drop for Agent {
    /// VMs outlive their agent by design; a test's VMs must not outlive the test. Stops the agent
    /// first, then kills every QEMU whose instance directory is under this agent's state.
    fn drop(&mut self) {
        drop(self.proc.take());
        kill_vms_under(&self.state_dir);
    }
}

/// SIGKILLs every process whose command line names a path under `dir` (the test's QEMUs).
pub fn kill_vms_under(dir: &Path) {
    let needle = dir.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let is_qemu = cmdline.split(|b| *b == 0).next().is_some_and(|a| a.ends_with(b"qemu-system-x86_64"));
        if is_qemu && cmdline.windows(needle.len()).any(|w| w == needle) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The agent flags shared by `join` and `run`.
fn agent_command(net: &HostNet, state_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = net.command(&crate::binary("host-agent"));
    cmd.arg("--state-dir")
        .arg(state_dir)
        .args(["--listen", &format!("{}:7444", net.address)])
        .args(["--advertise-url", &format!("https://{}:7444", net.address)])
        .args(["--report-interval-ms", "500"])
        .args(["--capacity-vcpus", "4", "--capacity-memory-mib", "4096", "--capacity-disk-gib", "20"])
        .args(args);
    cmd
}

/// Runs `host-agent join` in the host's namespace; returns its exit status and output.
pub fn agent_join(net: &HostNet, state_dir: &Path, cp: &ControlPlane, token: &str) -> std::process::Output {
    let mut cmd = agent_command(net, state_dir, &["join", "--control-plane", &cp.api, "--token", token]);
    scrub_env(&mut cmd);
    cmd.output().expect("run host-agent join")
}

/// Joins host `n` (a new namespace) with a fresh token and starts its agent.
pub async fn spawn_agent(net: &mut TestNetwork, n: u8, cp: &ControlPlane, dir: &Path) -> Agent {
    let host = net.add_host(n);
    let state_dir = dir.join(format!("agent-{n}"));
    let token = cp.create_join_token().await;
    let out = agent_join(&host, &state_dir, cp, &token);
    assert!(out.status.success(), "join failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut agent = Agent {
        proc: None,
        endpoint: format!("https://{}:7444", host.address),
        join_token: token,
        net: host,
        state_dir,
        dir: dir.to_path_buf(),
        n,
    };
    agent.start().await;
    agent
}

impl Agent {
    /// Starts `host-agent run` and waits until its gRPC port accepts connections.
    pub async fn start(&mut self) {
        let cmd = agent_command(&self.net, &self.state_dir, &["run"]);
        let mut proc =
            Proc::spawn(&format!("host-agent-{}", self.n), cmd, self.dir.join(format!("agent-{}.log", self.n)));
        let addr = std::net::SocketAddr::from((self.net.address, 7444));
        wait_until(Duration::from_secs(60), "the agent's gRPC port", || {
            proc.assert_running();
            async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
        })
        .await;
        self.proc = Some(proc);
    }

    /// The host id from the agent's stored identity.
    pub fn host_id(&self) -> String {
        let text = std::fs::read_to_string(self.state_dir.join("identity/host.json")).expect("host.json");
        let v: Value = serde_json::from_str(&text).expect("json");
        v["host_id"].as_str().expect("host_id").to_owned()
    }
}

/// A free TCP port on `addr`.
pub fn free_port(addr: std::net::Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((addr, 0)).expect("bind").local_addr().expect("addr").port()
}

/// Polls `check` with backoff until it returns true or `timeout` passes (then panics).
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// mTLS clients of the fleet's gRPC services, as the control plane or a host would make them.
pub mod clients {
    use cloud_proto::agent::v1::control_plane_client::ControlPlaneClient;
    use cloud_proto::agent::v1::host_agent_client::HostAgentClient;
    use cloud_proto::identity::{CONTROL_PLANE_DNS, PeerIdentity};
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

    /// A certificate and key, PEM.
    pub type Pem = (String, String);

    async fn channel(
        url: &str,
        server: &str,
        ca_pem: &str,
        identity: Option<Pem>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name(server);
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Endpoint::from_shared(url.to_owned())?.tls_config(tls)?.connect().await
    }

    /// The control plane's identity, issued from its CA in `data_dir/pki` (as the server does).
    pub fn control_plane_identity(data_dir: &std::path::Path) -> (Pem, String) {
        let ca = control_plane::fleet::pki::FleetCa::load_or_create(&data_dir.join("pki")).expect("fleet CA");
        let issued = ca.issue_control_plane().expect("issue");
        ((issued.cert_pem, issued.key_pem), ca.cert_pem().to_owned())
    }

    /// A client of host `host_id`'s agent at `url`, presenting `identity` (or none).
    pub async fn agent(
        url: &str,
        host_id: &str,
        ca_pem: &str,
        identity: Option<Pem>,
    ) -> Result<HostAgentClient<Channel>, tonic::transport::Error> {
        let host = PeerIdentity::Host(host_id.parse().expect("host id")).dns_name();
        Ok(HostAgentClient::new(channel(url, &host, ca_pem, identity).await?))
    }

    /// A client of the control plane's fleet service.
    pub async fn control_plane(
        url: &str,
        ca_pem: &str,
        identity: Option<Pem>,
    ) -> Result<ControlPlaneClient<Channel>, tonic::transport::Error> {
        Ok(ControlPlaneClient::new(channel(url, CONTROL_PLANE_DNS, ca_pem, identity).await?))
    }

    /// A host's stored certificate and key (from its state directory).
    pub fn host_identity(state_dir: &std::path::Path) -> Pem {
        let read = |name: &str| std::fs::read_to_string(state_dir.join("identity").join(name)).expect("identity file");
        (read("host.pem"), read("host.key"))
    }
}
