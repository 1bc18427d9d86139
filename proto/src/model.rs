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

/// What an operator asked of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum NodeAdmin {
    /// Takes new fragments and keeps what it has.
    #[default]
    Active,
    /// Takes nothing new; the repairer moves everything off it.
    Draining,
    /// Gone from the map; its heartbeats are refused.
    Removed,
}

impl NodeAdmin {
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeAdmin::Active => "active",
            NodeAdmin::Draining => "draining",
            NodeAdmin::Removed => "removed",
        }
    }
}

/// A node's deep scrub, as it reports it in heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ScrubProgress {
    /// The highest scrub request finished (0: none yet).
    pub seq_done: u64,
    pub running: bool,
    /// Fragments checked and problems found by the current (or last) scrub.
    pub checked: u64,
    pub found: u64,
    pub last_done_ms: u64,
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
    pub admin: NodeAdmin,
    /// Fragments and bytes meta's records place on this node.
    pub fragments: u64,
    pub stored: u64,
    pub scrub: ScrubProgress,
    /// Fragment bytes per second the node stored and served between its
    /// last two heartbeats (0 when it is not up). Parity and repair
    /// traffic count: an `ec:4+2` client write shows as 1.5 times its size.
    pub write_bytes_per_s: u64,
    pub read_bytes_per_s: u64,
}

impl NodeInfo {
    /// Whether new fragments may go here.
    pub fn writable(&self) -> bool {
        self.state == NodeState::Up && self.admin == NodeAdmin::Active
    }
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
    /// Unreferenced fragments younger than this are kept: a writer must
    /// commit within half of it.
    pub gc_grace_ms: u64,
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
    pub health: ChunkHealth,
    pub repair: RepairProgress,
    pub balance: LoadBalance,
    pub scrub_seq: u64,
}

/// Live chunks by redundancy. `healthy + degraded + at_risk + lost ==
/// total`; `misplaced` chunks are healthy but have fragments to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ChunkHealth {
    pub total: u64,
    pub healthy: u64,
    pub degraded: u64,
    pub at_risk: u64,
    pub lost: u64,
    pub misplaced: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct RepairProgress {
    /// Lost fragments (on out nodes, or reported corrupt or missing) still
    /// to rebuild, and their bytes.
    pub pending_fragments: u64,
    pub pending_bytes: u64,
    /// Fragments on draining nodes still to move.
    pub moving_fragments: u64,
    pub rebuilt_fragments: u64,
    pub rebuilt_bytes: u64,
    pub moved_fragments: u64,
    pub moved_bytes: u64,
    /// Bytes rebuilt or moved per second over the last half minute.
    pub rate_bytes_per_s: u64,
    pub eta_s: Option<u64>,
    pub active: bool,
}

/// How evenly stored bytes follow capacity over active nodes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct LoadBalance {
    /// Bytes on the fullest node over its capacity-weighted fair share.
    pub fullest_over_fair: f64,
    /// Largest |share / fair share - 1| over the nodes.
    pub max_deviation: f64,
}

/// What an access key may do with a bucket; each level includes the ones
/// before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    /// List and read objects.
    Read,
    /// ... and write and delete them.
    Write,
    /// ... and delete the bucket and change its grants.
    Owner,
}

impl Permission {
    pub fn as_str(&self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Owner => "owner",
        }
    }
}

impl std::str::FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Permission::Read),
            "write" => Ok(Permission::Write),
            "owner" => Ok(Permission::Owner),
            _ => Err(format!("{s:?}: expected read, write or owner")),
        }
    }
}

/// An S3 access key. The secret is kept in meta because SigV4 verification
/// needs it; meta is reachable only with a cluster certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
    pub name: String,
    pub created_ms: u64,
    /// New keys may create buckets (and own what they create).
    pub may_create_buckets: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub bucket: String,
    pub key: String,
    pub permission: Permission,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadInfo {
    pub id: String,
    pub bucket: String,
    pub key: String,
    pub initiated_ms: u64,
    pub content_type: Option<String>,
    pub user_meta: BTreeMap<String, String>,
    pub headers: ObjectHeaders,
    /// The checksum the client chose for the object in
    /// CreateMultipartUpload (`x-amz-checksum-algorithm`,
    /// `x-amz-checksum-type`); `None` when it chose none.
    pub checksum: Option<UploadChecksum>,
}

/// How a multipart object's checksum is formed from its parts' (S3 User
/// Guide, "Checking object integrity": full object and composite
/// checksums).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChecksumType {
    /// The checksum of the whole object's bytes (a CRC, combined from the
    /// parts' CRCs and lengths).
    FullObject,
    /// The checksum of the concatenated binary checksums of the parts, then
    /// `-N` for N parts.
    Composite,
}

/// The S3 storage classes an operator may map to a policy (`tessera
/// storage-class set`): those an object can be written in and read at once.
/// STANDARD is always each bucket's own policy; GLACIER and DEEP_ARCHIVE
/// (read only after a restore in S3) are refused on writes and their
/// transitions stored, not applied.
pub const MAPPABLE_STORAGE_CLASSES: [&str; 5] = [
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
];

/// A version a lifecycle transition moves to a mapped storage class,
/// waiting in meta's queue to be re-encoded in `policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionItem {
    pub bucket: String,
    pub key: String,
    /// As S3 names it: the id, or `null`.
    pub version: String,
    /// The version's mtime when the transition was decided (Unix ms): a
    /// version rewritten since is left alone.
    pub mtime_ms: u64,
    pub storage_class: String,
    pub policy: Policy,
}

