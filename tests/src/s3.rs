//! A real S3 server for the store's tests: `s3s-fs` on loopback, with credentials (it checks
//! SigV4 signatures), its bucket a directory under the test's own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cloud_store::{Backend, S3Config, StoreConfig};

use crate::process::{Proc, free_port};

/// Where `deploy/test.sh` installs s3s-fs (outside the clone, reused across runs).
const DEFAULT_S3S_FS: &str = "/var/cache/cloud/tools/bin/s3s-fs";
const ACCESS_KEY: &str = "cloudtest";
const SECRET_KEY: &str = "cloudtest-secret-key";
/// The bucket every test uses.
pub const BUCKET: &str = "snapshots";

/// The s3s-fs binary: `CLOUD_TEST_S3S_FS`, or where `deploy/test.sh` installs it.
pub fn s3s_fs() -> PathBuf {
    let path = std::env::var_os("CLOUD_TEST_S3S_FS").map(PathBuf::from).unwrap_or_else(|| DEFAULT_S3S_FS.into());
    assert!(
        path.is_file(),
        "{} is missing: the S3 tests need a real S3 server. Install it with deploy/test.sh, or by hand with \
         `cargo install --root /var/cache/cloud/tools s3s-fs --version 0.14.1 --features binary --locked` \
         (or point CLOUD_TEST_S3S_FS at an s3s-fs binary)",
        path.display()
    );
    path
}

/// An s3s-fs process serving `root` (stopped on drop).
#[derive(Debug)]
pub struct S3Server {
    proc: Option<Proc>,
    addr: std::net::Ipv4Addr,
    port: u16,
    root: PathBuf,
    log: PathBuf,
}

impl S3Server {
    /// Starts a server on loopback whose objects live under `dir`.
    pub async fn start(dir: &Path) -> S3Server {
        Self::start_on(dir, std::net::Ipv4Addr::LOCALHOST).await
    }

    /// [`S3Server::start`] listening on `addr` (a test network's gateway, which agents in
    /// their namespaces reach).
    pub async fn start_on(dir: &Path, addr: std::net::Ipv4Addr) -> S3Server {
        let root = dir.join("s3");
        std::fs::create_dir_all(root.join(BUCKET)).expect("s3 root");
        let (port, log) = (free_port(addr), dir.join("s3s-fs.log"));
        let mut server = S3Server { proc: None, addr, port, root, log };
        server.restart().await;
        server
    }

    /// The bucket's directory: objects are files under it.
    pub fn bucket_dir(&self) -> PathBuf {
        self.root.join(BUCKET)
    }

    /// The `[store]` configuration that reaches it.
    pub fn config(&self) -> StoreConfig {
        StoreConfig {
            backend: Backend::S3,
            dir: PathBuf::new(),
            s3: S3Config {
                endpoint: Some(format!("http://{}:{}", self.addr, self.port)),
                bucket: BUCKET.to_owned(),
                region: "us-east-1".to_owned(),
                access_key_id: ACCESS_KEY.to_owned(),
                secret_access_key: SECRET_KEY.to_owned(),
                allow_http: true,
            },
        }
    }

    /// The flags that point a control plane or an agent at it.
    pub fn flags(&self) -> Vec<String> {
        let c = self.config();
        [
            ("--store-backend", "s3".to_owned()),
            ("--store-s3-endpoint", c.s3.endpoint.unwrap_or_default()),
            ("--store-s3-bucket", c.s3.bucket),
            ("--store-s3-region", c.s3.region),
            ("--store-s3-access-key-id", c.s3.access_key_id),
            ("--store-s3-secret-access-key", c.s3.secret_access_key),
            ("--store-s3-allow-http", "true".to_owned()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect()
    }

    /// Stops the server, as an outage would (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill_hard();
        }
    }

    /// Starts it again on the same port and root (after [`S3Server::stop`]).
    pub async fn restart(&mut self) {
        self.stop();
        let mut cmd = std::process::Command::new(s3s_fs());
        cmd.args(["--host", &self.addr.to_string(), "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root);
        let mut proc = Proc::spawn("s3s-fs", cmd, self.log.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect((self.addr, self.port)).await.is_err() {
            proc.assert_running();
            assert!(Instant::now() < deadline, "s3s-fs did not listen within 20 s:\n{}", proc.log_tail(20));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.proc = Some(proc);
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
