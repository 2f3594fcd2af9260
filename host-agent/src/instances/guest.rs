//! What the agent learns from a running guest: when it becomes reachable, and its SSH host keys.
//!
//! One watch task per boot of a VM (started with the console pump, aborted when the VM stops or
//! is reset). It reads the serial console as the pump receives it from `serial.sock` (the pump
//! waits for the watch, so nothing is lost however busy the host is) for the host-key block the
//! guest prints ([`vmm::host_keys`]), and probes the guest's SSH port from the host until it
//! answers with an SSH banner. It reports both to the instance's runner, tagged with the boot
//! they belong to, so a late event of an earlier boot is ignored.
//!
//! Not `console.log`: QEMU logs a byte the socket refused for now (its buffer full while the
//! pump lags) and logs it again when it is sent, so under load the log repeats characters, and a
//! key line with one repeated character is no key. The socket's stream has every byte once. The
//! log is read only for a VM found running, whose keys may have been printed while the agent was
//! away (when nothing reads the socket, QEMU logs each byte once).
//!
//! ```text
//!   serial.sock ─pump─▶ host-key block ──────────────────────▶ GuestEvent::HostKeys
//!   probe guest:22 every 100 ms ──▶ "SSH-…" banner ─┐
//!                                                    ├─ keys known (this boot or before),
//!                                                    │  or HOST_KEY_GRACE after the banner
//!                                                    └──────────────────▶ GuestEvent::Reachable
//! ```
//! "Ready" waits for the keys as well as the banner because clients check the guest's identity
//! against them (cloud-init prints them after sshd starts: seconds with KVM, up to a minute
//! under TCG on a busy host); an image that never prints keys is ready [`HOST_KEY_GRACE`] after
//! its SSH port answers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use vmm::host_keys::HostKeyScanner;

/// How often the SSH port is probed until it answers, and `console.log` read.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often in the first [`EAGER_FOR`] of a watch: a resumed guest answers within a few
/// hundred milliseconds, and each probe that comes late is time its user waits.
const EAGER_INTERVAL: Duration = Duration::from_millis(20);
/// How long a watch probes every [`EAGER_INTERVAL`].
const EAGER_FOR: Duration = Duration::from_secs(2);
/// How often `console.log`'s bound is applied once the guest is ready (and sooner, whenever half
/// the bound went through the console since).
const IDLE_INTERVAL: Duration = Duration::from_millis(500);
/// How long one probe may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Probes under way at once for a resumed guest, at most: one that waits (for an address the
/// guest has not answered ARP for yet, say) does not hold back the next one for long. Only one
/// at a time otherwise: each probe that connects costs the guest an SSH server process.
const PROBES_IN_FLIGHT: usize = 4;
/// How long a probe may wait before another one is started beside it.
const PROBE_PATIENCE: Duration = Duration::from_millis(250);
/// How long a connected probe waits for the banner.
const BANNER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long after its SSH port answers a guest that published no host keys is declared ready.
pub const HOST_KEY_GRACE: Duration = Duration::from_secs(120);
/// Chunks of console output (up to 4 KiB each) the pump may queue for a watch before it waits.
pub(super) const CONSOLE_BACKLOG: usize = 1024;

/// What the watch tells the runner, about one boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GuestReport {
    /// The boot it is about (the watch's [`Watch::boot`]).
    pub boot: u64,
    pub event: GuestEvent,
}

/// What the watch learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum GuestEvent {
    /// The guest printed this host-key block (`<type> <base64>` each).
    HostKeys(Vec<String>),
    /// The guest became reachable at this time.
    Reachable(DateTime<Utc>),
}

/// Where and how to watch one boot.
#[derive(Debug)]
pub(super) struct Watch<R> {
    /// The boot this watch belongs to (the runner's counter).
    pub boot: u64,
    /// The guest's SSH address, if it has a NIC.
    pub ssh: Option<SocketAddr>,
    /// The network namespace the agent reaches guests from (tests), if any.
    pub netns: Option<String>,
    /// Whether host keys are known from an earlier boot.
    pub keys_known: bool,
    /// What the console pump reads from the guest's serial console, from now on.
    pub console: mpsc::Receiver<Vec<u8>>,
    /// The VM's `console.log`, kept under `console_log_max_bytes` while the VM runs (copied to
    /// `console.log.1` and truncated in place whenever it grew past it).
    pub console_log: PathBuf,
    pub console_log_max_bytes: u64,
    /// How the guest came to run.
    pub start: GuestStart,
    /// The runner's mailbox, which takes [`GuestReport`]s (weak: the watch never keeps a
    /// deleted runner alive).
    pub runner: mpsc::WeakSender<R>,
}

