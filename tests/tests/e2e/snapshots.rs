//! Snapshots through the API and cloudctl: a real instance (the minimal image under QEMU) is
//! snapshotted with and without memory, listed, refused where it must be, restored into a new
//! instance that has the data written before, and deleted with its files on the host.

use std::path::Path;

use cloud_tests::cloud::{OneHostCloud, Store};
use cloud_tests::guest::minimal_image;
use serde_json::Value;

/// Where a snapshot's files are on the host, checked to hold a complete snapshot.
fn files(snapshot: &Value) -> std::path::PathBuf {
    let location = snapshot["location"].as_str().unwrap_or_else(|| panic!("no location: {snapshot}"));
    let dir = Path::new(location).to_owned();
    assert!(dir.join("snapshot.json").is_file(), "{} holds no complete snapshot", dir.display());
    dir
}

/// A control plane, one host and cloudctl, with the minimal image and the key `alice`.
async fn cloud() -> OneHostCloud {
    let cloud = OneHostCloud::start().await;
    cloud.cli.create_minimal_image(&minimal_image()).await;
    cloud
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_are_taken_listed_refused_and_deleted_through_cloudctl() {
    let cloud = cloud().await;
    let cli = &cloud.cli;
    let created = cli
        .line("instance create web-1 --image minimal --memory 256MiB --ssh-key alice --wait")
        .await
        .ok("instance create");
    let instance = &created.out["instance"];
    cloud.ssh("web-1", "echo kept > /root/kept.txt && sync").await;

    // A disk snapshot and a full one of the running instance.
    let disk = cli.line("snapshot create --instance web-1 --name disk-1 --wait").await.ok("snapshot create");
    assert_eq!(disk.out["operation"]["state"], "succeeded", "{}", disk.out);
    let snap = &disk.out["snapshot"];
    assert_eq!(
        (snap["name"].as_str(), snap["kind"].as_str(), snap["state"].as_str()),
        (Some("disk-1"), Some("disk"), Some("available")),
        "{snap}"
    );
    assert!(snap["size_bytes"].as_i64().is_some_and(|n| n > 0), "{snap}");
    assert_eq!(snap["instance_id"], instance["id"], "{snap}");
    assert_eq!(snap["host_id"], instance["host_id"], "{snap}");
    let disk_files = files(snap);

    let full = cli.line("snapshot create --instance web-1 --memory --wait").await.ok("snapshot create --memory");
    let snap = &full.out["snapshot"];
    assert_eq!((snap["kind"].as_str(), snap["state"].as_str()), (Some("full"), Some("available")), "{snap}");
    assert!(snap["name"].as_str().is_some_and(|n| n.starts_with("web-1-")), "default name: {snap}");
    // Memory state makes it larger than the disks alone (256 MiB guest).
    assert!(snap["size_bytes"].as_i64() > disk.out["snapshot"]["size_bytes"].as_i64(), "{snap}");
    files(snap);

    // The guest goes on running after both.
    let after = cli.run(&["instance", "get", "web-1"]).await.ok("instance get");
    assert_eq!(after.out["state"], "running", "{}", after.out);

    let listed = cli.run(&["snapshot", "list", "--instance", "web-1"]).await.ok("snapshot list");
    let names: Vec<&str> = listed.out.as_array().unwrap().iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names.len(), 2, "{}", listed.out);
    assert!(names.contains(&"disk-1"), "{names:?}");

    // Bad input changes nothing: a taken name, an unknown instance, memory of a stopped one.
    let taken = cli.line("snapshot create --instance web-1 --name disk-1").await;
    assert_eq!(taken.code, 1, "{taken:?}");
    assert!(taken.err.contains("already has a snapshot named \"disk-1\""), "{}", taken.err);
    // An instance that does not exist is "not found" (exit 2), like any missing resource.
    let unknown = cli.line("snapshot create --instance nope").await;
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(unknown.err.contains("no instance \"nope\""), "{}", unknown.err);
    cli.run(&["instance", "stop", "web-1", "--wait"]).await.ok("stop");
    let stopped = cli.line("snapshot create --instance web-1 --memory").await;
    assert_eq!(stopped.code, 1, "{stopped:?}");
    assert!(stopped.err.contains("stopped: it has no memory to save"), "{}", stopped.err);
    let names_now = cli.run(&["snapshot", "list"]).await.ok("snapshot list");
    assert_eq!(names_now.out.as_array().map(Vec::len), Some(2), "{}", names_now.out);
    // A stopped instance's disks can be snapshotted.
    let cold =
        cli.line("snapshot create --instance web-1 --name cold-1 --wait").await.ok("snapshot of a stopped instance");
    assert_eq!(cold.out["snapshot"]["state"], "available", "{}", cold.out);

    // A restore makes a new instance from the snapshot's disks, on the host that holds them.
    let restored = cli.line("snapshot restore cold-1 --to-instance web-2 --ssh-key alice --wait").await.ok("restore");
    assert_eq!(restored.out["operation"]["kind"], "instance_restore", "{}", restored.out);
    assert_eq!(restored.out["instance"]["state"], "running", "{}", restored.out);
    assert_eq!(restored.out["instance"]["host_id"], instance["host_id"], "{}", restored.out);
    assert_ne!(restored.out["instance"]["address"], instance["address"], "a new instance, a new address");
    assert_eq!(cloud.ssh("web-2", "cat /root/kept.txt").await.trim(), "kept");
    // A snapshot with memory restores into a new instance beside the first: the same guest goes
    // on, told its new address.
    let full_name = full.out["snapshot"]["name"].as_str().unwrap().to_owned();
    let line = format!("snapshot restore {full_name} --to-instance web-3 --wait");
    let from_full = cli.line(&line).await.ok("restore of a full snapshot");
    assert_eq!(from_full.out["instance"]["state"], "running", "{}", from_full.out);
    assert_eq!(cloud.ssh("web-3", "cat /root/kept.txt").await.trim(), "kept");
    cli.line("instance delete web-3 --wait").await.ok("delete web-3");
    // One flipped byte in a snapshot's disk: the restore fails saying so, and leaves nothing.
    let cold_files = files(&cold.out["snapshot"]);
    let disk = cold_files.join("disk-0.qcow2");
    let mut bytes = std::fs::read(&disk).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&disk, &bytes).unwrap();
    let corrupt = cli.line("snapshot restore cold-1 --to-instance web-4 --wait").await;
    assert_eq!(corrupt.code, 1, "{corrupt:?}");
    assert!(corrupt.err.contains("is corrupt: disk-0.qcow2 does not match"), "{}", corrupt.err);
    let web4 = cli.line("instance get web-4").await;
    assert_eq!(web4.code, 2, "a failed restore left an instance: {web4:?}");
    bytes[middle] ^= 0xff;
    std::fs::write(&disk, &bytes).unwrap();
    let taken = cli.line("snapshot restore cold-1 --to-instance web-2").await;
    assert_eq!(taken.code, 1, "{taken:?}");
    assert!(taken.err.contains("already exists"), "{}", taken.err);

    // Deleting removes the files on the host; the snapshot is gone from the API.
    let deleted = cli.line("snapshot delete disk-1 --wait").await.ok("snapshot delete");
    assert_eq!(deleted.out["operation"]["state"], "succeeded", "{}", deleted.out);
    assert_eq!(deleted.out["snapshot"]["state"], "deleted", "{}", deleted.out);
    assert!(!disk_files.exists(), "{} is still there", disk_files.display());
    let gone = cli.line("snapshot get disk-1").await;
    assert_eq!(gone.code, 2, "{gone:?}");
    let again = cli.line("snapshot delete disk-1").await;
    assert_eq!(again.code, 2, "{again:?}");
    let restore_gone = cli.line("snapshot restore disk-1 --to-instance web-3").await;
    assert_eq!(restore_gone.code, 2, "{restore_gone:?}");
    let instances = cli.run(&["instance", "list"]).await.ok("instance list");
    assert_eq!(instances.out.as_array().map(Vec::len), Some(2), "no half-made instance: {}", instances.out);
    // The name is free again.
    cli.line("snapshot create --instance web-1 --name disk-1 --wait").await.ok("the name is free again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_policy_takes_snapshots_on_schedule_and_keeps_the_newest() {
    let cloud = cloud().await;
    let cli = &cloud.cli;
    cli.line("instance create web-1 --image minimal --memory 256MiB --wait").await.ok("instance create");

    let too_often = cli.line("snapshot policy set --instance web-1 --every 5s --keep 2").await;
    assert_eq!(too_often.code, 1, "{too_often:?}");
    assert!(too_often.err.contains("every_secs: must be between 10 and 604800"), "{}", too_often.err);
    let none = cli.line("snapshot policy get --instance web-1").await;
    assert_eq!(none.code, 2, "a refused policy was stored: {none:?}");

    let set = cli.line("snapshot policy set --instance web-1 --every 10s --keep 2").await.ok("policy set");
    assert_eq!((set.out["every_secs"].as_i64(), set.out["keep"].as_i64()), (Some(10), Some(2)), "{}", set.out);
    // The first scheduled snapshot is taken at once; once a third is there, the first goes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let mut first: Option<String> = None;
    loop {
        let listed = cli.line("snapshot list --instance web-1").await.ok("snapshot list");
        let items = listed.out.as_array().cloned().unwrap_or_default();
        assert!(items.iter().all(|s| s["scheduled"] == true), "{}", listed.out);
        if first.is_none() {
            first = items.first().and_then(|s| s["id"].as_str()).map(str::to_owned);
        }
        let available = items.iter().filter(|s| s["state"] == "available").count();
        let first_gone = first.as_deref().is_some_and(|id| items.iter().all(|s| s["id"] != id));
        assert!(available <= 2, "more than `keep` scheduled snapshots stayed: {}", listed.out);
        if first_gone && available == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the policy did not take and prune in time: {}", listed.out);
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }

    let cleared = cli.line("snapshot policy clear --instance web-1").await.ok("policy clear");
    assert_eq!(cleared.out["keep"], 2, "{}", cleared.out);
    let gone = cli.line("snapshot policy get --instance web-1").await;
    assert_eq!(gone.code, 2, "{gone:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_suspended_instance_frees_its_host_and_resumes_where_it_was() {
    let cloud = cloud().await;
    let cli = &cloud.cli;
    let memory = |hosts: &serde_json::Value| hosts[0]["reserved_memory_bytes"].as_i64();
    cloud.lifecycle("instance create web-1 --image minimal --memory 256MiB --ssh-key alice --wait", "running").await;
    // In memory only (tmpfs): it survives a resume, not a boot.
    cloud.ssh("web-1", "echo in-memory > /dev/shm/mark").await;
    let before = cli.line("host list").await.ok("host list");
    assert_eq!(memory(&before.out), Some(256 << 20), "{}", before.out);

    let suspended = cli.line("instance suspend web-1 --wait").await.ok("suspend");
    assert_eq!(suspended.out["operation"]["kind"], "instance_suspend", "{}", suspended.out);
    assert_eq!(suspended.out["instance"]["state"], "suspended", "{}", suspended.out);
    let freed = cli.line("host list").await.ok("host list");
    assert_eq!(memory(&freed.out), Some(0), "a suspended instance holds no memory: {}", freed.out);
    let again = cli.line("instance suspend web-1").await;
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.err.contains("is suspended"), "{}", again.err);

    let resumed = cloud.lifecycle("instance start web-1 --wait", "running").await;
    assert_eq!(resumed["address"], suspended.out["instance"]["address"], "it keeps its address");
    assert_eq!(cloud.ssh("web-1", "cat /dev/shm/mark").await.trim(), "in-memory", "it was booted, not resumed");
    let taken = cli.line("host list").await.ok("host list");
    assert_eq!(memory(&taken.out), Some(256 << 20), "{}", taken.out);

    // One flipped byte in the saved memory: the resume fails saying so; nothing runs it.
    cli.line("instance suspend web-1 --wait").await.ok("suspend");
    let saved: Vec<_> = std::fs::read_dir(cloud.agent.state_dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path().join("memory.state"))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(saved.len(), 1, "one suspended instance, one memory state: {saved:?}");
    let mut bytes = std::fs::read(&saved[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&saved[0], &bytes).unwrap();
    let corrupt = cli.line("instance start web-1 --wait").await;
    assert_eq!(corrupt.code, 1, "{corrupt:?}");
    assert!(corrupt.err.contains("is corrupt: memory.state does not match"), "{}", corrupt.err);
    cli.line("instance delete web-1 --wait").await.ok("delete");
}

/// The bytes of the chunks of snapshot `second` that snapshot `first` does not have: what
/// storing `second` after `first` uploaded.
async fn new_bytes(store: &cloud_store::Store, first: &str, second: &str) -> (u64, u64) {
    let manifest = |id: &str| {
        let name = cloud_store::snapshot_name(id);
        async move { store.manifest(&name).await.unwrap_or_else(|e| panic!("{name} is not in the store: {e}")) }
    };
    let (first, second) = (manifest(first).await, manifest(second).await);
    let old = first.chunks();
    let mut seen = std::collections::BTreeSet::new();
    let bytes = second
        .files
        .values()
        .flat_map(|f| &f.extents)
        .filter_map(|e| e.chunk.map(|c| (c, u64::from(e.len))))
        .filter(|(c, _)| !old.contains(c) && seen.insert(*c))
        .map(|(_, len)| len)
        .sum();
    (bytes, serde_json::to_vec(&second).unwrap().len() as u64)
}

/// Two snapshots of an instance whose disk changed by 1 MiB between them: the second stores
/// about that much; a host that never saw either restores each exactly, fetching from the store.
async fn restores_on_another_host_from_the_store(store: Store) {
    let mut cloud = OneHostCloud::start_with(store).await;
    cloud.cli.create_minimal_image(&minimal_image()).await;
    let line = "instance create web-1 --image minimal --memory 256MiB --disk 1GiB --ssh-key alice --wait";
    let web1 = cloud.lifecycle(line, "running").await;
    // 1 MiB straight onto the data disk, past what its fresh filesystem uses: exactly 1 MiB of
    // the disk changes, and the hash of the region covers both writes.
    let dev = r#"$(awk '$2=="/mnt/data"{print $1}' /proc/mounts)"#;
    let write =
        |mib: u32| format!("dd if=/dev/urandom of={dev} bs=1M seek={mib} count=1 conv=fsync 2>/dev/null && sync");
    let region = format!("dd if={dev} bs=1M skip=40 count=16 2>/dev/null | sha256sum");
    cloud.ssh("web-1", "echo kept > /root/kept.txt && sync").await;
    cloud.ssh("web-1", &write(40)).await;
    let first_hash = cloud.ssh("web-1", &region).await;
    let first = cloud.cli.line("snapshot create --instance web-1 --name s1 --wait").await.ok("snapshot s1");
    cloud.ssh("web-1", &write(48)).await;
    let second_hash = cloud.ssh("web-1", &region).await;
    assert_ne!(first_hash, second_hash);
    let second = cloud.cli.line("snapshot create --instance web-1 --name s2 --wait").await.ok("snapshot s2");
    let id = |run: &cloud_tests::cloudctl::Run| run.out["snapshot"]["id"].as_str().unwrap().to_owned();
    let (uploaded, manifest) = new_bytes(&cloud.store(), &id(&first), &id(&second)).await;
    eprintln!("second snapshot after 1 MiB of changes: {uploaded} bytes of new chunks, manifest {manifest} bytes");
    assert!(uploaded >= 1 << 20, "the change itself must be stored: {uploaded}");
    assert!(uploaded * 10 <= 11 << 20, "the second snapshot stored {uploaded} bytes for 1 MiB of changes");

    // A host that has never seen the snapshots (the first host is drained), nor the image: its files are only in the store now, not in the control plane's blobs.
    let blobs = cloud.cp.data_dir.join("blobs/sha256");
    for entry in std::fs::read_dir(&blobs).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let host2 = cloud.add_host().await;
    assert_ne!(web1["host_id"].as_str(), Some(host2.as_str()));
    let host1 = web1["host_id"].as_str().unwrap();
    cloud.cli.line(&format!("host drain {host1}")).await.ok("host drain");
    // One flipped byte in a chunk of the store: a host that needs it refuses the restore, by
    // the chunk's name, and no instance is left half-made.
    let store = cloud.store();
    let s1 = store.manifest(&cloud_store::snapshot_name(id(&first))).await.unwrap();
    let victim = s1.files["disk-0.qcow2"].extents.iter().find_map(|e| e.chunk).unwrap().hex();
    let objects = match &cloud.s3 {
        Some(s3) => s3.bucket_dir(),
        None => cloud_tests::process::shared_store(&cloud.cp.data_dir),
    };
    let chunk = objects.join("chunks").join(&victim[..2]).join(&victim);
    let good = std::fs::read(&chunk).unwrap();
    let mut bad = good.clone();
    bad[7] ^= 1;
    std::fs::write(&chunk, &bad).unwrap();
    let refused = cloud.cli.line("snapshot restore s1 --to-instance broken --ssh-key alice --wait").await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.err.contains(&format!("chunk {victim} is corrupt")), "{}", refused.err);
    assert_eq!(cloud.cli.line("instance get broken").await.code, 2, "a failed restore left an instance");
    std::fs::write(&chunk, &good).unwrap();
    for (snapshot, name, hash) in [("s1", "web-2", &first_hash), ("s2", "web-3", &second_hash)] {
        let line = format!("snapshot restore {snapshot} --to-instance {name} --ssh-key alice --wait");
        let restored = cloud.lifecycle(&line, "running").await;
        assert_eq!(restored["host_id"].as_str(), Some(host2.as_str()), "{restored}");
        assert_eq!(&cloud.ssh(name, &region).await, hash, "{name} restored from {snapshot} differs");
        assert_eq!(cloud.ssh(name, "cat /root/kept.txt").await.trim(), "kept");
    }
    // The store is away while a snapshot is taken (S3 stopped): it fails, and the earlier ones
    // stay usable.
    if let Some(s3) = cloud.s3.as_mut() {
        s3.stop();
        let failed = cloud.cli.line("snapshot create --instance web-1 --name during-outage --wait").await;
        assert_ne!(failed.code, 0, "{failed:?}");
        s3.restart().await;
        let got = cloud.cli.line("snapshot get during-outage").await.ok("snapshot get");
        assert_eq!(got.out["state"], "failed", "{}", got.out);
    }
    // An image of a snapshot's disk boots like the snapshotted instance, with its data.
    let image = cloud.cli.line("image create golden --from-snapshot s2").await.ok("image create --from-snapshot");
    assert_eq!(image.out["boot_mode"], "direct_kernel", "{}", image.out);
    let line = "instance create web-5 --image golden --memory 256MiB --disk 1GiB --ssh-key alice --wait";
    cloud.lifecycle(line, "running").await;
    assert_eq!(&cloud.ssh("web-5", &region).await, &second_hash, "the image differs from the snapshot");
    assert_eq!(cloud.ssh("web-5", "cat /root/kept.txt").await.trim(), "kept");
    let taken = cloud.cli.line("image create golden --from-snapshot s1").await;
    assert_eq!(taken.code, 1, "{taken:?}");
    let missing = cloud.cli.line("image create other --from-snapshot nope").await;
    assert_eq!(missing.code, 2, "{missing:?}");
    // The snapshots' files on the first host are not what the second used: deleting them there
    // changes nothing for a restore on the second host.
    let gone = files(&first.out["snapshot"]);
    std::fs::remove_dir_all(&gone).unwrap();
    let again = cloud.lifecycle("snapshot restore s1 --to-instance web-4 --ssh-key alice --wait", "running").await;
    assert_eq!(&cloud.ssh("web-4", &region).await, &first_hash, "{again}");

    // Tenants' data at rest is not for other local users: the config drive with the user-data,
    // the snapshot copies, the store's chunks and the hosts' chunk caches.
    let web1_dir = cloud.agent.state_dir.join("instances").join(web1["id"].as_str().unwrap());
    let chunk_of_s2 = store.manifest(&cloud_store::snapshot_name(id(&second))).await.unwrap().chunks();
    let chunk_hex = chunk_of_s2.iter().next().unwrap().hex();
    let mut private = vec![web1_dir.join("cidata.img"), web1_dir.join("agent.json"), web1_dir.join("disk-0.qcow2")];
    private.push(cloud.agent.state_dir.join("snapshots").join(id(&second)).join("cidata.img"));
    if cloud.s3.is_none() {
        private.push(objects.join("chunks").join(&chunk_hex[..2]).join(&chunk_hex));
    }
    let cached = cloud.more[0].state_dir.join("chunks");
    private.extend(
        std::fs::read_dir(&cached)
            .unwrap()
            .flatten()
            .flat_map(|fan| std::fs::read_dir(fan.path()).unwrap().flatten().map(|c| c.path()))
            .take(1),
    );
    // The test's own directory is private (tempfile's 0700): open it so that only the modes the
    // services set protect the files.
    std::fs::set_permissions(cloud.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    for path in &private {
        assert!(path.is_file(), "{} is missing", path.display());
        let read = std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", "cat"])
            .arg(path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!read.success(), "the nobody user can read {}", path.display());
    }

    // Deleting a snapshot removes the copies the hosts that restored it rebuilt, and the store's.
    let copy = cloud.more[0].state_dir.join("snapshots").join(id(&first));
    assert!(copy.join("snapshot.json").is_file(), "the restoring host keeps a copy: {}", copy.display());
    cloud.cli.line("snapshot delete s1 --wait").await.ok("snapshot delete");
    assert!(!copy.exists(), "{} is still there", copy.display());
    let gone = cloud.store().manifest(&cloud_store::snapshot_name(id(&first))).await;
    assert!(matches!(gone, Err(cloud_store::StoreError::NotFound { .. })), "{gone:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_restores_on_a_host_that_never_saw_it_from_the_local_store() {
    restores_on_another_host_from_the_store(Store::Local).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_restores_on_a_host_that_never_saw_it_from_s3() {
    restores_on_another_host_from_the_store(Store::S3).await;
}

/// What a guest remembers only in memory: a file in tmpfs and a process started over SSH.
const REMEMBER: &str =
    "echo in-memory > /dev/shm/mark && (sleep 86400 </dev/null >/dev/null 2>&1 & echo $! > /dev/shm/pid)";
/// Prints the mark, whether the process still runs, the hostname and eth0's address.
const RECALL: &str = "cat /dev/shm/mark; kill -0 $(cat /dev/shm/pid) && echo alive; hostname; ip -o -4 addr show dev eth0 | awk '{print $4}'";
/// eth0's MAC address.
const MAC: &str = "cat /sys/class/net/eth0/address";

/// What [`RECALL`] must print for `instance` (from the API).
fn recalled(instance: &Value) -> String {
    let name = instance["name"].as_str().unwrap();
    let address = instance["address"].as_str().unwrap();
    format!("in-memory\nalive\n{name}\n{address}/24")
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_state_moves_to_another_host_under_a_new_address_with_its_processes() {
    let mut cloud = cloud().await;
    let line = "instance create web-1 --image minimal --memory 256MiB --disk 1GiB --ssh-key alice --wait";
    let before = cloud.lifecycle(line, "running").await;
    cloud.ssh("web-1", "echo on-disk > /root/kept.txt && sync").await;
    cloud.ssh("web-1", REMEMBER).await;
    assert_eq!(cloud.ssh("web-1", RECALL).await.trim(), recalled(&before));
    cloud.cli.line("snapshot create --instance web-1 --name live --memory --wait").await.ok("snapshot --memory");
    cloud.cli.line("instance suspend web-1 --wait").await.ok("suspend");
    // Its host takes no new placements, so the resume goes elsewhere, from the store, with an
    // address of the new host: the guest goes on where it was and is told its new address.
    let host2 = cloud.add_host().await;
    let host1 = before["host_id"].as_str().unwrap();
    cloud.cli.line(&format!("host drain {host1}")).await.ok("host drain");
    let after = cloud.lifecycle("instance start web-1 --wait", "running").await;
    assert_eq!(after["host_id"].as_str(), Some(host2.as_str()), "{after}");
    assert_eq!(after["id"], before["id"]);
    assert_ne!(after["address"], before["address"], "an address of the new host");
    assert_eq!(cloud.ssh("web-1", "cat /root/kept.txt").await.trim(), "on-disk");
    assert_eq!(cloud.ssh("web-1", RECALL).await.trim(), recalled(&after), "web-1 was not resumed as it was");
    let ops = cloud.cli.line("operation list").await.ok("operation list");
    let resume = ops.out.as_array().unwrap().iter().find(|o| o["kind"] == "instance_resume").cloned().unwrap();
    assert_eq!(resume["state"], "succeeded", "{resume}");

    // The memory snapshot restores into a new instance on the second host: the same guest,
    // processes and all, under the new instance's name, MAC and address, with the host keys
    // the snapshotted guest published (`instance ssh` checks them strictly).
    let line = "snapshot restore live --to-instance web-2 --ssh-key alice --wait";
    let web2 = cloud.lifecycle(line, "running").await;
    assert_eq!(web2["host_id"].as_str(), Some(host2.as_str()), "{web2}");
    assert_ne!(web2["address"], after["address"]);
    assert_eq!(cloud.ssh("web-2", RECALL).await.trim(), recalled(&web2), "web-2 is not the snapshotted guest");
    assert_ne!(cloud.ssh("web-2", MAC).await, cloud.ssh("web-1", MAC).await, "a new instance has a MAC of its own");
    assert_eq!(cloud.ssh("web-2", "cat /root/kept.txt").await.trim(), "on-disk");
    // The two copies are two machines now: each answers on its own address.
    assert_eq!(cloud.ssh("web-1", "hostname").await.trim(), "web-1");
    // A guest whose agent does not answer cannot be told its new address: it boots afresh
    // from the snapshot's disks with the new instance's spec, reachable, without its processes.
    cloud.ssh("web-1", "kill -STOP $(pidof qemu-ga)").await;
    cloud.cli.line("snapshot create --instance web-1 --name mute --memory --wait").await.ok("snapshot mute");
    let web3 = cloud.lifecycle("snapshot restore mute --to-instance web-3 --ssh-key alice --wait", "running").await;
    assert_eq!(cloud.ssh("web-3", "hostname; cat /root/kept.txt").await.trim(), "web-3\non-disk");
    let mark = cloud.cli.run(&["instance", "ssh", "web-3", "-i", &cloud.key, "--", "cat /dev/shm/mark"]).await;
    assert_ne!(mark.code, 0, "a guest booted afresh has no memory of the old one: {mark:?}");
    assert_ne!(web3["address"], web2["address"]);
    cloud.cli.line("snapshot delete mute --wait").await.ok("snapshot delete");

    // The saved state is gone from both hosts once the instance runs again: what is left is
    // the snapshot `live`, where it was taken and where it was restored.
    let live = cloud.cli.line("snapshot get live").await.ok("snapshot get").out["id"].as_str().unwrap().to_owned();
    for agent in [&cloud.agent, &cloud.more[0]] {
        let dir = agent.state_dir.join("snapshots");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        assert_eq!(left, std::slice::from_ref(&live), "saved state left on a host");
    }
}
