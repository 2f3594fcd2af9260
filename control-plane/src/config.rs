//! The control plane's configuration: a TOML file, overridden by `CLOUD_*` environment variables,
//! overridden by command-line flags.
//!
//! ```toml
//! listen = "127.0.0.1:8080"      # CLOUD_LISTEN, --listen
//! data_dir = "/var/lib/cloud"    # CLOUD_DATA_DIR, --data-dir
//! public_url = "http://…"        # CLOUD_PUBLIC_URL: how clients reach the API (default http(s)://<listen>)
//!
//! [tls]                          # absent: plain HTTP (loopback, or behind a TLS-terminating proxy)
//! cert_file = "/etc/cloud/api.pem"  # CLOUD_TLS_CERT_FILE: the API's certificate chain (PEM)
//! key_file = "/etc/cloud/api.key"   # CLOUD_TLS_KEY_FILE: its private key (PEM)
//!
//! [database]
//! url = "postgres://…"           # CLOUD_DATABASE_URL; absent: run the embedded PostgreSQL;
//!                                # several hosts (postgres://u:p@h1:5432,h2:5432/cloud): the
//!                                # primary among them, followed when another is promoted
//! max_connections = 16           # CLOUD_DATABASE_MAX_CONNECTIONS: the API's (the executor and the
//!                                # report writer have their own)
//! connect_timeout_secs = 60      # CLOUD_DATABASE_CONNECT_TIMEOUT_SECS
//!
//! [embedded_database]
//! bin_dir = "/usr/lib/postgresql/15/bin"  # CLOUD_EMBEDDED_DATABASE_BIN_DIR; default: searched
//! port = 0                                # CLOUD_EMBEDDED_DATABASE_PORT; 0: a free port
//!
//! [fleet]
//! grpc_listen = "127.0.0.1:7443"          # CLOUD_FLEET_GRPC_LISTEN: gRPC for host agents (mTLS)
//! grpc_url = "https://10.0.0.1:7443"      # CLOUD_FLEET_GRPC_URL; default https://<grpc_listen>
//! instance_subnet_pool = "10.100.0.0/16"  # CLOUD_FLEET_INSTANCE_SUBNET_POOL: a /24 per host
//! lease_secs = 10                         # CLOUD_FLEET_LEASE_SECS
//! join_token_ttl_secs = 3600              # CLOUD_FLEET_JOIN_TOKEN_TTL_SECS
//! partition_silent_percent = 34           # CLOUD_FLEET_PARTITION_SILENT_PERCENT: this share silent at once
//! partition_min_hosts = 2                 # CLOUD_FLEET_PARTITION_MIN_HOSTS:  (and this many) is a partition
//! keep_agent_connections = true           # CLOUD_FLEET_KEEP_AGENT_CONNECTIONS: dial agents ahead of calls
//!
//! [scheduler]
//! strategy = "spread"                     # CLOUD_SCHEDULER_STRATEGY: spread | binpack
//!
//! [operations]
//! lease_secs = 30                # CLOUD_OPERATIONS_LEASE_SECS: a dead replica's work resumes after this
//! concurrency = 32               # CLOUD_OPERATIONS_CONCURRENCY: operations one replica drives at once
//! max_connections = 2            # CLOUD_OPERATIONS_MAX_CONNECTIONS: the executor's own, apart from the API's
//! step_timeout_secs = 600        # CLOUD_OPERATIONS_STEP_TIMEOUT_SECS: how long a step may keep retrying
//! step_timeouts = { wait_running = 900 }   # per step name (no variable)
//!
//! [limits]
//! requests_per_second = 100      # CLOUD_LIMITS_REQUESTS_PER_SECOND: per API token or session; 0: none
//! burst = 1000                   # CLOUD_LIMITS_BURST: requests at once before the rate applies
//! websockets_per_instance = 8    # CLOUD_LIMITS_WEBSOCKETS_PER_INSTANCE: consoles and tunnels at once
//! websockets_per_caller = 16     # CLOUD_LIMITS_WEBSOCKETS_PER_CALLER: per token or session
//! websocket_idle_secs = 900      # CLOUD_LIMITS_WEBSOCKET_IDLE_SECS: closed after this long quiet; 0: never
//!
//! [quotas]                       # each project's, unless an operator set its own; 0: no limit
//! instances = 1000               # CLOUD_QUOTAS_INSTANCES
//! vcpus = 4096                   # CLOUD_QUOTAS_VCPUS
//! memory_gib = 16384             # CLOUD_QUOTAS_MEMORY_GIB
//! disk_gib = 262144              # CLOUD_QUOTAS_DISK_GIB
//! snapshots = 10000              # CLOUD_QUOTAS_SNAPSHOTS
//!
//! [store]                        # the shared snapshot store (see cloud_store::config)
//! backend = "local"              # CLOUD_STORE_BACKEND: local | s3
//! dir = "/var/lib/cloud/store"   # CLOUD_STORE_DIR: shared with the host agents of this machine
//! # [store.s3] endpoint, bucket, region, access_key_id, secret_access_key, allow_http
//!
//! [log]
//! format = "text"                # CLOUD_LOG_FORMAT: text | json
//! filter = "info"                # CLOUD_LOG_FILTER: tracing EnvFilter directives
//! otlp_endpoint = "http://…:4317" # CLOUD_LOG_OTLP_ENDPOINT: export traces (OTLP/gRPC); default: none
//! ```
//!
//! Unknown keys are errors, and every error names the key and what is wrong with it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use cloud_common::config::set;
pub use cloud_common::config::{ConfigError, LogConfig, LogFormat};

