//! `cloudctl instance ssh`: the system `ssh`, tunnelled through the control plane, checking the
//! guest's identity against the host keys the instance published on its serial console.
//!
//! ```text
//!  ssh ─ProxyCommand─▶ cloudctl instance tunnel-proxy ID ─▶ WebSocket …/tunnel?port=22 ─▶ guest:22
//!   └─ UserKnownHostsFile = <config dir>/known_hosts.d/<instance id>  (rewritten from the API
//!      at every run), HostKeyAlias = <instance id>, StrictHostKeyChecking = yes
//! ```
//! No trust on first use: a server that answers with a key the instance did not publish is
//! refused before anything is sent to it, and a key that changed because the instance published
//! a new one is accepted without a question (the file follows the API).

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context as _;
use clap::Args;
use cloudctl::client::Instance;
use tokio::io::AsyncReadExt;

use super::{Context, Failure};

/// `instance ssh`.
#[derive(Debug, Args)]
pub struct SshArgs {
    pub instance: String,
    /// Identity file, passed to ssh.
    #[arg(short = 'i', value_name = "FILE")]
    pub identity: Option<String>,
    /// Login name, passed to ssh.
    #[arg(short = 'l', value_name = "USER")]
    pub login: Option<String>,
    /// Guest port of the SSH server.
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    /// Connect even when the instance published no SSH host keys (its identity is not checked).
    #[arg(long)]
    pub accept_unknown_host_key: bool,
    /// The remote command (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// What ssh prints when the server's key is not one of the known ones.
const REFUSED: &str = "Host key verification failed";

/// `'text'` for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The `known_hosts` lines of `instance`: its published keys under its id (ssh's HostKeyAlias).
pub fn known_hosts(instance: &Instance) -> String {
    instance.ssh_host_keys.iter().map(|k| format!("{} {}\n", instance.id, k.public_key)).collect()
}

/// Writes the instance's known_hosts file (atomically, 0600 in a 0700 directory); returns its path.
fn write_known_hosts(instance: &Instance) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = cloudctl::config::config_dir()?.join("known_hosts.d");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(instance.id.to_string());
    cloud_common::fs::write_atomic(&path, known_hosts(instance).as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Runs the system `ssh` to `instance` through the tunnel and ends the process with its exit
/// code; the endpoint, token and project reach the ProxyCommand through the environment (never
/// on a command line that `ps` shows).
pub async fn ssh(ctx: &Context, instance: &Instance, args: &SshArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the path of cloudctl for ssh's ProxyCommand")?;
    let id = instance.id.to_string();
    let proxy = format!(
        "{} instance tunnel-proxy {} --port {}",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&id),
        args.port
    );
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.arg("-o").arg(format!("ProxyCommand={proxy}"));
    cmd.arg("-o").arg(format!("HostKeyAlias={id}"));
    cmd.args(["-o", "CheckHostIP=no", "-o", "UpdateHostKeys=no"]);
    if instance.ssh_host_keys.is_empty() {
        if !args.accept_unknown_host_key {
            return Err(Failure::Usage(format!(
                "instance {} has published no SSH host keys on its serial console, so the server that answers \
                 cannot be checked; connect anyway with --accept-unknown-host-key",
                instance.name
            ))
            .into());
        }
        cmd.args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]);
    } else {
        let file = write_known_hosts(instance)?;
        cmd.arg("-o").arg(format!("UserKnownHostsFile={}", file.display()));
        cmd.args(["-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes"]);
    }
    if let Some(identity) = &args.identity {
        cmd.arg("-i").arg(identity);
    }
    if let Some(login) = &args.login {
        cmd.arg("-l").arg(login);
    }
    cmd.arg(&instance.name);
    cmd.args(&args.command);
    cmd.env("CLOUDCTL_ENDPOINT", ctx.endpoint()?);
    cmd.env("CLOUDCTL_PROJECT", instance.project_id.to_string());
    cmd.env("CLOUDCTL_PROFILE", &ctx.profile_name);
    if let Some(ca) = &ctx.ca_cert {
        cmd.env("CLOUDCTL_CA_CERT", ca);
    }
    if let Some(token) = &ctx.token {
        cmd.env("CLOUDCTL_TOKEN", token);
    }
    // ssh's own messages pass through as they come; a refused host key is recognised in them.
    cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|err| {
        Failure::Usage(format!("cannot run ssh (install openssh-client): {}", err.to_string().to_lowercase()))
    })?;
    let mut stderr = child.stderr.take().context("ssh's stderr")?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stderr.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        let mut out = std::io::stderr();
        let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
        seen.extend_from_slice(&buf[..n]);
        let keep = seen.len().saturating_sub(4 * REFUSED.len());
        if !String::from_utf8_lossy(&seen).contains(REFUSED) {
            seen.drain(..keep);
        }
    }
    let status = child.wait().await.context("cannot wait for ssh")?;
    if status.code() == Some(255) && String::from_utf8_lossy(&seen).contains(REFUSED) {
        let published: Vec<String> =
            instance.ssh_host_keys.iter().map(|k| format!("{} {}", k.key_type, k.fingerprint)).collect();
        return Err(Failure::Usage(format!(
            "refused: the server that answered for instance {} presented an SSH host key that the instance did not \
             publish (it published {}); nothing was sent to it",
            instance.name,
            published.join(", ")
        ))
        .into());
    }
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("/opt/it's/cloudctl"), r"'/opt/it'\''s/cloudctl'");
    }
}
