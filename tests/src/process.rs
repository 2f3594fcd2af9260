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
    /// Spawns `cmd` with stdout/stderr appended to `log`, without the caller's `CLOUD_*`
    /// variables.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        scrub_env(&mut cmd);
        Self::spawn_scrubbed(name, cmd, log)
    }

    /// [`Proc::spawn`] for a command whose environment the caller has already set.
    pub fn spawn_scrubbed(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        cmd.stdin(Stdio::null()).stdout(file.try_clone().expect("log file")).stderr(file);
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
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running control plane on the test network. The first replica owns the test's database;
/// more replicas ([`ControlPlane::replica`]) share it and the data directory (its fleet CA).
#[derive(Debug)]
pub struct ControlPlane {
    pub proc: Proc,
    pub api: String,
    pub grpc_url: String,
    pub data_dir: PathBuf,
    pub admin_token: String,
    pub http: reqwest::Client,
    /// The database every replica uses.
    pub db_url: String,
    /// The CA of the API's certificate, when it serves HTTPS.
    pub ca_file: Option<PathBuf>,
    launch: Launch,
    _db: Option<std::sync::Arc<TestDatabase>>,
}

/// How a control-plane replica is started (again).
#[derive(Debug, Clone)]
struct Launch {
    name: String,
    data_dir: PathBuf,
    db_url: String,
    http: std::net::SocketAddr,
    grpc: std::net::SocketAddr,
    extra: Vec<String>,
    log: PathBuf,
    tls: Option<control_plane::testing::TestTls>,
}

impl Launch {
    fn spawn(&self, env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(crate::binary("control-plane"));
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &self.http.to_string()])
            .args(["--fleet-grpc-listen", &self.grpc.to_string()]);
        if !self.db_url.is_empty() {
            cmd.args(["--database-url", &self.db_url]);
        }
        cmd.args(["--log-filter", "info,control_plane=debug"]).args(&self.extra);
        if !self.extra.iter().any(|f| f.starts_with("--store-")) {
            cmd.arg("--store-dir").arg(shared_store(&self.data_dir));
        }
        if let Some(tls) = &self.tls {
            cmd.arg("--tls-cert-file").arg(&tls.cert_file).arg("--tls-key-file").arg(&tls.key_file);
        }
        cmd.arg("serve");
        scrub_env(&mut cmd);
        cmd.envs(env.iter().copied());
        Proc::spawn_scrubbed(&self.name, cmd, self.log.clone())
    }
}

/// Starts a control plane listening on the network's gateway address, and waits until healthy.
pub async fn spawn_control_plane(net: &TestNetwork, dir: &Path) -> ControlPlane {
    spawn_control_plane_with(net, dir, &[]).await
}

/// [`spawn_control_plane`] with extra flags (before `serve`), e.g. a short operation lease.
pub async fn spawn_control_plane_with(net: &TestNetwork, dir: &Path, extra: &[&str]) -> ControlPlane {
    launch_control_plane(net, dir, extra, false).await
}

/// [`spawn_control_plane`] on a database of the test's own at `db_url` (e.g. a Patroni cluster).
pub async fn spawn_control_plane_on(net: &TestNetwork, dir: &Path, db_url: &str, extra: &[&str]) -> ControlPlane {
    start(first_launch(net, dir, db_url.to_owned(), extra, false), None, &[]).await
}

/// [`spawn_control_plane`] serving the API over HTTPS, with a certificate of a test CA
/// (`ControlPlane::ca_file`) for the gateway address.
pub async fn spawn_control_plane_tls(net: &TestNetwork, dir: &Path) -> ControlPlane {
    launch_control_plane(net, dir, &[], true).await
}

/// A control plane running its own embedded PostgreSQL in its data directory (no
/// `--database-url`), as the quickstart does.
pub async fn spawn_control_plane_embedded(net: &TestNetwork, dir: &Path, extra: &[&str]) -> ControlPlane {
    use std::os::unix::fs::PermissionsExt;
    // The server runs as `postgres`, which must traverse to its directory.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).expect("chmod test dir");
    start(first_launch(net, dir, String::new(), extra, false), None, &[]).await
}

async fn launch_control_plane(net: &TestNetwork, dir: &Path, extra: &[&str], https: bool) -> ControlPlane {
    let db = TestDatabase::create().await.expect("test database");
    let launch = first_launch(net, dir, db.url.clone(), extra, https);
    start(launch, Some(std::sync::Arc::new(db)), &[]).await
}

/// The first replica's launch: data in `dir/control-plane`, free ports on the gateway, the
/// database at `db_url` (empty: embedded), HTTPS with a test CA when `https`.
fn first_launch(net: &TestNetwork, dir: &Path, db_url: String, extra: &[&str], https: bool) -> Launch {
    let data_dir = dir.join("control-plane");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let gw = net.gateway();
    Launch {
        name: "control-plane".to_owned(),
        data_dir,
        db_url,
        http: (gw, free_port(gw)).into(),
        grpc: (gw, free_port(gw)).into(),
        extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        log: dir.join("control-plane.log"),
        tls: https.then(|| {
            let pki = dir.join("api-tls");
            std::fs::create_dir_all(&pki).expect("tls dir");
            control_plane::testing::test_tls(&pki, &[&gw.to_string()]).expect("test TLS certificate")
        }),
    }
}

