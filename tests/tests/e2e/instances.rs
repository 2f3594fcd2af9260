//! An instance through the agent's gRPC API, as the control plane drives it: boot from the
//! minimal image, SSH with the injected key, console, agent crash and restart, delete.

use std::time::Duration;

use cloud_proto::agent::v1 as pb;
use cloud_tests::guest::{minimal_image, ssh, ssh_keygen, wait_for_ssh};
use cloud_tests::net::TestNetwork;
use cloud_tests::process::{clients, spawn_agent, spawn_control_plane, wait_until};
use tokio_stream::StreamExt;

fn instance_spec(
    id: &str,
    subnet: &str,
    image: &cloud_tests::guest::MinimalImage,
    key: &str,
) -> (pb::InstanceSpec, String) {
    let prefix = subnet.rsplit_once('.').unwrap().0;
    let ip = format!("{prefix}.2");
    let spec = pb::InstanceSpec {
        instance_id: id.to_owned(),
        hostname: "vm-1".to_owned(),
        vcpus: 1,
        memory_bytes: 256 << 20,
        disk_bytes: 0,
        image: Some(pb::ImageRef {
            image_id: "minimal".to_owned(),
            boot_mode: pb::BootMode::DirectKernel as i32,
            kernel_sha256: image.kernel_sha256.clone(),
            initrd_sha256: image.initrd_sha256.clone(),
            kernel_cmdline: image.cmdline.clone(),
            ..Default::default()
        }),
        nics: vec![pb::NicSpec {
            mac: "52:54:00:aa:00:02".to_owned(),
            address: format!("{ip}/24"),
            gateway: format!("{prefix}.1"),
        }],
        ssh_authorized_keys: vec![key.to_owned()],
        user_data: String::new(),
        project_id: String::new(),
    };
    (spec, ip)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_boots_answers_ssh_survives_an_agent_crash_and_is_deleted() {
    let image = minimal_image();
    let mut net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let cp = spawn_control_plane(&net, dir.path()).await;
    image.seed_blobs(&cp.data_dir);
    let mut agent = spawn_agent(&mut net, 1, &cp, dir.path()).await;
    let host_id = agent.host_id();
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(agent.state_dir.join("identity/host.json")).unwrap()).unwrap();
    let subnet = record["instance_subnet"].as_str().unwrap().trim_end_matches("/24").to_owned();

    let (key, public) = ssh_keygen(dir.path(), "alice");
    let (stranger, _) = ssh_keygen(dir.path(), "mallory");
    let id = uuid::Uuid::new_v4().to_string();
    let (spec, ip) = instance_spec(&id, &subnet, &image, &public);
    let ((cert, key_pem), ca) = clients::control_plane_identity(&cp).await;
    let mut client =
        clients::agent(&agent.endpoint, &host_id, &ca, Some((cert.clone(), key_pem.clone()))).await.unwrap();

    let ensure = pb::EnsureInstanceRequest {
        spec: Some(spec.clone()),
        desired_power_state: pb::PowerState::Running as i32,
        generation: 1,
    };
    client.ensure_instance(ensure.clone()).await.unwrap();
    let uname = wait_for_ssh(&agent.net.netns, &key, &ip, Duration::from_secs(120)).await;
    assert!(uname.contains("Linux vm-1"), "{uname}");
    let refused = ssh(&agent.net.netns, &stranger, &ip, "true");
    assert!(refused.is_err(), "a key that was not injected got in");

    // The same generation again changes nothing.
    let again = client.ensure_instance(ensure.clone()).await.unwrap().into_inner();
    assert_eq!((again.state, again.generation), (pb::InstanceState::Running as i32, 1));

    // The console shows the boot (scrollback from console.log).
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::ConsoleInput { kind: Some(pb::console_input::Kind::InstanceId(id.clone())) }).await.unwrap();
    let mut console = client.console(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(out)) = console.next().await {
            seen.push_str(&String::from_utf8_lossy(&out.data));
            if seen.contains("cloud-minimal: ready") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "console output: {seen}");
    drop(tx);

    // kill -9 the agent: the VM keeps answering; a new agent reports it with the same generation.
    agent.proc.as_mut().unwrap().kill_hard();
    ssh(&agent.net.netns, &key, &ip, "true").expect("the VM stopped answering when its agent died");
    agent.start().await;
    let mut client = clients::agent(&agent.endpoint, &host_id, &ca, Some((cert, key_pem))).await.unwrap();
    wait_until(Duration::from_secs(30), "the restarted agent to report the instance running", || {
        let mut client = client.clone();
        let id = id.clone();
        async move {
            let s = client.get_instance(pb::GetInstanceRequest { instance_id: id }).await;
            s.is_ok_and(|s| {
                let s = s.into_inner();
                s.state == pb::InstanceState::Running as i32 && s.generation == 1
            })
        }
    })
    .await;
    ssh(&agent.net.netns, &key, &ip, "true").expect("no SSH after the agent restarted");

    // Delete: process, tap and files go.
    let deleted = client
        .delete_instance(pb::InstanceActionRequest { instance_id: id.clone(), generation: 2 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.state, pb::InstanceState::Deleted as i32);
    assert!(!agent.state_dir.join("instances").join(&id).exists(), "the instance directory is still there");
    let links = std::process::Command::new("ip").args(["-n", &agent.net.netns, "-o", "link", "show"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&id.replace('-', "")[..8]), "a tap is left: {links}");
    assert!(ssh(&agent.net.netns, &key, &ip, "true").is_err(), "the deleted VM still answers");
    // And a stale request is refused rather than resurrecting it.
    let stale = client.ensure_instance(ensure).await.unwrap_err();
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition, "{stale:?}");
}
