//! The metadata state machine. Every change is a `Command`, applied by
//! `apply` as one RocksDB write batch (with the applied-command counter), so a
//! command happens whole or not at all and the same sequence of commands gives
//! the same state on any replica. Commands carry their own timestamps; apply
//! never reads the clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tessera_proto::{
    AccessKey, BucketInfo, ChunkHealth, ChunkRecord, ChunkRef, CorruptReport, DirInfo, ErrorCode,
    ExpectedFragment, FragmentMove, FragmentState, Grant, ListEntry, Listing, NewObject, NodeAdmin,
    ObjectData, ObjectInfo, PartInfo, Permission, RemoteError, RepairItem, UploadInfo,
};
use tessera_types::{ChunkId, NodeId, Policy, validate_bucket_name, validate_key};

use crate::MetaError;
use crate::keys::{FragmentKey, NodeFragmentKey, ObjectKey};
use crate::store::{Batch, KeyCodec, Step, Store, Table};

mod fsview;

/// A storage node as the cluster map records it; liveness is not here (it is
/// soft state kept by the server from heartbeats).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub addr: String,
    pub zone: Option<String>,
    pub capacity: u64,
    pub joined_ms: u64,
}

/// A chunk no object refers to any more; its fragments may be deleted after
/// the safety delay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GarbageRecord {
    pub since_ms: u64,
}

pub mod tables {
    use super::*;
    pub const NODES: Table<NodeId, NodeRecord> = Table::new("nodes");
    pub const BUCKETS: Table<String, BucketInfo> = Table::new("buckets");
    pub const OBJECTS: Table<ObjectKey, ObjectInfo> = Table::new("objects");
    pub const CHUNKS: Table<ChunkId, ChunkRecord> = Table::new("chunks");
    pub const NODE_FRAGMENTS: Table<NodeFragmentKey, ()> = Table::new("node_fragments");
    pub const GARBAGE: Table<ChunkId, GarbageRecord> = Table::new("garbage");
    pub const CORRUPT: Table<u64, CorruptReport> = Table::new("corrupt");
    pub const COUNTERS: Table<String, u64> = Table::new("counters");
    /// Operator state of nodes that are not plainly active (absent = active).
    pub const NODE_ADMIN: Table<NodeId, NodeAdmin> = Table::new("node_admin");
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
    pub const ALL: &[&str] = &[
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
    ];
}
use tables::*;

/// Names of the counters kept beside the tables.
pub mod counter {
    pub const APPLIED: &str = "applied";
    pub const EPOCH: &str = "epoch";
    pub const BUCKETS: &str = "buckets";
    pub const OBJECTS: &str = "objects";
    pub const CHUNKS: &str = "chunks";
    pub const CORRUPT: &str = "corrupt";
    /// Chunk records waiting in the garbage table.
    pub const GARBAGE: &str = "garbage";
    pub const SCRUB_SEQ: &str = "scrub_seq";
    pub const REBUILT_FRAGMENTS: &str = "repair_rebuilt_fragments";
    pub const REBUILT_BYTES: &str = "repair_rebuilt_bytes";
    pub const MOVED_FRAGMENTS: &str = "repair_moved_fragments";
    pub const MOVED_BYTES: &str = "repair_moved_bytes";

    /// Fragments meta's records place on a node.
    pub fn node_fragments(node: tessera_types::NodeId) -> String {
        format!("node_fragments/{node}")
    }

    /// Bytes of those fragments.
    pub fn node_bytes(node: tessera_types::NodeId) -> String {
        format!("node_bytes/{node}")
    }
}

/// Most chunks one object may have: bounds the commit frame and the record.
pub const MAX_CHUNKS_PER_OBJECT: usize = 1 << 20;
/// Largest inline object meta accepts.
pub const MAX_INLINE: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    RegisterNode {
        node: NodeRecord,
    },
    CreateBucket {
        name: String,
        policy: Policy,
        at_ms: u64,
    },
    DeleteBucket {
        name: String,
    },
    CommitObject {
        bucket: String,
        key: String,
        object: NewObject,
        at_ms: u64,
        /// Only if no object has the key.
        if_absent: bool,
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
    CompleteUpload {
        upload: String,
        parts: Vec<(u32, String)>,
        at_ms: u64,
    },
    AbortUpload {
        upload: String,
        at_ms: u64,
    },
    /// See `MetaRequest::Rename`.
    Rename {
        bucket: String,
        from: String,
        to: String,
        replace: bool,
        keep_dir: Option<String>,
        at_ms: u64,
    },
    /// See `MetaRequest::PutDir`.
    PutDir {
        bucket: String,
        path: String,
        info: DirInfo,
        create: bool,
    },
    /// See `MetaRequest::RemoveDir`.
    RemoveDir {
        bucket: String,
        path: String,
        keep_dir: Option<String>,
        at_ms: u64,
    },
    /// See `MetaRequest::PatchObject`.
    PatchObject {
        bucket: String,
        key: String,
        object: NewObject,
        if_absent: bool,
        at_ms: u64,
    },
    /// See `MetaRequest::Unlink`.
    Unlink {
        bucket: String,
        key: String,
        keep_dir: Option<String>,
        at_ms: u64,
    },
}

/// Smallest part S3 accepts, except for the last one.
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Part numbers run from 1 to this.
pub const MAX_PART_NUMBER: u32 = 10_000;

fn part_key(upload: &str, number: u32) -> ObjectKey {
    ObjectKey::new(upload, &format!("{number:05}"))
}

/// Access key ids: what S3 clients put in the credential scope.
pub fn validate_key_id(id: &str) -> Result<(), String> {
    if (16..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(format!(
            "access key id {id:?} must be 16 to 128 letters and digits"
        ))
    }
}

/// What a fragment on a node is, for `StateMachine::assess`.
pub type NodeClasses = HashMap<NodeId, FragmentState>;

/// The redundancy of every live chunk, and the work that restores it.
#[derive(Debug, Clone, Default)]
pub struct Assessment {
    pub health: ChunkHealth,
    pub pending_fragments: u64,
    pub pending_bytes: u64,
    pub moving_fragments: u64,
    pub moving_bytes: u64,
    /// Repairable chunks, the fewest spare fragments first.
    pub work: Vec<RepairItem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Deleted { existed: bool },
    Renamed { objects: u64 },
}

/// Most objects one prefix rename moves (one write batch in meta).
pub const MAX_RENAME_OBJECTS: usize = 1_000_000;

fn refuse(code: ErrorCode, msg: impl Into<String>) -> MetaError {
    MetaError::Refused(RemoteError::new(code, msg))
}

pub struct StateMachine {
    store: Store,
    /// One writer at a time: commands read state, then write a batch.
    write: Mutex<()>,
}

