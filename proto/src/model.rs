//! Records shared by the SDK, meta and the CLI. Meta also stores these in its
//! tables, so a change here is a change of the on-disk format: add fields only
//! at the end of a struct and variants only at the end of an enum.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_types::{ChunkId, Hash, NodeId, Policy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Heartbeats arrive.
    Up,
    /// No heartbeat for longer than the grace period: its fragments are
    /// read around, but nothing is rebuilt yet (it may come back).
    Down,
    /// Silent for longer than the out period: treated as gone for good.
    Out,
}

impl NodeState {
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Down => "down",
            NodeState::Out => "out",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// QUIC address the node serves fragments on.
    pub addr: String,
    pub zone: Option<String>,
    pub capacity: u64,
    pub used: u64,
    pub state: NodeState,
    /// Milliseconds since the last heartbeat meta received.
    pub last_seen_ms: u64,
}

/// What a client needs to place and find fragments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Increases whenever a node joins or changes address, zone or capacity.
    pub epoch: u64,
    pub nodes: Vec<NodeInfo>,
    pub default_policy: Policy,
    /// Objects up to this size are stored inline in meta.
    pub inline_limit: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorruptReport {
    pub chunk: ChunkId,
    pub index: u8,
    pub node: NodeId,
    pub reason: String,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub map: ClusterMap,
    pub buckets: u64,
    pub objects: u64,
    pub chunks: u64,
    pub corrupt_reports: u64,
    /// The most recent corruption reports, newest first (bounded).
    pub recent_corrupt: Vec<CorruptReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketInfo {
    pub name: String,
    pub policy: Policy,
    pub created_ms: u64,
}

/// One fragment of a chunk: which node holds it and its BLAKE3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentRecord {
    pub node: NodeId,
    pub hash: Hash,
}

/// Everything needed to read a chunk back: fragment `i` of the chunk is
/// `fragments[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub id: ChunkId,
    pub policy: Policy,
    pub len: u64,
    pub fragment_len: u64,
    pub hash: Hash,
    pub fragments: Vec<FragmentRecord>,
}

/// A chunk as an object refers to it; offsets follow from the lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectData {
    Inline(Vec<u8>),
    Chunks(Vec<ChunkRef>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Hex MD5 of the content, as S3 clients expect for single-part objects.
    pub etag: String,
    pub content_type: Option<String>,
    pub user_meta: BTreeMap<String, String>,
    pub mtime_ms: u64,
    pub data: ObjectData,
}

/// An object as a writer commits it, after its chunks are on the nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewObject {
    pub size: u64,
    pub etag: String,
    pub content_type: Option<String>,
    pub user_meta: BTreeMap<String, String>,
    pub data: ObjectData,
    pub chunks: Vec<ChunkRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListEntry {
    Object {
        key: String,
        size: u64,
        etag: String,
        mtime_ms: u64,
    },
    CommonPrefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub entries: Vec<ListEntry>,
    /// Pass as `start_after` to get the next page; `None` when complete.
    pub next: Option<String>,
}