/// The checksum a multipart upload keeps for its object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadChecksum {
    /// `crc32`, `crc32c`, `crc64nvme`, `sha1` or `sha256`.
    pub algorithm: String,
    pub kind: ChecksumType,
}

/// One stored part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    pub number: u32,
    pub size: u64,
    /// Hex MD5 of the part's bytes.
    pub etag: String,
    pub mtime_ms: u64,
    pub chunks: Vec<ChunkRef>,
    /// Checksums of the part's bytes verified or computed as it arrived:
    /// algorithm to base64 digest, as in [`ObjectHeaders::checksums`].
    pub checksums: BTreeMap<String, String>,
}

/// A fragment meta expects on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedFragment {
    pub chunk: ChunkId,
    pub index: u8,
    pub len: u64,
    #[serde(with = "tessera_types::fixed_bytes")]
    pub hash: Hash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FragmentState {
    Ok,
    /// On a node that is down: expected back, not rebuilt.
    Down,
    /// On an out node, or reported corrupt or missing: to rebuild.
    Lost,
    /// Readable, on a draining node: to copy elsewhere.
    Move,
}

/// A chunk the repairer should look at, with the state of each fragment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairItem {
    pub record: ChunkRecord,
    pub states: Vec<FragmentState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentMove {
    pub index: u8,
    pub from: NodeId,
    pub to: NodeId,
    /// Rebuilt from other fragments (true) or copied (false).
    pub rebuilt: bool,
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
    #[serde(with = "tessera_types::fixed_bytes")]
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
    /// Commits to the chunk's bytes: under replication their BLAKE3;
    /// under erasure coding the BLAKE3 of the fragments' hashes in order
    /// (`tessera_codec::fragment_digest`; records written before
    /// 2026-12-03 hold the chunk's own BLAKE3 there). Reads check each
    /// fragment, and each fragment rebuilt from parity, against
    /// `fragments[i].hash`, so they never need this one.
    #[serde(with = "tessera_types::fixed_bytes")]
    pub hash: Hash,
    pub fragments: Vec<FragmentRecord>,
}

/// Where a chunk's fragments are, decoded from the encoding of a
/// `ChunkRecord` (postcard, the same field order) with the hashes skipped
/// and no allocation for up to 16 fragments: what placement decisions and
/// checks read when they walk every chunk. `nodes[i]` holds fragment `i`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChunkPlacement {
    pub id: ChunkId,
    pub policy: Policy,
    /// Bytes of data in the chunk.
    pub len: u64,
    /// Bytes in each fragment.
    pub fragment_len: u64,
    #[serde(rename = "hash")]
    _hash: SkippedBytes,
    #[serde(rename = "fragments", deserialize_with = "fragment_nodes")]
    pub nodes: FragmentNodes,
}

impl From<&ChunkRecord> for ChunkPlacement {
    fn from(c: &ChunkRecord) -> Self {
        ChunkPlacement {
            id: c.id,
            policy: c.policy,
            len: c.len,
            fragment_len: c.fragment_len,
            _hash: SkippedBytes,
            nodes: c.fragments.iter().map(|f| f.node).collect(),
        }
    }
}

/// The holders of a chunk's fragments, in fragment order.
pub type FragmentNodes = smallvec::SmallVec<[NodeId; 16]>;

/// A byte string read past (a hash the reader does not need).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SkippedBytes;

impl<'de> Deserialize<'de> for SkippedBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SkippedBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<SkippedBytes, E> {
                Ok(SkippedBytes)
            }
            // Self-describing formats write fixed bytes as a sequence.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<SkippedBytes, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(SkippedBytes)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// `FragmentRecord` without its hash.
#[derive(Deserialize)]
struct FragmentNode {
    node: NodeId,
    #[serde(rename = "hash")]
    _hash: SkippedBytes,
}

fn fragment_nodes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<FragmentNodes, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = FragmentNodes;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence of fragment records")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<FragmentNodes, A::Error> {
            let mut nodes = FragmentNodes::new();
            while let Some(f) = seq.next_element::<FragmentNode>()? {
                nodes.push(f.node);
            }
            Ok(nodes)
        }
    }
    d.deserialize_seq(V)
}

/// A chunk as an object refers to it; offsets follow from the lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectData {
    /// Written as one byte string, not a sequence of numbers: postcard's
    /// encoding is the same either way, but a kilobyte then costs one copy,
    /// not a thousand calls (a fifth of meta's CPU per small commit).
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
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
    pub headers: ObjectHeaders,
    pub mtime_ms: u64,
    pub data: ObjectData,
    /// Sizes of the parts a multipart object was completed from, in order;
    /// empty for an object written in one piece.
    pub parts: Vec<u64>,
    /// The version's id (S3 User Guide, "Working with objects in a
    /// versioning-enabled bucket"): [`VERSION_ID_LEN`] lower-case hex
    /// digits; [`NULL_VERSION`] for the `null` version written while
    /// versioning was suspended (S3 names it in `x-amz-version-id`);
    /// `None` for the `null` version written while the bucket was
    /// unversioned (S3 names none). See [`is_null_version`].
    pub version_id: Option<String>,
    /// The parts' checksums in the algorithm of the object's multipart
    /// checksum, in the order of `parts`; empty when it has none.
    pub part_checksums: Vec<String>,
}

