//! Raft RPCs as bytes over a transport the engine provides.
//!
//! The cluster crate owns no socket for Raft (ARCHITECTURE §5: nodes talk over the engine's
//! QUIC endpoint), so openraft's `RaftNetwork` is implemented here on top of
//! [`RaftTransport`]: each RPC is a JSON [`RpcRequest`] sent to the peer, whose
//! [`ClusterRaft::handle_rpc`](super::ClusterRaft::handle_rpc) answers with a JSON
//! [`RaftRpcReply`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError as OrRaftError, RemoteError,
    Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::TypeConfig;
use crate::core::state::{Command, Outcome};
use crate::core::table::NodeId;

/// Why a request could not be carried. The two cases matter to a caller deciding whether to
/// retry: a request that surely never arrived can be sent again, one that may have arrived
/// (and been acted on) cannot be blindly repeated without risking a command applied twice.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TransportError {
    /// The request was not delivered (no connection, peer unknown or cut off).
    #[error("node unreachable: {0}")]
    Unreachable(String),
    /// The request may have been delivered but no reply came back (stream reset, timeout).
    #[error("no reply: {0}")]
    Failed(String),
}

/// Carries one serialized Raft RPC to a peer and returns its serialized reply. The engine
/// implements it over its QUIC endpoint (the reply is what the peer's
/// [`ClusterRaft::handle_rpc`](super::ClusterRaft::handle_rpc) returned); tests implement it
/// in memory. `addr` is the peer's QUIC address as recorded in the Raft membership.
pub trait RaftTransport: Send + Sync + 'static {
    /// Sends `request` to `target` at `addr` and waits for the reply.
    fn call(
        &self,
        target: NodeId,
        addr: &str,
        request: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send;
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`RaftTransport`] made object-safe, so that `ClusterRaft` is not generic over it.
pub(crate) trait ErasedTransport: Send + Sync + 'static {
    fn call_boxed<'a>(
        &'a self,
        target: NodeId,
        addr: &'a str,
        request: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, TransportError>>;
}

impl<T: RaftTransport> ErasedTransport for T {
    fn call_boxed<'a>(
        &'a self,
        target: NodeId,
        addr: &'a str,
        request: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, TransportError>> {
        Box::pin(self.call(target, addr, request))
    }
}

/// One Raft message between nodes. `ClientWrite` lets a follower hand a proposal to the
/// leader, so that [`ClusterRaft::propose`](super::ClusterRaft::propose) works on any node.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
    /// Replication and heartbeat, leader to follower.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// A candidate asking for a vote.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot, for a follower too far behind for the log.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A proposal forwarded by a follower to the leader.
    ClientWrite(Command),
    /// A follower asking its leader how recently a majority acknowledged it: what the
    /// follower's lease runs on (see `ClusterRaft::lease_valid`).
    Lease,
}

/// What goes on the wire: the RPC plus who it is from and for, so that a message that
/// reaches the wrong node or the wrong cluster (a reused address) is refused, not obeyed.
#[derive(Debug, Serialize, Deserialize)]
pub struct RpcRequest {
    /// The sender's cluster; a node of another cluster is refused.
    pub cluster_id: String,
    /// The sender, for logs.
    pub from: NodeId,
    /// The intended receiver; a node with another id at that address refuses.
    pub to: NodeId,
    /// The message itself.
    pub rpc: RaftRpc,
}

/// Why the leader did not apply a forwarded proposal.
#[derive(Debug, Clone, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardError {
    /// The receiver is not (or no longer) the leader; retry with this one if known.
    #[error("not the leader (the leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The leader took the proposal but could not confirm it (it may still apply).
    #[error("{0}")]
    Failed(String),
}

/// The reply to an [`RpcRequest`]. Errors are part of the reply so that the receiving side
/// never has to drop a connection to say no.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpcReply {
    /// openraft's answer to `AppendEntries`.
    AppendEntries(Result<AppendEntriesResponse<NodeId>, OrRaftError<NodeId>>),
    /// openraft's answer to `Vote`.
    Vote(Result<VoteResponse<NodeId>, OrRaftError<NodeId>>),
    /// openraft's answer to `InstallSnapshot`.
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, OrRaftError<NodeId, InstallSnapshotError>>,
    ),
    /// The outcome of a forwarded proposal, or why there is none.
    ClientWrite(Result<Outcome, ForwardError>),
    /// The answer to `Lease`: how long before answering a majority last acknowledged this
    /// node as leader (`None` if it is not the leader or has no such acknowledgement), and
    /// the index of its last log entry then.
    Lease {
        age_ms: Option<u64>,
        last_index: u64,
    },
    /// The request was not understood or not accepted (malformed, too large, another
    /// cluster, another node).
    Refused(String),
}

/// Encodes a request; the types are plain data, so this cannot fail in practice.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot encode a Raft message");
        Vec::new()
    })
}

/// Makes openraft's per-peer connections.
pub(crate) struct NetworkFactory {
    pub(crate) transport: Arc<dyn ErasedTransport>,
    pub(crate) cluster_id: Arc<str>,
    pub(crate) me: NodeId,
    pub(crate) max_bytes: usize,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            transport: self.transport.clone(),
            cluster_id: self.cluster_id.clone(),
            me: self.me,
            target,
            addr: node.addr.clone(),
            max_bytes: self.max_bytes,
        }
    }
}

/// openraft's view of one peer.
pub(crate) struct Connection {
    transport: Arc<dyn ErasedTransport>,
    cluster_id: Arc<str>,
    me: NodeId,
    target: NodeId,
    addr: String,
    max_bytes: usize,
}

#[derive(Debug, Error)]
#[error("{0}")]
struct Msg(String);

impl Connection {
    async fn send<E: std::error::Error>(
        &self,
        rpc: RaftRpc,
    ) -> Result<RaftRpcReply, RPCError<NodeId, BasicNode, E>> {
        let request = encode(&RpcRequest {
            cluster_id: self.cluster_id.to_string(),
            from: self.me,
            to: self.target,
            rpc,
        });
        let reply = match self
            .transport
            .call_boxed(self.target, &self.addr, request)
            .await
        {
            Ok(r) => r,
            Err(e @ TransportError::Unreachable(_)) => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e @ TransportError::Failed(_)) => {
                return Err(RPCError::Network(NetworkError::new(&e)))
            }
        };
        if reply.len() > self.max_bytes {
            let e = Msg(format!("a reply of {} bytes is too large", reply.len()));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        match serde_json::from_slice::<RaftRpcReply>(&reply) {
            Ok(RaftRpcReply::Refused(why)) => {
                tracing::debug!(target = self.target, why, "a peer refused a Raft RPC");
                Err(RPCError::Unreachable(Unreachable::new(&Msg(why))))
            }
            Ok(r) => Ok(r),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        let e = Msg("the peer answered with the wrong kind of reply".into());
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, OrRaftError<NodeId>>>
    {
        match self.send(RaftRpc::AppendEntries(rpc)).await? {
            RaftRpcReply::AppendEntries(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, OrRaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.send(RaftRpc::InstallSnapshot(rpc)).await? {
            RaftRpcReply::InstallSnapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, OrRaftError<NodeId>>> {
        match self.send(RaftRpc::Vote(rpc)).await? {
            RaftRpcReply::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(self.unexpected()),
        }
    }
}
