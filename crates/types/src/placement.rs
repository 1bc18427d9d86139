//! Weighted rendezvous hashing (straw2): each node draws a score for a chunk
//! from a hash of (chunk, node), scaled by its weight; the highest scores win.
//! Adding or removing a node moves only the chunks whose winner changes, which
//! is that node's fair share.

use std::collections::BTreeMap;

use crate::{ChunkId, NodeId, TypesError};

/// A node that may receive fragments, as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementCandidate {
    pub id: NodeId,
    /// Failure domain. Nodes without one are each their own domain.
    pub zone: Option<String>,
    /// Relative weight, normally capacity in bytes; 0 means "never choose".
    pub weight: u64,
}

/// The nodes eligible for new fragments, ready to rank them per chunk.
#[derive(Debug, Clone, Default)]
pub struct PlacementMap {
    candidates: Vec<PlacementCandidate>,
}

impl PlacementMap {
    pub fn new(candidates: impl IntoIterator<Item = PlacementCandidate>) -> Self {
        let mut candidates: Vec<_> = candidates.into_iter().filter(|c| c.weight > 0).collect();
        // Order must not depend on how the caller listed the nodes.
        candidates.sort_by_key(|c| c.id);
        candidates.dedup_by_key(|c| c.id);
        PlacementMap { candidates }
    }

    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// Every eligible node, best first, spread over zones: the best node of
    /// each zone comes before the second-best of any zone, and so on.
    pub fn rank(&self, chunk: ChunkId) -> Vec<NodeId> {
        let mut by_zone: BTreeMap<ZoneKey<'_>, Vec<(f64, NodeId)>> = BTreeMap::new();
        for c in &self.candidates {
            let zone = match &c.zone {
                Some(z) => ZoneKey::Named(z),
                None => ZoneKey::Alone(c.id),
            };
            by_zone
                .entry(zone)
                .or_default()
                .push((straw2(chunk, c), c.id));
        }
        for nodes in by_zone.values_mut() {
            nodes.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        }
        let mut out = Vec::with_capacity(self.candidates.len());
        let mut round = 0;
        loop {
            let mut tier: Vec<(f64, NodeId)> = by_zone
                .values()
                .filter_map(|nodes| nodes.get(round).copied())
                .collect();
            if tier.is_empty() {
                return out;
            }
            tier.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            out.extend(tier.into_iter().map(|(_, id)| id));
            round += 1;
        }
    }

    /// The `n` nodes that hold a chunk's fragments, fragment `i` on node `i`.
    pub fn place(&self, chunk: ChunkId, n: usize) -> Result<Vec<NodeId>, TypesError> {
        if self.candidates.len() < n {
            return Err(TypesError::NotEnoughNodes {
                wanted: n,
                available: self.candidates.len(),
            });
        }
        let mut ranked = self.rank(chunk);
        ranked.truncate(n);
        Ok(ranked)
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum ZoneKey<'a> {
    Named(&'a str),
    Alone(NodeId),
}

/// ln(u) / weight with u uniform in (0, 1]: the maximum over nodes picks each
/// node with probability proportional to its weight, independently per chunk.
fn straw2(chunk: ChunkId, node: &PlacementCandidate) -> f64 {
    let mut h = blake3::Hasher::new();
    h.update(&chunk.0);
    h.update(&node.id.0.to_le_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    // 53 bits keep the conversion to f64 exact; +1 keeps u away from 0.
    let bits = u64::from_le_bytes(first) >> 11;
    let u = (bits as f64 + 1.0) / (1u64 << 53) as f64;
    u.ln() / node.weight as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn nodes(n: u64, zones: usize) -> Vec<PlacementCandidate> {
        (1..=n)
            .map(|i| PlacementCandidate {
                id: NodeId(i * 7919),
                zone: (zones > 0).then(|| format!("z{}", i as usize % zones)),
                weight: 1 << 40,
            })
            .collect()
    }

    fn chunk(i: u64) -> ChunkId {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&i.to_le_bytes());
        ChunkId(b)
    }

    #[test]
    fn distinct_and_deterministic() {
        let map = PlacementMap::new(nodes(10, 0));
        for i in 0..200 {
            let p = map.place(chunk(i), 6).unwrap();
            assert_eq!(p.iter().collect::<HashSet<_>>().len(), 6);
            assert_eq!(p, map.place(chunk(i), 6).unwrap());
        }
        let mut reversed = nodes(10, 0);
        reversed.reverse();
        assert_eq!(
            PlacementMap::new(reversed).place(chunk(1), 6).unwrap(),
            map.place(chunk(1), 6).unwrap()
        );
        assert!(map.place(chunk(1), 11).is_err());
    }

    #[test]
    fn spreads_over_zones() {
        let cands = nodes(9, 3);
        let zone_of: HashMap<_, _> = cands.iter().map(|c| (c.id, c.zone.clone())).collect();
        let map = PlacementMap::new(cands);
        for i in 0..500 {
            let p = map.place(chunk(i), 3).unwrap();
            let zones: HashSet<_> = p.iter().map(|n| zone_of[n].clone()).collect();
            assert_eq!(zones.len(), 3, "chunk {i} placed {p:?} in one zone twice");
            // Six fragments over three zones: two per zone, never three.
            let p6 = map.place(chunk(i), 6).unwrap();
            let mut per_zone: HashMap<_, usize> = HashMap::new();
            for n in &p6 {
                *per_zone.entry(zone_of[n].clone()).or_default() += 1;
            }
            assert!(per_zone.values().all(|&c| c == 2), "{per_zone:?}");
        }
    }

    #[test]
    fn balanced_and_weighted() {
        let mut cands = nodes(10, 0);
        cands[0].weight *= 2;
        let heavy = cands[0].id;
        let map = PlacementMap::new(cands);
        let mut load: HashMap<NodeId, usize> = HashMap::new();
        let chunks = 20_000;
        for i in 0..chunks {
            for n in map.place(chunk(i), 1).unwrap() {
                *load.entry(n).or_default() += 1;
            }
        }
        // Weight 2 among nine of weight 1: a share of 2/11.
        let fair = chunks as f64 / 11.0;
        for (n, l) in &load {
            let want = if *n == heavy { 2.0 * fair } else { fair };
            let dev = (*l as f64 - want).abs() / want;
            assert!(dev < 0.06, "node {n} got {l}, want about {want}");
        }
    }

    #[test]
    fn adding_a_node_moves_only_its_share() {
        let before = PlacementMap::new(nodes(10, 0));
        let after = PlacementMap::new(nodes(11, 0));
        let chunks = 5_000u64;
        let mut moved = 0usize;
        for i in 0..chunks {
            let a: HashSet<_> = before.place(chunk(i), 3).unwrap().into_iter().collect();
            let b: HashSet<_> = after.place(chunk(i), 3).unwrap().into_iter().collect();
            moved += a.difference(&b).count();
        }
        // The new node's fair share is 3/11 of the fragments; allow noise.
        let share = moved as f64 / (chunks as f64 * 3.0);
        assert!(share < 1.0 / 11.0 * 1.15, "moved {share:.3} of fragments");
    }
}
