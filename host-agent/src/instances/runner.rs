//! One instance's actor: owns its `agent.json`, its `vmm::Vm` handle and its console pump, and
//! serves requests one at a time.
//!
//! `agent.json` (desired spec, desired power, applied generation, last state) is written with a
//! temp file + rename *before* the runner acts on a new generation, so a crash at any point
//! leaves a record the next agent can act on. The console pump is the only client of QEMU's
//! `serial.sock` (it accepts one): it fans output out to every viewer through a broadcast
//! channel and forwards their input.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot};
use vmm::{InstanceDir, Vm, VmStatus};

use super::driver::{Attached, Driver, Restored};
use super::guest::{self, GuestEvent, GuestStart};
use super::host::Host;
use super::record::{AgentRecord, CREATING_MARKER, write_record};
use super::snapshots::{self, SnapshotId, SnapshotInfo};
use super::{DesiredInstance, InstanceError, InstanceId, InstanceState, InstanceStatus, PowerState, SnapshotKind};

/// What every runner shares: the host's resources, and the runners' own channels and driver.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub host: Host,
    pub events: broadcast::Sender<InstanceStatus>,
    /// Notified when a guest became reachable or published host keys (reported early).
    pub guest_news: tokio::sync::Notify,
    /// What runs the VMs (from `config.driver`).
    pub driver: Box<dyn Driver>,
}

/// A runner reaches the host's resources through its context (`ctx.config`, `ctx.images`).
impl std::ops::Deref for Ctx {
    type Target = Host;

    fn deref(&self) -> &Host {
        &self.host
    }
}

/// A guest watch's report arrives in the runner's mailbox.
impl From<guest::GuestReport> for Request {
    fn from(report: guest::GuestReport) -> Self {
        Request::Guest { boot: report.boot, event: report.event }
    }
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, InstanceError>>;

/// A request to a runner.
#[derive(Debug)]
pub(super) enum Request {
    Ensure {
        desired: Box<DesiredInstance>,
        power: PowerState,
        generation: u64,
        reply: Reply<InstanceStatus>,
    },
    Stop {
        generation: u64,
        reply: Reply<InstanceStatus>,
    },
    Reboot {
        generation: u64,
        reply: Reply<InstanceStatus>,
    },
    Delete {
        generation: u64,
        reply: Reply<InstanceStatus>,
    },
    Pause {
        reply: Reply<InstanceStatus>,
    },
    Resume {
        reply: Reply<InstanceStatus>,
    },
    Snapshot {
        snapshot: SnapshotId,
        kind: SnapshotKind,
        generation: u64,
        reply: Reply<SnapshotInfo>,
    },
    Restore {
        desired: Box<DesiredInstance>,
        location: PathBuf,
        generation: u64,
        /// Boot from the snapshot's disks even when it holds memory state.
        fresh_boot: bool,
        reply: Reply<InstanceStatus>,
    },
    /// What the guest watch of boot `boot` learnt (see `guest`).
    Guest {
        boot: u64,
        event: GuestEvent,
    },
    /// `request`, served in a span of the caller's (a gRPC call's, and so of its trace).
    Traced {
        request: Box<Request>,
        caller: tracing::Span,
    },
}

impl Request {
    /// The request's name, for spans.
    fn name(&self) -> &'static str {
        match self {
            Request::Ensure { .. } => "ensure",
            Request::Stop { .. } => "stop",
            Request::Reboot { .. } => "reboot",
            Request::Delete { .. } => "delete",
            Request::Pause { .. } => "pause",
            Request::Resume { .. } => "resume",
            Request::Snapshot { .. } => "snapshot",
            Request::Restore { .. } => "restore",
            Request::Guest { .. } => "guest",
            Request::Traced { request, .. } => request.name(),
        }
    }
}

