//! TCP connections that carry interactive traffic (SSH and console bytes through tunnels, RPCs
//! whose answers users wait for) with Nagle's algorithm off: a small write is sent at once,
//! never held back until the peer acknowledges the last one (which Linux delays up to 40 ms,
//! once per round trip of a handshake).

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};

/// The connections `listener` accepts, each with `TCP_NODELAY` set (for a server's
/// `serve_with_incoming`).
pub fn incoming(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| accepted.inspect(no_delay))
}

/// Sets `TCP_NODELAY` on `stream` (failing only on a socket already gone, which its next read
/// or write says).
pub fn no_delay(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// Acknowledges what `stream` receives at once, until its next read: Linux leaves quick-ack
/// mode by itself, so call it again after every read. A peer that sends a handshake as several
/// small writes with Nagle's algorithm on (dropbear in a guest) holds each back until the last
/// one is acknowledged, which a delayed ACK makes wait up to 40 ms.
pub fn quick_ack(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_small_writes_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = Box::pin(incoming(listener));
        let _client = TcpStream::connect(addr).await.unwrap();
        let server = accepted.next().await.unwrap().unwrap();
        assert!(server.nodelay().unwrap());
    }

    #[tokio::test]
    async fn quick_ack_turns_delayed_acks_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let sock = socket2::SockRef::from(&client);
        sock.set_tcp_quickack(false).unwrap();
        quick_ack(&client);
        assert!(sock.tcp_quickack().unwrap());
    }
}
