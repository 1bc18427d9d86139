//! The cluster map as clients see it (records joined with liveness), chunk
//! health and repair progress, and the whole status. Health comes from
//! `HealingQueries::assess` on a snapshot, cached for a moment because
//! status and the repairer poll it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_heal::ClusterView;
use tessera_heal::load_balance;
use tessera_proto::{ClusterMap, ClusterStatus, NodeInfo, NodeState, RepairProgress};

use super::Meta;
use crate::MetaError;
use crate::state::healing::{Assessment, NodeClasses, node_classes};
use crate::state::prelude::*;
use crate::state::tables::counter;

/// Repair traffic over this window gives the rate in status.
const RATE_WINDOW: Duration = Duration::from_secs(30);
/// Chunk assessments are this fresh at most.
const ASSESS_TTL: Duration = Duration::from_millis(500);
/// Corruption reports shown in status.
const RECENT_CORRUPT: usize = 20;
/// Most chunks of repair work planned at once.
const WORK_LIMIT: usize = 10_000;

#[derive(Default)]
pub(super) struct StatusCache {
    /// (when, bytes) of recent repair commits.
    repaired: Mutex<VecDeque<(Instant, u64)>>,
    /// The last assessment, when, and the node classes it was made with.
    assessed: Mutex<Option<(Instant, NodeClasses, Arc<Assessment>)>>,
}

impl StatusCache {
    /// The next status or repair request looks afresh.
    pub fn invalidate(&self) {
        *self.assessed.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn repaired(&self, bytes: u64) {
        self.repaired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((Instant::now(), bytes));
    }
}

impl Meta {
    pub fn cluster_map(&self) -> Result<ClusterMap, MetaError> {
        let sm = self.sm();
        let r = sm.read();
        let now = self.mono_ms();
        let nodes = r
            .node_table()?
            .into_iter()
            .map(|(n, admin, stats)| {
                let seen = self.liveness.seen(n.id, now);
                // A silent node's last rates are history, not traffic.
                let up_rate = |rate| if seen.state == NodeState::Up { rate } else { 0 };
                NodeInfo {
                    id: n.id,
                    addr: n.addr,
                    zone: n.zone,
                    capacity: n.capacity,
                    used: seen.report.used,
                    state: seen.state,
                    last_seen_ms: seen.silent_ms,
                    admin,
                    fragments: stats.fragments,
                    stored: stats.bytes,
                    scrub: seen.report.scrub,
                    write_bytes_per_s: up_rate(seen.report.write_bytes_per_s),
                    read_bytes_per_s: up_rate(seen.report.read_bytes_per_s),
                }
            })
            .collect();
        Ok(ClusterMap {
            epoch: r.counter(counter::EPOCH)?,
            nodes,
            default_policy: self.config.default_policy,
            inline_limit: self.config.inline_limit,
            gc_grace_ms: self.config.gc_grace.as_millis() as u64,
        })
    }

    /// The health of every chunk and the repair work, at most `ASSESS_TTL`
    /// old and made with the node states of `map`: a status must never show
    /// a map and health that disagree.
    pub fn assess(&self, map: &ClusterMap) -> Result<Arc<Assessment>, MetaError> {
        let classes = node_classes(map);
        let mut cached = self
            .status
            .assessed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((at, seen, a)) = cached.as_ref()
            && at.elapsed() < ASSESS_TTL
            && *seen == classes
        {
            return Ok(a.clone());
        }
        let a = Arc::new(self.sm().read().assess(&classes, WORK_LIMIT)?);
        *cached = Some((Instant::now(), classes, a.clone()));
        Ok(a)
    }

    fn repair_progress(&self, a: &Assessment) -> Result<RepairProgress, MetaError> {
        let mut window = self
            .status
            .repaired
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while window
            .front()
            .is_some_and(|(at, _)| at.elapsed() > RATE_WINDOW)
        {
            window.pop_front();
        }
        let bytes: u64 = window.iter().map(|(_, b)| b).sum();
        // Over the window, or since the first commit in it if repair just began.
        let span = window
            .front()
            .map(|(at, _)| at.elapsed().max(Duration::from_secs(1)))
            .unwrap_or(RATE_WINDOW)
            .min(RATE_WINDOW);
        let rate = (bytes as f64 / span.as_secs_f64()) as u64;
        let todo = a.pending_bytes + a.moving_bytes;
        let recent = window
            .back()
            .is_some_and(|(at, _)| at.elapsed() < Duration::from_secs(5));
        let sm = self.sm();
        let r = sm.read();
        Ok(RepairProgress {
            pending_fragments: a.pending_fragments,
            pending_bytes: a.pending_bytes,
            moving_fragments: a.moving_fragments,
            rebuilt_fragments: r.counter(counter::REBUILT_FRAGMENTS)?,
            rebuilt_bytes: r.counter(counter::REBUILT_BYTES)?,
            moved_fragments: r.counter(counter::MOVED_FRAGMENTS)?,
            moved_bytes: r.counter(counter::MOVED_BYTES)?,
            rate_bytes_per_s: rate,
            eta_s: (todo > 0 && rate > 0).then(|| todo.div_ceil(rate)),
            active: todo > 0 && recent,
        })
    }

    pub fn status(&self) -> Result<ClusterStatus, MetaError> {
        let map = self.cluster_map()?;
        let a = self.assess(&map)?;
        let repair = self.repair_progress(&a)?;
        let sm = self.sm();
        let r = sm.read();
        Ok(ClusterStatus {
            balance: load_balance(ClusterView::from_map(&map).nodes()),
            buckets: r.counter(counter::BUCKETS)?,
            objects: r.counter(counter::OBJECTS)?,
            chunks: a.health.total,
            corrupt_reports: r.counter(counter::CORRUPT)?,
            recent_corrupt: r.recent_corrupt(RECENT_CORRUPT)?,
            health: a.health,
            repair,
            scrub_seq: r.counter(counter::SCRUB_SEQ)?,
            map,
        })
    }
}
