//! The CLI's files: `config.toml` (profiles) and `credentials.toml` (tokens, mode 0600), both
//! in `$XDG_CONFIG_HOME/cloudctl/` (or `~/.config/cloudctl/`).
//!
//! ```toml
//! # config.toml
//! default-profile = "default"
//! [profile.default]
//! endpoint = "https://cloud.example:8443"
//! ca-cert = "/etc/cloud/ca.pem"   # optional: a private CA for https endpoints
//! project = "default"
//! output = "table"
//!
//! # credentials.toml (0600)
//! [profile.default]
//! token = "cloud_…"
//! ```
//! Settings are resolved flag > environment (`CLOUDCTL_*`) > profile > built-in default; the
//! resolution itself is the CLI's (it knows the flags), this module only reads and writes.
//! Files are written whole to a temporary file then renamed, so a crash never leaves half a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The profile used when none is named anywhere.
pub const DEFAULT_PROFILE: &str = "default";
/// The name of the profiles file.
pub const CONFIG_FILE: &str = "config.toml";
/// The name of the tokens file.
pub const CREDENTIALS_FILE: &str = "credentials.toml";

/// Why the configuration could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot find the configuration directory: neither XDG_CONFIG_HOME nor HOME is set")]
    NoHome,
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode {path}")]
    Encode {
        path: PathBuf,
        #[source]
        source: toml::ser::Error,
    },
}

/// `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The profile used when neither `--profile` nor `CLOUDCTL_PROFILE` names one.
    #[serde(rename = "default-profile", default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    /// Profiles by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub profile: BTreeMap<String, Profile>,
}

/// One named profile: where the API is and how to talk to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// `http(s)://host[:port]` of the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// A PEM file of CA certificates to trust for an `https` endpoint, besides the system's.
    #[serde(default, rename = "ca-cert", skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// The project (name or id) commands act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The output format when `-o` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// `credentials.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Tokens by profile name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub profile: BTreeMap<String, ProfileCredentials>,
}

/// The secrets of one profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileCredentials {
    /// An API token (`Authorization: Bearer …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The token came from signing in at the identity provider (`auth login --device-code` or
    /// `--browser`): `auth logout` revokes it at the API (a token given by hand is only
    /// forgotten: it may be used elsewhere).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub signed_in: bool,
    /// When the token ends (`None`: never, or not known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The identity provider's refresh token from the sign-in: when the API token is about to
    /// end, cloudctl gets a fresh ID token with it and trades that for a new API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// The directory of the CLI's files: `$XDG_CONFIG_HOME/cloudctl`, else `$HOME/.config/cloudctl`.
pub fn config_dir() -> Result<PathBuf, ConfigError> {
    let nonempty = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(xdg) = nonempty("XDG_CONFIG_HOME") {
        return Ok(xdg.join("cloudctl"));
    }
    nonempty("HOME").map(|home| home.join(".config").join("cloudctl")).ok_or(ConfigError::NoHome)
}

/// The CLI's files in one directory.
#[derive(Debug, Clone)]
pub struct ConfigStore {
    dir: PathBuf,
}

impl ConfigStore {
    /// The files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The files in [`config_dir`].
    pub fn locate() -> Result<Self, ConfigError> {
        config_dir().map(Self::new)
    }

    /// Path of `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }

    /// Path of `credentials.toml`.
    pub fn credentials_path(&self) -> PathBuf {
        self.dir.join(CREDENTIALS_FILE)
    }

    /// `config.toml`, or an empty one when there is no file.
    pub fn load_config(&self) -> Result<ConfigFile, ConfigError> {
        load(&self.config_path())
    }

    /// `credentials.toml`, or an empty one when there is no file.
    pub fn load_credentials(&self) -> Result<Credentials, ConfigError> {
        load(&self.credentials_path())
    }

    /// Writes `config.toml` (mode 0644).
    pub fn save_config(&self, config: &ConfigFile) -> Result<(), ConfigError> {
        save(&self.dir, &self.config_path(), config, 0o644)
    }

    /// Writes `credentials.toml` (mode 0600: it holds tokens).
    pub fn save_credentials(&self, credentials: &Credentials) -> Result<(), ConfigError> {
        save(&self.dir, &self.credentials_path(), credentials, 0o600)
    }
}

fn load<T: Default + for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(ConfigError::Read { path: path.to_owned(), source }),
    }
}

fn save<T: Serialize>(dir: &Path, path: &Path, value: &T, mode: u32) -> Result<(), ConfigError> {
    use std::os::unix::fs::DirBuilderExt;
    let text = toml::to_string(value).map_err(|source| ConfigError::Encode { path: path.to_owned(), source })?;
    let write_err = |source| ConfigError::Write { path: path.to_owned(), source };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(write_err)?;
    cloud_common::fs::write_atomic(path, text.as_bytes(), mode).map_err(write_err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn files_round_trip_and_credentials_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::new(dir.path().join("cloudctl"));
        assert_eq!(store.load_config().unwrap(), ConfigFile::default());
        let mut config = ConfigFile { default_profile: Some("lab".into()), ..Default::default() };
        config.profile.insert(
            "lab".into(),
            Profile {
                endpoint: Some("http://lab:8080".into()),
                ca_cert: None,
                project: None,
                output: Some("json".into()),
            },
        );
        store.save_config(&config).unwrap();
        assert_eq!(store.load_config().unwrap(), config);
        let text = std::fs::read_to_string(store.config_path()).unwrap();
        assert!(text.contains("default-profile = \"lab\""), "{text}");

        let mut creds = Credentials::default();
        creds.profile.insert("lab".into(), ProfileCredentials { token: Some("secret".into()), ..Default::default() });
        store.save_credentials(&creds).unwrap();
        assert_eq!(store.load_credentials().unwrap(), creds);
        let mode = std::fs::metadata(store.credentials_path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_malformed_file_is_a_parse_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "profile = 3").unwrap();
        let err = ConfigStore::new(dir.path()).load_config().unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    }
}
