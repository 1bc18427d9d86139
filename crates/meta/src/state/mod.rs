//! The metadata state machine.
//!
//! # The contract (Raft-shaped)
//!
//! Every change to meta's state is a [`Command`] applied at a log index:
//!
//! - `apply_batch(entries)` applies `(index, command)` pairs in order, each
//!   index above the last applied one. Each command sees the state the
//!   commands before it left, including earlier ones of the same batch.
//! - A command either takes effect whole or is *refused*: a refused command
//!   (no such bucket, a conflict, a failed precondition...) is still an
//!   applied entry. Its [`Outcome`] is a typed [`Refusal`], it changes no
//!   table, and the applied index advances past it all the same; the outcome
//!   of every entry is recorded (table `outcomes`, the last
//!   [`OUTCOME_HISTORY`] indexes).
//! - The whole batch (every command's changes, the outcomes and the applied
//!   index) is one atomic, synced write: one fsync however many commands
//!   (group commit). A crash loses whole batches, never part of one, and a
//!   batch is only acknowledged after its write. `apply_batch_buffered`
//!   writes the batch without waiting and a later `sync` makes it (and
//!   every batch before it) durable, so the server's committer applies the
//!   next batch while the last one's fsync runs; it acknowledges a batch
//!   only after a sync that covers it. A query in that window may see a
//!   batch not yet acknowledged, as it may see any commit in flight; if
//!   meta crashes before the sync, that batch is lost whole and nobody was
//!   told it succeeded.
//! - Commands carry their own timestamps and random ids; apply never reads
//!   the clock or a random source, so the same entries give the same state
//!   on any replica (ready to sit behind Raft).
//! - Only storage failures (`MetaError` other than `Refused`) fail a batch;
//!   then nothing of it is written.
//! - Reads go through [`StateMachine::read`]: a snapshot of the store,
//!   never the writer's lock, so a listing or a status is one consistent
//!   state and never waits for a commit.
//!
//! # Layout
//!
//! One module per domain, each with its commands, its queries (a trait over
//! any read view) and its tests: [`cluster`] (nodes and their admin state),
//! [`buckets`], [`objects`] (objects, the commit's checks, listings), [`chunks`] (chunk records, the
//! node index, garbage), [`healing`] (damage reports, repair commits, chunk
//! assessment), [`multipart`], [`fsview`] (directories, copy-on-write
//! patches), [`rename`], [`access`] (S3 keys and grants), [`tags`] (object
//! and bucket tags), [`versions`] (bucket versioning, noncurrent versions,
//! delete markers), [`bucket_access`] (CORS rules, bucket policies,
//! PublicAccessBlock, canned ACLs), [`admin_tokens`] (hashes of admin API
//! tokens), [`usage`] (per-bucket object counts and bytes, kept by the
//! transaction layer), [`object_lock`] (Object Lock configurations,
//! retention and legal holds, and the refusal to remove locked versions),
//! [`lifecycle`] (lifecycle configurations and the worker's progress).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tessera_proto::{
    AccessKey, BucketInfo, ExtentRecord, ObjectInfo, PartInfo, Removal, UploadInfo, VolumeInfo,
};

use crate::MetaError;
use crate::store::{MetaStore, Read, ReadView};

pub mod access;
pub mod admin_tokens;
pub mod bucket_access;
pub mod buckets;
pub mod chunks;
pub mod cluster;
mod command;
pub mod fsview;
pub mod healing;
pub mod lifecycle;
pub mod multipart;
pub mod object_lock;
pub mod objects;
pub mod rename;
pub mod storage_classes;
pub mod tables;
pub mod tags;
mod txn;
pub mod usage;
pub mod versions;
pub mod volumes;

#[cfg(test)]
mod testkit;

pub use command::Command;
pub use txn::{Batch, Txn};

use tables::{COUNTERS, OUTCOMES, counter};

/// Outcomes kept per index (older ones are pruned in the same batch).
pub const OUTCOME_HISTORY: u64 = 1024;

