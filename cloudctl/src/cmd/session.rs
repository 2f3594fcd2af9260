//! Interactive sessions with an instance: the serial console (raw terminal, escape sequence to
//! detach) and the byte pipe of `ssh` through the control plane's tunnel (cloudctl as ssh's
//! ProxyCommand; the ssh side is in `ssh`).
//!
//! ```text
//!  terminal ─raw bytes─▶ EscapeScanner ─▶ WebSocket …/console ─▶ control plane ─▶ agent ─▶ serial
//!  ssh ─ProxyCommand─▶ cloudctl instance tunnel-proxy ID ─▶ WebSocket …/tunnel?port=22 ─▶ guest:22
//! ```
//! Standard input is read on a thread of its own (a blocking read cannot be cancelled; the
//! process ends without waiting for it). The terminal is restored by a guard's `Drop`, so it is
//! restored on every way out, errors and panics included.

use std::io::{IsTerminal, Read, Write};

use anyhow::Context as _;
use cloudctl::client::WebSocket;
use cloudctl::output::write_stdout_bytes;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::sync::mpsc;

/// Ctrl-]: the first key of the `Ctrl-] .` escape.
const CTRL_RIGHT_BRACKET: u8 = 0x1d;

/// Finds the detach sequences in typed input: `Ctrl-] .` anywhere, `~.` at the start of a
/// line. `~~` at the start of a line types one `~`; any other key after the first of a pair
/// sends both.
#[derive(Debug, Clone)]
pub struct EscapeScanner {
    line_start: bool,
    pending: Option<u8>,
}

impl Default for EscapeScanner {
    fn default() -> Self {
        Self { line_start: true, pending: None }
    }
}

impl EscapeScanner {
    /// The bytes to send for `input`, and whether the user asked to detach.
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if let Some(first) = self.pending.take() {
                if b == b'.' {
                    return (out, true);
                }
                if first == b'~' && b == b'~' {
                    out.push(b'~');
                    self.line_start = false;
                    continue;
                }
                out.push(first);
                self.line_start = false;
            }
            if b == CTRL_RIGHT_BRACKET || (b == b'~' && self.line_start) {
                self.pending = Some(b);
                continue;
            }
            out.push(b);
            self.line_start = b == b'\r' || b == b'\n';
        }
        (out, false)
    }
}

/// The terminal in raw mode until dropped.
#[derive(Debug)]
struct RawMode {
    original: Termios,
}

impl RawMode {
    /// Raw mode on standard input if it is a terminal (`None` otherwise).
    fn enable() -> anyhow::Result<Option<Self>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let original = termios::tcgetattr(&stdin).context("cannot read the terminal's settings")?;
        let mut raw = original.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).context("cannot put the terminal in raw mode")?;
        Ok(Some(Self { original }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.original);
    }
}

/// Standard input in chunks, read on a thread; the channel closes at end of input.
fn stdin_chunks() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

fn note(text: &str) {
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Attaches the terminal to a console WebSocket until the user detaches or the server closes it.
pub async fn console(socket: WebSocket, name: &str) -> anyhow::Result<()> {
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        note(&format!(
            "Connected to the serial console of {name}. Detach: Ctrl-] then '.', or '~.' after a newline.\r\n"
        ));
    }
    let guard = RawMode::enable()?;
    let (mut tx, mut rx) = socket.split();
    let mut input = stdin_chunks();
    let mut scanner = EscapeScanner::default();
    let mut input_open = true;
    let outcome: anyhow::Result<&str> = loop {
        tokio::select! {
            chunk = input.recv(), if input_open => match chunk {
                Some(chunk) => {
                    let (bytes, detach) = scanner.feed(&chunk);
                    if !bytes.is_empty()
                        && let Err(err) = tx.send(bytes).await
                    {
                        break Err(err.into());
                    }
                    if detach {
                        break Ok("detached");
                    }
                }
                // End of input (a pipe): keep showing output until the server closes.
                None => input_open = false,
            },
            data = rx.recv() => match data {
                Ok(Some(data)) => {
                    if let Err(err) = write_stdout_bytes(&data) {
                        break Err(err.into());
                    }
                }
                Ok(None) => break Ok("the console was closed by the server"),
                Err(err) => break Err(err.into()),
            },
        }
    };
    tx.close().await;
    drop(guard);
    let reason = outcome?;
    if interactive {
        note(&format!("\r\n{reason}\r\n"));
    }
    Ok(())
}

/// Pipes standard input and output through a tunnel WebSocket (ssh's ProxyCommand).
pub async fn pipe_stdio(socket: WebSocket) -> anyhow::Result<()> {
    let (mut tx, mut rx) = socket.split();
    let mut input = stdin_chunks();
    let upstream = async move {
        while let Some(chunk) = input.recv().await {
            tx.send(chunk).await?;
        }
        tx.close().await;
        anyhow::Ok(())
    };
    let downstream = async move {
        while let Some(data) = rx.recv().await? {
            write_stdout_bytes(&data)?;
        }
        anyhow::Ok(())
    };
    tokio::select! {
        result = upstream => result,
        result = downstream => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_bracket_dot_detaches_anywhere() {
        let mut s = EscapeScanner::default();
        assert_eq!(s.feed(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(s.feed(b"abc\x1d"), (b"abc".to_vec(), false));
        assert_eq!(s.feed(b"."), (Vec::new(), true));
    }

    #[test]
    fn tilde_dot_detaches_only_at_a_line_start() {
        let mut s = EscapeScanner::default();
        assert_eq!(s.feed(b"a~.b"), (b"a~.b".to_vec(), false));
        assert_eq!(s.feed(b"\r~."), (b"\r".to_vec(), true));
        let mut s = EscapeScanner::default();
        assert_eq!(s.feed(b"~~x"), (b"~x".to_vec(), false));
        let mut s = EscapeScanner::default();
        assert_eq!(s.feed(b"~x\x1dy"), (b"~x\x1dy".to_vec(), false));
    }
}
