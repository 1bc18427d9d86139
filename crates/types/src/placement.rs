//! Weighted rendezvous hashing (straw2): each node draws a score for a chunk
//! from a hash of (chunk, node), scaled by its weight; the highest scores win.
//! Adding or removing a node moves only the chunks whose winner changes, which
//! is that node's fair share.
//!
//! For one chunk the nodes are totally ordered by the key (score descending,
//! draw descending, node id ascending), where the draw `u` is uniform in
//! (0, 1] with 53 bits and the score is `ln(u) / weight`. Between nodes of
//! equal weight the score order is the draw order (`ln` is monotone), so when
//! every node weighs the same `ln` is not computed at all; otherwise `place`
//! takes `ln` only for the few draws high enough to matter (ln(u) <= u - 1
//! rules out the rest). `place` keeps only the few best nodes of each zone
//! rather than sorting them all: at 1,000 nodes it costs a few microseconds.

use std::cmp::Ordering;

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
    /// Eligible nodes ordered by (domain, id), so that domains are runs.
    slots: Vec<Slot>,
    /// Runs of `slots` with one domain.
    domains: Vec<Run>,
    /// `tier_sizes[r]`: how many domains have more than `r` nodes, that is
    /// how many nodes rank `r`-th in their domain.
    tier_sizes: Vec<usize>,
    /// Every node weighs the same: the draw alone orders them.
    one_weight: bool,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    id: NodeId,
    /// The node's half of the draw, mixed once here rather than per chunk.
    key: u64,
    weight: f64,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    start: usize,
    end: usize,
}

/// One node's place in a chunk's order: better entries have a higher score,
/// then a higher `draw`. `draw` holds the 53-bit draw above the complement
/// of the node id, so that one integer comparison breaks ties by id.
#[derive(Debug, Clone, Copy)]
struct Entry {
    score: f64,
    draw: u128,
}

impl Entry {
    const NONE: Entry = Entry {
        score: f64::NEG_INFINITY,
        draw: 0,
    };

    fn new(score: f64, bits: u64, id: NodeId) -> Self {
        Entry {
            score,
            draw: (u128::from(bits) << 64) | u128::from(!id.0),
        }
    }

    fn id(&self) -> NodeId {
        NodeId(!(self.draw as u64))
    }

    fn order(&self, other: &Entry) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(self.draw.cmp(&other.draw))
    }

    fn beats(&self, other: &Entry) -> bool {
        self.order(other) == Ordering::Greater
    }
}

