//! The metadata service: the source of truth for the cluster map, buckets,
//! objects, chunk records and the node -> fragment index.
//!
//! Owns the RocksDB store (through a typed-table layer), the deterministic
//! state machine every change goes through, and the QUIC server that answers
//! clients and takes node heartbeats. It must not know how chunks are encoded
//! or how fragments are stored: it records placements, it does not move bytes.

mod keys;
mod server;
pub mod state;
mod store;

pub use server::{Meta, MetaConfig, RunningMeta, start};
pub use state::{Command, NodeRecord, Outcome, StateMachine};

use tessera_proto::{ErrorCode, RemoteError};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata store: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("metadata store holds malformed data: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Refused(RemoteError),
    #[error(transparent)]
    Net(#[from] tessera_net::NetError),
}

impl MetaError {
    pub fn to_remote(&self) -> RemoteError {
        match self {
            MetaError::Refused(e) => e.clone(),
            other => RemoteError::new(ErrorCode::Internal, other.to_string()),
        }
    }
}