/// What a refused command or query was refused for. The RPC edge maps these
/// to the wire's error codes; nothing in meta knows those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refused {
    BadRequest,
    InvalidBucketName,
    InvalidKey,
    InvalidPolicy,
    NoSuchBucket,
    BucketExists,
    BucketNotEmpty,
    NoSuchKey,
    NotFound,
    TooLarge,
    /// The state the request was based on changed meanwhile: look again.
    Conflict,
    NodeRemoved,
    NoSuchUpload,
    InvalidPart,
    EntityTooSmall,
    PreconditionFailed,
    /// A completion lists its parts out of ascending order.
    InvalidPartOrder,
    /// A directory that still holds something.
    NotEmpty,
    /// A tag set beyond S3's limits.
    InvalidTag,
    /// No version of the key has the id asked for.
    NoSuchVersion,
    /// The version named is a delete marker, which the request cannot act
    /// on (S3 answers 405).
    MethodNotAllowed,
    NoSuchVolume,
    VolumeExists,
    /// Attached by a writer, or a clone depends on it.
    VolumeBusy,
    /// The writer's lease was taken over.
    Fenced,
    /// The peer's certificate does not give it the role the request needs.
    Forbidden,
    /// The bucket's state does not allow the request (Object Lock without
    /// versioning Enabled, suspending versioning under Object Lock).
    InvalidBucketState,
    /// The version is under a retention or legal hold the request may not
    /// override.
    ObjectLocked,
    /// The request does not fit the bucket (Object Lock settings in a
    /// bucket without Object Lock).
    InvalidRequest,
}

/// A typed refusal with a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: Refused,
    pub message: String,
}

impl Refusal {
    pub fn new(kind: Refused, message: impl Into<String>) -> Self {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

/// Shorthand for a refusal as an error.
pub(crate) fn refuse(kind: Refused, message: impl Into<String>) -> MetaError {
    MetaError::Refused(Refusal::new(kind, message))
}

/// What an applied command did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Applied {
    Done,
    Bucket(BucketInfo),
    Object(Box<ObjectInfo>),
    Deleted {
        existed: bool,
    },
    Renamed {
        objects: u64,
    },
    Upload(Box<UploadInfo>),
    Part(PartInfo),
    Key(AccessKey),
    ScrubRequested {
        seq: u64,
    },
    /// Fragments moved by a repair commit, and their bytes.
    Repaired {
        fragments: u64,
        bytes: u64,
    },
    /// What an S3 delete did (object, version or delete marker).
    Removed(Removal),
    Volume(Box<VolumeInfo>),
    /// A volume head's extent maps after a commit, by extent index.
    Extents(Vec<(u64, ExtentRecord)>),
}

/// The result of one log entry: applied, or refused with its reason.
pub type Outcome = Result<Applied, Refusal>;

/// The outcome as recorded in the `outcomes` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordedOutcome {
    Applied,
    Refused(Refusal),
}

/// Meta's state over a store (RocksDB, or memory in tests).
pub struct StateMachine<S: MetaStore> {
    store: S,
    /// One batch at a time: a batch reads the state the last one wrote.
    write: Mutex<()>,
}

