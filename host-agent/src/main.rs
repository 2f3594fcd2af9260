//! `host-agent`: thin shell over the library.
#![forbid(unsafe_code)]

use clap::Parser;

/// The per-host agent of the cloud (joining and serving arrive with issue #4).
#[derive(Debug, Parser)]
#[command(version = host_agent::VERSION)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("the host agent cannot join a fleet yet (issue #4); only --version and --help work")
}
