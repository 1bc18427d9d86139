//! When a silent node counts as `down` (read around, not rebuilt) and when as
//! `out` (gone: its fragments are rebuilt elsewhere).
//!
//! Heartbeats are soft state: a meta that restarts, or a new leader, knows
//! nobody's last heartbeat. It counts silence from when it began watching
//! and gives every node not yet heard a little longer before `out`, because
//! reconnecting can take a connect timeout or two and a false `out` sets off
//! needless repairs.

use std::collections::HashMap;

use tessera_proto::NodeState;
use tessera_types::NodeId;

/// How long silence may last, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    /// Silent for longer than this: `down`.
    pub down_after_ms: u64,
    /// Silent for longer than this: `out`.
    pub out_after_ms: u64,
    /// Extra time before `out` for a node not heard since meta began
    /// watching.
    pub restart_grace_ms: u64,
}

impl Default for LivenessConfig {
    /// Meta's defaults: down after 30 s, out after 10 min, 10 s of grace
    /// after a restart.
    fn default() -> Self {
        LivenessConfig {
            down_after_ms: 30_000,
            out_after_ms: 600_000,
            restart_grace_ms: 10_000,
        }
    }
}

/// Heartbeats from a node as meta has heard them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatRecord {
    /// When the latest heartbeat arrived, in milliseconds on the caller's
    /// clock.
    pub last_heard_ms: u64,
}

/// Soft state meta keeps: when it began watching (process start, or later,
/// when it became leader), and the last heartbeat of each node heard since.
#[derive(Debug, Clone, Default)]
pub struct LivenessTracker {
    watch_since_ms: u64,
    heard: HashMap<NodeId, HeartbeatRecord>,
}

impl LivenessTracker {
    /// Watching from `watch_since_ms`, with no heartbeat heard yet.
    pub fn new(watch_since_ms: u64) -> Self {
        LivenessTracker {
            watch_since_ms,
            heard: HashMap::new(),
        }
    }

    /// A heartbeat from `node` at `at_ms`. Heartbeats handled out of order
    /// never move the record backwards.
    pub fn heard(&mut self, node: NodeId, at_ms: u64) {
        let r = self.heard.entry(node).or_insert(HeartbeatRecord {
            last_heard_ms: at_ms,
        });
        r.last_heard_ms = r.last_heard_ms.max(at_ms);
    }

    /// Drops a node's record (the node was removed from the map).
    pub fn forget(&mut self, node: NodeId) {
        self.heard.remove(&node);
    }

    /// The node's state at `now_ms`.
    pub fn state(&self, node: NodeId, now_ms: u64, cfg: &LivenessConfig) -> NodeState {
        node_state(self.last_heard(node), self.watch_since_ms, now_ms, cfg)
    }

    /// When the node was last heard, in milliseconds, if it was since
    /// watching began.
    pub fn last_heard(&self, node: NodeId) -> Option<u64> {
        self.heard.get(&node).map(|r| r.last_heard_ms)
    }

    /// When watching began, in milliseconds.
    pub fn watch_since(&self) -> u64 {
        self.watch_since_ms
    }

    /// Starts watching afresh at `watch_since_ms` with no records: a
    /// restarted meta or a new leader, which has heard nobody yet.
    pub fn restart(&mut self, watch_since_ms: u64) {
        self.watch_since_ms = watch_since_ms;
        self.heard.clear();
    }
}

