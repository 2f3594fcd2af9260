//! The embedded PostgreSQL supervisor: a private cluster in the control plane's data directory.
//!
//! With no database URL configured, the control plane runs its own PostgreSQL from the machine's
//! PostgreSQL binaries (Debian package `postgresql`), so a single machine needs no database
//! set-up at all. Production deployments point `database.url` at a real (HA) PostgreSQL instead.
//!
//! ```text
//! <data_dir>/postgres/        0700, the server's user
//!   pgdata/         the cluster (initdb'd once, reused on every later start)
//!   run/            Unix socket directory (.s.PGSQL.<port>), 0700: only its owner enters
//!   postgres.log    the server's own log
//!   password        the role's generated secret: 0600, the control plane's user
//! ```
//!
//! - The cluster is initialised into `pgdata.init` and renamed into place, so a crash during
//!   initdb never leaves a half-made cluster that later starts would trust.
//! - `initdb` refuses to run as root; when we are root the server runs as the `postgres` user
//!   (through `Command::uid/gid`, no sudo needed) and owns `<data_dir>/postgres`.
//! - The server listens on its Unix socket only (no TCP), in a directory only its owner can
//!   enter, and asks for the role's password (SCRAM) even there: no `trust`. A cluster made by
//!   an earlier version with trust authentication gets the password and the new rules at its
//!   next start.
//! - [`EmbeddedPostgres::restart_if_exited`] starts the server again when it exited (a crash, an
//!   OOM kill); the control plane's supervisor calls it with backoff.
//! - It runs in its own process group, so a Ctrl-C on the terminal reaches only the control
//!   plane, which then stops the server itself, after the last connection is closed.
//! - The supervisor holds an exclusive lock on `postgres/supervisor.lock` while it runs, so a
//!   second control plane on the same data directory is refused instead of stopping the first
//!   one's database. A server left running by a control plane that was killed (lock released by
//!   the kernel) is detected through `postmaster.pid` and shut down before the new one starts.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, geteuid};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The role the embedded cluster is initialised with (password authentication, socket only).
pub const SUPERUSER: &str = "cloud";
/// The database the control plane uses inside the embedded cluster.
pub const DATABASE: &str = "cloud";
/// The Unix user the server runs as when the control plane runs as root.
const SERVICE_USER: &str = "postgres";
/// Where Debian installs the server binaries, one directory per major version.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run the embedded cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedDbOptions {
    /// The control plane's data directory; the cluster lives in `<data_dir>/postgres`.
    pub data_dir: PathBuf,
    /// Directory holding `initdb`, `postgres` and `pg_ctl`; searched for when `None`.
    pub bin_dir: Option<PathBuf>,
    /// The port number in the Unix socket's name (`.s.PGSQL.<port>`); 0 means 5432. The
    /// server listens on no TCP port.
    pub port: u16,
    /// Turn off fsync: only for throwaway clusters in tests, where durability does not matter.
    pub unsafe_no_fsync: bool,
}

/// Errors of the embedded database supervisor.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedDbError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) were not found in {searched}; \
         install them with `apt-get install postgresql` (Debian package postgresql-15) \
         or set embedded_database.bin_dir"
    )]
    BinariesNotFound { searched: String },
    #[error(
        "the `{user}` user does not exist; it runs the embedded PostgreSQL when the control plane runs as root (install the Debian package postgresql)"
    )]
    ServiceUserMissing { user: &'static str },
    #[error("cannot prepare the database directory {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot run {program}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("initdb failed ({status}): {output}")]
    Initdb { status: std::process::ExitStatus, output: String },
    #[error("PostgreSQL exited during start-up ({status}); last lines of {log}:\n{tail}")]
    ExitedEarly { status: std::process::ExitStatus, log: PathBuf, tail: String },
    #[error("PostgreSQL did not accept connections within {timeout:?}; see {log}")]
    NotReady { timeout: Duration, log: PathBuf },
    #[error("cannot create the database {name}")]
    CreateDatabase {
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("invalid database name {name:?}: use lowercase letters, digits and underscores")]
    InvalidDatabaseName { name: String },
    #[error("another control plane is running on {dir} (its embedded PostgreSQL is in use); stop it first")]
    InUse { dir: PathBuf },
    #[error("PostgreSQL (pid {pid}) did not stop within {timeout:?}")]
    StopTimeout { pid: i32, timeout: Duration },
}

/// The machine's PostgreSQL server binaries.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    dir: PathBuf,
}

