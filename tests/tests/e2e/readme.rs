//! The README's main line, run as a script, passes on the first try of every command: the
//! `cloudctl` block of README.md is taken from the file itself and run with bash (`set -e`)
//! against a real control plane, agent and VM, with only the endpoint and the token's path
//! swapped for this test's. The user's SSH key is in an ssh-agent, as on a workstation.

use std::path::Path;
use std::process::Command;

use cloud_tests::guest::{minimal_image, ssh_keygen};
use cloud_tests::net::TestNetwork;
use cloud_tests::process::{spawn_agent, spawn_control_plane};

/// The shell block of README.md that starts with `cloudctl auth login`.
fn readme_main_line() -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).expect("README.md");
    let mut lines = text.lines().skip_while(|l| !l.trim_start().starts_with("cloudctl auth login"));
    let block: Vec<String> =
        lines.by_ref().take_while(|l| !l.trim_start().starts_with("```")).map(|l| l.trim().to_owned()).collect();
    assert!(block.len() >= 4, "no cloudctl block in README.md");
    block.join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_main_line_works_on_the_first_try_of_every_command() {
    let script = readme_main_line();
    assert!(script.contains("instance create") && script.contains("instance ssh"), "{script}");
    let mut net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let cp = spawn_control_plane(&net, dir.path()).await;
    let _agent = spawn_agent(&mut net, 1, &cp, dir.path()).await;
    cp.wait_active_hosts(1).await;
    cp.register_minimal_image(&minimal_image()).await;

    // A workstation: a home with ~/.ssh/id_ed25519(.pub), the key loaded in an ssh-agent.
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let (key, _) = ssh_keygen(&home.join(".ssh"), "id_ed25519");
    let agent_sock = dir.path().join("ssh-agent.sock");
    let out = Command::new("ssh-agent").arg("-a").arg(&agent_sock).output().expect("run ssh-agent (openssh-client)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let agent_pid: i32 = String::from_utf8_lossy(&out.stdout)
        .split("SSH_AGENT_PID=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|pid| pid.parse().ok())
        .expect("ssh-agent's pid");
    struct KillAgent(i32);
    impl Drop for KillAgent {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGTERM);
        }
    }
    let _kill = KillAgent(agent_pid);
    let added = Command::new("ssh-add").arg(&key).env("SSH_AUTH_SOCK", &agent_sock).output().expect("ssh-add");
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));

    let token_file = cp.data_dir.join("admin-token");
    let script = script
        .replace("http://127.0.0.1:8080", &cp.api)
        .replace("/var/lib/cloud/admin-token", token_file.to_str().unwrap());
    let bin_dir = cloud_tests::binary("cloudctl").parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new("bash");
    cloud_tests::process::scrub_env(&mut cmd);
    cmd.args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("SSH_AUTH_SOCK", &agent_sock);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run bash")).await.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the README's main line failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stdout.contains("Linux web-1 "), "instance ssh did not run uname: {stdout}");
}
