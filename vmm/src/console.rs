//! The serial console: QEMU serves it on `serial.sock` (one client at a time) and appends
//! everything to `console.log` itself (`logfile=…,logappend=on`), so the log is complete even when
//! nobody is connected and survives VMM restarts.
//!
//! `console.log` is bounded by rotation: [`rotate_console_log`] copies it to `console.log.1` and
//! truncates it in place ("copytruncate": QEMU keeps its `O_APPEND` descriptor, so its next
//! write lands at the start of the emptied file). It runs at every launch and may be called
//! periodically by the agent while the VM runs.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::instance_dir::InstanceDir;

/// Errors on the console socket.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The socket could not be connected.
    #[error("cannot connect to serial console {path}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing failed.
    #[error("serial console I/O error")]
    Io {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The console closed (QEMU exited) before the text appeared.
    #[error("serial console closed before {pattern:?} appeared")]
    Closed {
        /// What we waited for.
        pattern: String,
    },
    /// The text did not appear in time.
    #[error("{pattern:?} did not appear on the serial console within {after:?}")]
    Timeout {
        /// What we waited for.
        pattern: String,
        /// The timeout.
        after: Duration,
    },
}

/// Rotates `console.log` to `console.log.1` (copy, then truncate in place) when it is larger
/// than `max_bytes`.
pub async fn rotate_console_log(dir: &InstanceDir, max_bytes: u64) -> std::io::Result<()> {
    let log = dir.console_log();
    let len = match tokio::fs::metadata(&log).await {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if len <= max_bytes {
        return Ok(());
    }
    tokio::fs::copy(&log, dir.console_log_rotated()).await?;
    let f = tokio::fs::OpenOptions::new().write(true).open(&log).await?;
    f.set_len(0).await
}

/// A connection to `serial.sock`. Everything read is also kept in [`Console::output`].
#[derive(Debug)]
pub struct Console {
    stream: UnixStream,
    output: Vec<u8>,
}

impl Console {
    /// Connects to the instance's serial socket.
    pub async fn connect(dir: &InstanceDir) -> Result<Console, ConsoleError> {
        let path = dir.serial_socket();
        let stream = UnixStream::connect(&path).await.map_err(|source| ConsoleError::Connect { path, source })?;
        Ok(Console { stream, output: Vec::new() })
    }

    /// Everything read so far.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Sends input to the guest's serial port.
    pub async fn write(&mut self, input: &[u8]) -> Result<(), ConsoleError> {
        self.stream.write_all(input).await.map_err(|source| ConsoleError::Io { source })
    }

    /// Reads until `pattern` appears in the output (including output read earlier).
    pub async fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<(), ConsoleError> {
        let needle = pattern.as_bytes();
        let found = |out: &[u8]| out.windows(needle.len().max(1)).any(|w| w == needle);
        let read = async {
            let mut buf = [0u8; 4096];
            loop {
                if found(&self.output) {
                    return Ok(());
                }
                let n = self.stream.read(&mut buf).await.map_err(|source| ConsoleError::Io { source })?;
                if n == 0 {
                    return Err(ConsoleError::Closed { pattern: pattern.to_owned() });
                }
                self.output.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or_else(|_| Err(ConsoleError::Timeout { pattern: pattern.to_owned(), after: timeout }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rotation_copies_and_truncates_only_when_large() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = InstanceDir::new(tmp.path());
        rotate_console_log(&dir, 10).await.unwrap();
        std::fs::write(dir.console_log(), b"short").unwrap();
        rotate_console_log(&dir, 10).await.unwrap();
        assert_eq!(std::fs::read(dir.console_log()).unwrap(), b"short");
        std::fs::write(dir.console_log(), b"much longer than ten").unwrap();
        rotate_console_log(&dir, 10).await.unwrap();
        assert_eq!(std::fs::read(dir.console_log()).unwrap(), b"");
        assert_eq!(std::fs::read(tmp.path().join("console.log.1")).unwrap(), b"much longer than ten");
    }

    #[tokio::test]
    async fn wait_for_sees_text_or_times_out() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = InstanceDir::new(tmp.path());
        let listener = tokio::net::UnixListener::bind(dir.serial_socket()).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"booting\ncloud-minimal: ready\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let mut c = Console::connect(&dir).await.unwrap();
        c.wait_for("cloud-minimal: ready", Duration::from_secs(5)).await.unwrap();
        let err = c.wait_for("never", Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(err, ConsoleError::Timeout { .. }));
    }
}