impl PgBinaries {
    /// Finds the binaries: `bin_dir` if given, else `initdb` on PATH (symlinks resolved, as
    /// Debian links only some tools into /usr/bin), else the newest `/usr/lib/postgresql/*/bin`.
    pub fn find(bin_dir: Option<&Path>) -> Result<Self, EmbeddedDbError> {
        let mut searched = Vec::new();
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(dir) = bin_dir {
            candidates.push(dir.to_path_buf());
        } else {
            if let Some(path) = std::env::var_os("PATH") {
                for dir in std::env::split_paths(&path) {
                    let initdb = dir.join("initdb");
                    if let Ok(real) = fs::canonicalize(&initdb)
                        && let Some(parent) = real.parent()
                    {
                        candidates.push(parent.to_path_buf());
                    }
                }
            }
            candidates.extend(debian_bin_dirs());
        }
        for dir in candidates {
            let found = Self { dir: dir.clone() };
            if found.initdb().is_file() && found.postgres().is_file() {
                return Ok(found);
            }
            searched.push(dir.display().to_string());
        }
        if searched.is_empty() {
            searched.push(format!("PATH and {DEBIAN_PG_ROOT}/*/bin"));
        }
        Err(EmbeddedDbError::BinariesNotFound { searched: searched.join(", ") })
    }

    /// The directory the binaries are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn initdb(&self) -> PathBuf {
        self.dir.join("initdb")
    }

    fn postgres(&self) -> PathBuf {
        self.dir.join("postgres")
    }
}

/// `/usr/lib/postgresql/<major>/bin`, newest major version first.
fn debian_bin_dirs() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(DEBIAN_PG_ROOT) else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// A running embedded cluster. Stop it with [`EmbeddedPostgres::stop`]; dropping it stops it
/// too (blocking), so a panicking test leaves no server behind.
pub struct EmbeddedPostgres {
    root: PathBuf,
    port: u16,
    password: String,
    /// How the server process is started (again).
    server: Command,
    postgres: PathBuf,
    child: Option<Child>,
    /// Held for the server's lifetime; released (also by the kernel on a crash) after it stops.
    _lock: Flock<fs::File>,
}

impl std::fmt::Debug for EmbeddedPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedPostgres").field("root", &self.root).field("pid", &self.pid()).finish_non_exhaustive()
    }
}

/// The port number of the socket's name when none is configured.
const DEFAULT_PORT: u16 = 5432;
/// The file holding the role's password, in `<data_dir>/postgres`.
const PASSWORD_FILE: &str = "password";

impl EmbeddedPostgres {
    /// Initialises the cluster on first use, starts it, waits until it accepts connections and
    /// makes sure the control plane's database exists. Blocking: call it from `spawn_blocking`
    /// or [`EmbeddedPostgres::start`].
    pub fn start_blocking(opts: &EmbeddedDbOptions) -> Result<Self, EmbeddedDbError> {
        let bins = PgBinaries::find(opts.bin_dir.as_deref())?;
        let owner = service_owner()?;
        let root = opts.data_dir.join("postgres");
        prepare_dirs(&opts.data_dir, &root, owner.as_ref())?;
        let lock = lock_supervisor(&root)?;
        let password = ensure_password(&root)?;
        let pgdata = root.join("pgdata");
        if !pgdata.join("PG_VERSION").is_file() {
            initdb(&bins, &root, owner.as_ref(), &password)?;
        }
        stop_stale_server(&pgdata);

        let port = match opts.port {
            0 => DEFAULT_PORT,
            port => port,
        };
        let log = root.join("postgres.log");
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| EmbeddedDbError::Prepare { path: log.clone(), source })?;
        if let Some(user) = &owner {
            chown(&log, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .map_err(|source| EmbeddedDbError::Prepare { path: log.clone(), source })?;
        }
        let stderr = log_file.try_clone().map_err(|source| EmbeddedDbError::Prepare { path: log.clone(), source })?;

        let mut cmd = Command::new(bins.postgres());
        cmd.arg("-D")
            .arg(&pgdata)
            .arg("-k")
            .arg(root.join("run"))
            .arg("-p")
            .arg(port.to_string())
            .args(["-c", "listen_addresses="])
            .args(["-c", "unix_socket_permissions=0700"])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(stderr)
            .process_group(0);
        if opts.unsafe_no_fsync {
            cmd.args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
        }
        if let Some(user) = &owner {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        tracing::info!(dir = %pgdata.display(), bin_dir = %bins.dir().display(), "starting embedded PostgreSQL");
        let child = cmd.spawn().map_err(|source| EmbeddedDbError::Spawn { program: bins.postgres(), source })?;
        let mut pg =
            Self { root, port, password, server: cmd, postgres: bins.postgres(), child: Some(child), _lock: lock };
        pg.wait_ready(&log)?;
        pg.block_on(pg.ensure_password_auth(owner.as_ref()))?;
        pg.block_on(pg.ensure_database(DATABASE))?;
        Ok(pg)
    }

    /// Starts the server again if it exited (crash, OOM kill): returns how it exited, after it
    /// accepts connections again. Blocking.
    pub fn restart_if_exited(&mut self) -> Result<Option<std::process::ExitStatus>, EmbeddedDbError> {
        let status = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => status,
            _ => return Ok(None),
        };
        self.child = None;
        tracing::error!(%status, "the embedded PostgreSQL exited; starting it again");
        stop_stale_server(&self.root.join("pgdata"));
        let child =
            self.server.spawn().map_err(|source| EmbeddedDbError::Spawn { program: self.postgres.clone(), source })?;
        self.child = Some(child);
        self.wait_ready(&self.root.join("postgres.log"))?;
        tracing::warn!(pid = ?self.pid(), "the embedded PostgreSQL runs again");
        Ok(Some(status))
    }

