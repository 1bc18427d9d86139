//! The Tessera wire protocol: message types, framing, limits and version.
//!
//! Owns what goes over a QUIC stream between clients, meta and nodes, and the
//! record types they exchange (buckets, objects, chunk records, node status).
//! Pure data and byte conversion: no sockets, no async, no storage. See
//! `proto/PROTOCOL.md` for the byte-level description.

mod frame;
mod lifecycle;
mod messages;
mod model;

pub use frame::{
    ALPN, FRAME_HEADER_LEN, FrameHeader, FrameKind, MAGIC, MAX_FRAME_LEN, PROTOCOL_VERSION,
    decode_payload, encode_frame,
};
pub use lifecycle::{
    Expiration, FilterForm, KeyAction, KeyVersion, LifecycleConfig, LifecycleProgress,
    LifecycleRule, MAX_LIFECYCLE_RULES, MAX_RULE_ID_CHARS, NoncurrentExpiration, RuleFilter,
    Transition, after_days,
};
pub use messages::{
    ErrorCode, FragmentInfo, GroupRequest, Heartbeat, HeartbeatReply, Lease, MAX_BATCHED_REQUESTS,
    MAX_CHUNKS_WITH_OBJECT, MetaGroupStatus, MetaMember, MetaQuery, MetaRequest, MetaResponse,
    NodeRequest, NodeResponse, Proposal, RaftMessage, RemoteError,
};
pub use model::{
    AccessChange, AccessKey, Acl, AclGrant, AclPermission, AdminToken, BucketAccess,
    BucketEncryption, BucketInfo, BucketUsage, ChunkHealth, ChunkPlacement, ChunkRecord, ChunkRef,
    ClusterMap, ClusterStatus, CorruptReport, CorsRule, DeleteMarker, DirEntry, DirInfo,
    DirListing, ExpectedFragment, Found, FragmentMove, FragmentNodes, FragmentRecord,
    FragmentState, GarbageSummary, Grant, Grantee, ListEntry, Listing, LoadBalance, MAX_ACL_GRANTS,
    MAX_BUCKET_TAGS, MAX_CORS_RULES, MAX_GRANTEE_ID, MAX_KMS_KEY_ID, MAX_OBJECT_TAGS,
    MAX_POLICY_BYTES, MAX_TAG_KEY_CHARS, MAX_TAG_VALUE_CHARS, MAX_WRAPPED_KEY, NULL_VERSION,
    NewObject, NodeAdmin, NodeInfo, NodeState, ObjectData, ObjectEncryption, ObjectHeaders,
    ObjectInfo, ObjectVersion, PartInfo, Permission, PublicAccessBlock, Removal, RepairItem,
    RepairProgress, SSE_HEADER, SSE_PACKAGE, SSE_TAG, ScrubProgress, SseScheme, TagSet, UploadInfo,
    VERSION_ID_LEN, VersionListEntry, VersionListing, VersionSummary, Versioning, WriteCondition,
    access_change_fault, acl_fault, is_null_version, sealed_len, tag_set_fault,
    version_id_is_valid, version_label,
};
pub use model::{
    Attachment, ExtentPiece, ExtentRecord, SnapshotInfo, VOLUME_EXTENT, VOLUME_LEASE_MS,
    VolumeInfo, VolumeWrite,
};
pub use model::{ChecksumType, MAPPABLE_STORAGE_CLASSES, TransitionItem, UploadChecksum};
pub use model::{DAY_MS, DefaultRetention, LockMode, ObjectLockConfig, Retention, YEAR_DAYS};

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("bad frame magic {0:02x?}: not a Tessera peer")]
    BadMagic([u8; 2]),
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    FrameTooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
}
