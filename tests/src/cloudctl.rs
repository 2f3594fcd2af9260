//! `cloudctl` as a script runs it: the real binary, against a test's control plane, with its
//! own configuration directory (and so its own `known_hosts.d`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::process::ControlPlane;

/// How to run cloudctl for one control plane.
#[derive(Debug, Clone)]
pub struct Cloudctl {
    api: String,
    token: String,
    ca_file: Option<PathBuf>,
    /// `HOME` and `XDG_CONFIG_HOME` of every run.
    pub home: PathBuf,
}

/// One run: exit code, stdout (parsed as JSON when it is JSON, else a string), stderr.
#[derive(Debug, Clone)]
pub struct Run {
    pub code: i32,
    pub out: Value,
    pub err: String,
}

impl Run {
    /// Panics with the run's stderr unless it exited 0.
    pub fn ok(self, what: &str) -> Self {
        assert_eq!(self.code, 0, "{what} failed: {}", self.err);
        self
    }

    /// stdout as text.
    pub fn text(&self) -> String {
        match &self.out {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

impl Cloudctl {
    /// cloudctl with the endpoint, token and CA of `cp`, and its configuration in `home`.
    pub fn new(cp: &ControlPlane, home: &Path) -> Self {
        std::fs::create_dir_all(home).expect("cloudctl home");
        Self { api: cp.api.clone(), token: cp.admin_token.clone(), ca_file: cp.ca_file.clone(), home: home.to_owned() }
    }

    /// The same cloudctl acting with another token (another user, or a limited token), its
    /// configuration in `home`.
    pub fn with_token(&self, token: &str, home: &Path) -> Self {
        std::fs::create_dir_all(home).expect("cloudctl home");
        Self { api: self.api.clone(), token: token.to_owned(), ca_file: self.ca_file.clone(), home: home.to_owned() }
    }

    /// The command, ready for arguments.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(crate::binary("cloudctl"));
        crate::process::scrub_env(&mut cmd);
        if let Some(ca) = &self.ca_file {
            cmd.env("CLOUDCTL_CA_CERT", ca);
        }
        cmd.env("XDG_CONFIG_HOME", &self.home)
            .env("HOME", &self.home)
            .env("CLOUDCTL_ENDPOINT", &self.api)
            .env("CLOUDCTL_TOKEN", &self.token);
        cmd
    }

    /// Registers the minimal guest image as `minimal` (direct kernel boot) with `image create`.
    pub async fn create_minimal_image(&self, image: &crate::guest::MinimalImage) -> Run {
        self.create_minimal_image_with(image, &[]).await
    }

    /// [`Self::create_minimal_image`] with more flags, e.g. `--public`.
    pub async fn create_minimal_image_with(&self, image: &crate::guest::MinimalImage, flags: &[&str]) -> Run {
        let (kernel, initrd) = (image.dir.join("vmlinuz"), image.dir.join("initrd.img"));
        let mut args = vec![
            "image",
            "create",
            "minimal",
            "--boot-mode",
            "direct-kernel",
            "--kernel",
            kernel.to_str().expect("UTF-8 path"),
            "--initrd",
            initrd.to_str().expect("UTF-8 path"),
            "--cmdline",
            &image.cmdline,
        ];
        args.extend_from_slice(flags);
        self.run(&args).await.ok("image create minimal")
    }

    /// Runs `cloudctl -o json` with the words of `line` (split at whitespace, as a script
    /// without quotes would), e.g. `cli.line("instance create web-1 --image minimal --wait")`.
    pub async fn line(&self, line: &str) -> Run {
        self.run(&line.split_whitespace().collect::<Vec<_>>()).await
    }

    /// Runs `cloudctl -o json ARGS` (on a blocking thread) and returns what it did.
    pub async fn run(&self, args: &[&str]) -> Run {
        let mut cmd = self.command();
        cmd.args(["-o", "json"]).args(args);
        let out =
            tokio::task::spawn_blocking(move || cmd.output().expect("run cloudctl")).await.expect("cloudctl task");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let out_value = serde_json::from_str(&stdout).unwrap_or(Value::String(stdout));
        Run {
            code: out.status.code().unwrap_or(-1),
            out: out_value,
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// What `instance console` showed on its pseudo-terminal, and how it ended.
#[derive(Debug)]
pub struct ConsoleSeen {
    /// Everything up to the moment the escape was typed.
    pub before_detach: String,
    /// Everything after it.
    pub after_detach: String,
    /// cloudctl's exit code (`None`: it did not exit within 10 s and was killed).
    pub exit_code: Option<i32>,
    /// Whether the terminal was back in cooked mode (ICANON, ECHO) afterwards.
    pub terminal_restored: bool,
}

impl Cloudctl {
    /// Runs `cloudctl instance console NAME` on a pseudo-terminal, as a person would: reads
    /// until `want` shows (or `timeout` passes), then types `Ctrl-] .` to detach.
    pub async fn console_until(&self, name: &str, want: &str, timeout: std::time::Duration) -> ConsoleSeen {
        use std::io::{ErrorKind, Read, Write};
        use std::time::{Duration, Instant};

        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        use nix::sys::termios::{LocalFlags, tcgetattr};

        let pty = nix::pty::openpty(None, None).expect("openpty");
        let tty = || std::process::Stdio::from(pty.slave.try_clone().expect("dup the pty"));
        let mut child = self
            .command()
            .args(["instance", "console", name])
            .stdin(tty())
            .stdout(tty())
            .stderr(tty())
            .spawn()
            .expect("run cloudctl instance console");
        let mut master = std::fs::File::from(pty.master);
        fcntl(&master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("non-blocking pty");
        let mut writer = master.try_clone().expect("dup the pty master");
        let mut read_until = |want: &str, timeout: Duration| {
            let (mut seen, deadline, mut buf) = (Vec::new(), Instant::now() + timeout, [0u8; 4096]);
            while !String::from_utf8_lossy(&seen).contains(want) && Instant::now() < deadline {
                match master.read(&mut buf) {
                    Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() != ErrorKind::WouldBlock => break,
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            String::from_utf8_lossy(&seen).into_owned()
        };
        let before_detach = read_until(want, timeout);
        writer.write_all(b"\x1d.").expect("type the escape");
        let mut status = None;
        for _ in 0..100 {
            status = child.try_wait().expect("wait for cloudctl");
            if status.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let after_detach = read_until("detached", Duration::from_secs(2));
        let terminal_restored =
            tcgetattr(&pty.slave).is_ok_and(|t| t.local_flags.contains(LocalFlags::ICANON | LocalFlags::ECHO));
        ConsoleSeen { before_detach, after_detach, exit_code: status.and_then(|s| s.code()), terminal_restored }
    }
}
