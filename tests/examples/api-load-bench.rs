//! Load benchmark of the API: `POST /v1/projects/default/instances` against a fleet of simulated
//! hosts served by two control-plane replicas sharing one database. Prints JSON lines: latency
//! (p50/p99) and throughput of the POST (after `--warmup` creates, measured apart), then how fast
//! the accepted creates were placed and reached `running`, then reads under the same load (every
//! page of the instance list, first pages and single gets with `--concurrency` in flight), at the
//! creates' count and again at `--list-instances` (the rest inserted directly). Figures only, no
//! assertions.
//!
//! ```text
//! cargo run --release -p cloud-tests --example api-load-bench -- [--hosts 1000] [--creates 2000] [--concurrency 32] [--warmup 256] [--list-instances 100000]
//! ```
//!
//! Everything runs on this machine and in this process except PostgreSQL: the two replicas
//! (`control_plane::serve`, each with its own pool, executor and listeners on 127.0.0.1), and one
//! host agent per simulated host (`host_agent::agent::run` with the simulated driver, each joined
//! with its own token and serving mutual-TLS gRPC on its own loopback address 127.1.x.y:7444).
//! Agents report every 5 s (`--report-interval-ms`), so 1,000 hosts add 200 reports/s. The database is created
//! on `CLOUD_TEST_DATABASE_URL`'s cluster when set, else on a private throwaway cluster.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use control_plane::testing::{TestDatabase, percentile_ms};
use futures::StreamExt;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// Simulated hosts (64 vCPUs, 256 GiB memory, 2 TiB disk each).
    #[arg(long, default_value_t = 1000)]
    hosts: u32,
    /// Instance creates (1 vCPU, 512 MiB each).
    #[arg(long, default_value_t = 2000)]
    creates: u32,
    /// Creates in flight at once, spread over both replicas.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How often each simulated agent reports (renews its lease), in milliseconds.
    #[arg(long, default_value_t = 5000)]
    report_interval_ms: u64,
    /// After the creates, read again once the project holds this many instances (the rest
    /// inserted directly, stopped and unplaced); 0: only at the creates' count.
    #[arg(long, default_value_t = 0)]
    list_instances: u32,
    /// Each replica's `operations.max_connections` (the executor's database connections).
    #[arg(long)]
    executor_connections: Option<u32>,
    /// Creates sent first, the same way, and left out of the figures (0: none): the replicas,
    /// their database connections and the client's HTTP connections meet their first requests
    /// here, as those of a control plane that has served a while have. Each of the 32 pooled
    /// API connections needs about six creates before its statements stop being prepared and
    /// planned afresh (PostgreSQL plans a prepared statement anew for its first five runs), so
    /// the default sends eight for each.
    #[arg(long, default_value_t = 256)]
    warmup: u32,
}

type Shutdown = tokio::sync::watch::Receiver<bool>;

async fn stopped(mut rx: Shutdown) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts a control-plane replica in this process; returns its API URL.
async fn replica(
    db_url: &str,
    data_dir: &Path,
    executor_connections: Option<u32>,
    stop: Shutdown,
    http: &reqwest::Client,
) -> anyhow::Result<String> {
    let mut config = control_plane::config::Config {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?)),
        data_dir: data_dir.to_path_buf(),
        ..control_plane::config::Config::default()
    };
    config.database.url = Some(db_url.to_owned());
    config.database.max_connections = 16;
    // One token drives the whole load: the per-token rate limit is not what is measured.
    config.limits.requests_per_second = 0;
    // Every create lands in one project: no limit on its instance count (the vCPU, memory and
    // disk quotas stay, and are checked on every create).
    config.quotas.instances = 0;
    if let Some(n) = executor_connections {
        config.operations.max_connections = n;
    }
    config.fleet.grpc_listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    config.fleet.instance_subnet_pool = "10.0.0.0/8".parse().context("subnet pool")?;
    config.fleet.lease_secs = 120;
    config.validate()?;
    let api = format!("http://{}", config.listen);
    tokio::spawn(async move {
        if let Err(err) = control_plane::serve(config, stopped(stop)).await {
            tracing::error!(error = %control_plane::http::error::ErrorChain(&err), "control plane failed");
        }
    });
    for _ in 0..600 {
        if http.get(format!("{api}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            return Ok(api);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the control plane at {api} did not become healthy")
}

async fn call(http: &reqwest::Client, token: &str, method: reqwest::Method, url: &str, body: Value) -> (u16, Value) {
    match http.request(method, url).bearer_auth(token).json(&body).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }
        Err(err) => (0, json!(err.to_string())),
    }
}

