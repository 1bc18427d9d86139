//! Self-healing state: fragments reported damaged (corrupt or missing),
//! repair commits that point fragments at their new nodes, and the
//! assessment of every chunk touched by a node that is not plainly up and
//! active or by a damage report. The decisions themselves (what a fragment
//! on a down node is, how safe a chunk is, which chunks go first) are
//! `tessera-heal`'s; this module gathers the records they need.

use std::collections::{HashMap, HashSet};

use tessera_heal::{Health, condition, fragment_state};
use tessera_proto::{
    ChunkHealth, ClusterMap, CorruptReport, FragmentMove, FragmentState, NodeAdmin, RepairItem,
};
use tessera_types::{ChunkId, NodeId};

use super::StateQueries;
use super::chunks::ChunkQueries;
use super::cluster::ClusterQueries;
use super::tables::{CHUNK_PLACEMENTS, CHUNKS, CORRUPT, DAMAGED, GARBAGE, NODE_FRAGMENTS, counter};
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::keys::{FragmentKey, NodeFragmentKey};
use crate::store::{KeyCodec, Read, Step};

/// What a fragment on each node that is not plainly up and active is (nodes
/// absent from the map hold `Ok` fragments).
pub type NodeClasses = HashMap<NodeId, FragmentState>;

/// The classes of a cluster map's nodes (`tessera_heal::health::fragment_state`
/// of each node's liveness and admin state), leaving out `Ok` ones.
pub fn node_classes(map: &ClusterMap) -> NodeClasses {
    map.nodes
        .iter()
        .map(|n| (n.id, fragment_state(n.state, n.admin, false)))
        .filter(|(_, class)| *class != FragmentState::Ok)
        .collect()
}

/// The redundancy of every live chunk, and the work that restores it.
#[derive(Debug, Clone, Default)]
pub struct Assessment {
    pub health: ChunkHealth,
    pub pending_fragments: u64,
    pub pending_bytes: u64,
    pub moving_fragments: u64,
    pub moving_bytes: u64,
    /// Repairable chunks, most at risk first (`tessera_heal::plan`).
    pub work: Vec<RepairItem>,
    /// Chunks with fewer than K fragments available (in id order).
    pub lost_chunks: Vec<ChunkId>,
}

pub(super) fn report_corrupt(
    tx: &mut Txn<'_, '_>,
    report: &CorruptReport,
) -> Result<Applied, MetaError> {
    let seq = tx.counter_now(counter::CORRUPT)? + 1;
    tx.put(CORRUPT, &seq, report)?;
    tx.add(counter::CORRUPT, 1);
    // Only a report about where the fragment still is becomes repair work;
    // a late one about a replaced copy does not.
    let current = tx.chunk(report.chunk)?.and_then(|c| {
        c.fragments
            .get(report.index as usize)
            .map(|f| f.node == report.node)
    });
    if current == Some(true) {
        let key = FragmentKey {
            chunk: report.chunk,
            index: report.index,
        };
        tx.put(DAMAGED, &key, report)?;
    }
    Ok(Applied::Done)
}

/// A compare-and-set: each moved fragment must still be where the repairer
/// read it; the new node must be active and hold no other fragment of the
/// chunk; `to == from` records a rewrite in place. Errors: `Conflict` (the
/// chunk moved, vanished or became garbage), `BadRequest`.
pub(super) fn commit_repair(
    tx: &mut Txn<'_, '_>,
    chunk: ChunkId,
    moves: &[FragmentMove],
) -> Result<Applied, MetaError> {
    let conflict = |m: String| refuse(Refused::Conflict, m);
    let Some(mut rec) = tx.get(CHUNKS, &chunk)? else {
        return Err(conflict(format!("chunk {chunk} no longer exists")));
    };
    if tx.contains(GARBAGE, &chunk)? {
        return Err(conflict(format!("chunk {chunk} was deleted")));
    }
    if moves.is_empty() {
        return Err(refuse(Refused::BadRequest, "a repair without moves"));
    }
    let mut holders: HashSet<NodeId> = rec.fragments.iter().map(|f| f.node).collect();
    let len = rec.fragment_len as i64;
    for m in moves {
        let Some(f) = rec.fragments.get_mut(m.index as usize) else {
            return Err(refuse(
                Refused::BadRequest,
                format!("chunk {chunk} has no fragment {}", m.index),
            ));
        };
        if f.node != m.from {
            return Err(conflict(format!(
                "fragment {} of chunk {chunk} is on node {}, not {}",
                m.index, f.node, m.from
            )));
        }
        if tx.node(m.to)?.is_none() {
            return Err(refuse(
                Refused::BadRequest,
                format!("unknown node {}", m.to),
            ));
        }
        if tx.node_admin(m.to)? != NodeAdmin::Active {
            return Err(conflict(format!("node {} takes no new fragments", m.to)));
        }
        // A rotten copy on a healthy node may be rewritten in place.
        if m.to != m.from {
            if !holders.insert(m.to) {
                return Err(refuse(
                    Refused::BadRequest,
                    format!("node {} already holds a fragment of chunk {chunk}", m.to),
                ));
            }
            holders.remove(&m.from);
            f.node = m.to;
            let key = |node| NodeFragmentKey {
                node,
                chunk,
                index: m.index,
            };
            tx.delete(NODE_FRAGMENTS, &key(m.from))?;
            tx.put(NODE_FRAGMENTS, &key(m.to), &())?;
            tx.add_node(m.from, -1, -len);
            tx.add_node(m.to, 1, len);
        }
        tx.delete(
            DAMAGED,
            &FragmentKey {
                chunk,
                index: m.index,
            },
        )?;
        if m.rebuilt {
            tx.add(counter::REBUILT_FRAGMENTS, 1);
            tx.add(counter::REBUILT_BYTES, len);
        } else {
            tx.add(counter::MOVED_FRAGMENTS, 1);
            tx.add(counter::MOVED_BYTES, len);
        }
    }
    tx.put(CHUNKS, &chunk, &rec)?;
    Ok(Applied::Repaired {
        fragments: moves.len() as u64,
        bytes: moves.len() as u64 * rec.fragment_len,
    })
}

