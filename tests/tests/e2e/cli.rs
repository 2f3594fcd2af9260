//! `cloudctl` as a script uses it, against a real control plane (serving HTTPS with a private
//! CA), agent and VMs: the README's main line runs on the first try of every command (`create
//! --wait`, then at once `instance ssh`), files and the guest's identity survive stop/start and
//! reboot, host keys are checked strictly against what the instance published on its console
//! (an impostor behind its address is refused), and `instance console` runs on a pseudo-terminal.

use std::time::Duration;

use cloud_tests::cloudctl::{Cloudctl, Run};
use cloud_tests::guest::{minimal_image, ssh_keygen};
use cloud_tests::net::TestNetwork;
use cloud_tests::process::{spawn_agent, spawn_control_plane_tls};
use serde_json::{Value, json};

/// `cloudctl instance console web-1` on a pseudo-terminal, as a person runs it: the boot output
/// shows, `Ctrl-] .` detaches with exit code 0, and the terminal is back in cooked mode.
async fn console_shows_the_boot_and_detaches(cli: &Cloudctl) {
    let seen = cli.console_until("web-1", "cloud-minimal: ready", Duration::from_secs(30)).await;
    assert!(seen.before_detach.contains("Connected to the serial console of web-1"), "{}", seen.before_detach);
    assert!(
        seen.before_detach.contains("cloud-minimal: ready"),
        "the console did not show the boot: {}",
        seen.before_detach
    );
    assert_eq!(seen.exit_code, Some(0), "{}", seen.after_detach);
    assert!(seen.after_detach.contains("detached"), "{}", seen.after_detach);
    assert!(seen.terminal_restored, "the terminal was left in raw mode");
}

/// `instance ssh NAME -i KEY -- COMMAND…` must work at once, with nothing on stderr: no prompt,
/// no warning (strict host-key checking against the published keys passes silently).
async fn ssh_at_once(cli: &Cloudctl, name: &str, key: &str, command: &[&str]) -> String {
    let mut args = vec!["instance", "ssh", name, "-i", key, "--"];
    args.extend_from_slice(command);
    let run = cli.run(&args).await.ok(&format!("instance ssh {name} -- {}", command.join(" ")));
    assert_eq!(run.err.trim(), "", "instance ssh printed warnings");
    run.text()
}

/// The instance's published host keys: `<type> <base64>` each, with a SHA256 fingerprint.
fn host_keys(instance: &Value) -> Vec<String> {
    let keys = instance["ssh_host_keys"].as_array().cloned().unwrap_or_default();
    assert!(!keys.is_empty(), "no host keys published: {instance}");
    for k in &keys {
        assert!(k["fingerprint"].as_str().is_some_and(|f| f.starts_with("SHA256:")), "{k}");
    }
    keys.iter().map(|k| k["public_key"].as_str().unwrap_or_default().to_owned()).collect()
}

