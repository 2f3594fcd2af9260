//! Test support: a fresh PostgreSQL database per test on a throwaway cluster per test run.
//!
//! The test command (`deploy/test.sh`) starts one cluster for the whole run and exports its URL
//! in `CLOUD_TEST_DATABASE_URL`; every test then creates its own database on it. Run without
//! that variable (plain `cargo nextest run`), each test process starts a private cluster in a
//! temporary directory instead, shared by the tests of that process and stopped after the last.

use std::sync::{Arc, Mutex, Weak};

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::embedded_db::{self, EmbeddedDbError, EmbeddedDbOptions, EmbeddedPostgres};

/// The environment variable naming the test run's shared cluster.
pub const TEST_DATABASE_URL_ENV: &str = "CLOUD_TEST_DATABASE_URL";

/// A private cluster owned by one test process.
#[derive(Debug)]
pub struct TestCluster {
    // Field order matters: the server stops before its directory is removed.
    pg: EmbeddedPostgres,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts a new cluster in a fresh temporary directory (fsync off: it is thrown away).
    pub fn start() -> Result<Self, EmbeddedDbError> {
        let dir = tempfile::Builder::new()
            .prefix("cloud-test-pg-")
            .tempdir()
            .map_err(|source| EmbeddedDbError::Prepare { path: std::env::temp_dir(), source })?;
        let opts =
            EmbeddedDbOptions { data_dir: dir.path().to_path_buf(), bin_dir: None, port: 0, unsafe_no_fsync: true };
        let pg = EmbeddedPostgres::start_blocking(&opts)?;
        Ok(Self { pg, _dir: dir })
    }

    /// The running server.
    pub fn postgres(&self) -> &EmbeddedPostgres {
        &self.pg
    }
}

static PROCESS_CLUSTER: Mutex<Weak<TestCluster>> = Mutex::new(Weak::new());

/// A database of its own for one test; the pool is connected and migrated when asked.
#[derive(Debug)]
pub struct TestDatabase {
    /// The database's name (`test_<uuid>`).
    pub name: String,
    /// A URL other processes (a control plane under test) can use.
    pub url: String,
    options: PgConnectOptions,
    _cluster: Option<Arc<TestCluster>>,
}

impl TestDatabase {
    /// Creates a new, empty database on the run's cluster.
    pub async fn create() -> Result<Self, EmbeddedDbError> {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let (admin, cluster) = match std::env::var(TEST_DATABASE_URL_ENV).ok().filter(|u| !u.is_empty()) {
            Some(url) => {
                let options: PgConnectOptions =
                    url.parse().map_err(|source| EmbeddedDbError::CreateDatabase { name: name.clone(), source })?;
                (options, None)
            }
            None => {
                let cluster = process_cluster().await?;
                (cluster.postgres().connect_options("postgres"), Some(cluster))
            }
        };
        embedded_db::ensure_database(admin.clone(), &name).await?;
        let options = admin.database(&name);
        // The run's URL names a socket directory and a password in its query and user info;
        // the options rebuild it for this database.
        let url = sqlx::ConnectOptions::to_url_lossy(&options).to_string();
        Ok(Self { name, url, options, _cluster: cluster })
    }

    /// Connection options for this database.
    pub fn options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// A small pool on this database, without migrations.
    pub async fn pool(&self) -> Result<PgPool, sqlx::Error> {
        PgPoolOptions::new().max_connections(4).connect_with(self.options()).await
    }

    /// A pool on this database with every migration applied.
    pub async fn migrated_pool(&self) -> Result<PgPool, crate::db::DbError> {
        let pool = self.pool().await?;
        crate::db::migrate(&pool).await?;
        Ok(pool)
    }
}

async fn process_cluster() -> Result<Arc<TestCluster>, EmbeddedDbError> {
    tokio::task::spawn_blocking(|| {
        let mut slot = PROCESS_CLUSTER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cluster) = slot.upgrade() {
            return Ok(cluster);
        }
        let cluster = Arc::new(TestCluster::start()?);
        *slot = Arc::downgrade(&cluster);
        Ok(cluster)
    })
    .await
    .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

/// The control plane's shared state over `pool`, with a fleet CA of its own and default
/// settings otherwise: for tests that serve the API in-process.
pub fn app(pool: PgPool, data_dir: &std::path::Path) -> crate::app::App {
    let store = cloud_store::StoreConfig { dir: data_dir.join("store"), ..cloud_store::StoreConfig::default() };
    app_with(
        pool,
        crate::config::Config { data_dir: data_dir.to_path_buf(), store, ..crate::config::Config::default() },
    )
}

