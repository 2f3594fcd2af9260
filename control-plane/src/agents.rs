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
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::fleet::Fleet;
use crate::ids::HostId;

/// A client of one agent.
pub type AgentClient = HostAgentClient<Channel>;

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
            return Ok(HostAgentClient::new(channel.clone()));
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
        Ok(HostAgentClient::new(channel))
    }
}
