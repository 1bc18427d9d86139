//! The commands of the log and where each is applied. A command holds
//! everything it needs (timestamps, ids drawn by the proposer), so applying
//! it is a pure function of the state and the command.

use serde::{Deserialize, Serialize};
use tessera_proto::{
    AccessChange, AccessKey, Acl, AdminToken, ChunkRecord, CorruptReport, DirInfo, FragmentMove,
    LifecycleConfig, LifecycleProgress, NewObject, NodeAdmin, ObjectLockConfig, Permission,
    Retention, TagSet, TransitionItem, UploadInfo, Versioning, VolumeWrite, WriteCondition,
};
use tessera_types::{ChunkId, NodeId, Policy};

use super::tables::NodeRecord;
use super::txn::Txn;
use super::{
    Applied, access, admin_tokens, bucket_access, buckets, chunks, cluster, fsview, healing,
    lifecycle, multipart, object_lock, objects, rename, storage_classes, tags, versions, volumes,
};
use crate::MetaError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Records a node or its new address, zone or capacity.
    RegisterNode {
        node: NodeRecord,
    },
    CreateBucket {
        name: String,
        policy: Policy,
        at_ms: u64,
    },
    /// Deletes an empty bucket with its directory entries and grants.
    DeleteBucket {
        name: String,
    },
    /// Makes a new object visible; its chunks are already stored.
    CommitObject {
        bucket: String,
        key: String,
        object: NewObject,
        at_ms: u64,
        condition: WriteCondition,
    },
    DeleteObject {
        bucket: String,
        key: String,
        at_ms: u64,
    },
    ReportCorrupt {
        report: CorruptReport,
    },
    /// Points fragments of a chunk at their new nodes (repair, drain,
    /// rebalance); the copies are already stored.
    CommitRepair {
        chunk: ChunkId,
        moves: Vec<FragmentMove>,
    },
    SetNodeAdmin {
        node: NodeId,
        admin: NodeAdmin,
    },
    /// Forgets a node that holds nothing any more.
    RemoveNode {
        node: NodeId,
    },
    /// Drops garbage chunks' records; the nodes then delete the fragments.
    PurgeChunks {
        ids: Vec<ChunkId>,
    },
    RequestScrub,
    CreateKey {
        key: AccessKey,
    },
    /// Deletes a key and every grant to it.
    DeleteKey {
        id: String,
    },
    SetGrant {
        bucket: String,
        key: String,
        permission: Option<Permission>,
    },
    CreateUpload {
        upload: UploadInfo,
    },
    CommitPart {
        upload: String,
        number: u32,
        part: NewObject,
        at_ms: u64,
    },
    /// Makes the listed parts the object; parts not listed become garbage.
    /// `checksum`: the object's (algorithm, value), see
    /// `Proposal::CompleteUpload`.
    CompleteUpload {
        upload: String,
        parts: Vec<(u32, String)>,
        condition: WriteCondition,
        checksum: Option<(String, String)>,
        at_ms: u64,
    },
    AbortUpload {
        upload: String,
        at_ms: u64,
    },
    /// See `Proposal::Rename`.
    Rename {
        bucket: String,
        from: String,
        to: String,
        replace: bool,
        keep_dir: Option<String>,
        at_ms: u64,
    },
    /// See `Proposal::PutDir`.
    PutDir {
        bucket: String,
        path: String,
        info: DirInfo,
        create: bool,
    },
    /// See `Proposal::RemoveDir`.
    RemoveDir {
        bucket: String,
        path: String,
        keep_dir: Option<String>,
        at_ms: u64,
    },
    /// See `Proposal::PatchObject`.
    PatchObject {
        bucket: String,
        key: String,
        object: NewObject,
        if_absent: bool,
        at_ms: u64,
    },
    /// See `Proposal::Unlink`.
    Unlink {
        bucket: String,
        key: String,
        keep_dir: Option<String>,
        at_ms: u64,
    },
    /// See `Proposal::SetObjectTags`.
    SetObjectTags {
        bucket: String,
        key: String,
        tags: TagSet,
    },
    /// See `Proposal::SetBucketTags`.
    SetBucketTags {
        bucket: String,
        tags: TagSet,
    },
    /// See `Proposal::SetVersioning`.
    SetVersioning {
        bucket: String,
        state: Versioning,
    },
    /// See `Proposal::DeleteVersion`.
    DeleteVersion {
        bucket: String,
        key: String,
        version: String,
        at_ms: u64,
        /// See `Proposal::DeleteVersionBypassingGovernance`.
        bypass_governance: bool,
    },
    /// See `Proposal::SetVersionTags`.
    SetVersionTags {
        bucket: String,
        key: String,
        version: String,
        tags: TagSet,
    },
    /// See `Proposal::SetBucketAccess`.
    SetBucketAccess {
        bucket: String,
        change: AccessChange,
    },
    /// See `Proposal::CreateAdminToken`.
    CreateAdminToken {
        hash: String,
        token: AdminToken,
    },
    /// See `Proposal::DeleteAdminToken`.
    DeleteAdminToken {
        hash: String,
    },
    /// See `Proposal::CreateVolume`.
    CreateVolume {
        name: String,
        size: u64,
        policy: Policy,
        block_size: u32,
        at_ms: u64,
    },
    /// See `Proposal::ResizeVolume`.
    ResizeVolume {
        name: String,
        size: u64,
        allow_shrink: bool,
        at_ms: u64,
    },
    /// See `Proposal::DeleteVolume`.
    DeleteVolume {
        name: String,
        at_ms: u64,
    },
    /// See `Proposal::SnapshotVolume`.
    SnapshotVolume {
        name: String,
        snapshot: String,
        at_ms: u64,
    },
    /// See `Proposal::DeleteSnapshot`.
    DeleteSnapshot {
        name: String,
        snapshot: String,
        at_ms: u64,
    },
    /// See `Proposal::CloneVolume`.
    CloneVolume {
        name: String,
        snapshot: String,
        new_name: String,
        at_ms: u64,
    },
    /// See `Proposal::RollbackVolume`.
    RollbackVolume {
        name: String,
        snapshot: String,
        at_ms: u64,
    },
    /// See `Proposal::AttachVolume`.
    AttachVolume {
        name: String,
        holder: String,
        epoch: Option<u64>,
        force: bool,
        at_ms: u64,
    },
    /// See `Proposal::DetachVolume`.
    DetachVolume {
        name: String,
        epoch: u64,
    },
    /// See `Proposal::SetObjectLock`.
    SetObjectLock {
        bucket: String,
        config: ObjectLockConfig,
        enable_versioning: bool,
    },
    /// See `Proposal::SetRetention`.
    SetRetention {
        bucket: String,
        key: String,
        version: Option<String>,
        retention: Option<Retention>,
        bypass_governance: bool,
        at_ms: u64,
    },
    /// See `Proposal::SetLegalHold`.
    SetLegalHold {
        bucket: String,
        key: String,
        version: Option<String>,
        on: bool,
    },
    /// See `Proposal::SetLifecycle`.
    SetLifecycle {
        bucket: String,
        config: Option<LifecycleConfig>,
    },
    /// The lifecycle worker's expiry of one version, applied only if the
    /// version is still what the worker decided on (see
    /// `lifecycle::expire`).
    Expire {
        bucket: String,
        key: String,
        version: String,
        mtime_ms: u64,
        current: bool,
        at_ms: u64,
    },
    /// The lifecycle worker's progress, recorded as it goes (a new leader
    /// resumes from it).
    SetLifecycleProgress {
        progress: LifecycleProgress,
    },
    /// See `Proposal::CommitVolumeWrites`.
    CommitVolumeWrites {
        name: String,
        epoch: u64,
        chunks: Vec<ChunkRecord>,
        writes: Vec<VolumeWrite>,
        at_ms: u64,
    },
    /// See `Proposal::SetObjectAcl`.
    SetObjectAcl {
        bucket: String,
        key: String,
        version: Option<String>,
        acl: Option<Acl>,
    },
    /// See `Proposal::SetStorageClass`.
    SetStorageClass {
        class: String,
        policy: Option<Policy>,
    },
    /// The lifecycle worker's decision to re-encode a version into a
    /// mapped storage class (see `storage_classes::queue_transition`).
    QueueTransition {
        item: TransitionItem,
    },
    /// See `Proposal::Transition`.
    Transition {
        item: TransitionItem,
        old: Vec<ChunkId>,
        chunks: Vec<ChunkRecord>,
        at_ms: u64,
    },
}

