//! Raft messages carried over the node's QUIC endpoint (`Request::Raft`), one stream each.

use std::sync::Arc;

use starling_cluster::raft::{RaftTransport, TransportError};
use starling_cluster::NodeId;

use super::peers::Peers;
use starling_client::ClientError;

/// The [`RaftTransport`] of a node: the pooled peer connections.
pub struct QuicRaftTransport {
    pub peers: Arc<Peers>,
}

impl RaftTransport for QuicRaftTransport {
    async fn call(
        &self,
        target: NodeId,
        _addr: &str,
        request: Vec<u8>,
    ) -> Result<Vec<u8>, TransportError> {
        let client = self
            .peers
            .control(target)
            .await
            .map_err(|e| TransportError::Unreachable(e.to_string()))?;
        match client.raft(request).await {
            Ok(reply) => Ok(reply),
            Err(e @ ClientError::Server { .. }) => Err(TransportError::Failed(e.to_string())),
            Err(e) => {
                self.peers.reset(target).await;
                Err(TransportError::Failed(e.to_string()))
            }
        }
    }
}
