//! WebSockets to an instance's serial console and to its TCP tunnel: binary frames of raw
//! bytes both ways, authenticated with the same bearer token as every other call.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use reqwest::Url;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Why a WebSocket could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The request could not be built (bad URL or token characters).
    #[error("cannot build the WebSocket request for {url}")]
    Request {
        url: String,
        #[source]
        source: tungstenite::Error,
    },
    /// The server refused the upgrade with an HTTP status (401, 404, 409 …).
    #[error("the server refused the WebSocket at {url} with HTTP {status}{}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Refused { url: String, status: u16, detail: Option<String> },
    /// Connecting or exchanging frames failed.
    #[error("WebSocket to {url} failed")]
    Io {
        url: String,
        #[source]
        source: tungstenite::Error,
    },
}

impl WsError {
    /// The HTTP status of a refused upgrade.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An open WebSocket of raw bytes.
#[derive(Debug)]
pub struct WebSocket {
    url: String,
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// Opens a WebSocket to an API URL (http → ws, https → wss with `tls`) with the bearer token.
pub(super) async fn connect(
    mut url: Url,
    token: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<WebSocket, WsError> {
    let text = url.to_string();
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    // Both schemes are special in the URL standard, so switching between them always works.
    let _ = url.set_scheme(scheme);
    let mut request =
        url.as_str().into_client_request().map_err(|source| WsError::Request { url: text.clone(), source })?;
    let auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|e| WsError::Request { url: text.clone(), source: tungstenite::Error::HttpFormat(e.into()) })?;
    request.headers_mut().insert("authorization", auth);
    let connector = tls.map(tokio_tungstenite::Connector::Rustls);
    // Nagle off: console keystrokes and SSH handshakes are small writes that must go at once.
    match tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector).await {
        Ok((stream, _)) => Ok(WebSocket { url: text, stream }),
        Err(tungstenite::Error::Http(resp)) => {
            let detail = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<super::ErrorBody>(b).ok())
                .map(|b| format!("{} (request id {})", b.error.message, b.error.request_id));
            Err(WsError::Refused { url: text, status: resp.status().as_u16(), detail })
        }
        Err(source) => Err(WsError::Io { url: text, source }),
    }
}

impl WebSocket {
    /// Splits into halves that can be used from two tasks.
    pub fn split(self) -> (WsSender, WsReceiver) {
        let (tx, rx) = self.stream.split();
        (WsSender { url: self.url.clone(), sink: tx }, WsReceiver { url: self.url, stream: rx })
    }
}

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The sending half of a [`WebSocket`].
#[derive(Debug)]
pub struct WsSender {
    url: String,
    sink: futures::stream::SplitSink<Stream, Message>,
}

/// The receiving half of a [`WebSocket`].
#[derive(Debug)]
pub struct WsReceiver {
    url: String,
    stream: futures::stream::SplitStream<Stream>,
}

impl WsSender {
    /// Sends bytes as one binary frame.
    pub async fn send(&mut self, data: Vec<u8>) -> Result<(), WsError> {
        let url = self.url.clone();
        self.sink.send(Message::Binary(data.into())).await.map_err(|source| WsError::Io { url, source })
    }

    /// Sends a close frame (errors ignored).
    pub async fn close(&mut self) {
        let _ = self.sink.send(Message::Close(None)).await;
        let _ = self.sink.close().await;
    }
}

impl WsReceiver {
    /// The next bytes from the server; `None` once it closed the socket.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, WsError> {
        loop {
            match self.stream.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(Message::Binary(data))) => return Ok(Some(data.to_vec())),
                Some(Ok(Message::Text(text))) => return Ok(Some(text.as_bytes().to_vec())),
                Some(Ok(_)) => {}
                Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                    return Ok(None);
                }
                Some(Err(source)) => return Err(WsError::Io { url: self.url.clone(), source }),
            }
        }
    }
}
