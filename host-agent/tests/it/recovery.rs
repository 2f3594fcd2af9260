//! Restart safety without booting: half-created directories and orphan taps are cleaned up.

use host_agent::instances::{InstanceId, InstanceManager};
use host_agent::network::tap_name;

use crate::common::*;

#[tokio::test]
async fn start_removes_half_created_instances_and_orphan_taps() {
    let host = TestHost::create();
    let half = InstanceId(uuid::Uuid::new_v4());
    let no_record = InstanceId(uuid::Uuid::new_v4());
    for id in [half, no_record] {
        std::fs::create_dir_all(host.instances_dir().join(id.to_string())).unwrap();
    }
    std::fs::write(host.instances_dir().join(half.to_string()).join("creating"), b"").unwrap();
    std::fs::write(host.instances_dir().join(half.to_string()).join("agent.json"), b"{}").unwrap();
    std::fs::create_dir_all(host.instances_dir().join("not-an-instance")).unwrap();
    let half_tap = tap_name(half, 0);
    let orphan_tap = "tap-deadbeef3";
    for tap in [half_tap.as_str(), orphan_tap] {
        assert!(host.ip_ok(&["tuntap", "add", "dev", tap, "mode", "tap"]));
    }
    assert!(host.ip_ok(&["tuntap", "add", "dev", "keepme0", "mode", "tap"]));

    let manager: InstanceManager = host.start_manager().await;
    assert!(manager.list().await.is_empty());
    assert!(!host.instances_dir().join(half.to_string()).exists());
    assert!(!host.instances_dir().join(no_record.to_string()).exists());
    assert!(host.instances_dir().join("not-an-instance").exists(), "foreign directories are left alone");
    assert!(!host.ip_ok(&["link", "show", "dev", &half_tap]));
    assert!(!host.ip_ok(&["link", "show", "dev", orphan_tap]));
    assert!(host.ip_ok(&["link", "show", "dev", "keepme0"]), "only our taps are reconciled");
    assert!(host.ip_ok(&["link", "show", "dev", "cloudbr0"]));
    assert!(host.nft_ruleset().contains("table ip cloud_agent"));
    // Starting twice is idempotent.
    drop(manager);
    host.start_manager().await;
}