/// Applies one command in `tx`; a refusal is `Err(MetaError::Refused)`.
pub(super) fn apply(tx: &mut Txn<'_, '_>, cmd: &Command) -> Result<Applied, MetaError> {
    use Command as C;
    match cmd {
        C::RegisterNode { node } => cluster::register_node(tx, node),
        C::SetNodeAdmin { node, admin } => cluster::set_node_admin(tx, *node, *admin),
        C::RemoveNode { node } => cluster::remove_node(tx, *node),
        C::RequestScrub => cluster::request_scrub(tx),
        C::CreateBucket {
            name,
            policy,
            at_ms,
        } => buckets::create_bucket(tx, name, *policy, *at_ms),
        C::DeleteBucket { name } => buckets::delete_bucket(tx, name),
        C::CommitObject {
            bucket,
            key,
            object,
            at_ms,
            condition,
        } => objects::commit_object(tx, bucket, key, object, *at_ms, condition),
        C::DeleteObject { bucket, key, at_ms } => Ok(Applied::Removed(versions::delete_current(
            tx, bucket, key, *at_ms,
        )?)),
        C::PurgeChunks { ids } => chunks::purge(tx, ids),
        C::ReportCorrupt { report } => healing::report_corrupt(tx, report),
        C::CommitRepair { chunk, moves } => healing::commit_repair(tx, *chunk, moves),
        C::CreateKey { key } => access::create_key(tx, key),
        C::DeleteKey { id } => access::delete_key(tx, id),
        C::SetGrant {
            bucket,
            key,
            permission,
        } => access::set_grant(tx, bucket, key, *permission),
        C::CreateUpload { upload } => multipart::create_upload(tx, upload),
        C::CommitPart {
            upload,
            number,
            part,
            at_ms,
        } => multipart::commit_part(tx, upload, *number, part, *at_ms),
        C::CompleteUpload {
            upload,
            parts,
            condition,
            checksum,
            at_ms,
        } => multipart::complete_upload(tx, upload, parts, condition, checksum.as_ref(), *at_ms),
        C::AbortUpload { upload, at_ms } => multipart::abort_upload(tx, upload, *at_ms),
        C::Rename {
            bucket,
            from,
            to,
            replace,
            keep_dir,
            at_ms,
        } => rename::rename(tx, bucket, from, to, *replace, keep_dir.as_deref(), *at_ms),
        C::PutDir {
            bucket,
            path,
            info,
            create,
        } => fsview::put_dir(tx, bucket, path, info, *create),
        C::RemoveDir {
            bucket,
            path,
            keep_dir,
            at_ms,
        } => fsview::remove_dir(tx, bucket, path, keep_dir.as_deref(), *at_ms),
        C::PatchObject {
            bucket,
            key,
            object,
            if_absent,
            at_ms,
        } => fsview::patch_object(tx, bucket, key, object, *if_absent, *at_ms),
        C::Unlink {
            bucket,
            key,
            keep_dir,
            at_ms,
        } => fsview::unlink(tx, bucket, key, keep_dir.as_deref(), *at_ms),
        C::SetObjectTags { bucket, key, tags } => tags::set_object_tags(tx, bucket, key, tags),
        C::SetBucketTags { bucket, tags } => tags::set_bucket_tags(tx, bucket, tags),
        C::SetVersioning { bucket, state } => versions::set_versioning(tx, bucket, *state),
        C::DeleteVersion {
            bucket,
            key,
            version,
            at_ms,
            bypass_governance,
        } => Ok(Applied::Removed(versions::delete_version(
            tx,
            (bucket, key, version),
            *at_ms,
            *bypass_governance,
        )?)),
        C::SetObjectLock {
            bucket,
            config,
            enable_versioning,
        } => object_lock::set_object_lock(tx, bucket, config, *enable_versioning),
        C::SetRetention {
            bucket,
            key,
            version,
            retention,
            bypass_governance,
            at_ms,
        } => object_lock::set_retention(
            tx,
            (bucket, key, version.as_deref()),
            *retention,
            *bypass_governance,
            *at_ms,
        ),
        C::SetLegalHold {
            bucket,
            key,
            version,
            on,
        } => object_lock::set_legal_hold(tx, (bucket, key, version.as_deref()), *on),
        C::SetLifecycle { bucket, config } => lifecycle::set_lifecycle(tx, bucket, config.as_ref()),
        C::SetLifecycleProgress { progress } => lifecycle::set_progress(tx, progress),
        C::SetStorageClass { class, policy } => {
            storage_classes::set_storage_class(tx, class, policy.as_ref())
        }
        C::QueueTransition { item } => storage_classes::queue_transition(tx, item),
        C::Transition {
            item,
            old,
            chunks,
            at_ms,
        } => storage_classes::transition(tx, item, old, chunks, *at_ms),
        C::Expire {
            bucket,
            key,
            version,
            mtime_ms,
            current,
            at_ms,
        } => lifecycle::expire(tx, (bucket, key, version), *mtime_ms, *current, *at_ms),
        C::SetVersionTags {
            bucket,
            key,
            version,
            tags,
        } => versions::set_version_tags(tx, bucket, key, version, tags),
        C::SetObjectAcl {
            bucket,
            key,
            version,
            acl,
        } => versions::set_object_acl(tx, (bucket, key, version.as_deref()), acl.as_ref()),
        C::SetBucketAccess { bucket, change } => {
            bucket_access::set_bucket_access(tx, bucket, change)
        }
        C::CreateAdminToken { hash, token } => admin_tokens::create_admin_token(tx, hash, token),
        C::DeleteAdminToken { hash } => admin_tokens::delete_admin_token(tx, hash),
        C::CreateVolume {
            name,
            size,
            policy,
            block_size,
            at_ms,
        } => volumes::create_volume(tx, name, *size, *policy, *block_size, *at_ms),
        C::ResizeVolume {
            name,
            size,
            allow_shrink,
            at_ms,
        } => volumes::resize_volume(tx, name, *size, *allow_shrink, *at_ms),
        C::DeleteVolume { name, at_ms } => volumes::delete_volume(tx, name, *at_ms),
        C::SnapshotVolume {
            name,
            snapshot,
            at_ms,
        } => volumes::snapshot_volume(tx, name, snapshot, *at_ms),
        C::DeleteSnapshot {
            name,
            snapshot,
            at_ms,
        } => volumes::delete_snapshot(tx, name, snapshot, *at_ms),
        C::CloneVolume {
            name,
            snapshot,
            new_name,
            at_ms,
        } => volumes::clone_volume(tx, name, snapshot, new_name, *at_ms),
        C::RollbackVolume {
            name,
            snapshot,
            at_ms,
        } => volumes::rollback_volume(tx, name, snapshot, *at_ms),
        C::AttachVolume {
            name,
            holder,
            epoch,
            force,
            at_ms,
        } => volumes::attach_volume(tx, name, holder, *epoch, *force, *at_ms),
        C::DetachVolume { name, epoch } => volumes::detach_volume(tx, name, *epoch),
        C::CommitVolumeWrites {
            name,
            epoch,
            chunks,
            writes,
            at_ms,
        } => volumes::commit_volume_writes(tx, name, *epoch, chunks, writes, *at_ms),
    }
}