use crate::fleet::FleetConfig;
use cloud_common::net::Ipv4Net;

/// The effective configuration, after file, environment and flags were merged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP API (REST, health, metrics).
    pub listen: SocketAddr,
    /// Where the control plane keeps its state: the embedded database, the fleet CA, tokens.
    pub data_dir: PathBuf,
    /// The API's URL as clients see it (printed in join commands); default `http://<listen>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// The web console's built files (`web-console/dist`), served at `/`; unset: no console.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_dir: Option<PathBuf>,
    pub tls: TlsConfig,
    pub database: DatabaseConfig,
    pub embedded_database: EmbeddedDatabaseConfig,
    pub fleet: FleetConfig,
    pub scheduler: crate::scheduler::SchedulerConfig,
    pub operations: crate::operations::executor::OperationsConfig,
    pub limits: crate::limits::LimitsConfig,
    pub quotas: crate::quotas::QuotasConfig,
    pub store: cloud_store::StoreConfig,
    pub oidc: crate::auth::oidc::OidcConfig,
    pub log: LogConfig,
}

/// `[database]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// PostgreSQL URL, of one host or of several (`h1:5432,h2:5432`: the primary among them is
    /// used, and followed when it changes; see `db::primary`); `None` runs the embedded cluster
    /// in `data_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub max_connections: u32,
    /// How long to keep retrying (with backoff) when the database cannot be reached at start.
    pub connect_timeout_secs: u64,
}

/// `[embedded_database]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedDatabaseConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bin_dir: Option<PathBuf>,
    pub port: u16,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: default_data_dir(),
            public_url: None,
            console_dir: None,
            tls: TlsConfig::default(),
            database: DatabaseConfig::default(),
            embedded_database: EmbeddedDatabaseConfig::default(),
            fleet: FleetConfig::default(),
            scheduler: crate::scheduler::SchedulerConfig::default(),
            operations: crate::operations::executor::OperationsConfig::default(),
            limits: crate::limits::LimitsConfig::default(),
            quotas: crate::quotas::QuotasConfig::default(),
            store: cloud_store::StoreConfig::default(),
            oidc: crate::auth::oidc::OidcConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: None, max_connections: 16, connect_timeout_secs: 60 }
    }
}

/// `/var/lib/cloud` for root (a system service), `~/.local/share/cloud` for anyone else.
fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/cloud");
    }
    match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("cloud"),
        None => std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".local/share/cloud"))
            .unwrap_or_else(|| PathBuf::from("/var/lib/cloud")),
    }
}

