//! The simulated world: nodes with their disks, what is physically stored
//! on each, and the faults the simulator inflicts. This is the ground truth
//! the invariants are checked against, kept apart from meta's records.

use std::collections::BTreeSet;

use rustc_hash::FxHashSet;
use tessera_types::{ChunkId, NodeId, Policy};

/// A fragment's name on a disk: 15 bytes of the (random) chunk id and the
/// fragment index.
pub type FragKey = u128;

pub fn frag_key(chunk: ChunkId, index: usize) -> FragKey {
    let mut b = [0u8; 16];
    b[..15].copy_from_slice(&chunk.0[..15]);
    b[15] = index as u8;
    u128::from_be_bytes(b)
}

/// Fragment bytes for a chunk of `len` bytes, as the codec lays it out:
/// `ec:K+M` shards of ceil(len/K) rounded up to 64 bytes, `rep:N` copies.
pub fn fragment_len(policy: Policy, len: u64) -> u64 {
    match policy {
        Policy::Erasure { data, .. } => len.div_ceil(data as u64).div_ceil(64) * 64,
        Policy::Replicated { .. } => len,
    }
}

pub struct SimNode {
    pub id: NodeId,
    pub zone: String,
    pub capacity: u64,
    /// The process is running.
    pub alive: bool,
    /// The disk is gone for good (and the node with it).
    pub destroyed: bool,
    /// Cut off from the network.
    pub isolated: bool,
    /// When the node last became unreachable (`None` while reachable).
    pub unreachable_since: Option<u64>,
    /// Fragment files on the disk. Ordered: a sweep looks fragments up in
    /// chunk id order, so each node's lookups walk its tree forwards and
    /// stay in cache, where a hash set cost two cache misses per fragment
    /// (most of a sweep's time at a million chunks).
    pub files: BTreeSet<FragKey>,
    /// Files whose bytes rotted.
    pub rotten: FxHashSet<FragKey>,
    /// Retired for good by the operator (drained and removed).
    pub removed: bool,
}

impl SimNode {
    pub fn new(id: NodeId, zone: String, capacity: u64) -> Self {
        SimNode {
            id,
            zone,
            capacity,
            alive: true,
            destroyed: false,
            isolated: false,
            unreachable_since: None,
            files: BTreeSet::new(),
            rotten: FxHashSet::default(),
            removed: false,
        }
    }

    /// Answers requests: running, on the network, with its disk.
    pub fn reachable(&self) -> bool {
        self.alive && !self.isolated && !self.destroyed && !self.removed
    }

    /// Holds this fragment, readable and intact (whether or not the node
    /// can be reached right now).
    pub fn intact(&self, key: FragKey) -> bool {
        !self.destroyed && self.files.contains(&key) && !self.rotten.contains(&key)
    }

    /// Becomes unreachable at `now` (if it was reachable).
    pub fn lose_contact(&mut self, now: u64) {
        if self.unreachable_since.is_none() {
            self.unreachable_since = Some(now);
        }
    }

    /// Reachable again, if nothing else keeps it away.
    pub fn regain_contact(&mut self) {
        if self.reachable() {
            self.unreachable_since = None;
        }
    }
}
