use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_types::{ChunkId, Hash, NodeId, Policy, RequestId};

use crate::lifecycle::{LifecycleConfig, LifecycleProgress};
#[cfg(doc)]
use crate::model::VOLUME_EXTENT;
use crate::model::{
    AccessChange, Acl, BucketAccess, ExtentRecord, ObjectLockConfig, ObjectVersion, Removal,
    Retention, VersionListing, Versioning, VolumeInfo, VolumeWrite,
};
use crate::model::{
    AccessKey, AdminToken, BucketInfo, BucketUsage, ChunkRecord, ClusterMap, ClusterStatus,
    DirInfo, DirListing, ExpectedFragment, Found, FragmentMove, GarbageSummary, Grant, Listing,
    NewObject, ObjectHeaders, ObjectInfo, PartInfo, Permission, RepairItem, ScrubProgress, TagSet,
    UploadInfo, WriteCondition,
};
use crate::model::{TransitionItem, UploadChecksum};

/// Requests a node serves. For `PutFragment`, exactly `len` raw bytes follow
/// the frame on the same stream. `request`: the client request the
/// fragment is read or written for (none for repair, scrub, rebalancing),
/// which the node puts on its log lines about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRequest {
    Ping,
    PutFragment {
        chunk: ChunkId,
        index: u8,
        len: u64,
        #[serde(with = "tessera_types::fixed_bytes")]
        hash: Hash,
        request: Option<RequestId>,
    },
    GetFragment {
        chunk: ChunkId,
        index: u8,
        request: Option<RequestId>,
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
        #[serde(with = "tessera_types::fixed_bytes")]
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
    pub scrub: ScrubProgress,
    /// Fragment body bytes stored and served since the node started (its
    /// `tessera_node_fragment_put_bytes_total` and `..._get_bytes_total`):
    /// meta turns the differences between heartbeats into rates.
    pub put_bytes: u64,
    pub get_bytes: u64,
}

/// Meta's answer to a heartbeat: what the node should be doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Deep scrubs requested so far (`tessera scrub now`); a node whose
    /// `scrub.seq_done` is lower starts one.
    pub scrub_seq: u64,
    /// Fragments no record refers to are deleted once older than this.
    pub gc_grace_ms: u64,
}

/// A request to meta: a query (read-only, answered from a consistent
/// snapshot), a proposal (becomes one command of meta's log, applied whole
/// or refused), or a lease (soft state meta keeps in memory and a restarted
/// or newly elected meta rebuilds: node heartbeats and write reservations).
// A request is decoded once per frame and moved into its handler: boxing
// the proposal would add an allocation per request and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaRequest {
    Query(MetaQuery),
    Propose(Proposal),
    Lease(Lease),
    /// Several requests on one stream, answered by one
    /// `MetaResponse::Batch` with an answer per request in the same order
    /// (a refused one is its `MetaResponse::Error`). Meta handles them
    /// concurrently, as if each came on its own stream: proposals still
    /// share the committer's batches with everything else. A client with
    /// many requests in flight sends them this way and saves a stream, a
    /// task and the packets for each. At most [`MAX_BATCHED_REQUESTS`].
    /// Batches do not nest: one inside another does not decode.
    Batch(#[serde(deserialize_with = "flat_batch::deserialize")] Vec<MetaRequest>),
    /// Raft's traffic between meta replicas. The bytes are the consensus
    /// library's messages as meta encodes them: nothing else reads them.
    Raft(RaftMessage),
    /// The meta group itself: its state and membership changes. Answered
    /// by the leader (a follower answers `NotLeader`).
    Group(GroupRequest),
}

/// One Raft RPC between meta replicas, its body opaque (see
/// `MetaRequest::Raft`); answered by `MetaResponse::Raft` with the RPC's
/// answer, opaque the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftMessage {
    AppendEntries(Vec<u8>),
    Vote(Vec<u8>),
    /// One chunk of a snapshot sent to a replica that fell behind the
    /// leader's log or joined the group.
    InstallSnapshot(Vec<u8>),
}

