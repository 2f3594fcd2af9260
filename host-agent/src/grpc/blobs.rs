//! Image blobs from the control plane's `FetchBlob` stream (mutual TLS).

use cloud_proto::agent::v1 as pb;
use cloud_proto::agent::v1::control_plane_client::ControlPlaneClient;
use futures::StreamExt;
use futures::future::BoxFuture;
use tonic::transport::Channel;

use crate::images::{BlobSource, BlobSourceError, BlobStream};

/// Fetches blobs from the control plane the agent joined.
#[derive(Debug, Clone)]
pub struct ControlPlaneBlobs {
    client: ControlPlaneClient<Channel>,
}

impl ControlPlaneBlobs {
    /// Blobs over `channel` (a mutual-TLS channel to the control plane).
    pub fn new(channel: Channel) -> Self {
        Self { client: ControlPlaneClient::new(channel) }
    }
}

fn transfer(status: tonic::Status) -> BlobSourceError {
    BlobSourceError::Transfer { source: Box::new(status) }
}

impl BlobSource for ControlPlaneBlobs {
    fn fetch<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<BlobStream, BlobSourceError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let request = pb::FetchBlobRequest { sha256: sha256.to_owned() };
            let stream = match client.fetch_blob(request).await {
                Ok(resp) => resp.into_inner(),
                Err(status) if status.code() == tonic::Code::NotFound => {
                    return Err(BlobSourceError::NotFound { sha256: sha256.to_owned() });
                }
                Err(status) => return Err(transfer(status)),
            };
            Ok(stream.map(|chunk| chunk.map(|c| c.data).map_err(transfer)).boxed())
        })
    }
}
