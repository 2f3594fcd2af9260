//! `cargo bench -p vmm --bench vmm-bench [-- RUNS]`: boot and snapshot figures for the
//! `minimal` guest (256 MiB, 1 vCPU), printed as JSON lines with median/min/max over RUNS
//! (default 5) runs:
//!
//! - `start_to_qmp_ready_ms`: `Vm::start` until the QMP session is negotiated
//! - `start_to_first_console_line_ms`: until `/init` prints `cloud-minimal: init start`
//! - `start_to_ssh_ms`: until `ssh root@guest true` succeeds with the injected key
//! - `snapshot_save_ms`, `snapshot_restore_ms`, `restore_to_ssh_ms`: full snapshot
//! - `vmm_rss_kib`: QEMU's resident set once the guest is ready
//! - the same boot with a bare hand-written QEMU command line (`bare_*`, as root, no sandbox,
//!   no cgroup) and the ratios ours/bare: the overhead of our launch path, confinement included
//!   (ours runs as a user of its own, under the full sandbox, in a memory cgroup of 448 MiB).
//!
//! Needs root, QEMU, openssh-client and the image from `deploy/images/build-minimal.sh`
//! (`CLOUD_MINIMAL_IMAGE` overrides its directory). Runs in its own network namespace.

// The figures on stdout are this program's output.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use vmm::bare::{self, BareGuest, BareNet};
use vmm::console::Console;
use vmm::snapshot::{self, RestoreParams};
use vmm::spec::{Accel, BootSpec, NicSpec};
use vmm::{InstanceDir, LaunchOptions, Vm, VmSpec};

const TIMEOUT: Duration = Duration::from_secs(120);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn stats(name: &str, unit: &str, mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let median = if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    let line = serde_json::json!({
        "metric": name,
        "unit": unit,
        "runs": v.len(),
        "median": (median * 10.0).round() / 10.0,
        "min": v.first().map(|x| (x * 10.0).round() / 10.0),
        "max": v.last().map(|x| (x * 10.0).round() / 10.0),
    });
    emit(&line);
    median
}

#[derive(Default)]
struct Samples {
    qmp: Vec<f64>,
    console: Vec<f64>,
    ssh: Vec<f64>,
    rss: Vec<f64>,
    save: Vec<f64>,
    restore: Vec<f64>,
    restore_ssh: Vec<f64>,
    bare_console: Vec<f64>,
    bare_ssh: Vec<f64>,
    bare_rss: Vec<f64>,
}

struct Setup {
    tmp: PathBuf,
    spec: VmSpec,
    guest: BareGuest,
}

async fn setup(net: &BareNet, tmp: &Path) -> Result<Setup> {
    let image = PathBuf::from(
        std::env::var("CLOUD_MINIMAL_IMAGE").unwrap_or_else(|_| "/var/cache/cloud/images/minimal".into()),
    );
    let guest = BareGuest::prepare(&image, tmp).await?;
    let spec = VmSpec {
        name: "bench".into(),
        vcpus: 1,
        memory_mib: 256,
        boot: BootSpec::DirectKernel {
            kernel: guest.kernel.clone(),
            initrd: Some(guest.initrd.clone()),
            cmdline: guest.cmdline.clone(),
        },
        disks: vec![],
        nics: vec![NicSpec { tap: net.tap.clone(), mac: guest.mac }],
        config_drive: Some(guest.cidata.clone()),
        accel: Accel::Auto,
        netns: Some(net.netns.clone()),
        confinement: None,
        guest_agent: false,
    };
    Ok(Setup { tmp: tmp.to_owned(), spec, guest })
}

