//! Node liveness (soft state): heartbeats set when a node was last heard;
//! `tessera_heal::liveness` turns silence into `up`, `down` and `out`.
//! Meta watches from its own start, so after a restart every known node
//! gets a full grace period (and the restart grace more) before it can be
//! `out`: reconnecting can take a connect timeout or two, and a false `out`
//! would set off needless repairs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tessera_heal::{LivenessConfig, LivenessTracker};
use tessera_proto::{NodeState, ScrubProgress};
use tessera_types::NodeId;

use super::MetaConfig;

/// Nodes not yet heard from after a meta restart get this much longer
/// before they count as out.
pub(super) const RESTART_GRACE: Duration = Duration::from_secs(10);

/// What a node last said about itself.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct NodeReport {
    pub used: u64,
    pub scrub: ScrubProgress,
}

/// A node as liveness sees it at some moment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    pub state: NodeState,
    /// Milliseconds since it was last heard (or since meta began watching).
    pub silent_ms: u64,
    pub report: NodeReport,
}

pub(super) struct Liveness {
    config: LivenessConfig,
    inner: Mutex<(LivenessTracker, HashMap<NodeId, NodeReport>)>,
}

impl Liveness {
    pub fn new(config: &MetaConfig) -> Self {
        Liveness {
            config: LivenessConfig {
                down_after_ms: config.down_after.as_millis() as u64,
                out_after_ms: config.out_after.as_millis() as u64,
                restart_grace_ms: RESTART_GRACE.as_millis() as u64,
            },
            // Meta's monotonic clock starts at its start: it watches from 0.
            inner: Mutex::new((LivenessTracker::new(0), HashMap::new())),
        }
    }

    /// This replica began leading at `now_ms`: it watches every node from
    /// now, as a restarted meta does (what it heard while following is
    /// stale, another leader took the heartbeats).
    pub fn lead_from(&self, now_ms: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner = (LivenessTracker::new(now_ms), HashMap::new());
    }

    /// A heartbeat from `node` at `now_ms`.
    pub fn heard(&self, node: NodeId, report: NodeReport, now_ms: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0.heard(node, now_ms);
        inner.1.insert(node, report);
    }

    pub fn forget(&self, node: NodeId) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0.forget(node);
        inner.1.remove(&node);
    }

    pub fn seen(&self, node: NodeId, now_ms: u64) -> Seen {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let state = inner.0.state(node, now_ms, &self.config);
        let since = inner.0.last_heard(node).unwrap_or(inner.0.watch_since());
        Seen {
            state,
            silent_ms: now_ms.saturating_sub(since),
            report: inner.1.get(&node).copied().unwrap_or_default(),
        }
    }
}