    /// Before a cluster's first start with passwords: a cluster made with trust authentication
    /// (an earlier version) gets the role's password and SCRAM rules, then reloads them.
    async fn ensure_password_auth(&self, owner: Option<&User>) -> Result<(), EmbeddedDbError> {
        let hba = self.root.join("pgdata").join("pg_hba.conf");
        let text = fs::read_to_string(&hba).map_err(|source| EmbeddedDbError::Prepare { path: hba.clone(), source })?;
        if !text.lines().any(|l| !l.trim_start().starts_with('#') && l.contains("trust")) {
            return Ok(());
        }
        tracing::warn!("the embedded PostgreSQL trusted every local connection: setting a password and SCRAM rules");
        let err = |source| EmbeddedDbError::CreateDatabase { name: "postgres".to_owned(), source };
        let trusted = self.connect_options("postgres").password("");
        let mut conn = trusted.connect().await.map_err(err)?;
        // The password is hex (generated): safe to splice into the statement.
        sqlx::raw_sql(&format!("ALTER ROLE {SUPERUSER} PASSWORD '{}'", self.password))
            .execute(&mut conn)
            .await
            .map_err(err)?;
        write_hba(&hba, owner)?;
        sqlx::raw_sql("SELECT pg_reload_conf()").execute(&mut conn).await.map_err(err)?;
        conn.close().await.map_err(err)?;
        Ok(())
    }

    fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, EmbeddedDbError>>,
    ) -> Result<T, EmbeddedDbError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| EmbeddedDbError::Prepare { path: self.root.clone(), source })?;
        rt.block_on(f)
    }

    /// [`EmbeddedPostgres::start_blocking`] on tokio's blocking pool.
    pub async fn start(opts: EmbeddedDbOptions) -> Result<Self, EmbeddedDbError> {
        tokio::task::spawn_blocking(move || Self::start_blocking(&opts))
            .await
            .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
    }

    /// The port number in the socket's name.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Connection options for `database` over the Unix socket.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(self.socket_dir())
            .port(self.port)
            .username(SUPERUSER)
            .password(&self.password)
            .database(database)
    }

    /// A URL for `database` over the Unix socket, with the password (for its owner: psql, tools
    /// and other processes of the same user; the socket's directory keeps everyone else out).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@localhost/{database}?host={}&port={}",
            self.password,
            self.socket_dir().display(),
            self.port
        )
    }

    /// Creates `name` unless it exists. Names are restricted so they need no quoting.
    pub async fn ensure_database(&self, name: &str) -> Result<(), EmbeddedDbError> {
        ensure_database(self.connect_options("postgres"), name).await
    }

    fn wait_ready(&mut self, log: &Path) -> Result<(), EmbeddedDbError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let socket = self.socket_dir().join(format!(".s.PGSQL.{}", self.port));
        let mut delay = Duration::from_millis(20);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(EmbeddedDbError::ExitedEarly { status, log: log.to_path_buf(), tail: tail_of(log, 20) });
            }
            // The socket appears once the postmaster listens; it accepts connections only
            // after recovery finished, which `postmaster.pid` reports as "ready" (the file of
            // this server, not one a killed predecessor left behind).
            let ours = postmaster_pid(&self.root.join("pgdata")) == self.pid();
            if ours && socket.exists() && postmaster_status(&self.root.join("pgdata")).as_deref() == Some("ready") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(EmbeddedDbError::NotReady { timeout: READY_TIMEOUT, log: log.to_path_buf() });
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }

    /// [`EmbeddedPostgres::stop`] for a server held in place (blocking).
    pub fn stop_in_place(&mut self) -> Result<(), EmbeddedDbError> {
        stop_child(self.child.take())
    }

    /// Stops the server with a fast shutdown (clients disconnected, data flushed) and waits.
    pub async fn stop(mut self) -> Result<(), EmbeddedDbError> {
        let child = self.child.take();
        tokio::task::spawn_blocking(move || stop_child(child))
            .await
            .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(err) = stop_child(self.child.take()) {
            tracing::error!(error = %err, "embedded PostgreSQL did not stop");
        }
    }
}

