//! The repairer: brings every chunk back to full redundancy and to its fair
//! placement. It rebuilds fragments that are lost (on an out node, or
//! reported corrupt or missing by readers and deep scrubs) from K surviving
//! ones, copies fragments off draining nodes, and moves misplaced fragments
//! to the nodes placement prefers after nodes join or leave.
//!
//! It works through the SDK like any client and keeps no state of its own:
//! meta lists the work (the fewest spare fragments first) and commits each
//! move with a compare-and-set, so a repairer killed at any moment, or two
//! running at once, never lose or double-place a fragment. New copies are
//! stored and verified before meta points at them, so a chunk is never less
//! safe after a step than before it. It also re-encodes the versions a
//! lifecycle transition moved to a storage class of another policy
//! (`transition`). It must not know about fragment files or the metadata
//! store.

mod feed;
mod repairer;
mod transition;

pub use feed::WorkFeed;
pub use repairer::{BALANCE_TOLERANCE, RepairConfig, Repairer, RoundReport, too_slow};

#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    #[error(transparent)]
    Sdk(#[from] tessera_sdk::SdkError),
    #[error("chunk {chunk}: no node can take fragment {index} (all writable nodes hold one)")]
    NoTarget { chunk: String, index: usize },
    #[error("chunk {chunk}: rebuilt fragment {index} does not match its recorded hash")]
    Mismatch { chunk: String, index: usize },
    #[error("chunk {0}: every write of its fragments failed: {1}")]
    WritesFailed(String, String),
    #[error(
        "chunk {0}: new copies took longer than half the garbage grace period to write; not committed"
    )]
    TooSlow(String),
    #[error("encoder task: {0}")]
    Task(String),
    #[error("chunk {0}: not every planned move could be made; none was committed")]
    Incomplete(String),
}
