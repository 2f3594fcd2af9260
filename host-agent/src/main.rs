//! `host-agent`: thin shell over the library.
#![forbid(unsafe_code)]

use std::io::Write;

use clap::{Parser, Subcommand};
use host_agent::config::{AgentConfig, Overrides};

/// The per-host agent of the cloud: joins the fleet, runs this host's VMs, reports.
///
/// Configuration comes from a TOML file (--config), overridden by CLOUD_AGENT_* environment
/// variables, overridden by flags. See the README for every key.
#[derive(Debug, Parser)]
#[command(version = host_agent::VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    overrides: Overrides,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join a fleet with a token from `POST /v1/hosts/join-tokens` (once per host).
    Join {
        /// The control plane's API URL, e.g. http://10.0.0.1:8080.
        #[arg(long, value_name = "URL")]
        control_plane: String,
        /// The join token (cjt1.…).
        #[arg(long, value_name = "TOKEN", env = "CLOUD_AGENT_JOIN_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Run the agent (after `join`).
    Run,
    /// Print the effective configuration as TOML.
    CheckConfig,
}

fn main() -> std::process::ExitCode {
    cloud_common::startup::main("host-agent", run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = AgentConfig::load(&cli.overrides)?;
    let telemetry = cloud_common::telemetry::init(&config.log, "host-agent")?;
    let result = command_run(cli.command, config).await;
    telemetry.shutdown().await;
    result
}

async fn command_run(command: Command, config: AgentConfig) -> anyhow::Result<()> {
    match command {
        Command::Join { control_plane, token } => {
            let capacity = host_agent::capacity::total(&config.capacity, &config.state_dir);
            let accelerator = host_agent::agent::accelerator(&config);
            let identity = host_agent::join::join(&config, &control_plane, &token, capacity, &accelerator).await?;
            writeln!(
                std::io::stdout(),
                "joined as host {} (instance subnet {}); start the agent with `host-agent run`",
                identity.record.host_id,
                identity.record.instance_subnet
            )?;
        }
        Command::Run => host_agent::agent::run(config, cloud_common::startup::shutdown_signal()).await?,
        Command::CheckConfig => std::io::stdout().write_all(cloud_common::config::printable(&config)?.as_bytes())?,
    }
    Ok(())
}
