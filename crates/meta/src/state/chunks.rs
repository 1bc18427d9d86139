//! Chunk records, the index from nodes to the fragments they hold, and
//! garbage: chunks no object refers to any more wait in `garbage` for the
//! grace period, then `PurgeChunks` drops their records and index entries
//! and the nodes find their fragments unreferenced.

use tessera_proto::{
    ChunkPlacement, ChunkRecord, ChunkRef, ExpectedFragment, ObjectData, ObjectInfo,
};
use tessera_types::{ChunkId, NodeId};

use super::tables::{
    CHUNK_PLACEMENTS, CHUNKS, DAMAGED, GARBAGE, GarbageRecord, NODE_FRAGMENTS, NODES, counter,
};
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::keys::{FragmentKey, NodeFragmentKey};
use crate::store::{KeyCodec, Read, Step, Table};

/// Records new chunks and indexes their fragments by node.
pub(super) fn store_chunks(tx: &mut Txn<'_, '_>, chunks: &[ChunkRecord]) -> Result<(), MetaError> {
    for chunk in chunks {
        tx.put(CHUNKS, &chunk.id, chunk)?;
        for (i, f) in chunk.fragments.iter().enumerate() {
            let key = NodeFragmentKey {
                node: f.node,
                chunk: chunk.id,
                index: i as u8,
            };
            tx.put(NODE_FRAGMENTS, &key, &())?;
            tx.add_node(f.node, 1, chunk.fragment_len as i64);
        }
    }
    tx.add(counter::CHUNKS, chunks.len() as i64);
    Ok(())
}

/// Hands an object's chunks to garbage collection. Chunk records and the
/// node index stay until their fragments are gone from the nodes.
pub(super) fn retire(tx: &mut Txn<'_, '_>, old: &ObjectInfo, at_ms: u64) -> Result<(), MetaError> {
    if let ObjectData::Chunks(refs) = &old.data {
        retire_chunks(tx, refs, at_ms)?;
    }
    tx.add(counter::OBJECTS, -1);
    Ok(())
}

pub(super) fn retire_chunks(
    tx: &mut Txn<'_, '_>,
    refs: &[ChunkRef],
    at_ms: u64,
) -> Result<(), MetaError> {
    let ids: Vec<ChunkId> = refs.iter().map(|r| r.id).collect();
    retire_chunk_ids(tx, &ids, at_ms)
}

/// Hands chunks to garbage collection by id.
pub(super) fn retire_chunk_ids(
    tx: &mut Txn<'_, '_>,
    ids: &[ChunkId],
    at_ms: u64,
) -> Result<(), MetaError> {
    for id in ids {
        tx.put(GARBAGE, id, &GarbageRecord { since_ms: at_ms })?;
        tx.add(counter::GARBAGE, 1);
        if let Some(rec) = tx.get(CHUNKS, id)? {
            let n = rec.fragments.len() as i64;
            tx.add(counter::GARBAGE_FRAGMENTS, n);
            tx.add(counter::GARBAGE_BYTES, n * rec.fragment_len as i64);
        }
    }
    Ok(())
}

/// A new chunk's record: a fresh id, a valid policy, one fragment per slot,
/// each on a distinct known node. Errors: `BadRequest`, `InvalidPolicy`.
pub(super) fn check_chunk_record(tx: &Txn<'_, '_>, c: &ChunkRecord) -> Result<(), MetaError> {
    let bad = |m: String| refuse(Refused::BadRequest, m);
    if tx.contains(CHUNKS, &c.id)? {
        return Err(bad(format!("chunk id {} is already in use", c.id)));
    }
    c.policy
        .validate()
        .map_err(|e| refuse(Refused::InvalidPolicy, e.to_string()))?;
    if c.fragments.len() != c.policy.fragments() {
        return Err(bad(format!(
            "chunk {} has {} fragments, {} needs {}",
            c.id,
            c.fragments.len(),
            c.policy,
            c.policy.fragments()
        )));
    }
    for (i, f) in c.fragments.iter().enumerate() {
        // At most 48 fragments: looking back costs less than hashing.
        if c.fragments[..i].iter().any(|g| g.node == f.node) {
            return Err(bad(format!(
                "chunk {} places two fragments on node {}",
                c.id, f.node
            )));
        }
        if !tx.contains(NODES, &f.node)? {
            return Err(bad(format!("chunk {} names unknown node {}", c.id, f.node)));
        }
    }
    Ok(())
}

/// Drops the records of garbage chunks (ids not in garbage are skipped).
pub(super) fn purge(tx: &mut Txn<'_, '_>, ids: &[ChunkId]) -> Result<Applied, MetaError> {
    for id in ids {
        if !tx.contains(GARBAGE, id)? {
            continue;
        }
        tx.delete(GARBAGE, id)?;
        tx.add(counter::GARBAGE, -1);
        let Some(rec) = tx.get(CHUNKS, id)? else {
            continue;
        };
        tx.delete(CHUNKS, id)?;
        tx.add(counter::CHUNKS, -1);
        let n = rec.fragments.len() as i64;
        tx.add(counter::GARBAGE_FRAGMENTS, -n);
        tx.add(counter::GARBAGE_BYTES, -n * rec.fragment_len as i64);
        for (i, f) in rec.fragments.iter().enumerate() {
            let index = i as u8;
            let key = NodeFragmentKey {
                node: f.node,
                chunk: *id,
                index,
            };
            tx.delete(NODE_FRAGMENTS, &key)?;
            tx.delete(DAMAGED, &FragmentKey { chunk: *id, index })?;
            tx.add_node(f.node, -1, -(rec.fragment_len as i64));
        }
    }
    Ok(Applied::Done)
}

