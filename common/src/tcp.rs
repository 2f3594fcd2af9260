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
}