/// Requests about the meta group (`tessera meta status|add|remove`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupRequest {
    /// Answered by `MetaResponse::Group`.
    Status,
    /// Adds the replica listening at `addr` (`HOST:PORT`): it first
    /// catches up as a learner, then becomes a voter. Answers
    /// `MetaResponse::Group` with the new membership.
    Add { addr: String },
    /// Removes replica `id` from the group (it stops voting and the rest
    /// stop sending it the log). Refused for the last voter.
    Remove { id: u64 },
}

/// The meta group as its leader sees it (`tessera meta status --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaGroupStatus {
    /// The leader's replica id, if there is one.
    pub leader: Option<u64>,
    /// The current Raft term.
    pub term: u64,
    /// The last log index committed by the group.
    pub committed: Option<u64>,
    pub members: Vec<MetaMember>,
}

/// One replica of the meta group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaMember {
    pub id: u64,
    pub addr: String,
    /// `leader`, `follower` (a voter) or `learner` (catching up, not voting).
    pub role: String,
    /// The last log index known to be on this replica (the leader's view).
    pub match_index: Option<u64>,
    /// Log entries this replica is behind the leader's last one.
    pub lag: Option<u64>,
}

/// Most requests in one `MetaRequest::Batch`.
pub const MAX_BATCHED_REQUESTS: usize = 256;

/// Decodes the list of a batch, refusing a batch inside it: a frame of
/// batches nested in batches would otherwise make decoding recurse as deep
/// as the frame is long (two bytes a level) and overflow the stack.
mod flat_batch {
    use std::cell::Cell;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    thread_local! {
        /// This thread is decoding the list of a batch.
        static IN_BATCH: Cell<bool> = const { Cell::new(false) };
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        if IN_BATCH.with(|b| b.replace(true)) {
            return Err(D::Error::custom("a batch inside a batch"));
        }
        /// Clears the flag however decoding ends.
        struct Done;
        impl Drop for Done {
            fn drop(&mut self) {
                IN_BATCH.with(|b| b.set(false));
            }
        }
        let _done = Done;
        Vec::<T>::deserialize(d)
    }
}

impl From<MetaQuery> for MetaRequest {
    fn from(q: MetaQuery) -> Self {
        MetaRequest::Query(q)
    }
}

impl From<Proposal> for MetaRequest {
    fn from(p: Proposal) -> Self {
        MetaRequest::Propose(p)
    }
}

impl From<Lease> for MetaRequest {
    fn from(l: Lease) -> Self {
        MetaRequest::Lease(l)
    }
}