impl<S: MetaStore> StateMachine<S> {
    pub fn new(store: S) -> Self {
        StateMachine {
            store,
            write: Mutex::new(()),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// A consistent snapshot to query (see the domain `*Queries` traits).
    pub fn read(&self) -> Box<dyn ReadView + '_> {
        self.store.read()
    }

    /// The index of the last applied entry (0: none).
    pub fn applied_index(&self) -> Result<u64, MetaError> {
        self.read().counter(counter::APPLIED)
    }

    /// Applies one entry: see the module's contract.
    pub fn apply(&self, index: u64, cmd: &Command) -> Result<Outcome, MetaError> {
        let mut out = self.apply_batch(&[(index, cmd)])?;
        out.pop()
            .ok_or_else(|| MetaError::Internal("a batch of one gave no outcome".into()))
    }

    /// Applies entries in order as one atomic, synced write, and returns
    /// their outcomes in the same order. Errors: a storage failure (nothing
    /// of the batch is written), or an index not above the last applied.
    pub fn apply_batch(&self, entries: &[(u64, &Command)]) -> Result<Vec<Outcome>, MetaError> {
        self.apply_entries(entries, true, &[])
    }

    /// `apply_batch`, but durable only once `sync` returns: a group
    /// committer applies the next batch while this one's fsync runs, and
    /// acknowledges neither before its sync. Reads see the batch at once.
    pub fn apply_batch_buffered(
        &self,
        entries: &[(u64, &Command)],
    ) -> Result<Vec<Outcome>, MetaError> {
        self.apply_entries(entries, false, &[])
    }

    /// `apply_batch_buffered`, with `records` (key, value) written to the
    /// `replication` table in the same atomic write: the replication layer
    /// keeps its position in the log there (Raft's last applied log id and
    /// membership), so that after a crash the state and the position it
    /// claims are from the same batch. `entries` may be empty.
    pub fn apply_replicated(
        &self,
        entries: &[(u64, &Command)],
        records: &[(&str, Vec<u8>)],
    ) -> Result<Vec<Outcome>, MetaError> {
        self.apply_entries(entries, false, records)
    }

    /// A record of the replication layer (see `apply_replicated`).
    pub fn replication_record(&self, key: &str) -> Result<Option<Vec<u8>>, MetaError> {
        self.read().get(tables::REPLICATION, &key.to_string())
    }

    /// Runs `f` with no batch being applied meanwhile (a checkpoint of the
    /// store, which must match the records read beside it).
    pub fn with_writes_paused<T>(&self, f: impl FnOnce(&S) -> T) -> T {
        let _one_writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        f(&self.store)
    }

    /// Makes every batch applied before it durable.
    pub fn sync(&self) -> Result<(), MetaError> {
        self.store.sync()
    }

    fn apply_entries(
        &self,
        entries: &[(u64, &Command)],
        synced: bool,
        records: &[(&str, Vec<u8>)],
    ) -> Result<Vec<Outcome>, MetaError> {
        let _one_writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = self.store.read();
        let mut batch = Batch::new(&*snapshot);
        let mut last = batch.counter(counter::APPLIED)?;
        let mut outcomes = Vec::with_capacity(entries.len());
        for &(index, cmd) in entries {
            if index <= last {
                return Err(MetaError::Internal(format!(
                    "entry {index} is not after the last applied entry {last}"
                )));
            }
            // A refused command's transaction is dropped unfinished, which
            // takes its writes back out of the batch.
            let outcome = {
                let mut tx = Txn::new(&mut batch);
                match command::apply(&mut tx, cmd) {
                    Ok(applied) => {
                        tx.finish()?;
                        Ok(applied)
                    }
                    Err(MetaError::Refused(r)) => Err(r),
                    Err(e) => return Err(e),
                }
            };
            let recorded = match &outcome {
                Ok(_) => RecordedOutcome::Applied,
                Err(r) => RecordedOutcome::Refused(r.clone()),
            };
            let mut tx = Txn::new(&mut batch);
            tx.put(OUTCOMES, &index, &recorded)?;
            if index > OUTCOME_HISTORY {
                tx.delete(OUTCOMES, &(index - OUTCOME_HISTORY))?;
            }
            tx.put(COUNTERS, &counter::APPLIED.to_string(), &index)?;
            tx.finish()?;
            last = index;
            outcomes.push(outcome);
        }
        if !entries.is_empty() {
            // Every batch of this build keeps bucket usage (see `usage.rs`).
            let mut tx = Txn::new(&mut batch);
            tx.put(COUNTERS, &counter::USAGE_AT.to_string(), &last)?;
            tx.finish()?;
        }
        if !records.is_empty() {
            let mut tx = Txn::new(&mut batch);
            for (key, value) in records {
                tx.put(tables::REPLICATION, &key.to_string(), value)?;
            }
            tx.finish()?;
        }
        let writes = batch.finish()?;
        drop(snapshot);
        if synced {
            self.store.write(writes)?;
        } else {
            self.store.write_buffered(writes)?;
        }
        Ok(outcomes)
    }
}

#[cfg(feature = "server")]
impl StateMachine<crate::store::RocksStore> {
    /// Opens meta's RocksDB database in `dir`, counting bucket usage again
    /// if a build that did not keep it wrote there (see `usage.rs`).
    pub fn open(dir: &std::path::Path) -> Result<Self, MetaError> {
        let sm = Self::new(crate::store::RocksStore::open(dir, tables::ALL)?);
        let started = std::time::Instant::now();
        if let Some(buckets) = sm.recount_usage_if_stale()? {
            tracing::info!(
                buckets,
                seconds = started.elapsed().as_secs_f64(),
                "counted bucket usage from the object tables (written by an older build)"
            );
        }
        Ok(sm)
    }
}

impl<S: MetaStore> StateMachine<S> {
    /// Rewrites the `bucket_usage` table from a count of the object tables
    /// when its `bucket_usage_at` mark is not the applied index (a data
    /// directory from a build that did not keep it); the number of buckets
    /// counted, or `None` when the table was current. Errors: storage.
    pub fn recount_usage_if_stale(&self) -> Result<Option<usize>, MetaError> {
        let _one_writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = self.store.read();
        let applied = snapshot.counter(counter::APPLIED)?;
        if snapshot.counter(counter::USAGE_AT)? == applied {
            return Ok(None);
        }
        let counted = usage::recount(&*snapshot)?;
        let mut batch = Batch::new(&*snapshot);
        let mut tx = Txn::new(&mut batch);
        let mut stale = Vec::new();
        tx.scan(tables::BUCKET_USAGE, &[], |_, bucket, _| {
            stale.push(bucket);
            Ok(crate::store::Step::Continue)
        })?;
        for bucket in stale.iter().filter(|b| !counted.contains_key(*b)) {
            tx.delete(tables::BUCKET_USAGE, bucket)?;
        }
        for (bucket, u) in &counted {
            tx.put(tables::BUCKET_USAGE, bucket, u)?;
        }
        tx.put(COUNTERS, &counter::USAGE_AT.to_string(), &applied)?;
        tx.finish()?;
        let writes = batch.finish()?;
        drop(snapshot);
        self.store.write(writes)?;
        Ok(Some(counted.len()))
    }
}

impl StateMachine<crate::store::MemStore> {
    /// A state machine in memory, for tests and the simulator.
    pub fn in_memory() -> Self {
        Self::new(crate::store::MemStore::new(tables::ALL))
    }
}

/// Counters and recorded outcomes, over any view.
pub trait StateQueries: Read {
    fn counter(&self, name: &str) -> Result<u64, MetaError> {
        Ok(self.get(COUNTERS, &name.to_string())?.unwrap_or(0))
    }

