//! A storage node: fragments on local disk, served over QUIC.
//!
//! Owns the fragment file format and directory layout (`FragmentStore`), the
//! fragment server (put, get, delete, list, verify), and heartbeats to meta
//! with capacity and usage, the deep scrub of its own disk and the deletion
//! of fragments no record refers to. It must not know about objects, buckets or how
//! fragments combine into chunks: to a node a fragment is an opaque, hashed
//! byte string named by (chunk id, index).

mod metrics;
mod server;
mod store;
mod upkeep;

pub use server::{NodeConfig, RunningNode, file_system_capacity, load_or_create_node_id, start};
pub use store::{
    FRAGMENT_HEADER_LEN, FragmentHeader, FragmentStore, HeaderError, MAX_FRAGMENT_LEN,
    parse_fragment_name,
};
pub use upkeep::{UpkeepConfig, parse_scrub_state};

use tessera_proto::{ErrorCode, RemoteError};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("fragment {0} not found")]
    NotFound(String),
    #[error("fragment {what} is corrupt: {why}")]
    Corrupt { what: String, why: String },
    #[error("fragment of {0} bytes exceeds the limit")]
    TooLarge(u64),
    #[error("body ended after {got} of {expected} bytes")]
    Truncated { got: u64, expected: u64 },
    #[error("body is longer than the {0} bytes announced")]
    Overlong(u64),
    #[error("body does not match the announced BLAKE3 hash")]
    HashMismatch,
    #[error("disk full")]
    NoSpace,
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Net(#[from] tessera_net::NetError),
}

impl NodeError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(28) {
            return NodeError::NoSpace;
        }
        NodeError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn to_remote(&self) -> RemoteError {
        let code = match self {
            NodeError::NotFound(_) => ErrorCode::NotFound,
            NodeError::Corrupt { .. } => ErrorCode::Corrupt,
            NodeError::TooLarge(_) => ErrorCode::TooLarge,
            NodeError::Truncated { .. } | NodeError::Overlong(_) | NodeError::HashMismatch => {
                ErrorCode::BadRequest
            }
            NodeError::NoSpace => ErrorCode::NoSpace,
            NodeError::Io { .. } | NodeError::Net(_) => ErrorCode::Internal,
        };
        RemoteError::new(code, self.to_string())
    }
}
