//! The repair loop: repair work from meta first, then, when there is none,
//! a rebalancing pass over all chunk records.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tessera_net::Pacer;
use tessera_proto::{ChunkRecord, ClusterMap, FragmentMove, FragmentState, RepairItem};
use tessera_sdk::Client;
use tessera_types::{ChunkId, NodeId};
use tracing::{debug, info, warn};

use crate::ScrubError;
use crate::placement::{ideal, targets};

#[derive(Debug, Clone)]
pub struct RepairConfig {
    /// Bytes per second read and written by repair and rebalancing; 0:
    /// unlimited.
    pub rate: u64,
    /// Chunks worked on at once.
    pub parallel: usize,
    /// A rebalancing pass runs at least this often, and whenever the
    /// cluster map changed or repairs happened since the last one.
    pub rebalance_every: Duration,
    /// Pause when there is nothing to do, or nothing could be done.
    pub idle: Duration,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            rate: 256 << 20,
            parallel: 4,
            rebalance_every: Duration::from_secs(600),
            idle: Duration::from_secs(1),
        }
    }
}

/// Chunks asked for per round of repair work.
const WORK_BATCH: u32 = 256;
/// Chunk records per page of a rebalancing pass.
const SCAN_PAGE: u32 = 1000;

#[derive(Debug, Default, Clone, Copy)]
pub struct RoundReport {
    /// Chunks looked at, chunks whose moves meta committed, fragments moved.
    pub chunks: usize,
    pub committed: usize,
    pub fragments: usize,
}

pub struct Repairer {
    client: Client,
    pacer: Arc<Pacer>,
    config: RepairConfig,
}

impl Repairer {
    pub fn new(client: Client, config: RepairConfig) -> Self {
        Repairer {
            client,
            pacer: Arc::new(Pacer::new(config.rate)),
            config,
        }
    }

    /// Runs until the task is dropped. Errors (meta unreachable, a node
    /// failing) are logged and retried: all state is in meta.
    pub async fn run(self) {
        info!(
            rate = self.config.rate,
            parallel = self.config.parallel,
            "repairer running"
        );
        let mut last_epoch = None;
        let mut last_pass: Option<Instant> = None;
        let mut changed_since_pass = true;
        loop {
            match self.repair_round().await {
                Ok(r) if r.chunks > 0 => {
                    changed_since_pass |= r.committed > 0;
                    if r.committed == 0 {
                        // Nothing could be done (no target, sources down):
                        // wait for the cluster to change.
                        tokio::time::sleep(self.config.idle).await;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "repair round failed; retrying");
                    tokio::time::sleep(self.config.idle).await;
                    continue;
                }
            }
            let epoch = match self.client.cluster_map_fresh().await {
                Ok(m) => m.epoch,
                Err(e) => {
                    warn!(error = %e, "cannot read the cluster map");
                    tokio::time::sleep(self.config.idle).await;
                    continue;
                }
            };
            let due = changed_since_pass
                || last_epoch != Some(epoch)
                || last_pass.is_none_or(|t| t.elapsed() >= self.config.rebalance_every);
            if due {
                match self.rebalance_pass().await {
                    Ok(r) => {
                        if r.fragments > 0 {
                            info!(moved = r.fragments, "rebalancing pass moved fragments");
                        }
                        last_epoch = Some(epoch);
                        last_pass = Some(Instant::now());
                        // Moves can make more moves worthwhile; look again.
                        changed_since_pass = r.committed > 0;
                        if changed_since_pass {
                            continue;
                        }
                    }
                    Err(e) => warn!(error = %e, "rebalancing pass failed; retrying"),
                }
            }
            tokio::time::sleep(self.config.idle).await;
        }
    }

    /// One batch of repair work: lost fragments rebuilt, draining nodes'
    /// fragments copied, the chunks at most risk first.
    pub async fn repair_round(&self) -> Result<RoundReport, ScrubError> {
        let work = self.client.repair_work(WORK_BATCH).await?;
        if work.is_empty() {
            return Ok(RoundReport::default());
        }
        let map = self.client.cluster_map_fresh().await?;
        let mut report = RoundReport {
            chunks: work.len(),
            ..Default::default()
        };
        let jobs = futures::stream::iter(work)
            .map(|item| self.repair_chunk(item, &map))
            .buffer_unordered(self.config.parallel.max(1));
        tally(jobs, &mut report).await;
        Ok(report)
    }

