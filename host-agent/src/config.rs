//! The host agent's configuration: a TOML file, overridden by `CLOUD_AGENT_*` environment
//! variables, overridden by flags. Unknown keys are errors; every error names the key.
//!
//! ```toml
//! state_dir = "/var/lib/cloud-agent"   # CLOUD_AGENT_STATE_DIR: identity, instances, image cache
//! listen = "0.0.0.0:7444"              # CLOUD_AGENT_LISTEN: the agent's gRPC server (mTLS)
//! advertise_url = "https://10.0.0.5:7444"  # CLOUD_AGENT_ADVERTISE_URL: how the control plane reaches it
//! metrics_listen = "127.0.0.1:9464"    # CLOUD_AGENT_METRICS_LISTEN: GET /metrics (plain HTTP); unset: off
//! report_interval_ms = 2000            # CLOUD_AGENT_REPORT_INTERVAL_MS
//! driver = "qemu"                      # CLOUD_AGENT_DRIVER: qemu | simulated (scale tests only)
//! bridge = "cloudbr0"                  # CLOUD_AGENT_BRIDGE
//! chunk_cache_gib = 10                 # CLOUD_AGENT_CHUNK_CACHE_GIB: the store's chunks kept here
//! console_log_max_kib = 4096           # CLOUD_AGENT_CONSOLE_LOG_MAX_KIB: console.log's bound per VM
//! image_cache_gib = 50                 # CLOUD_AGENT_IMAGE_CACHE_GIB: unused images kept up to this
//! vm_user_base = 1000000000            # CLOUD_AGENT_VM_USER_BASE: first of the VMs' own user ids
//! vm_memory_overhead_mib = 192         # CLOUD_AGENT_VM_MEMORY_OVERHEAD_MIB: QEMU's own, in its limit
//!
//! [capacity]                           # default: what the machine has
//! vcpus = 8                            # CLOUD_AGENT_CAPACITY_VCPUS
//! memory_mib = 16384                   # CLOUD_AGENT_CAPACITY_MEMORY_MIB
//! disk_gib = 200                       # CLOUD_AGENT_CAPACITY_DISK_GIB
//!
//! [store]                              # the shared snapshot store: see cloud_store::config
//! backend = "local"                    # CLOUD_STORE_BACKEND: local | s3
//! dir = "/var/lib/cloud/store"         # CLOUD_STORE_DIR (the same for every service of a machine)
//!
//! [log]
//! format = "text"                      # CLOUD_AGENT_LOG_FORMAT: text | json
//! filter = "info"                      # CLOUD_AGENT_LOG_FILTER
//! otlp_endpoint = "http://…:4317"       # CLOUD_AGENT_LOG_OTLP_ENDPOINT: export traces (OTLP/gRPC); default: none
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use cloud_common::config::set;
pub use cloud_common::config::{ConfigError, LogConfig, LogFormat};

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_url: Option<String>,
    /// Where `GET /metrics` is served (plain HTTP); unset: not served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    pub report_interval_ms: u64,
    pub driver: Driver,
    pub bridge: String,
    pub chunk_cache_gib: u64,
    pub console_log_max_kib: u64,
    pub image_cache_gib: u64,
    pub vm_user_base: u32,
    pub vm_memory_overhead_mib: u64,
    pub capacity: CapacityConfig,
    pub store: cloud_store::StoreConfig,
    pub log: LogConfig,
}

/// Which VMM driver runs the instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// Real VMs with QEMU (the default, and the only choice for real hosts).
    Qemu,
    /// No VMs at all: for 10,000-host scale simulations of the control plane only.
    Simulated,
}

