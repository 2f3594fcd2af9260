//! Placement benchmark: simulated hosts in a fresh database, then placements from one and from
//! two concurrent "replicas" (a connection pool each, as two control-plane processes would have),
//! for both strategies. Prints one JSON line per run: placements/s and p50/p99 latency of one
//! placement transaction (`BEGIN; place_instance; COMMIT`). Figures only, no assertions.
//!
//! ```text
//! cargo run --release -p control-plane --example placement-bench -- [--hosts 1000] [--placements 2000] [--workers 8] [--preplaced 0]
//! ```
//!
//! `--preplaced N` puts N more instances on the hosts before any run (spread evenly, their
//! capacity reserved), as a fleet that is already busy; the issue's scale is `--hosts 10000
//! --preplaced 100000`. After each run the reservations are checked against the instances
//! placed: `overcommitted_hosts` (more placed than a host holds) and `inconsistent_hosts` (a
//! reservation that is not the sum of its instances) must both be 0.
//!
//! The database is created on `CLOUD_TEST_DATABASE_URL`'s cluster when set, else on a private
//! throwaway cluster (fsync off) started by this process. Between runs every reservation is
//! cleared, so each run places the same instances onto an empty fleet.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use control_plane::ids::{InstanceId, ProjectId};
use control_plane::scheduler::Strategy;
use control_plane::scheduler::reserve::{PlacementError, place_instance};
use control_plane::testing::{TestDatabase, percentile_ms};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

#[derive(Debug, Parser)]
struct Args {
    /// Simulated hosts (64 to 128 vCPUs, 256 GiB to 1 TiB memory, 4 TiB disk each).
    #[arg(long, default_value_t = 1000)]
    hosts: u32,
    /// Placements per run.
    #[arg(long, default_value_t = 2000)]
    placements: u32,
    /// Concurrent placement tasks, and connections, per replica.
    #[arg(long, default_value_t = 8)]
    workers: u32,
    /// Instances already placed before the runs (spread evenly over the hosts).
    #[arg(long, default_value_t = 0)]
    preplaced: u32,
}

/// What one run measured.
#[derive(Debug, Default)]
struct Run {
    latencies: Vec<Duration>,
    placed: usize,
    refused: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ =
        tracing_subscriber::fmt().with_env_filter("warn,placement_bench=info").with_writer(std::io::stderr).try_init();
    let db = TestDatabase::create().await.context("cannot create the benchmark database")?;
    db.migrated_pool().await.context("cannot migrate the benchmark database")?.close().await;
    let setup = PgPoolOptions::new().max_connections(2).connect_with(db.options()).await?;
    insert_hosts(&setup, args.hosts).await?;
    if args.preplaced > 0 {
        insert_instances(&setup, "pre", args.preplaced).await?;
        preplace(&setup).await?;
    }
    let instances = Arc::new(insert_instances(&setup, "bench", args.placements).await?);
    tracing::info!(database = %db.name, hosts = args.hosts, preplaced = args.preplaced, instances = instances.len(), "fleet ready");

    let mut out = std::io::stdout().lock();
    for strategy in [Strategy::Spread, Strategy::Binpack] {
        for replicas in [1, 2] {
            clear_reservations(&setup).await?;
            let mut pools = Vec::new();
            for _ in 0..replicas {
                pools.push(PgPoolOptions::new().max_connections(args.workers).connect_with(db.options()).await?);
            }
            let started = Instant::now();
            let run = place_all(&pools, &instances, args.workers, strategy).await?;
            let elapsed = started.elapsed();
            for pool in pools {
                pool.close().await;
            }
            let (overcommitted, inconsistent) = check_reservations(&setup).await?;
            let line = serde_json::json!({
                "bench": "placement",
                "strategy": strategy.as_str(),
                "replicas": replicas,
                "workers_per_replica": args.workers,
                "hosts": args.hosts,
                "preplaced": args.preplaced,
                "placements": instances.len(),
                "placed": run.placed,
                "refused": run.refused,
                "seconds": round3(elapsed.as_secs_f64()),
                "placements_per_s": round3(instances.len() as f64 / elapsed.as_secs_f64()),
                "p50_ms": round3(percentile_ms(&run.latencies, 0.50)),
                "p99_ms": round3(percentile_ms(&run.latencies, 0.99)),
                "overcommitted_hosts": overcommitted,
                "inconsistent_hosts": inconsistent,
            });
            writeln!(out, "{line}")?;
        }
    }
    setup.close().await;
    Ok(())
}

/// Every instance placed once, by `workers` tasks per pool pulling from one shared queue.
async fn place_all(
    pools: &[PgPool],
    instances: &Arc<Vec<InstanceId>>,
    workers: u32,
    strategy: Strategy,
) -> anyhow::Result<Run> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for pool in pools {
        for _ in 0..workers {
            let (pool, instances, next) = (pool.clone(), instances.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut run = Run::default();
                while let Some(&instance) = instances.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let started = Instant::now();
                    let mut tx = pool.begin().await?;
                    match place_instance(&mut tx, instance, strategy).await {
                        Ok(_) => {
                            tx.commit().await?;
                            run.placed += 1;
                        }
                        Err(PlacementError::NoHostFits(_)) => run.refused += 1,
                        Err(err) => return Err(anyhow::Error::new(err)),
                    }
                    run.latencies.push(started.elapsed());
                }
                anyhow::Ok(run)
            }));
        }
    }
    let mut total = Run::default();
    for task in tasks {
        let run = task.await??;
        total.latencies.extend(run.latencies);
        total.placed += run.placed;
        total.refused += run.refused;
    }
    Ok(total)
}

