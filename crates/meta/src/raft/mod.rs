//! Meta's state machine replicated by Raft (the `openraft` crate): the log
//! and the state on RocksDB, Raft's RPCs over the cluster's QUIC with
//! mutual TLS, snapshots as RocksDB checkpoints.
//!
//! A log entry is a group of commands (`Proposals`): the committer gathers
//! every proposal waiting and proposes them as one entry, so a busy meta
//! still makes one log append and one fsync for many commits. Applying an
//! entry applies its commands in order through `StateMachine`, with the
//! entry's log id and the membership written in the same atomic batch.
//!
//! This module knows Raft and the store; it must not know what commands
//! mean (that is `state`'s) or how requests arrive (`server`'s).

// openraft's traits fix the error type (`StorageError`, 224 bytes); the
// helpers here return it as the traits do.
#![allow(clippy::result_large_err)]

mod log;
mod machine;
mod network;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tessera_net::Endpoint;

pub use machine::{MachineStore, StateCell};
pub use network::answer as answer_rpc;

use crate::MetaError;
use crate::state::{Command, Outcome};

/// A replica's id in the meta group.
pub type NodeId = u64;

/// The commands of one log entry, applied in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposals(pub Vec<Command>);

/// The outcome of each command of an entry, in order (empty for Raft's own
/// entries: blank and membership).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcomes(pub Vec<Outcome>);

openraft::declare_raft_types!(
    /// Meta's Raft types.
    pub TypeConfig:
        D = Proposals,
        R = Outcomes,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Meta's Raft handle.
pub type MetaRaft = openraft::Raft<TypeConfig>;

/// The id of the replica reached at `addr` (`HOST:PORT` exactly as the
/// cluster file and `tessera meta add` spell it): FNV-1a of the text, so
/// every replica and every tool derives the same id without asking, and a
/// replica knows its own before it has joined. Never 0.
pub fn replica_id(addr: &str) -> NodeId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in addr.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Ids are shown to people: keep them positive in any signed view.
    (h >> 1).max(1)
}

/// This replica's id: kept in `data_dir/replica_id` from its first start
/// (so a replica keeps its id if its address changes), else
/// `replica_id(advertise)`, which a replica whose data was wiped gets
/// again. Errors: the file system's.
pub fn own_id(data_dir: &Path, advertise: &str) -> Result<NodeId, MetaError> {
    let path = data_dir.join("replica_id");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|e| MetaError::Corrupt(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = replica_id(advertise);
            tessera_net::write_atomically(&path, format!("{id}\n").as_bytes(), false)
                .map_err(|e| MetaError::Corrupt(format!("writing {}: {e}", path.display())))?;
            Ok(id)
        }
        Err(e) => Err(MetaError::Corrupt(format!(
            "reading {}: {e}",
            path.display()
        ))),
    }
}

/// How quickly the group notices a dead leader: heartbeats every 200 ms,
/// an election after 0.8 to 1.6 s of silence (the goal is under 3 s
/// without a successful write across a leader's death; shorter timeouts
/// made leaders step down needlessly on this busy 2-core machine).
///
/// A snapshot is taken every `snapshot_every` entries; the log behind it
/// is then purged but for `min(snapshot_every, 1000)` entries, kept for
/// followers a little behind.
pub fn raft_config(snapshot_every: u64) -> Result<openraft::Config, MetaError> {
    let config = openraft::Config {
        cluster_name: "tessera-meta".into(),
        heartbeat_interval: 200,
        election_timeout_min: 800,
        election_timeout_max: 1600,
        // Entries carry up to `committer::MAX_ENTRY_BYTES` each: eight
        // stay well inside a frame.
        max_payload_entries: 8,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_every.max(1)),
        max_in_snapshot_log_to_keep: snapshot_every.clamp(1, 1_000),
        snapshot_max_chunk_size: 4 * 1024 * 1024,
        install_snapshot_timeout: 10_000,
        ..Default::default()
    };
    config
        .validate()
        .map_err(|e| MetaError::Internal(format!("Raft configuration: {e}")))
}

/// Opens the log and the state under `data_dir` and starts this replica
/// (`me`), its Raft traffic going out from `endpoint`. With `initial` (the group the
/// cluster file names, this replica among them) a replica with an empty
/// log starts the group; one not named waits to be added by the leader.
/// Errors: the databases', or Raft's.
pub async fn start(
    data_dir: &Path,
    snapshot_every: u64,
    me: NodeId,
    endpoint: Endpoint,
    initial: Option<BTreeMap<NodeId, BasicNode>>,
) -> Result<(MetaRaft, Arc<StateCell>), MetaError> {
    let log = log::LogStore::open(&data_dir.join("raft-log"))?;
    let machine = MachineStore::open(data_dir)?;
    let cell = machine.cell();
    let network = network::Network::new(endpoint);
    let raft = openraft::Raft::new(
        me,
        Arc::new(raft_config(snapshot_every)?),
        network,
        log,
        machine,
    )
    .await
    .map_err(|e| MetaError::Internal(format!("starting Raft: {e}")))?;
    if let Some(members) = initial {
        let fresh = !raft
            .is_initialized()
            .await
            .map_err(|e| MetaError::Internal(format!("Raft: {e}")))?;
        if fresh {
            // Every replica of the initial group does this with the same
            // members; all but the first find the log started.
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!(error = %e, "the group was already started");
            }
        }
    }
    Ok((raft, cell))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ids_are_stable_and_differ() {
        assert_eq!(replica_id("127.0.0.1:7000"), replica_id("127.0.0.1:7000"));
        assert_ne!(replica_id("127.0.0.1:7000"), replica_id("127.0.0.1:7001"));
        assert!(replica_id("") > 0);
    }
}