async fn start(launch: Launch, db: Option<std::sync::Arc<TestDatabase>>, env: &[(&str, &str)]) -> ControlPlane {
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(60));
    if let Some(tls) = &launch.tls {
        let pem = std::fs::read(&tls.ca_file).expect("test CA");
        http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("test CA"));
    }
    let scheme = if launch.tls.is_some() { "https" } else { "http" };
    let mut cp = ControlPlane {
        proc: launch.spawn(env),
        api: format!("{scheme}://{}", launch.http),
        ca_file: launch.tls.as_ref().map(|t| t.ca_file.clone()),
        http: http.build().expect("http client"),
        grpc_url: format!("https://{}", launch.grpc),
        data_dir: launch.data_dir.clone(),
        admin_token: String::new(),
        db_url: launch.db_url.clone(),
        launch,
        _db: db,
    };
    cp.wait_healthy().await;
    cp.admin_token =
        std::fs::read_to_string(cp.data_dir.join("admin-token")).expect("admin token file").trim().to_owned();
    cp
}

impl ControlPlane {
    async fn wait_healthy(&mut self) {
        let (http, url) = (self.http.clone(), format!("{}/healthz", self.api));
        let proc = &mut self.proc;
        wait_until(Duration::from_secs(60), "the control plane to be healthy", || {
            proc.assert_running();
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(url).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }

    /// Another replica on its own ports, sharing the database and the data directory.
    pub async fn replica(&self, net: &TestNetwork, name: &str) -> ControlPlane {
        let gw = net.gateway();
        let launch = Launch {
            name: name.to_owned(),
            http: (gw, free_port(gw)).into(),
            grpc: (gw, free_port(gw)).into(),
            log: self.launch.log.with_file_name(format!("{name}.log")),
            ..self.launch.clone()
        };
        start(launch, None, &[]).await
    }

    /// Starts the process again (SIGKILL first if it still runs) with `env` added, and waits
    /// until it is healthy.
    pub async fn restart(&mut self, env: &[(&str, &str)]) {
        self.proc.kill_hard();
        self.proc = self.launch.spawn(env);
        self.wait_healthy().await;
    }

    /// True once the process has exited (a crash point fired).
    pub fn exited(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(Some(_)))
    }

    /// An authenticated request to the API.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.api)).bearer_auth(&self.admin_token)
    }

    /// An authenticated call with an optional JSON body and `Idempotency-Key`: (status, body).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.request(method.clone(), path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Waits (long-polling) until operation `id` has finished, and returns it.
    pub async fn wait_operation(&self, id: &str) -> Value {
        for _ in 0..20 {
            let path = format!("/v1/operations/{id}/wait?timeout_secs=30");
            let (status, op) = self.call(reqwest::Method::GET, &path, None, None).await;
            assert_eq!(status, 200, "{op}");
            if matches!(op["state"].as_str(), Some("succeeded" | "failed")) {
                return op;
            }
        }
        panic!("operation {id} did not finish within 10 minutes");
    }

    /// Registers the minimal image as public image `minimal` from its files (as an operator).
    pub async fn register_minimal_image(&self, image: &crate::guest::MinimalImage) -> Value {
        let body = serde_json::json!({
            "name": "minimal",
            "boot_mode": "direct_kernel",
            "kernel_path": image.dir.join("vmlinuz"),
            "initrd_path": image.dir.join("initrd.img"),
            "kernel_cmdline": image.cmdline,
        });
        let (status, img) = self.call(reqwest::Method::POST, "/v1/projects/default/images", Some(body), None).await;
        assert_eq!(status, 201, "{img}");
        img
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

    /// `GET /v1/hosts`, or nothing while the API cannot answer (its database away).
    pub async fn hosts_or_empty(&self) -> Vec<Value> {
        match self.request(reqwest::Method::GET, "/v1/hosts").send().await {
            Ok(resp) if resp.status() == 200 => resp.json().await.unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Waits until `n` hosts are active.
    pub async fn wait_active_hosts(&self, n: usize) {
        wait_until(Duration::from_secs(60), &format!("{n} active hosts"), || async {
            self.hosts().await.iter().filter(|h| h["state"] == "active").count() == n
        })
        .await;
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
    /// Extra flags of every `host-agent` command of this host.
    flags: Vec<String>,
    dir: PathBuf,
    n: u8,
}

impl Drop for Agent {
    /// VMs outlive their agent by design; a test's VMs must not outlive the test. Stops the agent
    /// first, then kills every QEMU whose instance directory is under this agent's state.
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_console_tails(&self.state_dir.join("instances"));
        }
        drop(self.proc.take());
        kill_vms_under(&self.state_dir);
    }
}

/// On a failed test, the last lines of every guest's serial console under `dir`: what a guest
/// printed (or did not) is most of what explains a guest that never became ready.
fn print_console_tails(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let log = entry.path().join("console.log");
        if log.exists() {
            let text = format!("--- last lines of the console ({}):\n{}\n---\n", log.display(), tail(&log, 80));
            let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
        }
    }
}

/// The QEMU processes on the machine whose command line contains `needle`: pid and arguments.
pub fn qemu_processes(needle: &[u8]) -> Vec<(i32, Vec<Vec<u8>>)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok())?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<Vec<u8>> = cmdline.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
            let is_qemu = args.first().is_some_and(|a| a.ends_with(b"qemu-system-x86_64"));
            (is_qemu && cmdline.windows(needle.len()).any(|w| w == needle)).then_some((pid, args))
        })
        .collect()
}