/// How the guest a watch follows came to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GuestStart {
    /// It boots: it answers in seconds.
    Boot,
    /// It goes on from a memory state: it answers within a few hundred milliseconds, so its
    /// SSH port is probed every [`EAGER_INTERVAL`] at first.
    Resumed,
    /// It was found running (after an agent restart): `console.log` is read from its start
    /// first, as its keys may have been printed while the agent was away.
    Found,
}

/// Follows a growing file from an offset (back to its start when it was truncated).
#[derive(Debug)]
struct Follow {
    path: PathBuf,
    offset: u64,
}

impl Follow {
    async fn new(path: PathBuf, from_start: bool) -> Follow {
        let offset = match from_start {
            true => 0,
            false => tokio::fs::metadata(&path).await.map_or(0, |m| m.len()),
        };
        Follow { path, offset }
    }

    /// What was appended since the last read (at most 1 MiB at a time).
    async fn read_new(&mut self) -> Vec<u8> {
        let Ok(mut f) = tokio::fs::File::open(&self.path).await else { return Vec::new() };
        let len = f.metadata().await.map_or(0, |m| m.len());
        if len < self.offset {
            self.offset = 0; // rotated (copy-truncate)
        }
        if len == self.offset || f.seek(std::io::SeekFrom::Start(self.offset)).await.is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let n = (&mut f).take(1 << 20).read_to_end(&mut buf).await.unwrap_or(0);
        self.offset += n as u64;
        buf
    }
}

/// Runs a watch until its runner is gone, or it reported readiness and the guest has no console
/// left to read.
pub(super) async fn watch<R: From<GuestReport>>(mut w: Watch<R>) {
    let mut scanner = HostKeyScanner::default();
    let mut keys_this_boot = false;
    if w.start == GuestStart::Found {
        let mut log = Follow::new(w.console_log.clone(), true).await;
        loop {
            let data = log.read_new().await;
            if data.is_empty() {
                break;
            }
            for keys in scanner.feed(&data) {
                keys_this_boot = true;
                if !send(&w, GuestEvent::HostKeys(keys)).await {
                    return;
                }
            }
        }
        // What follows comes from the pump; a line the log left open does not continue there.
        scanner = HostKeyScanner::default();
    }
    let mut banner_at: Option<(Instant, DateTime<Utc>)> = None;
    let mut reported = false;
    let started = Instant::now();
    let mut probes = tokio::task::JoinSet::new();
    let mut last_probe: Option<Instant> = None;
    let mut next_tick = Instant::now();
    // Console bytes since the bound was last applied: a fast flood gets it applied sooner than
    // the next tick, so the file overshoots by half the bound at most, whatever the UART's speed.
    let mut unbounded: u64 = 0;
    loop {
        // Once ready, only new key blocks are of interest: look less often.
        let interval = match () {
            () if reported => IDLE_INTERVAL,
            () if w.start == GuestStart::Resumed && started.elapsed() < EAGER_FOR => EAGER_INTERVAL,
            () => POLL_INTERVAL,
        };
        // A probe's answer is taken as soon as it comes. The console is read as it comes too:
        // the pump waits for this watch, so a watch that read only at its ticks would hold a
        // flooding guest's UART back to a backlog of chunks per tick (a few bytes each).
        let answered = tokio::select! {
            () = tokio::time::sleep_until(next_tick) => {
                next_tick = Instant::now() + interval;
                false
            }
            Some(done) = probes.join_next() => done.unwrap_or(false),
            Some(data) = w.console.recv() => {
                for keys in scanner.feed(&data) {
                    keys_this_boot = true;
                    if !send(&w, GuestEvent::HostKeys(keys)).await {
                        return;
                    }
                }
                unbounded += data.len() as u64;
                if unbounded >= w.console_log_max_bytes / 2 {
                    unbounded = 0;
                    bound_console_log(&w).await;
                }
                continue;
            }
        };
        if answered && banner_at.is_none() {
            probes.abort_all();
            tracing::info!(keys_known = w.keys_known || keys_this_boot, "the guest's SSH port answers");
            banner_at = Some((Instant::now(), Utc::now()));
        }
        let since_probe = last_probe.map_or(Duration::MAX, |at| at.elapsed());
        // A booting guest is probed one connection at a time: probes stuck on an address it does
        // not answer yet would all connect at once when it does, each costing it a process.
        let in_flight = if w.start == GuestStart::Resumed { PROBES_IN_FLIGHT } else { 1 };
        if banner_at.is_none()
            && let Some(addr) = w.ssh
            && ((probes.is_empty() && since_probe >= interval)
                || (probes.len() < in_flight && since_probe >= PROBE_PATIENCE))
        {
            last_probe = Some(Instant::now());
            let netns = w.netns.clone();
            probes.spawn(async move { answers_ssh(netns.as_deref(), addr).await });
        }
        // Read the console after the probe, so keys printed before the banner count.
        while let Ok(data) = w.console.try_recv() {
            for keys in scanner.feed(&data) {
                keys_this_boot = true;
                if !send(&w, GuestEvent::HostKeys(keys)).await {
                    return;
                }
            }
        }
        if let Some((at, when)) = banner_at
            && !reported
            && (keys_this_boot || w.keys_known || at.elapsed() >= HOST_KEY_GRACE)
        {
            if !(keys_this_boot || w.keys_known) {
                tracing::warn!(grace = ?HOST_KEY_GRACE, "the guest printed no host-key block on its console: ready without keys");
            }
            reported = true;
            if !send(&w, GuestEvent::Reachable(when)).await {
                return;
            }
        }
        if w.runner.upgrade().is_none() {
            return;
        }
        unbounded = 0;
        bound_console_log(&w).await;
    }
}