/// The S3 name of the version without an id.
pub const NULL_VERSION: &str = "null";
/// Characters in a version id: the hex of 64 bits.
pub const VERSION_ID_LEN: usize = 16;

/// How S3 names a version: its id, or `null`.
pub fn version_label(id: &Option<String>) -> &str {
    id.as_deref().unwrap_or(NULL_VERSION)
}

/// Whether `id` is the `null` version's (`None` or [`NULL_VERSION`]).
pub fn is_null_version(id: &Option<String>) -> bool {
    id.as_deref().is_none_or(|v| v == NULL_VERSION)
}

/// Whether `s` can name a version: `null`, or [`VERSION_ID_LEN`] lower-case
/// hex digits (what meta hands out). Anything else is S3's
/// `InvalidArgument` ("Invalid version id specified").
pub fn version_id_is_valid(s: &str) -> bool {
    s == NULL_VERSION
        || (s.len() == VERSION_ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// A bucket's versioning state (S3 API reference, PutBucketVersioning). A
/// bucket that was never versioned has none, and cannot return to that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Versioning {
    /// Every write makes a new version with an id; deletes add markers.
    Enabled,
    /// Writes and deletes replace the `null` version; older versions stay.
    Suspended,
}

impl Versioning {
    /// S3's name of the state.
    pub fn as_str(&self) -> &'static str {
        match self {
            Versioning::Enabled => "Enabled",
            Versioning::Suspended => "Suspended",
        }
    }
}

/// A delete marker: a version that says the key was deleted (S3 User
/// Guide, "Working with delete markers").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteMarker {
    pub key: String,
    /// `None`: the `null` version.
    pub version_id: Option<String>,
    pub mtime_ms: u64,
}

/// One version of a key: an object or a delete marker.
// Most versions are objects, decoded once and moved: boxing the object
// would add an allocation per version and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectVersion {
    Object(ObjectInfo),
    DeleteMarker(DeleteMarker),
}

impl ObjectVersion {
    pub fn version_id(&self) -> &Option<String> {
        match self {
            ObjectVersion::Object(o) => &o.version_id,
            ObjectVersion::DeleteMarker(m) => &m.version_id,
        }
    }
}

/// A version as ListObjectVersions shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSummary {
    pub key: String,
    /// `None`: the `null` version.
    pub version_id: Option<String>,
    /// The key's newest version (object or marker).
    pub is_latest: bool,
    pub delete_marker: bool,
    /// Bytes; 0 for a delete marker.
    pub size: u64,
    /// Empty for a delete marker.
    pub etag: String,
    pub mtime_ms: u64,
    /// `None` is `STANDARD`.
    pub storage_class: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionListEntry {
    Version(VersionSummary),
    CommonPrefix(String),
}

/// A page of versions: keys in order, each key's versions newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionListing {
    pub entries: Vec<VersionListEntry>,
    /// When truncated: the key (or common prefix) of the last entry, to
    /// pass as the next page's key marker.
    pub next_key: Option<String>,
    /// With `next_key`: the last entry's version (`null` for the null
    /// version; `None` after a common prefix), the next version-id marker.
    pub next_version: Option<String>,
}

/// What a delete did (S3 API reference, DeleteObject).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// Something was removed or a marker was placed.
    pub existed: bool,
    /// The delete placed a marker, or removed one by its version id
    /// (`x-amz-delete-marker: true`).
    pub delete_marker: bool,
    /// The marker's version or the version removed, as S3 names it
    /// (`x-amz-version-id`); `None` in a bucket never versioned.
    pub version_id: Option<String>,
}

/// What S3 calls system metadata, besides the content type: stored as the
/// writer gave it and returned on every read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHeaders {
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    /// Unix seconds.
    pub expires: Option<i64>,
    /// Checksums of the content that were verified when it was written:
    /// algorithm (`crc32`, `crc32c`, `sha1`, `sha256`, `crc64nvme`) to its
    /// base64 digest.
    pub checksums: BTreeMap<String, String>,
    /// S3's storage class as the writer named it (`x-amz-storage-class`);
    /// `None` is `STANDARD`. Every class is stored under the bucket's
    /// policy: the name is kept and returned, nothing more (yet).
    pub storage_class: Option<String>,
    /// The object's tags (S3 API reference, PutObjectTagging), at most
    /// [`MAX_OBJECT_TAGS`]; they belong to this version of the object.
    pub tags: TagSet,
    /// The version's Object Lock retention (S3 API reference,
    /// PutObjectRetention), only in a bucket with Object Lock: the version
    /// cannot be removed before `until_ms`. Meta refuses a retention in a
    /// bucket without Object Lock.
    pub retention: Option<Retention>,
    /// The version's legal hold (S3 API reference, PutObjectLegalHold):
    /// while on, the version cannot be removed, whatever its retention.
    pub legal_hold: bool,
    /// How the stored bytes are encrypted (S3 server-side encryption);
    /// `None`: they are the content itself. When set, the object's `size`
    /// (and a multipart object's `parts`) count the content (plaintext),
    /// and the chunks hold [`sealed_len`] of each piece written.
    pub encryption: Option<ObjectEncryption>,
    /// The version's ACL (S3 API reference, PutObjectAcl), as put with it
    /// or later; `None`: the owner's FULL_CONTROL only (private). It
    /// belongs to this version: a new version starts with its own.
    pub acl: Option<Acl>,
}

