//! The Raft log on RocksDB (a database of its own beside the state's, so
//! that installing a snapshot can replace the state without touching the
//! log): entries by index, the vote, the committed and last purged log ids.
//!
//! Appends are written at once and made durable by a syncer thread, which
//! syncs once for every append written so far and only then tells Raft
//! they are on disk (openraft's `LogFlushed` callback): many proposals in
//! flight cost one fsync, as meta's group commit did before Raft. The vote
//! is synced before `save_vote` returns: a replica must never forget whom
//! it voted for.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};
use tracing::error;

use super::{NodeId, TypeConfig};
use crate::MetaError;

const ENTRIES: &str = "entries";
const STATE: &str = "state";
const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn read_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::error(e)).into()
}

fn write_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::error(e)).into()
}

/// The log store; clones share the database (a clone is also the log
/// reader that replication tasks use).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: DB,
    to_sync: mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    /// Opens (or creates) the log database at `path` and starts its
    /// syncer. Errors: RocksDB's, or the thread's.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [ENTRIES, STATE]
            .into_iter()
            .map(|t| ColumnFamilyDescriptor::new(t, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let (to_sync, pending) = mpsc::channel();
        let store = LogStore {
            inner: Arc::new(Inner { db, to_sync }),
        };
        let syncer = store.clone();
        std::thread::Builder::new()
            .name("meta-log-syncer".into())
            .spawn(move || syncer.sync_appends(pending))
            .map_err(|e| MetaError::Internal(format!("starting the log syncer: {e}")))?;
        Ok(store)
    }

    fn cf(&self, name: &str) -> StorageResult<&rocksdb::ColumnFamily> {
        self.inner
            .db
            .cf_handle(name)
            .ok_or_else(|| read_err(format!("missing column family {name}")))
    }

    fn get_state<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> StorageResult<Option<T>> {
        let cf = self.cf(STATE)?;
        match self.inner.db.get_pinned_cf(cf, key).map_err(read_err)? {
            Some(v) => Ok(Some(postcard::from_bytes(&v).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn put_state<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        sync: bool,
    ) -> StorageResult<()> {
        let cf = self.cf(STATE)?;
        let bytes = postcard::to_allocvec(value).map_err(write_err)?;
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.inner
            .db
            .put_cf_opt(cf, key, bytes, &opts)
            .map_err(write_err)
    }

    /// Syncs once for every append written so far, then reports them
    /// durable, until the store is dropped.
    fn sync_appends(self, pending: mpsc::Receiver<LogFlushed<TypeConfig>>) {
        // Only a weak hold would let the store close; the thread ends when
        // every sender (the store's clones) is gone.
        let inner = Arc::downgrade(&self.inner);
        drop(self);
        while let Ok(first) = pending.recv() {
            let mut done = vec![first];
            while let Ok(more) = pending.try_recv() {
                done.push(more);
            }
            let result = match inner.upgrade() {
                Some(inner) => inner.db.flush_wal(true).map_err(|e| {
                    error!(error = %e, "syncing the Raft log failed");
                    std::io::Error::other(e.to_string())
                }),
                None => Err(std::io::Error::other("the log store closed")),
            };
            for callback in done {
                let r = match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                };
                callback.log_io_completed(r);
            }
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let cf = self.cf(ENTRIES)?;
        let key = index_key(start);
        let mut out = Vec::new();
        for item in self
            .inner
            .db
            .iterator_cf(cf, IteratorMode::From(&key, Direction::Forward))
        {
            let (k, v) = item.map_err(read_err)?;
            let index = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| read_err("a log key is not 8 bytes"))?,
            );
            if !range.contains(&index) {
                break;
            }
            out.push(postcard::from_bytes(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let purged: Option<LogId<NodeId>> = self.get_state(PURGED)?;
        let cf = self.cf(ENTRIES)?;
        let last = match self.inner.db.iterator_cf(cf, IteratorMode::End).next() {
            Some(item) => {
                let (_, v) = item.map_err(read_err)?;
                let entry: Entry<TypeConfig> = postcard::from_bytes(&v).map_err(read_err)?;
                Some(entry.log_id)
            }
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.put_state(VOTE, vote, true)
            .map_err(|e| StorageIOError::write_vote(AnyError::error(e)).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.get_state(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // Not synced: a lost committed id is learnt again from the leader.
        self.put_state(COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self
            .get_state::<Option<LogId<NodeId>>>(COMMITTED)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.cf(ENTRIES)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = postcard::to_allocvec(&entry).map_err(write_err)?;
            batch.put_cf(cf, index_key(entry.log_id.index), bytes);
        }
        self.inner.db.write(batch).map_err(write_err)?;
        self.inner
            .to_sync
            .send(callback)
            .map_err(|_| write_err("the log syncer stopped"))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // Entries from `log_id.index` on conflict with the leader's log.
        let cf = self.cf(ENTRIES)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, index_key(log_id.index), index_key(u64::MAX));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.inner.db.write_opt(batch, &opts).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // The purged id first: a crash between the two leaves entries that
        // are merely ignored, never a gap that looks like a log.
        self.put_state(PURGED, &log_id, true)?;
        let cf = self.cf(ENTRIES)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, index_key(0), index_key(log_id.index + 1));
        self.inner.db.write(batch).map_err(write_err)
    }
}