/// State readable without a round trip to the runner.
#[derive(Debug)]
pub(super) struct Shared {
    pub status: Mutex<InstanceStatus>,
    pub desired: Mutex<DesiredInstance>,
    pub console_out: broadcast::Sender<Vec<u8>>,
    pub console_in: mpsc::Sender<Vec<u8>>,
    console_in_rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>>,
    /// Where the console pump also sends what it reads: the current boot's guest watch.
    console_tap: ConsoleTap,
}

/// The guest watch's feed of console output, replaced at every boot.
type ConsoleTap = Arc<Mutex<Option<mpsc::Sender<Vec<u8>>>>>;

impl Shared {
    fn new(record: &AgentRecord) -> Shared {
        let (console_out, _) = broadcast::channel(256);
        let (console_in, rx) = mpsc::channel(64);
        Shared {
            status: Mutex::new(status_of(record)),
            desired: Mutex::new(record.desired.clone()),
            console_out,
            console_in,
            console_in_rx: Arc::new(tokio::sync::Mutex::new(rx)),
            console_tap: Arc::default(),
        }
    }

    pub fn status(&self) -> InstanceStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn desired(&self) -> DesiredInstance {
        self.desired.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn status_of(record: &AgentRecord) -> InstanceStatus {
    InstanceStatus {
        id: record.desired.id,
        state: record.state,
        generation: record.generation,
        reason: record.reason.clone(),
        observed_at: Utc::now(),
        ready_at: record.ready_at,
        ssh_host_keys: record.ssh_host_keys.clone(),
    }
}

/// The handle the manager keeps per instance.
#[derive(Debug, Clone)]
pub(super) struct RunnerHandle {
    pub tx: mpsc::Sender<Request>,
    pub shared: Arc<Shared>,
}

pub(super) struct Runner {
    ctx: Arc<Ctx>,
    id: InstanceId,
    dir: InstanceDir,
    record: AgentRecord,
    /// True until the first ensure has been applied (nothing on disk yet).
    fresh: bool,
    vm: Option<Vm>,
    shared: Arc<Shared>,
    pump: Option<tokio::task::JoinHandle<()>>,
    /// The guest watch of the current boot.
    watch: Option<tokio::task::JoinHandle<()>>,
    /// Counts boots (launches, resets, re-attaches), so events of an earlier boot are ignored.
    boot: u64,
    /// How and when the current boot started (for the time to ready in the metrics).
    boot_start: Option<(guest::GuestStart, std::time::Instant)>,
    /// This runner's own request channel, for the guest watch.
    me: Option<mpsc::WeakSender<Request>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("id", &self.id).field("state", &self.record.state).finish()
    }
}

impl Runner {
    /// A runner for an instance not yet on this host; its first request must be an ensure.
    pub fn new_instance(ctx: Arc<Ctx>, desired: DesiredInstance) -> Runner {
        let dir = InstanceDir::new(ctx.config.instances_dir.join(desired.id.to_string()));
        let record = AgentRecord {
            desired,
            power: PowerState::Stopped,
            generation: 0,
            state: InstanceState::Creating,
            reason: None,
            ready_at: None,
            ssh_host_keys: Vec::new(),
        };
        Runner::build(ctx, dir, record, true)
    }

