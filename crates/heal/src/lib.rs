//! Tessera's healing decisions, as pure functions of plain data.
//!
//! Owns the rules that decide how the cluster heals: when a silent node is
//! `down` or `out` (liveness), what each fragment and chunk is worth
//! (health), which chunks to repair first (plan), where restored fragments
//! go and which to restore (repair), and which fragments to move so that
//! stored bytes follow capacity (balance). Meta, the repairer and a
//! simulator all call the same functions, so a test can run thousands of
//! nodes, failures and clock ticks in milliseconds.
//!
//! It must not know about I/O, the clock (every time is passed in, in
//! milliseconds), tokio, RocksDB or the network, how nodes store fragments
//! or how meta stores its records: callers hand in node views, fragment
//! states and chunk placements, and carry out the decisions themselves.

mod balance;
mod health;
mod liveness;
mod plan;
mod repair;
mod view;

pub use balance::{BalanceMove, Balancer, PassTrigger, load_balance};
pub use health::{ChunkCondition, Health, HealthTally, condition, fragment_state};
pub use liveness::{HeartbeatRecord, LivenessConfig, LivenessTracker, node_state};
pub use plan::{RepairPriority, plan, priority};
pub use repair::{
    FragmentRestore, RepairStep, Restore, max_per_zone, repair_step, repair_targets, zone_cap,
};
pub use view::{ClusterView, NodeView, ZoneIndex};