/// Applies `console.log`'s bound: a guest that floods its serial port must not fill the host's
/// disk.
async fn bound_console_log<R>(w: &Watch<R>) {
    let dir = vmm::InstanceDir::new(w.console_log.parent().unwrap_or(std::path::Path::new("/")));
    if let Err(e) = vmm::console::rotate_console_log(&dir, w.console_log_max_bytes).await {
        tracing::warn!(error = %e, "cannot rotate console.log");
    }
}

/// Sends an event to the runner; false when the runner is gone.
async fn send<R: From<GuestReport>>(w: &Watch<R>, event: GuestEvent) -> bool {
    let Some(tx) = w.runner.upgrade() else { return false };
    tx.send(R::from(GuestReport { boot: w.boot, event })).await.is_ok()
}

/// True when `addr` accepts a connection and greets with an SSH identification line.
async fn answers_ssh(netns: Option<&str>, addr: SocketAddr) -> bool {
    let Ok(mut stream) = connect(netns, addr, CONNECT_TIMEOUT).await else { return false };
    let mut banner = Vec::with_capacity(256);
    let read = async {
        let mut buf = [0u8; 256];
        while banner.len() < 4 || !banner.contains(&b'\n') {
            let n = stream.read(&mut buf).await?;
            if n == 0 || banner.len() > 1024 {
                break;
            }
            banner.extend_from_slice(&buf[..n]);
        }
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(BANNER_TIMEOUT, read).await;
    // RFC 4253: the server may send other lines before its identification line.
    banner.split(|b| *b == b'\n').any(|line| line.starts_with(b"SSH-"))
}

/// A TCP connection to a guest, made from the host (inside `netns` when set).
pub(super) async fn connect(netns: Option<&str>, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = match netns {
        None => match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(r) => r?,
            Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
        },
        Some(ns) => TcpStream::from_std(connect_in_netns(ns, addr, timeout).await?)?,
    };
    // It carries tunnels (SSH): small writes go at once.
    cloud_common::tcp::no_delay(&stream);
    Ok(stream)
}

