//! `cloudctl`: thin shell over the library.
#![forbid(unsafe_code)]

use clap::Parser;

/// Command line for the cloud (commands arrive with issue #6).
#[derive(Debug, Parser)]
#[command(version = cloudctl::VERSION)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("cloudctl has no commands yet (issue #6); only --version and --help work")
}