/// `[capacity]`: what the host offers to instances; unset values are measured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacityConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_gib: Option<u64>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/cloud-agent"),
            listen: SocketAddr::from(([0, 0, 0, 0], 7444)),
            advertise_url: None,
            metrics_listen: None,
            report_interval_ms: 2000,
            driver: Driver::Qemu,
            bridge: "cloudbr0".to_owned(),
            chunk_cache_gib: 10,
            console_log_max_kib: 4096,
            image_cache_gib: 50,
            vm_user_base: 1_000_000_000,
            vm_memory_overhead_mib: 192,
            capacity: CapacityConfig::default(),
            store: cloud_store::StoreConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// Flags, each also read from its `CLOUD_AGENT_*` environment variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "CLOUD_AGENT_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// State directory [default: /var/lib/cloud-agent].
    #[arg(long, env = "CLOUD_AGENT_STATE_DIR", value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,
    /// Address of the agent's gRPC server [default: 0.0.0.0:7444].
    #[arg(long, env = "CLOUD_AGENT_LISTEN", value_name = "ADDR", global = true)]
    pub listen: Option<SocketAddr>,
    /// URL the control plane uses to reach this agent [default: https://ADDR, ADDR being --listen, unless it is 0.0.0.0].
    #[arg(long, env = "CLOUD_AGENT_ADVERTISE_URL", value_name = "URL", global = true)]
    pub advertise_url: Option<String>,
    /// Address of the agent's Prometheus metrics (plain HTTP `GET /metrics`) [default: not served].
    #[arg(long, env = "CLOUD_AGENT_METRICS_LISTEN", value_name = "ADDR", global = true)]
    pub metrics_listen: Option<SocketAddr>,
    /// Milliseconds between reports to the control plane [default: 2000].
    #[arg(long, env = "CLOUD_AGENT_REPORT_INTERVAL_MS", value_name = "MS", global = true)]
    pub report_interval_ms: Option<u64>,
    /// VMM driver [default: qemu]; `simulated` is for scale simulations only.
    #[arg(long, env = "CLOUD_AGENT_DRIVER", value_name = "DRIVER", global = true)]
    pub driver: Option<Driver>,
    /// Host bridge for instance taps [default: cloudbr0].
    #[arg(long, env = "CLOUD_AGENT_BRIDGE", value_name = "NAME", global = true)]
    pub bridge: Option<String>,
    /// The most this host keeps of the snapshot store's chunks, GiB [default: 10].
    #[arg(long, env = "CLOUD_AGENT_CHUNK_CACHE_GIB", value_name = "GIB", global = true)]
    pub chunk_cache_gib: Option<u64>,
    /// A VM's console.log is kept under this many KiB (the previous part in console.log.1) [default: 4096].
    #[arg(long, env = "CLOUD_AGENT_CONSOLE_LOG_MAX_KIB", value_name = "KIB", global = true)]
    pub console_log_max_kib: Option<u64>,
    /// Cached images no instance uses are evicted past this many GiB [default: 50].
    #[arg(long, env = "CLOUD_AGENT_IMAGE_CACHE_GIB", value_name = "GIB", global = true)]
    pub image_cache_gib: Option<u64>,
    /// The first of the user ids the VMs run as, one each (2^24 from here) [default: 1000000000].
    #[arg(long, env = "CLOUD_AGENT_VM_USER_BASE", value_name = "UID", global = true)]
    pub vm_user_base: Option<u32>,
    /// QEMU's own memory on top of a VM's, in its memory limit, MiB [default: 192].
    #[arg(long, env = "CLOUD_AGENT_VM_MEMORY_OVERHEAD_MIB", value_name = "MIB", global = true)]
    pub vm_memory_overhead_mib: Option<u64>,
    /// vCPUs offered to instances [default: the host's CPUs].
    #[arg(long, env = "CLOUD_AGENT_CAPACITY_VCPUS", value_name = "N", global = true)]
    pub capacity_vcpus: Option<u32>,
    /// Memory offered to instances, MiB [default: the host's memory minus 1 GiB].
    #[arg(long, env = "CLOUD_AGENT_CAPACITY_MEMORY_MIB", value_name = "MIB", global = true)]
    pub capacity_memory_mib: Option<u64>,
    /// Disk offered to instances, GiB [default: free space of the state directory].
    #[arg(long, env = "CLOUD_AGENT_CAPACITY_DISK_GIB", value_name = "GIB", global = true)]
    pub capacity_disk_gib: Option<u64>,
    #[command(flatten)]
    pub store: cloud_store::StoreOverrides,
    /// Log format [default: text].
    #[arg(long, env = "CLOUD_AGENT_LOG_FORMAT", value_name = "FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
    /// Log filter [default: info].
    #[arg(long, env = "CLOUD_AGENT_LOG_FILTER", value_name = "FILTER", global = true)]
    pub log_filter: Option<String>,
    /// Export traces to this OpenTelemetry collector (OTLP over gRPC) [default: none].
    #[arg(long, env = "CLOUD_AGENT_LOG_OTLP_ENDPOINT", value_name = "URL", global = true)]
    pub log_otlp_endpoint: Option<String>,
}