impl PlacementMap {
    pub fn new(candidates: impl IntoIterator<Item = PlacementCandidate>) -> Self {
        let mut candidates: Vec<_> = candidates.into_iter().filter(|c| c.weight > 0).collect();
        // Order must not depend on how the caller listed the nodes, even when
        // one id comes twice. (Callers usually list them in id order, once.)
        if !candidates.is_sorted_by(|a, b| a.id < b.id) {
            candidates.sort_by(|a, b| (a.id, &a.zone, a.weight).cmp(&(b.id, &b.zone, b.weight)));
            candidates.dedup_by_key(|c| c.id);
        }
        // Grouped by domain (named zones in name order, then zoneless
        // nodes), by id within: sorted on numbers, with the few zone names
        // ranked once, not compared at every step of the sort.
        let mut names: Vec<String> = candidates.iter().filter_map(|c| c.zone.clone()).collect();
        names.sort_unstable();
        names.dedup();
        let domain_rank = |c: &PlacementCandidate| match c.zone.as_deref() {
            Some(z) => (
                0u8,
                names.binary_search_by(|n| n.as_str().cmp(z)).unwrap_or(0) as u64,
            ),
            None => (1u8, c.id.0),
        };
        candidates.sort_by_cached_key(|c| (domain_rank(c), c.id));

        let mut map = PlacementMap {
            one_weight: candidates.windows(2).all(|w| w[0].weight == w[1].weight),
            ..PlacementMap::default()
        };
        for (i, c) in candidates.iter().enumerate() {
            map.slots.push(Slot {
                id: c.id,
                key: node_key(c.id),
                weight: c.weight as f64,
            });
            match map.domains.last_mut() {
                Some(d) if domain(&candidates[d.start]) == domain(c) => d.end = i + 1,
                _ => map.domains.push(Run {
                    start: i,
                    end: i + 1,
                }),
            }
        }
        let size = |d: &Run| d.end - d.start;
        let deepest = map.domains.iter().map(size).max().unwrap_or(0);
        map.tier_sizes = (0..deepest)
            .map(|r| map.domains.iter().filter(|d| size(d) > r).count())
            .collect();
        map
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every eligible node, best first, spread over zones: the best node of
    /// each zone comes before the second-best of any zone, and so on.
    /// `place(chunk, n)` is always the first `n` of this.
    pub fn rank(&self, chunk: ChunkId) -> Vec<NodeId> {
        let c = chunk_key(chunk);
        let mut entries: Vec<Entry> = self
            .slots
            .iter()
            .map(|s| {
                let bits = draw(c, s.key);
                Entry::new(self.score(bits, s.weight), bits, s.id)
            })
            .collect();
        for d in &self.domains {
            entries[d.start..d.end].sort_unstable_by(|a, b| b.order(a));
        }
        let mut out = Vec::with_capacity(self.slots.len());
        let mut tier = Vec::with_capacity(self.domains.len());
        for r in 0..self.tier_sizes.len() {
            tier.clear();
            tier.extend(
                self.domains
                    .iter()
                    .filter(|d| d.start + r < d.end)
                    .map(|d| entries[d.start + r]),
            );
            tier.sort_unstable_by(|a, b| b.order(a));
            out.extend(tier.iter().map(Entry::id));
        }
        out
    }

    /// `rank(chunk)` computed lazily: the first nodes cost what `place`
    /// costs, and the rest are ranked only if a caller goes past them (a
    /// writer walks on past nodes that refuse a fragment; nearly always it
    /// needs only the first few).
    pub fn ranking(&self, chunk: ChunkId) -> Ranking<'_> {
        Ranking {
            map: self,
            chunk,
            known: Vec::new(),
            next: 0,
        }
    }

    /// The `n` nodes that hold a chunk's fragments, fragment `i` on node `i`.
    /// The first `n` nodes of `rank(chunk)` (all of them if there are
    /// fewer), without ranking the rest.
    pub fn top(&self, chunk: ChunkId, n: usize) -> Vec<NodeId> {
        self.place(chunk, n.min(self.slots.len()))
            .unwrap_or_default()
    }

    pub fn place(&self, chunk: ChunkId, n: usize) -> Result<Vec<NodeId>, TypesError> {
        if self.slots.len() < n {
            return Err(TypesError::NotEnoughNodes {
                wanted: n,
                available: self.slots.len(),
            });
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        // Tier r holds the r-th best node of every domain; the first tiers
        // are taken whole, the last one only up to n. So each domain need
        // only yield its best `tiers.len()` nodes.
        let mut tiers: Vec<Run> = Vec::new();
        let mut taken = 0;
        for &size in &self.tier_sizes {
            if taken == n {
                break;
            }
            let take = size.min(n - taken);
            tiers.push(Run {
                start: taken,
                end: taken + take,
            });
            taken += take;
        }
        let depth = tiers.len();
        // One buffer: the tiers, then the domain's best.
        let mut buf = vec![Entry::NONE; n + depth];
        let mut tier_len = vec![0usize; depth];
        let (tier_buf, best) = buf.split_at_mut(n);
        let c = chunk_key(chunk);
        for d in &self.domains {
            let slots = &self.slots[d.start..d.end];
            let mut len = 0;
            if self.one_weight {
                for s in slots {
                    let e = Entry::new(0.0, draw(c, s.key), s.id);
                    if len < depth || e.draw > best[depth - 1].draw {
                        keep_best(best, &mut len, e);
                    }
                }
            } else {
                // Until the domain's best are found, anything may enter;
                // then `reach` rules out most nodes without taking ln.
                let mut reach = f64::NEG_INFINITY;
                for s in slots {
                    let bits = draw(c, s.key);
                    if out_of_reach(bits, s.weight, reach) {
                        continue;
                    }
                    let e = Entry::new(self.score(bits, s.weight), bits, s.id);
                    keep_best(best, &mut len, e);
                    if len == depth {
                        reach = best[depth - 1].score * (1.0 + REACH_MARGIN);
                    }
                }
            }
            for (r, e) in best[..len].iter().enumerate() {
                let t = tiers[r];
                keep_best(&mut tier_buf[t.start..t.end], &mut tier_len[r], *e);
            }
        }
        Ok(tier_buf.iter().map(Entry::id).collect())
    }

    /// The straw2 score, or 0 for all when weights are equal (the draw then
    /// decides, which is the same order).
    fn score(&self, bits: u64, weight: f64) -> f64 {
        if self.one_weight {
            0.0
        } else {
            u_of(bits).ln() / weight
        }
    }
}

/// The nodes of `PlacementMap::rank` one at a time, from
/// `PlacementMap::ranking`.
#[derive(Debug, Clone)]
pub struct Ranking<'a> {
    map: &'a PlacementMap,
    chunk: ChunkId,
    known: Vec<NodeId>,
    next: usize,
}

