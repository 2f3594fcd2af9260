//! How a service binary starts and stops: logging to stderr, the async runtime, one line on
//! stderr when it fails (the whole cause chain, never a backtrace: operators read it), and the
//! signals that stop it.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use crate::config::{LogConfig, LogFormat};

/// Runs `run` on a new multi-threaded runtime; on an error prints `<program>: error: <chain>`
/// and exits with failure.
pub fn main(program: &str, run: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => return fail(program, &anyhow::Error::new(err).context("cannot start the async runtime")),
    };
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(program, &err),
    }
}

fn fail(program: &str, err: &anyhow::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "{program}: error: {err:#}");
    ExitCode::FAILURE
}

/// Installs the global `tracing` subscriber: stderr, text (coloured on a terminal) or JSON
/// lines. The filter was validated with the configuration ([`LogConfig::validate`]).
pub fn init_logging(log: &LogConfig) {
    install(log, None::<tracing_subscriber::layer::Identity>);
}

/// [`init_logging`] with one more layer (the trace exporter) beside the log lines.
pub(crate) fn install<L>(log: &LogConfig, extra: Option<L>)
where
    L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync,
{
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_new(&log.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let lines =
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let lines = match log.format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().flatten_event(true).boxed(),
    };
    let _ = tracing_subscriber::registry().with(extra).with(lines).with(filter).try_init();
}

/// Resolves on SIGINT or SIGTERM (on SIGINT only, when SIGTERM cannot be listened for).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        tracing::error!("cannot listen for SIGTERM; stopping on SIGINT only");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
}
