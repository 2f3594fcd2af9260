//! The web console in a real browser (Debian's Chromium driven by `playwright-core`, the script
//! `web-console/e2e/console.mjs`), served by the real control plane with a real host agent, a
//! real VM and a real identity provider: a customer signs in at the provider, adds an SSH key,
//! creates an instance from the form, watches it run, types into its serial console, stops and
//! deletes it; a user of another project sees nothing of it, and a viewer can list but not
//! create. Screenshots of the pages are kept in `$CARGO_TARGET_DIR/test-artifacts/console`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use cloud_tests::cloud::{OneHostCloud, Store};
use cloud_tests::guest::{minimal_image, ssh_keygen};
use cloud_tests::oidc::{CONSOLE_SECRET, provider_port, start_provider};

/// The console's built files: `web-console/build.sh` makes them (deploy/test.sh runs it).
fn console_dir() -> PathBuf {
    let dist = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web-console/dist");
    assert!(
        dist.join("index.html").is_file(),
        "the web console is not built: run web-console/build.sh (Node 18+ and npm; deploy/test.sh does)"
    );
    dist
}

/// Debian's Chromium, which the browser tests drive (never a downloaded browser).
fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    assert!(path.is_file(), "the browser tests need Chromium: apt-get install chromium (deploy/test.sh does)");
    path
}

/// Where the screenshots of a scenario go: kept after the run, as the test's artifacts.
fn artifacts(scenario: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"), PathBuf::from);
    let dir = target.join("test-artifacts").join(scenario);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Runs the browser script's `scenario` with `env`; it must succeed. Its output is kept as
/// `<scenario>.log` among the artifacts in `shots`.
async fn run_browser(scenario: &str, shots: &std::path::Path, env: &[(&str, &str)]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web-console/e2e/console.mjs");
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&script).env("SCENARIO", scenario).env("CHROMIUM", chromium()).envs(env.iter().copied());
    cmd.current_dir(script.parent().unwrap()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run node (apt-get install nodejs): {e}"));
    let out = tokio::time::timeout(Duration::from_secs(360), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the browser scenario {scenario} did not finish within 6 minutes"))
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    std::fs::write(shots.join(format!("{scenario}.log")), &text).unwrap();
    assert!(out.status.success(), "the browser scenario {scenario} failed ({}):\n{text}", out.status);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_signs_in_launches_reaches_and_deletes_an_instance_in_the_browser() {
    cloud_tests::require_root();
    let dist = console_dir();
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("oidc-secret");
    std::fs::write(&secret, format!("{CONSOLE_SECRET}\n")).unwrap();
    let port = provider_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let flags = [
        "--oidc-issuer",
        &issuer,
        "--oidc-client-id",
        "console",
        "--oidc-client-secret-file",
        secret.to_str().unwrap(),
        "--console-dir",
        dist.to_str().unwrap(),
    ];
    let cloud = OneHostCloud::start_custom(Store::Local, &flags, &["--metrics-listen", "0.0.0.0:9464"]).await;
    let base = cloud.cp.api.clone();
    let _provider = start_provider(port, &format!("{base}/auth/callback"));
    cloud.cli.create_minimal_image_with(&minimal_image(), &["--public"]).await;
    // Alice's project, which she is invited to by e-mail before her first sign-in.
    cloud.cli.line("project create web").await.ok("project create");
    cloud.cli.line("--project web project member add alice@example.com --role admin").await.ok("member add");
    let (_, public_key) = ssh_keygen(secrets.path(), "browser");
    let shots = artifacts("console");

    run_browser(
        "customer",
        &shots,
        &[
            ("CONSOLE_URL", &base),
            ("OIDC_USER", "alice"),
            ("PROJECT", "web"),
            ("SSH_PUBLIC_KEY", public_key.trim()),
            ("IMAGE", "minimal"),
            ("INSTANCE_NAME", "web-1"),
            ("SCREENSHOT_DIR", shots.to_str().unwrap()),
        ],
    )
    .await;

    // What the browser did, as the API sees it: the key is there, the instance is gone.
    let keys = cloud.cli.line("--project web ssh-key list").await.ok("ssh-key list");
    assert!(keys.out.to_string().contains(public_key.split_whitespace().nth(1).unwrap()), "{}", keys.out);
    let instances = cloud.cli.line("--project web instance list").await.ok("instance list");
    assert_eq!(instances.out.as_array().map(Vec::len), Some(0), "{}", instances.out);
    for shot in ["signin.png", "ssh-keys.png", "create.png", "instance.png", "serial-console.png", "instances.png"] {
        assert!(shots.join(shot).is_file(), "no screenshot {shot} in {}", shots.display());
    }

    // The control plane's metrics counted what the browser did, with bounded labels.
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    for kind in ["instance_create", "instance_stop", "instance_delete"] {
        let line = format!(r#"cloud_operations_total{{kind="{kind}",outcome="succeeded"}} 1"#);
        assert!(metrics.contains(&line), "no {line} in:\n{metrics}");
    }
    assert!(
        metrics.contains(r#"cloud_operation_step_duration_seconds_count{kind="instance_create",step="wait_running",outcome="done"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"cloud_hosts{state="active"} 1"#), "{metrics}");
    // The one agent's channel is held (dialed ahead of calls, `fleet.keep_agent_connections`).
    assert!(metrics.contains("cloud_agent_channels 1"), "{metrics}");
    for histogram in ["cloud_report_duration_seconds_count", "cloud_report_lag_seconds_count"] {
        let count = cloud_tests::metric_value(&metrics, histogram);
        assert!(count.is_some_and(|n| n > 0.0), "{histogram}: {metrics}");
    }
    // And the host agent's: the guest's boot to SSH, the image files it fetched.
    let agent = format!("http://{}:9464/metrics", cloud.agent.net.address);
    let metrics = reqwest::get(agent).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"cloud_agent_guest_ready_seconds_count{start="boot"} 1"#), "{metrics}");
    let fetched = cloud_tests::metric_value(&metrics, "cloud_agent_image_fetched_bytes_total");
    assert!(fetched.is_some_and(|n| n > 1_000_000.0), "{metrics}");

    // Bob, of another project, sees nothing of alice's: not in the switcher, and its pages say
    // there is no such project. Made a viewer of it, he can list but is offered no change.
    cloud.cli.line("project create other").await.ok("project create other");
    cloud.cli.line("--project other project member add bob@example.com --role admin").await.ok("member add bob");
    let bob = [
        ("CONSOLE_URL", base.as_str()),
        ("OIDC_USER", "bob"),
        ("SSH_PUBLIC_KEY", public_key.trim()),
        ("IMAGE", "minimal"),
        ("INSTANCE_NAME", "unused"),
        ("SCREENSHOT_DIR", shots.to_str().unwrap()),
    ];
    let mut outsider = bob.to_vec();
    outsider.push(("FOREIGN_PROJECT", "web"));
    run_browser("outsider", &shots, &outsider).await;
    cloud.cli.line("--project web project member add bob@example.com --role viewer").await.ok("bob views web");
    let mut viewer = bob.to_vec();
    viewer.push(("PROJECT", "web"));
    run_browser("viewer", &shots, &viewer).await;
}
