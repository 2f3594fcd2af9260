//! Helpers: running the binary, and a control plane in-process.

use std::process::Stdio;
use std::sync::Arc;

use control_plane::testing::TestDatabase;
use serde_json::Value;

/// What a run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the run's output unless it exited with `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "exit code\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }

    /// stdout as JSON (after a successful run).
    pub fn json(self) -> Value {
        let run = self.expect_code(0);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", run.stdout))
    }

    /// Asserts stderr is exactly one `cloudctl: error: …` line containing `needle`.
    pub fn expect_error_line(self, needle: &str) -> Self {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {:?}", self.stderr);
        assert!(lines[0].starts_with("cloudctl: error: "), "{}", lines[0]);
        assert!(lines[0].contains(needle), "{:?} in {:?}", needle, lines[0]);
        assert!(!self.stderr.contains("panicked") && !self.stderr.contains("backtrace"), "{}", self.stderr);
        self
    }
}

/// The CLI with a configuration directory of its own and, optionally, an endpoint and token
/// in its environment.
#[derive(Debug)]
pub struct Cli {
    pub home: tempfile::TempDir,
    pub endpoint: Option<String>,
    pub token: Option<String>,
}

impl Cli {
    /// A CLI with an empty configuration and no endpoint or token.
    pub fn unconfigured() -> Self {
        Self { home: tempfile::tempdir().unwrap(), endpoint: None, token: None }
    }

    /// A CLI talking to `api` as its admin.
    pub fn for_api(api: &Api) -> Self {
        Self { endpoint: Some(api.endpoint.clone()), token: Some(api.admin_token.clone()), ..Self::unconfigured() }
    }

    /// The configuration directory (`$XDG_CONFIG_HOME/cloudctl`).
    pub fn config_dir(&self) -> std::path::PathBuf {
        self.home.path().join("config").join("cloudctl")
    }

    /// The command, environment set, not started.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloudctl"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(endpoint) = &self.endpoint {
            cmd.env("CLOUDCTL_ENDPOINT", endpoint);
        }
        if let Some(token) = &self.token {
            cmd.env("CLOUDCTL_TOKEN", token);
        }
        cmd
    }

    /// Runs `cloudctl ARGS` to the end.
    pub async fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().await.unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `cloudctl -o json ARGS`, expecting success, and returns stdout as JSON.
    pub async fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        self.run(&all).await.json()
    }
}

/// A control plane serving its API on 127.0.0.1, with a fresh database and its bootstrap admin.
#[derive(Debug)]
pub struct Api {
    pub endpoint: String,
    pub admin_token: String,
    pub dir: tempfile::TempDir,
    /// The control plane's database, for tests that set up what only agents would record.
    pub pool: sqlx::PgPool,
    /// The CA that issued the server's certificate, when it serves HTTPS.
    pub ca_file: Option<std::path::PathBuf>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _db: TestDatabase,
}

/// Starts a control plane in-process (no agents: instances never get a host).
pub async fn spawn_control_plane() -> Api {
    spawn(false).await
}

/// [`spawn_control_plane`] serving HTTPS with a certificate of a private CA (`Api::ca_file`).
pub async fn spawn_control_plane_tls() -> Api {
    spawn(true).await
}

async fn spawn(https: bool) -> Api {
    // The server's warnings and errors show in the output of a failed test.
    let _ = tracing_subscriber::fmt().with_env_filter("warn").with_test_writer().try_init();
    let db = TestDatabase::create().await.unwrap();
    let pool = db.migrated_pool().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    control_plane::auth::bootstrap(&pool, dir.path()).await.unwrap();
    let admin_token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap().trim().to_owned();
    let app = Arc::new(control_plane::testing::app(pool.clone(), dir.path()));
    let router = control_plane::http::router(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    let (endpoint, ca_file) = if https {
        let tls = control_plane::testing::test_tls(dir.path(), &["127.0.0.1"]).unwrap();
        let acceptor = control_plane::http::tls::acceptor(&tls.cert_file, &tls.key_file).unwrap();
        let listener = control_plane::http::tls::TlsListener::new(listener, acceptor).unwrap();
        tokio::spawn(async move { axum::serve(listener, router).with_graceful_shutdown(stopped).await.unwrap() });
        (format!("https://{addr}"), Some(tls.ca_file))
    } else {
        tokio::spawn(async move { axum::serve(listener, router).with_graceful_shutdown(stopped).await.unwrap() });
        (format!("http://{addr}"), None)
    };
    Api { endpoint, admin_token, dir, pool, ca_file, _stop: stop, _db: db }
}