fn stop_child(child: Option<Child>) -> Result<(), EmbeddedDbError> {
    let Some(mut child) = child else { return Ok(()) };
    let pid = Pid::from_raw(child.id() as i32);
    if matches!(child.try_wait(), Ok(Some(_))) {
        return Ok(());
    }
    tracing::info!(pid = pid.as_raw(), "stopping embedded PostgreSQL");
    // SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
    let _ = kill(pid, Signal::SIGINT);
    if wait_exit(&mut child, STOP_TIMEOUT) {
        return Ok(());
    }
    // SIGQUIT is "immediate" shutdown: crash recovery runs at the next start, nothing is lost.
    let _ = kill(pid, Signal::SIGQUIT);
    if wait_exit(&mut child, Duration::from_secs(5)) {
        return Ok(());
    }
    Err(EmbeddedDbError::StopTimeout { pid: pid.as_raw(), timeout: STOP_TIMEOUT })
}

fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Creates database `name` through a connection made with `admin` unless it exists.
pub async fn ensure_database(admin: PgConnectOptions, name: &str) -> Result<(), EmbeddedDbError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid {
        return Err(EmbeddedDbError::InvalidDatabaseName { name: name.to_owned() });
    }
    let err = |source| EmbeddedDbError::CreateDatabase { name: name.to_owned(), source };
    let mut conn = admin.connect().await.map_err(err)?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .map_err(err)?;
    if !exists {
        // The name was validated above, so it is safe to splice into the statement.
        sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.map_err(err)?;
    }
    conn.close().await.map_err(err)?;
    Ok(())
}

/// Takes the supervisor lock of `root`, or reports that another supervisor holds it.
fn lock_supervisor(root: &Path) -> Result<Flock<fs::File>, EmbeddedDbError> {
    let path = root.join("supervisor.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| EmbeddedDbError::Prepare { path: path.clone(), source })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| EmbeddedDbError::InUse { dir: root.to_path_buf() })
}

/// `Some(user)` when we run as root and must hand the cluster to the service user.
fn service_owner() -> Result<Option<User>, EmbeddedDbError> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name(SERVICE_USER) {
        Ok(Some(user)) => Ok(Some(user)),
        _ => Err(EmbeddedDbError::ServiceUserMissing { user: SERVICE_USER }),
    }
}

fn prepare_dirs(data_dir: &Path, root: &Path, owner: Option<&User>) -> Result<(), EmbeddedDbError> {
    let prep = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EmbeddedDbError::Prepare { path, source }
    };
    fs::create_dir_all(data_dir).map_err(prep(data_dir))?;
    for dir in [root.to_path_buf(), root.join("run")] {
        fs::create_dir_all(&dir).map_err(prep(&dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(prep(&dir))?;
        if let Some(user) = owner {
            chown(&dir, Some(user.uid.as_raw()), Some(user.gid.as_raw())).map_err(prep(&dir))?;
        }
    }
    if owner.is_some() {
        // The service user must be able to traverse the data directory to reach its own
        // subdirectory; it gets search permission only, never read.
        let meta = fs::metadata(data_dir).map_err(prep(data_dir))?;
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            fs::set_permissions(data_dir, fs::Permissions::from_mode(mode | 0o001)).map_err(prep(data_dir))?;
        }
    }
    Ok(())
}

/// The role's password: read from `<root>/password`, or generated (32 random bytes, hex) and
/// written there 0600 by the control plane's own user.
fn ensure_password(root: &Path) -> Result<String, EmbeddedDbError> {
    let path = root.join(PASSWORD_FILE);
    let err = |source| EmbeddedDbError::Prepare { path: path.clone(), source };
    match fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| err(io::Error::other(e)))?;
    let password = hex::encode(secret);
    cloud_common::fs::write_atomic(&path, password.as_bytes(), 0o600).map_err(err)?;
    Ok(password)
}

