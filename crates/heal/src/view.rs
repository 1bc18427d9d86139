//! The cluster as healing decisions see it: each node's zone, capacity,
//! liveness, admin state and the bytes meta's records place on it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use tessera_proto::{ClusterMap, NodeAdmin, NodeInfo, NodeState};
use tessera_types::{NodeId, PlacementCandidate, PlacementMap};

/// One node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub id: NodeId,
    /// Failure domain; a node without one is its own.
    pub zone: Option<String>,
    /// Bytes the node offers.
    pub capacity: u64,
    pub state: NodeState,
    pub admin: NodeAdmin,
    /// Bytes meta's records place on the node.
    pub stored: u64,
}

impl NodeView {
    /// Whether new fragments may go here: up, active, with capacity.
    pub fn writable(&self) -> bool {
        self.state == NodeState::Up && self.admin == NodeAdmin::Active && self.capacity > 0
    }

    /// Whether its fragments can be read now.
    pub fn readable(&self) -> bool {
        self.state == NodeState::Up
    }

    /// Whether it should keep data: active and not out (a down node is
    /// expected back).
    pub fn holds_data(&self) -> bool {
        self.admin == NodeAdmin::Active && self.state != NodeState::Out
    }
}

impl From<&NodeInfo> for NodeView {
    fn from(n: &NodeInfo) -> Self {
        NodeView {
            id: n.id,
            zone: n.zone.clone(),
            capacity: n.capacity,
            state: n.state,
            admin: n.admin,
            stored: n.stored,
        }
    }
}

/// Zones numbered densely: named zones first, then one per zoneless node.
pub type ZoneIndex = u32;

/// The nodes, looked up by id, with the placement of the writable ones
/// ready.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// By id, one entry per id.
    nodes: Vec<NodeView>,
    /// `zones[i]`: the zone index of `nodes[i]`.
    zones: Vec<ZoneIndex>,
    /// Distinct zones (named ones and zoneless nodes).
    zone_total: usize,
    writable_zones: usize,
    placement: PlacementMap,
}

impl ClusterView {
    /// The view of a cluster map as meta answers it.
    pub fn from_map(map: &ClusterMap) -> Self {
        Self::new(map.nodes.iter().map(NodeView::from).collect())
    }

    /// The view of `nodes`; if an id comes twice, the first is kept.
    pub fn new(mut nodes: Vec<NodeView>) -> Self {
        // Stable, so the first of a repeated id stays first.
        nodes.sort_by_key(|n| n.id);
        nodes.dedup_by_key(|n| n.id);
        let named: BTreeMap<&str, ZoneIndex> = nodes
            .iter()
            .filter_map(|n| n.zone.as_deref())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .zip(0..)
            .collect();
        let mut alone = named.len() as ZoneIndex;
        let zones: Vec<ZoneIndex> = nodes
            .iter()
            .map(|n| match n.zone.as_deref().and_then(|z| named.get(z)) {
                Some(&z) => z,
                None => {
                    let own = alone;
                    alone += 1;
                    own
                }
            })
            .collect();
        let writable_zones = nodes
            .iter()
            .zip(&zones)
            .filter(|(n, _)| n.writable())
            .map(|(_, z)| *z)
            .collect::<HashSet<_>>()
            .len();
        let placement =
            PlacementMap::new(
                nodes
                    .iter()
                    .filter(|n| n.writable())
                    .map(|n| PlacementCandidate {
                        id: n.id,
                        zone: n.zone.clone(),
                        weight: n.capacity,
                    }),
            );
        ClusterView {
            nodes,
            zone_total: alone as usize,
            zones,
            writable_zones,
            placement,
        }
    }

    /// Every node, ordered by id.
    pub fn nodes(&self) -> &[NodeView] {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeView> {
        self.index(id).map(|i| &self.nodes[i])
    }

    /// Where `id` is in `nodes()`.
    pub fn index(&self, id: NodeId) -> Option<usize> {
        self.nodes.binary_search_by_key(&id, |n| n.id).ok()
    }

    /// The zone of `nodes()[index]`.
    pub fn zone_at(&self, index: usize) -> Option<ZoneIndex> {
        self.zones.get(index).copied()
    }

    /// Zones of all nodes (a zoneless node counts as its own).
    pub fn zones_count(&self) -> usize {
        self.zone_total
    }

    /// Zones with at least one writable node (a zoneless node counts as
    /// its own).
    pub fn writable_zones(&self) -> usize {
        self.writable_zones
    }

    /// Placement over the writable nodes, weighted by capacity.
    pub fn placement(&self) -> &PlacementMap {
        &self.placement
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An up, active node of 1 TiB holding nothing.
    pub(crate) fn node(id: u64, zone: Option<&str>) -> NodeView {
        NodeView {
            id: NodeId(id),
            zone: zone.map(str::to_string),
            capacity: 1 << 40,
            state: NodeState::Up,
            admin: NodeAdmin::Active,
            stored: 0,
        }
    }

    #[test]
    fn node_predicates() {
        let mut n = node(1, None);
        assert!(n.writable() && n.readable() && n.holds_data());
        n.state = NodeState::Down;
        assert!(!n.writable() && !n.readable() && n.holds_data());
        n.state = NodeState::Out;
        assert!(!n.holds_data());
        n.state = NodeState::Up;
        n.admin = NodeAdmin::Draining;
        assert!(!n.writable() && n.readable() && !n.holds_data());
        n.admin = NodeAdmin::Active;
        n.capacity = 0;
        assert!(!n.writable() && n.holds_data());
    }

    #[test]
    fn lookup_zones_and_placement() {
        let mut down = node(5, Some("c"));
        down.state = NodeState::Down;
        let view = ClusterView::new(vec![
            node(3, Some("b")),
            node(1, Some("a")),
            node(2, Some("a")),
            down,
            node(4, None),
            node(6, None),
            node(1, Some("z")),
        ]);
        assert_eq!(view.nodes().len(), 6);
        assert_eq!(
            view.node(NodeId(1)).and_then(|n| n.zone.as_deref()),
            Some("a")
        );
        assert!(view.node(NodeId(9)).is_none());
        // a, b, and the two zoneless nodes; c has no writable node.
        assert_eq!(view.writable_zones(), 4);
        assert_eq!(view.placement().len(), 5);
        let zone = |id| view.index(NodeId(id)).and_then(|i| view.zone_at(i));
        assert_eq!(zone(1), zone(2));
        assert_ne!(zone(4), zone(6));
        assert_ne!(zone(1), zone(3));
    }
}