impl Iterator for Ranking<'_> {
    type Item = NodeId;

    fn next(&mut self) -> Option<NodeId> {
        if self.next == self.known.len() {
            let len = self.map.len();
            if self.known.len() == len {
                return None;
            }
            // `place(n)` is the prefix of `rank`: ask for twice as many, and
            // past a quarter of the nodes rank them all at once.
            let want = (self.known.len() * 2).max(16);
            self.known = if want >= len / 4 {
                self.map.rank(self.chunk)
            } else {
                self.map.top(self.chunk, want)
            };
        }
        let node = self.known.get(self.next).copied();
        self.next += 1;
        node
    }
}

/// Keeps the best `buf.len()` entries offered, best first, in `buf[..len]`.
fn keep_best(buf: &mut [Entry], len: &mut usize, e: Entry) {
    let cap = buf.len();
    if *len == cap {
        match buf.last() {
            Some(worst) if e.beats(worst) => *len -= 1,
            _ => return,
        }
    }
    let mut i = *len;
    while i > 0 && e.beats(&buf[i - 1]) {
        buf[i] = buf[i - 1];
        i -= 1;
    }
    buf[i] = e;
    *len += 1;
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum ZoneKey<'a> {
    Named(&'a str),
    Alone(NodeId),
}

fn domain(c: &PlacementCandidate) -> ZoneKey<'_> {
    match &c.zone {
        Some(z) => ZoneKey::Named(z),
        None => ZoneKey::Alone(c.id),
    }
}

/// Relative slack in `reach`, far wider than the rounding of the bound, of
/// ln and of the division by weight.
const REACH_MARGIN: f64 = 1e-9;

/// Whether a node of `weight` drawing `bits` certainly scores below the
/// score `reach` was made from (`score * (1 + REACH_MARGIN)`), so that its
/// ln need not be taken.
///
/// ln(u) <= u - 1, so ln(u) / weight < score when u - 1 < score * weight.
/// `u - 1` is exact in f64; the relative margin covers the products'
/// rounding and ln's, the absolute 1e-15 (> 2^-53) the case of a score near
/// 0. So the cut never excludes a node the exact comparison would keep.
fn out_of_reach(bits: u64, weight: f64, reach: f64) -> bool {
    u_of(bits) - 1.0 < reach * weight - 1e-15
}

/// u in (0, 1] from the 53 draw bits: exact in f64, and never 0 so ln is
/// finite.
fn u_of(bits: u64) -> f64 {
    (bits as f64 + 1.0) / (1u64 << 53) as f64
}

/// MurmurHash3's 64-bit finaliser: a bijection in which every input bit
/// flips each output bit with probability about one half.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

const CHUNK_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
const NODE_SEED: u64 = 0xd6e8_feb8_6659_fd93;

/// All 128 bits of the chunk id folded through two mixing rounds.
fn chunk_key(chunk: ChunkId) -> u64 {
    let id = u128::from_le_bytes(chunk.0);
    fmix64(id as u64 ^ fmix64((id >> 64) as u64 ^ CHUNK_SEED))
}

fn node_key(node: NodeId) -> u64 {
    fmix64(node.0 ^ NODE_SEED)
}

