//! `cloudctl config get [KEY]` and `cloudctl config set KEY VALUE`: the profile's settings in
//! `config.toml` (`endpoint`, `project`, `output`) and the file's `default-profile`.

use clap::Subcommand;
use cloudctl::client::Client;
use cloudctl::output::{Format, write_stdout};

use super::{Context, Failure};

/// The keys `config get|set` know.
const KEYS: &str = "endpoint, ca-cert, project, output, default-profile";

/// Config verbs.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a setting of the profile (all of them without KEY).
    Get {
        /// endpoint, project, output or default-profile.
        key: Option<String>,
    },
    /// Change a setting of the profile (created if new).
    Set {
        /// endpoint, project, output or default-profile.
        key: String,
        value: String,
    },
}

/// Runs a config command.
pub fn run(ctx: &Context, cmd: ConfigCommand) -> anyhow::Result<()> {
    let mut config = ctx.store.load_config()?;
    match cmd {
        ConfigCommand::Get { key: None } => {
            let profile = config.profile.get(&ctx.profile_name).cloned().unwrap_or_default();
            let mut text = format!("profile = {}\n", ctx.profile_name);
            for (key, value) in [
                ("endpoint", profile.endpoint),
                ("ca-cert", profile.ca_cert),
                ("project", profile.project),
                ("output", profile.output),
            ] {
                text.push_str(&format!("{key} = {}\n", value.unwrap_or_default()));
            }
            text.push_str(&format!("default-profile = {}\n", config.default_profile.unwrap_or_default()));
            write_stdout(&text)?;
            Ok(())
        }
        ConfigCommand::Get { key: Some(key) } => {
            let profile = config.profile.get(&ctx.profile_name).cloned().unwrap_or_default();
            let value = match key.as_str() {
                "endpoint" => profile.endpoint,
                "ca-cert" => profile.ca_cert,
                "project" => profile.project,
                "output" => profile.output,
                "default-profile" => config.default_profile,
                _ => return Err(unknown(&key).into()),
            };
            write_stdout(&format!("{}\n", value.unwrap_or_default()))?;
            Ok(())
        }
        ConfigCommand::Set { key, value } => {
            if key == "default-profile" {
                config.default_profile = Some(value);
                ctx.store.save_config(&config)?;
                return Ok(());
            }
            let profile = config.profile.entry(ctx.profile_name.clone()).or_default();
            match key.as_str() {
                "endpoint" => {
                    Client::new(&value, "")?;
                    profile.endpoint = Some(value);
                }
                "ca-cert" => {
                    // Stored absolute, so commands run from any directory find it.
                    let path =
                        std::path::absolute(&value).map_err(|e| Failure::Usage(format!("ca-cert: {value:?}: {e}")))?;
                    cloudctl::client::tls::client_config(Some(&path))
                        .map_err(|reason| Failure::Usage(format!("ca-cert: {reason}")))?;
                    profile.ca_cert = Some(path.display().to_string());
                }
                "project" => profile.project = Some(value),
                "output" => {
                    if Format::parse(&value).is_none() {
                        return Err(Failure::Usage(format!(
                            "unknown output format {value:?}; one of table, json, yaml, name, id"
                        ))
                        .into());
                    }
                    profile.output = Some(value);
                }
                _ => return Err(unknown(&key).into()),
            }
            ctx.store.save_config(&config)?;
            Ok(())
        }
    }
}

fn unknown(key: &str) -> Failure {
    Failure::Usage(format!("unknown setting {key:?}; one of {KEYS}"))
}