/// Read-only requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaQuery {
    ClusterMap,
    Status,
    GetBucket {
        name: String,
    },
    ListBuckets,
    HeadObject {
        bucket: String,
        key: String,
    },
    GetChunks {
        ids: Vec<ChunkId>,
    },
    ListObjects {
        bucket: String,
        prefix: String,
        delimiter: Option<String>,
        start_after: Option<String>,
        max_keys: u32,
    },
    /// The fragments meta's records place on `node`, in (chunk, index)
    /// order, after `after`: what a deep scrub checks.
    NodeFragments {
        node: NodeId,
        after: Option<(ChunkId, u8)>,
        limit: u32,
    },
    /// Which of these fragments, found on `node`'s disk, no record places
    /// there (and no write in progress reserved): the garbage collector's
    /// question.
    UnknownFragments {
        node: NodeId,
        items: Vec<(ChunkId, u8)>,
    },
    /// Chunks that lost fragments or sit on draining nodes, the fewest
    /// spare fragments first.
    RepairWork {
        limit: u32,
    },
    /// Live chunk records in id order after `after` (rebalancing walks
    /// them): `limit` of them, fewer only when there are no more.
    ScanChunks {
        after: Option<ChunkId>,
        limit: u32,
    },
    /// Keys with their secrets blanked.
    ListKeys,
    /// One key with its secret (the S3 gateway verifies signatures with it).
    GetKey {
        id: String,
    },
    /// Grants, of one bucket or one key or all.
    ListGrants {
        bucket: Option<String>,
        key: Option<String>,
    },
    GetUpload {
        upload: String,
    },
    ListParts {
        upload: String,
    },
    ListUploads {
        bucket: String,
    },
    /// What `key` is seen as a file system: a directory (`key/` has an
    /// entry or objects under it), an object, or nothing.
    Lookup {
        bucket: String,
        key: String,
    },
    /// The names directly in directory `prefix` (empty or ending in `/`):
    /// objects, and directories from objects under them or from entries,
    /// in key order after `after` (a `next` from the previous page). Each
    /// page is one consistent view.
    ListDir {
        bucket: String,
        prefix: String,
        after: Option<String>,
        limit: u32,
    },
    /// A bucket's tags (empty when it has none).
    GetBucketTags {
        bucket: String,
    },
    /// A bucket's versioning state: `Versioning(None)` if never versioned.
    GetVersioning {
        bucket: String,
    },
    /// One version of `key`: `version` as S3 names it (an id or `null`),
    /// or the newest version (object or delete marker) when `None`.
    /// `NoSuchKey` when the key has no version, `NoSuchVersion` for an
    /// unknown version, `BadRequest` for a malformed id.
    GetVersion {
        bucket: String,
        key: String,
        version: Option<String>,
    },
    /// Versions and delete markers in key order, each key's newest first,
    /// after (`key_marker`, `version_marker`) as S3's ListObjectVersions
    /// takes them; at most `max_keys` entries (versions and common
    /// prefixes).
    ListVersions {
        bucket: String,
        prefix: String,
        delimiter: Option<String>,
        key_marker: Option<String>,
        version_marker: Option<String>,
        max_keys: u32,
    },
    /// A bucket's access settings: CORS rules, policy, PublicAccessBlock
    /// and canned ACL (`BucketAccess::default()` when it has none).
    GetBucketAccess {
        bucket: String,
    },
    /// The admin token whose BLAKE3 hash (64 hex digits) is `hash`:
    /// `AdminToken`, or `NotFound`. The admin HTTP API asks this for every
    /// request it authenticates.
    GetAdminToken {
        hash: String,
    },
    /// Every admin token as `(hash, token)`, in hash order: the hashes
    /// give no token away, and name tokens for `DeleteAdminToken`.
    ListAdminTokens,
    /// What waits for garbage collection: `Garbage(GarbageSummary)`.
    Garbage,
    /// `Volume`, or `NoSuchVolume`.
    GetVolume {
        name: String,
    },
    /// Every volume in name order: `Volumes`.
    ListVolumes,
    /// The map of extents `first..first+count` (of [`VOLUME_EXTENT`]
    /// bytes) as volume `name` sees them (its snapshot `snapshot` when
    /// given), clones reading through their lineage: `Extents`, without the
    /// extents that are holes.
    VolumeExtents {
        name: String,
        snapshot: Option<String>,
        first: u64,
        count: u32,
    },
    /// Every bucket's usage in name order: `BucketUsage`, with a zero
    /// usage for a bucket that holds nothing.
    BucketUsage,
    /// A bucket's Object Lock configuration: `ObjectLock(None)` when the
    /// bucket has no Object Lock. `NoSuchBucket`.
    GetObjectLock {
        bucket: String,
    },
    /// A bucket's lifecycle configuration: `Lifecycle(None)` when it has
    /// none. `NoSuchBucket`.
    GetLifecycle {
        bucket: String,
    },
    /// The lifecycle worker's progress and totals: `LifecycleProgress`.
    LifecycleStatus,
    /// The operator's storage classes and their policies:
    /// `StorageClasses`.
    StorageClasses,
    /// Up to `limit` (at most 256) versions queued for re-encoding by a
    /// lifecycle transition: `Transitions`.
    TransitionWork {
        limit: usize,
    },
    /// `HeadObject`, and the records of the object's first chunks (at most
    /// `max_chunks`, and never more than [`MAX_CHUNKS_WITH_OBJECT`]) in the
    /// object's order, read from the same snapshot: what a read of the
    /// object asks next, so that a GET of an object of a few chunks is one
    /// meta round trip instead of two. `ObjectWithChunks` (no records for
    /// an inline object); `NoSuchBucket`, `NoSuchKey` as `HeadObject`.
    HeadObjectWithChunks {
        bucket: String,
        key: String,
        max_chunks: u32,
    },
}

