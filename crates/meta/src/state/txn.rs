//! One command's transaction: it writes straight into its batch's overlay,
//! so reads see the batch so far plus this command's own writes; counter
//! changes are summed and written once at the end; a refused command's
//! transaction is dropped, which takes back everything it wrote. Node
//! stats are summed over the whole batch and written once at its end (a
//! batch of commits that place a million fragments touches each node's
//! stats once, not once per command), and reads through the batch see them
//! summed. Every put or delete of `objects` or `versions` also changes its
//! bucket's usage (see `usage.rs`), summed per command and written at its
//! `finish`, so no command can change objects without the usage following.

use std::collections::BTreeMap;

use serde::Serialize;
use tessera_types::NodeId;

use super::StateQueries;
use super::tables::{BUCKET_USAGE, COUNTERS, NODE_STATS, NodeStats};
use super::usage::{self, UsageDelta};
use crate::MetaError;
use crate::store::{
    Cursor, KeyCodec, Overlay, Read, ReadView, Table, Undo, ValueReader, WriteSet, encode_value,
};

/// Per-node (fragments, bytes) changes.
type NodeDeltas = BTreeMap<NodeId, (i64, i64)>;

/// The commands of one write batch so far: their writes over the
/// snapshot `'a`, and their node stats changes, kept as sums until
/// [`Batch::finish`].
pub struct Batch<'a> {
    writes: Overlay<'a>,
    node_deltas: NodeDeltas,
}

impl<'a> Batch<'a> {
    pub fn new(base: &'a dyn ReadView) -> Self {
        Batch {
            writes: Overlay::new(base),
            node_deltas: NodeDeltas::new(),
        }
    }

    /// Every change of the batch, node stats included.
    pub fn finish(mut self) -> Result<WriteSet, MetaError> {
        for (node, delta) in std::mem::take(&mut self.node_deltas) {
            let s = self.stats_with(node, delta)?;
            self.writes
                .put_raw(NODE_STATS.name, node.encode(), encode_value(&s)?);
        }
        Ok(self.writes.into_writes())
    }

    /// A node's stats with the batch's changes, encoded; `None` when the
    /// batch has none for it (the stored value stands).
    fn summed_stats(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        let node = NodeId::decode(key)?;
        let Some(&delta) = self.node_deltas.get(&node) else {
            return Ok(None);
        };
        encode_value(&self.stats_with(node, delta)?).map(Some)
    }

    /// A node's stored stats (as the batch's own writes leave them) plus
    /// `(fragments, bytes)`, never below zero.
    fn stats_with(
        &self,
        node: NodeId,
        (fragments, bytes): (i64, i64),
    ) -> Result<NodeStats, MetaError> {
        let mut s = self.writes.get(NODE_STATS, &node)?.unwrap_or_default();
        s.fragments = s.fragments.saturating_add_signed(fragments);
        s.bytes = s.bytes.saturating_add_signed(bytes);
        Ok(s)
    }
}

impl ReadView for Batch<'_> {
    fn get_raw(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        if table == NODE_STATS.name
            && let Some(v) = self.summed_stats(key)?
        {
            return Ok(Some(v));
        }
        self.writes.get_raw(table, key)
    }

    fn contains_raw(&self, table: &'static str, key: &[u8]) -> Result<bool, MetaError> {
        if table == NODE_STATS.name && self.node_deltas.contains_key(&NodeId::decode(key)?) {
            return Ok(true);
        }
        self.writes.contains_raw(table, key)
    }

    fn read_raw(
        &self,
        table: &'static str,
        key: &[u8],
        read: ValueReader,
    ) -> Result<bool, MetaError> {
        if table == NODE_STATS.name
            && let Some(v) = self.summed_stats(key)?
        {
            return read(&v).map(|()| true);
        }
        self.writes.read_raw(table, key, read)
    }

    fn cursor(&self, table: &'static str) -> Result<Box<dyn Cursor + '_>, MetaError> {
        if table == NODE_STATS.name && !self.node_deltas.is_empty() {
            // No command walks node stats; one that did would need the
            // sums merged into the walk.
            return Err(MetaError::Internal(
                "node stats are not walked inside a write batch".into(),
            ));
        }
        self.writes.cursor(table)
    }

    fn cursor_below(
        &self,
        table: &'static str,
        upper: &[u8],
    ) -> Result<Box<dyn Cursor + '_>, MetaError> {
        if table == NODE_STATS.name {
            return self.cursor(table);
        }
        self.writes.cursor_below(table, upper)
    }
}

