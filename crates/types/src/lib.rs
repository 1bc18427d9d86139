//! Tessera's shared vocabulary: identifiers, storage policies, validated names
//! and the placement function.
//!
//! Owns the plain data every layer agrees on and the pure placement decision
//! (which nodes hold a chunk's fragments). It must not know about the network,
//! disks, RocksDB or any frontend: everything here is pure and deterministic, so
//! that the SDK and meta compute the same answer from the same cluster map.

pub mod fixed_bytes;
mod ids;
mod names;
pub mod placement;
mod policy;

pub use ids::{ChunkId, Hash, NodeId, RequestId};
pub use names::{MAX_KEY_LEN, validate_bucket_name, validate_key};
pub use placement::{PlacementCandidate, PlacementMap, Ranking};
pub use policy::Policy;

/// Errors from validating user input against Tessera's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypesError {
    #[error(
        "invalid storage policy {0:?}: expected ec:K+M (1<=K<=32, 0<=M<=16) or rep:N (1<=N<=16)"
    )]
    InvalidPolicy(String),
    #[error("invalid bucket name {name:?}: {why}")]
    InvalidBucketName { name: String, why: &'static str },
    #[error("invalid object key: {0}")]
    InvalidKey(&'static str),
    #[error("invalid identifier {0:?}")]
    InvalidId(String),
    #[error("cannot place {wanted} fragments: only {available} eligible nodes")]
    NotEnoughNodes { wanted: usize, available: usize },
}
