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
mod bucket_access;
mod client;
mod config;
mod fsview;
mod lifecycle;
mod multipart;
mod object_lock;
mod read;
mod read_range;
mod request_id;
mod storage_class;
mod tags;
mod versions;
mod volume;
mod write;

pub use client::{BodyCheck, Client, ClientOptions, ContentOf, ListOptions, PutOptions};
pub use config::{ClusterConfig, check_host_port};
pub use fsview::StagedWrite;
pub use read::RECORDS_WITH_OBJECT;
pub use request_id::{carry_request_id, current_request_id, with_request_id};
pub use tessera_meta_client::{MetaCallError, MetaClient};
pub use tessera_proto::{
    BucketInfo, ChunkRecord, ClusterMap, ClusterStatus, ErrorCode, ListEntry, Listing, NodeInfo,
    NodeState, ObjectHeaders, ObjectInfo, RemoteError, SnapshotInfo, VolumeInfo,
};
pub use tessera_types::Policy;
pub use versions::VersionListOptions;
pub use volume::{Allocation, DIRTY_LIMIT, VOLUME_CHUNK, Volume};

/// What an SDK call can fail with. Callers match on variants and on
/// `code()`, never on messages.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error("cluster file: {0}")]
    Config(String),
    /// Meta or a node understood the request and refused it: `code()` says
    /// why (`NoSuchKey`, `Conflict`, `PreconditionFailed`, ...).
    #[error("{}", .0.message)]
    Remote(RemoteError),
    #[error(transparent)]
    Net(#[from] tessera_net::NetError),
    /// A call got no answer in time.
    #[error("{what} did not answer within {after:?}")]
    Timeout {
        what: String,
        after: std::time::Duration,
    },
    #[error(
        "chunk {chunk} is unreadable: {got} of the {needed} fragments needed could be read ({failures})"
    )]
    Unavailable {
        chunk: String,
        needed: usize,
        got: usize,
        failures: String,
    },
    /// A chunk could not be stored because the nodes that would take it are
    /// out of space: the cluster is full.
    #[error("no space: {0}")]
    NoSpace(String),
    /// Fewer nodes accepted a chunk's fragments than its policy needs.
    #[error("cannot store chunk: {0}")]
    NotEnoughNodes(String),
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
    /// Whoever consumed a read's bytes (`Client::read_object_to`'s
    /// receiver) went away before the read ended.
    #[error("the reader went away before the read ended")]
    ReaderGone,
}

impl SdkError {
    /// The error class: a remote refusal's code, or the class of a typed
    /// local failure (`NoSpace`, `NotEnoughNodes`).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            SdkError::Remote(e) => Some(e.code),
            SdkError::NoSpace(_) => Some(ErrorCode::NoSpace),
            SdkError::NotEnoughNodes(_) => Some(ErrorCode::NotEnoughNodes),
            _ => None,
        }
    }

    /// The state the call was based on changed meanwhile: look again.
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(ErrorCode::Conflict)
    }
}

impl From<tessera_meta_client::MetaCallError> for SdkError {
    fn from(e: tessera_meta_client::MetaCallError) -> Self {
        use tessera_meta_client::MetaCallError as M;
        match e {
            M::Refused(r) => SdkError::Remote(r),
            M::Net { source, .. } => SdkError::Net(source),
            M::Timeout { addr, after } => SdkError::Timeout {
                what: format!("meta at {addr}"),
                after,
            },
            M::Unexpected(what) => SdkError::Protocol {
                peer: "meta".into(),
                what,
            },
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