    /// Restores one chunk as far as the cluster allows; returns the number
    /// of fragments moved.
    async fn repair_chunk(&self, item: RepairItem, map: &ClusterMap) -> Result<usize, ScrubError> {
        let rec = &item.record;
        let of = |s: FragmentState| -> Vec<usize> {
            (0..item.states.len())
                .filter(|&i| item.states[i] == s)
                .collect()
        };
        let lost = of(FragmentState::Lost);
        let moving = of(FragmentState::Move);
        let holders: HashSet<NodeId> = rec.fragments.iter().map(|f| f.node).collect();
        let kept: Vec<NodeId> = (0..rec.fragments.len())
            .filter(|i| !lost.contains(i) && !moving.contains(i))
            .map(|i| rec.fragments[i].node)
            .collect();
        let candidates = targets(map, rec.id, &holders, &kept);
        // Lost fragments first: they are redundancy already gone. One whose
        // node is still writable (rotten or missing on a healthy node) is
        // rewritten there, where placement wants it.
        let writable = |node: NodeId| map.nodes.iter().any(|n| n.id == node && n.writable());
        let mut free = candidates.len();
        let mut wanted: Vec<(usize, bool)> = Vec::new();
        for &i in &lost {
            if writable(rec.fragments[i].node) {
                wanted.push((i, true));
            } else if free > 0 {
                free -= 1;
                wanted.push((i, true));
            }
        }
        for &i in moving.iter().take(free) {
            wanted.push((i, false));
        }
        if wanted.is_empty() {
            return Err(ScrubError::NoTarget {
                chunk: rec.id.to_string(),
                index: lost.first().or(moving.first()).copied().unwrap_or(0),
            });
        }
        let bodies = self.fragment_bodies(rec, &wanted, &lost).await?;
        let started = Instant::now();
        let moves = self.store_all(rec, map, bodies, candidates).await?;
        let n = moves.len();
        self.commit(rec, map, moves, started).await?;
        debug!(chunk = %rec.id, fragments = n, "chunk repaired");
        Ok(n)
    }

    /// Commits moves whose new copies were written since `started`, unless
    /// that took so long that the collector may have taken them (they are
    /// unreferenced until the commit): then they are left as garbage.
    async fn commit(
        &self,
        rec: &ChunkRecord,
        map: &ClusterMap,
        moves: Vec<FragmentMove>,
        started: Instant,
    ) -> Result<(), ScrubError> {
        let limit = Duration::from_millis(map.gc_grace_ms / 2);
        if map.gc_grace_ms > 0 && started.elapsed() > limit {
            return Err(ScrubError::TooSlow(rec.id.to_string()));
        }
        self.client.commit_repair(rec.id, moves).await?;
        Ok(())
    }

    /// The bytes of each wanted fragment: copied from its node when it is
    /// readable there (a move), rebuilt from the others otherwise.
    async fn fragment_bodies(
        &self,
        rec: &ChunkRecord,
        wanted: &[(usize, bool)],
        lost: &[usize],
    ) -> Result<Vec<(usize, bool, Bytes)>, ScrubError> {
        let mut out = Vec::with_capacity(wanted.len());
        let mut rebuild = Vec::new();
        for &(i, is_lost) in wanted {
            if is_lost {
                rebuild.push(i);
                continue;
            }
            self.pacer.take(rec.fragment_len).await;
            match self.client.read_fragment(rec, i).await {
                Ok(b) => out.push((i, false, Bytes::from(b))),
                Err(e) => {
                    debug!(chunk = %rec.id, index = i, error = %e, "copy failed; rebuilding instead");
                    rebuild.push(i);
                }
            }
        }
        if rebuild.is_empty() {
            return Ok(out);
        }
        let avoid: Vec<usize> = lost.iter().chain(&rebuild).copied().collect();
        self.pacer
            .take(rec.fragment_len * rec.policy.required() as u64)
            .await;
        let chunk = self.client.read_chunk_avoiding(rec, &avoid).await?;
        let codec = self.client.codec().clone();
        let policy = rec.policy;
        let enc = tokio::task::spawn_blocking(move || codec.encode(policy, &chunk))
            .await
            .map_err(|e| ScrubError::Task(e.to_string()))?
            .map_err(tessera_sdk::SdkError::from)?;
        for i in rebuild {
            // Encoding is deterministic: the rebuilt fragment must be the
            // one written at first, or something is badly wrong.
            if enc.hashes.get(i) != Some(&rec.fragments[i].hash)
                || enc.fragment_len as u64 != rec.fragment_len
            {
                return Err(ScrubError::Mismatch {
                    chunk: rec.id.to_string(),
                    index: i,
                });
            }
            out.push((i, true, enc.fragments[i].clone()));
        }
        Ok(out)
    }

