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
    /// Its fragment byte counters (since it started).
    pub put_bytes: u64,
    pub get_bytes: u64,
    /// Rates over the time between its last two heartbeats, set by
    /// [`Liveness::heard`].
    pub write_bytes_per_s: u64,
    pub read_bytes_per_s: u64,
}

/// Bytes per second between two readings of a counter `ms` apart; a
/// counter that went back (the node restarted) counts from zero.
fn rate(before: u64, after: u64, ms: u64) -> u64 {
    let delta = if after >= before {
        after - before
    } else {
        after
    };
    if ms == 0 {
        return 0;
    }
    (u128::from(delta) * 1000 / u128::from(ms)).min(u128::from(u64::MAX)) as u64
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

    /// A heartbeat from `node` at `now_ms`; its traffic rates are worked
    /// out here from the previous heartbeat's counters.
    pub fn heard(&self, node: NodeId, mut report: NodeReport, now_ms: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let before = inner.0.last_heard(node);
        if let (Some(at), Some(prev)) = (before, inner.1.get(&node)) {
            let ms = now_ms.saturating_sub(at);
            report.write_bytes_per_s = rate(prev.put_bytes, report.put_bytes, ms);
            report.read_bytes_per_s = rate(prev.get_bytes, report.get_bytes, ms);
        }
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

#[cfg(test)]
mod tests {
    use super::rate;

    #[test]
    fn rates_come_from_counter_differences_and_survive_a_restarted_node() {
        assert_eq!(rate(1_000, 3_000, 500), 4_000);
        assert_eq!(rate(5, 5, 1_000), 0);
        // The node restarted: its counter began again at zero.
        assert_eq!(rate(10_000, 2_000, 1_000), 2_000);
        // Two heartbeats in the same millisecond say nothing about a rate.
        assert_eq!(rate(0, 100, 0), 0);
        assert_eq!(rate(0, u64::MAX, 1), u64::MAX);
    }
}
