//! The repair loop: repair work from meta first, then, when there is none,
//! a rebalancing pass over all chunk records.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tessera_net::Pacer;
use tessera_proto::{ChunkRecord, ClusterMap, FragmentMove, FragmentState, RepairItem};
use tessera_sdk::Client;
use tessera_types::{ChunkId, NodeId};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use tessera_heal::{BalanceMove, Balancer, PassTrigger};
use tessera_heal::{ClusterView, FragmentRestore, Restore, repair_step};

use crate::ScrubError;
use crate::feed::WorkFeed;

/// How far from its fair share a node may be before rebalancing moves data
/// (0.02: within 2%).
pub const BALANCE_TOLERANCE: f64 = 0.02;

#[derive(Debug, Clone)]
pub struct RepairConfig {
    /// Bytes per second read and written by repair and rebalancing; 0:
    /// unlimited.
    pub rate: u64,
    /// Chunks worked on at once.
    pub parallel: usize,
    /// Loads are checked this often for drift (`tessera_heal::PassTrigger`);
    /// a changed cluster map is noticed at once.
    pub rebalance_every: Duration,
    /// Pause when there is nothing to do, or nothing could be done.
    pub idle: Duration,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            rate: 256 << 20,
            parallel: 4,
            rebalance_every: Duration::from_secs(60),
            idle: Duration::from_secs(1),
        }
    }
}

/// How often a resting repairer looks for a change in the nodes' states.
const WATCH_NODES_EVERY: Duration = Duration::from_millis(200);
/// Chunks asked for per work list.
const WORK_BATCH: u32 = 256;
/// Chunk records per page of a rebalancing pass.
const SCAN_PAGE: u32 = 1000;

#[derive(Debug, Default, Clone, Copy)]
pub struct RoundReport {
    /// Chunks looked at, chunks whose moves meta committed, fragments moved.
    pub chunks: usize,
    pub committed: usize,
    pub fragments: usize,
    /// Chunks whose planned moves could not all be made.
    pub unfinished: usize,
}

