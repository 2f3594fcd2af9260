//! `cloudctl`: thin shell over the library and the commands of `cmd/`: parses the command
//! line, runs it on a small tokio runtime, and turns the outcome into one line on stderr and
//! the documented exit code (0 ok, 1 API/usage error, 2 not found, 3 timeout, 4 authentication).
//! Never a panic message or a backtrace; a closed stdout ends the run quietly.
#![forbid(unsafe_code)]

mod cmd;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

/// One line on stderr: `cloudctl: error: <message>`.
fn error_line(message: &str) {
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let _ = writeln!(std::io::stderr(), "cloudctl: error: {one_line}");
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".to_owned());
        error_line(&format!("internal error: {what} (please report it)"));
    }));
    match std::panic::catch_unwind(run) {
        Ok(code) => code,
        Err(_) => ExitCode::from(1),
    }
}

fn run() -> ExitCode {
    let cli = match cmd::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            error_line(&format!("cannot start the async runtime: {err}"));
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(cmd::run(cli));
    // Do not wait for a thread blocked reading stdin (console, tunnel).
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = cmd::exit_code(&err);
            if code != 0 {
                error_line(&format!("{err:#}"));
            }
            ExitCode::from(code)
        }
    }
}

/// `--help` and `--version` print to stdout (exit 0); anything else is one line (exit 1).
fn usage_error(err: &clap::Error) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let text = err.render().to_string();
            match cloudctl::output::write_stdout(&text) {
                Ok(()) | Err(cloudctl::output::OutputError::Closed) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(1),
            }
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = std::io::stderr().write_all(err.render().to_string().as_bytes());
            ExitCode::from(1)
        }
        _ => {
            let text = err.render().to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            error_line(&format!("{first} (see cloudctl --help)"));
            ExitCode::from(1)
        }
    }
}
