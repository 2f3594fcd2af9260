//! One VM through its whole life: create from the image cache, SSH, console, idempotent and
//! stale ensures, tunnel, agent death and restart (the VM keeps running), stop, start, delete.

use std::time::{Duration, Instant};

use host_agent::instances::{InstanceError, InstanceState, PowerState};
use host_agent::network::tap_name;
use tokio::io::AsyncReadExt;

use crate::common::*;

const IP: &str = "10.100.3.2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_lives_survives_agent_restart_and_is_deleted_cleanly() {
    let host = TestHost::create();
    let key = ssh_key(host.tmp.path(), "alice");
    let desired = minimal_instance(&host, &key, "web-1", IP);
    let id = desired.id;

    let manager = host.start_manager().await;
    let mut events = manager.watch();
    let status = manager.ensure(desired.clone(), PowerState::Running, 1).await.unwrap();
    assert_eq!((status.state, status.generation), (InstanceState::Running, 1));
    // The blobs went through the cache.
    let cached = host.images_dir().join("sha256").join(desired.image.kernel_sha256.as_ref().unwrap());
    assert!(cached.exists());
    let mut seen = Vec::new();
    while let Ok(s) = events.try_recv() {
        seen.push(s.state);
    }
    assert!(seen.contains(&InstanceState::Starting) && seen.contains(&InstanceState::Running), "{seen:?}");
    let tap = tap_name(id, 0);
    assert!(host.ip_ok(&["link", "show", "dev", &tap]));
    let (_, master) = run("ip", &["-n", &host.netns, "-o", "link", "show", "dev", &tap]);
    assert!(master.contains("master cloudbr0"), "{master}");

    // Console: a viewer gets the boot from scrollback plus live output.
    let mut console = manager.console(id).await.unwrap();
    let mut text = String::from_utf8_lossy(&console.scrollback).into_owned();
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while !text.contains("cloud-minimal: ready") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, console.output.recv()).await {
            Ok(Ok(bytes)) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            other => panic!("console ended before ready: {other:?}; got {text}"),
        }
    }
    let hostname = wait_for_ssh(&host, &key.private, IP, "hostname", BOOT_TIMEOUT).await.unwrap();
    assert_eq!(hostname, "web-1");
    let second = manager.console(id).await.unwrap();
    assert!(String::from_utf8_lossy(&second.scrollback).contains("cloud-minimal: ready"));
    // Just after console.log's bound was applied (copied to console.log.1, emptied), the
    // scrollback is the end of the older part.
    let dir = vmm::InstanceDir::new(host.instances_dir().join(id.to_string()));
    std::fs::copy(dir.console_log(), dir.console_log_rotated()).unwrap();
    std::fs::OpenOptions::new().write(true).open(dir.console_log()).unwrap().set_len(0).unwrap();
    let third = manager.console(id).await.unwrap();
    assert!(String::from_utf8_lossy(&third.scrollback).contains("cloud-minimal: ready"));

    // The record holds the tenant's user-data: only the agent reads it.
    let record = std::fs::metadata(host.instances_dir().join(id.to_string()).join("agent.json")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&record.permissions()) & 0o777, 0o600);

    // Same generation: a no-op. Older: a typed error.
    let pid = qemu_pid(&host.instances_dir(), id).unwrap();
    let again = manager.ensure(desired.clone(), PowerState::Running, 1).await.unwrap();
    assert_eq!((again.state, again.generation), (InstanceState::Running, 1));
    assert_eq!(qemu_pid(&host.instances_dir(), id), Some(pid));
    let stale = manager.ensure(desired.clone(), PowerState::Stopped, 0).await.unwrap_err();
    assert!(matches!(stale, InstanceError::StaleGeneration { requested: 0, current: 1, .. }), "{stale:?}");
    let used = manager.capacity_used().await;
    assert_eq!((used.instances, used.vcpus, used.memory_mib), (1, 1, 256));

    // Tunnel to the guest's SSH port.
    let mut tunnel = manager.tunnel(id, 22).await.unwrap();
    let mut banner = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), tunnel.read_exact(&mut banner)).await.unwrap().unwrap();
    assert_eq!(&banner, b"SSH-");
    drop(tunnel);

    // Agent death: the VM keeps running; a new manager re-attaches with the same generation.
    drop(console);
    drop(second);
    drop(manager);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(process_exists(pid));
    let manager = host.start_manager().await;
    let status = manager.get(id).await.unwrap();
    assert_eq!((status.state, status.generation), (InstanceState::Running, 1));
    assert_eq!(qemu_pid(&host.instances_dir(), id), Some(pid));
    assert!(host.ip_ok(&["link", "show", "dev", &tap]), "reconcile must keep owned taps");
    let uptime = ssh_ok(&host, &key.private, IP, "cut -d' ' -f1 /proc/uptime").await.unwrap();
    assert!(uptime.parse::<f64>().unwrap() > 1.0);

    // Stop: the guest powers off; start again: SSH works.
    let stopped = manager.stop(id, 2).await.unwrap();
    assert_eq!((stopped.state, stopped.generation), (InstanceState::Stopped, 2));
    assert!(!process_exists(pid));
    let running = manager.ensure(desired.clone(), PowerState::Running, 3).await.unwrap();
    assert_eq!(running.state, InstanceState::Running);
    wait_for_ssh(&host, &key.private, IP, "true", BOOT_TIMEOUT).await.unwrap();
    let pid = qemu_pid(&host.instances_dir(), id).unwrap();

    // Agent and VMM both die (host crash): the restarted manager relaunches what should run.
    drop(manager);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_exists(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let manager = host.start_manager().await;
    let status = manager.get(id).await.unwrap();
    assert_eq!((status.state, status.generation), (InstanceState::Running, 3));
    wait_for_ssh(&host, &key.private, IP, "true", BOOT_TIMEOUT).await.unwrap();
    let pid = qemu_pid(&host.instances_dir(), id).unwrap();

    // Delete: no process, no tap, no directory, nothing of it in nftables.
    let deleted = manager.delete(id, 4).await.unwrap();
    assert_eq!((deleted.state, deleted.generation), (InstanceState::Deleted, 4));
    assert!(!process_exists(pid));
    assert!(!host.ip_ok(&["link", "show", "dev", &tap]));
    assert!(!host.instances_dir().join(id.to_string()).exists());
    let rules = host.nft_ruleset();
    assert!(rules.contains("masquerade") && !rules.contains(&tap), "{rules}");
    assert!(matches!(manager.get(id).await, Err(InstanceError::NotFound { .. })));
    assert_eq!(manager.delete(id, 4).await.unwrap().state, InstanceState::Deleted);
    let late = manager.ensure(desired, PowerState::Running, 3).await.unwrap_err();
    assert!(matches!(late, InstanceError::StaleGeneration { .. }), "{late:?}");
    assert_eq!(manager.capacity_used().await.instances, 0);
}