/// Most chunk records `MetaQuery::HeadObjectWithChunks` returns with its
/// object: 64 records of a few hundred bytes each keep the answer well
/// inside the share of a batch's frame that object reads may take.
pub const MAX_CHUNKS_WITH_OBJECT: u32 = 64;

impl MetaQuery {
    /// Whether the answer is small and bounded whatever the cluster holds
    /// (one key, one key's grants on one bucket, one bucket's record, its
    /// access settings or versioning): such a query may share a
    /// `MetaRequest::Batch` with others without the batch's answer
    /// outgrowing a frame. The S3 gateway asks these for every request.
    pub fn has_small_answer(&self) -> bool {
        match self {
            MetaQuery::GetKey { .. }
            | MetaQuery::GetBucket { .. }
            | MetaQuery::GetBucketAccess { .. }
            | MetaQuery::GetVersioning { .. }
            | MetaQuery::GetObjectLock { .. } => true,
            MetaQuery::ListGrants { bucket, key } => bucket.is_some() && key.is_some(),
            _ => false,
        }
    }

    /// Whether the query reads one object or version (what every S3 GET
    /// and HEAD asks): its answer is usually small (an inline object is
    /// at most a few KiB) but grows with the object's chunk list, so it
    /// may share a `MetaRequest::Batch` only because meta answers
    /// `TooLarge` in its place when the batch's answer would not fit a
    /// frame, and the client then asks it alone.
    pub fn reads_one_object(&self) -> bool {
        matches!(
            self,
            MetaQuery::HeadObject { .. }
                | MetaQuery::HeadObjectWithChunks { .. }
                | MetaQuery::GetVersion { .. }
        )
    }
}