/// SIGKILLs every process whose command line names a path under `dir` (the test's QEMUs).
pub fn kill_vms_under(dir: &Path) {
    for (pid, _) in qemu_processes(dir.as_os_str().as_encoded_bytes()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Agent flags of a simulated host (its driver starts no VMs) with room for every small instance
/// a test's stream of creates asks for: 256 vCPUs, 64 GiB of memory, 1000 GiB of disk (all set,
/// so nothing depends on the machine's free disk).
pub const SIMULATED_LARGE_HOST: [&str; 8] = [
    "--driver",
    "simulated",
    "--capacity-vcpus",
    "256",
    "--capacity-memory-mib",
    "65536",
    "--capacity-disk-gib",
    "1000",
];

/// The agent flags shared by `join` and `run`: a small host (4 vCPUs, 4 GiB, 20 GiB).
fn agent_command(net: &HostNet, state_dir: &Path, flags: &[String], args: &[&str]) -> Command {
    let mut cmd = net.command(&crate::binary("host-agent"));
    cmd.arg("--state-dir")
        .arg(state_dir)
        .args(["--listen", &format!("{}:7444", net.address)])
        .args(["--advertise-url", &format!("https://{}:7444", net.address)])
        .args(["--report-interval-ms", "500"]);
    if !flags.iter().any(|f| f.starts_with("--capacity-")) {
        cmd.args(["--capacity-vcpus", "4", "--capacity-memory-mib", "4096", "--capacity-disk-gib", "20"]);
    }
    if !flags.iter().any(|f| f.starts_with("--store-")) {
        cmd.arg("--store-dir").arg(shared_store(state_dir));
    }
    cmd.args(flags).args(args);
    cmd
}

/// The test's snapshot store, shared by its control plane and agents (a local directory next to
/// their own: `<test dir>/store`), unless the test passes `--store-…` flags of its own.
pub fn shared_store(service_dir: &Path) -> PathBuf {
    service_dir.parent().unwrap_or(service_dir).join("store")
}

/// Runs `host-agent join` in the host's namespace; returns its exit status and output.
pub fn agent_join(net: &HostNet, state_dir: &Path, cp: &ControlPlane, token: &str) -> std::process::Output {
    agent_join_with(net, state_dir, &[], cp, token)
}

fn agent_join_with(
    net: &HostNet,
    state_dir: &Path,
    flags: &[String],
    cp: &ControlPlane,
    token: &str,
) -> std::process::Output {
    let mut cmd = agent_command(net, state_dir, flags, &["join", "--control-plane", &cp.api, "--token", token]);
    scrub_env(&mut cmd);
    cmd.output().expect("run host-agent join")
}

/// Joins host `n` (a new namespace) with a fresh token and starts its agent.
pub async fn spawn_agent(net: &mut TestNetwork, n: u8, cp: &ControlPlane, dir: &Path) -> Agent {
    spawn_agent_with(net, n, cp, dir, &[]).await
}

/// [`spawn_agent`] with extra agent flags, e.g. `--driver simulated`.
pub async fn spawn_agent_with(net: &mut TestNetwork, n: u8, cp: &ControlPlane, dir: &Path, flags: &[&str]) -> Agent {
    let host = net.add_host(n);
    let state_dir = dir.join(format!("agent-{n}"));
    let token = cp.create_join_token().await;
    let flags: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
    let out = agent_join_with(&host, &state_dir, &flags, cp, &token);
    assert!(out.status.success(), "join failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut agent = Agent {
        proc: None,
        flags,
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
        let cmd = agent_command(&self.net, &self.state_dir, &self.flags, &["run"]);
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

    /// The control plane's identity, issued from its CA in its database (as the server does).
    pub async fn control_plane_identity(cp: &super::ControlPlane) -> (Pem, String) {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&cp.db_url).await.expect("the database");
        let stored = control_plane::db::pki::fleet_ca(&mut conn).await.expect("read").expect("a fleet CA");
        let ca = control_plane::fleet::pki::FleetCa::from_stored(&stored, "the database").expect("fleet CA");
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
