//! The CLI against a real control plane (in-process, real PostgreSQL), checked through `-o json`.

use cloudctl::client::{Client, ClientError, TokenCreateParams};

use super::common::{Cli, spawn_control_plane, spawn_control_plane_tls};

const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPiJZlyjkwiOZ6ioeiVhl3Mr9UKSGYM4Ux9okeXfgTH1 alice@laptop";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_keys_are_created_listed_shown_and_deleted() {
    let api = spawn_control_plane().await;
    let cli = Cli::for_api(&api);
    let key = cli.json(&["ssh-key", "create", "alice", "--public-key", ED25519]).await;
    assert_eq!(key["name"], "alice");
    assert!(key["fingerprint"].as_str().unwrap().starts_with("SHA256:"));

    let file = cli.home.path().join("bob.pub");
    std::fs::write(&file, format!("{}\n", ED25519.replace("alice@laptop", "bob"))).unwrap();
    let at_file = format!("@{}", file.display());
    cli.json(&["ssh-key", "create", "bob", "--public-key", &at_file]).await;

    let list = cli.json(&["ssh-key", "list"]).await;
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob"]);
    let by_id = cli.json(&["ssh-key", "get", key["id"].as_str().unwrap()]).await;
    assert_eq!(by_id, key);
    let names = cli.run(&["-o", "name", "ssh-key", "list"]).await.expect_code(0);
    assert_eq!(names.stdout, "alice\nbob\n");

    cli.run(&["ssh-key", "create", "alice", "--public-key", ED25519])
        .await
        .expect_code(1)
        .expect_error_line("request id");
    cli.run(&["ssh-key", "create", "carol", "--public-key", "not a key"])
        .await
        .expect_code(1)
        .expect_error_line("public_key");

    let deleted = cli.json(&["ssh-key", "delete", "alice"]).await;
    assert_eq!(deleted["id"], key["id"]);
    cli.run(&["ssh-key", "get", "alice"]).await.expect_code(2).expect_error_line("alice");
    cli.run(&["ssh-key", "delete", "alice"]).await.expect_code(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_images_hosts_operations_and_instances_are_listed() {
    let api = spawn_control_plane().await;
    let cli = Cli::for_api(&api);
    let projects = cli.json(&["project", "list"]).await;
    assert_eq!(projects[0]["name"], "default");
    let created = cli.json(&["project", "create", "team-a", "--description", "Team A"]).await;
    assert_eq!((created["name"].as_str(), created["role"].as_str()), (Some("team-a"), Some("admin")));
    assert_eq!(cli.json(&["project", "list"]).await.as_array().unwrap().len(), 2);
    cli.run(&["project", "create", "team-a"]).await.expect_code(1).expect_error_line("request id");

    assert_eq!(cli.json(&["image", "list"]).await, serde_json::json!([]));
    assert_eq!(cli.json(&["host", "list"]).await, serde_json::json!([]));
    assert_eq!(cli.json(&["operation", "list"]).await, serde_json::json!([]));
    assert_eq!(cli.json(&["instance", "list"]).await, serde_json::json!([]));
    assert_eq!(cli.json(&["--project", "team-a", "instance", "list"]).await, serde_json::json!([]));

    cli.run(&["instance", "get", "nope"]).await.expect_code(2).expect_error_line("nope");
    cli.run(&["--project", "nope", "instance", "list"]).await.expect_code(2).expect_error_line("no such project");
    cli.run(&["host", "get", "nope"]).await.expect_code(2).expect_error_line("no host");
    let op = "5b1c9a3e-0000-4000-8000-000000000000";
    cli.run(&["operation", "get", op]).await.expect_code(2);
    cli.run(&["operation", "get", "xyz"]).await.expect_code(1).expect_error_line("not an operation id");

    let joined = cli.json(&["host", "join-token", "create", "--ttl", "1h"]).await;
    assert!(joined["command"].as_str().unwrap().contains("host-agent join"), "{joined}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_create_is_accepted_once_per_idempotency_key() {
    let api = spawn_control_plane().await;
    let cli = Cli::for_api(&api);
    let kernel = api.dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"not really a kernel").unwrap();
    let image = cli
        .json(&["image", "create", "minimal", "--kernel", kernel.to_str().unwrap(), "--cmdline", "console=ttyS0"])
        .await;
    assert_eq!(image["boot_mode"], "direct_kernel");
    assert_eq!(cli.json(&["image", "get", "minimal"]).await["id"], image["id"]);
    cli.json(&["ssh-key", "create", "alice", "--public-key", ED25519]).await;

    // An operator drains the only host: creates are refused at once, naming the reason.
    control_plane::testing::add_host(&api.pool, "hv-1", 8, 16, 100).await.unwrap();
    let drained = cli.json(&["host", "drain", "hv-1"]).await;
    assert_eq!((drained["state"].as_str(), drained["draining"].as_bool()), (Some("draining"), Some(true)));
    let refused = ["instance", "create", "web-0", "--image", "minimal", "--vcpus", "1", "--memory", "256MiB"];
    cli.run(&refused).await.expect_code(1).expect_error_line("not active");
    let undrained = cli.json(&["host", "undrain", drained["id"].as_str().unwrap()]).await;
    assert_eq!(undrained["state"], "active");
    cli.run(&["host", "drain", "hv-9"]).await.expect_code(2).expect_error_line("no host");

    let init = cli.home.path().join("init.yaml");
    std::fs::write(&init, "#cloud-config\nhostname: web-1\n").unwrap();
    let at_init = format!("@{}", init.display());

    let args = [
        "--idempotency-key",
        "create-web-1",
        "instance",
        "create",
        "web-1",
        "--image",
        "minimal",
        "--vcpus",
        "1",
        "--memory",
        "256MiB",
        "--disk",
        "1GiB",
        "--ssh-key",
        "alice",
        "--user-data",
        &at_init,
    ];
    let first = cli.json(&args).await;
    assert_eq!(first["instance"]["name"], "web-1");
    assert_eq!(first["instance"]["memory_bytes"], 256 << 20);
    assert_eq!(first["operation"]["kind"], "instance_create");
    let again = cli.json(&args).await;
    assert_eq!(again["operation"]["id"], first["operation"]["id"], "the same key is the same operation");

    let op_id = first["operation"]["id"].as_str().unwrap();
    assert_eq!(cli.json(&["operation", "get", op_id]).await["id"], op_id);
    let ops = cli.json(&["operation", "list"]).await;
    assert_eq!(ops.as_array().unwrap().len(), 1);
    let listed = cli.json(&["instance", "list"]).await;
    assert_eq!(listed[0]["id"], first["instance"]["id"]);
    let ids = cli.run(&["-o", "id", "instance", "list"]).await.expect_code(0);
    assert_eq!(ids.stdout.trim(), first["instance"]["id"].as_str().unwrap());

    // No agent runs here: waiting ends by the timeout (exit 3), or with the failure (exit 1).
    let waited = cli.run(&["--timeout", "2s", "operation", "wait", op_id]).await;
    assert!(matches!(waited.code, 1 | 3), "{waited:?}");
    let waited = cli.run(&["--timeout", "1s", "instance", "wait", "web-1", "--for", "stopped"]).await;
    assert!(matches!(waited.code, 1 | 3), "{waited:?}");
    cli.run(&["instance", "console", "web-1"]).await.expect_code(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_a_private_token_and_a_revoked_one_is_exit_4() {
    let api = spawn_control_plane().await;
    let mut cli = Cli::unconfigured();
    cli.endpoint = Some(api.endpoint.clone());
    let login = cli
        .command(&["-o", "json", "auth", "login"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut login = login;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = login.stdin.take().unwrap();
        stdin.write_all(format!("{}\n", api.admin_token).as_bytes()).await.unwrap();
    }
    let out = login.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let me: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(me["is_operator"], true);

    use std::os::unix::fs::PermissionsExt;
    let creds = cli.config_dir().join("credentials.toml");
    assert_eq!(std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777, 0o600);
    // The endpoint given by environment was stored with the token: neither is needed now.
    cli.endpoint = None;
    assert_eq!(cli.json(&["auth", "status"]).await["user"], me["user"]);
    let token = cli.run(&["auth", "token"]).await.expect_code(0);
    assert_eq!(token.stdout.trim(), api.admin_token);

    // A revoked token: exit 4.
    let admin = Client::new(&api.endpoint, &api.admin_token).unwrap();
    let issued = admin
        .token_create(&TokenCreateParams { name: "ci".into(), expires_in_secs: None, project: None, role: None })
        .await
        .unwrap();
    let ci = Client::new(&api.endpoint, &issued.secret).unwrap();
    ci.whoami().await.unwrap();
    admin.token_revoke(issued.token.id).await.unwrap();
    assert!(matches!(ci.whoami().await, Err(ClientError::Unauthenticated(_))));
    cli.run(&["--token", &issued.secret, "instance", "list"])
        .await
        .expect_code(4)
        .expect_error_line("not authenticated");
    cli.run(&["--token", "cloud_garbage", "auth", "status"]).await.expect_code(4);
    let bad_login = cli.run(&["--token", &issued.secret, "auth", "login"]).await;
    assert_eq!(bad_login.code, 4, "{bad_login:?}");

    cli.run(&["auth", "logout"]).await.expect_code(0);
    cli.run(&["auth", "status"]).await.expect_code(4).expect_error_line("not logged in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_waits_for_operations_and_follows_pages() {
    let api = spawn_control_plane().await;
    let client = Client::new(&api.endpoint, &api.admin_token).unwrap();
    for i in 0..3 {
        let params = cloudctl::client::ProjectCreateParams { name: format!("p{i}"), description: String::new() };
        client.project_create(&params).await.unwrap();
    }
    let paged = client.clone().with_page_limit(3);
    let first = paged.project_list(None).await.unwrap();
    assert_eq!(first.items.len(), 3);
    assert!(first.next_cursor.is_some());
    let all = cloudctl::client::list_all(|cursor| paged.project_list(cursor)).await.unwrap();
    let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["default", "p0", "p1", "p2"]);
    let missing = client.wait_operation(uuid::Uuid::new_v4(), std::time::Duration::from_secs(1)).await;
    assert!(matches!(missing, Err(ClientError::NotFound(_))), "{missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_are_verified_and_a_private_ca_can_be_trusted() {
    let api = spawn_control_plane_tls().await;
    let ca = api.ca_file.clone().unwrap();
    let ca = ca.to_str().unwrap();
    let cli = Cli::for_api(&api);
    // A certificate of an unknown CA is refused, in one line.
    cli.run(&["host", "list"]).await.expect_code(1).expect_error_line("certificate");
    cli.run(&["--ca-cert", "/nonexistent/ca.pem", "host", "list"]).await.expect_code(1).expect_error_line("ca.pem");
    // With the CA, by flag, then from the profile.
    assert_eq!(cli.json(&["--ca-cert", ca, "host", "list"]).await, serde_json::json!([]));
    cli.run(&["config", "set", "ca-cert", ca]).await.expect_code(0);
    assert_eq!(cli.json(&["project", "list"]).await[0]["name"], "default");

    // The console WebSocket goes over TLS too: the server itself answers (the instance has no
    // running VM), not the TLS layer.
    control_plane::testing::add_host(&api.pool, "hv-1", 8, 16, 100).await.unwrap();
    cli.json(&["image", "create", "tiny", "--kernel", ca, "--cmdline", "console=ttyS0"]).await;
    cli.json(&["instance", "create", "web-1", "--image", "tiny", "--vcpus", "1", "--memory", "256MiB"]).await;
    cli.run(&["instance", "console", "web-1"]).await.expect_code(1).expect_error_line("request id");
}
