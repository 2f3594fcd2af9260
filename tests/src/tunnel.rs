//! A local TCP port forwarded through the control plane's tunnel WebSocket, so a plain `ssh`
//! reaches a guest without any route to its subnet (what `cloudctl instance ssh` does too).

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Listens on 127.0.0.1 and forwards each connection through a new WebSocket to `url`
/// (`ws://…/tunnel?port=22`) with `token`; returns the local port. Runs until the runtime ends.
pub async fn forward(url: String, token: String) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (url, token) = (url.clone(), token.clone());
            tokio::spawn(async move {
                let mut request = url.into_client_request().expect("request");
                request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
                let Ok((ws, _)) = tokio_tungstenite::connect_async(request).await else { return };
                let (mut ws_tx, mut ws_rx) = ws.split();
                let (mut tcp_rx, mut tcp_tx) = tcp.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    while let Ok(n) = tcp_rx.read(&mut buf).await {
                        if n == 0 || ws_tx.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                            break;
                        }
                    }
                    let _ = ws_tx.send(Message::Close(None)).await;
                };
                let down = async move {
                    while let Some(Ok(msg)) = ws_rx.next().await {
                        match msg {
                            Message::Binary(b) if tcp_tx.write_all(&b).await.is_err() => break,
                            Message::Close(_) => break,
                            _ => {}
                        }
                    }
                    let _ = tcp_tx.shutdown().await;
                };
                tokio::select! { () = up => {}, () = down => {} }
            });
        }
    });
    port
}
