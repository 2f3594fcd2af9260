//! Resume next to a cold start of the same instance, as a user sees them: from `instance start
//! --wait` to the guest answering `instance ssh`. Prints JSON lines (median, min, max in ms).
//! Figures only, no assertions.
//!
//! ```text
//! cargo build --workspace --bins && cargo run -p cloud-tests --example suspend-bench [-- RUNS]
//! ```
//!
//! Needs root (network namespaces), QEMU and the `minimal` image, like the end-to-end tests: a
//! control plane and one host agent on a test network, one `minimal` instance (256 MiB, 1 vCPU).
//! Each run stops the instance and times a start (a cold boot from its disk), then suspends it
//! and times a start (a resume of its saved memory on the same host). `BENCH_KEEP_LOGS=DIR`
//! copies the control plane's and the agent's logs there.

use std::io::Write;
use std::time::{Duration, Instant};

use cloud_tests::cloud::OneHostCloud;
use cloud_tests::guest::minimal_image;
use serde_json::json;

/// One start, timed until SSH answers.
async fn start_to_ssh(cloud: &OneHostCloud) -> Duration {
    let started = Instant::now();
    cloud.lifecycle("instance start web-1 --wait", "running").await;
    cloud.ssh("web-1", "true").await;
    started.elapsed()
}

fn line(what: &str, mut times: Vec<Duration>) -> serde_json::Value {
    times.sort();
    let ms = |d: &Duration| (d.as_secs_f64() * 1000.0).round();
    json!({
        "bench": what,
        "runs": times.len(),
        "median_ms": times.get(times.len() / 2).map(ms),
        "min_ms": times.first().map(ms),
        "max_ms": times.last().map(ms),
    })
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let cloud = OneHostCloud::start().await;
    cloud.cli.create_minimal_image(&minimal_image()).await;
    cloud.lifecycle("instance create web-1 --image minimal --memory 256MiB --ssh-key alice --wait", "running").await;
    let (mut cold, mut resume) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        cloud.cli.line("instance stop web-1 --wait").await.ok("stop");
        cold.push(start_to_ssh(&cloud).await);
        cloud.cli.line("instance suspend web-1 --wait").await.ok("suspend");
        resume.push(start_to_ssh(&cloud).await);
    }
    // BENCH_KEEP_LOGS=DIR keeps the services' logs (timestamps of every step) for a closer look.
    if let Some(keep) = std::env::var_os("BENCH_KEEP_LOGS") {
        for name in ["control-plane.log", "agent-1.log"] {
            let _ = std::fs::copy(cloud.dir.path().join(name), std::path::Path::new(&keep).join(name));
        }
    }
    let mut out = std::io::stdout().lock();
    for value in [line("cold_start_to_ssh", cold), line("resume_to_ssh", resume)] {
        let _ = writeln!(out, "{value}");
    }
}
