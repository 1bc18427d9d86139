//! Where a fragment that must move goes.

use std::collections::{HashMap, HashSet};

use tessera_proto::ClusterMap;
use tessera_types::{ChunkId, NodeId, PlacementCandidate, PlacementMap};

/// Nodes that may take a new fragment of `chunk`, best first: writable
/// (up and active), not already holding a fragment of it, in the chunk's
/// rendezvous order, with nodes in zones that hold fewer of the chunk's
/// remaining fragments first (nodes without a zone are their own domain).
pub fn targets(
    map: &ClusterMap,
    chunk: ChunkId,
    holders: &HashSet<NodeId>,
    kept: &[NodeId],
) -> Vec<NodeId> {
    let writable = map.nodes.iter().filter(|n| n.writable());
    let placement = PlacementMap::new(writable.map(|n| PlacementCandidate {
        id: n.id,
        zone: n.zone.clone(),
        weight: n.capacity,
    }));
    let zone_of: HashMap<NodeId, Option<&str>> = map
        .nodes
        .iter()
        .map(|n| (n.id, n.zone.as_deref()))
        .collect();
    let mut per_zone: HashMap<&str, usize> = HashMap::new();
    for node in kept {
        if let Some(Some(z)) = zone_of.get(node) {
            *per_zone.entry(z).or_default() += 1;
        }
    }
    let mut out: Vec<NodeId> = placement
        .rank(chunk)
        .into_iter()
        .filter(|n| !holders.contains(n))
        .collect();
    // Stable: rendezvous order within equally filled zones.
    out.sort_by_key(|n| match zone_of.get(n) {
        Some(Some(z)) => per_zone.get(z).copied().unwrap_or(0),
        _ => 0,
    });
    out
}

/// The nodes placement prefers for `chunk` among nodes that should hold
/// data (active and not out; down nodes count, they are expected back).
pub fn ideal(map: &ClusterMap, chunk: ChunkId, n: usize) -> Option<Vec<NodeId>> {
    let eligible = map.nodes.iter().filter(|n| {
        n.admin == tessera_proto::NodeAdmin::Active && n.state != tessera_proto::NodeState::Out
    });
    let placement = PlacementMap::new(eligible.map(|n| PlacementCandidate {
        id: n.id,
        zone: n.zone.clone(),
        weight: n.capacity,
    }));
    placement.place(chunk, n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::{NodeAdmin, NodeInfo, NodeState, ScrubProgress};
    use tessera_types::Policy;

    fn map(zones: &[&str]) -> ClusterMap {
        ClusterMap {
            epoch: 1,
            nodes: zones
                .iter()
                .enumerate()
                .map(|(i, z)| NodeInfo {
                    id: NodeId(i as u64 + 1),
                    addr: "127.0.0.1:1".into(),
                    zone: Some(z.to_string()),
                    capacity: 100,
                    used: 0,
                    state: NodeState::Up,
                    last_seen_ms: 0,
                    admin: NodeAdmin::Active,
                    fragments: 0,
                    stored: 0,
                    scrub: ScrubProgress::default(),
                })
                .collect(),
            default_policy: Policy::default(),
            inline_limit: 0,
            gc_grace_ms: 0,
        }
    }

    #[test]
    fn targets_skip_holders_and_fill_the_emptiest_zone_first() {
        let m = map(&["a", "a", "b", "b", "c", "c"]);
        // Fragments kept on one node of a and both of b: c comes first.
        let kept = [NodeId(1), NodeId(3), NodeId(4)];
        let holders: HashSet<NodeId> = kept.iter().copied().chain([NodeId(2)]).collect();
        for c in 0..50u8 {
            let t = targets(&m, ChunkId([c; 16]), &holders, &kept);
            assert_eq!(t.len(), 2);
            assert!(t.iter().all(|n| !holders.contains(n)));
            assert!(t.contains(&NodeId(5)) && t.contains(&NodeId(6)));
        }
        // Draining and down nodes take nothing.
        let mut m = map(&["a", "b", "c"]);
        m.nodes[0].admin = NodeAdmin::Draining;
        m.nodes[1].state = NodeState::Down;
        let t = targets(&m, ChunkId([1; 16]), &HashSet::new(), &[]);
        assert_eq!(t, vec![NodeId(3)]);
    }

    #[test]
    fn ideal_counts_down_nodes_but_not_out_or_draining_ones() {
        let mut m = map(&["a", "b", "c", "d"]);
        m.nodes[0].state = NodeState::Down;
        m.nodes[1].state = NodeState::Out;
        m.nodes[2].admin = NodeAdmin::Draining;
        let chunk = ChunkId([9; 16]);
        assert_eq!(
            ideal(&m, chunk, 2).map(|mut v| {
                v.sort();
                v
            }),
            Some(vec![NodeId(1), NodeId(4)])
        );
        assert_eq!(ideal(&m, chunk, 3), None);
    }
}
