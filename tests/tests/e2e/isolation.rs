//! What a guest can reach of its host: nothing of the host itself (its agent, sshd, databases,
//! any address of it), while the way out through the host's NAT stays open.

use cloud_tests::cloud::OneHostCloud;
use cloud_tests::guest::minimal_image;

/// Whether one ping from the guest `name` to `target` is answered.
async fn pings(cloud: &OneHostCloud, name: &str, target: &str) -> bool {
    let command = format!("ping -c 1 -W 2 {target} >/dev/null 2>&1; echo rc=$?");
    let out = cloud.ssh(name, &command).await;
    match out.trim() {
        "rc=0" => true,
        "rc=1" => false,
        other => panic!("ping from {name} to {target} said {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_reaches_none_of_its_hosts_own_addresses_but_still_gets_out() {
    let cloud = OneHostCloud::start().await;
    cloud.cli.create_minimal_image(&minimal_image()).await;
    let line = "instance create web-1 --image minimal --memory 256MiB --ssh-key alice --wait";
    let created = cloud.lifecycle(line, "running").await;
    let address = created["address"].as_str().unwrap();
    let bridge = format!("{}.1", address.rsplit_once('.').unwrap().0);
    // The host's own addresses: its bridge (the guest's gateway) and its uplink (where the agent
    // serves gRPC).
    let uplink = cloud.agent.net.address.to_string();
    assert!(!pings(&cloud, "web-1", &bridge).await, "the guest reached its host at {bridge}");
    assert!(!pings(&cloud, "web-1", &uplink).await, "the guest reached its host at {uplink}");
    // Beyond the host (the test network's gateway, in another namespace): through the NAT.
    let outside = cloud.cp.api.trim_start_matches("http://").split(':').next().unwrap().to_owned();
    assert!(pings(&cloud, "web-1", &outside).await, "the guest cannot get out to {outside}");
}