/// A node's state at `now_ms`, all times in milliseconds on one clock.
///
/// Silent for more than `down_after_ms`: `Down`; for more than
/// `out_after_ms`: `Out`; else `Up`. Silence counts from the last heartbeat
/// heard since `watch_since_ms`; a node not heard since then counts from
/// `watch_since_ms` and gets `restart_grace_ms` more before `Out`. A
/// heartbeat stamped after `now_ms` counts as now.
pub fn node_state(
    last_heard_ms: Option<u64>,
    watch_since_ms: u64,
    now_ms: u64,
    cfg: &LivenessConfig,
) -> NodeState {
    // A heartbeat older than the watch belongs to a previous watch: it says
    // nothing about this one.
    let (since, out_after) = match last_heard_ms.filter(|&t| t >= watch_since_ms) {
        Some(t) => (t, cfg.out_after_ms),
        None => (
            watch_since_ms,
            cfg.out_after_ms.saturating_add(cfg.restart_grace_ms),
        ),
    };
    let silent = now_ms.saturating_sub(since);
    if silent > out_after {
        NodeState::Out
    } else if silent > cfg.down_after_ms {
        NodeState::Down
    } else {
        NodeState::Up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: LivenessConfig = LivenessConfig {
        down_after_ms: 5_000,
        out_after_ms: 20_000,
        restart_grace_ms: 10_000,
    };

    #[test]
    fn nodes_go_down_then_out() {
        let heard_at = 1_000;
        let at = |silent_s: u64| node_state(Some(heard_at), 0, heard_at + silent_s * 1000, &CFG);
        assert_eq!(at(0), NodeState::Up);
        assert_eq!(at(5), NodeState::Up);
        assert_eq!(at(6), NodeState::Down);
        assert_eq!(at(20), NodeState::Down);
        assert_eq!(at(21), NodeState::Out);
        // Strictly greater, to the millisecond.
        assert_eq!(
            node_state(Some(0), 0, 5_001, &CFG),
            NodeState::Down,
            "one millisecond past down_after"
        );
    }

    #[test]
    fn unheard_nodes_count_from_the_watch_with_grace() {
        let since = 100_000;
        let at = |now| node_state(None, since, now, &CFG);
        assert_eq!(at(since), NodeState::Up);
        assert_eq!(at(since + 5_000), NodeState::Up);
        assert_eq!(at(since + 5_001), NodeState::Down);
        // Not out at out_after: the grace period runs first.
        assert_eq!(at(since + 20_001), NodeState::Down);
        assert_eq!(at(since + 30_000), NodeState::Down);
        assert_eq!(at(since + 30_001), NodeState::Out);
        // A heartbeat from before the watch is as good as none.
        assert_eq!(
            node_state(Some(since - 1), since, since + 20_001, &CFG),
            NodeState::Down
        );
        // The clock before the watch began: nothing is silent yet.
        assert_eq!(at(0), NodeState::Up);
    }

    #[test]
    fn heartbeats_from_the_future_count_as_now() {
        assert_eq!(node_state(Some(50_000), 0, 10_000, &CFG), NodeState::Up);
        let cfg = LivenessConfig {
            out_after_ms: u64::MAX,
            restart_grace_ms: u64::MAX,
            ..CFG
        };
        assert_eq!(node_state(None, 0, u64::MAX, &cfg), NodeState::Down);
    }

    #[test]
    fn tracker_keeps_the_latest_heartbeat_and_restarts_clean() {
        let (a, b) = (NodeId(1), NodeId(2));
        let mut t = LivenessTracker::new(0);
        t.heard(a, 10_000);
        t.heard(a, 4_000);
        assert_eq!(t.last_heard(a), Some(10_000));
        assert_eq!(t.state(a, 15_000, &CFG), NodeState::Up);
        assert_eq!(t.state(a, 15_001, &CFG), NodeState::Down);
        assert_eq!(t.state(a, 30_001, &CFG), NodeState::Out);
        // Never heard: counts from the watch, with grace.
        assert_eq!(t.state(b, 30_001, &CFG), NodeState::Out);
        assert_eq!(t.state(b, 29_000, &CFG), NodeState::Down);

        // A new leader at 40 s has heard nobody: a fresh grace for all.
        t.restart(40_000);
        assert_eq!(t.last_heard(a), None);
        assert_eq!(t.watch_since(), 40_000);
        assert_eq!(t.state(a, 60_001, &CFG), NodeState::Down);
        assert_eq!(t.state(a, 70_001, &CFG), NodeState::Out);
        t.heard(a, 66_000);
        assert_eq!(t.state(a, 70_001, &CFG), NodeState::Up);

        t.forget(a);
        assert_eq!(t.last_heard(a), None);
    }
}
