//! Helpers for the domain tests: a state machine in memory that numbers its
//! own log entries.

use std::cell::Cell;

use tessera_proto::{ChunkRecord, FragmentRecord, ListEntry, Listing, NewObject, UploadInfo};
use tessera_types::{ChunkId, NodeId, Policy};

pub use super::Command;
use super::tables::NodeRecord;
use super::{Applied, Outcome, Refused, StateMachine};
use crate::store::MemStore;

pub struct Kit {
    pub sm: StateMachine<MemStore>,
    next: Cell<u64>,
}

impl Kit {
    pub fn new() -> Self {
        Kit {
            sm: StateMachine::in_memory(),
            next: Cell::new(1),
        }
    }

    pub fn apply(&self, cmd: Command) -> Outcome {
        let index = self.next.get();
        self.next.set(index + 1);
        self.sm.apply(index, &cmd).expect("storage")
    }

    /// Applies a command that must succeed.
    pub fn ok(&self, cmd: Command) -> Applied {
        match self.apply(cmd.clone()) {
            Ok(a) => a,
            Err(r) => panic!("{cmd:?} refused: {r:?}"),
        }
    }

    /// Applies a command that must be refused, and says why it was.
    pub fn refused(&self, cmd: Command) -> Refused {
        match self.apply(cmd.clone()) {
            Ok(a) => panic!("{cmd:?} applied: {a:?}"),
            Err(r) => r.kind,
        }
    }

    pub fn nodes(&self, n: u64) -> Vec<NodeId> {
        let nodes: Vec<NodeId> = (1..=n).map(NodeId).collect();
        for id in &nodes {
            self.ok(Command::RegisterNode {
                node: NodeRecord {
                    id: *id,
                    addr: "127.0.0.1:1".into(),
                    zone: None,
                    capacity: 1,
                    joined_ms: 0,
                },
            });
        }
        nodes
    }

    pub fn bucket(&self, name: &str) {
        self.ok(Command::CreateBucket {
            name: name.into(),
            policy: Policy::default(),
            at_ms: 1,
        });
    }

    /// Renames in bucket `bkt`: how many objects moved, or why not.
    pub fn rename(&self, from: &str, to: &str, replace: bool) -> Result<u64, Refused> {
        match self.apply(Command::Rename {
            bucket: "bkt".into(),
            from: from.into(),
            to: to.into(),
            replace,
            keep_dir: None,
            at_ms: 2,
        }) {
            Ok(Applied::Renamed { objects }) => Ok(objects),
            Ok(other) => panic!("{other:?}"),
            Err(r) => Err(r.kind),
        }
    }

    pub fn put(&self, bucket: &str, key: &str, object: NewObject) -> Outcome {
        self.apply(Command::CommitObject {
            bucket: bucket.into(),
            key: key.into(),
            object,
            at_ms: 1,
            condition: Default::default(),
        })
    }

    /// An object of one 10-byte chunk `[id; 16]` on the first six nodes.
    pub fn one_chunk(&self, id: u8, nodes: &[NodeId]) -> NewObject {
        NewObject::of_chunks(vec![chunk_record(id, &nodes[..6])])
    }
}

/// A 10-byte `ec:4+2` chunk `[id; 16]` with fragments of 64 bytes on `on`.
pub fn chunk_record(id: u8, on: &[NodeId]) -> ChunkRecord {
    ChunkRecord {
        id: ChunkId([id; 16]),
        policy: Policy::default(),
        len: 10,
        fragment_len: 64,
        hash: [0; 32],
        fragments: on
            .iter()
            .map(|n| FragmentRecord {
                node: *n,
                hash: [0; 32],
            })
            .collect(),
    }
}

/// An object of one chunk `[id; 16]` of `size` bytes on the first six of
/// `nodes`, with the ETag `hex([id; 16])`.
pub fn sized_chunk(id: u8, size: u64, nodes: &[NodeId]) -> NewObject {
    let mut rec = chunk_record(id, &nodes[..6]);
    rec.len = size;
    NewObject {
        etag: hex::encode([id; 16]),
        ..NewObject::of_chunks(vec![rec])
    }
}

/// A multipart upload `id` of `bucket/key`, without metadata.
pub fn upload_info(id: &str, bucket: &str, key: &str) -> UploadInfo {
    UploadInfo {
        id: id.into(),
        bucket: bucket.into(),
        key: key.into(),
        initiated_ms: 1,
        content_type: None,
        user_meta: Default::default(),
        headers: Default::default(),
        checksum: None,
    }
}

pub fn inline(bytes: &[u8]) -> NewObject {
    NewObject::inline(bytes)
}

/// A listing as keys, common prefixes marked with `*`.
pub fn keys(l: &Listing) -> Vec<String> {
    l.entries
        .iter()
        .map(|e| match e {
            ListEntry::Object { key, .. } => key.clone(),
            ListEntry::CommonPrefix(p) => format!("{p}*"),
        })
        .collect()
}
