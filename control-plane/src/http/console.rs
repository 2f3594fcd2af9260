//! WebSocket endpoints to an instance's serial console and to a TCP port of the guest, bridged
//! to the host agent's `Console` and `Tunnel` gRPC streams. Both are authorized like the
//! instance itself (a member may attach; another project's instance is a 404).
//!
//! ```text
//!  browser / cloudctl ──WebSocket (binary frames)──▶ control plane ──gRPC stream──▶ agent ──▶ serial.sock / guest:port
//! ```

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket};

use super::extract::{Path, Query, WebSocketHandshake, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use cloud_proto::agent::v1 as pb;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;

use super::error::ApiError;
use crate::app::App;
use crate::auth::Caller;

/// Routes of this module.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/projects/{project}/instances/{instance}/console", get(console))
        .route("/v1/projects/{project}/instances/{instance}/tunnel", get(tunnel))
}

/// Bridges a WebSocket and a gRPC bidirectional stream: binary frames in become `input`
/// messages, the agent's output becomes binary frames; either side closing ends both, and so
/// does `idle` without a frame either way (closed with the reason).
async fn bridge<In, Out>(
    socket: WebSocket,
    idle: Option<std::time::Duration>,
    first: In,
    wrap: fn(Vec<u8>) -> In,
    start: impl AsyncFnOnce(tokio_stream::wrappers::ReceiverStream<In>) -> Result<tonic::Streaming<Out>, tonic::Status>,
    unwrap: fn(Out) -> Vec<u8>,
) where
    In: Send + 'static,
    Out: Send + 'static,
{
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (tx, rx) = tokio::sync::mpsc::channel::<In>(64);
    if tx.send(first).await.is_err() {
        return;
    }
    let mut output = match start(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
        Ok(stream) => stream,
        Err(status) => {
            let _ = ws_tx
                .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                    code: 1011,
                    reason: status.message().to_owned().into(),
                })))
                .await;
            return;
        }
    };
    // Milliseconds from `started` to the last frame either way.
    let started = tokio::time::Instant::now();
    let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let touch = |last: &std::sync::atomic::AtomicU64| {
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        last.store(ms, std::sync::atomic::Ordering::Relaxed);
    };
    let (last_in, last_out) = (last.clone(), last);
    let inbound = async move {
        while let Some(Ok(msg)) = ws_rx.next().await {
            touch(&last_in);
            let data = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            if tx.send(wrap(data)).await.is_err() {
                break;
            }
        }
    };
    let outbound = async move {
        // Resolves once `idle` has passed since the last frame (never without `idle`).
        let quiet = async {
            let Some(idle) = idle else { return std::future::pending().await };
            loop {
                let seen = last_out.load(std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep_until(started + std::time::Duration::from_millis(seen) + idle).await;
                if last_out.load(std::sync::atomic::Ordering::Relaxed) == seen {
                    return idle;
                }
            }
        };
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                out = output.next() => match out {
                    Some(Ok(out)) => {
                        touch(&last_out);
                        if ws_tx.send(Message::Binary(unwrap(out).into())).await.is_err() {
                            return;
                        }
                    }
                    _ => break,
                },
                idle = &mut quiet => {
                    let reason = format!("closed after {}s without traffic (limits.websocket_idle_secs)", idle.as_secs());
                    let frame = axum::extract::ws::CloseFrame { code: 1000, reason: reason.into() };
                    let _ = ws_tx.send(Message::Close(Some(frame))).await;
                    return;
                }
            }
        }
        let _ = ws_tx.send(Message::Close(None)).await;
    };
    tokio::select! {
        () = inbound => {}
        () = outbound => {}
    }
}

/// The instance's serial console over a WebSocket: scrollback first, then live output; what the
/// client sends is typed on the console.
#[utoipa::path(get, path = "/v1/projects/{project}/instances/{instance}/console", tag = "instances", security(("bearer" = [])),
    params(("project" = String, Path), ("instance" = String, Path), WebSocketHandshake),
    responses((status = 101, description = "WebSocket of binary frames"), (status = 404, body = super::error::ErrorBody),
        (status = 429, description = "too many consoles and tunnels open to this instance or by this caller", body = super::error::ErrorBody)))]
pub async fn console(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, instance)): Path<(String, String)>,
    WebSocketUpgrade(ws): WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let (mut client, id) = crate::app::instances::agent_for(&app, &caller, &project, &instance).await?;
    let slot = open_slot(&app, &caller, &id)?;
    let idle = app.websocket_idle;
    Ok(ws.on_upgrade(move |socket| async move {
        let _slot = slot;
        let first = pb::ConsoleInput { kind: Some(pb::console_input::Kind::InstanceId(id)) };
        bridge(
            socket,
            idle,
            first,
            |data| pb::ConsoleInput { kind: Some(pb::console_input::Kind::Data(data)) },
            async move |input| client.console(input).await.map(tonic::Response::into_inner),
            |out: pb::ConsoleOutput| out.data,
        )
        .await;
    }))
}

/// A place for one more console or tunnel to instance `id`, or 429 naming the cap reached.
fn open_slot(app: &App, caller: &Caller, id: &str) -> Result<crate::limits::ConnectionSlot, ApiError> {
    app.connections.open(id, super::caller::limit_key(caller)).map_err(ApiError::too_many_connections)
}

/// Which guest port to tunnel to.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TunnelQuery {
    /// TCP port on the guest (default 22).
    #[param(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
}

/// A TCP stream to a port of the guest over a WebSocket (for `cloudctl instance ssh`): no route
/// to the instance subnet is needed.
#[utoipa::path(get, path = "/v1/projects/{project}/instances/{instance}/tunnel", tag = "instances", security(("bearer" = [])),
    params(("project" = String, Path), ("instance" = String, Path), TunnelQuery, WebSocketHandshake),
    responses((status = 101, description = "WebSocket of binary frames"), (status = 404, body = super::error::ErrorBody),
        (status = 429, description = "too many consoles and tunnels open to this instance or by this caller", body = super::error::ErrorBody)))]
pub async fn tunnel(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((project, instance)): Path<(String, String)>,
    Query(q): Query<TunnelQuery>,
    WebSocketUpgrade(ws): WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let port = q.port.unwrap_or(22);
    if port == 0 {
        return Err(ApiError::invalid("port must be between 1 and 65535"));
    }
    let (mut client, id) = crate::app::instances::agent_for(&app, &caller, &project, &instance).await?;
    let slot = open_slot(&app, &caller, &id)?;
    let idle = app.websocket_idle;
    Ok(ws.on_upgrade(move |socket| async move {
        let _slot = slot;
        let first = pb::TunnelData {
            kind: Some(pb::tunnel_data::Kind::Open(pb::TunnelOpen { instance_id: id, port: u32::from(port) })),
        };
        bridge(
            socket,
            idle,
            first,
            |data| pb::TunnelData { kind: Some(pb::tunnel_data::Kind::Data(data)) },
            async move |input| client.tunnel(input).await.map(tonic::Response::into_inner),
            |out: pb::TunnelData| match out.kind {
                Some(pb::tunnel_data::Kind::Data(d)) => d,
                _ => Vec::new(),
            },
        )
        .await;
    }))
}