/// `'b` is the borrow of the batch, `'a` the snapshot under it.
pub struct Txn<'b, 'a> {
    view: &'b mut Batch<'a>,
    /// What this command's writes replaced in the batch, to take them back
    /// if it is refused (or fails) before `finish`.
    undo: Vec<Undo>,
    finished: bool,
    /// Counter deltas of this command.
    deltas: BTreeMap<&'static str, i64>,
    /// Per-node (fragments, bytes) deltas, added to the batch's at `finish`.
    node_deltas: NodeDeltas,
    /// Per-bucket usage changes of this command.
    usage: BTreeMap<String, UsageDelta>,
}

impl<'b, 'a> Txn<'b, 'a> {
    pub fn new(batch: &'b mut Batch<'a>) -> Self {
        Txn {
            view: batch,
            undo: Vec::new(),
            finished: false,
            deltas: BTreeMap::new(),
            node_deltas: NodeDeltas::new(),
            usage: BTreeMap::new(),
        }
    }

    pub fn put<K: KeyCodec, V: Serialize>(
        &mut self,
        t: Table<K, V>,
        k: &K,
        v: &V,
    ) -> Result<(), MetaError> {
        let value = encode_value(v)?;
        let key = k.encode();
        self.count_usage(t.name, &key, Some(&value))?;
        self.set(t.name, key, Some(value));
        Ok(())
    }

    pub fn delete<K: KeyCodec, V>(&mut self, t: Table<K, V>, k: &K) -> Result<(), MetaError> {
        let key = k.encode();
        self.count_usage(t.name, &key, None)?;
        self.set(t.name, key, None);
        Ok(())
    }

    /// Before `table[key]` becomes `value`: the bucket usage it changes.
    fn count_usage(
        &mut self,
        table: &'static str,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), MetaError> {
        if !usage::tracks(table) {
            return Ok(());
        }
        let (bucket, delta) = usage::change(&*self.view, table, key, value)?;
        if !delta.is_zero() {
            self.usage.entry(bucket).or_default().merge(delta);
        }
        Ok(())
    }

    fn set(&mut self, table: &'static str, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.view
            .writes
            .set_journaled(table, key, value, &mut self.undo);
    }

    /// Adds `delta` to a counter (never below zero).
    pub fn add(&mut self, name: &'static str, delta: i64) {
        *self.deltas.entry(name).or_default() += delta;
    }

    /// Keeps a node's fragment and byte counts in step.
    pub fn add_node(&mut self, node: NodeId, fragments: i64, bytes: i64) {
        let d = self.node_deltas.entry(node).or_default();
        d.0 += fragments;
        d.1 += bytes;
    }

    /// A counter as this command leaves it so far.
    pub fn counter_now(&self, name: &str) -> Result<u64, MetaError> {
        let stored = self.view.counter(name)?;
        let delta = self.deltas.get(name).copied().unwrap_or(0);
        Ok(stored.saturating_add_signed(delta))
    }

    /// Keeps this command's changes in the batch, counters included.
    pub fn finish(mut self) -> Result<(), MetaError> {
        for (name, delta) in std::mem::take(&mut self.deltas) {
            if delta == 0 {
                continue;
            }
            let now = self.view.counter(name)?;
            let v = encode_value(&now.saturating_add_signed(delta))?;
            self.set(COUNTERS.name, name.to_string().encode(), Some(v));
        }
        for (bucket, delta) in std::mem::take(&mut self.usage) {
            if delta.is_zero() {
                continue;
            }
            let now = self.view.get(BUCKET_USAGE, &bucket)?.unwrap_or_default();
            let v = encode_value(&delta.applied_to(now))?;
            self.set(BUCKET_USAGE.name, bucket.encode(), Some(v));
        }
        for (node, (fragments, bytes)) in std::mem::take(&mut self.node_deltas) {
            let d = self.view.node_deltas.entry(node).or_default();
            d.0 += fragments;
            d.1 += bytes;
        }
        self.finished = true;
        Ok(())
    }
}

impl Drop for Txn<'_, '_> {
    fn drop(&mut self) {
        if !self.finished {
            self.view.writes.roll_back(std::mem::take(&mut self.undo));
        }
    }
}

impl ReadView for Txn<'_, '_> {
    fn get_raw(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        self.view.get_raw(table, key)
    }

    fn contains_raw(&self, table: &'static str, key: &[u8]) -> Result<bool, MetaError> {
        self.view.contains_raw(table, key)
    }

    fn read_raw(
        &self,
        table: &'static str,
        key: &[u8],
        read: ValueReader,
    ) -> Result<bool, MetaError> {
        self.view.read_raw(table, key, read)
    }