/// The `cloud_agent_channels` gauge of the replica at `api` (0 when it cannot be read).
async fn agent_channels(http: &reqwest::Client, api: &str) -> f64 {
    let Ok(resp) = http.get(format!("{api}/metrics")).send().await else { return 0.0 };
    let text = resp.text().await.unwrap_or_default();
    cloud_tests::metric_value(&text, "cloud_agent_channels").unwrap_or(0.0)
}

/// Joins simulated host `i` and runs its agent until `stop`.
async fn agent(
    i: u32,
    api: &str,
    token: &str,
    root: &Path,
    report_interval_ms: u64,
    stop: Shutdown,
    http: &reqwest::Client,
) -> anyhow::Result<()> {
    let (_, created) =
        call(http, token, reqwest::Method::POST, &format!("{api}/v1/hosts/join-tokens"), json!({})).await;
    let join_token = created["token"].as_str().context("no join token")?.to_owned();
    let mut config = host_agent::config::AgentConfig {
        state_dir: root.join(format!("host-{i}")),
        listen: SocketAddr::from((Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8), 7444)),
        report_interval_ms,
        driver: host_agent::config::Driver::Simulated,
        ..host_agent::config::AgentConfig::default()
    };
    config.capacity.vcpus = Some(64);
    config.capacity.memory_mib = Some(256 << 10);
    config.capacity.disk_gib = Some(2048);
    let capacity = host_agent::capacity::total(&config.capacity, &config.state_dir);
    host_agent::join::join(&config, api, &join_token, capacity, "simulated").await?;
    tokio::spawn(async move {
        if let Err(err) = host_agent::agent::run(config, stopped(stop)).await {
            tracing::error!(agent = i, error = %host_agent::error_chain(&err), "agent failed");
        }
    });
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ =
        tracing_subscriber::fmt().with_env_filter("warn,api_load_bench=info").with_writer(std::io::stderr).try_init();
    let db = TestDatabase::create().await.context("cannot create the benchmark database")?;
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("control-plane");
    std::fs::create_dir_all(&data_dir)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).timeout(Duration::from_secs(120)).build()?;

    // Replica A migrates and bootstraps; B then shares its database and fleet CA.
    let a = replica(&db.url, &data_dir, args.executor_connections, stop_rx.clone(), &http).await?;
    let b = replica(&db.url, &data_dir, args.executor_connections, stop_rx.clone(), &http).await?;
    let token = std::fs::read_to_string(data_dir.join("admin-token"))?.trim().to_owned();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, vec![0u8; 4096])?;
    let (status, image) = call(
        &http,
        &token,
        reqwest::Method::POST,
        &format!("{a}/v1/projects/default/images"),
        json!({"name": "sim", "boot_mode": "direct_kernel", "kernel_path": kernel, "kernel_cmdline": "console=ttyS0"}),
    )
    .await;
    if status != 201 {
        bail!("cannot register the image: {status} {image}");
    }

    let joining = Instant::now();
    let agents_dir = dir.path().join("agents");
    let interval = args.report_interval_ms;
    let joined: Vec<anyhow::Result<()>> = futures::stream::iter(0..args.hosts)
        .map(|i| {
            let (a, token, dir, stop, http) =
                (a.clone(), token.clone(), agents_dir.clone(), stop_rx.clone(), http.clone());
            async move { agent(i, &a, &token, &dir, interval, stop, &http).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    if let Some(Err(err)) = joined.into_iter().find(Result::is_err) {
        return Err(err.context("a simulated host could not join"));
    }
    let pool = sqlx::PgPool::connect(&db.url).await?;
    loop {
        let active: i64 =
            sqlx::query_scalar("SELECT count(*) FROM hosts WHERE state = 'active'").fetch_one(&pool).await?;
        if active == i64::from(args.hosts) {
            break;
        }
        if joining.elapsed() > Duration::from_secs(600) {
            bail!("only {active} of {} hosts became active", args.hosts);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tracing::info!(hosts = args.hosts, seconds = joining.elapsed().as_secs_f64(), "simulated hosts joined and active");

    // A control plane that has run a while holds a connection to each of its agents
    // (`fleet.keep_agent_connections`); measure that, not the first minute's handshakes.
    let dialing = Instant::now();
    for api in [&a, &b] {
        loop {
            let held = agent_channels(&http, api).await;
            if held >= f64::from(args.hosts) {
                break;
            }
            if dialing.elapsed() > Duration::from_secs(600) {
                bail!("{api} holds channels to only {held} of {} agents", args.hosts);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    tracing::info!(seconds = dialing.elapsed().as_secs_f64(), "both replicas connected to every agent");

    // The load: every create once, alternating replicas, `concurrency` in flight; the warm-up's
    // creates first, measured apart.
    let replicas = Arc::new([a.clone(), b.clone()]);
    let load = Load { http: &http, token: &token, replicas: &replicas, concurrency: args.concurrency };
    let (warmup, _) = load.creates("warm", args.warmup).await;
    let started = Instant::now();
    let (latencies, accepted) = load.creates("vm", args.creates).await;
    let posted = started.elapsed();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        json!({
            "bench": "post_instances", "hosts": args.hosts, "replicas": 2, "creates": args.creates,
            "concurrency": args.concurrency, "accepted": accepted,
            "p50_ms": percentile_ms(&latencies, 0.50), "p99_ms": percentile_ms(&latencies, 0.99),
            "requests_per_s": f64::from(args.creates) / posted.as_secs_f64(),
            "warmup_creates": args.warmup, "warmup_p99_ms": percentile_ms(&warmup, 0.99),
        })
    )?;
    out.flush()?;

    // Until every accepted create has finished: placements per second and creates per second.
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM operations WHERE kind = 'instance_create' AND state NOT IN ('succeeded', 'failed')",
        )
        .fetch_one(&pool)
        .await?;
        if open == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("{open} creates still unfinished after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let finished = started.elapsed();
    let (placed, place_secs): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), EXTRACT(EPOCH FROM max(finished_at) - min(started_at))::float8
         FROM operation_steps WHERE name = 'place' AND state = 'done'",
    )
    .fetch_one(&pool)
    .await?;
    let (succeeded, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE o.state = 'succeeded'), count(*) FILTER (WHERE o.state = 'failed')
         FROM operations o JOIN instances i ON i.id = o.target_id
         WHERE o.kind = 'instance_create' AND i.name LIKE 'vm-%'",
    )
    .fetch_one(&pool)
    .await?;
    let overcommitted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM hosts WHERE reserved_vcpus > total_vcpus OR reserved_memory_bytes > total_memory_bytes",
    )
    .fetch_one(&pool)
    .await?;
    writeln!(
        out,
        "{}",
        json!({
            "bench": "create_to_running", "hosts": args.hosts, "replicas": 2,
            "succeeded": succeeded, "failed": failed, "overcommitted_hosts": overcommitted,
            "placements_per_s": place_secs.map(|s| placed as f64 / s.max(1e-9)),
            "running_per_s": succeeded as f64 / finished.as_secs_f64(),
            "wall_s": finished.as_secs_f64(),
        })
    )?;
    out.flush()?;

    // Reads under the same load (the hosts keep reporting): at the creates' count, then at
    // `--list-instances`.
    let created = args.creates + args.warmup;
    writeln!(out, "{}", load.measure(i64::from(created)).await?)?;
    out.flush()?;
    if args.list_instances > created {
        sqlx::query(
            "INSERT INTO instances (id, project_id, name, image_id, vcpus, memory_bytes, disk_bytes, state)
             SELECT gen_random_uuid(), i.project_id, 'bulk-' || n, i.image_id, 1, 512 << 20, 1 << 30, 'stopped'
             FROM (SELECT project_id, image_id FROM instances LIMIT 1) i, generate_series(1, $1) AS n",
        )
        .bind(i64::from(args.list_instances - created))
        .execute(&pool)
        .await?;
        sqlx::query("VACUUM ANALYZE instances").execute(&pool).await?;
        writeln!(out, "{}", load.measure(i64::from(args.list_instances)).await?)?;
    }
    pool.close().await;
    let _ = stop_tx.send(true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// The API's client: creates, and reads of the instance list and of single instances,
/// alternating replicas, `concurrency` in flight.
struct Load<'a> {
    http: &'a reqwest::Client,
    token: &'a str,
    replicas: &'a [String; 2],
    concurrency: usize,
}

impl Load<'_> {
    /// Creates `count` instances named `<prefix>-<n>`: each request's latency, and how many were
    /// accepted.
    async fn creates(&self, prefix: &str, count: u32) -> (Vec<Duration>, usize) {
        let results: Vec<(u16, Duration)> = futures::stream::iter(0..count)
            .map(|i| async move {
                let url = format!("{}/v1/projects/default/instances", self.replicas[i as usize % 2]);
                let body = json!({"name": format!("{prefix}-{i}"), "image": "sim", "vcpus": 1, "memory_mib": 512});
                let t = Instant::now();
                let (status, _) = call(self.http, self.token, reqwest::Method::POST, &url, body).await;
                (status, t.elapsed())
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let accepted = results.iter().filter(|(s, _)| *s == 202).count();
        (results.into_iter().map(|(_, d)| d).collect(), accepted)
    }

    /// Every page of the list in turn (100 a page), then 1,000 first pages and 1,000 gets with
    /// `concurrency` in flight: p50/p99 of each, as one JSON line.
    async fn measure(&self, instances: i64) -> anyhow::Result<Value> {
        let list = |i: usize| format!("{}/v1/projects/default/instances?limit=100", self.replicas[i % 2]);
        let mut pages = Vec::new();
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("{}&cursor={c}", list(pages.len())),
                None => list(pages.len()),
            };
            let t = Instant::now();
            let (status, page) = call(self.http, self.token, reqwest::Method::GET, &url, Value::Null).await;
            pages.push(t.elapsed());
            if status != 200 {
                bail!("list: {status} {page}");
            }
            let items = page["items"].as_array().context("no items")?;
            names.extend(items.iter().filter_map(|i| i["name"].as_str().map(str::to_owned)));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        if i64::try_from(names.len())? < instances {
            bail!("the list walked {} instances of {instances}", names.len());
        }
        let timed = |urls: Vec<String>| async move {
            let latencies: Vec<Duration> = futures::stream::iter(urls)
                .map(|url| async move {
                    let t = Instant::now();
                    let (status, body) = call(self.http, self.token, reqwest::Method::GET, &url, Value::Null).await;
                    anyhow::ensure!(status == 200, "{url}: {status} {body}");
                    Ok(t.elapsed())
                })
                .buffer_unordered(self.concurrency)
                .collect::<Vec<anyhow::Result<Duration>>>()
                .await
                .into_iter()
                .collect::<anyhow::Result<_>>()?;
            anyhow::Ok(latencies)
        };
        let first = timed((0..1000).map(list).collect()).await?;
        let step = (names.len() / 1000).max(1);
        let gets = (0..1000)
            .map(|i| {
                format!("{}/v1/projects/default/instances/{}", self.replicas[i % 2], names[(i * step) % names.len()])
            })
            .collect();
        let gets = timed(gets).await?;
        Ok(json!({
            "bench": "reads", "instances": instances, "concurrency": self.concurrency,
            "list_pages": pages.len(),
            "list_page_p50_ms": percentile_ms(&pages, 0.50), "list_page_p99_ms": percentile_ms(&pages, 0.99),
            "list_first_page_p50_ms": percentile_ms(&first, 0.50), "list_first_page_p99_ms": percentile_ms(&first, 0.99),
            "get_p50_ms": percentile_ms(&gets, 0.50), "get_p99_ms": percentile_ms(&gets, 0.99),
        }))
    }
}
