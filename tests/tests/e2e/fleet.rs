//! Hosts join the fleet over mutual TLS, report, and refuse whoever is not the control plane.

use std::time::Duration;

use cloud_proto::agent::v1 as pb;
use cloud_tests::net::TestNetwork;
use cloud_tests::process::{agent_join, clients, spawn_agent, spawn_control_plane, wait_until};

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_join_and_report_and_strangers_are_refused() {
    let mut net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let cp = spawn_control_plane(&net, dir.path()).await;
    let a1 = spawn_agent(&mut net, 1, &cp, dir.path()).await;
    let a2 = spawn_agent(&mut net, 2, &cp, dir.path()).await;

    // Both hosts become active through their reports, each with its own /24.
    wait_until(Duration::from_secs(30), "two active hosts", || async {
        let hosts = cp.hosts().await;
        hosts.len() == 2 && hosts.iter().all(|h| h["state"] == "active" && h["lease_expires_at"].is_string())
    })
    .await;
    let hosts = cp.hosts().await;
    assert_ne!(hosts[0]["instance_subnet"], hosts[1]["instance_subnet"]);
    let ids: Vec<&str> = hosts.iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&a1.host_id().as_str()) && ids.contains(&a2.host_id().as_str()));

    // A spent token admits nobody else.
    let net3 = net.add_host(3);
    let out = agent_join(&net3, &dir.path().join("agent-3"), &cp, &a1.join_token);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already used"), "{stderr}");
    assert_eq!(cp.hosts().await.len(), 2);

    let ((cp_cert, cp_key), ca) = clients::control_plane_identity(&cp).await;

    // The control plane's certificate gets an answer from the agent.
    let mut client = clients::agent(&a1.endpoint, &a1.host_id(), &ca, Some((cp_cert, cp_key))).await.unwrap();
    let info = client.get_host_info(pb::GetHostInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.host_id, a1.host_id());
    assert_eq!(info.total.unwrap().vcpus, 4);

    // No client certificate: the TLS handshake or the call fails.
    let refused = match clients::agent(&a1.endpoint, &a1.host_id(), &ca, None).await {
        Err(_) => true,
        Ok(mut c) => c.get_host_info(pb::GetHostInfoRequest {}).await.is_err(),
    };
    assert!(refused, "an agent answered a client without a certificate");

    // Another host's certificate is not the control plane's.
    let mut as_host2 =
        clients::agent(&a1.endpoint, &a1.host_id(), &ca, Some(clients::host_identity(&a2.state_dir))).await.unwrap();
    let err = as_host2.get_host_info(pb::GetHostInfoRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // Host 2 cannot report for host 1.
    let mut cp_client =
        clients::control_plane(&cp.grpc_url, &ca, Some(clients::host_identity(&a2.state_dir))).await.unwrap();
    let err = cp_client.report(pb::HostReport { host_id: a1.host_id(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    // And nobody reports without a certificate.
    let mut anonymous = clients::control_plane(&cp.grpc_url, &ca, None).await.unwrap();
    let err = anonymous.report(pb::HostReport { host_id: a1.host_id(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
}
