use serde::{Deserialize, Serialize};
use tessera_types::{ChunkId, Hash, NodeId, Policy};

use crate::model::{
    BucketInfo, ChunkRecord, ClusterMap, ClusterStatus, Listing, NewObject, ObjectInfo,
};

/// Requests a node serves. For `PutFragment`, exactly `len` raw bytes follow
/// the frame on the same stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRequest {
    Ping,
    PutFragment {
        chunk: ChunkId,
        index: u8,
        len: u64,
        hash: Hash,
    },
    GetFragment {
        chunk: ChunkId,
        index: u8,
    },
    DeleteFragment {
        chunk: ChunkId,
        index: u8,
    },
    ListFragments {
        after: Option<(ChunkId, u8)>,
        limit: u32,
    },
    VerifyFragment {
        chunk: ChunkId,
        index: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentInfo {
    pub chunk: ChunkId,
    pub index: u8,
    pub len: u64,
}

/// Replies of a node. After `Fragment`, exactly `len` raw bytes follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeResponse {
    Pong {
        node: NodeId,
    },
    Stored,
    Fragment {
        len: u64,
        hash: Hash,
    },
    Deleted {
        existed: bool,
    },
    Fragments {
        items: Vec<FragmentInfo>,
        more: bool,
    },
    Verified {
        ok: bool,
        detail: String,
    },
    Error(RemoteError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: NodeId,
    pub addr: String,
    pub zone: Option<String>,
    pub capacity: u64,
    pub used: u64,
    pub fragments: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaRequest {
    Heartbeat(Heartbeat),
    ClusterMap,
    Status,
    CreateBucket {
        name: String,
        policy: Option<Policy>,
    },
    DeleteBucket {
        name: String,
    },
    GetBucket {
        name: String,
    },
    ListBuckets,
    CommitObject {
        bucket: String,
        key: String,
        object: NewObject,
    },
    HeadObject {
        bucket: String,
        key: String,
    },
    GetChunks {
        ids: Vec<ChunkId>,
    },
    DeleteObject {
        bucket: String,
        key: String,
    },
    ListObjects {
        bucket: String,
        prefix: String,
        delimiter: Option<String>,
        start_after: Option<String>,
        max_keys: u32,
    },
    ReportCorrupt {
        chunk: ChunkId,
        index: u8,
        node: NodeId,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaResponse {
    Ok,
    ClusterMap(ClusterMap),
    Status(ClusterStatus),
    Bucket(BucketInfo),
    Buckets(Vec<BucketInfo>),
    Object(ObjectInfo),
    Chunks(Vec<ChunkRecord>),
    Listing(Listing),
    Deleted { existed: bool },
    Error(RemoteError),
}

/// Stable error classes; frontends map them to their own protocol (S3 codes,
/// errno, NBD errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    BadRequest,
    InvalidBucketName,
    InvalidKey,
    InvalidPolicy,
    NoSuchBucket,
    BucketExists,
    BucketNotEmpty,
    NoSuchKey,
    NotFound,
    Corrupt,
    TooLarge,
    NotEnoughNodes,
    NoSpace,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RemoteError {
    pub code: ErrorCode,
    pub message: String,
}

impl RemoteError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RemoteError {
            code,
            message: message.into(),
        }
    }
}