/// Queries of chunk records, the node index and garbage.
pub trait ChunkQueries: Read {
    /// Records in the order asked. Errors: `NotFound` for an id without one.
    fn chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkRecord>, MetaError> {
        ids.iter()
            .map(|id| {
                self.get(CHUNKS, id)?
                    .ok_or_else(|| refuse(Refused::NotFound, format!("no chunk record {id}")))
            })
            .collect()
    }

    fn chunk(&self, id: ChunkId) -> Result<Option<ChunkRecord>, MetaError> {
        self.get(CHUNKS, &id)
    }

    fn is_garbage(&self, id: ChunkId) -> Result<bool, MetaError> {
        self.contains(GARBAGE, &id)
    }

    /// Whether the index places any fragment on `node`.
    fn holds_fragments(&self, node: NodeId) -> Result<bool, MetaError> {
        let mut any = false;
        self.scan(
            NODE_FRAGMENTS,
            &node.encode(),
            |_, k: NodeFragmentKey, ()| {
                any = k.node == node;
                Ok(Step::Stop)
            },
        )?;
        Ok(any)
    }

    /// The (chunk, index) of every fragment the index places on `node`.
    fn fragments_on(&self, node: NodeId) -> Result<Vec<(ChunkId, u8)>, MetaError> {
        let mut out = Vec::new();
        self.scan(
            NODE_FRAGMENTS,
            &node.encode(),
            |_, k: NodeFragmentKey, ()| {
                if k.node != node {
                    return Ok(Step::Stop);
                }
                out.push((k.chunk, k.index));
                Ok(Step::Continue)
            },
        )?;
        Ok(out)
    }

