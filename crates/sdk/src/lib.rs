//! The Tessera client library and data path (`tessera-sdk`).
//!
//! Owns what a client does: read the cluster file, talk to meta, cut objects
//! into chunks, encode them, place and write fragments in parallel, commit
//! the object in one step, and read it back by fetching, verifying and (only
//! when needed) decoding fragments. It must not know about any frontend
//! protocol (S3, FUSE, NBD) nor about how meta or nodes store things.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tessera_sdk::SdkError> {
//! use tessera_sdk::{Client, ClusterConfig, PutOptions};
//! let client = Client::connect(&ClusterConfig::load("cluster.toml".as_ref())?).await?;
//! client.create_bucket("photos", None).await?;
//! client.put("photos", "cat.jpg", &b"meow"[..], PutOptions::default()).await?;
//! let mut out = Vec::new();
//! client.get("photos", "cat.jpg", None, &mut out).await?;
//! # Ok(()) }
//! ```

mod admin;
mod client;
mod config;
mod fsview;
mod multipart;
mod read;
mod write;

pub use client::{BodyCheck, Client, ClientOptions, ListOptions, PutOptions};
pub use config::{ClusterConfig, check_host_port};
pub use fsview::StagedWrite;
pub use tessera_proto::{
    BucketInfo, ClusterMap, ClusterStatus, ErrorCode, ListEntry, Listing, NodeInfo, NodeState,
    ObjectHeaders, ObjectInfo, RemoteError,
};
pub use tessera_types::Policy;

#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error("cluster file: {0}")]
    Config(String),
    #[error("{}", .0.message)]
    Remote(RemoteError),
    #[error(transparent)]
    Net(#[from] tessera_net::NetError),
    #[error(
        "chunk {chunk} is unreadable: {got} of the {needed} fragments needed could be read ({failures})"
    )]
    Unavailable {
        chunk: String,
        needed: usize,
        got: usize,
        failures: String,
    },
    #[error("cannot store chunk: {0}")]
    Placement(String),
    #[error(transparent)]
    Codec(#[from] tessera_codec::CodecError),
    #[error("invalid range {start}..{end} for an object of {size} bytes")]
    InvalidRange { start: u64, end: u64, size: u64 },
    #[error("{0}")]
    Invalid(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected answer from {peer}: {what}")]
    Protocol { peer: String, what: String },
}

impl SdkError {
    /// The remote error class, when the cluster refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            SdkError::Remote(e) => Some(e.code),
            _ => None,
        }
    }
}

/// SDK futures must be spawnable on a multi-threaded runtime: this fails to
/// compile if one of them stops being `Send`.
#[allow(dead_code)]
fn sdk_futures_are_send(client: Client) {
    fn spawnable<T: Send + 'static>(_: T) {}
    let c = client.clone();
    spawnable(async move { c.put("b", "k", &b"data"[..], PutOptions::default()).await });
    let c = client.clone();
    spawnable(async move {
        let mut out = Vec::new();
        c.get("b", "k", None, &mut out).await
    });
}
