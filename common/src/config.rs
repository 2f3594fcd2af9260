//! Configuration of a service, the same way for both: a TOML file (unknown keys are errors),
//! overridden by environment variables, overridden by flags (clap reads both into one
//! `Overrides` struct per service), then validated. `[log]` is the same section in both.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid value for `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// Parses a TOML document (unknown keys are errors when `T` denies them).
pub fn from_toml<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })
}

/// The configuration in the file at `path`, or the defaults when there is none.
pub fn read_file<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else { return Ok(T::default()) };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    from_toml(&text, path)
}

/// Replaces `target` with the override, if one was given.
pub fn set<T: Clone>(target: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *target = v.clone();
    }
}

/// `[log]`: log lines, and the traces of the same spans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `info,control_plane::http=debug`. It selects the spans
    /// traced as well as the lines logged.
    pub filter: String,
    /// An OpenTelemetry collector's OTLP/gRPC endpoint (`http://collector:4317`) the spans are
    /// exported to; absent (the default), no trace leaves the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, filter: "info".to_owned(), otlp_endpoint: None }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogConfig {
    /// `invalid value for log.filter` unless the filter parses.
    pub fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.filter)
            .map(drop)
            .map_err(|e| ConfigError::Invalid { key: "log.filter", problem: e.to_string() })?;
        match &self.otlp_endpoint {
            Some(url)
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || url.contains(char::is_whitespace) =>
            {
                Err(ConfigError::Invalid {
                    key: "log.otlp_endpoint",
                    problem: format!("{url:?} is not an http:// or https:// URL"),
                })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        log: LogConfig,
    }

    #[test]
    fn files_are_read_strictly_and_overrides_win() {
        let dir = std::env::temp_dir().join(format!("cloud-common-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[log]\nformat = \"json\"\n").unwrap();
        let mut read: Sample = read_file(Some(&file)).unwrap();
        assert_eq!(read.log.format, LogFormat::Json);
        set(&mut read.log.filter, &Some("debug".to_owned()));
        set(&mut read.log.format, &None);
        assert_eq!((read.log.format, read.log.filter.as_str()), (LogFormat::Json, "debug"));
        std::fs::write(&file, "[log]\ncolour = 1\n").unwrap();
        assert!(matches!(read_file::<Sample>(Some(&file)), Err(ConfigError::Parse { .. })));
        assert!(matches!(read_file::<Sample>(Some(&dir.join("missing"))), Err(ConfigError::Read { .. })));
        assert!(read_file::<Sample>(None).is_ok());
        assert!(LogConfig { filter: "info,[".to_owned(), ..LogConfig::default() }.validate().is_err());
        let otlp = |url: &str| LogConfig { otlp_endpoint: Some(url.to_owned()), ..LogConfig::default() }.validate();
        assert!(otlp("http://127.0.0.1:4317").is_ok());
        assert!(matches!(otlp("127.0.0.1:4317"), Err(ConfigError::Invalid { key: "log.otlp_endpoint", .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// What `check-config` prints for a secret.
pub const REDACTED: &str = "<redacted>";

/// Keys whose values are secrets wherever they appear.
const SECRET_KEYS: &[&str] = &["password", "secret", "secret_access_key", "client_secret", "token"];

/// The effective configuration as TOML, with every secret replaced by [`REDACTED`]: values of
/// secret keys, and the password of any URL (`scheme://user:password@host`, `?password=…`).
/// Paths to files holding secrets are printed as they are: they are not the secrets.
pub fn printable<T: Serialize>(config: &T) -> Result<String, toml::ser::Error> {
    let mut value = toml::Value::try_from(config)?;
    redact(&mut value);
    toml::to_string(&value)
}

fn redact(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table.iter_mut() {
                match value {
                    toml::Value::String(text) if SECRET_KEYS.contains(&key.as_str()) && !text.is_empty() => {
                        *text = REDACTED.to_owned();
                    }
                    toml::Value::String(text) => *text = redact_url(text),
                    other => redact(other),
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact),
        toml::Value::String(text) => *text = redact_url(text),
        _ => {}
    }
}

/// `text` with the password of a URL in it redacted (unchanged when it is no URL or has none).
fn redact_url(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else { return text.to_owned() };
    let rest = &text[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let mut out = text[..scheme_end + 3].to_owned();
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => out.push_str(&format!("{user}:{REDACTED}{}", &rest[at..authority_end])),
            None => out.push_str(&rest[..authority_end]),
        },
        None => out.push_str(&rest[..authority_end]),
    }
    let tail = &rest[authority_end..];
    match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if SECRET_KEYS.contains(&key.to_ascii_lowercase().as_str()) => {
                        format!("{key}={REDACTED}")
                    }
                    _ => param.to_owned(),
                })
                .collect();
            out.push_str(&format!("{path}?{}", params.join("&")));
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(test)]
mod printable_tests {
    use super::*;

    #[derive(Serialize)]
    struct Db {
        url: String,
        password: String,
        password_file: String,
    }

    #[derive(Serialize)]
    struct S3 {
        secret_access_key: String,
        access_key_id: String,
    }

    #[derive(Serialize)]
    struct Sample {
        database: Db,
        s3: S3,
        endpoints: Vec<String>,
        empty_secret: S3,
    }

    #[test]
    fn secrets_and_url_passwords_are_redacted_and_nothing_else() {
        let sample = Sample {
            database: Db {
                url: "postgres://cloud:hunter2@db.example:5432/cloud?sslmode=require&password=alsosecret".into(),
                password: "hunter3".into(),
                password_file: "/etc/cloud/db-password".into(),
            },
            s3: S3 { secret_access_key: "wJalrXUtnFEMI".into(), access_key_id: "AKIAEXAMPLE".into() },
            endpoints: vec!["https://user:pw@store.example/".into(), "http://127.0.0.1:9000".into()],
            empty_secret: S3 { secret_access_key: String::new(), access_key_id: String::new() },
        };
        let text = printable(&sample).expect("the sample serializes");
        for secret in ["hunter2", "hunter3", "alsosecret", "wJalrXUtnFEMI", ":pw@"] {
            assert!(!text.contains(secret), "{secret} printed in:\n{text}");
        }
        let value: toml::Value = toml::from_str(&text).expect("what is printed is TOML");
        assert_eq!(
            value["database"]["url"].as_str(),
            Some("postgres://cloud:<redacted>@db.example:5432/cloud?sslmode=require&password=<redacted>")
        );
        assert_eq!(value["database"]["password_file"].as_str(), Some("/etc/cloud/db-password"));
        assert_eq!(value["s3"]["access_key_id"].as_str(), Some("AKIAEXAMPLE"));
        assert_eq!(value["endpoints"][0].as_str(), Some("https://user:<redacted>@store.example/"));
        assert_eq!(value["endpoints"][1].as_str(), Some("http://127.0.0.1:9000"));
        // An unset secret stays visibly unset.
        assert_eq!(value["empty_secret"]["secret_access_key"].as_str(), Some(""));
    }
}