/// Which S3 server-side encryption an object was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SseScheme {
    /// SSE-S3 (`x-amz-server-side-encryption: AES256`): the cluster's
    /// master key wraps the object key.
    S3,
    /// SSE-C (`x-amz-server-side-encryption-customer-*`): the key the
    /// client sends with every request wraps the object key; it is never
    /// stored.
    Customer,
}

/// An encrypted object's key, as meta keeps it. Meta stores it and never
/// looks inside: the format of `wrapped_key` and of the stored bytes is
/// the S3 gateway's (ARCHITECTURE.md, "Server-side encryption").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEncryption {
    pub scheme: SseScheme,
    /// Which master key wrapped the object key (SSE-S3); empty for SSE-C.
    pub key_id: String,
    /// The object's random data key, sealed (authenticated) under the
    /// master key or the customer's key; at most [`MAX_WRAPPED_KEY`] bytes.
    pub wrapped_key: Vec<u8>,
}

/// Longest [`ObjectEncryption::wrapped_key`], in bytes.
pub const MAX_WRAPPED_KEY: usize = 256;

/// Plaintext bytes in one package of an encrypted stream.
pub const SSE_PACKAGE: u64 = 64 << 10;
/// Bytes an encrypted stream adds to each package (an AES-GCM tag).
pub const SSE_TAG: u64 = 16;
/// Bytes at the head of each encrypted stream (magic, version, salt).
pub const SSE_HEADER: u64 = 32;

/// Stored bytes of an encrypted stream (one object written whole, or one
/// part) of `plain` content bytes: a header, then each package of up to
/// [`SSE_PACKAGE`] bytes followed by its tag; an empty stream has one
/// empty package. Meta checks commits by it; the gateway lays streams out
/// by it.
pub fn sealed_len(plain: u64) -> u64 {
    SSE_HEADER + plain + SSE_TAG * plain.div_ceil(SSE_PACKAGE).max(1)
}

/// An Object Lock retention mode (S3 User Guide, "Retention modes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockMode {
    /// Shortened or removed only with `x-amz-bypass-governance-retention`
    /// by a caller allowed `s3:BypassGovernanceRetention`.
    Governance,
    /// Never shortened or removed before its date, by anyone.
    Compliance,
}

impl LockMode {
    /// S3's name of the mode.
    pub fn as_str(&self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }

    /// The mode S3 names `s` (exactly, upper case), if any.
    pub fn parse(s: &str) -> Option<LockMode> {
        match s {
            "GOVERNANCE" => Some(LockMode::Governance),
            "COMPLIANCE" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// One version's retention: `mode` until `until_ms` (Unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub mode: LockMode,
    pub until_ms: u64,
}

/// Milliseconds in one day of a retention period.
pub const DAY_MS: u64 = 86_400_000;
/// Days in one year of a retention period (S3 counts a year as 365 days).
pub const YEAR_DAYS: u64 = 365;

/// A bucket's default retention (S3 API reference,
/// PutObjectLockConfiguration, `DefaultRetention`): `mode` for `days`
/// days (each [`DAY_MS`]) or `years` years (each [`YEAR_DAYS`] days),
/// exactly one of the two, positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultRetention {
    pub mode: LockMode,
    pub days: Option<u32>,
    pub years: Option<u32>,
}

impl DefaultRetention {
    /// The retention a version written at `at_ms` gets.
    pub fn applied_at(&self, at_ms: u64) -> Retention {
        let days = match (self.days, self.years) {
            (Some(d), _) => u64::from(d),
            (None, Some(y)) => u64::from(y) * YEAR_DAYS,
            (None, None) => 0,
        };
        Retention {
            mode: self.mode,
            until_ms: at_ms.saturating_add(days.saturating_mul(DAY_MS)),
        }
    }
}

/// A bucket's Object Lock configuration (S3 API reference,
/// PutObjectLockConfiguration). A bucket that has one has Object Lock
/// enabled, for good: versioning stays Enabled. `default_retention`
/// applies to new versions written without a retention of their own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLockConfig {
    pub default_retention: Option<DefaultRetention>,
}

/// Tags of an object or a bucket: key to value, keys unique.
pub type TagSet = BTreeMap<String, String>;

/// Most tags on one object (S3 User Guide, "Categorizing your storage
/// using tags"; PutObjectTagging: `InvalidTag`).
pub const MAX_OBJECT_TAGS: usize = 10;
/// Most tags on one bucket (PutBucketTagging: `InvalidTag`).
pub const MAX_BUCKET_TAGS: usize = 50;
/// Longest tag key, in Unicode characters (not bytes); a key is never empty.
pub const MAX_TAG_KEY_CHARS: usize = 128;
/// Longest tag value, in Unicode characters; a value may be empty.
pub const MAX_TAG_VALUE_CHARS: usize = 256;