impl StateMachine {
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        Ok(StateMachine {
            store: Store::open(dir, tables::ALL)?,
            write: Mutex::new(()),
        })
    }

    pub fn counter(&self, name: &str) -> Result<u64, MetaError> {
        Ok(self.store.get(COUNTERS, &name.to_string())?.unwrap_or(0))
    }

    pub fn apply(&self, cmd: &Command) -> Result<Outcome, MetaError> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = Counted {
            store: &self.store,
            batch: self.store.batch(),
            deltas: Default::default(),
        };
        let outcome = match cmd {
            Command::RegisterNode { node } => {
                batch.put(NODES, &node.id, node)?;
                batch.add(counter::EPOCH, 1)?;
                Outcome::Done
            }
            Command::CreateBucket {
                name,
                policy,
                at_ms,
            } => {
                validate_bucket_name(name)
                    .map_err(|e| refuse(ErrorCode::InvalidBucketName, e.to_string()))?;
                policy
                    .validate()
                    .map_err(|e| refuse(ErrorCode::InvalidPolicy, e.to_string()))?;
                if self.store.get(BUCKETS, name)?.is_some() {
                    return Err(refuse(
                        ErrorCode::BucketExists,
                        format!("bucket {name} already exists"),
                    ));
                }
                let info = BucketInfo {
                    name: name.clone(),
                    policy: *policy,
                    created_ms: *at_ms,
                };
                batch.put(BUCKETS, name, &info)?;
                batch.add(counter::BUCKETS, 1)?;
                Outcome::Done
            }
            Command::DeleteBucket { name } => {
                self.bucket(name)?;
                let mut empty = true;
                self.store
                    .scan(OBJECTS, &ObjectKey::bucket_prefix(name), |_, k, _| {
                        empty = k.bucket != *name;
                        Ok(Step::Stop)
                    })?;
                if !empty {
                    return Err(refuse(
                        ErrorCode::BucketNotEmpty,
                        format!("bucket {name} is not empty"),
                    ));
                }
                batch.delete(BUCKETS, name)?;
                batch.add(counter::BUCKETS, -1)?;
                self.drop_dirs(&mut batch, name)?;
                for g in self.grants(Some(name), None)? {
                    batch.delete(GRANTS, &ObjectKey::new(&g.bucket, &g.key))?;
                }
                Outcome::Deleted { existed: true }
            }
            Command::CommitObject {
                bucket,
                key,
                object,
                at_ms,
                if_absent,
            } => {
                self.bucket(bucket)?;
                validate_key(key).map_err(|e| refuse(ErrorCode::InvalidKey, e.to_string()))?;
                self.check_new_object(object)?;
                let okey = ObjectKey::new(bucket, key);
                if let Some(old) = self.store.get(OBJECTS, &okey)? {
                    if *if_absent {
                        return Err(refuse(
                            ErrorCode::PreconditionFailed,
                            format!("{bucket}/{key} exists"),
                        ));
                    }
                    batch.retire(&old, *at_ms)?;
                }
                batch.store_chunks(&object.chunks)?;
                batch.put(OBJECTS, &okey, &committed(key, object, *at_ms))?;
                batch.add(counter::OBJECTS, 1)?;
                Outcome::Done
            }
            Command::DeleteObject { bucket, key, at_ms } => Outcome::Deleted {
                existed: self.remove_object(&mut batch, bucket, key, *at_ms)?,
            },
            Command::ReportCorrupt { report } => {
                let seq = self.counter(counter::CORRUPT)? + 1;
                batch.put(CORRUPT, &seq, report)?;
                batch.add(counter::CORRUPT, 1)?;
                // Only a report about where the fragment still is becomes
                // repair work; a late one about a replaced copy does not.
                let current = self.store.get(CHUNKS, &report.chunk)?.and_then(|c| {
                    c.fragments
                        .get(report.index as usize)
                        .map(|f| f.node == report.node)
                });
                if current == Some(true) {
                    let key = FragmentKey {
                        chunk: report.chunk,
                        index: report.index,
                    };
                    batch.put(DAMAGED, &key, report)?;
                }
                Outcome::Done
            }
            Command::CommitRepair { chunk, moves } => {
                self.commit_repair(&mut batch, *chunk, moves)?;
                Outcome::Done
            }
            Command::SetNodeAdmin { node, admin } => {
                if self.store.get(NODES, node)?.is_none() {
                    return Err(refuse(ErrorCode::NotFound, format!("no node {node}")));
                }
                if *admin == NodeAdmin::Removed {
                    return Err(refuse(
                        ErrorCode::BadRequest,
                        "nodes are removed with RemoveNode",
                    ));
                }
                batch.put(NODE_ADMIN, node, admin)?;
                batch.add(counter::EPOCH, 1)?;
                Outcome::Done
            }
            Command::RemoveNode { node } => {
                if self.store.get(NODES, node)?.is_none() {
                    return Err(refuse(ErrorCode::NotFound, format!("no node {node}")));
                }
                let held = self.node_fragments(*node, None, 1)?.0.len();
                if held > 0 {
                    let n = self.counter(&counter::node_fragments(*node))?.max(1);
                    return Err(refuse(
                        ErrorCode::Conflict,
                        format!(
                            "node {node} still holds {n} fragments: drain it first (tessera node drain {node})"
                        ),
                    ));
                }
                batch.delete(NODES, node)?;
                batch.put(NODE_ADMIN, node, &NodeAdmin::Removed)?;
                batch.add(counter::EPOCH, 1)?;
                Outcome::Done
            }
            Command::PurgeChunks { ids } => {
                for id in ids {
                    if self.store.get(GARBAGE, id)?.is_none() {
                        continue;
                    }
                    batch.delete(GARBAGE, id)?;
                    batch.add(counter::GARBAGE, -1)?;
                    let Some(rec) = self.store.get(CHUNKS, id)? else {
                        continue;
                    };
                    batch.delete(CHUNKS, id)?;
                    batch.add(counter::CHUNKS, -1)?;
                    for (i, f) in rec.fragments.iter().enumerate() {
                        let index = i as u8;
                        batch.delete(
                            NODE_FRAGMENTS,
                            &NodeFragmentKey {
                                node: f.node,
                                chunk: *id,
                                index,
                            },
                        )?;
                        batch.delete(DAMAGED, &FragmentKey { chunk: *id, index })?;
                        batch.add_node(f.node, -1, -(rec.fragment_len as i64))?;
                    }
                }
                Outcome::Done
            }
            Command::RequestScrub => {
                batch.add(counter::SCRUB_SEQ, 1)?;
                Outcome::Done
            }
            Command::CreateKey { key } => {
                validate_key_id(&key.id).map_err(|e| refuse(ErrorCode::BadRequest, e))?;
                if key.secret.len() < 16
                    || key.secret.len() > 128
                    || key.secret.contains(char::is_whitespace)
                {
                    return Err(refuse(
                        ErrorCode::BadRequest,
                        "a secret key must be 16 to 128 characters without spaces",
                    ));
                }
                if self.store.get(KEYS, &key.id)?.is_some() {
                    return Err(refuse(
                        ErrorCode::Conflict,
                        format!("access key {} already exists", key.id),
                    ));
                }
                batch.put(KEYS, &key.id, key)?;
                Outcome::Done
            }
            Command::DeleteKey { id } => {
                let existed = self.store.get(KEYS, id)?.is_some();
                batch.delete(KEYS, id)?;
                for g in self.grants(None, Some(id))? {
                    batch.delete(GRANTS, &ObjectKey::new(&g.bucket, &g.key))?;
                }
                Outcome::Deleted { existed }
            }
            Command::CreateUpload { upload } => {
                self.bucket(&upload.bucket)?;
                validate_key(&upload.key)
                    .map_err(|e| refuse(ErrorCode::InvalidKey, e.to_string()))?;
                batch.put(UPLOADS, &upload.id, upload)?;
                Outcome::Done
            }
            Command::CommitPart {
                upload,
                number,
                part,
                at_ms,
            } => {
                self.upload(upload)?;
                if !(1..=MAX_PART_NUMBER).contains(number) {
                    return Err(refuse(
                        ErrorCode::BadRequest,
                        format!("part numbers run from 1 to {MAX_PART_NUMBER}"),
                    ));
                }
                let ObjectData::Chunks(refs) = &part.data else {
                    return Err(refuse(ErrorCode::BadRequest, "parts are stored as chunks"));
                };
                self.check_new_object(part)?;
                let pkey = part_key(upload, *number);
                if let Some(old) = self.store.get(PARTS, &pkey)? {
                    batch.retire_chunks(&old.chunks, *at_ms)?;
                }
                batch.store_chunks(&part.chunks)?;
                let info = PartInfo {
                    number: *number,
                    size: part.size,
                    etag: part.etag.clone(),
                    mtime_ms: *at_ms,
                    chunks: refs.clone(),
                };
                batch.put(PARTS, &pkey, &info)?;
                Outcome::Done
            }
            Command::CompleteUpload {
                upload,
                parts,
                at_ms,
            } => {
                let info = self.upload(upload)?;
                let stored = self.parts(upload)?;
                if parts.is_empty() {
                    return Err(refuse(ErrorCode::InvalidPart, "a completion needs parts"));
                }
                let mut refs: Vec<ChunkRef> = Vec::new();
                let mut md5s = Vec::new();
                let mut size = 0u64;
                let mut sizes = Vec::with_capacity(parts.len());
                let mut last = 0;
                for (i, (number, etag)) in parts.iter().enumerate() {
                    if *number <= last {
                        return Err(refuse(
                            ErrorCode::InvalidPart,
                            "parts must be listed in ascending order",
                        ));
                    }
                    last = *number;
                    let etag = etag.trim_matches('"');
                    let Some(p) = stored
                        .iter()
                        .find(|p| p.number == *number && p.etag == etag)
                    else {
                        return Err(refuse(
                            ErrorCode::InvalidPart,
                            format!("part {number} with ETag {etag} was not uploaded"),
                        ));
                    };
                    if i + 1 < parts.len() && p.size < MIN_PART_SIZE {
                        return Err(refuse(
                            ErrorCode::EntityTooSmall,
                            format!(
                                "part {number} is {} bytes; all but the last must be at least 5 MiB",
                                p.size
                            ),
                        ));
                    }
                    size += p.size;
                    sizes.push(p.size);
                    refs.extend(p.chunks.iter().copied());
                    md5s.push(p.etag.clone());
                }
                if refs.len() > MAX_CHUNKS_PER_OBJECT {
                    return Err(refuse(ErrorCode::TooLarge, "too many chunks in one object"));
                }
                for p in &stored {
                    if !parts.iter().any(|(n, _)| *n == p.number) {
                        batch.retire_chunks(&p.chunks, *at_ms)?;
                    }
                    batch.delete(PARTS, &part_key(upload, p.number))?;
                }
                batch.delete(UPLOADS, upload)?;
                let okey = ObjectKey::new(&info.bucket, &info.key);
                if let Some(old) = self.store.get(OBJECTS, &okey)? {
                    batch.retire(&old, *at_ms)?;
                }
                let object = ObjectInfo {
                    key: info.key.clone(),
                    size,
                    etag: multipart_etag(&md5s),
                    content_type: info.content_type.clone(),
                    user_meta: info.user_meta.clone(),
                    headers: info.headers.clone(),
                    mtime_ms: *at_ms,
                    data: ObjectData::Chunks(refs),
                    parts: sizes,
                };
                batch.put(OBJECTS, &okey, &object)?;
                batch.add(counter::OBJECTS, 1)?;
                Outcome::Done
            }
            Command::AbortUpload { upload, at_ms } => {
                self.upload(upload)?;
                for p in self.parts(upload)? {
                    batch.retire_chunks(&p.chunks, *at_ms)?;
                    batch.delete(PARTS, &part_key(upload, p.number))?;
                }
                batch.delete(UPLOADS, upload)?;
                Outcome::Deleted { existed: true }
            }
            Command::Rename {
                bucket,
                from,
                to,
                replace,
                keep_dir,
                at_ms,
            } => {
                self.bucket(bucket)?;
                validate_key(to).map_err(|e| refuse(ErrorCode::InvalidKey, e.to_string()))?;
                self.keep_dir(&mut batch, bucket, keep_dir.as_ref(), *at_ms)?;
                if from.ends_with('/') || to.ends_with('/') {
                    let (moves, dirs) = self.prefix_moves(bucket, from, to, *replace)?;
                    for (old, info) in dirs {
                        let new_key = format!("{to}{}", &old[from.len()..]);
                        batch.delete(DIRS, &ObjectKey::new(bucket, &old))?;
                        batch.put(DIRS, &ObjectKey::new(bucket, &new_key), &info)?;
                    }
                    for (old, mut info) in moves.iter().cloned() {
                        let new_key = format!("{to}{}", &old[from.len()..]);
                        validate_key(&new_key)
                            .map_err(|e| refuse(ErrorCode::InvalidKey, e.to_string()))?;
                        batch.delete(OBJECTS, &ObjectKey::new(bucket, &old))?;
                        info.key = new_key.clone();
                        batch.put(OBJECTS, &ObjectKey::new(bucket, &new_key), &info)?;
                    }
                    Outcome::Renamed {
                        objects: moves.len() as u64,
                    }
                } else {
                    let okey = ObjectKey::new(bucket, from);
                    let Some(mut info) = self.store.get(OBJECTS, &okey)? else {
                        return Err(refuse(
                            ErrorCode::NoSuchKey,
                            format!("{bucket}/{from} does not exist"),
                        ));
                    };
                    if from == to {
                        return Ok(Outcome::Renamed { objects: 1 });
                    }
                    let tkey = ObjectKey::new(bucket, to);
                    if let Some(old) = self.store.get(OBJECTS, &tkey)? {
                        if !*replace {
                            return Err(refuse(
                                ErrorCode::PreconditionFailed,
                                format!("{bucket}/{to} exists"),
                            ));
                        }
                        batch.retire(&old, *at_ms)?;
                    }
                    batch.delete(OBJECTS, &okey)?;
                    info.key = to.clone();
                    batch.put(OBJECTS, &tkey, &info)?;
                    Outcome::Renamed { objects: 1 }
                }
            }
            Command::PutDir {
                bucket,
                path,
                info,
                create,
            } => {
                self.put_dir(&mut batch, bucket, path, info, *create)?;
                Outcome::Done
            }
            Command::RemoveDir {
                bucket,
                path,
                keep_dir,
                at_ms,
            } => {
                self.remove_dir(&mut batch, bucket, path)?;
                if keep_dir.as_ref() != Some(path) {
                    self.keep_dir(&mut batch, bucket, keep_dir.as_ref(), *at_ms)?;
                }
                Outcome::Deleted { existed: true }
            }
            Command::PatchObject {
                bucket,
                key,
                object,
                if_absent,
                at_ms,
            } => {
                self.patch_object(&mut batch, bucket, key, object, *if_absent, *at_ms)?;
                Outcome::Done
            }
            Command::Unlink {
                bucket,
                key,
                keep_dir,
                at_ms,
            } => {
                if !self.remove_object(&mut batch, bucket, key, *at_ms)? {
                    return Err(refuse(
                        ErrorCode::NoSuchKey,
                        format!("no such key: {bucket}/{key}"),
                    ));
                }
                self.keep_dir(&mut batch, bucket, keep_dir.as_ref(), *at_ms)?;
                Outcome::Deleted { existed: true }
            }
            Command::SetGrant {
                bucket,
                key,
                permission,
            } => {
                self.bucket(bucket)?;
                if self.store.get(KEYS, key)?.is_none() {
                    return Err(refuse(ErrorCode::NotFound, format!("no access key {key}")));
                }
                let gkey = ObjectKey::new(bucket, key);
                match permission {
                    Some(p) => batch.put(GRANTS, &gkey, p)?,
                    None => batch.delete(GRANTS, &gkey)?,
                }
                Outcome::Done
            }
        };
        batch.add(counter::APPLIED, 1)?;
        batch.commit()?;
        Ok(outcome)
    }

    fn commit_repair(
        &self,
        batch: &mut Counted<'_>,
        chunk: ChunkId,
        moves: &[FragmentMove],
    ) -> Result<(), MetaError> {
        let conflict = |m: String| refuse(ErrorCode::Conflict, m);
        let Some(mut rec) = self.store.get(CHUNKS, &chunk)? else {
            return Err(conflict(format!("chunk {chunk} no longer exists")));
        };
        if self.store.get(GARBAGE, &chunk)?.is_some() {
            return Err(conflict(format!("chunk {chunk} was deleted")));
        }
        if moves.is_empty() {
            return Err(refuse(ErrorCode::BadRequest, "a repair without moves"));
        }
        let mut holders: HashSet<NodeId> = rec.fragments.iter().map(|f| f.node).collect();
        let len = rec.fragment_len as i64;
        for m in moves {
            let Some(f) = rec.fragments.get_mut(m.index as usize) else {
                return Err(refuse(
                    ErrorCode::BadRequest,
                    format!("chunk {chunk} has no fragment {}", m.index),
                ));
            };
            if f.node != m.from {
                return Err(conflict(format!(
                    "fragment {} of chunk {chunk} is on node {}, not {}",
                    m.index, f.node, m.from
                )));
            }
            if self.store.get(NODES, &m.to)?.is_none() {
                return Err(refuse(
                    ErrorCode::BadRequest,
                    format!("unknown node {}", m.to),
                ));
            }
            if self.node_admin(m.to)? != NodeAdmin::Active {
                return Err(conflict(format!("node {} takes no new fragments", m.to)));
            }
            // A rotten copy on a healthy node may be rewritten in place.
            if m.to != m.from {
                if !holders.insert(m.to) {
                    return Err(refuse(
                        ErrorCode::BadRequest,
                        format!("node {} already holds a fragment of chunk {chunk}", m.to),
                    ));
                }
                holders.remove(&m.from);
                f.node = m.to;
                let key = |node| NodeFragmentKey {
                    node,
                    chunk,
                    index: m.index,
                };
                batch.delete(NODE_FRAGMENTS, &key(m.from))?;
                batch.put(NODE_FRAGMENTS, &key(m.to), &())?;
                batch.add_node(m.from, -1, -len)?;
                batch.add_node(m.to, 1, len)?;
            }
            batch.delete(
                DAMAGED,
                &FragmentKey {
                    chunk,
                    index: m.index,
                },
            )?;
            if m.rebuilt {
                batch.add(counter::REBUILT_FRAGMENTS, 1)?;
                batch.add(counter::REBUILT_BYTES, len)?;
            } else {
                batch.add(counter::MOVED_FRAGMENTS, 1)?;
                batch.add(counter::MOVED_BYTES, len)?;
            }
        }
        batch.put(CHUNKS, &chunk, &rec)
    }

    /// A commit must describe exactly the bytes it claims, on distinct known
    /// nodes, with fresh chunk ids: anything else is refused before it is
    /// written.
    /// A new object keeps nothing of an older version: every chunk
    /// reference comes with its record, in the same order; the rest is
    /// what any commit is checked for.
    fn check_new_object(&self, o: &NewObject) -> Result<(), MetaError> {
        if let ObjectData::Chunks(refs) = &o.data
            && refs.len() <= MAX_CHUNKS_PER_OBJECT
            && (refs.len() != o.chunks.len()
                || refs.iter().zip(&o.chunks).any(|(r, c)| r.id != c.id))
        {
            return Err(refuse(
                ErrorCode::BadRequest,
                "chunk references and chunk records differ",
            ));
        }
        self.check_patch(o, None).map(|_| ())
    }

    /// A new chunk's record: a fresh id, a valid policy, one fragment per
    /// slot, each on a distinct known node.
    fn check_chunk_record(&self, c: &ChunkRecord) -> Result<(), MetaError> {
        let bad = |m: String| refuse(ErrorCode::BadRequest, m);
        if self.store.get(CHUNKS, &c.id)?.is_some() {
            return Err(bad(format!("chunk id {} is already in use", c.id)));
        }
        c.policy
            .validate()
            .map_err(|e| refuse(ErrorCode::InvalidPolicy, e.to_string()))?;
        if c.fragments.len() != c.policy.fragments() {
            return Err(bad(format!(
                "chunk {} has {} fragments, {} needs {}",
                c.id,
                c.fragments.len(),
                c.policy,
                c.policy.fragments()
            )));
        }
        let mut nodes = HashSet::new();
        for f in &c.fragments {
            if !nodes.insert(f.node) {
                return Err(bad(format!(
                    "chunk {} places two fragments on node {}",
                    c.id, f.node
                )));
            }
            if self.store.get(NODES, &f.node)?.is_none() {
                return Err(bad(format!("chunk {} names unknown node {}", c.id, f.node)));
            }
        }
        Ok(())
    }

    /// Deletes an object, its chunks to garbage; whether it existed.
    fn remove_object(
        &self,
        batch: &mut Counted<'_>,
        bucket: &str,
        key: &str,
        at_ms: u64,
    ) -> Result<bool, MetaError> {
        self.bucket(bucket)?;
        let okey = ObjectKey::new(bucket, key);
        let Some(old) = self.store.get(OBJECTS, &okey)? else {
            return Ok(false);
        };
        batch.retire(&old, at_ms)?;
        batch.delete(OBJECTS, &okey)?;
        Ok(true)
    }

    // ---- queries: read-only, never part of a command ----

    pub fn bucket(&self, name: &str) -> Result<BucketInfo, MetaError> {
        self.store
            .get(BUCKETS, &name.to_string())?
            .ok_or_else(|| refuse(ErrorCode::NoSuchBucket, format!("no such bucket: {name}")))
    }

    pub fn buckets(&self) -> Result<Vec<BucketInfo>, MetaError> {
        let mut out = Vec::new();
        self.store.scan(BUCKETS, &[], |_, _, v| {
            out.push(v);
            Ok(Step::Continue)
        })?;
        Ok(out)
    }

    pub fn nodes(&self) -> Result<Vec<NodeRecord>, MetaError> {
        let mut out = Vec::new();
        self.store.scan(NODES, &[], |_, _, v| {
            out.push(v);
            Ok(Step::Continue)
        })?;
        Ok(out)
    }

    pub fn node(&self, id: NodeId) -> Result<Option<NodeRecord>, MetaError> {
        self.store.get(NODES, &id)
    }

    pub fn object(&self, bucket: &str, key: &str) -> Result<ObjectInfo, MetaError> {
        self.bucket(bucket)?;
        self.store
            .get(OBJECTS, &ObjectKey::new(bucket, key))?
            .ok_or_else(|| refuse(ErrorCode::NoSuchKey, format!("no such key: {bucket}/{key}")))
    }

    pub fn chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkRecord>, MetaError> {
        ids.iter()
            .map(|id| {
                self.store
                    .get(CHUNKS, id)?
                    .ok_or_else(|| refuse(ErrorCode::NotFound, format!("no chunk record {id}")))
            })
            .collect()
    }

    pub fn upload(&self, id: &str) -> Result<UploadInfo, MetaError> {
        self.store
            .get(UPLOADS, &id.to_string())?
            .ok_or_else(|| refuse(ErrorCode::NoSuchUpload, format!("no such upload: {id}")))
    }

    pub fn part(&self, upload: &str, number: u32) -> Result<Option<PartInfo>, MetaError> {
        self.store.get(PARTS, &part_key(upload, number))
    }

    /// An upload's parts in part-number order.
    pub fn parts(&self, upload: &str) -> Result<Vec<PartInfo>, MetaError> {
        let mut out = Vec::new();
        self.store.scan(
            PARTS,
            &ObjectKey::bucket_prefix(upload),
            |_, k: ObjectKey, p| {
                if k.bucket != upload {
                    return Ok(Step::Stop);
                }
                out.push(p);
                Ok(Step::Continue)
            },
        )?;
        Ok(out)
    }

    /// Uploads in progress, of one bucket or (with `None`) all.
    pub fn uploads(&self, bucket: Option<&str>) -> Result<Vec<UploadInfo>, MetaError> {
        let mut out = Vec::new();
        self.store.scan(UPLOADS, &[], |_, _, u: UploadInfo| {
            if bucket.is_none_or(|b| b == u.bucket) {
                out.push(u);
            }
            Ok(Step::Continue)
        })?;
        Ok(out)
    }

    pub fn access_key(&self, id: &str) -> Result<AccessKey, MetaError> {
        self.store
            .get(KEYS, &id.to_string())?
            .ok_or_else(|| refuse(ErrorCode::NotFound, format!("no access key {id}")))
    }

    /// Every key, secrets blanked.
    pub fn access_keys(&self) -> Result<Vec<AccessKey>, MetaError> {
        let mut out = Vec::new();
        self.store.scan(KEYS, &[], |_, _, mut k: AccessKey| {
            k.secret.clear();
            out.push(k);
            Ok(Step::Continue)
        })?;
        Ok(out)
    }

    /// Grants on `bucket` and/or to `key` (all when both are `None`).
    pub fn grants(&self, bucket: Option<&str>, key: Option<&str>) -> Result<Vec<Grant>, MetaError> {
        let start = bucket.map(ObjectKey::bucket_prefix).unwrap_or_default();
        let mut out = Vec::new();
        self.store
            .scan(GRANTS, &start, |_, k: ObjectKey, permission| {
                if bucket.is_some_and(|b| b != k.bucket) {
                    return Ok(Step::Stop);
                }
                if key.is_none_or(|id| id == k.key) {
                    out.push(Grant {
                        bucket: k.bucket,
                        key: k.key,
                        permission,
                    });
                }
                Ok(Step::Continue)
            })?;
        Ok(out)
    }

    pub fn node_admin(&self, id: NodeId) -> Result<NodeAdmin, MetaError> {
        Ok(self.store.get(NODE_ADMIN, &id)?.unwrap_or_default())
    }

    /// The fragments the records place on `node`, after `after`, with
    /// whether more follow.
    pub fn node_fragments(
        &self,
        node: NodeId,
        after: Option<(ChunkId, u8)>,
        limit: usize,
    ) -> Result<(Vec<ExpectedFragment>, bool), MetaError> {
        let mut start = node.encode();
        if let Some((chunk, index)) = after {
            start = NodeFragmentKey { node, chunk, index }.encode();
            start.push(0); // strictly after
        }
        let mut keys = Vec::new();
        let mut more = false;
        self.store
            .scan(NODE_FRAGMENTS, &start, |_, k: NodeFragmentKey, ()| {
                if k.node != node {
                    return Ok(Step::Stop);
                }
                if keys.len() == limit {
                    more = true;
                    return Ok(Step::Stop);
                }
                keys.push(k);
                Ok(Step::Continue)
            })?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            // An index entry without its record would be a bug; skip it
            // rather than fail a whole scrub.
            if let Some(rec) = self.store.get(CHUNKS, &k.chunk)?
                && let Some(f) = rec.fragments.get(k.index as usize)
            {
                out.push(ExpectedFragment {
                    chunk: k.chunk,
                    index: k.index,
                    len: rec.fragment_len,
                    hash: f.hash,
                });
            }
        }
        Ok((out, more))
    }

    /// Of `items` found on `node`, those no record places there.
    pub fn unknown_fragments(
        &self,
        node: NodeId,
        items: &[(ChunkId, u8)],
    ) -> Result<Vec<(ChunkId, u8)>, MetaError> {
        let mut out = Vec::new();
        for &(chunk, index) in items {
            let key = NodeFragmentKey { node, chunk, index };
            if self.store.get(NODE_FRAGMENTS, &key)?.is_none() {
                out.push((chunk, index));
            }
        }
        Ok(out)
    }

    /// Live (not garbage) chunk records in id order after `after`.
    pub fn scan_chunks(
        &self,
        after: Option<ChunkId>,
        limit: usize,
    ) -> Result<Vec<ChunkRecord>, MetaError> {
        let mut start = Vec::new();
        if let Some(a) = after {
            start = a.encode();
            start.push(0);
        }
        let mut out = Vec::new();
        let mut ids = Vec::new();
        self.store.scan(CHUNKS, &start, |_, id: ChunkId, rec| {
            if out.len() == limit {
                return Ok(Step::Stop);
            }
            ids.push(id);
            out.push(rec);
            Ok(Step::Continue)
        })?;
        let mut live = Vec::with_capacity(out.len());
        for rec in out {
            if self.store.get(GARBAGE, &rec.id)?.is_none() {
                live.push(rec);
            }
        }
        // A page of only garbage still moves the caller on: it resumes
        // after the last id seen, so hand back that id's record if needed.
        if live.is_empty()
            && let Some(last) = ids.last()
            && let Some(rec) = self.store.get(CHUNKS, last)?
        {
            live.push(rec);
        }
        Ok(live)
    }

    /// Garbage chunks that became garbage before `cutoff_ms`.
    pub fn garbage_before(&self, cutoff_ms: u64, limit: usize) -> Result<Vec<ChunkId>, MetaError> {
        let mut out = Vec::new();
        self.store
            .scan(GARBAGE, &[], |_, id: ChunkId, g: GarbageRecord| {
                if out.len() == limit {
                    return Ok(Step::Stop);
                }
                if g.since_ms < cutoff_ms {
                    out.push(id);
                }
                Ok(Step::Continue)
            })?;
        Ok(out)
    }

    /// Looks at every chunk with a fragment on a node that is not plainly
    /// up and active (`classes`), or reported damaged: counts the live
    /// chunks by redundancy and lists what repair can do, the chunks with
    /// the fewest spare fragments first. Costs time in proportion to the
    /// affected fragments, not to all chunks.
    pub fn assess(&self, classes: &NodeClasses, limit: usize) -> Result<Assessment, MetaError> {
        let mut damaged: HashMap<ChunkId, Vec<u8>> = HashMap::new();
        self.store
            .scan(DAMAGED, &[], |_, k: FragmentKey, _r: CorruptReport| {
                damaged.entry(k.chunk).or_default().push(k.index);
                Ok(Step::Continue)
            })?;
        let mut affected: HashSet<ChunkId> = damaged.keys().copied().collect();
        for (node, class) in classes {
            if *class == FragmentState::Ok {
                continue;
            }
            self.store.scan(
                NODE_FRAGMENTS,
                &node.encode(),
                |_, k: NodeFragmentKey, ()| {
                    if k.node != *node {
                        return Ok(Step::Stop);
                    }
                    affected.insert(k.chunk);
                    Ok(Step::Continue)
                },
            )?;
        }
        let mut a = Assessment::default();
        let mut work: Vec<((i64, bool, ChunkId), RepairItem)> = Vec::new();
        let mut unhealthy = 0u64;
        for id in affected {
            if self.store.get(GARBAGE, &id)?.is_some() {
                continue;
            }
            let Some(record) = self.store.get(CHUNKS, &id)? else {
                continue;
            };
            let bad = damaged.get(&id);
            let states: Vec<FragmentState> = record
                .fragments
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    if bad.is_some_and(|b| b.contains(&(i as u8))) {
                        FragmentState::Lost
                    } else {
                        classes.get(&f.node).copied().unwrap_or(FragmentState::Ok)
                    }
                })
                .collect();
            let count = |s| states.iter().filter(|&&x| x == s).count() as u64;
            let (lost, down, moving) = (
                count(FragmentState::Lost),
                count(FragmentState::Down),
                count(FragmentState::Move),
            );
            let available = states.len() as i64 - (lost + down) as i64;
            let spare = available - record.policy.required() as i64;
            if lost + down == 0 {
                if moving > 0 {
                    a.health.misplaced += 1;
                }
            } else {
                unhealthy += 1;
                match spare {
                    s if s < 0 => a.health.lost += 1,
                    0 => a.health.at_risk += 1,
                    _ => a.health.degraded += 1,
                }
            }
            if spare < 0 || lost + moving == 0 {
                continue;
            }
            a.pending_fragments += lost;
            a.pending_bytes += lost * record.fragment_len;
            a.moving_fragments += moving;
            a.moving_bytes += moving * record.fragment_len;
            work.push(((spare, lost == 0, id), RepairItem { record, states }));
        }
        let total = self
            .counter(counter::CHUNKS)?
            .saturating_sub(self.counter(counter::GARBAGE)?);
        a.health.total = total;
        a.health.healthy = total.saturating_sub(unhealthy);
        work.sort_by_key(|x| x.0);
        a.work = work.into_iter().take(limit).map(|(_, w)| w).collect();
        Ok(a)
    }

    pub fn recent_corrupt(&self, limit: usize) -> Result<Vec<CorruptReport>, MetaError> {
        Ok(self
            .store
            .scan_rev(CORRUPT, limit)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Lists a bucket in key order as S3 does: keys under `prefix` after
    /// `start_after`, with keys that share a prefix up to the next
    /// `delimiter` rolled into one common prefix.
    /// The objects and directory entries a prefix rename from `from` to
    /// `to` moves, after its checks: both are prefixes (end in `/`), `to` is
    /// not inside `from`, nothing exists under `to` (an entry for `to`
    /// itself only with `replace`; the move overwrites it), something exists
    /// under `from`.
    #[allow(clippy::type_complexity)]
    fn prefix_moves(
        &self,
        bucket: &str,
        from: &str,
        to: &str,
        replace: bool,
    ) -> Result<(Vec<(String, ObjectInfo)>, Vec<(String, DirInfo)>), MetaError> {
        if !(from.ends_with('/') && to.ends_with('/')) {
            return Err(refuse(
                ErrorCode::BadRequest,
                "a prefix rename names two prefixes ending in '/'",
            ));
        }
        if to.starts_with(from) {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!("cannot move {from} into itself ({to})"),
            ));
        }
        let target = self.occupancy(bucket, to)?;
        if !target.empty() {
            return Err(refuse(
                ErrorCode::NotEmpty,
                format!("{bucket}/{to} is not empty"),
            ));
        }
        if target.entry && !replace {
            return Err(refuse(
                ErrorCode::PreconditionFailed,
                format!("directory {bucket}/{to} exists"),
            ));
        }
        let mut moves = Vec::new();
        let mut too_many = false;
        self.store.scan(
            OBJECTS,
            &ObjectKey::new(bucket, from).encode(),
            |_, k, v| {
                if k.bucket != bucket || !k.key.starts_with(from) {
                    return Ok(Step::Stop);
                }
                if moves.len() == MAX_RENAME_OBJECTS {
                    too_many = true;
                    return Ok(Step::Stop);
                }
                moves.push((k.key, v));
                Ok(Step::Continue)
            },
        )?;
        if too_many {
            return Err(refuse(
                ErrorCode::TooLarge,
                format!("a rename moves at most {MAX_RENAME_OBJECTS} objects"),
            ));
        }
        let dirs = self.dir_entries_under(bucket, from)?;
        if moves.is_empty() && dirs.is_empty() {
            return Err(refuse(
                ErrorCode::NoSuchKey,
                format!("nothing under {bucket}/{from}"),
            ));
        }
        if moves.len() + dirs.len() > MAX_RENAME_OBJECTS {
            return Err(refuse(
                ErrorCode::TooLarge,
                format!("a rename moves at most {MAX_RENAME_OBJECTS} names"),
            ));
        }
        Ok((moves, dirs))
    }

    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        max_keys: usize,
    ) -> Result<Listing, MetaError> {
        self.bucket(bucket)?;
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let start_after = start_after.unwrap_or("");
        let mut start = ObjectKey::new(bucket, prefix).encode();
        if start_after > prefix {
            start = ObjectKey::new(bucket, start_after).encode();
            start.push(0); // strictly after
        }
        let mut entries: Vec<ListEntry> = Vec::new();
        let mut truncated = false;
        self.store.scan(OBJECTS, &start, |_, k, v| {
            if k.bucket != bucket || !k.key.starts_with(prefix) {
                return Ok(Step::Stop);
            }
            if entries.len() == max_keys {
                truncated = true;
                return Ok(Step::Stop);
            }
            if let Some(d) = delimiter
                && let Some(pos) = k.key[prefix.len()..].find(d)
            {
                let common = &k.key[..prefix.len() + pos + d.len()];
                if common > start_after {
                    entries.push(ListEntry::CommonPrefix(common.to_string()));
                }
                // Skip every key under this prefix: 0xff never occurs in UTF-8.
                let mut next = ObjectKey::new(bucket, common).encode();
                next.push(0xff);
                return Ok(Step::Seek(next));
            }
            entries.push(ListEntry::Object {
                key: k.key,
                size: v.size,
                etag: v.etag,
                mtime_ms: v.mtime_ms,
            });
            Ok(Step::Continue)
        })?;
        let next = if truncated {
            entries.last().map(|e| match e {
                ListEntry::Object { key, .. } => key.clone(),
                ListEntry::CommonPrefix(p) => p.clone(),
            })
        } else {
            None
        };
        Ok(Listing { entries, next })
    }
}