/// The 53-bit draw of (chunk, node): one more mixing round over both
/// keys, each of which already depends on every bit of its id.
fn draw(chunk_key: u64, node_key: u64) -> u64 {
    fmix64(chunk_key ^ node_key) >> 11
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
        assert_eq!(map.place(chunk(1), 0).unwrap(), Vec::<NodeId>::new());
        assert!(PlacementMap::new([]).rank(chunk(1)).is_empty());
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
    fn weights_hold_within_zones() {
        // Three zones, weights 1..=4 inside each: a zone's best node is
        // drawn in proportion to weight among that zone's nodes.
        let cands: Vec<_> = (0..12u64)
            .map(|i| PlacementCandidate {
                id: NodeId(1000 + i),
                zone: Some(format!("z{}", i % 3)),
                weight: (i / 3 + 1) * 1000,
            })
            .collect();
        let weight: HashMap<_, _> = cands.iter().map(|c| (c.id, c.weight)).collect();
        let map = PlacementMap::new(cands);
        let mut load: HashMap<NodeId, f64> = HashMap::new();
        let chunks = 30_000;
        for i in 0..chunks {
            for n in map.place(chunk(i), 3).unwrap() {
                *load.entry(n).or_default() += 1.0;
            }
        }
        for (n, l) in &load {
            // Each zone gets one fragment per chunk; weights in a zone sum to 10.
            let want = chunks as f64 * weight[n] as f64 / 10_000.0;
            assert!(
                (l - want).abs() / want < 0.06,
                "node {n} got {l}, want {want}"
            );
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

    /// Zones of uneven sizes, zoneless nodes and mixed weights.
    fn layouts() -> Vec<Vec<PlacementCandidate>> {
        let mut out = vec![nodes(10, 0), nodes(9, 3), nodes(40, 4), nodes(7, 7)];
        let mut mixed = Vec::new();
        for i in 0..30u64 {
            mixed.push(PlacementCandidate {
                id: NodeId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                zone: match i % 5 {
                    0 => None,
                    1 | 2 => Some("big".into()),
                    3 => Some("small".into()),
                    _ => Some(format!("z{}", i % 4)),
                },
                weight: [1u64 << 40, 3 << 39, 1 << 41, 0][(i % 4) as usize],
            });
        }
        out.push(mixed.clone());
        for c in &mut mixed {
            c.weight = 1 + c.id.0 % 1_000_000;
        }
        out.push(mixed);
        // Many nodes per zone, every weight different: the draw floor at
        // work.
        out.push(
            (0..120u64)
                .map(|i| PlacementCandidate {
                    id: NodeId(fmix64(i)),
                    zone: (i % 7 != 0).then(|| format!("z{}", i % 3)),
                    weight: (1 << 40) + fmix64(!i) % (1 << 39),
                })
                .collect(),
        );
        out
    }

    #[test]
    fn place_is_the_prefix_of_rank() {
        for cands in layouts() {
            let map = PlacementMap::new(cands.clone());
            let zone_of: HashMap<_, _> = cands
                .iter()
                .map(|c| (c.id, c.zone.clone().unwrap_or_else(|| c.id.to_string())))
                .collect();
            for i in 0..300 {
                let c = ChunkId((i as u128 * 0x1234_5678_9abc_def1).to_le_bytes());
                let ranked = map.rank(c);
                assert_eq!(ranked.len(), map.len());
                assert_eq!(ranked.iter().collect::<HashSet<_>>().len(), map.len());
                for n in 0..=map.len() {
                    assert_eq!(map.place(c, n).unwrap(), ranked[..n], "n = {n}");
                }
                // Tiers: no zone gets its (r+1)-th node before every zone
                // with r+1 nodes has had its r-th.
                let mut seen: HashMap<&String, usize> = HashMap::new();
                let mut depth = 0;
                for id in &ranked {
                    let k = seen.entry(&zone_of[id]).or_default();
                    *k += 1;
                    assert!(*k >= depth, "rank went back to a shallower tier");
                    depth = depth.max(*k);
                }
            }
        }
    }

    #[test]
    fn ranking_is_rank() {
        // Large enough that the ranking extends itself several times.
        for cands in layouts().into_iter().chain([nodes(1_000, 10)]) {
            let map = PlacementMap::new(cands);
            for i in 0..50 {
                let c = ChunkId((i as u128 * 0x9e37_79b9_7f4a_7c15).to_le_bytes());
                assert_eq!(map.ranking(c).collect::<Vec<_>>(), map.rank(c));
                assert_eq!(map.ranking(c).take(3).count(), map.len().min(3));
            }
        }
    }

    #[test]
    fn weight_zero_is_never_chosen() {
        let mut cands = nodes(5, 0);
        cands[2].weight = 0;
        let zero = cands[2].id;
        let map = PlacementMap::new(cands);
        assert_eq!(map.len(), 4);
        for i in 0..100 {
            assert!(!map.rank(chunk(i)).contains(&zero));
        }
    }

    #[test]
    fn draws_are_uniform() {
        // Top bit and low bit of the draw, over chunks and nodes.
        let (mut high, mut odd, mut n) = (0u64, 0u64, 0u64);
        for i in 0..2_000 {
            let c = chunk_key(chunk(i));
            for node in 1..50u64 {
                let d = draw(c, node_key(NodeId(node)));
                high += d >> 52;
                odd += d & 1;
                n += 1;
            }
        }
        for count in [high, odd] {
            let share = count as f64 / n as f64;
            assert!((share - 0.5).abs() < 0.01, "{share}");
        }
    }

    #[test]
    fn the_reach_never_cuts_a_node_that_could_win() {
        let (mut cut, mut n) = (0, 0);
        for i in 0..200_000u64 {
            let worst_bits = draw(chunk_key(chunk(i)), node_key(NodeId(i)));
            let w0 = (1 + fmix64(i) % (1 << 44)) as f64;
            let w = (1 + fmix64(!i) % (1 << 44)) as f64;
            let worst = u_of(worst_bits).ln() / w0;
            let reach = worst * (1.0 + REACH_MARGIN);
            // The highest draw it cuts (out_of_reach is monotone in the
            // draw) scores below the worst kept.
            let (mut lo, mut hi) = (0u64, (1 << 53) - 1);
            if out_of_reach(lo, w, reach) {
                while lo < hi {
                    let mid = lo + (hi - lo).div_ceil(2);
                    if out_of_reach(mid, w, reach) {
                        lo = mid
                    } else {
                        hi = mid - 1
                    }
                }
                assert!(u_of(lo).ln() / w < worst, "{worst_bits} {w0} {w}");
                assert!(!out_of_reach(lo + 1, w, reach));
                cut += 1;
            }
            n += 1;
            // Equal weights: the worst's own draw is never cut.
            assert!(!out_of_reach(worst_bits, w0, reach));
        }
        assert!(cut > n / 4, "the reach should cut often: {cut} of {n}");
    }

    /// `cargo test --release -p tessera-types -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn place_timing() {
        let cands: Vec<_> = (0..1_000u64)
            .map(|i| PlacementCandidate {
                id: NodeId(fmix64(i)),
                zone: Some(format!("zone{}", i % 10)),
                weight: 4 << 40,
            })
            .collect();
        let mut mixed = cands.clone();
        for c in &mut mixed {
            c.weight += c.id.0 % (1 << 30);
        }
        for (name, map) in [
            ("equal weights", PlacementMap::new(cands)),
            ("all weights differ", PlacementMap::new(mixed)),
        ] {
            let rounds = 200_000u64;
            let start = std::time::Instant::now();
            let mut sum = 0u64;
            for i in 0..rounds {
                let id = u128::from(fmix64(i)) << 64 | u128::from(fmix64(!i));
                let p = map.place(ChunkId(id.to_le_bytes()), 6);
                sum = sum.wrapping_add(p.map(|v| v[0].0).unwrap_or(0));
            }
            let per = start.elapsed() / rounds as u32;
            let start = std::time::Instant::now();
            for i in 0..2_000u64 {
                sum = sum.wrapping_add(map.rank(chunk(i))[0].0);
            }
            let rank = start.elapsed() / 2_000;
            println!("1,000 nodes in 10 zones, {name}: place(6) {per:?}, rank {rank:?} ({sum})");
        }
    }
}
