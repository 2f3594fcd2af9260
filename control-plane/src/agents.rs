//! The gRPC client side: one place where the control plane calls host agents.
//!
//! Channels are mutual TLS with the control plane's certificate, and verify the agent's
//! certificate names the host the database says lives at that endpoint, so an address that now
//! belongs to another host is refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;

use cloud_proto::agent::v1::host_agent_client::HostAgentClient;
use cloud_proto::identity::PeerIdentity;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::fleet::Fleet;
use crate::ids::HostId;

/// A client of one agent; each call carries the caller's trace context.
pub type AgentClient = HostAgentClient<InterceptedService<Channel, fn(Request<()>) -> Result<Request<()>, Status>>>;

/// Puts the current span's W3C trace context into a call's metadata.
fn with_trace_context(mut request: Request<()>) -> Result<Request<()>, Status> {
    let metadata = request.metadata_mut();
    cloud_common::telemetry::inject(|name, value| {
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(name.as_bytes()), MetadataValue::try_from(&value)) {
            metadata.insert(key, value);
        }
    });
    Ok(request)
}

fn client(channel: Channel) -> AgentClient {
    HostAgentClient::with_interceptor(channel, with_trace_context as fn(_) -> _)
}

/// Why an agent cannot be called.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid agent endpoint {endpoint}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// How many agents [`Agents::keep_connected`] dials at once.
const DIAL_AT_ONCE: usize = 16;

/// Channels to agents, by host.
#[derive(Debug, Default)]
pub struct Agents {
    channels: Mutex<HashMap<HostId, (String, Channel)>>,
}

impl Agents {
    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<HostId, (String, Channel)>> {
        self.channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A client of `host` at `endpoint`: the channel held for it, or a new one that connects on
    /// its first call (reused across calls).
    pub fn client(&self, fleet: &Fleet, host: HostId, endpoint: &str) -> Result<AgentClient, AgentError> {
        let mut channels = self.channels();
        if let Some((known, channel)) = channels.get(&host)
            && known == endpoint
        {
            return Ok(client(channel.clone()));
        }
        let channel = self::endpoint(fleet, host, endpoint)?.connect_lazy();
        channels.insert(host, (endpoint.to_owned(), channel.clone()));
        Ok(client(channel))
    }

    /// Holds a connected channel to each host of `live` (id, agent endpoint) and no other: dials
    /// those without one (`DIAL_AT_ONCE` at a time), so no call pays the mutual-TLS handshake
    /// on its way, and drops the channels of hosts that are gone or moved. A host that cannot
    /// be dialed now is tried again at the next pass, or by its next call. Returns how many
    /// channels are held.
    pub async fn keep_connected(&self, fleet: &Fleet, live: Vec<(HostId, String)>) -> usize {
        let to_dial: Vec<(HostId, String)> = {
            let mut channels = self.channels();
            let wanted: HashMap<&HostId, &String> = live.iter().map(|(h, e)| (h, e)).collect();
            channels.retain(|host, (endpoint, _)| wanted.get(host).is_some_and(|e| *e == endpoint));
            live.into_iter().filter(|(host, _)| !channels.contains_key(host)).collect()
        };
        let dials = to_dial.into_iter().map(|(host, endpoint)| async move {
            let dialed = match self::endpoint(fleet, host, &endpoint) {
                Ok(e) => {
                    e.connect().await.map_err(|source| AgentError::Endpoint { endpoint: endpoint.clone(), source })
                }
                Err(err) => Err(err),
            };
            (host, endpoint, dialed)
        });
        let mut dials = futures::stream::iter(dials).buffer_unordered(DIAL_AT_ONCE);
        while let Some((host, endpoint, dialed)) = dials.next().await {
            match dialed {
                // A call may have opened a channel meanwhile: either serves.
                Ok(channel) => {
                    self.channels().entry(host).or_insert((endpoint, channel));
                }
                Err(err) => {
                    tracing::debug!(%host, error = %crate::error_chain::ErrorChain(&err), "cannot dial agent yet")
                }
            }
        }
        self.channels().len()
    }
}

/// The endpoint of `host`'s agent: mutual TLS with this control plane's certificate, accepting
/// only a certificate naming `host`.
fn endpoint(fleet: &Fleet, host: HostId, endpoint: &str) -> Result<Endpoint, AgentError> {
    let err = |source| AgentError::Endpoint { endpoint: endpoint.to_owned(), source };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(fleet.ca.cert_pem()))
        .domain_name(PeerIdentity::Host(host.0).dns_name())
        .identity(Identity::from_pem(&fleet.identity.cert_pem, &fleet.identity.key_pem));
    Ok(Endpoint::from_shared(endpoint.to_owned())
        .map_err(err)?
        .tls_config(tls)
        .map_err(err)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120)))
}