/// Flags, each also read from its `CLOUD_*` environment variable; they override the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "CLOUD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP API [default: 127.0.0.1:8080].
    #[arg(long, env = "CLOUD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// State directory [default: /var/lib/cloud as root].
    #[arg(long, env = "CLOUD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The API's URL as clients see it [default: http:// and the --listen address].
    #[arg(long, env = "CLOUD_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// The web console's built files (web-console/dist), served at / [default: no console].
    #[arg(long, env = "CLOUD_CONSOLE_DIR", value_name = "DIR")]
    pub console_dir: Option<PathBuf>,
    /// The API's TLS certificate chain (PEM); with --tls-key-file the API serves HTTPS.
    #[arg(long, env = "CLOUD_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM).
    #[arg(long, env = "CLOUD_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PostgreSQL URL; without it the embedded PostgreSQL runs in the data directory.
    #[arg(long, env = "CLOUD_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Size of the database connection pool [default: 16].
    #[arg(long, env = "CLOUD_DATABASE_MAX_CONNECTIONS", value_name = "N")]
    pub database_max_connections: Option<u32>,
    /// Seconds to keep retrying an unreachable database at start [default: 60].
    #[arg(long, env = "CLOUD_DATABASE_CONNECT_TIMEOUT_SECS", value_name = "SECS")]
    pub database_connect_timeout_secs: Option<u64>,
    /// Directory with initdb and postgres for the embedded database [default: searched].
    #[arg(long, env = "CLOUD_EMBEDDED_DATABASE_BIN_DIR", value_name = "DIR")]
    pub embedded_database_bin_dir: Option<PathBuf>,
    /// TCP port of the embedded database on 127.0.0.1 [default: 0, a free port].
    #[arg(long, env = "CLOUD_EMBEDDED_DATABASE_PORT", value_name = "PORT")]
    pub embedded_database_port: Option<u16>,
    /// Address of the gRPC service for host agents [default: 127.0.0.1:7443].
    #[arg(long, env = "CLOUD_FLEET_GRPC_LISTEN", value_name = "ADDR")]
    pub fleet_grpc_listen: Option<SocketAddr>,
    /// The gRPC URL handed to agents [default: https:// and the --fleet-grpc-listen address].
    #[arg(long, env = "CLOUD_FLEET_GRPC_URL", value_name = "URL")]
    pub fleet_grpc_url: Option<String>,
    /// Pool of instance subnets; each host gets a /24 [default: 10.100.0.0/16].
    #[arg(long, env = "CLOUD_FLEET_INSTANCE_SUBNET_POOL", value_name = "CIDR")]
    pub fleet_instance_subnet_pool: Option<Ipv4Net>,
    /// Seconds a host's report keeps its lease [default: 10].
    #[arg(long, env = "CLOUD_FLEET_LEASE_SECS", value_name = "SECS")]
    pub fleet_lease_secs: Option<u32>,
    /// Default lifetime of join tokens in seconds [default: 3600].
    #[arg(long, env = "CLOUD_FLEET_JOIN_TOKEN_TTL_SECS", value_name = "SECS")]
    pub fleet_join_token_ttl_secs: Option<u64>,
    /// Percentage of hosts silent at once that is a partition, not deaths [default: 34].
    #[arg(long, env = "CLOUD_FLEET_PARTITION_SILENT_PERCENT", value_name = "PERCENT")]
    pub fleet_partition_silent_percent: Option<u32>,
    /// Fewest silent hosts that make a partition [default: 2].
    #[arg(long, env = "CLOUD_FLEET_PARTITION_MIN_HOSTS", value_name = "N")]
    pub fleet_partition_min_hosts: Option<u32>,
    /// Dial every live host's agent ahead of its first call and keep the connection [default: true].
    #[arg(long, env = "CLOUD_FLEET_KEEP_AGENT_CONNECTIONS", value_name = "BOOL")]
    pub fleet_keep_agent_connections: Option<bool>,
    /// Placement strategy: spread or binpack [default: spread].
    #[arg(long, env = "CLOUD_SCHEDULER_STRATEGY", value_name = "STRATEGY")]
    pub scheduler_strategy: Option<crate::scheduler::Strategy>,
    /// Seconds an operation's claim lasts without renewal [default: 30].
    #[arg(long, env = "CLOUD_OPERATIONS_LEASE_SECS", value_name = "SECS")]
    pub operations_lease_secs: Option<u32>,
    /// Operations one replica drives at once [default: 32].
    #[arg(long, env = "CLOUD_OPERATIONS_CONCURRENCY", value_name = "N")]
    pub operations_concurrency: Option<u32>,
    /// Database connections of the operation executor, apart from the API's [default: 4].
    #[arg(long, env = "CLOUD_OPERATIONS_MAX_CONNECTIONS", value_name = "N")]
    pub operations_max_connections: Option<u32>,
    /// Sustained requests per second per API token or console session; 0: no limit [default: 100].
    #[arg(long, env = "CLOUD_LIMITS_REQUESTS_PER_SECOND", value_name = "N")]
    pub limits_requests_per_second: Option<u32>,
    /// Requests a quiet token or session may make at once [default: 1000].
    #[arg(long, env = "CLOUD_LIMITS_BURST", value_name = "N")]
    pub limits_burst: Option<u32>,
    /// Console and tunnel WebSockets open at once to one instance [default: 8].
    #[arg(long, env = "CLOUD_LIMITS_WEBSOCKETS_PER_INSTANCE", value_name = "N")]
    pub limits_websockets_per_instance: Option<u32>,
    /// Console and tunnel WebSockets open at once per token or session [default: 16].
    #[arg(long, env = "CLOUD_LIMITS_WEBSOCKETS_PER_CALLER", value_name = "N")]
    pub limits_websockets_per_caller: Option<u32>,
    /// Seconds without a frame after which a console or tunnel is closed; 0: never [default: 900].
    #[arg(long, env = "CLOUD_LIMITS_WEBSOCKET_IDLE_SECS", value_name = "SECS")]
    pub limits_websocket_idle_secs: Option<u32>,
    /// Instances a project may hold, unless an operator set its own; 0: no limit [default: 1000].
    #[arg(long, env = "CLOUD_QUOTAS_INSTANCES", value_name = "N")]
    pub quotas_instances: Option<u32>,
    /// vCPUs a project's instances may have in all; 0: no limit [default: 4096].
    #[arg(long, env = "CLOUD_QUOTAS_VCPUS", value_name = "N")]
    pub quotas_vcpus: Option<u32>,
    /// GiB of memory a project's instances may have in all; 0: no limit [default: 16384].
    #[arg(long, env = "CLOUD_QUOTAS_MEMORY_GIB", value_name = "GIB")]
    pub quotas_memory_gib: Option<u64>,
    /// GiB of disk a project's instances may have in all; 0: no limit [default: 262144].
    #[arg(long, env = "CLOUD_QUOTAS_DISK_GIB", value_name = "GIB")]
    pub quotas_disk_gib: Option<u64>,
    /// Snapshots a project may hold; 0: no limit [default: 10000].
    #[arg(long, env = "CLOUD_QUOTAS_SNAPSHOTS", value_name = "N")]
    pub quotas_snapshots: Option<u32>,
    /// How long a step may keep retrying before its operation fails [default: 600].
    #[arg(long, env = "CLOUD_OPERATIONS_STEP_TIMEOUT_SECS", value_name = "SECS")]
    pub operations_step_timeout_secs: Option<u32>,
    #[command(flatten)]
    pub store: cloud_store::StoreOverrides,
    /// OpenID Connect provider of the console's sign-in (its issuer URL) [default: none, off].
    #[arg(long, env = "CLOUD_OIDC_ISSUER", value_name = "URL")]
    pub oidc_issuer: Option<String>,
    /// The console's client id at that provider [default: cloud-console].
    #[arg(long, env = "CLOUD_OIDC_CLIENT_ID", value_name = "ID")]
    pub oidc_client_id: Option<String>,
    /// A file holding the console's client secret.
    #[arg(long, env = "CLOUD_OIDC_CLIENT_SECRET_FILE", value_name = "FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// How long a console session lasts, hours [default: 12].
    #[arg(long, env = "CLOUD_OIDC_SESSION_HOURS", value_name = "HOURS")]
    pub oidc_session_hours: Option<u32>,
    /// cloudctl's client id at the provider (device code) [default: cloudctl].
    #[arg(long, env = "CLOUD_OIDC_CLI_CLIENT_ID", value_name = "ID")]
    pub oidc_cli_client_id: Option<String>,
    /// Log format [default: text].
    #[arg(long, env = "CLOUD_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info,control_plane=debug` [default: info].
    #[arg(long, env = "CLOUD_LOG_FILTER", value_name = "FILTER")]
    pub log_filter: Option<String>,
    /// Export traces to this OpenTelemetry collector (OTLP over gRPC) [default: none].
    #[arg(long, env = "CLOUD_LOG_OTLP_ENDPOINT", value_name = "URL")]
    pub log_otlp_endpoint: Option<String>,
}