    fn cursor(&self, table: &'static str) -> Result<Box<dyn Cursor + '_>, MetaError> {
        self.view.cursor(table)
    }

    fn cursor_below(
        &self,
        table: &'static str,
        upper: &[u8],
    ) -> Result<Box<dyn Cursor + '_>, MetaError> {
        self.view.cursor_below(table, upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tables::ALL;
    use crate::store::{MemStore, MetaStore};

    fn value(ov: &Batch<'_>, key: &str) -> Option<u64> {
        ov.get(COUNTERS, &key.to_string()).unwrap()
    }

    /// A transaction writes into its batch; dropped unfinished, it leaves
    /// the batch exactly as it found it: new keys gone, replaced pending
    /// values and deletions back, counters untouched.
    #[test]
    fn an_unfinished_transaction_leaves_its_batch_as_it_was() {
        let store = MemStore::new(ALL);
        let mut base = WriteSet::default();
        base.set(
            COUNTERS.name,
            "stored".to_string().encode(),
            Some(encode_value(&1u64).unwrap()),
        );
        store.write(base).unwrap();
        let snapshot = store.read();
        let mut batch = Batch::new(&*snapshot);
        {
            let mut tx = Txn::new(&mut batch);
            tx.put(COUNTERS, &"pending".to_string(), &2u64).unwrap();
            tx.put(COUNTERS, &"gone".to_string(), &3u64).unwrap();
            tx.finish().unwrap();
        }
        tx_then_drop(&mut batch);
        assert_eq!(value(&batch, "stored"), Some(1));
        assert_eq!(value(&batch, "pending"), Some(2));
        assert_eq!(value(&batch, "gone"), Some(3));
        assert_eq!(value(&batch, "new"), None);
        // The same writes, finished, stay.
        {
            let mut tx = Txn::new(&mut batch);
            tx.put(COUNTERS, &"new".to_string(), &4u64).unwrap();
            tx.delete(COUNTERS, &"gone".to_string()).unwrap();
            tx.add("stored", 5);
            tx.finish().unwrap();
        }
        assert_eq!(value(&batch, "new"), Some(4));
        assert_eq!(value(&batch, "gone"), None);
        assert_eq!(value(&batch, "stored"), Some(6));
    }

    /// Writes every kind of change, reading its own writes back, and is
    /// dropped.
    fn tx_then_drop(batch: &mut Batch<'_>) {
        let mut tx = Txn::new(batch);
        tx.put(COUNTERS, &"new".to_string(), &10u64).unwrap();
        tx.put(COUNTERS, &"new".to_string(), &11u64).unwrap();
        tx.put(COUNTERS, &"pending".to_string(), &12u64).unwrap();
        tx.delete(COUNTERS, &"gone".to_string()).unwrap();
        tx.put(COUNTERS, &"stored".to_string(), &13u64).unwrap();
        tx.delete(COUNTERS, &"stored".to_string()).unwrap();
        tx.add("stored", 7);
        assert_eq!(tx.get(COUNTERS, &"new".to_string()).unwrap(), Some(11));
        assert_eq!(tx.get(COUNTERS, &"gone".to_string()).unwrap(), None);
    }

    /// Node stats changes are summed over the batch: reads through it see
    /// the sum, a dropped transaction adds nothing, and the batch writes
    /// each node's stats once.
    #[test]
    fn node_stats_are_summed_over_the_batch() {
        let store = MemStore::new(ALL);
        let node = NodeId(7);
        let mut base = WriteSet::default();
        let stored = super::super::tables::NodeStats {
            fragments: 10,
            bytes: 1000,
        };
        base.set(
            NODE_STATS.name,
            node.encode(),
            Some(encode_value(&stored).unwrap()),
        );
        store.write(base).unwrap();
        let snapshot = store.read();
        let mut batch = Batch::new(&*snapshot);
        for _ in 0..3 {
            let mut tx = Txn::new(&mut batch);
            tx.add_node(node, 2, 200);
            tx.add_node(NodeId(8), 1, 50);
            tx.finish().unwrap();
        }
        {
            let mut tx = Txn::new(&mut batch);
            tx.add_node(node, 100, 100);
        }
        let seen = batch.get(NODE_STATS, &node).unwrap().unwrap();
        assert_eq!((seen.fragments, seen.bytes), (16, 1600));
        assert!(batch.contains(NODE_STATS, &NodeId(8)).unwrap());
        assert!(batch.cursor(NODE_STATS.name).is_err());
        let writes = batch.finish().unwrap();
        assert_eq!(writes.len(), 2);
        drop(snapshot);
        store.write(writes).unwrap();
        let r = store.read();
        let after = r.get(NODE_STATS, &node).unwrap().unwrap();
        assert_eq!((after.fragments, after.bytes), (16, 1600));
        let new = r.get(NODE_STATS, &NodeId(8)).unwrap().unwrap();
        assert_eq!((new.fragments, new.bytes), (3, 150));
    }
}
