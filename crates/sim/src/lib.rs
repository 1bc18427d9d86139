//! Deterministic simulation of meta and self-healing (the FoundationDB /
//! TigerBeetle idea): the real state machine (`tessera-meta` over its
//! in-memory store) and the real healing decisions (`tessera-heal`) run
//! against simulated nodes, disks, a clock and a lossy network. Nodes crash
//! and come back, die for good, are cut off, drained and added; disks rot
//! fragments; the repairer and meta crash and restart; clients write and
//! delete; all for simulated days, driven by one seeded random source.
//!
//! After every step the invariants are checked on what the step touched
//! (and on everything at the end): no chunk silently loses data (a chunk
//! that suffered more than M simultaneous losses is reported `lost`, every
//! other one keeps at least K intact fragments), never two fragments of a
//! chunk on one node, zone spread kept, repairs taken most at risk first
//! and never making a chunk less safe, rebalancing converging without
//! moving more than it must. A failure names its seed and step; the same
//! seed replays it exactly.
//!
//! It owns only the simulated world and its bookkeeping; it must not carry
//! rules of its own about placement, liveness, health or repair: those are
//! the crates it tests.

// A `Violation` ends the run and carries what a reader needs to replay it;
// it is returned once, so its size costs nothing.
#![allow(clippy::result_large_err)]

mod check;
mod config;
mod sim;
mod world;

pub use check::Violation;
pub use config::{Bug, SimConfig};
pub use sim::{Report, Sim};