async fn run_ours(s: &Setup, net: &BareNet, run: usize, out: &mut Samples) -> Result<()> {
    let dir = InstanceDir::new(s.tmp.join(format!("vm-{run}")));
    let opts = LaunchOptions { start_paused: true, ..LaunchOptions::default() };
    let t0 = Instant::now();
    let vm = Vm::start(s.spec.clone(), dir.clone(), &opts).await?;
    out.qmp.push(ms(t0.elapsed()));
    let mut console = Console::connect(&dir).await?;
    vm.resume().await?;
    console.wait_for(bare::FIRST_CONSOLE_LINE, TIMEOUT).await?;
    out.console.push(ms(t0.elapsed()));
    bare::wait_for_ssh(net, &s.guest.key, TIMEOUT).await?;
    out.ssh.push(ms(t0.elapsed()));
    out.rss.extend(bare::rss_kib(vm.pid()));

    let snap = s.tmp.join(format!("snap-{run}"));
    let t = Instant::now();
    vm.snapshot_full(&snap, &opts).await?;
    out.save.push(ms(t.elapsed()));
    vm.kill().await?;
    let t = Instant::now();
    let params = RestoreParams {
        dir: InstanceDir::new(s.tmp.join(format!("restored-{run}"))),
        name: None,
        taps: None,
        netns: None,
        confinement: s.spec.confinement.clone(),
        macs: None,
        keep_config_drive: false,
        resume: true,
    };
    let restored = snapshot::restore(&snap, &params, &opts).await?;
    out.restore.push(ms(t.elapsed()));
    bare::wait_for_ssh(net, &s.guest.key, TIMEOUT).await?;
    out.restore_ssh.push(ms(t.elapsed()));
    restored.force_stop().await?;
    Ok(())
}

async fn run_bare(s: &Setup, net: &BareNet, out: &mut Samples) -> Result<()> {
    let boot = bare::boot(&s.guest, net, TIMEOUT).await?;
    out.bare_console.push(ms(boot.first_console_line));
    out.bare_ssh.push(ms(boot.ssh));
    out.bare_rss.extend(boot.rss_kib);
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5).max(1);
    let tmp = tempfile::Builder::new().prefix("vmm-bench").tempdir()?;
    // QEMU runs as a user of its own: let it through to its instance directories.
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
    let net = BareNet::create("vmmbench")?;
    let mut s = setup(&net, tmp.path()).await?;
    let cgroup = MemoryCgroup::create(448 << 20)?;
    let id = 1_900_000_000 + std::process::id() % 1_000_000;
    s.spec.confinement =
        Some(vmm::qemu::jail::Confinement { uid: id, gid: id, cgroups: cgroup.dir.iter().cloned().collect() });
    let mut out = Samples::default();
    for run in 0..runs {
        run_ours(&s, &net, run, &mut out).await?;
        run_bare(&s, &net, &mut out).await?;
    }
    stats("start_to_qmp_ready_ms", "ms", out.qmp);
    let c = stats("start_to_first_console_line_ms", "ms", out.console);
    let h = stats("start_to_ssh_ms", "ms", out.ssh);
    let r = stats("vmm_rss_kib", "KiB", out.rss);
    stats("snapshot_save_ms", "ms", out.save);
    stats("snapshot_restore_ms", "ms", out.restore);
    stats("restore_to_ssh_ms", "ms", out.restore_ssh);
    let bc = stats("bare_start_to_first_console_line_ms", "ms", out.bare_console);
    let bh = stats("bare_start_to_ssh_ms", "ms", out.bare_ssh);
    let br = stats("bare_vmm_rss_kib", "KiB", out.bare_rss);
    for (name, ours, bare) in [
        ("ratio_first_console_line_ours_over_bare", c, bc),
        ("ratio_start_to_ssh_ours_over_bare", h, bh),
        ("ratio_vmm_rss_ours_over_bare", r, br),
    ] {
        let ratio = ((ours / bare) * 1000.0).round() / 1000.0;
        emit(&serde_json::json!({ "metric": name, "value": ratio }));
    }
    Ok(())
}

/// A v1 memory cgroup of the benchmark's own, removed at the end (none on a v2 host: the
/// agent's v2 path is not what this measures).
struct MemoryCgroup {
    dir: Option<PathBuf>,
}

impl MemoryCgroup {
    fn create(limit: u64) -> Result<MemoryCgroup> {
        let root = Path::new("/sys/fs/cgroup/memory");
        if !root.join("cgroup.procs").exists() {
            return Ok(MemoryCgroup { dir: None });
        }
        let dir = root.join(format!("vmm-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string())?;
        Ok(MemoryCgroup { dir: Some(dir) })
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Writes one JSON line of figures to standard output (the benchmark's product).
fn emit(line: &serde_json::Value) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}
