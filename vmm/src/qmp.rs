//! An async QMP client: QEMU's JSON control protocol over the instance's `qmp.sock`.
//!
//! ```text
//!  connect ──▶ greeting {"QMP":…} ──▶ {"execute":"qmp_capabilities"} ──▶ ready
//!  execute(cmd) ─ {"execute":cmd,"arguments":…,"id":N} ─▶ QEMU
//!  reader task ◀─ {"return":…,"id":N} | {"error":…,"id":N} ─ routes to the waiting caller
//!              ◀─ {"event":"SHUTDOWN",…}                   ─ broadcast to subscribers
//! ```
//! One reader task owns the read half; callers wait on a oneshot per command id, with a timeout.
//! What a line is (event, reply, error, nothing) is decided by one pure function,
//! [`QmpLine::classify`], which the unit tests and the `qmp_line` fuzz target drive directly.
//! When QEMU closes the socket (it exited, or the socket was removed under it) every waiting
//! and future command fails with [`QmpError::Disconnected`] and the event channel closes, which
//! is how [`crate::vm::Vm`] learns that QEMU is gone without polling.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{broadcast, oneshot, watch};

/// Default time a command may take.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors talking QMP.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be connected (QEMU gone, or the socket file removed).
    #[error("cannot connect to QMP socket {path}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No greeting, or not a QMP greeting, within the timeout.
    #[error("no QMP greeting on {path}")]
    Greeting {
        /// Socket path.
        path: PathBuf,
    },
    /// Reading or writing the socket failed.
    #[error("QMP I/O error")]
    Io {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The command got no answer in time.
    #[error("QMP command {command} timed out after {after:?}")]
    Timeout {
        /// The command.
        command: String,
        /// The timeout.
        after: Duration,
    },
    /// QEMU answered with an error.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QMP error class (e.g. `GenericError`, `CommandNotFound`).
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// The connection is closed (QEMU exited or closed the monitor).
    #[error("QMP connection closed")]
    Disconnected,
    /// A reply that is not the JSON we expected.
    #[error("unexpected QMP reply to {command}")]
    Decode {
        /// The command.
        command: String,
        /// The decoder's complaint.
        #[source]
        source: serde_json::Error,
    },
}

/// An asynchronous event from QEMU.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QmpEvent {
    /// Event name, e.g. `SHUTDOWN`, `STOP`, `RESUME`, `RESET`, `POWERDOWN`, `MIGRATION`.
    pub event: String,
    /// Event data (`null` when absent).
    #[serde(default)]
    pub data: Value,
    /// QEMU's timestamp.
    #[serde(default)]
    pub timestamp: Value,
}

/// One line read from QEMU, classified by [`QmpLine::classify`]: what the reader task does with
/// it depends on nothing else.
#[derive(Debug, Clone, PartialEq)]
pub enum QmpLine {
    /// Not JSON at all (logged and skipped).
    NotJson,
    /// An asynchronous event (`{"event": NAME, …}`), for the subscribers.
    Event(QmpEvent),
    /// The answer to the command with this `id`: its `return` value, or QEMU's error.
    Reply {
        /// The command id we sent.
        id: u64,
        /// `return`, or the `error` object's `class` and `desc`.
        reply: Result<Value, QmpFailure>,
    },
    /// JSON that is neither: an event whose fields have the wrong types, a reply without an
    /// integer id, the greeting repeated, any other object or value (skipped).
    Ignored,
}

/// QEMU's `{"error": {"class": …, "desc": …}}`; a missing or non-string field is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QmpFailure {
    /// QMP error class (e.g. `GenericError`, `CommandNotFound`).
    pub class: String,
    /// QEMU's description.
    pub desc: String,
}

