//! A client of the QEMU guest agent (`qemu-ga`, Debian package `qemu-guest-agent` in the guest)
//! over the instance's `qga.sock`: the host's way to ask a running guest to change what only
//! the guest can, such as its addresses after its memory was restored under a new one.
//!
//! ```text
//!  connect(qga.sock) ── 0xFF, {"execute":"guest-sync-delimited","arguments":{"id":N}} ─▶ guest
//!                    ◀─ 0xFF {"return":N}      (earlier replies and garbage are skipped)
//!  exec(argv)        ── guest-exec {path, arg, capture-output} ─▶ {"return":{"pid":P}}
//!                    ── guest-exec-status {pid:P} … until "exited" ─▶ code, stdout, stderr
//! ```
//! The socket accepts a connection even when no agent runs in the guest (QEMU holds it): a
//! guest without one is recognised by [`GuestAgent::sync`] timing out, never by an error. One
//! request at a time; every read has a deadline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::time::Instant;

/// Errors talking to the guest agent.
#[derive(Debug, thiserror::Error)]
pub enum GuestAgentError {
    /// The socket could not be connected (QEMU gone, or started without the channel).
    #[error("cannot connect to the guest agent socket {path}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No agent answered in the guest within the time given.
    #[error("no guest agent answered within {after:?} (the image may not run qemu-guest-agent)")]
    NoAgent {
        /// How long it waited.
        after: Duration,
    },
    /// Reading or writing the socket failed.
    #[error("guest agent I/O error")]
    Io {
        /// The OS error.
        #[from]
        source: std::io::Error,
    },
    /// The agent answered a command with an error.
    #[error("guest agent command {command} failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// The error class.
        class: String,
        /// The agent's description.
        desc: String,
    },
    /// A reply that is not what the protocol says.
    #[error("unexpected guest agent reply to {command}: {reply}")]
    Decode {
        /// The command.
        command: String,
        /// The reply, as received.
        reply: String,
    },
    /// A command got no reply in time.
    #[error("guest agent command {command} timed out after {after:?}")]
    Timeout {
        /// The command.
        command: String,
        /// How long it waited.
        after: Duration,
    },
}

/// What a program run in the guest did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestExit {
    /// Its exit code (`None` when a signal ended it).
    pub code: Option<i64>,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

/// How long one command may wait for its reply.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one sync attempt waits before it is sent again.
const SYNC_ATTEMPT: Duration = Duration::from_millis(500);

/// A connection to the guest agent of one VM.
#[derive(Debug)]
pub struct GuestAgent {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    next_id: u64,
}

