//! `control-plane`: thin shell over the library.
#![forbid(unsafe_code)]

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};
use control_plane::config::{Config, Overrides};
use control_plane::embedded_db::{self, EmbeddedPostgres};

/// The cloud's control plane: REST API, scheduler and fleet registry.
///
/// Configuration comes from a TOML file (--config), overridden by CLOUD_* environment
/// variables, overridden by flags. See the README for every key.
#[derive(Debug, Parser)]
#[command(version = control_plane::VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    overrides: Overrides,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane (the default).
    Serve,
    /// Print the effective configuration as TOML and exit.
    CheckConfig,
    /// Print the API's OpenAPI document (what `GET /v1/openapi.json` serves) and exit: the web
    /// console's API client is generated from it.
    Openapi,
    /// Issue a new token for the bootstrap administrator and write it to <data_dir>/admin-token
    /// (for when that file was lost). With the embedded database, stop the control plane first.
    IssueAdminToken,
    /// Run only the embedded PostgreSQL of the data directory, until SIGINT/SIGTERM, and print
    /// its URL (for psql, and for the test suite's shared cluster).
    EmbeddedDb {
        /// Also write the URL to this file once the database accepts connections.
        #[arg(long, value_name = "FILE")]
        url_file: Option<std::path::PathBuf>,
        /// Turn off fsync (throwaway test clusters only).
        #[arg(long)]
        unsafe_no_fsync: bool,
    },
}

fn main() -> std::process::ExitCode {
    cloud_common::startup::main("control-plane", run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Openapi = command {
        // Needs no configuration: the document is the code's.
        return print_openapi();
    }
    let config = Config::load(&cli.overrides)?;
    let telemetry = cloud_common::telemetry::init(&config.log, "control-plane")?;
    let result = command_run(command, config).await;
    telemetry.shutdown().await;
    result
}

async fn command_run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => control_plane::serve(config, cloud_common::startup::shutdown_signal()).await?,
        Command::Openapi => print_openapi()?,
        Command::CheckConfig => {
            let text = cloud_common::config::printable(&config).context("cannot print the configuration")?;
            std::io::stdout().write_all(text.as_bytes())?;
        }
        Command::IssueAdminToken => {
            let database = control_plane::Database::open(&config).await?;
            let issued = control_plane::auth::issue_admin_token_unchecked(&database.pool, &config.data_dir).await;
            database.close().await?;
            let path = issued?;
            writeln!(std::io::stdout(), "wrote a new administrator token to {}", path.display())?;
        }
        Command::EmbeddedDb { url_file, unsafe_no_fsync } => {
            let mut opts = control_plane::embedded_options(&config);
            opts.unsafe_no_fsync = unsafe_no_fsync;
            let pg = EmbeddedPostgres::start(opts).await?;
            let url = pg.url(embedded_db::DATABASE);
            if let Some(path) = url_file {
                // The URL carries the database's password: for its owner only.
                cloud_common::fs::write_atomic(&path, url.as_bytes(), 0o600)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            writeln!(std::io::stdout(), "{url}")?;
            cloud_common::startup::shutdown_signal().await;
            pg.stop().await?;
        }
    }
    Ok(())
}

fn print_openapi() -> anyhow::Result<()> {
    let text = control_plane::http::openapi::document_json().context("cannot render the OpenAPI document")?;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}