async fn insert_hosts(pool: &PgPool, hosts: u32) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO hosts (id, hostname, agent_endpoint, state, accelerator, total_vcpus, total_memory_bytes,
                            total_disk_bytes, instance_subnet)
         SELECT gen_random_uuid(), 'sim-' || n, 'https://192.0.2.1:7443', 'active', 'simulated',
                64 * (1 + n % 2), (256::bigint << 30) * (1 + n % 4), 4::bigint << 40,
                ('10.' || (n / 256) || '.' || (n % 256) || '.0/24')::cidr
         FROM generate_series(0, $1 - 1) AS n",
    )
    .bind(i32::try_from(hosts).context("too many hosts")?)
    .execute(pool)
    .await
    .context("cannot insert the hosts")?;
    Ok(())
}

/// A project named `name`, an image and `count` instances of mixed sizes; one in ten is in one
/// of 50 anti-affinity groups.
async fn insert_instances(pool: &PgPool, name: &str, count: u32) -> anyhow::Result<Vec<InstanceId>> {
    let project = ProjectId::new();
    sqlx::query("INSERT INTO projects (id, name) VALUES ($1, $2)").bind(project).bind(name).execute(pool).await?;
    let image = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO images (id, project_id, name, state, boot_mode, firmware) VALUES ($1, $2, 'bench', 'available', 'firmware', 'uefi')")
        .bind(image)
        .bind(project)
        .execute(pool)
        .await?;
    let ids: Vec<InstanceId> = sqlx::query_scalar(
        "INSERT INTO instances (id, project_id, name, image_id, vcpus, memory_bytes, disk_bytes, anti_affinity_group)
         SELECT gen_random_uuid(), $1, 'vm-' || n, $2, 1 + n % 4, (1::bigint << 30) * (1 + n % 8),
                (10::bigint << 30) * (1 + n % 5), CASE WHEN n % 10 = 0 THEN 'group-' || (n / 10) % 50 END
         FROM generate_series(0, $3 - 1) AS n
         RETURNING id",
    )
    .bind(project)
    .bind(image)
    .bind(i32::try_from(count).context("too many instances")?)
    .fetch_all(pool)
    .await
    .context("cannot insert the instances")?;
    Ok(ids)
}

/// Places the `pre` project's instances round-robin over the hosts and reserves their capacity.
async fn preplace(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "WITH h AS (SELECT array_agg(id ORDER BY id) AS ids FROM hosts),
              i AS (SELECT i.id, row_number() OVER (ORDER BY i.id) - 1 AS k FROM instances i
                    JOIN projects p ON p.id = i.project_id WHERE p.name = 'pre')
         UPDATE instances SET host_id = h.ids[i.k % cardinality(h.ids) + 1] FROM i, h WHERE instances.id = i.id",
    )
    .execute(pool)
    .await
    .context("cannot place the preplaced instances")?;
    reserve_from_instances(pool).await
}

/// Sets every host's reservations to the sum of the instances placed on it.
async fn reserve_from_instances(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(&format!(
        "UPDATE hosts h SET reserved_vcpus = s.vcpus, reserved_memory_bytes = s.memory,
                            reserved_disk_bytes = s.disk, reserved_addresses = s.n
         FROM ({PLACED}) s WHERE s.id = h.id"
    ))
    .execute(pool)
    .await
    .context("cannot set the reservations")?;
    sqlx::query("VACUUM ANALYZE hosts, instances").execute(pool).await?;
    Ok(())
}

/// Per host: the sums of the instances placed on it.
const PLACED: &str =
    "SELECT h.id, coalesce(sum(i.vcpus), 0)::int AS vcpus, coalesce(sum(i.memory_bytes), 0)::bigint AS memory,
           coalesce(sum(i.disk_bytes), 0)::bigint AS disk, count(i.id)::int AS n
    FROM hosts h LEFT JOIN instances i ON i.host_id = h.id AND i.deleted_at IS NULL GROUP BY h.id";

/// (hosts holding more than their capacity, hosts whose reservation is not what they hold).
async fn check_reservations(pool: &PgPool) -> anyhow::Result<(i64, i64)> {
    let counts: (i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*) FILTER (WHERE s.vcpus > h.total_vcpus OR s.memory > h.total_memory_bytes
                                   OR s.disk > h.total_disk_bytes),
                count(*) FILTER (WHERE s.vcpus <> h.reserved_vcpus OR s.memory <> h.reserved_memory_bytes
                                   OR s.disk <> h.reserved_disk_bytes OR s.n <> h.reserved_addresses)
         FROM hosts h JOIN ({PLACED}) s ON s.id = h.id"
    ))
    .fetch_one(pool)
    .await
    .context("cannot check the reservations")?;
    Ok(counts)
}

/// Takes the benchmark's own instances off their hosts; the preplaced ones stay.
async fn clear_reservations(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE instances SET host_id = NULL WHERE host_id IS NOT NULL
           AND project_id = (SELECT id FROM projects WHERE name = 'bench')",
    )
    .execute(pool)
    .await?;
    reserve_from_instances(pool).await
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
