//! Which fragments of a chunk to restore now, and where they go.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use tessera_proto::FragmentState;
use tessera_types::{ChunkId, NodeId};

use crate::view::{ClusterView, ZoneIndex};

/// Nodes that may take a new fragment of `chunk`, best first: writable
/// nodes not in `holders` (every node holding a fragment of the chunk).
///
/// Greedy over zones: each next node is from the zone that holds the fewest
/// of the chunk's fragments so far, counting those on `kept` (fragments that
/// stay) and the nodes already chosen; ties go to the chunk's rendezvous
/// rank. A long order is returned (every zone's best few beyond its
/// holders): a caller whose write to one node fails goes on to the next. A
/// zoneless node is its own zone.
pub fn repair_targets(
    view: &ClusterView,
    chunk: ChunkId,
    holders: &[NodeId],
    kept: &[NodeId],
) -> Vec<NodeId> {
    let zone_of = |id: NodeId| view.index(id).and_then(|i| view.zone_at(i));
    // Zones are numbered densely: per-zone tables are vectors.
    let zones = view.zones_count();
    let mut held = vec![0usize; zones];
    for z in kept.iter().filter_map(|&n| zone_of(n)) {
        if let Some(h) = held.get_mut(z as usize) {
            *h += 1;
        }
    }
    // Each zone's candidates as (rank, node), in rank order; the heap holds
    // each zone's next candidate as (fragments in the zone, rank, queue).
    let mut queues: Vec<(ZoneIndex, Vec<(usize, NodeId)>)> = Vec::new();
    let mut queue_of: Vec<Option<usize>> = vec![None; zones];
    let mut candidates = 0;
    // Enough of the rank for the greedy picks: in every zone, more nodes
    // than the chunk can hold there plus two, without ranking the rest.
    let depth = (holders.len() + 2) * view.zones_count().max(1);
    for (rank, id) in view.placement().top(chunk, depth).into_iter().enumerate() {
        let Some(z) = zone_of(id) else { continue };
        if holders.contains(&id) {
            continue;
        }
        let Some(slot) = queue_of.get_mut(z as usize) else {
            continue;
        };
        let q = *slot.get_or_insert_with(|| {
            queues.push((z, Vec::new()));
            queues.len() - 1
        });
        queues[q].1.push((rank, id));
        candidates += 1;
    }
    let mut heap: BinaryHeap<Reverse<(usize, usize, usize)>> = BinaryHeap::new();
    for (q, (z, ids)) in queues.iter().enumerate() {
        if let Some(&(rank, _)) = ids.first() {
            let count = held.get(*z as usize).copied().unwrap_or(0);
            heap.push(Reverse((count, rank, q)));
        }
    }
    let mut next = vec![0usize; queues.len()];
    let mut out = Vec::with_capacity(candidates);
    while let Some(Reverse((count, _, q))) = heap.pop() {
        let ids = &queues[q].1;
        if let Some(&(_, id)) = ids.get(next[q]) {
            out.push(id);
        }
        next[q] += 1;
        if let Some(&(rank, _)) = ids.get(next[q]) {
            heap.push(Reverse((count + 1, rank, q)));
        }
    }
    out
}

/// How a fragment comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// Decoded from K other fragments (it is lost).
    Rebuild,
    /// Read from its node (which is draining) and written elsewhere.
    Copy,
}

/// One fragment to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentRestore {
    /// The fragment's index in the chunk.
    pub index: usize,
    pub how: Restore,
    /// Written back to the node it is on (rotten or missing on a healthy
    /// node), needing no target.
    pub in_place: bool,
}

/// What to do now for one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairStep {
    /// Lost fragments first, then fragments to move.
    pub restore: Vec<FragmentRestore>,
    /// Where fragments that are not rewritten in place go, best first (see
    /// `repair_targets`); at least as many as such fragments.
    pub targets: Vec<NodeId>,
}

