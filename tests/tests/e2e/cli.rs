//! `cloudctl` as a script uses it, against a real control plane (serving HTTPS with a private
//! CA), agent and VM: every step is checked through `-o json`, `instance ssh` reaches the guest
//! through the tunnel, and `instance console` runs on a pseudo-terminal.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cloud_tests::guest::{minimal_image, ssh_keygen};
use cloud_tests::net::TestNetwork;
use cloud_tests::process::{ControlPlane, spawn_agent, spawn_control_plane_tls};
use serde_json::{Value, json};

/// cloudctl with the endpoint, token and CA of `cp`, and its own configuration in `home`.
fn cloudctl_command(cp: &ControlPlane, home: &Path) -> Command {
    let mut cmd = Command::new(cloud_tests::binary("cloudctl"));
    cloud_tests::process::scrub_env(&mut cmd);
    if let Some(ca) = &cp.ca_file {
        cmd.env("CLOUDCTL_CA_CERT", ca);
    }
    cmd.env("XDG_CONFIG_HOME", home)
        .env("HOME", home)
        .env("CLOUDCTL_ENDPOINT", &cp.api)
        .env("CLOUDCTL_TOKEN", &cp.admin_token);
    cmd
}

/// Runs cloudctl with `args` for `cp` and returns (exit code, stdout JSON or text, stderr).
fn cloudctl(cp: &ControlPlane, home: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = cloudctl_command(cp, home).args(["-o", "json"]).args(args).output().expect("run cloudctl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = serde_json::from_str(&stdout).unwrap_or(Value::String(stdout));
    (out.status.code().unwrap_or(-1), value, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `cloudctl instance console web-1` on a pseudo-terminal, as a person runs it: the boot output
/// shows, `Ctrl-] .` detaches with exit code 0, and the terminal is back in cooked mode.
async fn console_shows_the_boot_and_detaches(cp: &ControlPlane, home: &Path) {
    use std::io::{ErrorKind, Read, Write};

    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use nix::sys::termios::{LocalFlags, tcgetattr};

    let pty = nix::pty::openpty(None, None).expect("openpty");
    let tty = || std::process::Stdio::from(pty.slave.try_clone().expect("dup the pty"));
    let mut child = cloudctl_command(cp, home)
        .args(["instance", "console", "web-1"])
        .stdin(tty())
        .stdout(tty())
        .stderr(tty())
        .spawn()
        .expect("run cloudctl instance console");
    let mut master = std::fs::File::from(pty.master);
    fcntl(&master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("non-blocking pty");
    let mut writer = master.try_clone().expect("dup the pty master");
    let mut seen = Vec::new();
    let mut read_until = |want: &str, timeout: Duration| {
        let deadline = std::time::Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(want) && std::time::Instant::now() < deadline {
            match master.read(&mut buf) {
                Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() != ErrorKind::WouldBlock => break,
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    };
    let text = read_until("cloud-minimal: ready", Duration::from_secs(30));
    assert!(text.contains("Connected to the serial console of web-1"), "{text}");
    assert!(text.contains("cloud-minimal: ready"), "the console did not show the boot: {text}");

    writer.write_all(b"\x1d.").expect("type the escape");
    let mut status = None;
    for _ in 0..100 {
        status = child.try_wait().expect("wait for cloudctl");
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("cloudctl did not detach: {}", read_until("\u{0}", Duration::from_millis(200)));
    };
    let text = read_until("detached", Duration::from_secs(2));
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("detached"), "{text}");
    let restored = tcgetattr(&pty.slave).expect("terminal attributes");
    assert!(restored.local_flags.contains(LocalFlags::ICANON | LocalFlags::ECHO), "the terminal was left in raw mode");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_drives_an_instance_with_cloudctl() {
    let image = minimal_image();
    let mut net = TestNetwork::create();
    let dir = tempfile::tempdir().unwrap();
    let cp = spawn_control_plane_tls(&net, dir.path()).await;
    assert!(cp.api.starts_with("https://"), "{}", cp.api);
    let _agent = spawn_agent(&mut net, 1, &cp, dir.path()).await;
    cp.wait_active_hosts(1).await;
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (key, _) = ssh_keygen(dir.path(), "alice");
    let public_file = key.with_extension("pub");

    let run = |args: Vec<String>| {
        let (cp, home) = (&cp, home.clone());
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cloudctl(cp, &home, &args)
        }
    };
    let s = |v: &[&str]| v.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();

    let (code, img, err) = run(s(&[
        "image",
        "create",
        "minimal",
        "--boot-mode",
        "direct-kernel",
        "--kernel",
        image.dir.join("vmlinuz").to_str().unwrap(),
        "--initrd",
        image.dir.join("initrd.img").to_str().unwrap(),
        "--cmdline",
        &image.cmdline,
    ]))
    .await;
    assert_eq!(code, 0, "image create: {err}");
    assert_eq!(img["name"], "minimal");

    let (code, created_key, err) =
        run(s(&["ssh-key", "create", "alice", "--public-key", &format!("@{}", public_file.display())])).await;
    assert_eq!(code, 0, "ssh-key create: {err}");
    assert!(created_key["fingerprint"].as_str().is_some_and(|f| f.starts_with("SHA256:")), "{created_key}");

    let (code, created, err) = run(s(&[
        "instance",
        "create",
        "web-1",
        "--image",
        "minimal",
        "--vcpus",
        "1",
        "--memory",
        "256MiB",
        "--ssh-key",
        "alice",
        "--wait",
    ]))
    .await;
    assert_eq!(code, 0, "instance create: {err}");
    assert_eq!(created["instance"]["state"], "running", "{created}");
    assert_eq!(created["operation"]["state"], "succeeded", "{created}");

    // `instance ssh` runs the system ssh through the control plane's tunnel.
    let mut uname = (1, Value::Null, String::new());
    for _ in 0..30 {
        uname = run(s(&["instance", "ssh", "web-1", "-i", key.to_str().unwrap(), "--", "uname", "-a"])).await;
        if uname.0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(uname.0, 0, "instance ssh: {}", uname.2);
    assert!(uname.1.as_str().is_some_and(|out| out.starts_with("Linux web-1 ")), "{}", uname.1);

    console_shows_the_boot_and_detaches(&cp, &home).await;

    for (verb, state) in [("stop", "stopped"), ("start", "running")] {
        let (code, out, err) = run(s(&["instance", verb, "web-1", "--wait"])).await;
        assert_eq!(code, 0, "{verb}: {err}");
        assert_eq!(out["instance"]["state"], state, "{verb}: {out}");
    }
    let (code, got, _) = run(s(&["instance", "get", "web-1"])).await;
    assert_eq!((code, got["state"].clone()), (0, json!("running")));

    let (code, _, err) = run(s(&["instance", "delete", "web-1", "--wait"])).await;
    assert_eq!(code, 0, "delete: {err}");
    let (code, _, err) = run(s(&["instance", "get", "web-1"])).await;
    assert_eq!(code, 2, "a deleted instance is not found (exit 2): {err}");
    let (code, list, _) = run(s(&["instance", "list"])).await;
    assert_eq!((code, list), (0, json!([])));
}