/// Requests that become one command of meta's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proposal {
    CreateBucket {
        name: String,
        policy: Option<Policy>,
    },
    DeleteBucket {
        name: String,
    },
    CommitObject {
        bucket: String,
        key: String,
        object: NewObject,
        /// The reservation the chunks were written under (`ReserveChunks`):
        /// the commit is refused if it lapsed, since the collector may
        /// then have taken the fragments.
        write: Option<u64>,
        /// What the key must hold for the commit to happen, checked in the
        /// same step as the commit.
        condition: WriteCondition,
    },
    DeleteObject {
        bucket: String,
        key: String,
    },
    ReportCorrupt {
        chunk: ChunkId,
        index: u8,
        node: NodeId,
        reason: String,
    },
    /// Moves fragments of a chunk to new nodes, after the new copies are
    /// stored: refused unless every `from` still holds its fragment.
    CommitRepair {
        chunk: ChunkId,
        moves: Vec<FragmentMove>,
    },
    StartScrub,
    DrainNode {
        node: NodeId,
    },
    RemoveNode {
        node: NodeId,
    },
    /// A new S3 access key; meta draws the id and secret unless given.
    CreateKey {
        name: String,
        id: Option<String>,
        secret: Option<String>,
    },
    DeleteKey {
        id: String,
    },
    /// Grants `permission` on `bucket` to key `key`, or revokes with `None`.
    SetGrant {
        bucket: String,
        key: String,
        permission: Option<Permission>,
    },
    /// Starts a multipart upload of `bucket/key`.
    CreateUpload {
        bucket: String,
        key: String,
        content_type: Option<String>,
        user_meta: BTreeMap<String, String>,
        headers: ObjectHeaders,
        checksum: Option<UploadChecksum>,
    },
    /// Records part `number` of `upload`, written under reservation
    /// `write`; replaces an earlier part with that number. `part.data` must
    /// be chunks, not inline bytes.
    CommitPart {
        upload: String,
        number: u32,
        part: NewObject,
        write: Option<u64>,
    },
    /// Makes the listed parts, in order, the object; ETags are checked, and
    /// `condition` against the key's current object in the same step.
    /// `checksum` is the object's checksum (algorithm, base64 value with
    /// `-N` when composite), computed from the listed parts' checksums; the
    /// parts' own checksums of that algorithm are kept with the object.
    CompleteUpload {
        upload: String,
        parts: Vec<(u32, String)>,
        condition: WriteCondition,
        checksum: Option<(String, String)>,
    },
    AbortUpload {
        upload: String,
    },
    /// Moves object `from` to `to`, or, when both end in `/`, every object
    /// and directory entry under prefix `from` to the same name under `to`:
    /// one command, no data copied. `replace` lets an object rename
    /// overwrite `to`, and a prefix rename replace an empty directory `to`;
    /// a prefix rename needs nothing under `to`. `keep_dir` (a prefix
    /// ending in `/`) gets a directory entry if it has none, so that the
    /// directory the name left does not vanish from file-system views.
    Rename {
        bucket: String,
        from: String,
        to: String,
        replace: bool,
        keep_dir: Option<String>,
    },
    /// Records directory `path` (ending in `/`) with `info`. With `create`
    /// it is refused with `PreconditionFailed` if the directory exists
    /// (entry or objects under it).
    PutDir {
        bucket: String,
        path: String,
        info: DirInfo,
        create: bool,
    },
    /// Removes directory `path`'s entry: refused with `NotEmpty` while
    /// anything lies under it, `NoSuchKey` if it does not exist.
    RemoveDir {
        bucket: String,
        path: String,
        keep_dir: Option<String>,
    },
    /// Commits a new version of `key` that may keep chunks of the current
    /// one: references in `object.data` without a record in
    /// `object.chunks` must name chunks of the current version (each at
    /// most once), or the commit is refused with `Conflict`. Chunks the new
    /// version drops become garbage. This is how a file-system write
    /// replaces only the chunks it touched, copy-on-write.
    PatchObject {
        bucket: String,
        key: String,
        object: NewObject,
        write: Option<u64>,
        if_absent: bool,
    },
    /// Deletes an object: `NoSuchKey` if absent. See `Rename` for
    /// `keep_dir`.
    Unlink {
        bucket: String,
        key: String,
        keep_dir: Option<String>,
    },
    /// Replaces the tags of the current object at `key` (empty: removes
    /// them); answers the object. `NoSuchKey` if there is none,
    /// `InvalidTag` beyond S3's limits.
    SetObjectTags {
        bucket: String,
        key: String,
        tags: TagSet,
    },
    /// Replaces a bucket's tags (empty: removes them). `InvalidTag` beyond
    /// S3's limits.
    SetBucketTags {
        bucket: String,
        tags: TagSet,
    },
    /// Enables or suspends versioning of a bucket (S3's
    /// PutBucketVersioning); answers `Ok`.
    SetVersioning {
        bucket: String,
        state: Versioning,
    },
    /// Removes one version of `key` for good (`version`: an id or `null`);
    /// answers `Removed`, with `existed: false` for an unknown version.
    /// A removed object's chunks become garbage; when the newest version
    /// goes, the next newest becomes the current one.
    DeleteVersion {
        bucket: String,
        key: String,
        version: String,
    },
    /// Replaces the tags of one version of `key` (`version`: an id or
    /// `null`); answers the object. `NoSuchVersion`, `InvalidTag`, or
    /// `MethodNotAllowed` for a delete marker.
    SetVersionTags {
        bucket: String,
        key: String,
        version: String,
        tags: TagSet,
    },
    /// Changes one of a bucket's access settings (S3's Put/Delete of
    /// BucketCors, BucketPolicy, PublicAccessBlock, BucketAcl); answers
    /// `Ok`. `BadRequest` beyond meta's limits (`access_change_fault`).
    SetBucketAccess {
        bucket: String,
        change: AccessChange,
    },
    /// Records an admin API token by its BLAKE3 hash (64 hex digits; the
    /// client draws the token and never sends it); answers `Ok`.
    /// `BadRequest` for a malformed hash, `Conflict` if it exists.
    CreateAdminToken {
        name: String,
        hash: String,
    },
    /// Revokes the admin token with this hash; answers `Deleted`.
    DeleteAdminToken {
        hash: String,
    },
    /// Creates an empty (thin) volume; answers `Volume`. `size` in bytes, a
    /// multiple of `block_size` (512 or 4096); `policy` defaults to the
    /// cluster's. `VolumeExists`, `BadRequest`, `InvalidPolicy`.
    CreateVolume {
        name: String,
        size: u64,
        policy: Option<Policy>,
        block_size: u32,
    },
    /// Changes a volume's size (bytes); shrinking drops what lies beyond
    /// and needs `allow_shrink`. Answers `Volume`.
    ResizeVolume {
        name: String,
        size: u64,
        allow_shrink: bool,
    },
    /// Deletes a volume with its snapshots; its chunks become garbage.
    /// `VolumeBusy` while attached or while a clone depends on one of its
    /// snapshots. Answers `Deleted`.
    DeleteVolume {
        name: String,
    },
    /// Takes a snapshot of what the volume's writer has committed (constant
    /// time). Answers `Volume`.
    SnapshotVolume {
        name: String,
        snapshot: String,
    },
    /// Removes a snapshot; `VolumeBusy` while a clone depends on it.
    /// Answers `Volume`.
    DeleteSnapshot {
        name: String,
        snapshot: String,
    },
    /// A new volume reading as `name@snapshot` until written (constant
    /// time). Answers the new `Volume`.
    CloneVolume {
        name: String,
        snapshot: String,
        new_name: String,
    },
    /// Makes the volume read as `snapshot` again; refused (`VolumeBusy`)
    /// while attached. Answers `Volume`.
    RollbackVolume {
        name: String,
        snapshot: String,
    },
    /// Takes (epoch `None`) or renews (the epoch held) the volume's
    /// exclusive writer lease. A fresh lease of another writer refuses it
    /// (`VolumeBusy`) unless `force`; taking it draws a new epoch, which
    /// fences every commit of the old writer (`Fenced`). Answers `Volume`.
    AttachVolume {
        name: String,
        holder: String,
        epoch: Option<u64>,
        force: bool,
    },
    /// Gives the lease up (only with the epoch that holds it). Answers `Ok`.
    DetachVolume {
        name: String,
        epoch: u64,
    },
    /// Makes stored chunks part of the volume's head, in order: each write
    /// maps a range to chunk bytes or to zeros. `Fenced` unless `epoch` holds
    /// the lease. Answers `Extents` with the head's new map of every extent
    /// touched.
    CommitVolumeWrites {
        name: String,
        epoch: u64,
        chunks: Vec<ChunkRecord>,
        writes: Vec<VolumeWrite>,
        /// The reservation the chunks were written under.
        write: Option<u64>,
    },
    /// Sets a bucket's Object Lock configuration (S3's
    /// PutObjectLockConfiguration); answers `Ok`. The bucket's versioning
    /// must be Enabled (`InvalidBucketState` otherwise), unless
    /// `enable_versioning`, which enables it in the same step (a bucket
    /// created with Object Lock).
    SetObjectLock {
        bucket: String,
        config: ObjectLockConfig,
        enable_versioning: bool,
    },
    /// Sets (or with `None` removes) the retention of one version of `key`
    /// (`version`: an id or `null`; `None`: the current object); answers
    /// the object. A retention still running may be lengthened; shortening
    /// it, removing it or changing its mode is `ObjectLocked`, except a
    /// GOVERNANCE one with `bypass_governance`. `InvalidRequest` in a
    /// bucket without Object Lock; `NoSuchKey`, `NoSuchVersion`,
    /// `MethodNotAllowed` (a delete marker).
    SetRetention {
        bucket: String,
        key: String,
        version: Option<String>,
        retention: Option<Retention>,
        bypass_governance: bool,
    },
    /// Turns the legal hold of one version of `key` on or off (`version`
    /// as for `SetRetention`); answers the object. `InvalidRequest` in a
    /// bucket without Object Lock.
    SetLegalHold {
        bucket: String,
        key: String,
        version: Option<String>,
        on: bool,
    },
    /// `DeleteVersion` by a caller allowed to bypass GOVERNANCE retention
    /// (S3's `x-amz-bypass-governance-retention: true`): a version under
    /// a GOVERNANCE retention is removed; COMPLIANCE and legal holds still
    /// refuse (`ObjectLocked`).
    DeleteVersionBypassingGovernance {
        bucket: String,
        key: String,
        version: String,
    },
    /// Sets (S3's PutBucketLifecycleConfiguration) or with `None` removes
    /// (DeleteBucketLifecycle) a bucket's lifecycle configuration; answers
    /// `Ok`. `BadRequest` beyond meta's limits (`LifecycleConfig::fault`).
    SetLifecycle {
        bucket: String,
        config: Option<LifecycleConfig>,
    },
    /// Replaces the ACL of one version of `key` (`version`: an id or
    /// `null`; `None`: the current object) and answers the object (S3 API
    /// reference, PutObjectAcl); `acl: None` makes it private.
    /// `NoSuchKey`, `NoSuchVersion`, `MethodNotAllowed` for a delete
    /// marker, `BadRequest` beyond `acl_fault`'s limits.
    SetObjectAcl {
        bucket: String,
        key: String,
        version: Option<String>,
        acl: Option<Acl>,
    },
    /// Maps an S3 storage class to `policy`, or with `None` removes its
    /// mapping; answers `Ok`. `BadRequest` for STANDARD or a class outside
    /// `MAPPABLE_STORAGE_CLASSES`, `InvalidPolicy`.
    SetStorageClass {
        class: String,
        policy: Option<Policy>,
    },
    /// Swaps the version `item` names from its chunks `old` (as the
    /// repairer read them, in order) to `chunks` (written in the item's
    /// policy under reservation `write`, same lengths), and sets its
    /// storage class, if it is unchanged; the old chunks become garbage
    /// and the queue entry goes. Answers `Object` (the version now), or
    /// `Deleted { existed: false }` when the version changed meanwhile
    /// and was left alone. `BadRequest` for chunks that do not match.
    Transition {
        item: TransitionItem,
        old: Vec<ChunkId>,
        chunks: Vec<ChunkRecord>,
        write: Option<u64>,
    },
}

