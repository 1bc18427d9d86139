//! Meta's tables (one column family each), the counters kept beside them,
//! and the stored records that are meta's own (not wire types).

use serde::{Deserialize, Serialize};
use tessera_proto::{
    AccessKey, AdminToken, BucketAccess, BucketInfo, BucketUsage, ChunkPlacement, ChunkRecord,
    CorruptReport, DirInfo, ExtentRecord, LifecycleConfig, LifecycleProgress, NodeAdmin,
    ObjectInfo, ObjectLockConfig, ObjectVersion, PartInfo, Permission, TagSet, TransitionItem,
    UploadInfo, Versioning, VolumeInfo,
};
use tessera_types::{ChunkId, NodeId, Policy};

use super::RecordedOutcome;
use crate::keys::{ExtentKey, FragmentKey, NodeFragmentKey, ObjectKey, VersionKey};
use crate::store::Table;

/// A storage node as the cluster map records it; liveness is not here (it is
/// soft state kept by the server from heartbeats).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub addr: String,
    pub zone: Option<String>,
    /// Bytes.
    pub capacity: u64,
    pub joined_ms: u64,
}

/// What meta's records place on a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    pub fragments: u64,
    /// Bytes of those fragments.
    pub bytes: u64,
}

/// A chunk no object refers to any more; its fragments may be deleted after
/// the safety delay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GarbageRecord {
    pub since_ms: u64,
}

pub const NODES: Table<NodeId, NodeRecord> = Table::new("nodes");
pub const BUCKETS: Table<String, BucketInfo> = Table::new("buckets");
/// Objects by (bucket, key).
pub const OBJECTS: Table<ObjectKey, ObjectInfo> = Table::new("objects");
pub const CHUNKS: Table<ChunkId, ChunkRecord> = Table::new("chunks");
/// The chunk table read as placements only (the hashes skipped).
pub const CHUNK_PLACEMENTS: Table<ChunkId, ChunkPlacement> = Table::new(CHUNKS.name);
/// The index from a node to the fragments it holds.
pub const NODE_FRAGMENTS: Table<NodeFragmentKey, ()> = Table::new("node_fragments");
pub const GARBAGE: Table<ChunkId, GarbageRecord> = Table::new("garbage");
/// Every corruption report by sequence number (history).
pub const CORRUPT: Table<u64, CorruptReport> = Table::new("corrupt");
pub const COUNTERS: Table<String, u64> = Table::new("counters");
/// Operator state of nodes that are not plainly active (absent = active).
pub const NODE_ADMIN: Table<NodeId, NodeAdmin> = Table::new("node_admin");
/// Fragments and bytes the records place on each node.
pub const NODE_STATS: Table<NodeId, NodeStats> = Table::new("node_stats");
/// Fragments reported corrupt or missing and not yet rebuilt.
pub const DAMAGED: Table<FragmentKey, CorruptReport> = Table::new("damaged");
/// S3 access keys by id.
pub const KEYS: Table<String, AccessKey> = Table::new("keys");
/// Grants by (bucket, key id): the object-key encoding keeps a bucket's
/// grants together.
pub const GRANTS: Table<ObjectKey, Permission> = Table::new("grants");
/// Multipart uploads in progress, by id.
pub const UPLOADS: Table<String, UploadInfo> = Table::new("uploads");
/// Their parts by (upload id, zero-padded part number).
pub const PARTS: Table<ObjectKey, PartInfo> = Table::new("parts");
/// Directories of the file-system view by (bucket, path ending in `/`).
pub const DIRS: Table<ObjectKey, DirInfo> = Table::new("dirs");
/// Bucket tags by bucket name; a bucket without tags has no entry.
pub const BUCKET_TAGS: Table<String, TagSet> = Table::new("bucket_tags");
/// Versioning state of buckets that were ever versioned (absent: never).
pub const BUCKET_VERSIONING: Table<String, Versioning> = Table::new("bucket_versioning");
/// Versions that are not the current object: noncurrent objects and every
/// delete marker, by (bucket, key, order), newest first within a key. The
/// current object, if the newest version is one, is in `objects`.
pub const VERSIONS: Table<VersionKey, ObjectVersion> = Table::new("versions");
/// The order of each key's `null` version when it is in `versions`.
pub const NULL_VERSIONS: Table<ObjectKey, u64> = Table::new("null_versions");
/// Access settings (CORS, policy, PublicAccessBlock, ACL) of buckets that
/// have any, by bucket name.
pub const BUCKET_ACCESS: Table<String, BucketAccess> = Table::new("bucket_access");
/// Object Lock configurations of buckets that have Object Lock, by bucket
/// name (absent: no Object Lock).
pub const BUCKET_LOCK: Table<String, ObjectLockConfig> = Table::new("bucket_object_lock");
/// Lifecycle configurations of buckets that have one, by bucket name.
pub const BUCKET_LIFECYCLE: Table<String, LifecycleConfig> = Table::new("bucket_lifecycle");
/// The operator's storage classes: S3 class name to policy.
pub const STORAGE_CLASSES: Table<String, Policy> = Table::new("storage_classes");
/// Versions queued for re-encoding by a lifecycle transition, by (bucket,
/// version label `/` key).
pub const TRANSITIONS: Table<ObjectKey, TransitionItem> = Table::new("transitions");
/// The lifecycle worker's progress: one record.
pub const LIFECYCLE_PROGRESS: Table<String, LifecycleProgress> = Table::new("lifecycle_progress");
/// The outcome of each recent log entry, by index.
pub const OUTCOMES: Table<u64, RecordedOutcome> = Table::new("outcomes");
/// Admin API tokens by the hex BLAKE3 hash of the token.
pub const ADMIN_TOKENS: Table<String, AdminToken> = Table::new("admin_tokens");