impl GuestAgent {
    /// Connects to `socket` and waits up to `within` for the agent in the guest to answer.
    pub async fn connect(socket: &Path, within: Duration) -> Result<GuestAgent, GuestAgentError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| GuestAgentError::Connect { path: socket.to_owned(), source })?;
        let (read, writer) = stream.into_split();
        // A random start, so replies meant for an earlier client of the socket never match.
        let next_id = u64::from(uuid::Uuid::new_v4().as_u128() as u32);
        let mut agent = GuestAgent { reader: BufReader::new(read), writer, next_id };
        agent.sync(within).await?;
        Ok(agent)
    }

    /// Resynchronises with the agent: every byte before the reply to a fresh sync is dropped.
    pub async fn sync(&mut self, within: Duration) -> Result<(), GuestAgentError> {
        let deadline = Instant::now() + within;
        loop {
            self.next_id += 1;
            let id = self.next_id;
            // 0xFF makes the agent drop whatever half-request it holds.
            let mut request = vec![0xFF];
            request.extend(json!({"execute": "guest-sync-delimited", "arguments": {"id": id}}).to_string().bytes());
            request.push(b'\n');
            self.writer.write_all(&request).await?;
            let attempt = deadline.min(Instant::now() + SYNC_ATTEMPT);
            match self.await_sync(id, attempt).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(GuestAgentError::NoAgent { after: within });
            }
        }
    }

    /// Reads until the delimited reply to sync `id` (true) or `until` passes (false).
    async fn await_sync(&mut self, id: u64, until: Instant) -> Result<bool, GuestAgentError> {
        loop {
            // Skip to the delimiter, then read the reply line after it.
            let mut skipped = Vec::new();
            match tokio::time::timeout_at(until, self.reader.read_until(0xFF, &mut skipped)).await {
                Err(_) => return Ok(false),
                Ok(Ok(0)) => {
                    return Err(GuestAgentError::Io { source: std::io::ErrorKind::UnexpectedEof.into() });
                }
                Ok(r) => r?,
            };
            if skipped.last() != Some(&0xFF) {
                continue;
            }
            let Some(line) = self.read_line(until).await? else { return Ok(false) };
            if serde_json::from_str::<Value>(&line).ok().and_then(|v| v["return"].as_u64()) == Some(id) {
                return Ok(true);
            }
        }
    }

    async fn read_line(&mut self, until: Instant) -> Result<Option<String>, GuestAgentError> {
        let mut line = Vec::new();
        match tokio::time::timeout_at(until, self.reader.read_until(b'\n', &mut line)).await {
            Err(_) => Ok(None),
            Ok(Ok(0)) => Err(GuestAgentError::Io { source: std::io::ErrorKind::UnexpectedEof.into() }),
            Ok(r) => {
                r?;
                Ok(Some(String::from_utf8_lossy(&line).into_owned()))
            }
        }
    }

    /// Runs one command and returns its `return` value.
    pub async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, GuestAgentError> {
        let mut request = json!({"execute": command, "arguments": arguments}).to_string();
        request.push('\n');
        self.writer.write_all(request.as_bytes()).await?;
        let until = Instant::now() + COMMAND_TIMEOUT;
        let timeout = || GuestAgentError::Timeout { command: command.to_owned(), after: COMMAND_TIMEOUT };
        loop {
            let line = self.read_line(until).await?.ok_or_else(timeout)?;
            let reply: Value = match serde_json::from_str(line.trim_start_matches('\u{FF}').trim()) {
                Ok(reply) => reply,
                // A late sync reply's delimiter, or an empty line.
                Err(_) if line.trim().is_empty() => continue,
                Err(_) => return Err(GuestAgentError::Decode { command: command.to_owned(), reply: line }),
            };
            if let Some(error) = reply.get("error") {
                return Err(GuestAgentError::Command {
                    command: command.to_owned(),
                    class: error["class"].as_str().unwrap_or("?").to_owned(),
                    desc: error["desc"].as_str().unwrap_or("?").to_owned(),
                });
            }
            match reply.get("return") {
                // A number alone answers a sync sent earlier that timed out: not ours.
                Some(Value::Number(_)) => continue,
                Some(value) => return Ok(value.clone()),
                None => return Err(GuestAgentError::Decode { command: command.to_owned(), reply: line }),
            }
        }
    }

    /// Runs `argv` in the guest (as the agent's user, root) and waits up to `within` for it.
    pub async fn exec(&mut self, argv: &[&str], within: Duration) -> Result<GuestExit, GuestAgentError> {
        let (path, args) = argv.split_first().ok_or_else(|| GuestAgentError::Decode {
            command: "guest-exec".to_owned(),
            reply: "an empty command line".to_owned(),
        })?;
        let started = self.execute("guest-exec", json!({"path": path, "arg": args, "capture-output": true})).await?;
        let pid = started["pid"]
            .as_i64()
            .ok_or_else(|| GuestAgentError::Decode { command: "guest-exec".to_owned(), reply: started.to_string() })?;
        let deadline = Instant::now() + within;
        loop {
            let status = self.execute("guest-exec-status", json!({ "pid": pid })).await?;
            if status["exited"].as_bool() == Some(true) {
                let data = |key: &str| {
                    status[key]
                        .as_str()
                        .map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default())
                        .unwrap_or_default()
                };
                return Ok(GuestExit {
                    code: status["exitcode"].as_i64(),
                    stdout: data("out-data"),
                    stderr: data("err-data"),
                });
            }
            if Instant::now() >= deadline {
                return Err(GuestAgentError::Timeout { command: format!("guest-exec {path}"), after: within });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A stand-in agent on a socket: replies as qemu-ga does, after `silent` sync requests it
    /// ignores (a guest whose agent is still starting).
    async fn fake_agent(listener: UnixListener, silent: usize) {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        let mut seen = 0;
        let mut exited = false;
        loop {
            let mut line = Vec::new();
            if lines.read_until(b'\n', &mut line).await.unwrap() == 0 {
                return;
            }
            let text = String::from_utf8_lossy(&line);
            let request: Value = serde_json::from_str(text.trim_start_matches('\u{FFFD}').trim()).unwrap();
            let reply = match request["execute"].as_str().unwrap() {
                "guest-sync-delimited" => {
                    seen += 1;
                    if seen <= silent {
                        continue;
                    }
                    let mut r = vec![0xFF];
                    r.extend(json!({"return": request["arguments"]["id"]}).to_string().bytes());
                    r
                }
                "guest-exec" => json!({"return": {"pid": 42}}).to_string().into_bytes(),
                "guest-exec-status" if !exited => {
                    exited = true;
                    json!({"return": {"exited": false}}).to_string().into_bytes()
                }
                "guest-exec-status" => {
                    json!({"return": {"exited": true, "exitcode": 3, "out-data": "aGk="}}).to_string().into_bytes()
                }
                _ => json!({"error": {"class": "CommandNotFound", "desc": "no"}}).to_string().into_bytes(),
            };
            write.write_all(&reply).await.unwrap();
            write.write_all(b"\n").await.unwrap();
        }
    }

    #[tokio::test]
    async fn syncs_past_a_silent_start_and_runs_a_command() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        tokio::spawn(fake_agent(listener, 2));
        let mut agent = GuestAgent::connect(&socket, Duration::from_secs(5)).await.unwrap();
        let exit = agent.exec(&["/bin/true"], Duration::from_secs(5)).await.unwrap();
        assert_eq!(exit, GuestExit { code: Some(3), stdout: b"hi".to_vec(), stderr: Vec::new() });
        let unknown = agent.execute("guest-nope", json!({})).await.unwrap_err();
        assert!(matches!(unknown, GuestAgentError::Command { ref class, .. } if class == "CommandNotFound"));
    }

    #[tokio::test]
    async fn a_guest_without_an_agent_is_said_so_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        tokio::spawn(fake_agent(listener, usize::MAX));
        let err = GuestAgent::connect(&socket, Duration::from_millis(1200)).await.unwrap_err();
        assert!(matches!(err, GuestAgentError::NoAgent { .. }), "{err:?}");
    }
}