    /// The fragments the records place on `node`, after `after`, with
    /// whether more follow.
    fn node_fragments(
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
        self.scan(NODE_FRAGMENTS, &start, |_, k: NodeFragmentKey, ()| {
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
            if let Some(rec) = self.get(CHUNKS, &k.chunk)?
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
    fn unknown_fragments(
        &self,
        node: NodeId,
        items: &[(ChunkId, u8)],
    ) -> Result<Vec<(ChunkId, u8)>, MetaError> {
        let mut out = Vec::new();
        for &(chunk, index) in items {
            let key = NodeFragmentKey { node, chunk, index };
            if !self.contains(NODE_FRAGMENTS, &key)? {
                out.push((chunk, index));
            }
        }
        Ok(out)
    }

    /// Live (not garbage) chunk records in id order after `after`: `limit`
    /// of them, or fewer only when the table has no more.
    fn scan_chunks(
        &self,
        after: Option<ChunkId>,
        limit: usize,
    ) -> Result<Vec<ChunkRecord>, MetaError> {
        live_page(self, CHUNKS, after, limit)
    }

    /// `scan_chunks`, but only where each chunk's fragments are (its
    /// hashes skipped): what walks over every chunk (a rebalancing pass, a
    /// check) need, at a fraction of the cost of whole records.
    fn scan_placements(
        &self,
        after: Option<ChunkId>,
        limit: usize,
    ) -> Result<Vec<ChunkPlacement>, MetaError> {
        live_page(self, CHUNK_PLACEMENTS, after, limit)
    }

    /// Garbage chunks that became garbage before `cutoff_ms`, at most
    /// `limit`.
    fn garbage_before(&self, cutoff_ms: u64, limit: usize) -> Result<Vec<ChunkId>, MetaError> {
        let mut out = Vec::new();
        self.scan(GARBAGE, &[], |_, id: ChunkId, g: GarbageRecord| {
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

    /// When the oldest garbage chunk became garbage (scans the table).
    fn oldest_garbage_ms(&self) -> Result<Option<u64>, MetaError> {
        let mut oldest: Option<u64> = None;
        self.scan(GARBAGE, &[], |_, _: ChunkId, g: GarbageRecord| {
            oldest = Some(oldest.map_or(g.since_ms, |o| o.min(g.since_ms)));
            Ok(Step::Continue)
        })?;
        Ok(oldest)
    }
}

/// Values of the chunk table (as `table` decodes them) in id order after
/// `after`, skipping garbage: `limit` of them, or fewer only when the
/// table has no more. Garbage is skipped while scanning, so that a short
/// page means the end (a page cut short by garbage once made every
/// rebalancing pass stop early); both tables are keyed by the chunk id, so
/// the garbage table is walked alongside rather than looked up per chunk.
fn live_page<R: Read + ?Sized, V: serde::de::DeserializeOwned>(
    r: &R,
    table: Table<ChunkId, V>,
    after: Option<ChunkId>,
    limit: usize,
) -> Result<Vec<V>, MetaError> {
    let mut start = Vec::new();
    if let Some(a) = after {
        start = a.encode();
        start.push(0);
    }
    let mut page = Vec::new();
    let mut garbage = r.cursor(GARBAGE.name)?;
    garbage.seek(&start);
    r.scan(table, &start, |raw, _: ChunkId, v| {
        if page.len() == limit {
            return Ok(Step::Stop);
        }
        while garbage.entry().is_some_and(|(g, _)| g < raw) {
            garbage.next();
        }
        if garbage.entry().is_none_or(|(g, _)| g != raw) {
            page.push(v);
        }
        Ok(Step::Continue)
    })?;
    garbage.status()?;
    Ok(page)
}

impl<R: Read + ?Sized> ChunkQueries for R {}

#[cfg(test)]
mod tests {
    use super::super::StateQueries;
    use super::super::cluster::ClusterQueries;
    use super::super::testkit::*;
    use super::*;

    #[test]
    fn garbage_is_purged_after_its_time_with_its_index() {
        let t = Kit::new();
        let nodes = t.nodes(6);
        t.bucket("bkt");
        t.put("bkt", "a", t.one_chunk(1, &nodes)).unwrap();
        t.put("bkt", "b", t.one_chunk(2, &nodes)).unwrap();
        t.ok(Command::DeleteObject {
            bucket: "bkt".into(),
            key: "b".into(),
            at_ms: 5,
        });
        let r = t.sm.read();
        assert!(r.garbage_before(5, 10).unwrap().is_empty());
        let old = r.garbage_before(6, 10).unwrap();
        assert_eq!(old, vec![ChunkId([2; 16])]);
        assert_eq!(r.oldest_garbage_ms().unwrap(), Some(5));
        // A live chunk in the list is left alone.
        drop(r);
        t.ok(Command::PurgeChunks {
            ids: vec![ChunkId([2; 16]), ChunkId([1; 16])],
        });
        let r = t.sm.read();
        assert!(r.chunks(&[ChunkId([2; 16])]).is_err());
        assert!(r.chunk(ChunkId([1; 16])).unwrap().is_some());
        assert_eq!(r.counter(counter::CHUNKS).unwrap(), 1);
        assert_eq!(r.counter(counter::GARBAGE).unwrap(), 0);
        assert_eq!(r.counter(counter::GARBAGE_BYTES).unwrap(), 0);
        assert_eq!(r.node_stats(nodes[0]).unwrap().fragments, 1);
        let unknown = r
            .unknown_fragments(nodes[0], &[(ChunkId([1; 16]), 0), (ChunkId([2; 16]), 0)])
            .unwrap();
        assert_eq!(unknown, vec![(ChunkId([2; 16]), 0)]);
        let (held, more) = r.node_fragments(nodes[0], None, 10).unwrap();
        assert_eq!((held.len(), more), (1, false));
        assert_eq!(
            r.fragments_on(nodes[1]).unwrap(),
            vec![(ChunkId([1; 16]), 1)]
        );
        assert_eq!(r.scan_chunks(None, 10).unwrap().len(), 1);
    }

    #[test]
    fn a_chunk_walk_pages_past_garbage_to_the_end() {
        let t = Kit::new();
        let nodes = t.nodes(6);
        t.bucket("bkt");
        // Chunks 1..=12: the first three and then every other one become
        // garbage, so garbage comes in runs and between live chunks.
        for id in 1..=12u8 {
            t.put("bkt", &format!("k{id}"), t.one_chunk(id, &nodes))
                .unwrap();
        }
        for id in [1, 2, 3, 5, 7, 9, 11u8] {
            t.ok(Command::DeleteObject {
                bucket: "bkt".into(),
                key: format!("k{id}"),
                at_ms: 1,
            });
        }
        let r = t.sm.read();
        let walk = |limit: usize| {
            let (mut records, mut placements) = (Vec::new(), Vec::new());
            let mut after = None;
            loop {
                let page = r.scan_chunks(after, limit).unwrap();
                let places = r.scan_placements(after, limit).unwrap();
                records.extend(page.iter().cloned());
                placements.extend(places);
                let Some(last) = page.last() else { break };
                after = Some(last.id);
                // Only the last page may be short.
                if page.len() < limit {
                    break;
                }
            }
            (records, placements)
        };
        for limit in [1, 2, 3, 100] {
            let (records, placements) = walk(limit);
            let ids: Vec<u8> = records.iter().map(|c| c.id.0[0]).collect();
            assert_eq!(ids, vec![4, 6, 8, 10, 12], "pages of {limit}");
            assert_eq!(placements.len(), records.len());
            for (p, c) in placements.iter().zip(&records) {
                let nodes: Vec<NodeId> = c.fragments.iter().map(|f| f.node).collect();
                assert_eq!((p.id, p.nodes.as_slice()), (c.id, nodes.as_slice()));
            }
        }
    }
}