/// The only rules: SCRAM password over the Unix socket; no TCP, no trust.
fn write_hba(hba: &Path, owner: Option<&User>) -> Result<(), EmbeddedDbError> {
    let err = |source| EmbeddedDbError::Prepare { path: hba.to_path_buf(), source };
    let text = "# Written by the control plane: its own role, by password, over the Unix socket only.\n\
                local all all scram-sha-256\n";
    let tmp = hba.with_extension("conf.tmp");
    fs::write(&tmp, text).map_err(err)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(err)?;
    if let Some(user) = owner {
        chown(&tmp, Some(user.uid.as_raw()), Some(user.gid.as_raw())).map_err(err)?;
    }
    fs::rename(&tmp, hba).map_err(err)
}

fn initdb(bins: &PgBinaries, root: &Path, owner: Option<&User>, password: &str) -> Result<(), EmbeddedDbError> {
    let target = root.join("pgdata");
    let staging = root.join("pgdata.init");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|source| EmbeddedDbError::Prepare { path: staging.clone(), source })?;
    }
    tracing::info!(dir = %target.display(), "initialising the embedded PostgreSQL cluster");
    // initdb reads the password from a file the server's user can read; it is removed after.
    let pwfile = root.join("pwfile.init");
    let prep = |source| EmbeddedDbError::Prepare { path: pwfile.clone(), source };
    fs::write(&pwfile, password).map_err(prep)?;
    fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600)).map_err(prep)?;
    if let Some(user) = owner {
        chown(&pwfile, Some(user.uid.as_raw()), Some(user.gid.as_raw())).map_err(prep)?;
    }
    let mut cmd = Command::new(bins.initdb());
    cmd.arg("-D")
        .arg(&staging)
        .args(["-U", SUPERUSER, "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .stdin(Stdio::null())
        .current_dir(root);
    if let Some(user) = owner {
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    let out = cmd.output().map_err(|source| EmbeddedDbError::Spawn { program: bins.initdb(), source });
    let _ = fs::remove_file(&pwfile);
    let out = out?;
    if out.status.success() {
        write_hba(&staging.join("pg_hba.conf"), owner)?;
    }
    if !out.status.success() {
        let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stdout));
        return Err(EmbeddedDbError::Initdb { status: out.status, output: output.trim().to_owned() });
    }
    fs::rename(&staging, &target).map_err(|source| EmbeddedDbError::Prepare { path: target, source })
}

/// The pid `postmaster.pid` names (its line 1).
fn postmaster_pid(pgdata: &Path) -> Option<u32> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Line 1 of `postmaster.pid` is the pid; line 8 the status ("starting", "ready", "stopping").
fn postmaster_status(pgdata: &Path) -> Option<String> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    text.lines().nth(7).map(|s| s.trim().to_owned())
}

/// Shuts down a server that a previous, killed control plane left running on this data dir.
fn stop_stale_server(pgdata: &Path) {
    let Ok(text) = fs::read_to_string(pgdata.join("postmaster.pid")) else { return };
    let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) else { return };
    let pid = Pid::from_raw(pid);
    if !is_postgres_process(pid, pgdata) {
        return; // A stale file after a crash: postgres itself recovers from it.
    }
    tracing::warn!(pid = pid.as_raw(), "stopping an embedded PostgreSQL left running by an earlier control plane");
    let _ = kill(pid, Signal::SIGINT);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while is_postgres_process(pid, pgdata) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when `pid` is alive and is a postgres serving `pgdata` (guards against pid reuse).
fn is_postgres_process(pid: Pid, pgdata: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{}/cmdline", pid.as_raw())) else { return false };
    let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", pid.as_raw())) else { return false };
    // A zombie (state Z) has exited already.
    if stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')) {
        return false;
    }
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let is_postgres = args.first().is_some_and(|a| a.ends_with(b"postgres"));
    let dir = pgdata.as_os_str().as_encoded_bytes();
    is_postgres && args.contains(&dir)
}

fn tail_of(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_name_the_package() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = PgBinaries::find(Some(dir.path())).expect_err("no binaries in an empty dir");
        assert!(matches!(err, EmbeddedDbError::BinariesNotFound { .. }));
        assert!(err.to_string().contains("apt-get install postgresql"));
    }

    #[test]
    fn postmaster_status_reads_line_eight() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("postmaster.pid"), "123\n/d\n1\n5432\n/run\n127.0.0.1\n  1 2\nready   \n")
            .expect("write");
        assert_eq!(postmaster_status(dir.path()).as_deref(), Some("ready"));
    }
}