/// Why a tag set breaks S3's limits (`max` tags: [`MAX_OBJECT_TAGS`] or
/// [`MAX_BUCKET_TAGS`]), as a message for people; `None` when it keeps
/// them. Meta and the S3 gateway check by this one rule.
pub fn tag_set_fault(tags: &TagSet, max: usize) -> Option<String> {
    if tags.len() > max {
        return Some(format!("{} tags; at most {max} are allowed", tags.len()));
    }
    for (k, v) in tags {
        let chars = k.chars().count();
        if chars == 0 || chars > MAX_TAG_KEY_CHARS {
            return Some(format!(
                "a tag key is {chars} characters; 1 to {MAX_TAG_KEY_CHARS} are allowed"
            ));
        }
        if v.chars().count() > MAX_TAG_VALUE_CHARS {
            return Some(format!(
                "the value of tag {k:?} is over {MAX_TAG_VALUE_CHARS} characters"
            ));
        }
    }
    None
}

/// What a write requires of the object it replaces, checked by meta in the
/// same step as the commit, so that it is a compare-and-swap and not a look
/// followed by a write (S3 API reference, PutObject and
/// CompleteMultipartUpload: `If-Match`, `If-None-Match`; S3 User Guide,
/// "Conditional writes").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteCondition {
    /// Whatever the key holds, or nothing.
    #[default]
    Any,
    /// No object has the key (`If-None-Match: *`); else `PreconditionFailed`.
    Absent,
    /// Some object has the key (`If-Match: *`); else `NoSuchKey`.
    Exists,
    /// The current object's ETag is this one, without quotes (`If-Match:
    /// "ETAG"`): `NoSuchKey` if no object has the key, `PreconditionFailed`
    /// if its ETag differs.
    ETag(String),
}

/// An object as a writer commits it, after its chunks are on the nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewObject {
    pub size: u64,
    pub etag: String,
    pub content_type: Option<String>,
    pub user_meta: BTreeMap<String, String>,
    pub headers: ObjectHeaders,
    pub data: ObjectData,
    pub chunks: Vec<ChunkRecord>,
}

impl NewObject {
    /// The bytes its data must hold: `size`, or [`sealed_len`] of it for
    /// an encrypted object (or part), whose `size` counts the plaintext.
    pub fn stored_len(&self) -> u64 {
        match self.headers.encryption {
            Some(_) => sealed_len(self.size),
            None => self.size,
        }
    }

    /// An object of `records` in order (its size their lengths' sum), with
    /// no ETag, content type or metadata.
    pub fn of_chunks(records: Vec<ChunkRecord>) -> Self {
        NewObject {
            size: records.iter().map(|r| r.len).sum(),
            etag: String::new(),
            content_type: None,
            user_meta: BTreeMap::new(),
            headers: ObjectHeaders::default(),
            data: ObjectData::Chunks(
                records
                    .iter()
                    .map(|r| ChunkRef {
                        id: r.id,
                        len: r.len,
                    })
                    .collect(),
            ),
            chunks: records,
        }
    }

    /// An inline object of `body`, with no ETag, content type or metadata.
    pub fn inline(body: &[u8]) -> Self {
        NewObject {
            size: body.len() as u64,
            etag: String::new(),
            content_type: None,
            user_meta: BTreeMap::new(),
            headers: ObjectHeaders::default(),
            data: ObjectData::Inline(body.to_vec()),
            chunks: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListEntry {
    Object {
        key: String,
        size: u64,
        etag: String,
        mtime_ms: u64,
        /// `None` is `STANDARD`.
        storage_class: Option<String>,
    },
    CommonPrefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub entries: Vec<ListEntry>,
    /// Pass as `start_after` to get the next page; `None` when complete.
    pub next: Option<String>,
}

/// A directory as the file-system view keeps it: made by `mkdir` (or kept
/// when its last file goes), so it exists with nothing under it. S3 listings
/// never show it. Attributes left `None` are the mount's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirInfo {
    /// Permission bits (the file-type bits are implied).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime_ms: u64,
}

/// What a name in a bucket is, seen as a file system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Found {
    Nothing,
    Object(Box<ObjectInfo>),
    /// A directory: its entry if it has one, `None` when only the objects
    /// under it make it exist. A directory hides an object of the same name.
    Dir(Option<DirInfo>),
}

/// One name in a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The name within the directory: no `/`.
    pub name: String,
    pub dir: bool,
    pub size: u64,
    pub mtime_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirListing {
    /// In key order (a directory `d` sorts as `d/`).
    pub entries: Vec<DirEntry>,
    /// Pass as `after` for the next page; `None` when complete.
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fragments: usize) -> ChunkRecord {
        ChunkRecord {
            id: ChunkId([9; 16]),
            policy: "ec:8+3".parse().unwrap(),
            len: 4 << 20,
            fragment_len: 1 << 19,
            hash: [7; 32],
            fragments: (0..fragments)
                .map(|i| FragmentRecord {
                    node: NodeId(1000 + i as u64),
                    hash: [i as u8; 32],
                })
                .collect(),
        }
    }

    /// Inline bodies as byte strings: the stored and wire bytes are what
    /// they were as a sequence of numbers, both ways.
    #[test]
    fn inline_bodies_keep_their_encoding() {
        #[derive(Serialize, Deserialize)]
        enum AsSequence {
            Inline(Vec<u8>),
            #[allow(dead_code)]
            Chunks(Vec<ChunkRef>),
        }
        let body: Vec<u8> = (0..1500u32).map(|i| (i * 7) as u8).collect();
        let new = postcard::to_allocvec(&ObjectData::Inline(body.clone())).unwrap();
        let old = postcard::to_allocvec(&AsSequence::Inline(body.clone())).unwrap();
        assert_eq!(new, old);
        assert_eq!(
            postcard::from_bytes::<ObjectData>(&old).unwrap(),
            ObjectData::Inline(body)
        );
    }