/// [`app`] with a configuration of the test's own.
pub fn app_with(pool: PgPool, config: crate::config::Config) -> crate::app::App {
    let ca = crate::fleet::pki::FleetCa::generate()
        .and_then(|stored| crate::fleet::pki::FleetCa::from_stored(&stored, "a test"))
        .and_then(|ca| crate::fleet::Fleet::new(ca, config.fleet.clone()))
        .unwrap_or_else(|err| panic!("cannot create a test fleet CA: {err}"));
    crate::app::App::new(pool, ca, &config)
        .unwrap_or_else(|err| panic!("cannot set up the test's app (snapshot store {:?}): {err}", config.store))
}

/// Records a project with a unique name, for tests below the API.
pub async fn add_project(pool: &PgPool) -> Result<crate::ids::ProjectId, sqlx::Error> {
    let id = crate::ids::ProjectId::new();
    sqlx::query("INSERT INTO projects (id, name) VALUES ($1, $2)")
        .bind(id)
        .bind(format!("p{}", id.0.simple()))
        .execute(pool)
        .await?;
    Ok(id)
}

/// Records a public, available firmware image with a unique name (no files: nothing boots it).
pub async fn add_image(pool: &PgPool) -> Result<crate::ids::ImageId, sqlx::Error> {
    let id = crate::ids::ImageId::new();
    sqlx::query(
        "INSERT INTO images (id, name, state, boot_mode, firmware) VALUES ($1, $2, 'available', 'firmware', 'uefi')",
    )
    .bind(id)
    .bind(format!("i{}", id.0.simple()))
    .execute(pool)
    .await?;
    Ok(id)
}

/// Records an instance `name` of `project` (1 vCPU, 1 GiB of memory and of disk) in `state`,
/// on `host` if given.
pub async fn add_instance(
    pool: &PgPool,
    project: crate::ids::ProjectId,
    name: &str,
    host: Option<crate::ids::HostId>,
    state: &str,
) -> Result<crate::ids::InstanceId, sqlx::Error> {
    let id = crate::ids::InstanceId::new();
    let image = add_image(pool).await?;
    sqlx::query(
        "INSERT INTO instances (id, project_id, name, image_id, vcpus, memory_bytes, disk_bytes, host_id, state)
         VALUES ($1, $2, $3, $4, 1, 1 << 30, 1 << 30, $5, $6)",
    )
    .bind(id)
    .bind(project)
    .bind(name)
    .bind(image)
    .bind(host)
    .bind(state)
    .execute(pool)
    .await?;
    Ok(id)
}

/// Records an active host with a lease of an hour and `vcpus`, `memory_gib` and `disk_gib` free,
/// for tests that exercise the API without agents. Each gets its own /24 in 10.200.0.0/16.
pub async fn add_host(
    pool: &PgPool,
    hostname: &str,
    vcpus: i32,
    memory_gib: i64,
    disk_gib: i64,
) -> Result<crate::ids::HostId, sqlx::Error> {
    let id = crate::ids::HostId::new();
    sqlx::query(
        "INSERT INTO hosts (id, hostname, agent_endpoint, state, total_vcpus, total_memory_bytes, total_disk_bytes,
                            instance_subnet, lease_expires_at)
         SELECT $1, $2, 'https://192.0.2.1:7444', 'active', $3, $4, $5,
                ('10.200.' || count(*) || '.0/24')::cidr, now() + interval '1 hour'
         FROM hosts",
    )
    .bind(id)
    .bind(hostname)
    .bind(vcpus)
    .bind(memory_gib << 30)
    .bind(disk_gib << 30)
    .execute(pool)
    .await?;
    Ok(id)
}

/// PEM files of a throwaway CA and of a server certificate it issued, for tests of HTTPS.
#[derive(Debug, Clone)]
pub struct TestTls {
    /// The CA certificate clients trust (`--ca-cert`).
    pub ca_file: std::path::PathBuf,
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

/// Writes a new CA and a server certificate for `names` (DNS names or IP addresses) into `dir`.
pub fn test_tls(dir: &std::path::Path, names: &[&str]) -> anyhow::Result<TestTls> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let leaf = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    let cert_pem = leaf.signed_by(&key, &issuer)?.pem();
    let tls = TestTls { ca_file: dir.join("ca.pem"), cert_file: dir.join("api.pem"), key_file: dir.join("api.key") };
    std::fs::write(&tls.ca_file, &ca_pem)?;
    std::fs::write(&tls.cert_file, &cert_pem)?;
    std::fs::write(&tls.key_file, key.serialize_pem())?;
    Ok(tls)
}

/// The `p` quantile (nearest rank) of `latencies`, in milliseconds: how the benchmarks report.
pub fn percentile_ms(latencies: &[std::time::Duration], p: f64) -> f64 {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(rank).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
