//! A highly-available PostgreSQL for tests: etcd and two Patroni nodes (Debian's packages) on
//! loopback, one primary and one synchronous replica, in a temporary directory owned by
//! `postgres`. Every process is started here and stopped by PID on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::process::{Proc, free_port, wait_until};

const LOOPBACK: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;
/// The superuser's password; the cluster listens on loopback only.
const PASSWORD: &str = "patroni-test";

/// One Patroni node and the PostgreSQL it runs.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub pg_port: u16,
    pub api_port: u16,
    pub data_dir: PathBuf,
    patroni: Option<Proc>,
    /// Stopped by [`Node::hang`]: to be killed, as it would not answer a SIGTERM.
    hung: bool,
}

impl Node {
    /// The postmaster's PID (from `postmaster.pid`; it is not a child of Patroni).
    pub fn postmaster(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Patroni, the postmaster and every process of the postmaster.
    fn processes(&self) -> Vec<Pid> {
        let patroni = self.patroni.iter().map(Proc::pid);
        let postgres = self.postmaster().map(|pm| [vec![pm], children_of(pm)].concat()).unwrap_or_default();
        patroni.chain(postgres.into_iter().map(Pid::from_raw)).collect()
    }

    /// SIGKILL to Patroni and PostgreSQL, as a machine that loses power: its connections are
    /// reset (on loopback the kernel answers for the dead processes).
    pub fn crash(&mut self) {
        for pid in self.processes() {
            let _ = kill(pid, Signal::SIGKILL);
        }
        if let Some(mut patroni) = self.patroni.take() {
            patroni.kill_hard();
        }
    }

    /// SIGSTOP to Patroni and PostgreSQL, as a machine that hangs or drops off the network:
    /// its connections stay open and nothing on them is answered. Killed on drop.
    pub fn hang(&mut self) {
        for pid in self.processes() {
            let _ = kill(pid, Signal::SIGSTOP);
        }
        self.hung = true;
    }
}

/// etcd and two Patroni nodes.
#[derive(Debug)]
pub struct PatroniCluster {
    pub nodes: Vec<Node>,
    etcd: Option<Proc>,
    http: reqwest::Client,
    pub dir: PathBuf,
}

/// The processes of `ppid`.
fn children_of(ppid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid …: the comm may hold spaces, so read after its `)`.
            let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
            after.split_whitespace().nth(1).and_then(|p| p.parse::<i32>().ok()) == Some(ppid)
        })
        .collect()
}

/// `bin`, or a panic saying which Debian packages to install.
fn require(bin: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(bin);
    assert!(
        path.is_file(),
        "{} is missing: the HA database test needs Patroni and etcd. Install them with deploy/test.sh, or by hand: \
         `apt-get install --no-install-recommends patroni etcd-server python3-etcd`",
        path.display()
    );
    path
}

/// `cmd` run as the `postgres` user with a clean environment (Patroni and PostgreSQL refuse
/// root).
fn as_postgres(program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "env", "-i"])
        .args(["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/var/lib/postgresql", "USER=postgres"])
        .arg(program)
        .args(args);
    cmd
}

