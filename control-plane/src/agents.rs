//! The gRPC client side: one place where the control plane calls host agents.
//!
//! Channels are mutual TLS with the control plane's certificate, and verify the agent's
//! certificate names the host the database says lives at that endpoint, so an address that now
//! belongs to another host is refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

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

/// Channels to agents, by host.
#[derive(Debug, Default)]
pub struct Agents {
    channels: Mutex<HashMap<HostId, (String, Channel)>>,
}

impl Agents {
    /// A client of `host` at `endpoint` (connected lazily, reused across calls).
    pub fn client(&self, fleet: &Fleet, host: HostId, endpoint: &str) -> Result<AgentClient, AgentError> {
        let mut channels = self.channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((known, channel)) = channels.get(&host)
            && known == endpoint
        {
            return Ok(client(channel.clone()));
        }
        let err = |source| AgentError::Endpoint { endpoint: endpoint.to_owned(), source };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(fleet.ca.cert_pem()))
            .domain_name(PeerIdentity::Host(host.0).dns_name())
            .identity(Identity::from_pem(&fleet.identity.cert_pem, &fleet.identity.key_pem));
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(err)?
            .tls_config(tls)
            .map_err(err)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .connect_lazy();
        channels.insert(host, (endpoint.to_owned(), channel.clone()));
        Ok(client(channel))
    }
}
