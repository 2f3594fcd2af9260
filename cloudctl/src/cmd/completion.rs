//! `cloudctl completion bash|zsh|fish`: a completion script on stdout.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// `completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell: bash, zsh or fish.
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
}

/// Prints the script.
pub fn run(args: &CompletionArgs) -> anyhow::Result<()> {
    let shell = match args.shell.as_str() {
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        _ => Shell::Bash,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut super::Cli::command(), "cloudctl", &mut script);
    cloudctl::output::write_stdout_bytes(&script)?;
    Ok(())
}