    #[test]
    fn a_placement_reads_a_chunk_record() {
        // Past the inline capacity too.
        for n in [0, 11, 40] {
            let rec = record(n);
            let bytes = postcard::to_allocvec(&rec).unwrap();
            let p: ChunkPlacement = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(
                (p.id, p.policy, p.len, p.fragment_len),
                (rec.id, rec.policy, rec.len, rec.fragment_len)
            );
            let nodes: Vec<NodeId> = rec.fragments.iter().map(|f| f.node).collect();
            assert_eq!(p.nodes.as_slice(), nodes.as_slice());
            // Cut short anywhere: an error, never a panic.
            for cut in 0..bytes.len() {
                assert!(postcard::from_bytes::<ChunkPlacement>(&bytes[..cut]).is_err());
            }
        }
    }
}

/// Most CORS rules on one bucket (S3 User Guide, "Elements of a CORS
/// configuration": up to 100 rules).
pub const MAX_CORS_RULES: usize = 100;
/// Largest bucket policy document in bytes (S3 User Guide, "Bucket
/// policies for Amazon S3": at most 20 KB).
pub const MAX_POLICY_BYTES: usize = 20 * 1024;

/// One CORS rule (S3 API reference, PutBucketCors, `CORSRule`): a request
/// from an origin matching one of `allowed_origins` (each with at most one
/// `*`), with a method of `allowed_methods` (GET, PUT, HEAD, POST, DELETE)
/// and only headers matching `allowed_headers` (case-insensitive, at most
/// one `*` each) is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    pub id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    /// Response headers a browser's script may read.
    pub expose_headers: Vec<String>,
    /// Seconds a browser may cache a preflight's answer.
    pub max_age_seconds: Option<i32>,
}

/// S3's PublicAccessBlock configuration (S3 API reference,
/// PutPublicAccessBlock): what makes public ACLs and policies refused or
/// ineffective on a bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicAccessBlock {
    /// Refuse requests that would set a public ACL.
    pub block_public_acls: bool,
    /// Ignore public ACLs already set.
    pub ignore_public_acls: bool,
    /// Refuse a bucket policy that makes the bucket public.
    pub block_public_policy: bool,
    /// A public policy grants nothing to anyone but the bucket's own keys.
    pub restrict_public_buckets: bool,
}

/// Most grants one ACL holds (S3 User Guide, "Access control list (ACL)
/// overview": "An ACL can have up to 100 grants").
pub const MAX_ACL_GRANTS: usize = 100;

/// Longest canonical user id a grant may name, in bytes (an access key
/// id is at most 128).
pub const MAX_GRANTEE_ID: usize = 128;

/// Who an ACL grant is to (S3 User Guide, "Access control list (ACL)
/// overview", "Who is a grantee?"). Tessera's canonical users are its
/// access keys: a key's canonical user id is the key id (ARCHITECTURE.md,
/// "Access evaluation"). E-mail grantees are resolved (or refused) before
/// anything is stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Grantee {
    /// A canonical user: an access key, by its id.
    CanonicalUser(String),
    /// `http://acs.amazonaws.com/groups/global/AllUsers`: everyone,
    /// anonymous callers included.
    AllUsers,
    /// `http://acs.amazonaws.com/groups/global/AuthenticatedUsers`: any
    /// signed caller.
    AuthenticatedUsers,
    /// `http://acs.amazonaws.com/groups/s3/LogDelivery`: kept and shown;
    /// it grants nothing here (no server access logging).
    LogDelivery,
}

/// What an ACL grant allows (S3 User Guide, "Access control list (ACL)
/// overview", "What permissions can I grant?"); its meaning on a bucket
/// and on an object is the S3 gateway's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AclPermission {
    Read,
    Write,
    ReadAcp,
    WriteAcp,
    FullControl,
}

/// One grant of an ACL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclGrant {
    pub grantee: Grantee,
    pub permission: AclPermission,
}

/// An access control list of a bucket or of one object version, as its
/// grants were put (canned ACLs expanded, in the order given), at most
/// [`MAX_ACL_GRANTS`]. The owner's grant is one of them when it was put;
/// the owner key keeps its own rights regardless (S3's owner always may
/// read and write the ACL; here the owner key's grant on the bucket stays).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    pub grants: Vec<AclGrant>,
}

/// Why `acl` breaks meta's limits (grant count, id length), as a message
/// for people; `None` when it keeps them.
pub fn acl_fault(acl: &Acl) -> Option<String> {
    if acl.grants.len() > MAX_ACL_GRANTS {
        return Some(format!(
            "an ACL of {} grants; at most {MAX_ACL_GRANTS} are allowed",
            acl.grants.len()
        ));
    }
    acl.grants
        .iter()
        .any(|g| matches!(&g.grantee, Grantee::CanonicalUser(id) if id.is_empty() || id.len() > MAX_GRANTEE_ID))
        .then(|| format!("a grantee id must be 1 to {MAX_GRANTEE_ID} bytes"))
}

