//! The embedded PostgreSQL supervisor: first start, stop, restart on the same data directory,
//! and recovery from a server that a killed control plane left behind.

use std::path::Path;

use control_plane::embedded_db::{DATABASE, EmbeddedDbOptions, EmbeddedPostgres};
use sqlx::Connection;

fn options(dir: &Path) -> EmbeddedDbOptions {
    EmbeddedDbOptions { data_dir: dir.to_path_buf(), bin_dir: None, port: 0, unsafe_no_fsync: true }
}

async fn query_marker(pg: &EmbeddedPostgres) -> Option<String> {
    let mut conn = sqlx::PgConnection::connect_with(&pg.connect_options(DATABASE)).await.unwrap();
    sqlx::query_scalar("SELECT note FROM marker").fetch_optional(&mut conn).await.unwrap_or(None)
}

fn process_exists(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    stat.is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

#[tokio::test]
async fn a_cluster_starts_stops_and_restarts_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let pg = EmbeddedPostgres::start(options(dir.path())).await.unwrap();
    let pid = pg.pid().unwrap();
    assert!(dir.path().join("postgres/pgdata/PG_VERSION").is_file());
    assert!(pg.socket_dir().join(format!(".s.PGSQL.{}", pg.port())).exists());
    {
        let mut conn = sqlx::PgConnection::connect_with(&pg.connect_options(DATABASE)).await.unwrap();
        sqlx::raw_sql("CREATE TABLE marker (note text); INSERT INTO marker VALUES ('kept')")
            .execute(&mut conn)
            .await
            .unwrap();
        // Also by URL, as other processes of its owner use it; but never without the password,
        // and not over TCP at all.
        let by_url = sqlx::PgConnection::connect(&pg.url(DATABASE)).await.unwrap();
        by_url.close().await.unwrap();
        let no_password = pg.connect_options(DATABASE).password("");
        assert!(sqlx::PgConnection::connect_with(&no_password).await.is_err(), "trusted without a password");
        let listen: String = sqlx::query_scalar("SHOW listen_addresses").fetch_one(&mut conn).await.unwrap();
        assert_eq!(listen, "", "the server listens on TCP");
        conn.close().await.unwrap();
    }
    pg.stop().await.unwrap();
    assert!(!process_exists(pid), "postgres {pid} still running after stop");
    assert!(!dir.path().join("postgres/pgdata/postmaster.pid").exists());

    // A second start reuses the data directory: no initdb, the data is there.
    let pg = EmbeddedPostgres::start(options(dir.path())).await.unwrap();
    assert_eq!(query_marker(&pg).await.as_deref(), Some("kept"));
    pg.stop().await.unwrap();
}

#[tokio::test]
async fn a_server_left_running_by_a_killed_supervisor_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    // A control plane running only its database, killed with SIGKILL: its PostgreSQL lives on.
    let url_file = dir.path().join("url");
    let mut supervisor = std::process::Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["embedded-db", "--unsafe-no-fsync", "--url-file"])
        .arg(&url_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !url_file.exists() {
        assert!(std::time::Instant::now() < deadline, "the embedded database did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid_text = std::fs::read_to_string(dir.path().join("postgres/pgdata/postmaster.pid")).unwrap();
    let orphan: u32 = pid_text.lines().next().unwrap().trim().parse().unwrap();
    supervisor.kill().unwrap();
    supervisor.wait().unwrap();
    assert!(process_exists(orphan));

    let second = EmbeddedPostgres::start(options(dir.path())).await.unwrap();
    assert_ne!(second.pid(), Some(orphan));
    assert!(!process_exists(orphan), "the orphaned server {orphan} was not stopped");
    assert_eq!(query_marker(&second).await, None);
    second.stop().await.unwrap();
}

#[tokio::test]
async fn a_second_supervisor_on_a_data_dir_in_use_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = EmbeddedPostgres::start(options(dir.path())).await.unwrap();
    let err = EmbeddedPostgres::start(options(dir.path())).await.unwrap_err();
    assert!(matches!(err, control_plane::embedded_db::EmbeddedDbError::InUse { .. }), "{err}");
    // The first server was left alone.
    assert!(process_exists(first.pid().unwrap()));
    let mut conn = sqlx::PgConnection::connect_with(&first.connect_options(DATABASE)).await.unwrap();
    sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    first.stop().await.unwrap();
}

#[tokio::test]
async fn dropping_a_running_cluster_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let pg = EmbeddedPostgres::start(options(dir.path())).await.unwrap();
    let pid = pg.pid().unwrap();
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
    assert!(!process_exists(pid));
}

#[tokio::test]
async fn an_unprivileged_local_user_cannot_connect_even_with_the_url() {
    let dir = tempfile::tempdir().unwrap();
    // The data directory of a root control plane: the server runs as postgres, nobody else in.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pg = EmbeddedPostgres::start(options(dir.path())).await.unwrap();
    let password = std::fs::metadata(dir.path().join("postgres/password")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&password.permissions()) & 0o777, 0o600);
    // psql as `nobody`, given the full URL with the password: refused at the socket's directory.
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "psql", "-w", "-c", "SELECT 1"])
        .arg(pg.url(DATABASE))
        .output()
        .expect("run runuser and psql (util-linux, postgresql-client)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody connected: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("Permission denied"), "{stderr}");
    pg.stop().await.unwrap();
}

#[tokio::test]
async fn a_killed_server_is_started_again_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    // Durable commits, as in production: what was acknowledged survives the kill.
    let mut pg =
        EmbeddedPostgres::start(EmbeddedDbOptions { unsafe_no_fsync: false, ..options(dir.path()) }).await.unwrap();
    {
        let mut conn = sqlx::PgConnection::connect_with(&pg.connect_options(DATABASE)).await.unwrap();
        sqlx::raw_sql("CREATE TABLE marker (note text); INSERT INTO marker VALUES ('kept')")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let pid = pg.pid().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let mut status = None;
    for _ in 0..100 {
        status = pg.restart_if_exited().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(status.is_some(), "the killed server was not noticed");
    assert_ne!(pg.pid(), Some(pid));
    assert_eq!(query_marker(&pg).await.as_deref(), Some("kept"));
    assert_eq!(pg.restart_if_exited().unwrap(), None, "a running server is left alone");
    pg.stop().await.unwrap();
}

#[tokio::test]
async fn missing_binaries_are_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.bin_dir = Some(dir.path().join("no-such-bin"));
    let err = EmbeddedPostgres::start(opts).await.unwrap_err();
    assert!(matches!(err, control_plane::embedded_db::EmbeddedDbError::BinariesNotFound { .. }));
}