    /// A runner for an instance found on disk: re-attaches to its VMM, or relaunches it when it
    /// died and should run, or reports it stopped.
    pub async fn recover(ctx: Arc<Ctx>, dir: InstanceDir, record: AgentRecord) -> Runner {
        let mut runner = Runner::build(ctx, dir, record, false);
        let attached = runner.ctx.driver.attach(&runner.dir).await;
        match attached {
            Attached::NoProcess => {}
            Attached::Vm(vm) => {
                let state = match vm.status().await {
                    Ok(VmStatus::Paused) => InstanceState::Paused,
                    Ok(VmStatus::Running) => InstanceState::Running,
                    Ok(other) => {
                        tracing::warn!(id = %runner.id, status = ?other, "re-attached VM in an unexpected status");
                        InstanceState::Running
                    }
                    Err(e) => {
                        tracing::warn!(id = %runner.id, error = %format!("{e:#}"), "cannot query re-attached VM");
                        InstanceState::Running
                    }
                };
                runner.vm = Some(vm);
                runner.start_pump(GuestStart::Found);
                runner.set_state(state, None).await;
            }
            Attached::Gone if runner.record.power == PowerState::Running && runner.ctx.config.fenced_at_start => {
                tracing::warn!(id = %runner.id, "VMM is gone and the host's lease ran out: relaunching only once the control plane confirms this host still owns the instance");
                runner.set_state(InstanceState::Stopped, Some(super::FENCED_REASON.to_owned())).await;
            }
            Attached::Gone if runner.record.power == PowerState::Running => {
                tracing::info!(id = %runner.id, "VMM is gone but the instance should run; relaunching");
                if let Err(e) = runner.launch().await {
                    tracing::warn!(id = %runner.id, error = %format!("{e:#}"), "relaunch failed");
                }
            }
            Attached::Gone => {
                runner.set_state(InstanceState::Stopped, None).await;
            }
            Attached::Unreachable(e) => {
                tracing::warn!(id = %runner.id, error = %format!("{e:#}"), "cannot re-attach VM");
                let reason = "the agent cannot reach the instance's VMM".to_owned();
                runner.set_state(InstanceState::Failed, Some(reason)).await;
            }
        }
        runner
    }

    fn build(ctx: Arc<Ctx>, dir: InstanceDir, record: AgentRecord, fresh: bool) -> Runner {
        let shared = Arc::new(Shared::new(&record));
        Runner {
            ctx,
            id: record.desired.id,
            dir,
            record,
            fresh,
            vm: None,
            shared,
            pump: None,
            watch: None,
            boot: 0,
            boot_start: None,
            me: None,
        }
    }

    /// The instance id.
    pub fn id(&self) -> InstanceId {
        self.id
    }