/// The repair step for a chunk whose fragment `i` is on `fragment_nodes[i]`
/// in state `states[i]`; `None` when nothing can be restored now.
///
/// A lost fragment on a node that is still writable is rebuilt in place
/// (where placement wants it); other lost fragments take free targets, and
/// fragments to move take what targets remain. With fewer free nodes than
/// fragments it restores what it can and never puts two on one node. If
/// the two slices differ in length, only the fragments both describe are
/// restored, but no target is a node of `fragment_nodes`.
pub fn repair_step(
    view: &ClusterView,
    chunk: ChunkId,
    fragment_nodes: &[NodeId],
    states: &[FragmentState],
) -> Option<RepairStep> {
    let fragments = fragment_nodes.iter().zip(states).enumerate();
    let kept: Vec<NodeId> = fragments
        .clone()
        .filter(|(_, (_, s))| !matches!(s, FragmentState::Lost | FragmentState::Move))
        .map(|(_, (&n, _))| n)
        .collect();
    let targets = repair_targets(view, chunk, fragment_nodes, &kept);
    let writable = |n: NodeId| view.node(n).is_some_and(|v| v.writable());
    let mut free = targets.len();
    let mut restore = Vec::new();
    for (index, (&node, _)) in fragments
        .clone()
        .filter(|(_, (_, s))| **s == FragmentState::Lost)
    {
        let in_place = writable(node);
        if in_place || free > 0 {
            free -= usize::from(!in_place);
            restore.push(FragmentRestore {
                index,
                how: Restore::Rebuild,
                in_place,
            });
        }
    }
    let moving = fragments.filter(|(_, (_, s))| **s == FragmentState::Move);
    for (index, _) in moving.take(free) {
        restore.push(FragmentRestore {
            index,
            how: Restore::Copy,
            in_place: false,
        });
    }
    (!restore.is_empty()).then_some(RepairStep { restore, targets })
}

/// The most fragments any one zone should hold when `fragments` are spread
/// over `zones` zones (at least one): ceil(fragments / zones).
pub fn zone_cap(fragments: usize, zones: usize) -> usize {
    fragments.div_ceil(zones.max(1))
}

