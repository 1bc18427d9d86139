//! The metadata service: the source of truth for the cluster map, buckets,
//! objects, chunk records and the node -> fragment index.
//!
//! Owns the store (a typed-table layer over RocksDB, or memory in tests),
//! the deterministic state machine every change goes through (`state`: one
//! module per domain, a Raft-shaped `apply`), and the QUIC server
//! (`server`: RPC, group commit, liveness, write reservations, status,
//! metrics, upkeep) that answers clients and takes node heartbeats. It must
//! not know how chunks are encoded or how fragments are stored: it records
//! placements, it does not move bytes. Healing decisions (liveness, chunk
//! health, repair order) are `tessera-heal`'s pure functions; meta gathers
//! the records they need and calls them.

mod keys;
#[cfg(feature = "server")]
mod server;
pub mod state;
pub mod store;

pub use keys::{FragmentKey, NodeFragmentKey, ObjectKey};
#[cfg(feature = "server")]
pub use server::{Meta, MetaConfig, RunningMeta, start};
pub use state::tables::NodeRecord;
pub use state::{Applied, Command, Outcome, Refusal, Refused, StateMachine};

/// What can go wrong in meta. Refusals are typed (`Refusal`); the others are
/// the store's or the network's failures.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[cfg(feature = "server")]
    #[error("metadata store: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("metadata store holds malformed data: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Refused(Refusal),
    #[cfg(feature = "server")]
    #[error(transparent)]
    Net(#[from] tessera_net::NetError),
    /// A bug or an impossible state inside meta.
    #[error("internal error: {0}")]
    Internal(String),
}

impl MetaError {
    /// The refusal's kind, when this is a refusal.
    pub fn refused(&self) -> Option<Refused> {
        match self {
            MetaError::Refused(r) => Some(r.kind),
            _ => None,
        }
    }
}

impl From<Refusal> for MetaError {
    fn from(r: Refusal) -> Self {
        MetaError::Refused(r)
    }
}
