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
        // Also reachable over loopback TCP, by URL, as other processes will use it.
        let tcp = sqlx::PgConnection::connect(&pg.url(DATABASE)).await.unwrap();
        tcp.close().await.unwrap();
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
async fn a_fixed_port_that_is_taken_is_reported_with_the_server_log() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut opts = options(dir.path());
    opts.port = taken.local_addr().unwrap().port();
    let err = EmbeddedPostgres::start(opts).await.unwrap_err();
    assert!(matches!(err, control_plane::embedded_db::EmbeddedDbError::ExitedEarly { .. }), "unexpected error: {err}");
}

#[tokio::test]
async fn missing_binaries_are_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.bin_dir = Some(dir.path().join("no-such-bin"));
    let err = EmbeddedPostgres::start(opts).await.unwrap_err();
    assert!(matches!(err, control_plane::embedded_db::EmbeddedDbError::BinariesNotFound { .. }));
}
