//! A launch as a customer sees it, next to a bare QEMU launch of the same VM in the same run.
//! Prints JSON lines (ms); figures only, no assertions.
//!
//! ```text
//! cargo build --workspace --bins && cargo run -p cloud-tests --example launch-bench [-- RUNS]
//! ```
//!
//! Each run (default 3): `instance create --wait` of a `minimal` instance (256 MiB, 1 vCPU)
//! until it is `running` and ready, then `instance ssh -- true` through the API; the operation's
//! recorded steps give the time of each; then a bare QEMU boot of the same kernel, initrd and
//! network config (`vmm::bare`: a hand-written command line, no API, agent, confinement or
//! tunnel) until SSH answers. The last line gives the medians and the ratio of the two.
//! Needs root (network namespaces), QEMU and the `minimal` image, like the end-to-end tests.

use std::io::Write;
use std::time::{Duration, Instant};

use cloud_tests::cloud::OneHostCloud;
use cloud_tests::guest::minimal_image;
use serde_json::{Value, json};

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(3).max(1);
    let image = minimal_image();
    let cloud = OneHostCloud::start().await;
    cloud.cli.create_minimal_image(&image).await;
    let pool = sqlx::PgPool::connect(&cloud.cp.db_url).await?;
    let bare_dir = tempfile::tempdir()?;
    let net = vmm::bare::BareNet::create("lbench")?;
    let guest = vmm::bare::BareGuest::prepare(&image.dir, bare_dir.path()).await?;
    let mut out = std::io::stdout().lock();
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let name = format!("vm-{run}");
        let t0 = Instant::now();
        let line = format!("instance create {name} --image minimal --memory 256MiB --ssh-key alice --wait");
        let created = cloud.cli.line(&line).await.ok(&line);
        let ready = t0.elapsed();
        cloud.ssh(&name, "true").await;
        let ssh = t0.elapsed();
        let op = created.out["operation"]["id"].as_str().unwrap_or_default().parse::<uuid::Uuid>()?;
        let steps: Vec<(String, f64)> = sqlx::query_as(
            "SELECT name, round(EXTRACT(EPOCH FROM finished_at - started_at)::numeric * 1000)::float8
             FROM operation_steps WHERE operation_id = $1 ORDER BY idx",
        )
        .bind(op)
        .fetch_all(&pool)
        .await?;
        let (running, guest_ready): (f64, f64) = sqlx::query_as(
            "SELECT round(EXTRACT(EPOCH FROM o.finished_at - o.created_at)::numeric * 1000)::float8,
                    round(EXTRACT(EPOCH FROM i.ready_at - o.created_at)::numeric * 1000)::float8
             FROM operations o JOIN instances i ON i.id = o.target_id WHERE o.id = $1",
        )
        .bind(op)
        .fetch_one(&pool)
        .await?;
        // Each boots alone: ours is gone before the bare one starts.
        let line = format!("instance delete {name} --wait");
        cloud.cli.line(&line).await.ok(&line);
        let boot = vmm::bare::boot(&guest, &net, Duration::from_secs(120)).await?;
        let steps: serde_json::Map<String, Value> = steps.into_iter().map(|(n, t)| (n, json!(t))).collect();
        writeln!(
            out,
            "{}",
            json!({
                "bench": "launch", "run": run + 1,
                "create_to_running_ms": running, "create_to_ready_ms": guest_ready,
                "steps_ms": steps,
                "cloudctl_create_wait_ms": ms(ready), "cloudctl_create_to_ssh_ms": ms(ssh),
                "bare_start_to_console_ms": ms(boot.first_console_line), "bare_start_to_ssh_ms": ms(boot.ssh),
            })
        )?;
        out.flush()?;
        ours.push(ms(ssh));
        bare.push(ms(boot.ssh));
    }
    let (ours, bare) = (median(ours), median(bare));
    writeln!(
        out,
        "{}",
        json!({
            "bench": "launch_vs_bare", "runs": runs,
            "create_to_ssh_median_ms": ours, "bare_start_to_ssh_median_ms": bare,
            "ratio_ours_over_bare": (ours / bare * 1000.0).round() / 1000.0,
        })
    )?;
    pool.close().await;
    Ok(())
}
