//! The REST API end to end: a customer creates an instance with an SSH key, reaches it through
//! the tunnel endpoint, stops, starts, reboots and deletes it; capacity and address come back.

use std::time::Duration;

use cloud_tests::guest::{minimal_image, ssh_keygen};
use cloud_tests::net::TestNetwork;
use cloud_tests::process::{ControlPlane, spawn_agent, spawn_control_plane_with};
use futures::StreamExt;
use reqwest::Method;
use serde_json::json;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn ssh_via_tunnel(port: u16, key: &std::path::Path, command: &str) -> Result<String, String> {
    let (key, command) = (key.to_path_buf(), command.to_owned());
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("ssh")
            .arg("-i")
            .arg(&key)
            .args(["-p", &port.to_string()])
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "root@127.0.0.1", &command])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await
    .unwrap()
}

async fn lifecycle(cp: &ControlPlane, instance: &str, action: &str, expect: &str) {
    let (status, body) =
        cp.call(Method::POST, &format!("/v1/projects/default/instances/{instance}/{action}"), None, None).await;
    assert_eq!(status, 202, "{action}: {body}");
    let op = cp.wait_operation(body["operation"]["id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{action}: {op}");
    let (_, got) = cp.call(Method::GET, &format!("/v1/projects/default/instances/{instance}"), None, None).await;
    assert_eq!(got["state"], expect, "{action}: {got}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_creates_reaches_and_deletes_an_instance_through_the_api() {
    let image = minimal_image();
    let mut net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    // At most 3 consoles and tunnels to an instance, each closed after 5 s without traffic.
    let limits = ["--limits-websockets-per-instance", "3", "--limits-websocket-idle-secs", "5"];
    let cp = spawn_control_plane_with(&net, dir.path(), &limits).await;
    let _agent = spawn_agent(&mut net, 1, &cp, dir.path()).await;
    cp.wait_active_hosts(1).await;

    // Register the image from the files on the control plane's machine, and an SSH key.
    cp.register_minimal_image(&image).await;
    let (key, public) = ssh_keygen(dir.path(), "alice");
    let (status, k) = cp
        .call(Method::POST, "/v1/projects/default/ssh-keys", Some(json!({"name": "alice", "public_key": public})), None)
        .await;
    assert_eq!(status, 201, "{k}");

    // Create, retried with the same Idempotency-Key: one instance, one operation.
    let body = json!({"name": "web-1", "image": "minimal", "vcpus": 1, "memory_mib": 256, "ssh_keys": ["alice"]});
    let (status, first) =
        cp.call(Method::POST, "/v1/projects/default/instances", Some(body.clone()), Some("create-web-1")).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) =
        cp.call(Method::POST, "/v1/projects/default/instances", Some(body.clone()), Some("create-web-1")).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(first["operation"]["id"], again["operation"]["id"]);
    let mut other = body.clone();
    other["vcpus"] = json!(2);
    let (status, conflict) =
        cp.call(Method::POST, "/v1/projects/default/instances", Some(other), Some("create-web-1")).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "conflict");

    let op = cp.wait_operation(first["operation"]["id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (_, inst) = cp.call(Method::GET, "/v1/projects/default/instances/web-1", None, None).await;
    assert_eq!(inst["state"], "running", "{inst}");
    assert!(inst["address"].as_str().is_some_and(|a| a.starts_with("10.100.")), "{inst}");
    let hosts = cp.hosts().await;
    assert_eq!(hosts[0]["reserved_vcpus"], 1);

    // SSH through the control plane's tunnel endpoint with the injected key.
    let ws = format!("{}/v1/projects/default/instances/web-1/tunnel?port=22", cp.api.replacen("http://", "ws://", 1));
    let port = cloud_tests::tunnel::forward(ws, cp.admin_token.clone()).await;
    let mut uname = Err(String::new());
    for _ in 0..30 {
        uname = ssh_via_tunnel(port, &key, "uname -n").await;
        if uname.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(uname.as_deref().map(str::trim), Ok("web-1"));
    websockets_are_capped_and_closed_when_quiet(&cp).await;

    lifecycle(&cp, "web-1", "stop", "stopped").await;
    assert!(ssh_via_tunnel(port, &key, "true").await.is_err(), "a stopped instance answered");
    lifecycle(&cp, "web-1", "start", "running").await;
    lifecycle(&cp, "web-1", "reboot", "running").await;
    let mut back = Err(String::new());
    for _ in 0..30 {
        back = ssh_via_tunnel(port, &key, "true").await;
        if back.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    back.expect("no SSH after start and reboot");

    // Delete: the instance is gone, its capacity and address are free again.
    let (status, del) = cp.call(Method::DELETE, "/v1/projects/default/instances/web-1", None, None).await;
    assert_eq!(status, 202, "{del}");
    let op = cp.wait_operation(del["operation"]["id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (status, _) = cp.call(Method::GET, "/v1/projects/default/instances/web-1", None, None).await;
    assert_eq!(status, 404);
    let hosts = cp.hosts().await;
    assert_eq!((hosts[0]["reserved_vcpus"].as_i64(), hosts[0]["reserved_memory_bytes"].as_i64()), (Some(0), Some(0)));
    // The name is free again, and the same address is handed out to the next instance.
    let (status, second) = cp.call(Method::POST, "/v1/projects/default/instances", Some(body), None).await;
    assert_eq!(status, 202, "{second}");
    let op = cp.wait_operation(second["operation"]["id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (_, inst2) = cp.call(Method::GET, "/v1/projects/default/instances/web-1", None, None).await;
    assert_eq!(inst2["address"], inst["address"]);
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn console(cp: &ControlPlane) -> Result<Socket, tungstenite::Error> {
    let url = format!("{}/v1/projects/default/instances/web-1/console", cp.api.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {}", cp.admin_token).parse().unwrap());
    tokio_tungstenite::connect_async(request).await.map(|(ws, _)| ws)
}

/// The control plane was started with `websockets_per_instance` 3 and `websocket_idle_secs` 5.
async fn websockets_are_capped_and_closed_when_quiet(cp: &ControlPlane) {
    let mut open = Vec::new();
    for n in 0..3 {
        open.push(console(cp).await.unwrap_or_else(|e| panic!("console {n}, under the cap: {e}")));
    }
    let refused = console(cp).await.expect_err("a fourth console");
    let tungstenite::Error::Http(response) = refused else { panic!("a fourth console: {refused}") };
    assert_eq!(response.status(), 429);
    let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
    assert!(body.contains("too_many_connections") && body.contains("limits.websockets_per_instance"), "{body}");
    // A console closed frees its place.
    drop(open.pop());
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(ws) = console(cp).await {
            reopened = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    open.push(reopened.expect("a place once a console closed"));
    // Left quiet (the guest prints nothing once booted), a console is closed, saying why.
    let mut quiet = open.pop().unwrap();
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(msg) = quiet.next().await {
            if let Ok(tungstenite::Message::Close(frame)) = msg {
                return frame.map(|f| f.reason.to_string());
            }
        }
        None
    })
    .await
    .expect("a quiet console is closed within 30 s");
    assert!(closed.as_deref().is_some_and(|r| r.contains("websocket_idle_secs")), "{closed:?}");
    assert!(started.elapsed() >= Duration::from_secs(4), "closed after {:?}", started.elapsed());
}