    /// Writes each body to the next candidate that takes it.
    async fn store_all(
        &self,
        rec: &ChunkRecord,
        map: &ClusterMap,
        bodies: Vec<(usize, bool, Bytes)>,
        candidates: Vec<NodeId>,
    ) -> Result<Vec<FragmentMove>, ScrubError> {
        let addr_of = |node: NodeId| -> Option<SocketAddr> {
            map.nodes
                .iter()
                .find(|n| n.id == node)
                .and_then(|n| n.addr.parse().ok())
        };
        let mut candidates = candidates.into_iter();
        let mut moves = Vec::new();
        let mut failures = Vec::new();
        'bodies: for (index, rebuilt, body) in bodies {
            // A rotten or missing fragment on a healthy node is rewritten
            // where it was; elsewhere only if that node refuses it.
            let own = rec.fragments[index].node;
            let in_place =
                (rebuilt && map.nodes.iter().any(|n| n.id == own && n.writable())).then_some(own);
            for to in in_place.into_iter().chain(candidates.by_ref()) {
                let Some(addr) = addr_of(to) else { continue };
                self.pacer.take(body.len() as u64).await;
                let hash = rec.fragments[index].hash;
                match self
                    .client
                    .store_fragment(addr, rec.id, index as u8, body.clone(), hash)
                    .await
                {
                    Ok(()) => {
                        moves.push(FragmentMove {
                            index: index as u8,
                            from: rec.fragments[index].node,
                            to,
                            rebuilt,
                        });
                        continue 'bodies;
                    }
                    Err(e) => failures.push(format!("node {to}: {e}")),
                }
            }
        }
        if moves.is_empty() {
            return Err(ScrubError::WritesFailed(
                rec.id.to_string(),
                failures.join("; "),
            ));
        }
        Ok(moves)
    }

    /// Walks every chunk record and moves fragments that sit on nodes
    /// placement no longer prefers (after a node joined, or fragments went
    /// to a spare node while another was down) onto preferred nodes that
    /// are up. Moves only what differs: adding a node moves about its fair
    /// share.
    pub async fn rebalance_pass(&self) -> Result<RoundReport, ScrubError> {
        let map = self.client.cluster_map_fresh().await?;
        let mut report = RoundReport::default();
        let mut after: Option<ChunkId> = None;
        loop {
            let page = self.client.scan_chunks(after, SCAN_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            let full = page.len() as u32 == SCAN_PAGE;
            report.chunks += page.len();
            let jobs = futures::stream::iter(page)
                .map(|rec| self.rebalance_chunk(rec, &map))
                .buffer_unordered(self.config.parallel.max(1));
            tally(jobs, &mut report).await;
            if !full {
                break;
            }
        }
        Ok(report)
    }

    async fn rebalance_chunk(
        &self,
        rec: ChunkRecord,
        map: &ClusterMap,
    ) -> Result<usize, ScrubError> {
        let n = rec.fragments.len();
        let Some(ideal) = ideal(map, rec.id, n) else {
            return Ok(0);
        };
        let holders: HashSet<NodeId> = rec.fragments.iter().map(|f| f.node).collect();
        let up = |node: &NodeId| map.nodes.iter().any(|m| m.id == *node && m.writable());
        let readable = |node: &NodeId| {
            map.nodes
                .iter()
                .any(|m| m.id == *node && m.state == tessera_proto::NodeState::Up)
        };
        let free: Vec<NodeId> = ideal
            .iter()
            .filter(|n| !holders.contains(n) && up(n))
            .copied()
            .collect();
        let misplaced: Vec<usize> = (0..n)
            .filter(|&i| {
                !ideal.contains(&rec.fragments[i].node) && readable(&rec.fragments[i].node)
            })
            .collect();
        if free.is_empty() || misplaced.is_empty() {
            return Ok(0);
        }
        let wanted: Vec<(usize, bool)> = misplaced
            .iter()
            .take(free.len())
            .map(|&i| (i, false))
            .collect();
        let bodies = self.fragment_bodies(&rec, &wanted, &[]).await?;
        let started = Instant::now();
        let moves = self.store_all(&rec, map, bodies, free).await?;
        let count = moves.len();
        self.commit(&rec, map, moves, started).await?;
        Ok(count)
    }
}

/// Counts what a stream of chunk jobs moved; a chunk that could not be
/// helped now is left for a later round.
async fn tally(
    mut jobs: impl futures::Stream<Item = Result<usize, ScrubError>> + Unpin,
    report: &mut RoundReport,
) {
    while let Some(result) = jobs.next().await {
        match result {
            Ok(0) => {}
            Ok(n) => {
                report.committed += 1;
                report.fragments += n;
            }
            Err(e) => debug!(error = %e, "chunk left for a later round"),
        }
    }
}