/// Queries of damage and chunk health.
pub trait HealingQueries: Read {
    /// The newest corruption reports, newest first.
    fn recent_corrupt(&self, limit: usize) -> Result<Vec<CorruptReport>, MetaError> {
        Ok(self
            .scan_rev(CORRUPT, limit)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Fragment indexes reported damaged, by chunk.
    fn damaged(&self) -> Result<HashMap<ChunkId, Vec<u8>>, MetaError> {
        let mut out: HashMap<ChunkId, Vec<u8>> = HashMap::new();
        self.scan(DAMAGED, &[], |_, k: FragmentKey, _r: CorruptReport| {
            out.entry(k.chunk).or_default().push(k.index);
            Ok(Step::Continue)
        })?;
        Ok(out)
    }

    /// Looks at every chunk with a fragment on a node of `classes` that is
    /// not `Ok`, or reported damaged: counts the live chunks by health and
    /// plans the repair work (at most `limit` chunks, most at risk first).
    /// Costs time in proportion to the affected fragments, not to all
    /// chunks.
    fn assess(&self, classes: &NodeClasses, limit: usize) -> Result<Assessment, MetaError> {
        let damaged = self.damaged()?;
        let mut affected: Vec<ChunkId> = damaged.keys().copied().collect();
        for (node, class) in classes {
            if *class == FragmentState::Ok {
                continue;
            }
            self.scan(
                NODE_FRAGMENTS,
                &node.encode(),
                |_, k: NodeFragmentKey, ()| {
                    if k.node != *node {
                        return Ok(Step::Stop);
                    }
                    affected.push(k.chunk);
                    Ok(Step::Continue)
                },
            )?;
        }
        // In id order the lookups below walk the chunk table forwards.
        affected.sort_unstable();
        affected.dedup();
        // Health needs only where fragments are; whole records (with their
        // hashes) are read for the chunks planned, a few hundred at most.
        let mut a = Assessment::default();
        let mut candidates = Vec::new();
        let mut unhealthy = 0u64;
        for id in affected {
            if self.is_garbage(id)? {
                continue;
            }
            let Some(p) = self.get(CHUNK_PLACEMENTS, &id)? else {
                continue;
            };
            let bad = damaged.get(&id);
            let states: Vec<FragmentState> = p
                .nodes
                .iter()
                .enumerate()
                .map(|(i, node)| {
                    if bad.is_some_and(|b| b.contains(&(i as u8))) {
                        FragmentState::Lost
                    } else {
                        classes.get(node).copied().unwrap_or(FragmentState::Ok)
                    }
                })
                .collect();
            let c = condition(p.policy.required(), &states);
            match c.health {
                Health::Healthy => {}
                Health::Misplaced => a.health.misplaced += 1,
                Health::Degraded => a.health.degraded += 1,
                Health::AtRisk => a.health.at_risk += 1,
                Health::Lost => {
                    a.health.lost += 1;
                    a.lost_chunks.push(id);
                }
            }
            if c.lost + c.down > 0 {
                unhealthy += 1;
            }
            if !c.repairable() {
                continue;
            }
            a.pending_fragments += c.lost as u64;
            a.pending_bytes += c.lost as u64 * p.fragment_len;
            a.moving_fragments += c.moving as u64;
            a.moving_bytes += c.moving as u64 * p.fragment_len;
            candidates.push((id, c, states));
        }
        let total = self
            .counter(counter::CHUNKS)?
            .saturating_sub(self.counter(counter::GARBAGE)?);
        a.health.total = total;
        a.health.healthy = total.saturating_sub(unhealthy);
        a.lost_chunks.sort();
        for (id, _, states) in tessera_heal::plan(candidates, limit) {
            let record = self.chunk(id)?.ok_or_else(|| {
                MetaError::Corrupt(format!("chunk {id} vanished from a snapshot"))
            })?;
            a.work.push(RepairItem { record, states });
        }
        Ok(a)
    }
}

impl<R: Read + ?Sized> HealingQueries for R {}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    fn mv(from: NodeId, to: NodeId) -> FragmentMove {
        FragmentMove {
            index: 0,
            from,
            to,
            rebuilt: true,
        }
    }

    #[test]
    fn repairs_move_fragments_only_from_where_they_are() {
        let t = Kit::new();
        let nodes = t.nodes(7);
        t.bucket("bkt");
        t.put("bkt", "k", t.one_chunk(1, &nodes)).unwrap();
        let chunk = ChunkId([1; 16]);
        // Node 1 is out: its fragment is lost, the chunk degraded.
        let classes: NodeClasses = [(nodes[0], FragmentState::Lost)].into();
        let a = t.sm.read().assess(&classes, 10).unwrap();
        assert_eq!(
            (a.health.total, a.health.degraded, a.pending_fragments),
            (1, 1, 1)
        );
        assert_eq!(a.work[0].states[0], FragmentState::Lost);
        let repair = |m| Command::CommitRepair {
            chunk,
            moves: vec![m],
        };
        // From the wrong node, or onto a node holding another fragment: refused.
        assert_eq!(t.refused(repair(mv(nodes[1], nodes[6]))), Refused::Conflict);
        assert_eq!(
            t.refused(repair(mv(nodes[0], nodes[1]))),
            Refused::BadRequest
        );
        t.ok(repair(mv(nodes[0], nodes[6])));
        let r = t.sm.read();
        assert_eq!(r.chunks(&[chunk]).unwrap()[0].fragments[0].node, nodes[6]);
        assert_eq!(r.node_stats(nodes[0]).unwrap().fragments, 0);
        assert_eq!(r.node_stats(nodes[6]).unwrap().fragments, 1);
        assert_eq!(r.counter(counter::REBUILT_FRAGMENTS).unwrap(), 1);
        let a = r.assess(&classes, 10).unwrap();
        assert_eq!((a.health.healthy, a.pending_fragments), (1, 0));
        drop(r);
        // The same move again finds the fragment gone: a repairer that
        // crashed after its commit and retries changes nothing.
        assert_eq!(t.refused(repair(mv(nodes[0], nodes[6]))), Refused::Conflict);
        // A draining node takes nothing.
        t.ok(Command::SetNodeAdmin {
            node: nodes[0],
            admin: NodeAdmin::Draining,
        });
        assert_eq!(t.refused(repair(mv(nodes[6], nodes[0]))), Refused::Conflict);
    }

    #[test]
    fn damage_reports_rank_work() {
        let t = Kit::new();
        let nodes = t.nodes(7);
        t.bucket("bkt");
        t.put("bkt", "a", t.one_chunk(1, &nodes)).unwrap();
        t.put("bkt", "b", t.one_chunk(2, &nodes)).unwrap();
        let report = |chunk: u8, index: u8, node: NodeId| Command::ReportCorrupt {
            report: CorruptReport {
                chunk: ChunkId([chunk; 16]),
                index,
                node,
                reason: "BLAKE3 mismatch".into(),
                at_ms: 1,
            },
        };
        t.ok(report(1, 0, nodes[0]));
        t.ok(report(2, 0, nodes[0]));
        t.ok(report(2, 1, nodes[1]));
        // A report about a node that no longer holds the fragment is history only.
        t.ok(report(1, 2, nodes[6]));
        let r = t.sm.read();
        assert_eq!(r.recent_corrupt(10).unwrap().len(), 4);
        assert_eq!(r.counter(counter::CORRUPT).unwrap(), 4);
        let a = r.assess(&NodeClasses::new(), 10).unwrap();
        assert_eq!((a.health.degraded, a.health.at_risk), (1, 1));
        assert_eq!(a.pending_fragments, 3);
        // Chunk 2 has no spare fragment left: it goes first.
        assert_eq!(a.work[0].record.id, ChunkId([2; 16]));
        drop(r);
        // Deleting `b` makes its chunk garbage: no longer counted or repaired.
        t.ok(Command::DeleteObject {
            bucket: "bkt".into(),
            key: "b".into(),
            at_ms: 5,
        });
        let a = t.sm.read().assess(&NodeClasses::new(), 10).unwrap();
        assert_eq!((a.health.total, a.work.len()), (1, 1));
    }
}
