//! QUIC transport with mutual TLS from the cluster's own CA.
//!
//! Owns certificates (creating the CA, issuing node and client certificates,
//! the roles their common names give, writing them to disk atomically),
//! QUIC endpoints, who a connection's peer is, connection reuse, and
//! reading and writing protocol frames on streams. It must not know what
//! the messages mean: meta, node and SDK decide that (and which role may
//! ask what).

mod addr;
mod files;
mod pace;
mod peer;
mod pool;
mod server;
mod tls;
mod udp;
mod wire;

pub use addr::{check_host_port, resolve_host_port};
pub use files::write_atomically;
pub use pace::Pacer;
pub use peer::{PeerIdentity, common_name, role};
pub use pool::ConnectionPool;
pub use quinn::{Connection, RecvStream, SendStream, VarInt};
pub use server::serve;
pub use tls::{ClusterCa, Endpoint, Identity, SERVER_NAME};
pub use wire::{call, call_encoded, read_body, read_frame, write_frame};

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("certificate error: {0}")]
    Certificate(String),
    #[error("TLS configuration error: {0}")]
    Tls(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("{addr} is unreachable (failed recently; retrying later)")]
    Unreachable { addr: SocketAddr },
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    #[error("stream ended early: {0}")]
    Truncated(String),
    #[error("protocol error: {0}")]
    Proto(#[from] tessera_proto::ProtoError),
    #[error("expected a {expected:?} frame, got {got:?}")]
    UnexpectedFrame {
        expected: tessera_proto::FrameKind,
        got: tessera_proto::FrameKind,
    },
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
}

impl NetError {
    /// True when the peer (or the path to it) failed, as opposed to a request
    /// the peer understood and refused: callers then try another node.
    pub fn is_peer_failure(&self) -> bool {
        !matches!(
            self,
            NetError::Certificate(_)
                | NetError::Tls(_)
                | NetError::Bind { .. }
                | NetError::Unreachable { .. }
        )
    }
}