impl PatroniCluster {
    /// Starts etcd and both nodes and waits until one is the primary and the other its
    /// synchronous standby.
    pub async fn start(dir: &Path) -> Self {
        let (patroni, etcd) = (require("patroni"), require("etcd"));
        let dir = dir.join("patroni");
        std::fs::create_dir_all(&dir).expect("patroni dir");
        let user = nix::unistd::User::from_name("postgres").ok().flatten().expect("the postgres user");
        let (etcd_port, peer_port) = (free_port(LOOPBACK), free_port(LOOPBACK));
        let etcd_data = dir.join("etcd");
        let etcd_args = [
            "--name".to_owned(),
            "etcd1".to_owned(),
            "--data-dir".to_owned(),
            etcd_data.display().to_string(),
            "--listen-client-urls".to_owned(),
            format!("http://127.0.0.1:{etcd_port}"),
            "--advertise-client-urls".to_owned(),
            format!("http://127.0.0.1:{etcd_port}"),
            "--listen-peer-urls".to_owned(),
            format!("http://127.0.0.1:{peer_port}"),
            "--initial-advertise-peer-urls".to_owned(),
            format!("http://127.0.0.1:{peer_port}"),
            "--initial-cluster".to_owned(),
            format!("etcd1=http://127.0.0.1:{peer_port}"),
        ];
        let mut nodes = Vec::new();
        for name in ["pg1", "pg2"] {
            let (pg_port, api_port) = (free_port(LOOPBACK), free_port(LOOPBACK));
            let data_dir = dir.join(name);
            std::fs::write(dir.join(format!("{name}.yml")), config(&dir, name, pg_port, api_port, etcd_port))
                .expect("patroni config");
            nodes.push(Node { name: name.to_owned(), pg_port, api_port, data_dir, patroni: None, hung: false });
        }
        for entry in walk(&dir) {
            nix::unistd::chown(&entry, Some(user.uid), Some(user.gid)).expect("chown to postgres");
        }
        let etcd_args: Vec<&str> = etcd_args.iter().map(String::as_str).collect();
        let etcd = Proc::spawn("etcd", as_postgres(&etcd, &etcd_args), dir.join("etcd.log"));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("http client");
        let health = format!("http://127.0.0.1:{etcd_port}/health");
        wait_until(Duration::from_secs(30), "etcd", || {
            let (http, url) = (http.clone(), health.clone());
            async move { http.get(url).send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        let mut cluster = Self { nodes, etcd: Some(etcd), http, dir };
        for node in &mut cluster.nodes {
            let yml = cluster.dir.join(format!("{}.yml", node.name));
            let cmd = as_postgres(&patroni, &[yml.to_str().expect("utf-8 path")]);
            node.patroni = Some(Proc::spawn(&node.name, cmd, cluster.dir.join(format!("{}.log", node.name))));
        }
        cluster.wait_primary_and_sync_standby(Duration::from_secs(120)).await;
        cluster
    }

    /// A node's answer to `GET /{role}` of its REST API: 200 when it is that.
    async fn is(&self, node: &Node, role: &str) -> bool {
        let url = format!("http://127.0.0.1:{}/{role}", node.api_port);
        self.http.get(url).send().await.is_ok_and(|r| r.status() == 200)
    }

    /// The index of the primary, if a node says it is.
    pub async fn primary(&self) -> Option<usize> {
        for (i, node) in self.nodes.iter().enumerate() {
            if node.patroni.is_some() && !node.hung && self.is(node, "primary").await {
                return Some(i);
            }
        }
        None
    }

    /// Waits until a node is the primary and the other its synchronous standby, so a commit
    /// acknowledged from then on is on both.
    pub async fn wait_primary_and_sync_standby(&self, within: Duration) {
        wait_until(within, "a Patroni primary with a synchronous standby", || async {
            let Some(primary) = self.primary().await else { return false };
            let standby = &self.nodes[1 - primary];
            standby.patroni.is_some() && self.is(standby, "sync").await
        })
        .await;
    }

    /// A libpq-style URL of database `db` listing both nodes.
    pub fn url(&self, db: &str) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.pg_port)).collect();
        format!("postgres://postgres:{PASSWORD}@{}/{db}", hosts.join(","))
    }

    /// Runs `sql` on the primary as the superuser.
    pub async fn execute(&self, sql: &str) {
        use sqlx::Connection;
        let primary = self.primary().await.expect("a primary");
        let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres", self.nodes[primary].pg_port);
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect to the primary");
        sqlx::raw_sql(sql).execute(&mut conn).await.expect("sql");
    }
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        // Patroni stops its PostgreSQL on SIGTERM (Proc's drop); one that outlived a crashed
        // Patroni is stopped by PID.
        for node in &mut self.nodes {
            if node.hung {
                node.crash();
            }
            node.patroni.take();
            if let Some(pm) = node.postmaster()
                && std::fs::read_to_string(format!("/proc/{pm}/cmdline")).is_ok_and(|c| c.contains("postgres"))
            {
                let _ = kill(Pid::from_raw(pm), Signal::SIGQUIT);
            }
        }
        self.etcd.take();
    }
}

/// Every path under `dir`, `dir` included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Patroni's configuration of node `name`: a 5 s leader lease (so a failover takes seconds),
/// synchronous replication (an acknowledged commit is on both nodes), PostgreSQL 15 from
/// Debian, sockets in the test's directory.
fn config(dir: &Path, name: &str, pg_port: u16, api_port: u16, etcd_port: u16) -> String {
    let dir = dir.display();
    format!(
        r#"scope: cloud-test
namespace: /service/
name: {name}
restapi:
  listen: 127.0.0.1:{api_port}
  connect_address: 127.0.0.1:{api_port}
etcd3:
  hosts: 127.0.0.1:{etcd_port}
bootstrap:
  dcs:
    ttl: 5
    loop_wait: 1
    retry_timeout: 2
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        max_connections: 100
        shared_buffers: 32MB
        fsync: "off"
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - auth-local: trust
    - auth-host: scram-sha-256
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {dir}/{name}
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: {dir}/pgpass-{name}
  authentication:
    superuser: {{username: postgres, password: {PASSWORD}}}
    replication: {{username: replicator, password: {PASSWORD}}}
    rewind: {{username: postgres, password: {PASSWORD}}}
  parameters:
    unix_socket_directories: {dir}
watchdog:
  mode: "off"
"#
    )
}