fn assert_ready(run: &Run, what: &str) -> Value {
    let instance = run.out["instance"].clone();
    assert_eq!(instance["state"], "running", "{what}: {}", run.out);
    assert!(instance["ready_at"].is_string(), "{what}: --wait returned before the guest was ready: {}", run.out);
    instance
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_drives_an_instance_with_cloudctl() {
    let image = minimal_image();
    let mut net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let cp = spawn_control_plane_tls(&net, dir.path()).await;
    assert!(cp.api.starts_with("https://"), "{}", cp.api);
    let agent = spawn_agent(&mut net, 1, &cp, dir.path()).await;
    cp.wait_active_hosts(1).await;
    let cli = Cloudctl::new(&cp, &dir.path().join("home"));
    let (key, _) = ssh_keygen(dir.path(), "alice");
    let key = key.to_str().unwrap().to_owned();
    let public = format!("@{key}.pub");

    let img = cli.create_minimal_image(&image).await;
    assert_eq!(img.out["name"], "minimal");
    let created_key = cli.run(&["ssh-key", "create", "alice", "--public-key", &public]).await.ok("ssh-key create");
    assert!(created_key.out["fingerprint"].as_str().is_some_and(|f| f.starts_with("SHA256:")), "{}", created_key.out);

    // The README's main line: create --wait, then at once ssh.
    let created = cli
        .line("instance create web-1 --image minimal --vcpus 1 --memory 256MiB --ssh-key alice --wait")
        .await
        .ok("instance create");
    assert_eq!(created.out["operation"]["state"], "succeeded", "{}", created.out);
    let instance = assert_ready(&created, "create --wait");
    assert_eq!(instance["disk_bytes"], 1 << 30, "a kernel image's instance gets a 1 GiB data disk: {instance}");
    let uname = ssh_at_once(&cli, "web-1", &key, &["uname", "-a"]).await;
    assert!(uname.starts_with("Linux web-1 "), "{uname}");

    // The published key is the guest's own key (read from inside), and it was read from the
    // console, not from the network.
    let published = host_keys(&instance);
    let inside =
        ssh_at_once(&cli, "web-1", &key, &["dropbearkey", "-y", "-f", "/etc/dropbear/dropbear_ed25519_host_key"]).await;
    assert!(published.iter().any(|k| inside.contains(k.as_str())), "published {published:?}, the guest has {inside}");
    let known =
        std::fs::read_to_string(cli.home.join(format!("cloudctl/known_hosts.d/{}", instance["id"].as_str().unwrap())))
            .expect("instance ssh keeps a known_hosts file of its own");
    assert!(known.contains(published[0].as_str()), "{known}");

    ssh_at_once(&cli, "web-1", &key, &["echo kept > /root/kept.txt && sync"]).await;
    console_shows_the_boot_and_detaches(&cli).await;

    // Stop and start: the file and the guest's identity are still there, ssh works at once.
    let stopped = cli.run(&["instance", "stop", "web-1", "--wait"]).await.ok("stop");
    assert_eq!(stopped.out["instance"]["state"], "stopped", "{}", stopped.out);
    assert!(stopped.out["instance"]["ready_at"].is_null(), "a stopped instance is not ready: {}", stopped.out);
    let started = cli.run(&["instance", "start", "web-1", "--wait"]).await.ok("start");
    let instance = assert_ready(&started, "start --wait");
    assert_eq!(host_keys(&instance), published, "the host keys changed across stop/start");
    assert_eq!(ssh_at_once(&cli, "web-1", &key, &["cat", "/root/kept.txt"]).await.trim(), "kept");

    // Reboot with --wait=running (the old meaning): ssh waits for the guest by itself.
    let rebooted = cli.run(&["instance", "reboot", "web-1", "--wait=running"]).await.ok("reboot --wait=running");
    assert_eq!(rebooted.out["instance"]["state"], "running", "{}", rebooted.out);
    assert_eq!(ssh_at_once(&cli, "web-1", &key, &["cat", "/root/kept.txt"]).await.trim(), "kept");
    let rebooted = cli.run(&["instance", "reboot", "web-1", "--wait"]).await.ok("reboot --wait");
    assert_eq!(host_keys(&assert_ready(&rebooted, "reboot --wait")), published);
    assert_eq!(ssh_at_once(&cli, "web-1", &key, &["cat", "/root/kept.txt"]).await.trim(), "kept");

    // Something else answers behind web-1's address (here: another instance, by DNAT on the
    // host): instance ssh refuses it, and works again once web-1 itself answers.
    let other = cli
        .line("instance create impostor --image minimal --memory 256MiB --ssh-key alice --wait")
        .await
        .ok("create impostor");
    let victim = instance["address"].as_str().unwrap().to_owned();
    let impostor = other.out["instance"]["address"].as_str().unwrap().to_owned();
    let nft = |args: &[&str]| {
        let out = agent.net.command(std::path::Path::new("nft")).args(args).output().expect("run nft (nftables)");
        assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    nft(&["add", "table", "ip", "impostor"]);
    nft(&["add", "chain", "ip", "impostor", "out", "{ type nat hook output priority -100 ; }"]);
    nft(&[
        "add", "rule", "ip", "impostor", "out", "ip", "daddr", &victim, "tcp", "dport", "22", "dnat", "to", &impostor,
    ]);
    let refused = cli.run(&["instance", "ssh", "web-1", "-i", &key, "--", "uname", "-a"]).await;
    nft(&["delete", "table", "ip", "impostor"]);
    assert_eq!(refused.code, 1, "an impostor was accepted: {refused:?}");
    assert!(!refused.text().contains("Linux"), "{refused:?}");
    assert!(
        refused.err.contains("presented an SSH host key that the instance did not publish"),
        "no clear refusal: {}",
        refused.err
    );
    assert!(ssh_at_once(&cli, "web-1", &key, &["uname", "-n"]).await.starts_with("web-1"));

    for name in ["web-1", "impostor"] {
        cli.run(&["instance", "delete", name, "--wait"]).await.ok("delete");
    }
    let gone = cli.run(&["instance", "get", "web-1"]).await;
    assert_eq!(gone.code, 2, "a deleted instance is not found (exit 2): {}", gone.err);
    let list = cli.run(&["instance", "list"]).await.ok("list");
    assert_eq!(list.out, json!([]));
}