/// Soft state: what a node or a writer keeps alive by renewing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lease {
    /// A node's liveness (every couple of seconds); the reply says what the
    /// node should be doing.
    Heartbeat(Heartbeat),
    /// Protects the fragments of chunks being written from the garbage
    /// collector until the commit, as long as the writer renews it (an
    /// empty list renews) within the grace period.
    ReserveChunks { write: u64, chunks: Vec<ChunkId> },
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
    Deleted {
        existed: bool,
    },
    Error(RemoteError),
    HeartbeatReply(HeartbeatReply),
    NodeFragments {
        items: Vec<ExpectedFragment>,
        more: bool,
    },
    UnknownFragments(Vec<(ChunkId, u8)>),
    RepairWork(Vec<RepairItem>),
    ScrubStarted {
        seq: u64,
    },
    Key(AccessKey),
    Keys(Vec<AccessKey>),
    Grants(Vec<Grant>),
    Upload(UploadInfo),
    Uploads(Vec<UploadInfo>),
    Part(PartInfo),
    Parts(Vec<PartInfo>),
    Renamed {
        objects: u64,
    },
    Found(Found),
    DirListing(DirListing),
    Tags(TagSet),
    Versioning(Option<Versioning>),
    Version(ObjectVersion),
    Versions(VersionListing),
    /// What `DeleteObject` and `DeleteVersion` did.
    Removed(Removal),
    /// The answers to a `MetaRequest::Batch`, in its order (never itself
    /// a batch).
    Batch(#[serde(deserialize_with = "flat_batch::deserialize")] Vec<MetaResponse>),
    /// A Raft RPC's answer (see `MetaRequest::Raft`).
    Raft(Vec<u8>),
    /// This meta replica is not the group's leader: the request (all of a
    /// batch) was not handled; send it to `leader` (`HOST:PORT`), or, when
    /// no leader is known (an election is on), try again shortly.
    NotLeader {
        leader: Option<String>,
    },
    Group(MetaGroupStatus),
    /// A bucket's access settings (`GetBucketAccess`).
    BucketAccess(BucketAccess),
    AdminToken(AdminToken),
    AdminTokens(Vec<(String, AdminToken)>),
    Garbage(GarbageSummary),
    Volume(VolumeInfo),
    Volumes(Vec<VolumeInfo>),
    /// Extent maps by extent index (see `MetaQuery::VolumeExtents`).
    Extents(Vec<(u64, ExtentRecord)>),
    /// Buckets' usage by name (see `MetaQuery::BucketUsage`).
    BucketUsage(Vec<(String, BucketUsage)>),
    /// A bucket's Object Lock configuration (`GetObjectLock`).
    ObjectLock(Option<ObjectLockConfig>),
    /// A bucket's lifecycle configuration (`GetLifecycle`).
    Lifecycle(Option<LifecycleConfig>),
    /// The lifecycle worker's progress (`LifecycleStatus`).
    LifecycleProgress(LifecycleProgress),
    /// Storage classes and their policies, by name (`StorageClasses`).
    StorageClasses(Vec<(String, Policy)>),
    /// Queued transitions (`TransitionWork`).
    Transitions(Vec<TransitionItem>),
    /// An object and the records of its first chunks, in its order
    /// (`HeadObjectWithChunks`).
    ObjectWithChunks {
        object: ObjectInfo,
        chunks: Vec<ChunkRecord>,
    },
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
    /// The state a request was based on changed meanwhile (a repair whose
    /// chunk moved or vanished): look again.
    Conflict,
    /// The node was removed from the cluster.
    NodeRemoved,
    NoSuchUpload,
    /// A part named in a completion is missing or its ETag differs.
    InvalidPart,
    /// A part other than the last is below the minimum part size.
    EntityTooSmall,
    PreconditionFailed,
    /// The body does not match the digest the writer announced.
    BadDigest,
    /// A directory that still holds something.
    NotEmpty,
    /// A completion lists its parts out of ascending order.
    InvalidPartOrder,
    /// A tag set beyond S3's limits (count, key or value length).
    InvalidTag,
    /// No version of the key has the id asked for.
    NoSuchVersion,
    /// The request names a delete marker where only an object will do.
    MethodNotAllowed,
    /// The meta replica lost its leadership before the request was
    /// proposed: nothing was done; ask the leader.
    NotLeader,
    NoSuchVolume,
    VolumeExists,
    /// The volume is attached by a writer, or a clone depends on it.
    VolumeBusy,
    /// The writer's volume lease was taken over: it may not write again.
    Fenced,
    /// The peer's certificate does not give it the role the request needs
    /// (Raft's RPCs and changes of the meta group: `meta`). Kept last:
    /// codes are encoded by position, so older peers still read the others.
    Forbidden,
    /// The bucket's state does not allow the request (S3's
    /// `InvalidBucketState`, 409): Object Lock on a bucket whose
    /// versioning is not Enabled, suspending versioning under Object Lock.
    InvalidBucketState,
    /// The version is under an Object Lock retention or legal hold that
    /// the request may not override (S3 answers `AccessDenied`, 403).
    ObjectLocked,
    /// The request does not fit the bucket (S3's `InvalidRequest`, 400):
    /// Object Lock settings in a bucket without Object Lock.
    InvalidRequest,
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
