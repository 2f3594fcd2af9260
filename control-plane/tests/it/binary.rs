//! The `control-plane` binary as an operator runs it: embedded database, health, clean
//! shutdown on SIGINT/SIGTERM, and clear errors for bad configuration.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_control-plane");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs the binary with a clean environment (no CLOUD_* from the caller) and the given args.
fn control_plane(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CLOUD_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args).stdin(Stdio::null());
    cmd
}

struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

async fn wait_healthy(base: &str, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut delay = Duration::from_millis(50);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("control plane exited early: {status}\n{}", logged(log));
        }
        if let Ok(resp) = reqwest::get(format!("{base}/healthz")).await
            && resp.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "control plane not healthy within 90 s\n{}", logged(log));
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

fn embedded_postgres_pid(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postgres/pgdata/postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

fn process_exists(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    stat.is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "control plane did not exit within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the control plane wrote to its log file, for a failure's message.
fn logged(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_else(|err| format!("(no log at {}: {err})", log.display()))
}

async fn run_until_signal(data_dir: &Path, signal: Signal) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Its own fleet port too: another control plane on this machine may hold the default one.
    let grpc = format!("127.0.0.1:{}", free_port());
    let data = data_dir.to_str().unwrap();
    let log = data_dir.join(format!("control-plane-{signal}.log"));
    let child = control_plane(&["--data-dir", data, "--listen", &listen, "--fleet-grpc-listen", &grpc])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut running = Running { child };
    wait_healthy(&format!("http://{listen}"), &mut running.child, &log).await;
    let pg = embedded_postgres_pid(data_dir).expect("embedded PostgreSQL running");
    assert!(process_exists(pg));

    kill(Pid::from_raw(running.child.id() as i32), signal).unwrap();
    let status = wait_exit(&mut running.child, Duration::from_secs(30));
    assert!(status.success(), "exit status {status}\n{}", logged(&log));
    assert!(!process_exists(pg), "embedded PostgreSQL {pg} outlived the control plane\n{}", logged(&log));
}

#[tokio::test]
async fn runs_with_its_embedded_database_and_stops_cleanly_on_sigint_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    run_until_signal(dir.path(), Signal::SIGINT).await;
    // The second run reuses the cluster made by the first.
    run_until_signal(dir.path(), Signal::SIGTERM).await;
}

#[test]
fn an_invalid_config_file_names_the_key_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[database]\nmax_connections = \"many\"\n").unwrap();
    let out = control_plane(&["--config", file.to_str().unwrap(), "check-config"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_connections"), "{stderr}");
    assert!(stderr.contains("invalid type"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    std::fs::write(&file, "[database]\nmax_connections = 0\n").unwrap();
    let out = control_plane(&["--config", file.to_str().unwrap(), "check-config"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value for `database.max_connections`: must be at least 1"), "{stderr}");
}

#[test]
fn check_config_never_prints_a_password_or_a_secret_key() {
    let out = control_plane(&["check-config"])
        .env("CLOUD_DATABASE_URL", "postgres://cloud:db-hunter2@127.0.0.1:5432/cloud")
        .env("CLOUD_STORE_BACKEND", "s3")
        .env("CLOUD_STORE_S3_BUCKET", "snapshots")
        .env("CLOUD_STORE_S3_REGION", "us-east-1")
        .env("CLOUD_STORE_S3_ACCESS_KEY_ID", "AKIAEXAMPLE")
        .env("CLOUD_STORE_S3_SECRET_ACCESS_KEY", "s3-hunter2")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for secret in ["db-hunter2", "s3-hunter2"] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} printed:\n{stdout}\n{stderr}");
    }
    let effective: toml::Value = toml::from_str(&stdout).unwrap();
    assert_eq!(effective["database"]["url"].as_str(), Some("postgres://cloud:<redacted>@127.0.0.1:5432/cloud"));
    assert_eq!(effective["store"]["s3"]["secret_access_key"].as_str(), Some("<redacted>"));
    assert_eq!(effective["store"]["s3"]["access_key_id"].as_str(), Some("AKIAEXAMPLE"));
}

#[test]
fn an_invalid_environment_value_is_refused() {
    let out = control_plane(&["check-config"]).env("CLOUD_LISTEN", "not-an-address").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--listen"), "{stderr}");
    assert!(stderr.contains("not-an-address"), "{stderr}");
}

#[test]
fn flags_override_environment_which_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cp.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:1001\"\n[database]\nmax_connections = 3\nconnect_timeout_secs = 7\n")
        .unwrap();
    let out = control_plane(&["--config", file.to_str().unwrap(), "--listen", "127.0.0.1:1003", "check-config"])
        .env("CLOUD_LISTEN", "127.0.0.1:1002")
        .env("CLOUD_DATABASE_MAX_CONNECTIONS", "5")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let effective: toml::Value = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(effective["listen"].as_str(), Some("127.0.0.1:1003"));
    assert_eq!(effective["database"]["max_connections"].as_integer(), Some(5));
    assert_eq!(effective["database"]["connect_timeout_secs"].as_integer(), Some(7));
}

#[test]
fn an_unreachable_database_is_retried_then_reported_without_a_panic() {
    let port = free_port();
    let url = format!("postgres://cloud@127.0.0.1:{port}/cloud");
    let started = Instant::now();
    let out =
        control_plane(&["--database-url", &url, "--database-connect-timeout-secs", "2", "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() >= Duration::from_millis(1500), "gave up after {:?}", started.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("database not reachable yet"), "{stderr}");
    assert!(stderr.contains("could not be reached within"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