    /// The recorded outcome of entry `index`, if still kept.
    fn outcome(&self, index: u64) -> Result<Option<RecordedOutcome>, MetaError> {
        self.get(OUTCOMES, &index)
    }
}

impl<R: Read + ?Sized> StateQueries for R {}

/// Every query trait, for `use tessera_meta::state::prelude::*`.
pub mod prelude {
    pub use super::StateQueries;
    pub use super::access::AccessQueries;
    pub use super::admin_tokens::AdminTokenQueries;
    pub use super::bucket_access::BucketAccessQueries;
    pub use super::buckets::BucketQueries;
    pub use super::chunks::ChunkQueries;
    pub use super::cluster::ClusterQueries;
    pub use super::fsview::FsQueries;
    pub use super::healing::HealingQueries;
    pub use super::lifecycle::LifecycleQueries;
    pub use super::multipart::MultipartQueries;
    pub use super::object_lock::ObjectLockQueries;
    pub use super::objects::ObjectQueries;
    pub use super::storage_classes::StorageClassQueries;
    pub use super::tags::TagQueries;
    pub use super::usage::UsageQueries;
    pub use super::versions::VersionQueries;
    pub use super::volumes::VolumeQueries;
}

#[cfg(test)]
mod tests {
    use super::prelude::*;
    use super::testkit::*;
    use super::*;
    use tessera_types::Policy;