impl AgentConfig {
    /// Reads the file (if any), applies the overrides, validates.
    pub fn load(o: &Overrides) -> Result<Self, ConfigError> {
        let mut config: Self = cloud_common::config::read_file(o.config.as_deref())?;
        set(&mut config.state_dir, &o.state_dir);
        set(&mut config.listen, &o.listen);
        if o.metrics_listen.is_some() {
            config.metrics_listen = o.metrics_listen;
        }
        if o.advertise_url.is_some() {
            config.advertise_url = o.advertise_url.clone();
        }
        set(&mut config.report_interval_ms, &o.report_interval_ms);
        set(&mut config.driver, &o.driver);
        set(&mut config.bridge, &o.bridge);
        set(&mut config.chunk_cache_gib, &o.chunk_cache_gib);
        set(&mut config.console_log_max_kib, &o.console_log_max_kib);
        set(&mut config.image_cache_gib, &o.image_cache_gib);
        set(&mut config.vm_user_base, &o.vm_user_base);
        set(&mut config.vm_memory_overhead_mib, &o.vm_memory_overhead_mib);
        if o.capacity_vcpus.is_some() {
            config.capacity.vcpus = o.capacity_vcpus;
        }
        if o.capacity_memory_mib.is_some() {
            config.capacity.memory_mib = o.capacity_memory_mib;
        }
        if o.capacity_disk_gib.is_some() {
            config.capacity.disk_gib = o.capacity_disk_gib;
        }
        o.store.apply(&mut config.store);
        set(&mut config.log.format, &o.log_format);
        set(&mut config.log.filter, &o.log_filter);
        if o.log_otlp_endpoint.is_some() {
            config.log.otlp_endpoint.clone_from(&o.log_otlp_endpoint);
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        cloud_common::config::from_toml(text, path)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| Err(ConfigError::Invalid { key, problem: problem.to_owned() });
        if !self.state_dir.is_absolute() {
            return invalid("state_dir", "must be an absolute path");
        }
        if let Some(url) = &self.advertise_url
            && !url.starts_with("https://")
        {
            return invalid("advertise_url", "must start with https://");
        }
        if self.vm_user_base < 1000 || self.vm_user_base > u32::MAX - crate::instances::VM_USER_SPAN {
            return invalid("vm_user_base", "must leave room for 2^24 user ids above 1000 and below 2^32");
        }
        if !(100..=60_000).contains(&self.report_interval_ms) {
            return invalid("report_interval_ms", "must be between 100 and 60000");
        }
        if self.bridge.is_empty()
            || self.bridge.len() > 15
            || !self.bridge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return invalid("bridge", "must be 1 to 15 letters, digits, '-' or '_'");
        }
        if self.console_log_max_kib < 16 {
            return invalid("console_log_max_kib", "must be at least 16");
        }
        if self.capacity.vcpus == Some(0) || self.capacity.memory_mib == Some(0) {
            return invalid("capacity", "vcpus and memory_mib must be at least 1 when set");
        }
        if let Some((key, problem)) = self.store.problem() {
            return invalid(key, problem);
        }
        self.log.validate()?;
        Ok(())
    }

    /// The URL the control plane will use to reach this agent.
    pub fn advertised_url(&self) -> Result<String, ConfigError> {
        if let Some(url) = &self.advertise_url {
            return Ok(url.clone());
        }
        if self.listen.ip().is_unspecified() {
            return Err(ConfigError::Invalid {
                key: "advertise_url",
                problem: format!(
                    "required when listening on {} (say which address the control plane should use)",
                    self.listen
                ),
            });
        }
        Ok(format!("https://{}", self.listen))
    }

    /// Where the host's identity (key, certificate, CA, host.json) is kept.
    pub fn identity_dir(&self) -> PathBuf {
        self.state_dir.join("identity")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_unknown_keys_are_named() {
        AgentConfig::default().validate().expect("defaults");
        let err = AgentConfig::from_toml("bridgee = \"x\"\n", Path::new("a.toml")).expect_err("unknown");
        let source = std::error::Error::source(&err).expect("source").to_string();
        assert!(source.contains("bridgee"), "{source}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut config = AgentConfig { bridge: "a-bridge-name-too-long".to_owned(), ..AgentConfig::default() };
        assert!(matches!(config.validate(), Err(ConfigError::Invalid { key: "bridge", .. })));
        config.bridge = "br0".to_owned();
        config.advertise_url = Some("http://x:1".to_owned());
        assert!(matches!(config.validate(), Err(ConfigError::Invalid { key: "advertise_url", .. })));
        config.advertise_url = None;
        assert!(matches!(config.advertised_url(), Err(ConfigError::Invalid { key: "advertise_url", .. })));
    }
}