/// What each bucket holds (objects, versions, their bytes), by bucket
/// name; kept by every transaction that writes `objects` or `versions`
/// (see `usage.rs`).
pub const BUCKET_USAGE: Table<String, BucketUsage> = Table::new("bucket_usage");

/// Block volumes by name.
pub const VOLUMES: Table<String, VolumeInfo> = Table::new("volumes");
/// Volume extent maps by (volume id, extent index, sequence); see
/// `volumes.rs`.
pub const EXTENTS: Table<ExtentKey, ExtentRecord> = Table::new("extents");
/// How many extent pieces refer to each chunk of a volume; a chunk goes to
/// garbage when its count reaches zero.
pub const VOLUME_CHUNK_REFS: Table<ChunkId, u64> = Table::new("volume_chunk_refs");

/// The replication layer's own records (the last applied log id and the
/// membership as of it), written in the same batch as the commands they
/// describe so that the state and its position in the log never disagree.
/// Opaque to the state machine.
pub const REPLICATION: Table<String, Vec<u8>> = Table::new("replication");

pub const ALL: &[&str] = &[
    REPLICATION.name,
    DIRS.name,
    UPLOADS.name,
    PARTS.name,
    KEYS.name,
    GRANTS.name,
    NODE_ADMIN.name,
    DAMAGED.name,
    NODES.name,
    BUCKETS.name,
    OBJECTS.name,
    CHUNKS.name,
    NODE_FRAGMENTS.name,
    GARBAGE.name,
    CORRUPT.name,
    COUNTERS.name,
    OUTCOMES.name,
    NODE_STATS.name,
    BUCKET_TAGS.name,
    BUCKET_VERSIONING.name,
    VERSIONS.name,
    NULL_VERSIONS.name,
    BUCKET_ACCESS.name,
    ADMIN_TOKENS.name,
    VOLUMES.name,
    EXTENTS.name,
    VOLUME_CHUNK_REFS.name,
    BUCKET_USAGE.name,
    BUCKET_LOCK.name,
    BUCKET_LIFECYCLE.name,
    LIFECYCLE_PROGRESS.name,
    STORAGE_CLASSES.name,
    TRANSITIONS.name,
];

/// Names of the counters kept beside the tables.
pub mod counter {
    /// The index of the last applied log entry.
    pub const APPLIED: &str = "applied";
    pub const EPOCH: &str = "epoch";
    pub const BUCKETS: &str = "buckets";
    pub const OBJECTS: &str = "objects";
    pub const CHUNKS: &str = "chunks";
    pub const CORRUPT: &str = "corrupt";
    /// Chunk records waiting in the garbage table.
    pub const GARBAGE: &str = "garbage";
    /// Bytes of fragments of chunks waiting in the garbage table.
    pub const GARBAGE_BYTES: &str = "garbage_bytes";
    /// Fragments of chunks waiting in the garbage table.
    pub const GARBAGE_FRAGMENTS: &str = "garbage_fragments";
    pub const SCRUB_SEQ: &str = "scrub_seq";
    pub const REBUILT_FRAGMENTS: &str = "repair_rebuilt_fragments";
    pub const REBUILT_BYTES: &str = "repair_rebuilt_bytes";
    pub const MOVED_FRAGMENTS: &str = "repair_moved_fragments";
    pub const MOVED_BYTES: &str = "repair_moved_bytes";
    /// Versions drawn so far: the next version's order is `u64::MAX` minus
    /// this, after adding one.
    pub const VERSION_SEQ: &str = "version_seq";
    /// Noncurrent versions and delete markers (the `versions` table).
    pub const VERSIONS: &str = "versions";
    /// Volume ids drawn so far.
    pub const VOLUME_SEQ: &str = "volume_seq";
    /// The applied index as of the last batch that kept `bucket_usage`: a
    /// data directory where it differs from `APPLIED` was written by a
    /// build that did not keep it (or never had the table), and meta counts
    /// it again on open.
    pub const USAGE_AT: &str = "bucket_usage_at";
}