    /// Spawns the actor; returns its handle.
    pub fn spawn(mut self) -> RunnerHandle {
        let (tx, rx) = mpsc::channel(16);
        self.me = Some(tx.downgrade());
        if self.vm.is_some() {
            // re-attached at recovery: watch the guest it found, whose keys may be printed already
            self.start_watch(GuestStart::Found);
        }
        let handle = RunnerHandle { tx, shared: self.shared.clone() };
        tokio::spawn(self.run(rx));
        handle
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        loop {
            let qmp = self.vm.as_ref().map(|vm| vm.qmp().clone());
            let vm_gone = async move {
                match qmp {
                    Some(q) => q.closed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                req = rx.recv() => {
                    let Some(req) = req else { break };
                    let (req, span) = match req {
                        Request::Traced { request, caller } => {
                            let span = tracing::info_span!(parent: &caller, "instance", id = %self.id, request = request.name());
                            (*request, span)
                        }
                        other => (other, tracing::Span::none()),
                    };
                    if tracing::Instrument::instrument(self.handle(req), span).await {
                        break;
                    }
                }
                () = vm_gone => self.on_vm_exit().await,
            }
        }
        self.stop_guest_io();
    }

    /// Serves one request; returns true when the runner should end (deleted).
    async fn handle(&mut self, req: Request) -> bool {
        match req {
            Request::Ensure { desired, power, generation, reply } => {
                let r = self.ensure(*desired, power, generation).await;
                let _ = reply.send(r);
            }
            Request::Stop { generation, reply } => {
                let r = self.stop(generation).await;
                let _ = reply.send(r);
            }
            Request::Reboot { generation, reply } => {
                let r = self.reboot(generation).await;
                let _ = reply.send(r);
            }
            Request::Delete { generation, reply } => {
                let r = self.delete(generation).await;
                let done = r.is_ok();
                let _ = reply.send(r);
                return done;
            }
            Request::Pause { reply } => {
                let r = self.pause(true).await;
                let _ = reply.send(r);
            }
            Request::Resume { reply } => {
                let deferred = self.record.state == InstanceState::Stopped
                    && self.record.reason.as_deref() == Some(super::FENCED_REASON)
                    && self.vm.is_none();
                let r = if deferred { self.launch().await.map(|()| self.status()) } else { self.pause(false).await };
                let _ = reply.send(r);
            }
            Request::Snapshot { snapshot, kind, generation, reply } => {
                let r = self.snapshot(snapshot, kind, generation).await;
                let _ = reply.send(r);
            }
            Request::Restore { desired, location, generation, fresh_boot, reply } => {
                let r = self.restore(*desired, &location, generation, fresh_boot).await;
                let _ = reply.send(r);
            }
            Request::Guest { boot, event } if boot == self.boot => self.on_guest(event).await,
            Request::Guest { .. } => {}
            // Unwrapped by `run`; one nested in another is served as it is.
            Request::Traced { request, .. } => return Box::pin(self.handle(*request)).await,
        }
        false
    }

    fn status(&self) -> InstanceStatus {
        self.shared.status()
    }

    /// `Some(status)` for a no-op (same generation), an error for a stale one.
    fn check_generation(&self, generation: u64) -> Result<Option<InstanceStatus>, InstanceError> {
        if self.fresh {
            return Ok(None);
        }
        let current = self.record.generation;
        if generation < current {
            return Err(InstanceError::StaleGeneration { id: self.id, requested: generation, current });
        }
        Ok((generation == current).then(|| self.status()))
    }

    /// Records a state (in memory, `agent.json`, watchers). Persistence failures are logged:
    /// the state is an observation, recomputed on restart.
    async fn set_state(&mut self, state: InstanceState, reason: Option<String>) {
        self.record.state = state;
        self.record.reason = reason;
        if !matches!(state, InstanceState::Running | InstanceState::Paused | InstanceState::Snapshotting) {
            // not running: whatever answered before is gone
            self.record.ready_at = None;
        }
        let status = status_of(&self.record);
        *self.shared.status.lock().unwrap_or_else(|e| e.into_inner()) = status.clone();
        if let Err(e) = write_record(&self.dir, &self.record).await {
            tracing::warn!(id = %self.id, error = %format!("{e:#}"), "cannot persist instance state");
        }
        tracing::debug!(id = %self.id, ?state, generation = status.generation, "instance state");
        let _ = self.ctx.events.send(status);
    }

    async fn ensure(
        &mut self,
        desired: DesiredInstance,
        power: PowerState,
        generation: u64,
    ) -> Result<InstanceStatus, InstanceError> {
        if let Some(status) = self.check_generation(generation)? {
            return Ok(status);
        }
        desired.validate()?;
        let creating = self.fresh;
        if creating {
            // An unknown or corrupt image leaves nothing behind: fetch before the directory exists.
            self.ctx.driver.resolve(&self.ctx, &desired).await?;
        }
        self.record.desired = desired.clone();
        self.record.power = power;
        self.record.generation = generation;
        *self.shared.desired.lock().unwrap_or_else(|e| e.into_inner()) = desired;
        if creating {
            let root = self.dir.root().to_owned();
            tokio::fs::create_dir_all(&root)
                .await
                .map_err(|source| InstanceError::Persist { path: root.clone(), source })?;
            let marker = root.join(CREATING_MARKER);
            tokio::fs::write(&marker, b"").await.map_err(|source| InstanceError::Persist { path: marker, source })?;
        }
        write_record(&self.dir, &self.record).await?;
        self.fresh = false;
        let result = self.apply_power(creating).await;
        if creating {
            let _ = tokio::fs::remove_file(self.dir.root().join(CREATING_MARKER)).await;
        }
        result.map(|()| self.status())
    }

    async fn apply_power(&mut self, creating: bool) -> Result<(), InstanceError> {
        match self.record.power {
            PowerState::Running => match self.record.state {
                InstanceState::Running | InstanceState::Paused if self.vm_alive() => {
                    let state = self.record.state;
                    self.set_state(state, None).await;
                    Ok(())
                }
                _ => self.launch().await,
            },
            PowerState::Stopped if self.vm.is_some() => self.shutdown().await,
            PowerState::Stopped => {
                if creating {
                    self.set_state(InstanceState::Creating, None).await;
                    if let Err(e) = self.ctx.driver.prepare(&self.ctx, &self.dir, &self.record.desired).await {
                        self.set_state(InstanceState::Failed, Some(failure_reason(&e))).await;
                        return Err(e);
                    }
                }
                self.set_state(InstanceState::Stopped, None).await;
                Ok(())
            }
        }
    }

    fn vm_alive(&self) -> bool {
        self.ctx.driver.is_alive(self.vm.as_ref())
    }

    async fn launch(&mut self) -> Result<(), InstanceError> {
        self.set_state(InstanceState::Starting, None).await;
        match self.ctx.driver.launch(&self.ctx, &self.dir, &self.record.desired).await {
            Ok(vm) => {
                if let Some(vm) = vm {
                    self.vm = Some(vm);
                    self.start_pump(GuestStart::Boot);
                }
                self.set_state(InstanceState::Running, None).await;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(id = %self.id, error = %format!("{e:#}"), "launch failed");
                self.set_state(InstanceState::Failed, Some(failure_reason(&e))).await;
                Err(e)
            }
        }
    }

    async fn shutdown(&mut self) -> Result<(), InstanceError> {
        self.set_state(InstanceState::Stopping, None).await;
        if let Some(vm) = self.vm.take() {
            let timeout = self.ctx.config.stop_timeout;
            if let Err(source) = vm.shutdown(timeout).await {
                self.vm = Some(vm);
                let e = InstanceError::Vmm { id: self.id, operation: "shutdown", source };
                self.set_state(InstanceState::Failed, Some(failure_reason(&e))).await;
                return Err(e);
            }
        }
        self.stop_guest_io();
        self.set_state(InstanceState::Stopped, None).await;
        Ok(())
    }

    async fn stop(&mut self, generation: u64) -> Result<InstanceStatus, InstanceError> {
        if let Some(status) = self.check_generation(generation)? {
            return Ok(status);
        }
        self.record.generation = generation;
        self.record.power = PowerState::Stopped;
        write_record(&self.dir, &self.record).await?;
        if self.vm.is_some() || self.record.state != InstanceState::Stopped {
            self.shutdown().await?;
        }
        Ok(self.status())
    }

    async fn reboot(&mut self, generation: u64) -> Result<InstanceStatus, InstanceError> {
        if let Some(status) = self.check_generation(generation)? {
            return Ok(status);
        }
        if self.record.state != InstanceState::Running {
            return Err(InstanceError::InvalidState { id: self.id, state: self.record.state, operation: "reboot" });
        }
        self.record.generation = generation;
        write_record(&self.dir, &self.record).await?;
        self.set_state(InstanceState::Rebooting, None).await;
        // events of the boot being reset are stale from here on
        self.boot += 1;
        if let Some(watch) = self.watch.take() {
            watch.abort();
        }
        if let Some(vm) = &self.vm
            && let Err(source) = vm.reboot().await
        {
            let e = InstanceError::Vmm { id: self.id, operation: "reboot", source };
            self.set_state(InstanceState::Failed, Some(failure_reason(&e))).await;
            return Err(e);
        }
        if self.vm.is_some() {
            self.start_watch(GuestStart::Boot);
        }
        self.set_state(InstanceState::Running, None).await;
        Ok(self.status())
    }

    async fn delete(&mut self, generation: u64) -> Result<InstanceStatus, InstanceError> {
        if !self.fresh && generation < self.record.generation {
            return Err(InstanceError::StaleGeneration {
                id: self.id,
                requested: generation,
                current: self.record.generation,
            });
        }
        self.record.generation = generation;
        self.set_state(InstanceState::Deleting, None).await;
        if let Some(vm) = self.vm.take()
            && let Err(e) = vm.force_stop().await
        {
            tracing::warn!(id = %self.id, error = %format!("{e:#}"), "force stop failed; killing");
        }
        self.stop_guest_io();
        self.ctx.driver.destroy(&self.ctx, self.id, &self.dir).await?;
        self.record.state = InstanceState::Deleted;
        self.record.reason = None;
        let status = status_of(&self.record);
        *self.shared.status.lock().unwrap_or_else(|e| e.into_inner()) = status.clone();
        let _ = self.ctx.events.send(status.clone());
        tracing::info!(id = %self.id, "instance deleted");
        Ok(status)
    }

    async fn pause(&mut self, pause: bool) -> Result<InstanceStatus, InstanceError> {
        let (from, to, op) = if pause {
            (InstanceState::Running, InstanceState::Paused, "pause")
        } else {
            (InstanceState::Paused, InstanceState::Running, "resume")
        };
        if self.record.state != from {
            return Ok(self.status());
        }
        if let Some(vm) = &self.vm {
            let r = if pause { vm.pause().await } else { vm.resume().await };
            r.map_err(|source| InstanceError::Vmm { id: self.id, operation: op, source })?;
        }
        self.set_state(to, None).await;
        Ok(self.status())
    }

    /// Takes snapshot `snapshot` (see `snapshots`): `Snapshotting` while vmm works, then back
    /// to the state before. A higher generation is recorded; the desired spec is unchanged.
    async fn snapshot(
        &mut self,
        snapshot: SnapshotId,
        kind: SnapshotKind,
        generation: u64,
    ) -> Result<SnapshotInfo, InstanceError> {
        let (state, current) = (self.record.state, self.record.generation);
        if self.fresh {
            return Err(InstanceError::InvalidState { id: self.id, state, operation: "snapshot" });
        }
        if generation < current {
            return Err(InstanceError::StaleGeneration { id: self.id, requested: generation, current });
        }
        if let Some(info) = snapshots::existing(&self.ctx, self.id, snapshot, kind).await? {
            return Ok(info);
        }
        let live = match (state, kind) {
            (InstanceState::Running | InstanceState::Paused, _) if self.vm_alive() => true,
            (InstanceState::Stopped, SnapshotKind::Disk) => false,
            _ => return Err(InstanceError::InvalidState { id: self.id, state, operation: "snapshot" }),
        };
        if generation > current {
            self.record.generation = generation;
            write_record(&self.dir, &self.record).await?;
        }
        let reason = self.record.reason.clone();
        let desired = self.record.desired.clone();
        self.set_state(InstanceState::Snapshotting, None).await;
        // Held outside `self` while vmm works, so the state can be published meanwhile.
        let vm = if live { self.vm.take() } else { None };
        let (ctx, dir) = (&self.ctx, &self.dir);
        let write =
            async |dest: &Path| ctx.driver.write_snapshot(ctx, vm.as_ref(), dir, &desired, dest, snapshot, kind).await;
        let keys = self.record.ssh_host_keys.clone();
        let result = snapshots::take(ctx, &desired, snapshot, kind, &keys, write).await;
        if live {
            self.vm = vm;
        }
        self.set_state(state, reason).await;
        result
    }

    /// Creates this (fresh) instance from the snapshot at `location` (from its disks only when
    /// `fresh_boot`). An existing instance answers like an ensure: same generation, its status;
    /// older, a stale error.
    async fn restore(
        &mut self,
        desired: DesiredInstance,
        location: &Path,
        generation: u64,
        fresh_boot: bool,
    ) -> Result<InstanceStatus, InstanceError> {
        if !self.fresh {
            return match self.check_generation(generation)? {
                Some(status) => Ok(status),
                None => {
                    Err(InstanceError::InvalidState { id: self.id, state: self.record.state, operation: "restore" })
                }
            };
        }
        desired.validate()?;
        let mut snapshot = snapshots::open(&self.ctx, self.id, location).await?;
        if fresh_boot {
            // A new address: the memory state would keep the old one; boot from the disks.
            snapshot.kind = SnapshotKind::Disk;
        }
        if snapshot.kind == SnapshotKind::Full {
            // The same guest resumes: its host keys are known (it will not print them again).
            self.record.ssh_host_keys = snapshot.ssh_host_keys.clone();
        }
        snapshots::check_restorable(&snapshot, &desired)?;
        self.ctx.driver.resolve(&self.ctx, &desired).await?;
        self.record.desired = desired.clone();
        self.record.power = PowerState::Running;
        self.record.generation = generation;
        *self.shared.desired.lock().unwrap_or_else(|e| e.into_inner()) = desired.clone();
        let root = self.dir.root().to_owned();
        tokio::fs::create_dir_all(&root)
            .await
            .map_err(|source| InstanceError::Persist { path: root.clone(), source })?;
        let marker = root.join(CREATING_MARKER);
        tokio::fs::write(&marker, b"")
            .await
            .map_err(|source| InstanceError::Persist { path: marker.clone(), source })?;
        self.fresh = false;
        self.set_state(InstanceState::Restoring, None).await;
        let result = match self.ctx.driver.restore(&self.ctx, &self.dir, &desired, &snapshot, location).await {
            Ok(Restored::NoProcess) => {
                self.set_state(InstanceState::Running, None).await;
                Ok(())
            }
            Ok(Restored::Running(vm)) => {
                self.vm = Some(*vm);
                self.start_pump(GuestStart::Resumed);
                self.set_state(InstanceState::Running, None).await;
                Ok(())
            }
            Ok(Restored::Disks) => self.launch().await,
            Err(e) => {
                self.set_state(InstanceState::Failed, Some(failure_reason(&e))).await;
                Err(e)
            }
        };
        let _ = tokio::fs::remove_file(&marker).await;
        tracing::info!(id = %self.id, snapshot = %snapshot.snapshot_id, ok = result.is_ok(), "restore finished");
        result.map(|()| self.status())
    }

    async fn on_vm_exit(&mut self) {
        let Some(vm) = self.vm.take() else { return };
        if vm.is_alive() {
            // The monitor connection dropped but QEMU lives: reconnect.
            match self.ctx.driver.attach(&self.dir).await {
                Attached::Vm(vm) => {
                    self.vm = Some(vm);
                    return;
                }
                other => tracing::warn!(id = %self.id, outcome = ?other, "cannot reconnect to VMM"),
            }
        }
        self.stop_guest_io();
        if let Some(limit) =
            self.ctx.confiner.as_ref().and_then(|c| c.oom_killed(self.id, self.record.desired.memory_mib))
        {
            let reason = format!(
                "the VM was stopped by the host: its VMM went past its memory limit of {limit} MiB (the VM's memory and the VMM's own)"
            );
            tracing::warn!(id = %self.id, limit_mib = limit, "VMM killed for its memory limit");
            self.set_state(InstanceState::Failed, Some(reason)).await;
            return;
        }
        tracing::info!(id = %self.id, "VMM exited");
        self.set_state(InstanceState::Stopped, Some("the guest powered off".into())).await;
    }

    /// Applies what the guest watch of the current boot learnt.
    async fn on_guest(&mut self, event: GuestEvent) {
        match event {
            GuestEvent::HostKeys(keys) if keys != self.record.ssh_host_keys => {
                tracing::info!(id = %self.id, keys = keys.len(), "the guest published its SSH host keys");
                self.record.ssh_host_keys = keys;
            }
            GuestEvent::Reachable(at)
                if self.record.ready_at.is_none() && self.record.state == InstanceState::Running =>
            {
                tracing::info!(id = %self.id, "the guest is reachable");
                self.record.ready_at = Some(at);
                // A VM found running after an agent restart started before anyone timed it.
                match self.boot_start {
                    Some((guest::GuestStart::Boot, since)) => self.ctx.metrics.guest_ready(false, since.elapsed()),
                    Some((guest::GuestStart::Resumed, since)) => self.ctx.metrics.guest_ready(true, since.elapsed()),
                    Some((guest::GuestStart::Found, _)) | None => {}
                }
            }
            _ => return,
        }
        self.publish().await;
        self.ctx.guest_news.notify_one();
    }

    /// Persists and publishes the record as it is (same state).
    async fn publish(&mut self) {
        let (state, reason) = (self.record.state, self.record.reason.clone());
        self.set_state(state, reason).await;
    }

    /// Stops the console pump and the guest watch (the VM is gone or going).
    fn stop_guest_io(&mut self) {
        for task in [self.pump.take(), self.watch.take()].into_iter().flatten() {
            task.abort();
        }
    }

    /// Starts the guest watch of a new boot: it reads the console from now on, or the whole
    /// `console.log` for a VM found running.
    fn start_watch(&mut self, start: GuestStart) {
        if let Some(watch) = self.watch.take() {
            watch.abort();
        }
        let Some(me) = self.me.clone() else { return };
        self.boot += 1;
        self.boot_start = Some((start, std::time::Instant::now()));
        let ssh = self.record.desired.nics.first().map(|nic| SocketAddr::from((nic.address.addr, 22)));
        let (tap, console) = mpsc::channel(guest::CONSOLE_BACKLOG);
        *self.shared.console_tap.lock().unwrap_or_else(|e| e.into_inner()) = Some(tap);
        let w = guest::Watch {
            boot: self.boot,
            ssh,
            netns: self.ctx.config.netns.clone(),
            keys_known: !self.record.ssh_host_keys.is_empty(),
            console,
            console_log: self.dir.console_log(),
            console_log_max_bytes: match &self.ctx.config.driver {
                super::host::DriverKind::Qemu(opts) => opts.console_log_max_bytes,
                super::host::DriverKind::Simulated => u64::MAX,
            },
            start,
            runner: me,
        };
        // A root: it lives as long as the boot, and would hold a request's span open as long.
        let span = tracing::info_span!(parent: None, "guest", id = %self.id, boot = self.boot);
        self.watch = Some(tokio::spawn(tracing::Instrument::instrument(guest::watch(w), span)));
    }

    /// (Re)starts the console pump (the only client of `serial.sock`) and the guest watch.
    fn start_pump(&mut self, start: GuestStart) {
        self.start_watch(start);
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
        let socket = self.dir.serial_socket();
        let out = self.shared.console_out.clone();
        let input = self.shared.console_in_rx.clone();
        let tap = self.shared.console_tap.clone();
        let id = self.id;
        self.pump = Some(tokio::spawn(async move {
            if let Err(e) = pump_console(&socket, out, &tap, input).await {
                tracing::debug!(%id, error = %e, "console pump ended");
            }
        }));
    }
}

/// Moves the serial console's bytes between `serial.sock` and the viewers (`out`, lossy for a
/// viewer that lags) and the guest watch (`tap`, lossless: the pump waits for it), and the
/// viewers' input to the guest.
async fn pump_console(
    socket: &Path,
    out: broadcast::Sender<Vec<u8>>,
    tap: &ConsoleTap,
    input: Arc<tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>>,
) -> std::io::Result<()> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut rd, mut wr) = stream.into_split();
    let mut input = input.lock_owned().await;
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            n = rd.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                let watch = tap.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(watch) = watch {
                    // A watch that is gone (its boot ended) just misses the rest.
                    let _ = watch.send(buf[..n].to_vec()).await;
                }
                let _ = out.send(buf[..n].to_vec());
            }
            data = input.recv() => match data {
                Some(data) => wr.write_all(&data).await?,
                None => return Ok(()),
            },
        }
    }
}

/// A customer-readable sentence for a failed operation.
fn failure_reason(e: &InstanceError) -> String {
    match e {
        InstanceError::Image { .. } => "the instance's image could not be fetched".into(),
        InstanceError::Network { .. } => "the instance's network could not be set up".into(),
        InstanceError::Storage { .. } => "the instance's disks could not be prepared".into(),
        InstanceError::Vmm { operation, .. } => format!("the hypervisor failed to {operation} the instance"),
        InstanceError::Snapshot { .. } => "the instance could not be restored from its snapshot".into(),
        other => other.to_string(),
    }
}
