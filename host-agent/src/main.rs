//! `host-agent`: thin shell over the library.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};

use clap::{Parser, Subcommand};
use host_agent::config::{AgentConfig, LogFormat, Overrides};

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
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => return fail(&anyhow::Error::new(err).context("cannot start the async runtime")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

/// One line (the whole cause chain) on stderr, never a backtrace.
fn fail(err: &anyhow::Error) -> std::process::ExitCode {
    let _ = writeln!(std::io::stderr(), "host-agent: error: {err:#}");
    std::process::ExitCode::FAILURE
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = AgentConfig::load(&cli.overrides)?;
    init_logging(&config);
    match cli.command {
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
        Command::Run => host_agent::agent::run(config, shutdown_signal()).await?,
        Command::CheckConfig => std::io::stdout().write_all(toml::to_string(&config)?.as_bytes())?,
    }
    Ok(())
}

fn init_logging(config: &AgentConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.filter).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match config.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
}