/// The stored form of an object a writer committed at `at_ms`.
fn committed(key: &str, o: &NewObject, at_ms: u64) -> ObjectInfo {
    ObjectInfo {
        key: key.to_string(),
        size: o.size,
        etag: o.etag.clone(),
        content_type: o.content_type.clone(),
        user_meta: o.user_meta.clone(),
        headers: o.headers.clone(),
        mtime_ms: at_ms,
        data: o.data.clone(),
        parts: Vec::new(),
    }
}

/// S3's multipart ETag: the MD5 of the parts' binary MD5s, then "-N".
pub fn multipart_etag(part_md5s: &[String]) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    for e in part_md5s {
        h.update(hex::decode(e).unwrap_or_default());
    }
    format!("{}-{}", hex::encode(h.finalize()), part_md5s.len())
}

/// A write batch that also keeps the counters in step with it.
struct Counted<'a> {
    store: &'a Store,
    batch: Batch<'a>,
    deltas: BTreeMap<String, i64>,
}

impl Counted<'_> {
    fn put<K: KeyCodec, V: Serialize>(
        &mut self,
        t: Table<K, V>,
        k: &K,
        v: &V,
    ) -> Result<(), MetaError> {
        self.batch.put(t, k, v)
    }

    fn delete<K: KeyCodec, V>(&mut self, t: Table<K, V>, k: &K) -> Result<(), MetaError> {
        self.batch.delete(t, k)
    }

    fn add(&mut self, name: &str, delta: i64) -> Result<(), MetaError> {
        *self.deltas.entry(name.to_string()).or_default() += delta;
        Ok(())
    }

    /// Keeps a node's fragment and byte counts in step.
    fn add_node(&mut self, node: NodeId, fragments: i64, bytes: i64) -> Result<(), MetaError> {
        self.add(&counter::node_fragments(node), fragments)?;
        self.add(&counter::node_bytes(node), bytes)
    }

    fn commit(mut self) -> Result<(), MetaError> {
        for (name, delta) in std::mem::take(&mut self.deltas) {
            let now = self.store.get(COUNTERS, &name)?.unwrap_or(0);
            self.batch
                .put(COUNTERS, &name, &now.saturating_add_signed(delta))?;
        }
        self.batch.commit()
    }

    /// Hands an object's chunks to garbage collection. Chunk records and the
    /// node index stay until their fragments are gone from the nodes.
    fn retire(&mut self, old: &ObjectInfo, at_ms: u64) -> Result<(), MetaError> {
        if let ObjectData::Chunks(refs) = &old.data {
            self.retire_chunks(refs, at_ms)?;
        }
        self.add(counter::OBJECTS, -1)
    }

    fn retire_chunks(&mut self, refs: &[ChunkRef], at_ms: u64) -> Result<(), MetaError> {
        for r in refs {
            self.batch
                .put(GARBAGE, &r.id, &GarbageRecord { since_ms: at_ms })?;
            self.add(counter::GARBAGE, 1)?;
        }
        Ok(())
    }

    /// Records new chunks and indexes their fragments by node.
    fn store_chunks(&mut self, chunks: &[ChunkRecord]) -> Result<(), MetaError> {
        for chunk in chunks {
            self.batch.put(CHUNKS, &chunk.id, chunk)?;
            for (i, f) in chunk.fragments.iter().enumerate() {
                self.batch.put(
                    NODE_FRAGMENTS,
                    &NodeFragmentKey {
                        node: f.node,
                        chunk: chunk.id,
                        index: i as u8,
                    },
                    &(),
                )?;
                self.add_node(f.node, 1, chunk.fragment_len as i64)?;
            }
        }
        self.add(counter::CHUNKS, chunks.len() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::{DirListing, Found, FragmentRecord};

    fn sm() -> (tempfile::TempDir, StateMachine) {
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachine::open(dir.path()).unwrap();
        (dir, sm)
    }

    fn inline(bytes: &[u8]) -> NewObject {
        NewObject {
            size: bytes.len() as u64,
            etag: String::new(),
            content_type: None,
            headers: Default::default(),
            user_meta: Default::default(),
            data: ObjectData::Inline(bytes.to_vec()),
            chunks: vec![],
        }
    }

    fn put(
        sm: &StateMachine,
        bucket: &str,
        key: &str,
        object: NewObject,
    ) -> Result<Outcome, MetaError> {
        sm.apply(&Command::CommitObject {
            bucket: bucket.into(),
            key: key.into(),
            object,
            at_ms: 1,
            if_absent: false,
        })
    }

    fn keys(l: &Listing) -> Vec<String> {
        l.entries
            .iter()
            .map(|e| match e {
                ListEntry::Object { key, .. } => key.clone(),
                ListEntry::CommonPrefix(p) => format!("{p}*"),
            })
            .collect()
    }

    fn with_bucket() -> (tempfile::TempDir, StateMachine) {
        let (d, sm) = sm();
        sm.apply(&Command::CreateBucket {
            name: "bkt".into(),
            policy: Policy::default(),
            at_ms: 1,
        })
        .unwrap();
        (d, sm)
    }

    fn rename(sm: &StateMachine, from: &str, to: &str, replace: bool) -> Result<u64, ErrorCode> {
        match sm.apply(&Command::Rename {
            bucket: "bkt".into(),
            from: from.into(),
            to: to.into(),
            replace,
            keep_dir: None,
            at_ms: 5,
        }) {
            Ok(Outcome::Renamed { objects }) => Ok(objects),
            Ok(other) => panic!("{other:?}"),
            Err(MetaError::Refused(e)) => Err(e.code),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn renames_objects_and_prefixes_in_one_command() {
        let (_d, sm) = with_bucket();
        for k in ["d/1", "d/2", "d/sub/3", "dx", "e", "f"] {
            put(&sm, "bkt", k, inline(k.as_bytes())).unwrap();
        }
        // An object: moved with its content; over an existing one only
        // when asked, and the replaced one is retired.
        assert_eq!(rename(&sm, "e", "g", false), Ok(1));
        assert_eq!(sm.object("bkt", "g").unwrap().key, "g");
        assert!(sm.object("bkt", "e").is_err());
        assert_eq!(
            rename(&sm, "g", "f", false),
            Err(ErrorCode::PreconditionFailed)
        );
        assert_eq!(rename(&sm, "g", "f", true), Ok(1));
        assert_eq!(
            sm.object("bkt", "f").unwrap().data,
            ObjectData::Inline(b"e".to_vec())
        );
        assert_eq!(sm.counter(counter::OBJECTS).unwrap(), 5);
        assert_eq!(rename(&sm, "nope", "x", false), Err(ErrorCode::NoSuchKey));
        // A prefix: everything under it, nothing beside it ("dx").
        assert_eq!(rename(&sm, "d/", "n/", false), Ok(3));
        let all = sm.list("bkt", "", None, None, 100).unwrap();
        assert_eq!(keys(&all), ["dx", "f", "n/1", "n/2", "n/sub/3"]);
        assert_eq!(
            sm.object("bkt", "n/sub/3").unwrap().data,
            ObjectData::Inline(b"d/sub/3".to_vec())
        );
        // Refused: into itself, onto a non-empty prefix, from nothing, mixed.
        assert_eq!(
            rename(&sm, "n/", "n/sub/x/", false),
            Err(ErrorCode::BadRequest)
        );
        put(&sm, "bkt", "m/1", inline(b"x")).unwrap();
        assert_eq!(rename(&sm, "n/", "m/", false), Err(ErrorCode::NotEmpty));
        assert_eq!(rename(&sm, "zz/", "y/", false), Err(ErrorCode::NoSuchKey));
        assert_eq!(rename(&sm, "n/", "y", false), Err(ErrorCode::BadRequest));
        assert_eq!(sm.counter(counter::OBJECTS).unwrap(), 6);
    }

    #[test]
    fn lists_like_s3() {
        let (_d, sm) = with_bucket();
        // A neighbour bucket whose name extends ours must not leak in.
        sm.apply(&Command::CreateBucket {
            name: "bkt2".into(),
            policy: Policy::default(),
            at_ms: 1,
        })
        .unwrap();
        put(&sm, "bkt2", "a", inline(b"x")).unwrap();
        for k in ["a/1", "a/2", "a/b/3", "b", "c/1", "c/2", "d"] {
            put(&sm, "bkt", k, inline(b"x")).unwrap();
        }
        let all = sm.list("bkt", "", None, None, 100).unwrap();
        assert_eq!(keys(&all), ["a/1", "a/2", "a/b/3", "b", "c/1", "c/2", "d"]);
        assert_eq!(all.next, None);
        let top = sm.list("bkt", "", Some("/"), None, 100).unwrap();
        assert_eq!(keys(&top), ["a/*", "b", "c/*", "d"]);
        let under_a = sm.list("bkt", "a/", Some("/"), None, 100).unwrap();
        assert_eq!(keys(&under_a), ["a/1", "a/2", "a/b/*"]);
        // Pages of two, resumed with `next`, give the same listing.
        let mut pages = vec![];
        let mut after = None;
        loop {
            let page = sm.list("bkt", "", Some("/"), after.as_deref(), 2).unwrap();
            pages.extend(keys(&page));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(pages, ["a/*", "b", "c/*", "d"]);
        assert_eq!(
            keys(&sm.list("bkt", "", None, Some("b"), 100).unwrap()),
            ["c/1", "c/2", "d"]
        );
        assert!(sm.list("nope", "", None, None, 10).is_err());
    }

    #[test]
    fn counters_follow_commands() {
        let (_d, sm) = with_bucket();
        put(&sm, "bkt", "k", inline(b"1")).unwrap();
        put(&sm, "bkt", "k", inline(b"2")).unwrap(); // overwrite: still one object
        put(&sm, "bkt", "j", inline(b"3")).unwrap();
        assert_eq!(sm.counter(counter::OBJECTS).unwrap(), 2);
        assert_eq!(
            sm.apply(&Command::DeleteObject {
                bucket: "bkt".into(),
                key: "k".into(),
                at_ms: 2
            })
            .unwrap(),
            Outcome::Deleted { existed: true }
        );
        assert_eq!(
            sm.apply(&Command::DeleteObject {
                bucket: "bkt".into(),
                key: "k".into(),
                at_ms: 2
            })
            .unwrap(),
            Outcome::Deleted { existed: false }
        );
        assert_eq!(sm.counter(counter::OBJECTS).unwrap(), 1);
        assert_eq!(sm.counter(counter::BUCKETS).unwrap(), 1);
        assert_eq!(sm.counter(counter::APPLIED).unwrap(), 6);
        assert_eq!(
            sm.object("bkt", "j").unwrap().data,
            ObjectData::Inline(b"3".to_vec())
        );
    }

    #[test]
    fn buckets_delete_only_when_empty() {
        let (_d, sm) = with_bucket();
        put(&sm, "bkt", "k", inline(b"1")).unwrap();
        let err = sm
            .apply(&Command::DeleteBucket { name: "bkt".into() })
            .unwrap_err();
        assert_eq!(err.to_remote().code, ErrorCode::BucketNotEmpty);
        sm.apply(&Command::DeleteObject {
            bucket: "bkt".into(),
            key: "k".into(),
            at_ms: 2,
        })
        .unwrap();
        sm.apply(&Command::DeleteBucket { name: "bkt".into() })
            .unwrap();
        assert_eq!(
            sm.bucket("bkt").unwrap_err().to_remote().code,
            ErrorCode::NoSuchBucket
        );
    }

    #[test]
    fn overwritten_chunks_become_garbage_and_bad_commits_change_nothing() {
        let (_d, sm) = with_bucket();
        let nodes = register_nodes(&sm, 6);
        let chunked = |id: u8| one_chunk(id, &nodes);
        put(&sm, "bkt", "k", chunked(1)).unwrap();
        let applied = sm.counter(counter::APPLIED).unwrap();
        // Reusing a chunk id is refused, and leaves no trace.
        assert!(put(&sm, "bkt", "other", chunked(1)).is_err());
        assert_eq!(sm.counter(counter::APPLIED).unwrap(), applied);
        assert!(sm.object("bkt", "other").is_err());
        put(&sm, "bkt", "k", chunked(2)).unwrap();
        assert!(sm.store.get(GARBAGE, &ChunkId([1; 16])).unwrap().is_some());
        assert!(sm.store.get(GARBAGE, &ChunkId([2; 16])).unwrap().is_none());
        let mut held = 0;
        sm.store
            .scan(
                NODE_FRAGMENTS,
                &NodeId(3).encode(),
                |_, k: NodeFragmentKey, _| {
                    if k.node != NodeId(3) {
                        return Ok(Step::Stop);
                    }
                    held += 1;
                    Ok(Step::Continue)
                },
            )
            .unwrap();
        assert_eq!(held, 2, "node 3 holds one fragment of each chunk until GC");
    }

    fn register_nodes(sm: &StateMachine, n: u64) -> Vec<NodeId> {
        let nodes: Vec<NodeId> = (1..=n).map(NodeId).collect();
        for id in &nodes {
            let node = NodeRecord {
                id: *id,
                addr: "127.0.0.1:1".into(),
                zone: None,
                capacity: 1,
                joined_ms: 0,
            };
            sm.apply(&Command::RegisterNode { node }).unwrap();
        }
        nodes
    }

    fn one_chunk(id: u8, nodes: &[NodeId]) -> NewObject {
        let rec = ChunkRecord {
            id: ChunkId([id; 16]),
            policy: Policy::default(),
            len: 10,
            fragment_len: 64,
            hash: [0; 32],
            fragments: nodes[..6]
                .iter()
                .map(|n| FragmentRecord {
                    node: *n,
                    hash: [0; 32],
                })
                .collect(),
        };
        NewObject {
            size: 10,
            etag: String::new(),
            content_type: None,
            headers: Default::default(),
            user_meta: Default::default(),
            data: ObjectData::Chunks(vec![ChunkRef {
                id: rec.id,
                len: 10,
            }]),
            chunks: vec![rec],
        }
    }

    fn code<T: std::fmt::Debug>(r: Result<T, MetaError>) -> ErrorCode {
        match r {
            Err(MetaError::Refused(e)) => e.code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn names(l: &DirListing) -> Vec<String> {
        l.entries
            .iter()
            .map(|e| format!("{}{}", e.name, if e.dir { "/" } else { "" }))
            .collect()
    }

    #[test]
    fn directories_of_the_file_system_view() {
        let (_d, sm) = with_bucket();
        let dir = |path: &str, create: bool| {
            sm.apply(&Command::PutDir {
                bucket: "bkt".into(),
                path: path.into(),
                info: DirInfo::default(),
                create,
            })
        };
        let rmdir = |path: &str, keep: Option<&str>| {
            sm.apply(&Command::RemoveDir {
                bucket: "bkt".into(),
                path: path.into(),
                keep_dir: keep.map(String::from),
                at_ms: 3,
            })
        };
        for k in ["a/1", "a/b/2", "c", "c!", "d"] {
            put(&sm, "bkt", k, inline(b"x")).unwrap();
        }
        dir("e/", true).unwrap();
        dir("a/f/g/", true).unwrap();
        assert_eq!(code(dir("e/", true)), ErrorCode::PreconditionFailed);
        assert_eq!(code(dir("a/", true)), ErrorCode::PreconditionFailed);
        assert_eq!(code(dir("c/", true)), ErrorCode::PreconditionFailed);
        assert_eq!(code(dir("x", true)), ErrorCode::BadRequest);
        // Entries never show in S3 listings.
        let all = sm.list("bkt", "", None, None, 100).unwrap();
        assert_eq!(keys(&all), ["a/1", "a/b/2", "c", "c!", "d"]);
        // Lookups tell directories (with or without an entry) from objects.
        assert_eq!(sm.lookup("bkt", "a").unwrap(), Found::Dir(None));
        assert!(matches!(
            sm.lookup("bkt", "e").unwrap(),
            Found::Dir(Some(_))
        ));
        assert!(matches!(sm.lookup("bkt", "a/f").unwrap(), Found::Dir(None)));
        assert!(matches!(sm.lookup("bkt", "c").unwrap(), Found::Object(_)));
        assert_eq!(sm.lookup("bkt", "zz").unwrap(), Found::Nothing);
        // Listings merge both, in key order, one name per directory.
        let l = sm.list_dir("bkt", "", None, 100).unwrap();
        assert_eq!(names(&l), ["a/", "c", "c!", "d", "e/"]);
        assert_eq!(l.next, None);
        let l = sm.list_dir("bkt", "a/", None, 100).unwrap();
        assert_eq!(names(&l), ["1", "b/", "f/"]);
        // Pages of two, continued from `next`, see each name once.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let l = sm.list_dir("bkt", "", after.as_deref(), 2).unwrap();
            seen.extend(names(&l));
            match l.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, ["a/", "c", "c!", "d", "e/"]);
        // rmdir: only when empty; an implied directory has nothing to remove.
        assert_eq!(code(rmdir("a/f/", None)), ErrorCode::NotEmpty);
        assert_eq!(code(rmdir("a/b/", None)), ErrorCode::NotEmpty);
        assert_eq!(code(rmdir("q/", None)), ErrorCode::NoSuchKey);
        rmdir("a/f/g/", Some("a/f/")).unwrap();
        assert!(matches!(
            sm.lookup("bkt", "a/f").unwrap(),
            Found::Dir(Some(_))
        ));
        rmdir("a/f/", None).unwrap();
        // Unlinking the last file keeps its directory when asked.
        let unlink = |key: &str, keep: Option<&str>| {
            sm.apply(&Command::Unlink {
                bucket: "bkt".into(),
                key: key.into(),
                keep_dir: keep.map(String::from),
                at_ms: 4,
            })
        };
        unlink("a/b/2", Some("a/b/")).unwrap();
        assert!(matches!(
            sm.lookup("bkt", "a/b").unwrap(),
            Found::Dir(Some(_))
        ));
        assert_eq!(code(unlink("a/b/2", None)), ErrorCode::NoSuchKey);
        // A directory rename moves entries too, and may replace an empty
        // directory; a non-empty target is refused.
        dir("e/x/", true).unwrap();
        assert_eq!(rename(&sm, "a/", "e/", true), Err(ErrorCode::NotEmpty));
        rmdir("e/x/", None).unwrap();
        assert_eq!(
            rename(&sm, "a/", "e/", false),
            Err(ErrorCode::PreconditionFailed)
        );
        assert_eq!(rename(&sm, "a/", "e/", true), Ok(1));
        assert_eq!(
            names(&sm.list_dir("bkt", "e/", None, 10).unwrap()),
            ["1", "b/"]
        );
        assert_eq!(sm.lookup("bkt", "a").unwrap(), Found::Nothing);
        // An empty directory renames too.
        assert_eq!(rename(&sm, "e/b/", "h/", false), Ok(0));
        assert!(matches!(
            sm.lookup("bkt", "h").unwrap(),
            Found::Dir(Some(_))
        ));
        // Deleting the bucket drops its entries.
        for k in ["c", "c!", "d", "e/1"] {
            unlink(k, None).unwrap();
        }
        rmdir("h/", None).unwrap();
        rmdir("e/", None).unwrap();
        sm.apply(&Command::DeleteBucket { name: "bkt".into() })
            .unwrap();
    }

    #[test]
    fn patches_keep_untouched_chunks_and_retire_the_rest() {
        let (_d, sm) = with_bucket();
        let nodes = register_nodes(&sm, 7);
        let patch = |object: NewObject, if_absent: bool| {
            sm.apply(&Command::PatchObject {
                bucket: "bkt".into(),
                key: "f".into(),
                object,
                if_absent,
                at_ms: 9,
            })
        };
        // Two chunks, then a patch that keeps the first and replaces the
        // second.
        let mut first = one_chunk(1, &nodes);
        let second = one_chunk(2, &nodes);
        let ObjectData::Chunks(mut refs) = first.data.clone() else {
            unreachable!()
        };
        refs.push(ChunkRef {
            id: ChunkId([2; 16]),
            len: 10,
        });
        first.chunks.extend(second.chunks.clone());
        first.data = ObjectData::Chunks(refs.clone());
        first.size = 20;
        patch(first.clone(), true).unwrap();
        assert_eq!(
            code(patch(first.clone(), true)),
            ErrorCode::PreconditionFailed
        );
        let third = one_chunk(3, &nodes);
        let mut next = third.clone();
        next.data = ObjectData::Chunks(vec![
            refs[0],
            ChunkRef {
                id: ChunkId([3; 16]),
                len: 10,
            },
        ]);
        next.size = 20;
        patch(next.clone(), false).unwrap();
        assert_eq!(sm.counter(counter::GARBAGE).unwrap(), 1);
        assert_eq!(sm.counter(counter::OBJECTS).unwrap(), 1);
        assert_eq!(sm.object("bkt", "f").unwrap().data, next.data);
        // A chunk of an older version (or of nobody) is refused: the object
        // changed meanwhile.
        let mut stale = inline(b"");
        stale.data = ObjectData::Chunks(vec![refs[1]]);
        stale.size = 10;
        assert_eq!(code(patch(stale, false)), ErrorCode::Conflict);
        // A chunk referenced twice is refused.
        let mut twice = inline(b"");
        twice.data = ObjectData::Chunks(vec![refs[0], refs[0]]);
        twice.size = 20;
        assert_eq!(code(patch(twice, false)), ErrorCode::BadRequest);
        // Shrinking to inline data retires every chunk.
        patch(inline(b"tiny"), false).unwrap();
        assert_eq!(sm.counter(counter::GARBAGE).unwrap(), 3);
    }

    #[test]
    fn repairs_move_fragments_only_from_where_they_are() {
        let (_d, sm) = with_bucket();
        let nodes = register_nodes(&sm, 7);
        put(&sm, "bkt", "k", one_chunk(1, &nodes)).unwrap();
        let chunk = ChunkId([1; 16]);
        assert_eq!(sm.counter(&counter::node_fragments(nodes[0])).unwrap(), 1);
        // Node 1 is out: its fragment is lost, the chunk degraded.
        let classes: NodeClasses = [(nodes[0], FragmentState::Lost)].into();
        let a = sm.assess(&classes, 10).unwrap();
        assert_eq!(
            (a.health.total, a.health.degraded, a.pending_fragments),
            (1, 1, 1)
        );
        assert_eq!(a.work[0].states[0], FragmentState::Lost);
        let mv = |from: NodeId, to: NodeId| FragmentMove {
            index: 0,
            from,
            to,
            rebuilt: true,
        };
        // From the wrong node, or onto a node holding another fragment: refused.
        let stale = sm.apply(&Command::CommitRepair {
            chunk,
            moves: vec![mv(nodes[1], nodes[6])],
        });
        assert_eq!(stale.unwrap_err().to_remote().code, ErrorCode::Conflict);
        let doubled = sm.apply(&Command::CommitRepair {
            chunk,
            moves: vec![mv(nodes[0], nodes[1])],
        });
        assert_eq!(doubled.unwrap_err().to_remote().code, ErrorCode::BadRequest);
        sm.apply(&Command::CommitRepair {
            chunk,
            moves: vec![mv(nodes[0], nodes[6])],
        })
        .unwrap();
        assert_eq!(sm.chunks(&[chunk]).unwrap()[0].fragments[0].node, nodes[6]);
        assert_eq!(sm.counter(&counter::node_fragments(nodes[0])).unwrap(), 0);
        assert_eq!(sm.counter(&counter::node_fragments(nodes[6])).unwrap(), 1);
        assert_eq!(sm.counter(counter::REBUILT_FRAGMENTS).unwrap(), 1);
        let a = sm.assess(&classes, 10).unwrap();
        assert_eq!((a.health.healthy, a.pending_fragments), (1, 0));
        // The same move again finds the fragment gone: a repairer that
        // crashed after its commit and retries changes nothing.
        assert!(
            sm.apply(&Command::CommitRepair {
                chunk,
                moves: vec![mv(nodes[0], nodes[6])],
            })
            .is_err()
        );
        // Now node 1 holds nothing and may go; node 2 may not.
        sm.apply(&Command::RemoveNode { node: nodes[0] }).unwrap();
        let busy = sm.apply(&Command::RemoveNode { node: nodes[1] });
        assert_eq!(busy.unwrap_err().to_remote().code, ErrorCode::Conflict);
        assert_eq!(sm.node_admin(nodes[0]).unwrap(), NodeAdmin::Removed);
    }

    #[test]
    fn damage_reports_rank_work_and_garbage_is_purged() {
        let (_d, sm) = with_bucket();
        let nodes = register_nodes(&sm, 7);
        put(&sm, "bkt", "a", one_chunk(1, &nodes)).unwrap();
        put(&sm, "bkt", "b", one_chunk(2, &nodes)).unwrap();
        let report = |chunk: u8, index: u8, node: NodeId| Command::ReportCorrupt {
            report: CorruptReport {
                chunk: ChunkId([chunk; 16]),
                index,
                node,
                reason: "BLAKE3 mismatch".into(),
                at_ms: 1,
            },
        };
        sm.apply(&report(1, 0, nodes[0])).unwrap();
        sm.apply(&report(2, 0, nodes[0])).unwrap();
        sm.apply(&report(2, 1, nodes[1])).unwrap();
        // A report about a node that no longer holds the fragment is history only.
        sm.apply(&report(1, 2, nodes[6])).unwrap();
        let a = sm.assess(&NodeClasses::new(), 10).unwrap();
        assert_eq!((a.health.degraded, a.health.at_risk), (1, 1));
        assert_eq!(a.pending_fragments, 3);
        // Chunk 2 has no spare fragment left: it goes first.
        assert_eq!(a.work[0].record.id, ChunkId([2; 16]));
        // Deleting `b` makes its chunk garbage: no longer counted or repaired.
        sm.apply(&Command::DeleteObject {
            bucket: "bkt".into(),
            key: "b".into(),
            at_ms: 5,
        })
        .unwrap();
        let a = sm.assess(&NodeClasses::new(), 10).unwrap();
        assert_eq!((a.health.total, a.work.len()), (1, 1));
        assert!(sm.garbage_before(5, 10).unwrap().is_empty());
        let old = sm.garbage_before(6, 10).unwrap();
        assert_eq!(old, vec![ChunkId([2; 16])]);
        sm.apply(&Command::PurgeChunks { ids: old }).unwrap();
        assert!(sm.chunks(&[ChunkId([2; 16])]).is_err());
        assert_eq!(sm.counter(counter::CHUNKS).unwrap(), 1);
        assert_eq!(sm.counter(&counter::node_fragments(nodes[0])).unwrap(), 1);
        let unknown = sm
            .unknown_fragments(nodes[0], &[(ChunkId([1; 16]), 0), (ChunkId([2; 16]), 0)])
            .unwrap();
        assert_eq!(unknown, vec![(ChunkId([2; 16]), 0)]);
        let (held, more) = sm.node_fragments(nodes[0], None, 10).unwrap();
        assert_eq!((held.len(), more), (1, false));
    }
}
