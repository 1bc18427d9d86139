//! One command's transaction: reads see the batch so far plus this command's
//! own writes; counter changes are summed and written once at the end; a
//! refused command's transaction is dropped and leaves nothing.

use std::collections::BTreeMap;

use serde::Serialize;
use tessera_types::NodeId;

use super::StateQueries;
use super::tables::{COUNTERS, NODE_STATS};
use crate::MetaError;
use crate::store::{
    Cursor, KeyCodec, Overlay, Read, ReadView, Table, ValueReader, WriteSet, encode_value,
};

pub struct Txn<'a> {
    view: Overlay<'a>,
    /// Counter deltas of this command.
    deltas: BTreeMap<&'static str, i64>,
    /// Per-node (fragments, bytes) deltas.
    node_deltas: BTreeMap<NodeId, (i64, i64)>,
}

impl<'a> Txn<'a> {
    pub fn new(base: &'a dyn ReadView) -> Self {
        Txn {
            view: Overlay::new(base),
            deltas: BTreeMap::new(),
            node_deltas: BTreeMap::new(),
        }
    }

    pub fn put<K: KeyCodec, V: Serialize>(
        &mut self,
        t: Table<K, V>,
        k: &K,
        v: &V,
    ) -> Result<(), MetaError> {
        self.view.put_raw(t.name, k.encode(), encode_value(v)?);
        Ok(())
    }

    pub fn delete<K: KeyCodec, V>(&mut self, t: Table<K, V>, k: &K) -> Result<(), MetaError> {
        self.view.delete_raw(t.name, k.encode());
        Ok(())
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

    /// This command's changes, counters included.
    pub fn finish(mut self) -> Result<WriteSet, MetaError> {
        for (name, delta) in std::mem::take(&mut self.deltas) {
            if delta == 0 {
                continue;
            }
            let now = self.view.counter(name)?;
            let v = encode_value(&now.saturating_add_signed(delta))?;
            self.view
                .put_raw(COUNTERS.name, name.to_string().encode(), v);
        }
        for (node, (fragments, bytes)) in std::mem::take(&mut self.node_deltas) {
            let mut s = self.view.get(NODE_STATS, &node)?.unwrap_or_default();
            s.fragments = s.fragments.saturating_add_signed(fragments);
            s.bytes = s.bytes.saturating_add_signed(bytes);
            self.view
                .put_raw(NODE_STATS.name, node.encode(), encode_value(&s)?);
        }
        Ok(self.view.into_writes())
    }
}

impl ReadView for Txn<'_> {
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
}