impl Config {
    /// Parses a TOML document (unknown keys are errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        cloud_common::config::from_toml(text, path)
    }

    /// Reads the file named by the overrides (if any), applies the overrides, validates.
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut config: Self = cloud_common::config::read_file(overrides.config.as_deref())?;
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Applies flags and environment variables over the file's values.
    pub fn apply(&mut self, o: &Overrides) {
        set(&mut self.listen, &o.listen);
        set(&mut self.data_dir, &o.data_dir);
        if let Some(url) = o.public_url.as_ref().filter(|u| !u.is_empty()) {
            self.public_url = Some(url.clone());
        }
        if let Some(dir) = o.console_dir.as_ref().filter(|d| !d.as_os_str().is_empty()) {
            self.console_dir = Some(dir.clone());
        }
        if let Some(file) = o.tls_cert_file.as_ref().filter(|f| !f.as_os_str().is_empty()) {
            self.tls.cert_file = Some(file.clone());
        }
        if let Some(file) = o.tls_key_file.as_ref().filter(|f| !f.as_os_str().is_empty()) {
            self.tls.key_file = Some(file.clone());
        }
        if let Some(url) = o.database_url.as_ref().filter(|u| !u.is_empty()) {
            self.database.url = Some(url.clone());
        }
        set(&mut self.database.max_connections, &o.database_max_connections);
        set(&mut self.database.connect_timeout_secs, &o.database_connect_timeout_secs);
        if o.embedded_database_bin_dir.is_some() {
            self.embedded_database.bin_dir = o.embedded_database_bin_dir.clone();
        }
        set(&mut self.embedded_database.port, &o.embedded_database_port);
        set(&mut self.fleet.grpc_listen, &o.fleet_grpc_listen);
        if let Some(url) = o.fleet_grpc_url.as_ref().filter(|u| !u.is_empty()) {
            self.fleet.grpc_url = Some(url.clone());
        }
        set(&mut self.fleet.instance_subnet_pool, &o.fleet_instance_subnet_pool);
        set(&mut self.fleet.lease_secs, &o.fleet_lease_secs);
        set(&mut self.fleet.join_token_ttl_secs, &o.fleet_join_token_ttl_secs);
        set(&mut self.fleet.partition_silent_percent, &o.fleet_partition_silent_percent);
        set(&mut self.fleet.partition_min_hosts, &o.fleet_partition_min_hosts);
        set(&mut self.fleet.keep_agent_connections, &o.fleet_keep_agent_connections);
        set(&mut self.scheduler.strategy, &o.scheduler_strategy);
        set(&mut self.operations.lease_secs, &o.operations_lease_secs);
        set(&mut self.operations.concurrency, &o.operations_concurrency);
        set(&mut self.operations.max_connections, &o.operations_max_connections);
        set(&mut self.limits.requests_per_second, &o.limits_requests_per_second);
        set(&mut self.limits.burst, &o.limits_burst);
        set(&mut self.quotas.instances, &o.quotas_instances);
        set(&mut self.quotas.vcpus, &o.quotas_vcpus);
        set(&mut self.quotas.memory_gib, &o.quotas_memory_gib);
        set(&mut self.quotas.disk_gib, &o.quotas_disk_gib);
        set(&mut self.quotas.snapshots, &o.quotas_snapshots);
        set(&mut self.limits.websockets_per_instance, &o.limits_websockets_per_instance);
        set(&mut self.limits.websockets_per_caller, &o.limits_websockets_per_caller);
        set(&mut self.limits.websocket_idle_secs, &o.limits_websocket_idle_secs);
        set(&mut self.operations.step_timeout_secs, &o.operations_step_timeout_secs);
        o.store.apply(&mut self.store);
        if let Some(issuer) = o.oidc_issuer.as_ref().filter(|u| !u.is_empty()) {
            self.oidc.issuer = Some(issuer.clone());
        }
        set(&mut self.oidc.client_id, &o.oidc_client_id);
        if let Some(file) = o.oidc_client_secret_file.as_ref().filter(|f| !f.as_os_str().is_empty()) {
            self.oidc.client_secret_file = Some(file.clone());
        }
        set(&mut self.oidc.session_hours, &o.oidc_session_hours);
        set(&mut self.oidc.cli_client_id, &o.oidc_cli_client_id);
        set(&mut self.log.format, &o.log_format);
        set(&mut self.log.filter, &o.log_filter);
        if o.log_otlp_endpoint.is_some() {
            self.log.otlp_endpoint.clone_from(&o.log_otlp_endpoint);
        }
    }

    /// The API's URL as clients see it.
    pub fn public_url(&self) -> String {
        let scheme = if self.tls.enabled() { "https" } else { "http" };
        self.public_url.clone().unwrap_or_else(|| format!("{scheme}://{}", self.listen))
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| Err(ConfigError::Invalid { key, problem: problem.to_owned() });
        if self.data_dir.as_os_str().is_empty() || !self.data_dir.is_absolute() {
            return invalid("data_dir", "must be an absolute path");
        }
        if let Some(url) = &self.database.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return invalid("database.url", "must start with postgres:// or postgresql://");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if let Some(issuer) = &self.oidc.issuer {
            if !(issuer.starts_with("https://")
                || issuer.starts_with("http://127.0.0.1")
                || issuer.starts_with("http://localhost"))
            {
                return invalid("oidc.issuer", "must be an https:// URL (http:// only on loopback)");
            }
            if self.oidc.client_secret_file.is_none() {
                return invalid(
                    "oidc.client_secret_file",
                    "is needed with oidc.issuer (the console is a confidential client)",
                );
            }
        }
        if self.oidc.session_hours == 0 || self.oidc.session_hours > 24 * 30 {
            return invalid("oidc.session_hours", "must be 1 to 720");
        }
        if self.database.connect_timeout_secs == 0 {
            return invalid("database.connect_timeout_secs", "must be at least 1");
        }
        if let Some(dir) = &self.embedded_database.bin_dir
            && !dir.is_absolute()
        {
            return invalid("embedded_database.bin_dir", "must be an absolute path");
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => return invalid("tls.key_file", "is required with tls.cert_file"),
            (None, Some(_)) => return invalid("tls.cert_file", "is required with tls.key_file"),
            _ => {}
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return invalid("public_url", "must start with http:// or https://");
        }
        if let Some(url) = &self.fleet.grpc_url
            && !url.starts_with("https://")
        {
            return invalid("fleet.grpc_url", "must start with https:// (agents always use TLS)");
        }
        if self.fleet.instance_subnet_pool.prefix > 24 {
            return invalid("fleet.instance_subnet_pool", "must be /24 or larger (each host gets a /24)");
        }
        if self.fleet.lease_secs < 3 {
            return invalid("fleet.lease_secs", "must be at least 3 (agents report every 2 s)");
        }
        if self.fleet.join_token_ttl_secs == 0 {
            return invalid("fleet.join_token_ttl_secs", "must be at least 1");
        }
        if !(1..=100).contains(&self.fleet.partition_silent_percent) {
            return invalid("fleet.partition_silent_percent", "must be between 1 and 100");
        }
        if self.fleet.partition_min_hosts == 0 {
            return invalid("fleet.partition_min_hosts", "must be at least 1");
        }
        if self.operations.lease_secs < 3 {
            return invalid("operations.lease_secs", "must be at least 3 (the lease is renewed every third of it)");
        }
        if !(1..=1024).contains(&self.operations.concurrency) {
            return invalid("operations.concurrency", "must be between 1 and 1024");
        }
        if self.limits.burst == 0 {
            return invalid("limits.burst", "must be at least 1");
        }
        if self.limits.websockets_per_instance == 0 {
            return invalid("limits.websockets_per_instance", "must be at least 1");
        }
        if self.limits.websockets_per_caller == 0 {
            return invalid("limits.websockets_per_caller", "must be at least 1");
        }
        if !(1..=1024).contains(&self.operations.max_connections) {
            return invalid("operations.max_connections", "must be between 1 and 1024");
        }
        if self.operations.step_timeout_secs == 0 || self.operations.step_timeouts.values().any(|s| *s == 0) {
            return invalid("operations.step_timeout_secs", "step time limits must be at least 1 second");
        }
        if let Some((key, problem)) = self.store.problem() {
            return invalid(key, problem);
        }
        self.log.validate()?;
        Ok(())
    }
}

