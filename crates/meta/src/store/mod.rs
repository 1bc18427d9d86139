//! A small typed-table layer over RocksDB: one column family per table, keys
//! encoded so that byte order is the order scans need, values versioned and
//! length-checked. Nothing above this module touches RocksDB types directly
//! except through `Batch` and `Store`.

use std::marker::PhantomData;
use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::MetaError;

/// Leading byte of every stored value; a value with another byte is refused,
/// so a format change can never be misread silently.
const VALUE_FORMAT: u8 = 2;

pub trait KeyCodec: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Result<Self, MetaError>;
}

/// A table: a column family with typed keys and values.
pub struct Table<K, V> {
    pub name: &'static str,
    _t: PhantomData<fn(K, V)>,
}

impl<K, V> Table<K, V> {
    pub const fn new(name: &'static str) -> Self {
        Table {
            name,
            _t: PhantomData,
        }
    }
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for Table<K, V> {}

pub fn encode_value<V: Serialize>(v: &V) -> Result<Vec<u8>, MetaError> {
    postcard::to_extend(v, vec![VALUE_FORMAT])
        .map_err(|e| MetaError::Corrupt(format!("encoding value: {e}")))
}

pub fn decode_value<V: DeserializeOwned>(table: &str, bytes: &[u8]) -> Result<V, MetaError> {
    let (&format, rest) = bytes
        .split_first()
        .ok_or_else(|| MetaError::Corrupt(format!("{table}: empty value")))?;
    if format != VALUE_FORMAT {
        return Err(MetaError::Corrupt(format!(
            "{table}: value format {format}, expected {VALUE_FORMAT}"
        )));
    }
    let (v, trailing) =
        postcard::take_from_bytes(rest).map_err(|e| MetaError::Corrupt(format!("{table}: {e}")))?;
    if !trailing.is_empty() {
        return Err(MetaError::Corrupt(format!(
            "{table}: {} trailing bytes in value",
            trailing.len()
        )));
    }
    Ok(v)
}

pub struct Store {
    db: DB,
}

impl Store {
    pub fn open(path: &Path, tables: &[&'static str]) -> Result<Self, MetaError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = tables
            .iter()
            .map(|t| ColumnFamilyDescriptor::new(*t, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Store { db })
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, MetaError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| MetaError::Corrupt(format!("missing column family {name}")))
    }

    pub fn get<K: KeyCodec, V: DeserializeOwned>(
        &self,
        t: Table<K, V>,
        k: &K,
    ) -> Result<Option<V>, MetaError> {
        match self.db.get_pinned_cf(self.cf(t.name)?, k.encode())? {
            Some(bytes) => Ok(Some(decode_value(t.name, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Visits entries from `start` in key order while `visit` returns
    /// `Continue`; `Seek(key)` jumps forward to `key`.
    pub fn scan<K: KeyCodec, V: DeserializeOwned>(
        &self,
        t: Table<K, V>,
        start: &[u8],
        mut visit: impl FnMut(&[u8], K, V) -> Result<Step, MetaError>,
    ) -> Result<(), MetaError> {
        let mut it = self.db.raw_iterator_cf(self.cf(t.name)?);
        it.seek(start);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let raw = k.to_vec();
            let step = visit(&raw, K::decode(&raw)?, decode_value(t.name, v)?)?;
            match step {
                Step::Continue => it.next(),
                Step::Seek(to) => it.seek(to),
                Step::Stop => break,
            }
        }
        it.status()?;
        Ok(())
    }

    /// Visits entries from the end backwards, at most `limit`.
    pub fn scan_rev<K: KeyCodec, V: DeserializeOwned>(
        &self,
        t: Table<K, V>,
        limit: usize,
    ) -> Result<Vec<(K, V)>, MetaError> {
        let mut it = self.db.raw_iterator_cf(self.cf(t.name)?);
        it.seek_to_last();
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if out.len() >= limit {
                break;
            }
            out.push((K::decode(k)?, decode_value(t.name, v)?));
            it.prev();
        }
        it.status()?;
        Ok(out)
    }

    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            wb: WriteBatch::default(),
        }
    }
}

pub enum Step {
    Continue,
    Seek(Vec<u8>),
    Stop,
}

/// Changes applied together or not at all, synced to the WAL on commit.
pub struct Batch<'a> {
    store: &'a Store,
    wb: WriteBatch,
}

impl Batch<'_> {
    pub fn put<K: KeyCodec, V: Serialize>(
        &mut self,
        t: Table<K, V>,
        k: &K,
        v: &V,
    ) -> Result<(), MetaError> {
        self.wb
            .put_cf(self.store.cf(t.name)?, k.encode(), encode_value(v)?);
        Ok(())
    }

    pub fn delete<K: KeyCodec, V>(&mut self, t: Table<K, V>, k: &K) -> Result<(), MetaError> {
        self.wb.delete_cf(self.store.cf(t.name)?, k.encode());
        Ok(())
    }

    pub fn commit(self) -> Result<(), MetaError> {
        let mut opts = WriteOptions::default();
        // An acknowledged command must survive a crash of the machine.
        opts.set_sync(true);
        self.store.db.write_opt(self.wb, &opts)?;
        Ok(())
    }
}
