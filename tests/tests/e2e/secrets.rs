//! Secrets never reach a log: a whole run — an agent joined with a join token, the admin token
//! and a new API token used, a console session signed in and used, an instance created with
//! user-data and booted — and then every log the services wrote is searched for each secret.

use cloud_tests::guest::minimal_image;
use cloud_tests::net::TestNetwork;
use cloud_tests::process::{spawn_agent_with, spawn_control_plane_with};
use reqwest::Method;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn no_token_cookie_or_user_data_is_ever_logged() {
    let image = minimal_image();
    let mut net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let cp = spawn_control_plane_with(&net, dir.path(), &[]).await;
    let agent = spawn_agent_with(&mut net, 1, &cp, dir.path(), &["--log-filter", "debug"]).await;
    cp.wait_active_hosts(1).await;
    cp.register_minimal_image(&image).await;

    // A new API token, used once.
    let (status, created) =
        cp.call(Method::POST, "/v1/auth/tokens", Some(json!({"name": "ci", "expires_in_secs": 600})), None).await;
    assert_eq!(status, 201, "{created}");
    let api_token = created["secret"].as_str().unwrap().to_owned();
    let who = cp.http.get(format!("{}/v1/auth/whoami", cp.api)).bearer_auth(&api_token).send().await.unwrap();
    assert_eq!(who.status(), 200);

    // A console session, signed in with the admin token and used for a read and a change.
    let resp = cp.http.post(format!("{}/v1/auth/session", cp.api)).json(&json!({"token": cp.admin_token})).send();
    let resp = resp.await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let set_cookie = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let session_value = cookie.split_once('=').unwrap().1.to_owned();
    assert!(session_value.len() >= 16, "{set_cookie}");
    let session: Value = cp
        .http
        .get(format!("{}/v1/auth/session", cp.api))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    let change = cp
        .http
        .post(format!("{}/v1/projects", cp.api))
        .header(COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "secrets-probe"}))
        .send()
        .await
        .unwrap();
    assert_eq!(change.status(), 201);

    // An instance with user-data, booted on the agent (the config drive carries it).
    let marker = format!("user-data-secret-{}", uuid::Uuid::new_v4().simple());
    let user_data = format!("#cloud-config\nwrite_files:\n  - path: /root/secret\n    content: {marker}\n");
    let body = json!({"name": "quiet", "image": "minimal", "vcpus": 1, "memory_mib": 256, "user_data": user_data});
    let (status, accepted) = cp.call(Method::POST, "/v1/projects/default/instances", Some(body), None).await;
    assert_eq!(status, 202, "{accepted}");
    let op = cp.wait_operation(accepted["operation"]["id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");

    // Every log the services wrote, searched for every secret.
    let secrets = [
        ("the admin token", cp.admin_token.clone()),
        ("a new API token", api_token),
        ("the join token", agent.join_token.clone()),
        ("the session cookie", session_value),
        ("the CSRF token", csrf),
        ("user-data", marker),
    ];
    let logs: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    assert!(logs.len() >= 2, "the control plane's and the agent's logs: {logs:?}");
    let mut read = 0;
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        read += text.len();
        for (what, secret) in &secrets {
            assert!(!text.contains(secret.as_str()), "{what} is in {}", log.display());
        }
    }
    // The logs are not empty, so the search means something: requests and the VM are in them.
    let all: String = logs.iter().map(|l| std::fs::read_to_string(l).unwrap()).collect();
    assert!(read > 10_000 && all.contains("instance create accepted"), "{read} bytes of logs");
}