/// The most of `nodes` in any one zone; a node the view does not know is
/// its own zone.
pub fn max_per_zone(view: &ClusterView, nodes: &[NodeId]) -> usize {
    let mut per_zone: HashMap<ZoneIndex, usize> = HashMap::new();
    let mut most = 0;
    for &n in nodes {
        match view.index(n).and_then(|i| view.zone_at(i)) {
            Some(z) => {
                let c = per_zone.entry(z).or_default();
                *c += 1;
                most = most.max(*c);
            }
            None => most = most.max(1),
        }
    }
    most
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::NodeView;
    use crate::view::tests::node;
    use FragmentState::{Down, Lost, Move, Ok};
    use tessera_proto::{NodeAdmin, NodeState};

    fn view(zones: &[&str]) -> ClusterView {
        ClusterView::new(
            zones
                .iter()
                .enumerate()
                .map(|(i, z)| node(i as u64 + 1, Some(z)))
                .collect(),
        )
    }

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn targets_skip_holders_and_fill_the_emptiest_zone_first() {
        let v = view(&["a", "a", "b", "b", "c", "c"]);
        // Fragments kept on one node of a and both of b: c comes first.
        let kept = ids(&[1, 3, 4]);
        let holders = ids(&[1, 2, 3, 4]);
        for c in 0..50u8 {
            let t = repair_targets(&v, ChunkId([c; 16]), &holders, &kept);
            assert_eq!(t.len(), 2);
            assert!(t.contains(&NodeId(5)) && t.contains(&NodeId(6)));
        }
        // Draining and down nodes take nothing.
        let mut nodes: Vec<NodeView> = v.nodes().to_vec();
        nodes[0].admin = NodeAdmin::Draining;
        nodes[1].state = NodeState::Down;
        let v = ClusterView::new(nodes);
        let t = repair_targets(&v, ChunkId([1; 16]), &[], &[]);
        assert_eq!(t.len(), 4);
        assert!(!t.contains(&NodeId(1)) && !t.contains(&NodeId(2)));
    }

    #[test]
    fn targets_alternate_zones_greedily() {
        // Three zones of three; nothing kept: the first three targets are
        // one per zone, the next three one per zone again, each round in
        // rendezvous order.
        let v = view(&["a", "a", "a", "b", "b", "b", "c", "c", "c"]);
        let zone = |n: NodeId| (n.0 - 1) / 3;
        for c in 0..100u8 {
            let chunk = ChunkId([c; 16]);
            let t = repair_targets(&v, chunk, &[], &[]);
            // Only the first few per zone are ranked: a prefix of the full
            // rendezvous order.
            assert!(t.len() >= 6);
            assert_eq!(
                t[..],
                v.placement().rank(chunk)[..t.len()],
                "no kept fragments: rank order"
            );
            // Two kept in zone a (ids 1, 2): b and c first, then a.
            let t = repair_targets(&v, chunk, &ids(&[1, 2]), &ids(&[1, 2]));
            let zones: Vec<u64> = t.iter().map(|&n| zone(n)).collect();
            assert_eq!(zones.len(), 7);
            let mut first: Vec<u64> = zones[..4].to_vec();
            first.sort();
            assert_eq!(first, vec![1, 1, 2, 2], "{zones:?}");
            assert!(zones[4..].contains(&0));
        }
    }

    #[test]
    fn lost_fragments_rebuilt_in_place_or_elsewhere_then_moves() {
        let mut nodes: Vec<NodeView> = (1..=8).map(|i| node(i, None)).collect();
        nodes[2].state = NodeState::Out;
        nodes[3].admin = NodeAdmin::Draining;
        let v = ClusterView::new(nodes);
        let frag = ids(&[1, 2, 3, 4, 5, 6]);
        // 1: rotten on a healthy node; 3: on an out node; 4: draining.
        let step = repair_step(&v, ChunkId([7; 16]), &frag, &[Ok, Lost, Lost, Move, Ok, Ok])
            .expect("work to do");
        assert_eq!(
            step.restore,
            vec![
                FragmentRestore {
                    index: 1,
                    how: Restore::Rebuild,
                    in_place: true
                },
                FragmentRestore {
                    index: 2,
                    how: Restore::Rebuild,
                    in_place: false
                },
                FragmentRestore {
                    index: 3,
                    how: Restore::Copy,
                    in_place: false
                },
            ]
        );
        let mut t = step.targets.clone();
        t.sort();
        assert_eq!(t, ids(&[7, 8]));

        // Nothing free: only the in-place rebuild is possible.
        let frag = ids(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let states = [Ok, Lost, Lost, Move, Ok, Ok, Ok, Ok];
        let step = repair_step(&v, ChunkId([7; 16]), &frag, &states).expect("in place");
        assert_eq!(step.restore.len(), 1);
        assert!(step.restore[0].in_place && step.targets.is_empty());
        // Nothing to restore, or nowhere to put it.
        assert_eq!(
            repair_step(
                &v,
                ChunkId([7; 16]),
                &frag,
                &[Ok, Down, Ok, Ok, Ok, Ok, Ok, Ok]
            ),
            None
        );
        assert_eq!(
            repair_step(
                &v,
                ChunkId([7; 16]),
                &frag,
                &[Ok, Ok, Lost, Ok, Ok, Ok, Ok, Ok]
            ),
            None
        );
    }

    #[test]
    fn few_free_nodes_restore_lost_before_moving() {
        let mut nodes: Vec<NodeView> = (1..=4).map(|i| node(i, None)).collect();
        nodes[0].state = NodeState::Out;
        nodes[1].admin = NodeAdmin::Draining;
        let v = ClusterView::new(nodes);
        // One free node (4): the lost fragment takes it, the move waits.
        let step = repair_step(&v, ChunkId([1; 16]), &ids(&[2, 1, 3]), &[Move, Lost, Ok])
            .expect("one restore");
        assert_eq!(step.restore.len(), 1);
        assert_eq!(step.restore[0].index, 1);
        assert_eq!(step.targets, ids(&[4]));
        // Mismatched lengths: only what both describe.
        let step = repair_step(&v, ChunkId([1; 16]), &ids(&[2, 1, 3]), &[Move]).expect("move");
        assert_eq!(step.restore[0].how, Restore::Copy);
    }

    #[test]
    fn zone_spread_helpers() {
        assert_eq!(zone_cap(6, 3), 2);
        assert_eq!(zone_cap(6, 4), 2);
        assert_eq!(zone_cap(3, 3), 1);
        assert_eq!(zone_cap(5, 0), 5);
        let v = view(&["a", "a", "b"]);
        assert_eq!(max_per_zone(&v, &ids(&[1, 2, 3])), 2);
        assert_eq!(max_per_zone(&v, &ids(&[1, 3, 99])), 1);
        assert_eq!(max_per_zone(&v, &[]), 0);
    }
}