/// Cheap to clone: clones share the client and the rate limit (each chunk
/// of a pass runs as a task of its own, on any of the runtime's threads).
#[derive(Clone)]
pub struct Repairer {
    pub(crate) client: Client,
    pub(crate) pacer: Arc<Pacer>,
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
        let mut last_check: Option<Instant> = None;
        loop {
            match self.repair_pass().await {
                Ok(r) if r.chunks > 0 => {
                    if r.committed == 0 {
                        // Nothing could be done (no target, sources down):
                        // wait for the cluster to change.
                        self.rest().await;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "repair pass failed; retrying");
                    tokio::time::sleep(self.config.idle).await;
                    continue;
                }
            }
            // Redundancy first; then lifecycle transitions, a batch at a
            // time so that new repair work is seen between batches.
            match self.transition_round().await {
                Ok(0) => {}
                Ok(_) => continue,
                Err(e) => warn!(error = %e, "lifecycle transitions failed; retrying"),
            }
            let map = match self.client.cluster_map_fresh().await {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "cannot read the cluster map");
                    tokio::time::sleep(self.config.idle).await;
                    continue;
                }
            };
            let changed = last_epoch != Some(map.epoch);
            let look =
                changed || last_check.is_none_or(|t| t.elapsed() >= self.config.rebalance_every);
            if look {
                last_check = Some(Instant::now());
                match self.rebalance_pass(&map, changed).await {
                    Ok(Some(r)) => {
                        if r.fragments > 0 || r.unfinished > 0 {
                            info!(
                                moved = r.fragments,
                                unfinished = r.unfinished,
                                "rebalancing pass done"
                            );
                        }
                        last_epoch = Some(map.epoch);
                        continue;
                    }
                    Ok(None) => last_epoch = Some(map.epoch),
                    Err(e) => warn!(error = %e, "rebalancing pass failed; retrying"),
                }
            }
            self.rest().await;
        }
    }

    /// Waits `idle`, or less if a node's state changes meanwhile (down,
    /// out, back, drained): a node that goes out is repaired from the next
    /// look at the map, not up to `idle` later. The map is a small query
    /// answered without a scan, unlike the repair work.
    async fn rest(&self) {
        let states = |m: &ClusterMap| {
            m.nodes
                .iter()
                .map(|n| (n.id, n.state, n.admin))
                .collect::<Vec<_>>()
        };
        let Ok(before) = self.client.cluster_map_fresh().await.map(|m| states(&m)) else {
            tokio::time::sleep(self.config.idle).await;
            return;
        };
        let deadline = Instant::now() + self.config.idle;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(WATCH_NODES_EVERY)).await;
            if let Ok(m) = self.client.cluster_map_fresh().await
                && states(&m) != before
            {
                return;
            }
        }
    }

    /// One pass of repair work: lost fragments rebuilt, draining nodes'
    /// fragments copied, the chunks at most risk first, until meta lists
    /// nothing this pass has not taken. `parallel` chunks are in flight at
    /// all times (a chunk that finishes makes room for the next at once, so
    /// one chunk's reads overlap another's writes), the next work list is
    /// asked for before the last runs dry (`WorkFeed`), and stored chunks
    /// are committed together, as many as are ready while the last commit
    /// was in flight.
    pub async fn repair_pass(&self) -> Result<RoundReport, ScrubError> {
        let parallel = self.config.parallel.max(1);
        let mut feed = WorkFeed::default();
        let mut report = RoundReport::default();
        let mut ctx: Option<Arc<(Arc<ClusterMap>, ClusterView)>> = None;
        let mut jobs: JoinSet<Result<Stored, ScrubError>> = JoinSet::new();
        // Work lists and commits: at most one of each at a time.
        let mut side: FuturesUnordered<BoxFuture<'_, Side>> = FuturesUnordered::new();
        let (mut listing, mut committing) = (false, false);
        let mut ready: Vec<Stored> = Vec::new();
        let mut failure = None;
        loop {
            if !listing && feed.wants_list(parallel) {
                feed.asking();
                listing = true;
                side.push(Box::pin(async { Side::Listed(self.work_list().await) }));
            }
            if let Some(ctx) = &ctx {
                while jobs.len() < parallel {
                    let Some(item) = feed.next_item() else { break };
                    let (this, ctx) = (self.clone(), ctx.clone());
                    jobs.spawn(async move { this.repair_chunk(item, &ctx.0, &ctx.1).await });
                }
                if !committing && !ready.is_empty() {
                    committing = true;
                    let batch = std::mem::take(&mut ready);
                    let grace_ms = ctx.0.gc_grace_ms;
                    side.push(Box::pin(async move {
                        Side::Committed(self.commit_stored(batch, grace_ms).await)
                    }));
                }
            }
            if jobs.is_empty() && side.is_empty() && feed.exhausted() {
                break;
            }
            tokio::select! {
                Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                    let result = match done {
                        Ok(r) => r,
                        Err(e) => Err(ScrubError::Task(e.to_string())),
                    };
                    match result {
                        Ok(stored) => ready.push(stored),
                        Err(e) => {
                            debug!(error = %e, "chunk left for a later pass");
                            report.unfinished += 1;
                        }
                    }
                }
                Some(event) = side.next(), if !side.is_empty() => match event {
                    Side::Listed(Ok((work, map))) => {
                        listing = false;
                        feed.offer(work);
                        let view = ClusterView::from_map(&map);
                        ctx = Some(Arc::new((map, view)));
                    }
                    Side::Listed(Err(e)) => {
                        listing = false;
                        feed.close();
                        failure = Some(e);
                    }
                    Side::Committed(results) => {
                        committing = false;
                        for (chunk, result) in results {
                            match result {
                                Ok(n) => {
                                    feed.committed();
                                    report.committed += 1;
                                    report.fragments += n;
                                }
                                Err(e) => {
                                    debug!(%chunk, error = %e, "repair not committed; left for a later pass");
                                    report.unfinished += 1;
                                }
                            }
                        }
                    }
                },
                else => break,
            }
        }
        report.chunks = feed.taken();
        match failure {
            Some(e) if report.chunks == 0 => Err(e),
            Some(e) => {
                warn!(error = %e, "repair work list failed; pass ended early");
                Ok(report)
            }
            None => Ok(report),
        }
    }

    /// The next list of repair work and the cluster map to do it with.
    async fn work_list(&self) -> Result<(Vec<RepairItem>, Arc<ClusterMap>), ScrubError> {
        let work = self.client.repair_work(WORK_BATCH).await?;
        let map = self.client.cluster_map_fresh().await?;
        Ok((work, map))
    }

    /// Restores one chunk as far as the cluster allows and returns the
    /// moves to commit. What to restore and where are
    /// `tessera_heal::repair_step`'s decisions; this does the I/O.
    async fn repair_chunk(
        &self,
        item: RepairItem,
        map: &ClusterMap,
        view: &ClusterView,
    ) -> Result<Stored, ScrubError> {
        let rec = &item.record;
        let nodes: Vec<NodeId> = rec.fragments.iter().map(|f| f.node).collect();
        let Some(step) = repair_step(view, rec.id, &nodes, &item.states) else {
            let index = item
                .states
                .iter()
                .position(|s| matches!(s, FragmentState::Lost | FragmentState::Move))
                .unwrap_or(0);
            return Err(ScrubError::NoTarget {
                chunk: rec.id.to_string(),
                index,
            });
        };
        let lost: Vec<usize> = (0..item.states.len())
            .filter(|&i| item.states[i] == FragmentState::Lost)
            .collect();
        let bodies = self.fragment_bodies(rec, &step.restore, &lost).await?;
        let started = Instant::now();
        let moves = self.store_all(rec, map, bodies, step.targets).await?;
        debug!(chunk = %rec.id, fragments = moves.len(), "chunk stored");
        Ok(Stored {
            chunk: rec.id,
            moves,
            started,
        })
    }

    /// Commits the moves of stored chunks together
    /// (`tessera_sdk::Client::commit_repairs`: up to 16 a meta request,
    /// usually one log entry), each chunk's on its own: one refused does
    /// not hold back the others. Returns each chunk's fragments
    /// committed, or why not.
    async fn commit_stored(
        &self,
        batch: Vec<Stored>,
        gc_grace_ms: u64,
    ) -> Vec<(ChunkId, Result<usize, ScrubError>)> {
        let mut out = Vec::with_capacity(batch.len());
        let mut timely = Vec::with_capacity(batch.len());
        for s in batch {
            if too_slow(s.started.elapsed(), gc_grace_ms) {
                out.push((s.chunk, Err(ScrubError::TooSlow(s.chunk.to_string()))));
            } else {
                timely.push((s.chunk, s.moves));
            }
        }
        let counts: Vec<(ChunkId, usize)> = timely.iter().map(|(c, m)| (*c, m.len())).collect();
        let results = self.client.commit_repairs(timely).await;
        for ((chunk, n), result) in counts.into_iter().zip(results) {
            out.push((chunk, result.map(|()| n).map_err(ScrubError::from)));
        }
        out
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
        if too_slow(started.elapsed(), map.gc_grace_ms) {
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
        wanted: &[FragmentRestore],
        lost: &[usize],
    ) -> Result<Vec<Body>, ScrubError> {
        let mut out = Vec::with_capacity(wanted.len());
        let mut rebuild = Vec::new();
        for w in wanted {
            let i = w.index;
            if w.how == Restore::Rebuild {
                rebuild.push((i, w.in_place));
                continue;
            }
            self.pacer.take(rec.fragment_len).await;
            match self.client.read_fragment(rec, i).await {
                Ok(b) => out.push(Body {
                    index: i,
                    rebuilt: false,
                    in_place: false,
                    bytes: Bytes::from(b),
                }),
                Err(e) => {
                    debug!(chunk = %rec.id, index = i, error = %e, "copy failed; rebuilding instead");
                    rebuild.push((i, false));
                }
            }
        }
        if rebuild.is_empty() {
            return Ok(out);
        }
        let avoid: Vec<usize> = lost
            .iter()
            .copied()
            .chain(rebuild.iter().map(|(i, _)| *i))
            .collect();
        self.pacer
            .take(rec.fragment_len * rec.policy.required() as u64)
            .await;
        // The lost fragments are computed from the others directly, not by
        // decoding the chunk and encoding it again: a rebuilt 1 MiB fragment
        // of ec:4+2 then costs one BLAKE3 of 1 MiB (its check below) instead
        // of 14 to 18 MiB of hashing and two copies of the chunk.
        let fragments = self.client.read_fragments_avoiding(rec, &avoid).await?;
        let codec = self.client.codec().clone();
        let (policy, len) = (rec.policy, rec.len as usize);
        let indices: Vec<usize> = rebuild.iter().map(|(i, _)| *i).collect();
        let rebuilt = tokio::task::spawn_blocking(move || {
            let rebuilt = codec.rebuild_fragments(policy, len, fragments, &indices)?;
            let hashes: Vec<_> = rebuilt
                .iter()
                .map(|(_, b)| tessera_codec::hash(b))
                .collect();
            Ok::<_, tessera_codec::CodecError>((rebuilt, hashes))
        })
        .await
        .map_err(|e| ScrubError::Task(e.to_string()))?
        .map_err(tessera_sdk::SdkError::from)?;
        let (rebuilt, hashes) = rebuilt;
        for (((i, bytes), hash), (_, in_place)) in rebuilt.into_iter().zip(hashes).zip(rebuild) {
            // Encoding is deterministic: the rebuilt fragment must be the
            // one written at first, or something is badly wrong.
            if hash != rec.fragments[i].hash || bytes.len() as u64 != rec.fragment_len {
                return Err(ScrubError::Mismatch {
                    chunk: rec.id.to_string(),
                    index: i,
                });
            }
            out.push(Body {
                index: i,
                rebuilt: true,
                in_place,
                bytes,
            });
        }
        Ok(out)
    }

    /// Writes each body to the next candidate that takes it.
    async fn store_all(
        &self,
        rec: &ChunkRecord,
        map: &ClusterMap,
        bodies: Vec<Body>,
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
        'bodies: for Body {
            index,
            rebuilt,
            in_place,
            bytes: body,
        } in bodies
        {
            // A rotten or missing fragment on a healthy node is rewritten
            // where it was; elsewhere only if that node refuses it.
            let own = rec.fragments[index].node;
            let in_place = in_place.then_some(own);
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

    /// Walks every chunk record and moves fragments from nodes above their
    /// fair share to nodes below it, as `tessera_heal::balance` plans:
    /// after a node joins, or when straw2's spread leaves some nodes
    /// fuller than others. Every move lowers the distance from fair
    /// shares, so passes converge, and adding a node moves about its fair
    /// share and no more.
    ///
    /// Runs a pass if `tessera_heal::PassTrigger` says one is due (`None`
    /// otherwise): the map changed since the last pass (`map_changed`), or
    /// the loads drifted.
    pub async fn rebalance_pass(
        &self,
        map: &ClusterMap,
        map_changed: bool,
    ) -> Result<Option<RoundReport>, ScrubError> {
        let view = ClusterView::from_map(map);
        let mut balancer = Balancer::new(&view, BALANCE_TOLERANCE);
        if !PassTrigger::default().due(&balancer, &view, map_changed) {
            return Ok(None);
        }
        let mut report = RoundReport::default();
        let mut after: Option<ChunkId> = None;
        loop {
            let page = self.client.scan_chunks(after, SCAN_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            let full = page.len() as u32 == SCAN_PAGE;
            report.chunks += page.len();
            let mut planned = Vec::new();
            for rec in page {
                let nodes: Vec<NodeId> = rec.fragments.iter().map(|f| f.node).collect();
                let moves = balancer.plan_chunk(rec.id, &nodes, rec.fragment_len);
                if !moves.is_empty() {
                    planned.push((rec, moves));
                }
            }
            let jobs = futures::stream::iter(planned)
                .map(|(rec, moves)| async {
                    let result = self.move_fragments(&rec, map, &moves).await;
                    (rec, moves, result)
                })
                .buffer_unordered(self.config.parallel.max(1));
            futures::pin_mut!(jobs);
            while let Some((rec, moves, result)) = jobs.next().await {
                match result {
                    Ok(n) if n > 0 => {
                        report.committed += 1;
                        report.fragments += n;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        debug!(chunk = %rec.id, error = %e, "rebalancing move left for a later pass");
                        report.unfinished += 1;
                        for m in &moves {
                            balancer.undo(m, rec.fragment_len);
                        }
                    }
                }
            }
            if !full || !balancer.needs_work() {
                break;
            }
        }
        Ok(Some(report))
    }

    /// Copies fragments to the nodes the balancer chose and commits the
    /// moves, all or none: the balancer plans a chunk's moves together (one
    /// may make room in a zone for another), so committing only some could
    /// break the zone spread.
    async fn move_fragments(
        &self,
        rec: &ChunkRecord,
        map: &ClusterMap,
        moves: &[BalanceMove],
    ) -> Result<usize, ScrubError> {
        let wanted: Vec<FragmentRestore> = moves
            .iter()
            .map(|m| FragmentRestore {
                index: m.index,
                how: Restore::Copy,
                in_place: false,
            })
            .collect();
        // A copy that cannot be read is rebuilt from the other fragments
        // (verified against the recorded hash as any rebuild is).
        let bodies = self.fragment_bodies(rec, &wanted, &[]).await?;
        let started = Instant::now();
        let mut out = Vec::new();
        for body in bodies {
            let Some(m) = moves.iter().find(|m| m.index == body.index) else {
                continue;
            };
            let stored = self.store_all(rec, map, vec![body], vec![m.to]).await?;
            out.extend(stored);
        }
        if out.len() < moves.len() {
            // The copies stored are garbage for the collector.
            return Err(ScrubError::Incomplete(rec.id.to_string()));
        }
        let count = out.len();
        self.commit(rec, map, out, started).await?;
        Ok(count)
    }
}

/// A fragment's bytes, ready to store.
struct Body {
    index: usize,
    /// Rebuilt from other fragments (not copied).
    rebuilt: bool,
    /// To be rewritten on the node that held it.
    in_place: bool,
    bytes: Bytes,
}

/// Whether new copies written `elapsed` ago are too old to commit: past
/// half the garbage grace period (`gc_grace_ms`; 0: no collector) the
/// collector may already have taken them, since nothing referenced them.
pub fn too_slow(elapsed: Duration, gc_grace_ms: u64) -> bool {
    gc_grace_ms > 0 && elapsed > Duration::from_millis(gc_grace_ms / 2)
}

/// A chunk whose new copies are stored and verified, its moves not yet
/// committed.
struct Stored {
    chunk: ChunkId,
    moves: Vec<FragmentMove>,
    /// When the first copy started being written.
    started: Instant,
}

/// What a repair pass's work lists and commits answer.
enum Side {
    Listed(Result<(Vec<RepairItem>, Arc<ClusterMap>), ScrubError>),
    Committed(Vec<(ChunkId, Result<usize, ScrubError>)>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_older_than_half_the_grace_period_are_not_committed() {
        let s = Duration::from_secs;
        assert!(!too_slow(s(29), 60_000));
        assert!(too_slow(s(31), 60_000));
        // Without a collector nothing is taken, however long it took.
        assert!(!too_slow(s(3600), 0));
    }
}
