//! The OpenAPI document is exact: schemathesis (pinned in `tests/schemathesis/requirements.txt`)
//! generates requests from the document a running control plane serves — with a joined agent,
//! every check on, the stateful phase included — and finds no request the server answers in a
//! way the document does not say (a status, a content type, a body shape, a constraint).

use std::path::{Path, PathBuf};
use std::time::Duration;

use cloud_tests::net::TestNetwork;
use cloud_tests::process::{spawn_agent, spawn_control_plane};

/// The schemathesis CLI: `CLOUD_TEST_SCHEMATHESIS`, or where `deploy/test.sh` installs it.
fn schemathesis() -> PathBuf {
    let path = std::env::var_os("CLOUD_TEST_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/cloud/tools/schemathesis/bin/schemathesis".into());
    assert!(
        path.is_file(),
        "{} is missing: this test runs schemathesis against the API. Install it with deploy/test.sh, or by \
         hand: `python3 -m venv /var/cache/cloud/tools/schemathesis && /var/cache/cloud/tools/schemathesis/bin/pip \
         install -r tests/schemathesis/requirements.txt` (or point CLOUD_TEST_SCHEMATHESIS at a schemathesis binary)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_the_document_does_not_say() {
    let schemathesis = schemathesis();
    let config_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis");
    let mut net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let cp = spawn_control_plane(&net, dir.path()).await;
    let _agent = spawn_agent(&mut net, 1, &cp, dir.path()).await;
    cp.wait_active_hosts(1).await;

    let reports = dir.path().join("schemathesis");
    let mut cmd = tokio::process::Command::new(&schemathesis);
    cmd.arg("--config-file")
        .arg(config_dir.join("schemathesis.toml"))
        .arg("run")
        .arg(format!("{}/v1/openapi.json", cp.api))
        .args(["-H", &format!("Authorization: Bearer {}", cp.admin_token)])
        // Revoking a token is the one change that would end the run: the fuzzer finds its own
        // token's id in `GET /v1/auth/tokens` and revokes it. `control-plane/tests/it/auth.rs`
        // tests revocation.
        .args(["--exclude-path", "/v1/auth/tokens/{id}"])
        .args(["--no-color", "--report", "junit", "--report-dir"])
        .arg(&reports)
        // `hooks.py` teaches it the formats only the API makes (cursors, SSH keys).
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &config_dir)
        .current_dir(dir.path())
        .kill_on_drop(true);
    let run = tokio::time::timeout(Duration::from_secs(900), cmd.output()).await;
    let output = run.expect("schemathesis did not finish within 15 minutes").expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found requests the document does not describe ({}; reports in {}):\n{stdout}\n{stderr}\n\
         control plane log:\n{}",
        output.status,
        reports.display(),
        cp.proc.log_tail(40)
    );
    // A run that reached the API: every phase ran and generated requests.
    for phase in ["Coverage", "Fuzzing", "Stateful"] {
        assert!(stdout.contains(phase), "no {phase} phase in:\n{stdout}");
    }
    assert!(stdout.contains(" generated, "), "no test cases in:\n{stdout}");
}