/// `[tls]`: both files, or neither (plain HTTP).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// True when the API serves HTTPS.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let config = Config::from_toml(text, Path::new("test.toml"))?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("").expect("valid");
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(config.database.url, None);
        assert_eq!(config.database.max_connections, 16);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[database]\nurll = \"x\"\n").expect_err("unknown key");
        assert!(matches!(err, ConfigError::Parse { .. }));
        let chain = format!("{}", std::error::Error::source(&err).expect("source"));
        assert!(chain.contains("urll"), "{chain}");
    }

    #[test]
    fn bad_listen_address_is_named() {
        let err = parse("listen = \"nonsense\"\n").expect_err("bad address");
        let chain = format!("{}", std::error::Error::source(&err).expect("source"));
        assert!(chain.contains("listen"), "{chain}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let err = parse("[database]\nmax_connections = 0\n").expect_err("zero pool");
        assert!(matches!(err, ConfigError::Invalid { key: "database.max_connections", .. }));
        let err = parse("[database]\nurl = \"mysql://x\"\n").expect_err("wrong scheme");
        assert!(matches!(err, ConfigError::Invalid { key: "database.url", .. }));
        let err = parse("data_dir = \"relative\"\n").expect_err("relative dir");
        assert!(matches!(err, ConfigError::Invalid { key: "data_dir", .. }));
        let err = parse("[tls]\ncert_file = \"/etc/cloud/api.pem\"\n").expect_err("cert without key");
        assert!(matches!(err, ConfigError::Invalid { key: "tls.key_file", .. }));
        let err = parse("[operations]\nlease_secs = 1\n").expect_err("short lease");
        assert!(matches!(err, ConfigError::Invalid { key: "operations.lease_secs", .. }));
        let err = parse("[operations]\nconcurrency = 0\n").expect_err("no concurrency");
        assert!(matches!(err, ConfigError::Invalid { key: "operations.concurrency", .. }));
        let err = parse("[operations]\nmax_connections = 0\n").expect_err("no connections");
        assert!(matches!(err, ConfigError::Invalid { key: "operations.max_connections", .. }));
        let err = parse("[log]\nfilter = \"=[\"\n").expect_err("bad filter");
        assert!(matches!(err, ConfigError::Invalid { key: "log.filter", .. }));
    }

    #[test]
    fn overrides_win_over_the_file() {
        let mut config = parse("listen = \"127.0.0.1:9000\"\n[database]\nmax_connections = 4\n").expect("valid");
        let overrides = Overrides {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9001))),
            database_url: Some("postgres://db/cloud".to_owned()),
            ..Overrides::default()
        };
        config.apply(&overrides);
        assert_eq!(config.listen.port(), 9001);
        assert_eq!(config.database.max_connections, 4);
        assert_eq!(config.database.url.as_deref(), Some("postgres://db/cloud"));
    }

    #[test]
    fn effective_config_round_trips_through_toml() {
        let config = Config::default();
        let text = toml::to_string(&config).expect("serialize");
        assert_eq!(parse(&text).expect("valid"), config);
    }
}