impl QmpLine {
    /// Classifies one line from QEMU (pure). A line with an `event` member is an event, whatever
    /// else it holds; otherwise a line with an integer `id` is a reply: its `return` member if it
    /// has one, else an error (a reply with neither is an error with empty class and text, so
    /// that its caller does not wait for an answer that will not come).
    pub fn classify(line: &str) -> QmpLine {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return QmpLine::NotJson;
        };
        if v.get("event").is_some() {
            return serde_json::from_value::<QmpEvent>(v).map_or(QmpLine::Ignored, QmpLine::Event);
        }
        let Some(id) = v.get("id").and_then(Value::as_u64) else {
            return QmpLine::Ignored;
        };
        let reply = match v.get("return") {
            Some(ret) => Ok(ret.clone()),
            None => {
                let err = v.get("error");
                let field = |k: &str| err.and_then(|e| e.get(k)).and_then(Value::as_str).unwrap_or_default().to_owned();
                Err(QmpFailure { class: field("class"), desc: field("desc") })
            }
        };
        QmpLine::Reply { id, reply }
    }
}

type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Result<Value, QmpError>>>>>>;

/// A connected, negotiated QMP session. Cheap to clone (shared connection).
#[derive(Debug, Clone)]
pub struct QmpClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
    events: broadcast::Sender<QmpEvent>,
    closed: watch::Receiver<bool>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl QmpClient {
    /// Connects, reads the greeting and negotiates capabilities, all within `timeout`.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<QmpClient, QmpError> {
        let stream =
            UnixStream::connect(path).await.map_err(|source| QmpError::Connect { path: path.to_owned(), source })?;
        let (read, write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = tokio::time::timeout(timeout, lines.next_line())
            .await
            .map_err(|_| QmpError::Greeting { path: path.to_owned() })?
            .map_err(|source| QmpError::Io { source })?;
        let is_qmp = greeting
            .as_deref()
            .and_then(|g| serde_json::from_str::<Value>(g).ok())
            .is_some_and(|v| v.get("QMP").is_some());
        if !is_qmp {
            return Err(QmpError::Greeting { path: path.to_owned() });
        }

        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let (events, _) = broadcast::channel(256);
        let (closed_tx, closed) = watch::channel(false);
        let reader = tokio::spawn(read_loop(lines, pending.clone(), events.clone(), closed_tx));
        let client = QmpClient {
            inner: Arc::new(Inner {
                writer: tokio::sync::Mutex::new(write),
                pending,
                next_id: AtomicU64::new(1),
                events,
                closed,
                reader,
            }),
        };
        client.execute_with_timeout("qmp_capabilities", None, timeout).await?;
        Ok(client)
    }

    /// Subscribes to events from now on.
    pub fn events(&self) -> broadcast::Receiver<QmpEvent> {
        self.inner.events.subscribe()
    }

    /// True once QEMU closed the connection.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Waits until QEMU closes the connection (e.g. because it exited).
    pub async fn closed(&self) {
        let mut rx = self.inner.closed.clone();
        // An Err means the reader is gone, which also means closed.
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Runs a command with [`DEFAULT_COMMAND_TIMEOUT`].
    pub async fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        self.execute_with_timeout(command, arguments, DEFAULT_COMMAND_TIMEOUT).await
    }

    /// Hands `fd` to QEMU under `name` (`getfd`, the descriptor riding along as SCM_RIGHTS), for
    /// a later command to use as `fd:NAME` (migrations to and from files QEMU cannot open).
    pub async fn pass_fd(&self, name: &str, fd: std::os::fd::BorrowedFd<'_>) -> Result<(), QmpError> {
        let args = Some(json!({ "fdname": name }));
        self.execute_inner("getfd", args, Some(fd), DEFAULT_COMMAND_TIMEOUT).await.map(drop)
    }

    /// Runs a command and returns its `return` value.
    pub async fn execute_with_timeout(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        self.execute_inner(command, arguments, None, timeout).await
    }

    async fn execute_inner(
        &self,
        command: &str,
        arguments: Option<Value>,
        fd: Option<std::os::fd::BorrowedFd<'_>>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.inner.pending);
            match pending.as_mut() {
                Some(map) => {
                    map.insert(id, tx);
                }
                None => return Err(QmpError::Disconnected),
            }
        }
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            msg["arguments"] = arguments;
        }
        let mut line = msg.to_string();
        line.push('\n');
        tracing::debug!(command, id, "qmp execute");
        let sent = async {
            let mut w = self.inner.writer.lock().await;
            let rest = match fd {
                Some(fd) => send_with_fd(w.as_ref(), line.as_bytes(), fd).await?,
                None => 0,
            };
            w.write_all(&line.as_bytes()[rest..]).await
        };
        let result = tokio::time::timeout(timeout, async {
            match sent.await {
                Ok(()) => rx.await.unwrap_or(Err(QmpError::Disconnected)),
                Err(e) if is_disconnect(&e) => Err(QmpError::Disconnected),
                Err(source) => Err(QmpError::Io { source }),
            }
        })
        .await;
        match result {
            Ok(r) => r.map_err(|e| match e {
                QmpError::Command { class, desc, .. } => QmpError::Command { command: command.to_owned(), class, desc },
                other => other,
            }),
            Err(_) => {
                if let Some(map) = lock(&self.inner.pending).as_mut() {
                    map.remove(&id);
                }
                Err(QmpError::Timeout { command: command.to_owned(), after: timeout })
            }
        }
    }

    /// Runs a command and decodes its `return` value.
    pub async fn execute_as<T: serde::de::DeserializeOwned>(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<T, QmpError> {
        let v = self.execute(command, arguments).await?;
        serde_json::from_value(v).map_err(|source| QmpError::Decode { command: command.to_owned(), source })
    }
}