/// What governs access to a bucket besides its keys' grants, kept by meta
/// per bucket and read by the S3 gateway on each request: CORS rules
/// (empty: none), the bucket policy (the JSON document as its owner gave
/// it; the gateway parses and checks it), the PublicAccessBlock and the
/// bucket's ACL (`None`: the owner's FULL_CONTROL only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketAccess {
    pub cors: Vec<CorsRule>,
    pub policy: Option<String>,
    pub public_access_block: Option<PublicAccessBlock>,
    pub acl: Option<Acl>,
    /// Default encryption for new objects (PutBucketEncryption); `None`:
    /// none configured.
    pub encryption: Option<BucketEncryption>,
}

/// A bucket's default encryption rule (S3 API reference,
/// PutBucketEncryption: `ApplyServerSideEncryptionByDefault`), as its
/// owner gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketEncryption {
    /// `AES256` (SSE-S3), or `aws:kms` / `aws:kms:dsse` (the gateway
    /// decides what it accepts).
    pub algorithm: String,
    /// `KMSMasterKeyID`, at most [`MAX_KMS_KEY_ID`] bytes.
    pub kms_key_id: Option<String>,
    pub bucket_key_enabled: bool,
}

/// Longest KMS key id a bucket's encryption rule may name, in bytes.
pub const MAX_KMS_KEY_ID: usize = 2048;

/// One change to a bucket's [`BucketAccess`]; an empty or `None` value
/// removes that setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessChange {
    Cors(Vec<CorsRule>),
    Policy(Option<String>),
    PublicAccessBlock(Option<PublicAccessBlock>),
    Acl(Option<Acl>),
    Encryption(Option<BucketEncryption>),
}

impl BucketAccess {
    /// Whether the bucket has no setting at all (meta keeps no record then).
    pub fn is_empty(&self) -> bool {
        *self == BucketAccess::default()
    }

    /// Applies `change`.
    pub fn apply(&mut self, change: &AccessChange) {
        match change {
            AccessChange::Cors(rules) => self.cors = rules.clone(),
            AccessChange::Policy(p) => self.policy = p.clone(),
            AccessChange::PublicAccessBlock(b) => self.public_access_block = *b,
            AccessChange::Acl(a) => self.acl = a.clone(),
            AccessChange::Encryption(e) => self.encryption = e.clone(),
        }
    }
}

/// Why `change` breaks the limits meta keeps for every bucket (rule
/// count, policy size, rules without origins or methods), as a message
/// for people; `None` when it keeps them. The gateway checks S3's finer
/// rules (methods, wildcards, the policy's grammar) before it asks.
pub fn access_change_fault(change: &AccessChange) -> Option<String> {
    match change {
        AccessChange::Cors(rules) => {
            if rules.len() > MAX_CORS_RULES {
                return Some(format!(
                    "{} CORS rules; at most {MAX_CORS_RULES} are allowed",
                    rules.len()
                ));
            }
            rules
                .iter()
                .any(|r| r.allowed_origins.is_empty() || r.allowed_methods.is_empty())
                .then(|| "a CORS rule needs an AllowedOrigin and an AllowedMethod".to_string())
        }
        AccessChange::Policy(Some(p)) if p.len() > MAX_POLICY_BYTES => Some(format!(
            "a policy of {} bytes; at most {MAX_POLICY_BYTES} are allowed",
            p.len()
        )),
        AccessChange::Policy(Some(p)) if p.trim().is_empty() => {
            Some("an empty policy document".to_string())
        }
        AccessChange::Acl(Some(acl)) => acl_fault(acl),
        AccessChange::Encryption(Some(e))
            if e.algorithm.len() > 32
                || e.kms_key_id
                    .as_ref()
                    .is_some_and(|k| k.len() > MAX_KMS_KEY_ID) =>
        {
            Some("a default encryption rule beyond its limits".to_string())
        }
        _ => None,
    }
}

/// An admin API token as meta keeps it: only the BLAKE3 hash of the
/// token is stored (as the table's key), never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminToken {
    /// What the operator called it (for listings and logs).
    pub name: String,
    pub created_ms: u64,
}

/// Data no record refers to (deleted or overwritten objects, replaced
/// fragments), waiting for the garbage-collection grace period: meta
/// drops a garbage chunk's record `grace_ms` after it became garbage, and
/// the nodes delete its fragments on their next collection pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GarbageSummary {
    pub chunks: u64,
    pub fragments: u64,
    /// Bytes of those fragments.
    pub bytes: u64,
    /// Unix milliseconds when the oldest of them became garbage.
    pub oldest_ms: Option<u64>,
    pub grace_ms: u64,
}

/// What a bucket holds, kept by meta in the same write as every change to
/// the bucket's objects and versions (so it never drifts from them).
/// Logical bytes: the objects' sizes, not the fragments that store them.
/// In-progress multipart uploads are not counted (their parts are not
/// objects until completed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BucketUsage {
    /// Current objects: keys whose newest version is an object.
    pub objects: u64,
    /// Bytes of the current objects.
    pub object_bytes: u64,
    /// Noncurrent object versions (versioned buckets; delete markers are
    /// not counted here).
    pub noncurrent: u64,
    /// Bytes of the noncurrent versions.
    pub noncurrent_bytes: u64,
    /// Delete markers, current or not (they hold no bytes).
    pub delete_markers: u64,
}

impl BucketUsage {
    /// Bytes the bucket holds: current and noncurrent versions, as S3 and
    /// MinIO report a bucket's size.
    pub fn bytes(&self) -> u64 {
        self.object_bytes.saturating_add(self.noncurrent_bytes)
    }
}