/// Connects from inside network namespace `ns`, on a short-lived thread of its own (a socket
/// keeps the namespace it was created in; the thread's namespace change dies with it).
async fn connect_in_netns(ns: &str, addr: SocketAddr, timeout: Duration) -> std::io::Result<std::net::TcpStream> {
    let path = PathBuf::from("/run/netns").join(ns);
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            let f = std::fs::File::open(&path)?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            let s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })();
        let _ = tx.send(result);
    });
    rx.await.map_err(|_| std::io::Error::other("connect thread ended"))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    async fn server(greeting: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(greeting).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        addr
    }

    /// A watch of a VM with no known keys, reporting to `runner`.
    fn watch_of(
        ssh: Option<SocketAddr>,
        console: mpsc::Receiver<Vec<u8>>,
        console_log: PathBuf,
        start: GuestStart,
        runner: &mpsc::Sender<GuestReport>,
    ) -> Watch<GuestReport> {
        Watch {
            boot: 1,
            ssh,
            netns: None,
            keys_known: false,
            console,
            console_log,
            console_log_max_bytes: u64::MAX,
            start,
            runner: runner.downgrade(),
        }
    }

    #[tokio::test]
    async fn only_an_ssh_banner_counts() {
        assert!(answers_ssh(None, server(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n").await).await);
        assert!(answers_ssh(None, server(b"hello\r\nSSH-2.0-dropbear\r\n").await).await);
        assert!(!answers_ssh(None, server(b"HTTP/1.1 400 Bad Request\r\n\r\n").await).await);
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert!(!answers_ssh(None, closed).await);
    }

    #[tokio::test]
    async fn reports_keys_from_the_pump_then_reachable_for_its_boot_and_ignores_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let old = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC1v9DbrFkiMgsAZDA3xJ2lrpfau5HJBKxrxaRX3JKFk";
        let earlier = format!("{}\n{old}\n{}\n", vmm::host_keys::BEGIN_MARKER, vmm::host_keys::END_MARKER);
        std::fs::write(&log, earlier).unwrap();
        let (tx, mut rx) = mpsc::channel::<GuestReport>(16);
        let (console_tx, console) = mpsc::channel(CONSOLE_BACKLOG);
        let addr = server(b"SSH-2.0-test\r\n").await;
        let w = Watch { boot: 7, ..watch_of(Some(addr), console, log.clone(), GuestStart::Boot, &tx) };
        let task = tokio::spawn(watch(w));
        // The banner alone is not enough while no keys are known: nothing is reported yet.
        let quiet = tokio::time::timeout(Duration::from_millis(800), rx.recv()).await;
        assert!(quiet.is_err(), "reported before the host keys: {quiet:?}");
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMMo2cAuH0peQsTXfAvGoo5dpu6+bo5V0EOLqa4W2aD1";
        let block = format!("{}\r\n{key} root@x\r\n{}\r\n", vmm::host_keys::BEGIN_MARKER, vmm::host_keys::END_MARKER);
        // In two chunks, cut inside the key, as the pump may read it.
        let (a, b) = block.split_at(block.len() / 2);
        console_tx.send(a.as_bytes().to_vec()).await.unwrap();
        console_tx.send(b.as_bytes().to_vec()).await.unwrap();
        let Some(GuestReport { boot: 7, event: GuestEvent::HostKeys(keys) }) = rx.recv().await else {
            panic!("expected the host keys first")
        };
        assert_eq!(keys, vec![key.to_owned()]);
        let Some(GuestReport { boot: 7, event: GuestEvent::Reachable(_) }) = rx.recv().await else {
            panic!("expected reachable")
        };
        drop(rx);
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_flooded_console_log_is_kept_under_its_bound_with_the_newest_output() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, b"").unwrap();
        let (tx, _rx) = mpsc::channel::<GuestReport>(16);
        let (_console_tx, console) = mpsc::channel(CONSOLE_BACKLOG);
        let w = Watch { console_log_max_bytes: 1000, ..watch_of(None, console, log.clone(), GuestStart::Boot, &tx) };
        let task = tokio::spawn(watch(w));
        // QEMU appends (O_APPEND), as the guest floods its serial port.
        let mut qemu = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        for _ in 0..50 {
            qemu.write_all(&[b'x'; 400]).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(POLL_INTERVAL * 3).await;
        qemu.write_all(b"NEWEST\n").unwrap();
        let (now, older) = (std::fs::read(&log).unwrap(), std::fs::read(dir.path().join("console.log.1")).unwrap());
        assert!(now.len() <= 1000, "console.log has {} bytes", now.len());
        assert!(now.len() + older.len() < 20_000 / 2, "kept {} of 20,000 bytes", now.len() + older.len());
        assert!(String::from_utf8_lossy(&[older, now].concat()).contains("NEWEST"));
        task.abort();
    }

    #[tokio::test]
    async fn a_vm_found_running_has_its_keys_read_from_the_whole_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMMo2cAuH0peQsTXfAvGoo5dpu6+bo5V0EOLqa4W2aD1";
        let block = format!("{}\n{key}\n{}\n", vmm::host_keys::BEGIN_MARKER, vmm::host_keys::END_MARKER);
        std::fs::write(&log, block).unwrap();
        let (tx, mut rx) = mpsc::channel::<GuestReport>(16);
        let (_console_tx, console) = mpsc::channel(CONSOLE_BACKLOG);
        let w = watch_of(None, console, log, GuestStart::Found, &tx);
        let _task = tokio::spawn(watch(w));
        let Some(GuestReport { event: GuestEvent::HostKeys(keys), .. }) = rx.recv().await else { panic!() };
        assert_eq!(keys, vec![key.to_owned()]);
    }
}