/// Sends the first bytes of `bytes` that fit with `fd` attached; returns how many were sent.
async fn send_with_fd(stream: &UnixStream, bytes: &[u8], fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<usize> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    let fds = [fd.as_raw_fd()];
    loop {
        stream.writable().await?;
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            let iov = [std::io::IoSlice::new(bytes)];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).map_err(std::io::Error::from)
        });
        match sent {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => return other,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn is_disconnect(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::NotConnected
    )
}

async fn read_loop(
    mut lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    pending: Pending,
    events: broadcast::Sender<QmpEvent>,
    closed: watch::Sender<bool>,
) {
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "qmp read failed");
                break;
            }
        };
        match QmpLine::classify(&line) {
            QmpLine::NotJson => tracing::warn!(line, "ignoring non-JSON QMP line"),
            QmpLine::Event(ev) => {
                tracing::debug!(event = ev.event, "qmp event");
                // No subscribers is fine.
                let _ = events.send(ev);
            }
            QmpLine::Reply { id, reply } => {
                if let Some(tx) = lock(&pending).as_mut().and_then(|m| m.remove(&id)) {
                    let reply = reply.map_err(|QmpFailure { class, desc }| QmpError::Command {
                        command: String::new(),
                        class,
                        desc,
                    });
                    let _ = tx.send(reply);
                }
            }
            QmpLine::Ignored => {}
        }
    }
    // Fail everyone still waiting, refuse new commands, close the event stream.
    if let Some(map) = lock(&pending).take() {
        for (_, tx) in map {
            let _ = tx.send(Err(QmpError::Disconnected));
        }
    }
    let _ = closed.send(true);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A scripted QMP server: greets, acknowledges capabilities, then answers `query-status`,
    /// errors on anything else, emits one event, and hangs up on `quit`.
    async fn fake_qemu(listener: UnixListener) {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = stream.into_split();
        w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n").await.unwrap();
        let mut lines = BufReader::new(r).lines();
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: Value = serde_json::from_str(&line).unwrap();
            let id = v["id"].clone();
            let reply = match v["execute"].as_str().unwrap() {
                "qmp_capabilities" => json!({"return": {}, "id": id}),
                "query-status" => {
                    w.write_all(b"{\"event\": \"STOP\", \"data\": {}, \"timestamp\": {}}\n").await.unwrap();
                    json!({"return": {"status": "paused", "running": false}, "id": id})
                }
                "hang" => continue,
                "quit" => return,
                _ => json!({"error": {"class": "CommandNotFound", "desc": "nope"}, "id": id}),
            };
            w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn commands_events_errors_timeouts_and_disconnect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(fake_qemu(listener));

        let qmp = QmpClient::connect(&path, Duration::from_secs(5)).await.unwrap();
        let mut events = qmp.events();
        let status = qmp.execute("query-status", None).await.unwrap();
        assert_eq!(status["status"], "paused");
        assert_eq!(events.recv().await.unwrap().event, "STOP");

        let err = qmp.execute("bogus", None).await.unwrap_err();
        assert!(
            matches!(&err, QmpError::Command { command, class, .. } if command == "bogus" && class == "CommandNotFound")
        );

        let err = qmp.execute_with_timeout("hang", None, Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(err, QmpError::Timeout { .. }));

        let err = qmp.execute("quit", None).await.unwrap_err();
        assert!(matches!(err, QmpError::Disconnected));
        qmp.closed().await;
        assert!(qmp.is_closed());
        assert!(matches!(qmp.execute("query-status", None).await, Err(QmpError::Disconnected)));
    }

    #[test]
    fn lines_are_classified_as_events_replies_errors_or_ignored() {
        let event = QmpLine::classify(r#"{"event": "SHUTDOWN", "data": {"guest": true}, "timestamp": {"seconds": 1}}"#);
        let QmpLine::Event(ev) = event else { panic!("not an event: {event:?}") };
        assert_eq!(
            (ev.event.as_str(), &ev.data, &ev.timestamp),
            ("SHUTDOWN", &json!({"guest": true}), &json!({"seconds": 1}))
        );
        // Absent data and timestamp are null; an event is an event even with an id.
        let QmpLine::Event(ev) = QmpLine::classify(r#"{"event": "STOP", "id": 3}"#) else { panic!() };
        assert_eq!((ev.data, ev.timestamp), (Value::Null, Value::Null));

        assert_eq!(
            QmpLine::classify(r#"{"return": {"status": "running"}, "id": 7}"#),
            QmpLine::Reply { id: 7, reply: Ok(json!({"status": "running"})) }
        );
        assert_eq!(
            QmpLine::classify(r#"{"error": {"class": "GenericError", "desc": "no"}, "id": 8}"#),
            QmpLine::Reply { id: 8, reply: Err(QmpFailure { class: "GenericError".into(), desc: "no".into() }) }
        );
        // A reply with neither return nor error fails its command rather than leaving it waiting.
        assert_eq!(QmpLine::classify(r#"{"id": 9}"#), QmpLine::Reply { id: 9, reply: Err(QmpFailure::default()) });
        assert_eq!(
            QmpLine::classify(r#"{"error": {"class": 1}, "id": 10}"#),
            QmpLine::Reply { id: 10, reply: Err(QmpFailure::default()) }
        );
        // `return` wins over `error`, as QEMU never sends both.
        assert!(matches!(
            QmpLine::classify(r#"{"return": null, "error": {}, "id": 11}"#),
            QmpLine::Reply { id: 11, reply: Ok(Value::Null) }
        ));

        // An event's data and timestamp may be any JSON, and other members do not matter.
        let odd = QmpLine::classify(r#"{"event": "STOP", "data": 1, "timestamp": [], "extra": true}"#);
        assert!(matches!(&odd, QmpLine::Event(ev) if ev.data == json!(1)), "{odd:?}");

        for ignored in [
            r#"{"event": 5}"#,
            r#"{"return": {}}"#,
            r#"{"return": {}, "id": -1}"#,
            r#"{"return": {}, "id": 1.5}"#,
            r#"{"return": {}, "id": "1"}"#,
            r#"{"QMP": {"version": {}, "capabilities": []}}"#,
            "[1, 2]",
            "42",
        ] {
            assert_eq!(QmpLine::classify(ignored), QmpLine::Ignored, "{ignored}");
        }
        for not_json in ["", "garbage", r#"{"return": {}, "id": 1"#, "{\"id\": 1} trailing"] {
            assert_eq!(QmpLine::classify(not_json), QmpLine::NotJson, "{not_json}");
        }
    }

    #[tokio::test]
    async fn missing_socket_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = QmpClient::connect(&dir.path().join("none.sock"), Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, QmpError::Connect { .. }));
    }
}
