//! What the simulator refuses to see, as errors that name the seed and the
//! step so that a failure replays exactly.

use tessera_types::{ChunkId, NodeId};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Violation {
    /// A record names a fragment its node's disk does not have, though the
    /// disk is intact: the system itself lost it.
    #[error(
        "seed {seed} step {step} t={at_ms}ms: chunk {chunk} fragment {index}: meta places it on node {node}, whose disk does not have it"
    )]
    MissingFragment {
        seed: u64,
        step: u64,
        at_ms: u64,
        chunk: ChunkId,
        index: usize,
        node: NodeId,
    },
    #[error("seed {seed} step {step} t={at_ms}ms: chunk {chunk} has two fragments on node {node}")]
    SharedNode {
        seed: u64,
        step: u64,
        at_ms: u64,
        chunk: ChunkId,
        node: NodeId,
    },
    #[error(
        "seed {seed} step {step} t={at_ms}ms: chunk {chunk}: {per_zone} fragments in one zone after a {what} (allowed {allowed}; zones before {before:?}, after {after:?})"
    )]
    ZoneSpread {
        seed: u64,
        step: u64,
        at_ms: u64,
        chunk: ChunkId,
        what: String,
        per_zone: usize,
        allowed: usize,
        before: Vec<String>,
        after: Vec<String>,
    },
    #[error(
        "seed {seed} step {step} t={at_ms}ms: chunk {chunk}: a commit left it less safe ({before} intact fragments before, {after} after)"
    )]
    LessSafe {
        seed: u64,
        step: u64,
        at_ms: u64,
        chunk: ChunkId,
        before: usize,
        after: usize,
    },
    #[error(
        "seed {seed} step {step} t={at_ms}ms: repair of chunk {chunk} (priority {took}) taken before chunk {waiting} (priority {waiting_priority})"
    )]
    RepairOrder {
        seed: u64,
        step: u64,
        at_ms: u64,
        chunk: ChunkId,
        took: String,
        waiting: ChunkId,
        waiting_priority: String,
    },
    #[error("seed {seed} step {step} t={at_ms}ms: meta refused a {what} as malformed: {message}")]
    Malformed {
        seed: u64,
        step: u64,
        at_ms: u64,
        what: String,
        message: String,
    },
    #[error("seed {seed} t={at_ms}ms: chunk {chunk}: {what}")]
    Health {
        seed: u64,
        at_ms: u64,
        chunk: ChunkId,
        what: String,
    },
    #[error("seed {seed} t={at_ms}ms: rebalancing: {what}")]
    Rebalance { seed: u64, at_ms: u64, what: String },
    #[error("seed {seed}: the state machine failed: {what}")]
    Store { seed: u64, what: String },
}