    #[test]
    fn a_refused_command_advances_the_applied_index_and_records_its_refusal() {
        let t = Kit::new();
        t.bucket("bkt");
        assert_eq!(t.sm.applied_index().unwrap(), 1);
        let refusal = t.put("nope", "k", inline(b"x")).unwrap_err();
        assert_eq!(refusal.kind, Refused::NoSuchBucket);
        let r = t.sm.read();
        assert_eq!(r.counter(tables::counter::APPLIED).unwrap(), 2);
        assert_eq!(r.outcome(1).unwrap(), Some(RecordedOutcome::Applied));
        assert_eq!(
            r.outcome(2).unwrap(),
            Some(RecordedOutcome::Refused(refusal))
        );
        assert_eq!(r.counter(tables::counter::OBJECTS).unwrap(), 0);
        drop(r);
        // Entries at or below the applied index are not applied again.
        assert!(t.sm.apply(2, &Command::RequestScrub).is_err());
        assert_eq!(t.sm.read().counter(tables::counter::SCRUB_SEQ).unwrap(), 0);
    }

    #[test]
    fn one_batch_applies_commands_that_build_on_each_other() {
        let sm = StateMachine::in_memory();
        let create = Command::CreateBucket {
            name: "bkt".into(),
            policy: Policy::default(),
            at_ms: 1,
        };
        let put = |key: &str, body: &[u8]| Command::CommitObject {
            bucket: "bkt".into(),
            key: key.into(),
            object: inline(body),
            at_ms: 2,
            condition: tessera_proto::WriteCondition::Absent,
        };
        let (a, b, a_again) = (put("a", b"1"), put("b", b"2"), put("a", b"3"));
        let rename = Command::Rename {
            bucket: "bkt".into(),
            from: "b".into(),
            to: "c".into(),
            replace: false,
            keep_dir: None,
            at_ms: 3,
        };
        let delete = Command::DeleteBucket { name: "bkt".into() };
        let entries: Vec<(u64, &Command)> = vec![
            (1, &create),
            (2, &a),
            (3, &b),
            (4, &a_again),
            (5, &rename),
            (6, &delete),
        ];
        let out = sm.apply_batch(&entries).unwrap();
        assert!(matches!(out[0], Ok(Applied::Bucket(_))));
        assert!(matches!(out[1], Ok(Applied::Object(_))));
        assert!(matches!(out[2], Ok(Applied::Object(_))));
        // The later put sees the earlier one of the same batch.
        assert_eq!(
            out[3].as_ref().unwrap_err().kind,
            Refused::PreconditionFailed
        );
        assert_eq!(out[4], Ok(Applied::Renamed { objects: 1 }));
        assert_eq!(out[5].as_ref().unwrap_err().kind, Refused::BucketNotEmpty);
        let r = sm.read();
        assert_eq!(r.counter(tables::counter::APPLIED).unwrap(), 6);
        let all = r.list("bkt", "", None, None, 10).unwrap();
        assert_eq!(keys(&all), ["a", "c"]);
        assert_eq!(r.object("bkt", "a").unwrap().data, inline(b"1").data);
        assert_eq!(r.counter(tables::counter::OBJECTS).unwrap(), 2);
    }

    #[cfg(feature = "server")]
    #[test]
    fn the_rocksdb_store_keeps_state_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let sm = StateMachine::open(dir.path()).unwrap();
            let create = Command::CreateBucket {
                name: "bkt".into(),
                policy: Policy::default(),
                at_ms: 1,
            };
            sm.apply(1, &create).unwrap().unwrap();
            assert!(sm.apply(2, &create).unwrap().is_err());
        }
        let sm = StateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.applied_index().unwrap(), 2);
        assert_eq!(sm.read().buckets().unwrap().len(), 1);
    }
}
