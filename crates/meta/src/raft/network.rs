//! Raft's RPCs between meta replicas, over the cluster's QUIC with mutual
//! TLS: each RPC is a `MetaRequest::Raft` on a stream of its own, its body
//! openraft's message encoded with postcard, answered by a
//! `MetaResponse::Raft` holding the remote call's result. Snapshots go in
//! chunks (openraft's `InstallSnapshot`), each a frame.

use std::net::SocketAddr;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tessera_net::{ConnectionPool, Endpoint, NetError, call_encoded};
use tessera_proto::{FrameKind, MetaRequest, MetaResponse, RaftMessage, encode_frame};

use super::{NodeId, TypeConfig};
use crate::MetaError;

/// Makes a client per peer; all share one endpoint and its connections.
pub struct Network {
    pool: ConnectionPool,
}

impl Network {
    /// Raft's connections go out from `endpoint`, the replica's own server
    /// endpoint: its traffic to the other replicas comes from the address
    /// the group knows it by (what a firewall rule, or a test cutting the
    /// network, names).
    pub fn new(endpoint: Endpoint) -> Self {
        // A dead peer is tried again at the next heartbeat, not after the
        // pool's usual hold-off.
        Network {
            pool: ConnectionPool::with_hold_off(endpoint, Duration::from_millis(100)),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: tessera_net::resolve_host_port(&node.addr)
                .map_err(|why| format!("meta replica {}: {why}", node.addr)),
            pool: self.pool.clone(),
        }
    }
}

/// The client of one peer replica.
pub struct Peer {
    target: NodeId,
    addr: Result<SocketAddr, String>,
    pool: ConnectionPool,
}

/// A failure to reach the peer, in openraft's terms: unreachable (Raft
/// backs off) when no connection could be made, a network error otherwise.
fn net_failure<E: std::error::Error>(e: NetError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        NetError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        wrap: fn(Vec<u8>) -> RaftMessage,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let addr = self
            .addr
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&AnyError::error(e))))?;
        let body = postcard::to_allocvec(req)
            .map_err(|e| RPCError::Network(NetworkError::new(&AnyError::error(e))))?;
        let frame = encode_frame(FrameKind::Request, &MetaRequest::Raft(wrap(body)))
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let exchange = async {
            let conn = self.pool.get(addr).await?;
            let answer = call_encoded::<MetaResponse>(&conn, &frame).await;
            if let Err(e) = &answer
                && e.is_peer_failure()
            {
                self.pool.mark_failed(addr);
            }
            answer
        };
        let answer = match tokio::time::timeout(option.hard_ttl(), exchange).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Err(net_failure(e)),
            Err(_) => {
                // The connection may be to a process that died (a restarted
                // peer does not know it): QUIC would call it alive until its
                // idle timeout. The next RPC opens a fresh one.
                self.pool.mark_failed(addr);
                return Err(RPCError::Network(NetworkError::new(&AnyError::error(
                    format!(
                        "no answer from meta replica {} within {:?}",
                        self.target,
                        option.hard_ttl()
                    ),
                ))));
            }
        };
        let bytes = match answer {
            MetaResponse::Raft(bytes) => bytes,
            other => {
                return Err(RPCError::Network(NetworkError::new(&AnyError::error(
                    format!(
                        "meta replica {} answered a Raft RPC with {other:?}",
                        self.target
                    ),
                ))));
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> = postcard::from_bytes(&bytes)
            .map_err(|e| RPCError::Network(NetworkError::new(&AnyError::error(e))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RaftMessage::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RaftMessage::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RaftMessage::Vote, &rpc, &option).await
    }
}

/// Answers a Raft RPC that arrived from a peer: `raft` handles it, and its
/// result (an answer or Raft's refusal) goes back encoded. Errors: a body
/// that does not decode.
pub async fn answer(raft: &super::MetaRaft, msg: RaftMessage) -> Result<Vec<u8>, MetaError> {
    fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, MetaError> {
        postcard::from_bytes(body).map_err(|e| {
            crate::state::refuse(
                crate::state::Refused::BadRequest,
                format!("a Raft message that does not decode: {e}"),
            )
        })
    }
    fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, MetaError> {
        postcard::to_allocvec(v).map_err(|e| MetaError::Internal(format!("encoding: {e}")))
    }
    match msg {
        RaftMessage::AppendEntries(body) => encode(&raft.append_entries(decode(&body)?).await),
        RaftMessage::Vote(body) => encode(&raft.vote(decode(&body)?).await),
        RaftMessage::InstallSnapshot(body) => encode(&raft.install_snapshot(decode(&body)?).await),
    }
}