/// Bytes of volume address space one extent record maps. Writes, trims and
/// copy-on-write work per extent: a snapshot's later writes copy the map of
/// the extents they touch (not data), and reads look up one record per
/// extent.
pub const VOLUME_EXTENT: u64 = 1 << 20;

/// A block volume as meta records it (see ARCHITECTURE.md, "Block
/// volumes"). Its address space is mapped in extents of [`VOLUME_EXTENT`]
/// bytes; a never-written extent has no record and reads as zeros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    /// Drawn once at creation; extent records are keyed by it, so a name
    /// reused after `volume rm` starts empty.
    pub id: u64,
    pub name: String,
    /// Bytes; a multiple of `block_size`.
    pub size: u64,
    pub policy: Policy,
    /// 512 or 4096 bytes: the smallest unit of reads and writes.
    pub block_size: u32,
    pub created_ms: u64,
    /// The sequence number writes land at now; a snapshot takes the
    /// current one and the head moves on to the next.
    pub head_seq: u64,
    /// Where a clone reads what it has not written itself: `(volume id,
    /// sequence)` pairs, nearest first (the snapshot cloned, then that
    /// volume's own parents).
    pub lineage: Vec<(u64, u64)>,
    /// Name and snapshot this volume was cloned from, for people.
    pub origin: Option<String>,
    /// Snapshots, oldest first.
    pub snapshots: Vec<SnapshotInfo>,
    /// The writer holding the volume, if any.
    pub attachment: Option<Attachment>,
    /// The last attach epoch granted (fencing: commits carry theirs).
    pub epoch: u64,
    /// Bytes the head maps to data (holes and trimmed ranges excluded).
    pub allocated: u64,
}

impl VolumeInfo {
    /// Whether a writer holds the volume at `now_ms` (Unix milliseconds): a
    /// lease not renewed for [`VOLUME_LEASE_MS`] is lost.
    pub fn attached_at(&self, now_ms: u64) -> bool {
        self.attachment
            .as_ref()
            .is_some_and(|a| now_ms < a.renewed_ms.saturating_add(VOLUME_LEASE_MS))
    }
}

/// A snapshot of a volume: its extents as of `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub seq: u64,
    pub created_ms: u64,
    /// Bytes the snapshot maps to data when it was taken.
    pub allocated: u64,
    /// Clones made from it; it cannot be removed while any exists.
    pub clones: u32,
}

/// The exclusive writer of a volume: a lease renewed by `AttachVolume`
/// with the same epoch, lost after [`VOLUME_LEASE_MS`] without renewal or
/// when another writer attaches with `force`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Who holds it (`host/pid`, for people).
    pub holder: String,
    pub epoch: u64,
    pub since_ms: u64,
    pub renewed_ms: u64,
}

/// Milliseconds a volume's attachment lasts without renewal; writers renew
/// every few seconds.
pub const VOLUME_LEASE_MS: u64 = 30_000;

/// A run of an extent's bytes: `len` bytes at `off` within the extent are
/// bytes `chunk_off..` of `chunk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtentPiece {
    /// Bytes from the extent's start.
    pub off: u32,
    pub len: u32,
    pub chunk: ChunkId,
    /// Bytes from the chunk's start.
    pub chunk_off: u32,
}

/// The map of one extent as a view sees it: pieces sorted by `off`, never
/// overlapping; bytes no piece covers read as zeros. A record is the whole
/// truth for its extent: nothing below it shows through its gaps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtentRecord {
    pub pieces: Vec<ExtentPiece>,
}

impl ExtentRecord {
    /// Bytes this extent maps to data.
    pub fn mapped(&self) -> u64 {
        self.pieces.iter().map(|p| p.len as u64).sum()
    }

    /// Lays `new` over this map (bytes `off..off+len` of the extent now
    /// come from it, or read as zeros when `new` is `None`), keeping pieces
    /// sorted and disjoint. Pure: a simulation and meta's apply share it.
    pub fn overlay(&mut self, off: u32, len: u32, new: Option<(ChunkId, u32)>) {
        let end = off + len;
        // Taken when placed, so it is placed once, in order.
        let mut new = new.map(|(chunk, chunk_off)| ExtentPiece {
            off,
            len,
            chunk,
            chunk_off,
        });
        let mut out = Vec::with_capacity(self.pieces.len() + 2);
        for p in self.pieces.drain(..) {
            let p_end = p.off + p.len;
            if p_end <= off {
                out.push(p);
                continue;
            }
            if p.off < off {
                out.push(ExtentPiece {
                    len: off - p.off,
                    ..p
                });
            }
            if p.off >= end || p_end > end {
                out.extend(new.take());
            }
            if p.off >= end {
                out.push(p);
            } else if p_end > end {
                out.push(ExtentPiece {
                    off: end,
                    len: p_end - end,
                    chunk: p.chunk,
                    chunk_off: p.chunk_off + (end - p.off),
                });
            }
        }
        out.extend(new);
        self.pieces = out;
    }
}

/// One change a volume writer commits: bytes `offset..offset+len` of the
/// volume now come from `chunk` at `chunk_off`, or read as zeros (`None`:
/// TRIM and WRITE_ZEROES, which also free the space).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeWrite {
    /// Bytes from the volume's start.
    pub offset: u64,
    pub len: u64,
    pub data: Option<(ChunkId, u32)>,
}
