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
pub mod raft;
#[cfg(feature = "server")]
mod server;
pub mod state;
pub mod store;

pub use keys::{FragmentKey, NodeFragmentKey, ObjectKey};
#[cfg(feature = "server")]
pub use server::{MIN_FREE_TO_START, Meta, MetaConfig, RunningMeta, start, while_leading};
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
    /// This replica is not the meta group's leader (or stopped being it
    /// before the request was proposed): nothing was done.
    #[error("not the meta leader; the leader is {}", .leader.as_deref().unwrap_or("not known yet"))]
    NotLeader { leader: Option<String> },
}

impl MetaError {
    /// The same error again, for each request of a group it ended (the
    /// store's errors are not `Clone`: their text is kept).
    pub fn duplicate(&self) -> Self {
        match self {
            MetaError::Refused(r) => MetaError::Refused(r.clone()),
            MetaError::NotLeader { leader } => MetaError::NotLeader {
                leader: leader.clone(),
            },
            MetaError::Corrupt(m) => MetaError::Corrupt(m.clone()),
            MetaError::Internal(m) => MetaError::Internal(m.clone()),
            other => MetaError::Internal(other.to_string()),
        }
    }

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
