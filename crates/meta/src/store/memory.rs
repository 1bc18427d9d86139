//! The store in memory, for unit tests and the simulator: ordered maps per
//! table, shared copy-on-write. A read view holds the maps as they were; a
//! write while views are open copies them first (cheap for tests, and the
//! simulator never holds a view across a write: `copies` tells). "Durable"
//! means kept in this process.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use smallvec::SmallVec;

use super::{Cursor, MetaStore, ReadView, ValueReader, WriteSet};
use crate::MetaError;

type Tables = BTreeMap<&'static str, BTreeMap<Key, Value>>;

/// A stored value: short ones (the index's empty values, counters, node
/// stats: most entries) inline, without an allocation of their own.
type Value = SmallVec<[u8; 16]>;

fn value_of(v: Vec<u8>) -> Value {
    if v.len() <= 16 {
        Value::from_slice(&v)
    } else {
        Value::from_vec(v)
    }
}

/// A key ordered like its bytes, held inline up to 32 bytes (every id
/// key, most names): comparing keys behind pointers cost a cache miss per
/// comparison, most of the simulator's time at a million chunks.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key(SmallVec<[u8; 32]>);

impl Key {
    fn of(bytes: &[u8]) -> Key {
        Key(SmallVec::from_slice(bytes))
    }
}

pub struct MemStore {
    tables: RwLock<Arc<Tables>>,
    copies: AtomicU64,
}

impl MemStore {
    pub fn new(tables: &[&'static str]) -> Self {
        MemStore {
            tables: RwLock::new(Arc::new(
                tables.iter().map(|t| (*t, BTreeMap::new())).collect(),
            )),
            copies: AtomicU64::new(0),
        }
    }

    /// Entries in all tables: for memory accounting in the simulator.
    pub fn entries(&self) -> usize {
        let t = self.tables.read().unwrap_or_else(|p| p.into_inner());
        t.values().map(|m| m.len()).sum()
    }

    /// Writes that had to copy every table because a view was open.
    pub fn copies(&self) -> u64 {
        self.copies.load(Ordering::Relaxed)
    }
}

fn missing(table: &str) -> MetaError {
    MetaError::Corrupt(format!("missing table {table}"))
}

impl MetaStore for MemStore {
    fn read(&self) -> Box<dyn ReadView + '_> {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        Box::new(MemView {
            tables: tables.clone(),
        })
    }

    fn write(&self, set: WriteSet) -> Result<(), MetaError> {
        let mut shared = self.tables.write().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = set.tables.keys().find(|t| !shared.contains_key(*t)) {
            return Err(missing(t));
        }
        if Arc::strong_count(&shared) > 1 {
            self.copies.fetch_add(1, Ordering::Relaxed);
        }
        let tables = Arc::make_mut(&mut shared);
        for (table, changes) in set.tables {
            let Some(map) = tables.get_mut(table) else {
                return Err(missing(table));
            };
            for (k, v) in changes {
                match v {
                    Some(v) => map.insert(Key::of(&k), value_of(v)),
                    None => map.remove(&Key::of(&k)),
                };
            }
        }
        Ok(())
    }
}

struct MemView {
    tables: Arc<Tables>,
}

impl ReadView for MemView {
    fn get_raw(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        let map = self.tables.get(table).ok_or_else(|| missing(table))?;
        Ok(map.get(&Key::of(key)).map(|v| v.to_vec()))
    }

    fn contains_raw(&self, table: &'static str, key: &[u8]) -> Result<bool, MetaError> {
        let map = self.tables.get(table).ok_or_else(|| missing(table))?;
        Ok(map.contains_key(&Key::of(key)))
    }

    fn read_raw(
        &self,
        table: &'static str,
        key: &[u8],
        read: ValueReader,
    ) -> Result<bool, MetaError> {
        let map = self.tables.get(table).ok_or_else(|| missing(table))?;
        match map.get(&Key::of(key)) {
            Some(v) => read(v).map(|()| true),
            None => Ok(false),
        }
    }

    fn cursor(&self, table: &'static str) -> Result<Box<dyn Cursor + '_>, MetaError> {
        let map = self.tables.get(table).ok_or_else(|| missing(table))?;
        Ok(Box::new(MemCursor {
            map,
            iter: None,
            here: None,
        }))
    }
}

struct MemCursor<'a> {
    map: &'a BTreeMap<Key, Value>,
    iter: Option<std::collections::btree_map::Range<'a, Key, Value>>,
    here: Option<(&'a Key, &'a Value)>,
}

impl MemCursor<'_> {
    fn forward_from(&mut self, bound: Bound<Key>) {
        let mut iter = self.map.range((bound, Bound::Unbounded));
        self.here = iter.next();
        self.iter = Some(iter);
    }
}

impl Cursor for MemCursor<'_> {
    fn seek(&mut self, key: &[u8]) {
        self.forward_from(Bound::Included(Key::of(key)));
    }

    fn seek_to_last(&mut self) -> Result<(), MetaError> {
        self.here = self.map.iter().next_back();
        self.iter = None;
        Ok(())
    }

    fn next(&mut self) {
        match (&mut self.iter, self.here) {
            (Some(iter), Some(_)) => self.here = iter.next(),
            (None, Some((k, _))) => self.forward_from(Bound::Excluded(k.clone())),
            _ => {}
        }
    }

    fn prev(&mut self) -> Result<(), MetaError> {
        if let Some((k, _)) = self.here {
            self.here = self
                .map
                .range((Bound::Unbounded, Bound::Excluded(k.clone())))
                .next_back();
            self.iter = None;
        }
        Ok(())
    }

    fn entry(&self) -> Option<(&[u8], &[u8])> {
        self.here.map(|(k, v)| (&k.0[..], v.as_slice()))
    }

    fn status(&self) -> Result<(), MetaError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Key;

    #[test]
    fn keys_sort_like_their_bytes() {
        // Every key of up to 10 bytes over {0, 1, 255}, around the 8-byte
        // head where the two comparisons meet.
        let alphabet = [0u8, 1, 255];
        let mut keys: Vec<Vec<u8>> = vec![vec![]];
        let mut frontier = keys.clone();
        for len in 1..=10 {
            let mut next = Vec::new();
            for k in &frontier {
                for &b in &alphabet {
                    let mut k = k.clone();
                    k.push(b);
                    next.push(k);
                }
            }
            // Past the head only a sample: the full set is 88k keys.
            if len > 7 {
                next.retain(|k| k.iter().filter(|&&b| b == 0).count() % 3 == 0);
            }
            keys.extend(next.iter().cloned());
            frontier = next;
        }
        for a in keys.iter().step_by(7) {
            for b in keys.iter().step_by(5) {
                assert_eq!(Key::of(a).cmp(&Key::of(b)), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }
}
