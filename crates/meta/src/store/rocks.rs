//! The store on RocksDB: one column family per table, reads from snapshots,
//! each write set one `WriteBatch` in the WAL, synced at once or by a later
//! `sync` (one fsync for every batch written since the last).

use std::path::Path;

use rocksdb::{
    ColumnFamilyDescriptor, DB, DBRawIteratorWithThreadMode, Options, ReadOptions,
    SnapshotWithThreadMode, WriteBatch, WriteOptions,
};

use super::{Cursor, MetaStore, ReadView, ValueReader, WriteSet};
use crate::MetaError;

pub struct RocksStore {
    db: DB,
}

impl RocksStore {
    /// Opens (or creates) the database at `path` with a column family per
    /// table. Errors: RocksDB's (a locked or damaged database).
    pub fn open(path: &Path, tables: &[&'static str]) -> Result<Self, MetaError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = tables
            .iter()
            .map(|t| ColumnFamilyDescriptor::new(*t, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(RocksStore { db })
    }

    /// Writes a consistent copy of the whole database to `dir` (a RocksDB
    /// checkpoint: hard links to the table files, the memtables flushed
    /// first), which `open` can open as a database of its own. `dir` must
    /// not exist. Errors: RocksDB's.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), MetaError> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, MetaError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| MetaError::Corrupt(format!("missing column family {name}")))
    }
}

impl MetaStore for RocksStore {
    fn read(&self) -> Box<dyn ReadView + '_> {
        Box::new(RocksView {
            store: self,
            snap: self.db.snapshot(),
        })
    }

    fn write(&self, set: WriteSet) -> Result<(), MetaError> {
        self.write_batch(set, true)
    }

    fn write_buffered(&self, set: WriteSet) -> Result<(), MetaError> {
        self.write_batch(set, false)
    }

    fn sync(&self) -> Result<(), MetaError> {
        self.db.flush_wal(true)?;
        Ok(())
    }
}

impl RocksStore {
    fn write_batch(&self, set: WriteSet, sync: bool) -> Result<(), MetaError> {
        let mut wb = WriteBatch::default();
        for (table, changes) in &set.tables {
            let cf = self.cf(table)?;
            for (k, v) in changes {
                match v {
                    Some(v) => wb.put_cf(cf, k, v),
                    None => wb.delete_cf(cf, k),
                }
            }
        }
        let mut opts = WriteOptions::default();
        // An acknowledged command must survive a crash of the machine: synced
        // here, or by `sync` before it is acknowledged.
        opts.set_sync(sync);
        self.db.write_opt(wb, &opts)?;
        Ok(())
    }
}

struct RocksView<'a> {
    store: &'a RocksStore,
    snap: SnapshotWithThreadMode<'a, DB>,
}

impl ReadView for RocksView<'_> {
    fn get_raw(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        let cf = self.store.cf(table)?;
        Ok(self.snap.get_pinned_cf(cf, key)?.map(|v| v.to_vec()))
    }

    fn contains_raw(&self, table: &'static str, key: &[u8]) -> Result<bool, MetaError> {
        let cf = self.store.cf(table)?;
        Ok(self.snap.get_pinned_cf(cf, key)?.is_some())
    }

    fn read_raw(
        &self,
        table: &'static str,
        key: &[u8],
        read: ValueReader,
    ) -> Result<bool, MetaError> {
        let cf = self.store.cf(table)?;
        match self.snap.get_pinned_cf(cf, key)? {
            Some(v) => read(&v).map(|()| true),
            None => Ok(false),
        }
    }

    fn cursor(&self, table: &'static str) -> Result<Box<dyn Cursor + '_>, MetaError> {
        let cf = self.store.cf(table)?;
        Ok(Box::new(RocksCursor {
            it: self.snap.raw_iterator_cf(cf),
        }))
    }

    fn cursor_below(
        &self,
        table: &'static str,
        upper: &[u8],
    ) -> Result<Box<dyn Cursor + '_>, MetaError> {
        let cf = self.store.cf(table)?;
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(upper.to_vec());
        Ok(Box::new(RocksCursor {
            it: self.snap.raw_iterator_cf_opt(cf, opts),
        }))
    }
}

struct RocksCursor<'a> {
    it: DBRawIteratorWithThreadMode<'a, DB>,
}

impl Cursor for RocksCursor<'_> {
    fn seek(&mut self, key: &[u8]) {
        self.it.seek(key);
    }

    fn seek_to_last(&mut self) -> Result<(), MetaError> {
        self.it.seek_to_last();
        Ok(())
    }

    fn next(&mut self) {
        if self.it.valid() {
            self.it.next();
        }
    }

    fn prev(&mut self) -> Result<(), MetaError> {
        if self.it.valid() {
            self.it.prev();
        }
        Ok(())
    }

    fn entry(&self) -> Option<(&[u8], &[u8])> {
        self.it.item()
    }

    fn status(&self) -> Result<(), MetaError> {
        Ok(self.it.status()?)
    }
}
