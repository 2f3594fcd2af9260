//! `[store]`, the same section in the control plane's and the agent's configuration.
//!
//! ```toml
//! [store]
//! backend = "local"                  # local | s3
//! dir = "/var/lib/cloud/store"       # local: the store's directory (shared by all on one machine)
//!
//! [store.s3]                         # backend = "s3"
//! endpoint = "https://s3.example"    # omit for AWS itself
//! bucket = "cloud-snapshots"
//! region = "us-east-1"
//! access_key_id = "…"
//! secret_access_key = "…"
//! allow_http = false                 # plain HTTP (a store on loopback only)
//! ```
//! Every key is also a flag and an environment variable, the same in both services (they must
//! reach the same store): `--store-backend` / `CLOUD_STORE_BACKEND`, `--store-dir` /
//! `CLOUD_STORE_DIR`, `--store-s3-endpoint` / `CLOUD_STORE_S3_ENDPOINT`, and so on for
//! `bucket`, `region`, `access_key_id`, `secret_access_key` and `allow_http`.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// How long a request to S3 is retried before the error is the caller's: an outage fails a
/// snapshot in seconds, not minutes.
const RETRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: Backend,
    pub dir: PathBuf,
    pub s3: S3Config,
}

/// Where the store keeps its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A local directory (one machine, or a shared mount).
    Local,
    /// An S3-compatible bucket.
    S3,
}

/// `[store.s3]`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { backend: Backend::Local, dir: PathBuf::from("/var/lib/cloud/store"), s3: S3Config::default() }
    }
}

/// `[store]` flags, each also read from its `CLOUD_STORE_*` environment variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreOverrides {
    /// Snapshot store backend: local | s3 [default: local].
    #[arg(long, env = "CLOUD_STORE_BACKEND", value_name = "BACKEND", global = true)]
    pub store_backend: Option<Backend>,
    /// Directory of the local snapshot store [default: /var/lib/cloud/store].
    #[arg(long, env = "CLOUD_STORE_DIR", value_name = "DIR", global = true)]
    pub store_dir: Option<PathBuf>,
    /// S3 endpoint URL [default: AWS].
    #[arg(long, env = "CLOUD_STORE_S3_ENDPOINT", value_name = "URL", global = true)]
    pub store_s3_endpoint: Option<String>,
    /// S3 bucket.
    #[arg(long, env = "CLOUD_STORE_S3_BUCKET", value_name = "NAME", global = true)]
    pub store_s3_bucket: Option<String>,
    /// S3 region.
    #[arg(long, env = "CLOUD_STORE_S3_REGION", value_name = "REGION", global = true)]
    pub store_s3_region: Option<String>,
    /// S3 access key id.
    #[arg(long, env = "CLOUD_STORE_S3_ACCESS_KEY_ID", value_name = "ID", global = true)]
    pub store_s3_access_key_id: Option<String>,
    /// S3 secret access key (prefer the environment variable or the file to the flag).
    #[arg(long, env = "CLOUD_STORE_S3_SECRET_ACCESS_KEY", value_name = "KEY", global = true, hide_env_values = true)]
    pub store_s3_secret_access_key: Option<String>,
    /// Allow a plain-HTTP S3 endpoint (loopback test servers).
    #[arg(long, env = "CLOUD_STORE_S3_ALLOW_HTTP", value_name = "BOOL", global = true)]
    pub store_s3_allow_http: Option<bool>,
}

impl StoreOverrides {
    /// Applies the flags that were given.
    pub fn apply(&self, config: &mut StoreConfig) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *target = v.clone();
            }
        }
        set(&mut config.backend, &self.store_backend);
        set(&mut config.dir, &self.store_dir);
        if self.store_s3_endpoint.is_some() {
            config.s3.endpoint.clone_from(&self.store_s3_endpoint);
        }
        set(&mut config.s3.bucket, &self.store_s3_bucket);
        set(&mut config.s3.region, &self.store_s3_region);
        set(&mut config.s3.access_key_id, &self.store_s3_access_key_id);
        set(&mut config.s3.secret_access_key, &self.store_s3_secret_access_key);
        set(&mut config.s3.allow_http, &self.store_s3_allow_http);
    }
}

impl StoreConfig {
    /// What is wrong with it, naming the key.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        match self.backend {
            Backend::Local if !self.dir.is_absolute() => Some(("store.dir", "must be an absolute path")),
            Backend::S3 if self.s3.bucket.is_empty() => Some(("store.s3.bucket", "is required for the s3 backend")),
            Backend::S3 if self.s3.region.is_empty() => Some(("store.s3.region", "is required for the s3 backend")),
            Backend::S3
                if self.s3.endpoint.as_deref().is_some_and(|e| e.starts_with("http://")) && !self.s3.allow_http =>
            {
                Some(("store.s3.endpoint", "is plain HTTP: set store.s3.allow_http = true to allow it"))
            }
            _ => None,
        }
    }

    /// The backend, and its label for messages.
    pub(crate) fn connect(&self) -> Result<(Arc<dyn ObjectStore>, String), StoreError> {
        if let Some((key, problem)) = self.problem() {
            return Err(StoreError::Config(format!("{key} {problem}")));
        }
        match self.backend {
            Backend::Local => {
                // Chunks hold tenants' data (their config drives, disks, memory): the store is
                // its owner's alone.
                let private = |dir: &std::path::Path| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::create_dir_all(dir)?;
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                };
                private(&self.dir).map_err(|source| StoreError::Io { path: self.dir.clone(), source })?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&self.dir)
                    .map_err(|e| StoreError::Config(format!("store.dir {}: {e}", self.dir.display())))?;
                Ok((Arc::new(fs), format!("file://{}", self.dir.display())))
            }
            Backend::S3 => {
                // object_store's TLS is rustls with the process's provider: ring, as everywhere.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let s3 = &self.s3;
                let mut builder = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_access_key_id(&s3.access_key_id)
                    .with_secret_access_key(&s3.secret_access_key)
                    .with_allow_http(s3.allow_http)
                    .with_retry(object_store::RetryConfig {
                        backoff: object_store::BackoffConfig::default(),
                        max_retries: 3,
                        retry_timeout: RETRY_TIMEOUT,
                    });
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
                }
                let store = builder.build().map_err(|e| StoreError::Config(format!("store.s3: {e}")))?;
                Ok((Arc::new(store), format!("s3://{}", s3.bucket)))
            }
        }
    }
}
