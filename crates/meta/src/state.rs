//! The metadata state machine. Every change is a `Command`, applied by
//! `apply` as one RocksDB write batch (with the applied-command counter), so a
//! command happens whole or not at all and the same sequence of commands gives
//! the same state on any replica. Commands carry their own timestamps; apply
//! never reads the clock.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tessera_proto::{
    BucketInfo, ChunkRecord, CorruptReport, ErrorCode, ListEntry, Listing, NewObject, ObjectData,
    ObjectInfo, RemoteError,
};
use tessera_types::{ChunkId, NodeId, Policy, validate_bucket_name, validate_key};

use crate::MetaError;
use crate::keys::{NodeFragmentKey, ObjectKey};
use crate::store::{Batch, KeyCodec, Step, Store, Table};

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
    pub const ALL: &[&str] = &[
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
    },
    DeleteObject {
        bucket: String,
        key: String,
        at_ms: u64,
    },
    ReportCorrupt {
        report: CorruptReport,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Deleted { existed: bool },
}

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
                Outcome::Deleted { existed: true }
            }
            Command::CommitObject {
                bucket,
                key,
                object,
                at_ms,
            } => {
                self.bucket(bucket)?;
                validate_key(key).map_err(|e| refuse(ErrorCode::InvalidKey, e.to_string()))?;
                self.check_new_object(object)?;
                let okey = ObjectKey::new(bucket, key);
                if let Some(old) = self.store.get(OBJECTS, &okey)? {
                    batch.retire(&old, *at_ms)?;
                }
                for chunk in &object.chunks {
                    batch.put(CHUNKS, &chunk.id, chunk)?;
                    for (i, f) in chunk.fragments.iter().enumerate() {
                        batch.put(
                            NODE_FRAGMENTS,
                            &NodeFragmentKey {
                                node: f.node,
                                chunk: chunk.id,
                                index: i as u8,
                            },
                            &(),
                        )?;
                    }
                }
                batch.add(counter::CHUNKS, object.chunks.len() as i64)?;
                let info = ObjectInfo {
                    key: key.clone(),
                    size: object.size,
                    etag: object.etag.clone(),
                    content_type: object.content_type.clone(),
                    user_meta: object.user_meta.clone(),
                    mtime_ms: *at_ms,
                    data: object.data.clone(),
                };
                batch.put(OBJECTS, &okey, &info)?;
                batch.add(counter::OBJECTS, 1)?;
                Outcome::Done
            }
            Command::DeleteObject { bucket, key, at_ms } => {
                self.bucket(bucket)?;
                let okey = ObjectKey::new(bucket, key);
                match self.store.get(OBJECTS, &okey)? {
                    Some(old) => {
                        batch.retire(&old, *at_ms)?;
                        batch.delete(OBJECTS, &okey)?;
                        Outcome::Deleted { existed: true }
                    }
                    None => Outcome::Deleted { existed: false },
                }
            }
            Command::ReportCorrupt { report } => {
                let seq = self.counter(counter::CORRUPT)? + 1;
                batch.put(CORRUPT, &seq, report)?;
                batch.add(counter::CORRUPT, 1)?;
                Outcome::Done
            }
        };
        batch.add(counter::APPLIED, 1)?;
        batch.commit()?;
        Ok(outcome)
    }

    /// A commit must describe exactly the bytes it claims, on distinct known
    /// nodes, with fresh chunk ids: anything else is refused before it is
    /// written.
    fn check_new_object(&self, o: &NewObject) -> Result<(), MetaError> {
        let bad = |m: String| refuse(ErrorCode::BadRequest, m);
        match &o.data {
            ObjectData::Inline(bytes) => {
                if bytes.len() as u64 != o.size || o.size > MAX_INLINE {
                    return Err(bad(format!(
                        "inline object of {} bytes claims size {}",
                        bytes.len(),
                        o.size
                    )));
                }
                if !o.chunks.is_empty() {
                    return Err(bad("inline object must not carry chunk records".into()));
                }
            }
            ObjectData::Chunks(refs) => {
                if refs.len() > MAX_CHUNKS_PER_OBJECT {
                    return Err(refuse(
                        ErrorCode::TooLarge,
                        format!("{} chunks exceed the limit", refs.len()),
                    ));
                }
                if refs.len() != o.chunks.len() {
                    return Err(bad(
                        "chunk references and chunk records differ in number".into()
                    ));
                }
                let total: u64 = refs.iter().map(|r| r.len).sum();
                if total != o.size {
                    return Err(bad(format!(
                        "chunks hold {total} bytes, object claims {}",
                        o.size
                    )));
                }
                let mut seen = HashSet::new();
                for (r, c) in refs.iter().zip(&o.chunks) {
                    if r.id != c.id || r.len != c.len || c.len == 0 {
                        return Err(bad(format!("chunk {} does not match its reference", c.id)));
                    }
                    if !seen.insert(c.id) || self.store.get(CHUNKS, &c.id)?.is_some() {
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
                            return Err(bad(format!(
                                "chunk {} names unknown node {}",
                                c.id, f.node
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
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

/// A write batch that also keeps the counters in step with it.
struct Counted<'a> {
    store: &'a Store,
    batch: Batch<'a>,
    deltas: std::collections::BTreeMap<&'static str, i64>,
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

    fn add(&mut self, name: &'static str, delta: i64) -> Result<(), MetaError> {
        *self.deltas.entry(name).or_default() += delta;
        Ok(())
    }

    fn commit(mut self) -> Result<(), MetaError> {
        for (name, delta) in std::mem::take(&mut self.deltas) {
            let name = name.to_string();
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
            for r in refs {
                self.batch
                    .put(GARBAGE, &r.id, &GarbageRecord { since_ms: at_ms })?;
            }
        }
        self.add(counter::OBJECTS, -1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::{ChunkRef, FragmentRecord};

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
        let nodes: Vec<NodeId> = (1..=6).map(NodeId).collect();
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
        let chunked = |id: u8| {
            let rec = ChunkRecord {
                id: ChunkId([id; 16]),
                policy: Policy::default(),
                len: 10,
                fragment_len: 64,
                hash: [0; 32],
                fragments: nodes
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
                user_meta: Default::default(),
                data: ObjectData::Chunks(vec![ChunkRef {
                    id: rec.id,
                    len: 10,
                }]),
                chunks: vec![rec],
            }
        };
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
}
