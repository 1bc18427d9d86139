//! The simulation loop: a clock, a queue of events, the world, and the real
//! meta state machine and healing decisions acting on it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::{FxHashMap, FxHashSet};
use tessera_heal::condition;
use tessera_heal::priority;
use tessera_heal::{BalanceMove, Balancer, PassTrigger, load_balance};
use tessera_heal::{ClusterView, RepairStep, Restore, repair_step, zone_cap};
use tessera_heal::{LivenessConfig, LivenessTracker};
use tessera_meta::state::healing::node_classes;
use tessera_meta::state::prelude::*;
use tessera_meta::state::tables::counter;
use tessera_meta::store::MemStore;
use tessera_meta::{Applied, Command, NodeRecord, Outcome, Refused, StateMachine};
use tessera_proto::{
    ChunkPlacement, ChunkRecord, ClusterMap, CorruptReport, FragmentMove, FragmentRecord,
    FragmentState, LoadBalance, NewObject, NodeAdmin, NodeInfo, RepairItem, ScrubProgress,
};
use tessera_types::{ChunkId, NodeId, Policy};

use crate::check::Violation;
use crate::config::{Bug, SimConfig};
use crate::world::{FragKey, SimNode, frag_key, fragment_len};

const BUCKET: &str = "sim";
const SEC: u64 = 1000;
const MIN: u64 = 60 * SEC;
/// Node upkeep and meta's purge run this often.
const GC_EVERY: u64 = 10 * MIN;
/// The repairer looks for work at least this often when idle.
const IDLE_POLL: u64 = 5 * MIN;
/// Rebalancing passes start at most this often.
const REBALANCE_EVERY: u64 = 10 * MIN;
/// Chunk records per page of a rebalancing pass.
const SCAN_PAGE: usize = 4096;

/// What happened in a run, and the figures it measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seed: u64,
    pub steps: u64,
    pub commands: u64,
    pub live_chunks: u64,
    pub node_crashes: u64,
    pub node_losses: u64,
    pub disasters: u64,
    pub rotted_fragments: u64,
    pub partitions: u64,
    pub nodes_added: u64,
    pub nodes_drained: u64,
    pub repairer_crashes: u64,
    pub meta_crashes: u64,
    pub objects_written: u64,
    pub objects_deleted: u64,
    pub repairs_committed: u64,
    pub repairs_refused: u64,
    pub fragments_rebuilt: u64,
    pub fragments_moved: u64,
    pub rebalance_passes: u64,
    /// Walks over every chunk: rebalancing passes planned (with moves or
    /// not) and sweeps.
    pub full_scans: u64,
    /// Repair rounds: each one a fresh cluster map and health assessment.
    pub repair_rounds: u64,
    pub rebalance_moved_bytes: u64,
    /// Chunks that suffered more than M simultaneous losses (all reported
    /// `lost`).
    pub lost_chunks: u64,
    pub balance_end: LoadBalance,
    /// Writes that found a read view open and had to copy the store (the
    /// simulator never holds one across a write: stays 0).
    pub store_copies: u64,
    /// (node id, time it died, time all its chunks were whole again) for
    /// every permanent loss that fully healed.
    pub heal_times: Vec<(NodeId, u64, u64)>,
}

enum Ev {
    Crash,
    Recover(usize),
    Loss,
    Disaster,
    Rot,
    Partition,
    Unpartition(usize),
    Add,
    Drain,
    RepairerCrash,
    RepairerUp,
    MetaCrash,
    MetaUp,
    Write,
    Delete,
    Gc,
    Scrub(usize),
    RepairTick,
    JobDone(u64),
    Sweep,
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Meta as the simulation runs it: the durable state machine, and the soft
/// state a crash loses.
struct SimMeta {
    sm: StateMachine<MemStore>,
    next_index: u64,
    up: bool,
    tracker: LivenessTracker,
    watch_since: u64,
    liveness: LivenessConfig,
}

enum JobKind {
    Repair(RepairItem, RepairStep),
    Move(ChunkRecord, Vec<BalanceMove>),
}

struct Job {
    chunk: ChunkId,
    kind: JobKind,
}

struct Repairer {
    up: bool,
    jobs: FxHashMap<u64, Job>,
    busy: FxHashSet<ChunkId>,
    next_job: u64,
    /// Repair work from the last assessment, most at risk first.
    work: VecDeque<RepairItem>,
    /// Planned rebalancing moves of the current pass.
    moves: VecDeque<(ChunkRecord, Vec<BalanceMove>)>,
    pass_moved: u64,
    pass_limit: u64,
    last_pass: Option<u64>,
    /// The round (by its start) that found no pass due.
    pass_declined: Option<u64>,
    /// The map epoch at the last pass.
    pass_epoch: Option<u64>,
    tick_at: Option<u64>,
    /// The map and view of the current round of work (as the real
    /// repairer, which fetches the map once per round).
    round: Option<std::rc::Rc<(ClusterMap, ClusterView)>>,
    /// When the round began.
    round_at: u64,
    /// The round's assessment was cut at the batch limit: more work waits,
    /// so the next round starts as soon as this one's work is taken.
    round_full: bool,
}

pub struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    step: u64,
    events: BinaryHeap<Reverse<Scheduled>>,
    nodes: Vec<SimNode>,
    index_of: FxHashMap<NodeId, usize>,
    meta: SimMeta,
    repairer: Repairer,
    objects: Vec<(String, Vec<ChunkId>)>,
    next_object: u64,
    /// Old copies to delete once the grace period has passed: (when,
    /// node, fragment).
    garbage_files: VecDeque<(u64, usize, FragKey, ChunkId)>,
    /// Chunks that suffered more than M simultaneous losses.
    doomed: FxHashSet<ChunkId>,
    /// Rotten fragments by disk name, to find their chunk.
    rotten_chunks: FxHashMap<FragKey, ChunkId>,
    draining: Vec<usize>,
    /// Permanently lost nodes whose chunks are not yet whole again.
    healing: Vec<(NodeId, u64)>,
    report: Report,
    end_of_failures: u64,
}

fn store_err(seed: u64) -> impl Fn(tessera_meta::MetaError) -> Violation {
    move |e| Violation::Store {
        seed,
        what: e.to_string(),
    }
}

impl Sim {
    /// Builds the cluster and writes the initial chunks (all placed by the
    /// same placement as the SDK's and committed through the state
    /// machine).
    pub fn new(cfg: SimConfig) -> Result<Self, Violation> {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut nodes = Vec::with_capacity(cfg.nodes);
        let mut index_of = FxHashMap::default();
        for i in 0..cfg.nodes {
            let id = NodeId(rng.r#gen());
            index_of.insert(id, i);
            nodes.push(SimNode::new(
                id,
                format!("z{}", i % cfg.zones.max(1)),
                cfg.capacity,
            ));
        }
        let meta = SimMeta {
            sm: StateMachine::in_memory(),
            next_index: 1,
            up: true,
            tracker: LivenessTracker::new(0),
            watch_since: 0,
            liveness: LivenessConfig {
                down_after_ms: cfg.down_after_ms,
                out_after_ms: cfg.out_after_ms,
                restart_grace_ms: cfg.restart_grace_ms,
            },
        };
        let end_of_failures = cfg.duration_ms;
        let mut sim = Sim {
            report: Report {
                seed: cfg.seed,
                ..Report::default()
            },
            cfg,
            rng,
            now: 0,
            seq: 0,
            step: 0,
            events: BinaryHeap::new(),
            nodes,
            index_of,
            meta,
            repairer: Repairer {
                up: true,
                jobs: FxHashMap::default(),
                busy: FxHashSet::default(),
                next_job: 0,
                work: VecDeque::new(),
                moves: VecDeque::new(),
                pass_moved: 0,
                pass_limit: 0,
                last_pass: None,
                pass_declined: None,
                pass_epoch: None,
                tick_at: None,
                round: None,
                round_at: 0,
                round_full: false,
            },
            objects: Vec::new(),
            next_object: 0,
            garbage_files: VecDeque::new(),
            doomed: FxHashSet::default(),
            rotten_chunks: FxHashMap::default(),
            draining: Vec::new(),
            healing: Vec::new(),
            end_of_failures,
        };
        let mut cmds = vec![Command::CreateBucket {
            name: BUCKET.into(),
            policy: Policy::default(),
            at_ms: 0,
        }];
        for n in &sim.nodes {
            cmds.push(Command::RegisterNode {
                node: NodeRecord {
                    id: n.id,
                    addr: String::new(),
                    zone: Some(n.zone.clone()),
                    capacity: n.capacity,
                    joined_ms: 0,
                },
            });
        }
        sim.apply_all(cmds)?;
        sim.load()?;
        Ok(sim)
    }

    /// The initial chunks, in objects of `chunks_per_object`.
    fn load(&mut self) -> Result<(), Violation> {
        self.refresh_liveness();
        let map = self.cluster_map()?;
        let view = ClusterView::from_map(&map);
        let placement = view.placement();
        // Ids drawn up front and written in id order: the tables then grow
        // at their ends rather than at random places (a million chunks load
        // in about three quarters of the time), and nothing the simulation
        // checks depends on the order.
        let mut ids: Vec<ChunkId> = (0..self.cfg.chunks)
            .map(|_| ChunkId(self.rng.r#gen()))
            .collect();
        ids.sort_unstable();
        let mut ids = ids.into_iter();
        let mut left = self.cfg.chunks;
        let mut batch = Vec::new();
        while left > 0 {
            let n = left.min(self.cfg.chunks_per_object);
            left -= n;
            let policy = self.pick_policy();
            let mut records = Vec::with_capacity(n);
            for i in 0..n {
                let len = if i + 1 == n {
                    self.rng.gen_range(1..=self.cfg.chunk_size)
                } else {
                    self.cfg.chunk_size
                };
                let Some(id) = ids.next() else { break };
                let nodes =
                    placement
                        .place(id, policy.fragments())
                        .map_err(|e| Violation::Store {
                            seed: self.cfg.seed,
                            what: e.to_string(),
                        })?;
                records.push(self.store_fragments(id, policy, len, &nodes));
            }
            let key = self.new_key();
            batch.push(commit_cmd(&key, &records, 0));
            self.objects
                .push((key, records.iter().map(|r| r.id).collect()));
            if batch.len() == 64 {
                let cmds = std::mem::take(&mut batch);
                self.expect_applied(cmds)?;
            }
        }
        self.expect_applied(batch)?;
        Ok(())
    }

    fn expect_applied(&mut self, cmds: Vec<Command>) -> Result<(), Violation> {
        for o in self.apply_all(cmds)? {
            if let Err(r) = o {
                return Err(self.malformed("initial write", &r.message));
            }
        }
        Ok(())
    }

    /// Writes a chunk's fragments to `nodes` (all known to take them) and
    /// returns its record.
    fn store_fragments(
        &mut self,
        id: ChunkId,
        policy: Policy,
        len: u64,
        nodes: &[NodeId],
    ) -> ChunkRecord {
        for (i, node) in nodes.iter().enumerate() {
            let at = self.index_of[node];
            self.nodes[at].files.insert(frag_key(id, i));
        }
        ChunkRecord {
            id,
            policy,
            len,
            fragment_len: fragment_len(policy, len),
            hash: [0; 32],
            fragments: nodes
                .iter()
                .map(|n| FragmentRecord {
                    node: *n,
                    hash: [0; 32],
                })
                .collect(),
        }
    }

    fn new_key(&mut self) -> String {
        self.next_object += 1;
        format!("o/{:010}", self.next_object)
    }

    fn pick_policy(&mut self) -> Policy {
        let total: u32 = self.cfg.policies.iter().map(|p| p.1).sum();
        let mut x = self.rng.gen_range(0..total.max(1));
        for (p, w) in &self.cfg.policies {
            if x < *w {
                return *p;
            }
            x -= w;
        }
        Policy::default()
    }

    // ---- meta ----

    fn apply_all(&mut self, cmds: Vec<Command>) -> Result<Vec<Outcome>, Violation> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.meta.next_index;
        let entries: Vec<(u64, &Command)> = cmds
            .iter()
            .enumerate()
            .map(|(i, c)| (first + i as u64, c))
            .collect();
        let out = self
            .meta
            .sm
            .apply_batch(&entries)
            .map_err(store_err(self.cfg.seed))?;
        self.meta.next_index += cmds.len() as u64;
        self.report.commands += cmds.len() as u64;
        Ok(out)
    }

    fn apply(&mut self, cmd: Command) -> Result<Outcome, Violation> {
        let mut out = self.apply_all(vec![cmd])?;
        out.pop().ok_or_else(|| Violation::Store {
            seed: self.cfg.seed,
            what: "no outcome".into(),
        })
    }

    /// Heartbeats as meta would have heard them by now: a reachable node
    /// just now, an unreachable one when it was last reachable, and nothing
    /// from before meta began watching.
    fn refresh_liveness(&mut self) {
        if !self.meta.up {
            return;
        }
        for n in &self.nodes {
            if n.removed {
                continue;
            }
            let last = n.unreachable_since.unwrap_or(self.now);
            if last >= self.meta.watch_since {
                self.meta.tracker.heard(n.id, last);
            }
        }
    }

    /// The cluster map meta would answer now.
    fn cluster_map(&self) -> Result<ClusterMap, Violation> {
        let r = self.meta.sm.read();
        let err = store_err(self.cfg.seed);
        let nodes = r
            .node_table()
            .map_err(&err)?
            .into_iter()
            .map(|(rec, admin, stats)| NodeInfo {
                state: self
                    .meta
                    .tracker
                    .state(rec.id, self.now, &self.meta.liveness),
                id: rec.id,
                addr: rec.addr,
                zone: rec.zone,
                capacity: rec.capacity,
                used: 0,
                last_seen_ms: 0,
                admin,
                fragments: stats.fragments,
                stored: stats.bytes,
                scrub: ScrubProgress::default(),
                write_bytes_per_s: 0,
                read_bytes_per_s: 0,
            })
            .collect();
        Ok(ClusterMap {
            epoch: r.counter(counter::EPOCH).map_err(&err)?,
            nodes,
            default_policy: Policy::default(),
            inline_limit: 0,
            gc_grace_ms: self.cfg.gc_grace_ms,
        })
    }

    // ---- the loop ----

    fn schedule(&mut self, after: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse(Scheduled {
            at: self.now + after,
            seq: self.seq,
            ev,
        }));
    }

    /// Time to the next event of a Poisson process of `per_day` events.
    fn exp_ms(&mut self, per_day: f64) -> Option<u64> {
        if per_day <= 0.0 {
            return None;
        }
        let u: f64 = self.rng.gen_range(f64::EPSILON..1.0);
        Some((-u.ln() / per_day * 86_400_000.0) as u64 + 1)
    }

    fn schedule_process(&mut self, per_day: f64, ev: Ev) {
        if let Some(dt) = self.exp_ms(per_day)
            && self.now + dt < self.end_of_failures
        {
            self.schedule(dt, ev);
        }
    }

    /// Runs the whole simulation and the final checks.
    pub fn run(mut self) -> Result<Report, Violation> {
        let c = self.cfg.clone();
        self.schedule_process(c.crashes_per_day, Ev::Crash);
        self.schedule_process(c.losses_per_day, Ev::Loss);
        self.schedule_process(c.disasters_per_day, Ev::Disaster);
        self.schedule_process(c.rot_per_day, Ev::Rot);
        self.schedule_process(c.partitions_per_day, Ev::Partition);
        self.schedule_process(c.adds_per_day, Ev::Add);
        self.schedule_process(c.drains_per_day, Ev::Drain);
        self.schedule_process(c.repairer_crashes_per_day, Ev::RepairerCrash);
        self.schedule_process(c.meta_crashes_per_day, Ev::MetaCrash);
        self.schedule_process(c.writes_per_hour * 24.0, Ev::Write);
        self.schedule_process(c.deletes_per_hour * 24.0, Ev::Delete);
        self.schedule(GC_EVERY, Ev::Gc);
        self.schedule(c.sweep_every_ms, Ev::Sweep);
        for i in 0..self.nodes.len() {
            let first = self.rng.gen_range(0..c.scrub_interval_ms.max(1));
            self.schedule(first, Ev::Scrub(i));
        }
        self.schedule(0, Ev::RepairTick);
        let end = c.duration_ms + c.settle_ms;
        while let Some(Reverse(next)) = self.events.pop() {
            if next.at > end {
                break;
            }
            self.now = next.at;
            self.step += 1;
            self.handle(next.ev)?;
        }
        self.now = end;
        self.finish()
    }

    fn handle(&mut self, ev: Ev) -> Result<(), Violation> {
        let c = self.cfg.clone();
        match ev {
            Ev::Crash => {
                self.schedule_process(c.crashes_per_day, Ev::Crash);
                if let Some(i) = self.pick_node(|n| n.alive && !n.destroyed && !n.removed) {
                    self.report.node_crashes += 1;
                    self.nodes[i].alive = false;
                    self.nodes[i].lose_contact(self.now);
                    let mins = self.rng.gen_range(c.crash_minutes.0..=c.crash_minutes.1);
                    self.schedule(mins * MIN, Ev::Recover(i));
                    self.tick_when_out();
                }
            }
            Ev::Recover(i) => {
                if !self.nodes[i].destroyed {
                    self.nodes[i].alive = true;
                    self.nodes[i].regain_contact();
                    self.tick_soon();
                }
            }
            Ev::Loss => {
                self.schedule_process(c.losses_per_day, Ev::Loss);
                if let Some(i) = self.pick_node(|n| !n.destroyed && !n.removed) {
                    self.destroy(i)?;
                }
            }
            Ev::Disaster => {
                self.schedule_process(c.disasters_per_day, Ev::Disaster);
                self.disaster()?;
            }
            Ev::Rot => {
                self.schedule_process(c.rot_per_day, Ev::Rot);
                self.rot()?;
            }
            Ev::Partition => {
                self.schedule_process(c.partitions_per_day, Ev::Partition);
                if let Some(i) = self.pick_node(|n| n.reachable()) {
                    self.report.partitions += 1;
                    self.nodes[i].isolated = true;
                    self.nodes[i].lose_contact(self.now);
                    let mins = self
                        .rng
                        .gen_range(c.partition_minutes.0..=c.partition_minutes.1);
                    self.schedule(mins * MIN, Ev::Unpartition(i));
                    self.tick_when_out();
                }
            }
            Ev::Unpartition(i) => {
                self.nodes[i].isolated = false;
                self.nodes[i].regain_contact();
                self.tick_soon();
            }
            Ev::Add => {
                self.schedule_process(c.adds_per_day, Ev::Add);
                self.add_node()?;
            }
            Ev::Drain => {
                self.schedule_process(c.drains_per_day, Ev::Drain);
                self.drain()?;
            }
            Ev::RepairerCrash => {
                self.schedule_process(c.repairer_crashes_per_day, Ev::RepairerCrash);
                if self.repairer.up {
                    self.report.repairer_crashes += 1;
                    self.repairer.up = false;
                    // Work in flight is lost: copies it wrote are garbage.
                    self.repairer.jobs.clear();
                    self.repairer.busy.clear();
                    self.repairer.work.clear();
                    self.repairer.moves.clear();
                    self.repairer.round = None;
                    let secs = self.rng.gen_range(c.outage_secs.0..=c.outage_secs.1);
                    self.schedule(secs * SEC, Ev::RepairerUp);
                }
            }
            Ev::RepairerUp => {
                self.repairer.up = true;
                self.tick_soon();
            }
            Ev::MetaCrash => {
                self.schedule_process(c.meta_crashes_per_day, Ev::MetaCrash);
                if self.meta.up {
                    self.report.meta_crashes += 1;
                    self.meta.up = false;
                    let secs = self.rng.gen_range(c.outage_secs.0..=c.outage_secs.1);
                    self.schedule(secs * SEC, Ev::MetaUp);
                }
            }
            Ev::MetaUp => {
                // A restarted meta has only its durable state: liveness
                // starts afresh, every node with a full grace period.
                self.meta.up = true;
                self.meta.watch_since = self.now;
                self.meta.tracker = LivenessTracker::new(self.now);
                self.tick_soon();
            }
            Ev::Write => {
                self.schedule_process(c.writes_per_hour * 24.0, Ev::Write);
                self.write_object()?;
            }
            Ev::Delete => {
                self.schedule_process(c.deletes_per_hour * 24.0, Ev::Delete);
                self.delete_object()?;
            }
            Ev::Gc => {
                self.schedule(GC_EVERY, Ev::Gc);
                self.collect()?;
            }
            Ev::Scrub(i) => {
                self.schedule(c.scrub_interval_ms, Ev::Scrub(i));
                self.scrub(i)?;
            }
            Ev::RepairTick => {
                self.repairer.tick_at = None;
                self.repair_tick()?;
            }
            Ev::JobDone(id) => {
                if let Some(job) = self.repairer.jobs.remove(&id) {
                    self.repairer.busy.remove(&job.chunk);
                    self.finish_job(job)?;
                }
                self.tick_soon();
            }
            Ev::Sweep => {
                self.schedule(c.sweep_every_ms, Ev::Sweep);
                self.sweep()?;
            }
        }
        Ok(())
    }

    fn pick_node(&mut self, ok: impl Fn(&SimNode) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| ok(&self.nodes[i]))
            .collect();
        candidates.choose(&mut self.rng).copied()
    }

    fn tick_at(&mut self, after: u64) {
        let at = self.now + after;
        if self.repairer.tick_at.is_some_and(|t| t <= at) {
            return;
        }
        self.repairer.tick_at = Some(at);
        self.schedule(after, Ev::RepairTick);
    }

    fn tick_soon(&mut self) {
        self.tick_at(0);
    }

    /// A node just went silent: repair may start once it is `out`.
    fn tick_when_out(&mut self) {
        let after = self.cfg.out_after_ms + self.cfg.restart_grace_ms + SEC;
        // Several ticks may be wanted; a later one is scheduled separately.
        self.seq += 1;
        self.events.push(Reverse(Scheduled {
            at: self.now + after,
            seq: self.seq,
            ev: Ev::RepairTick,
        }));
    }

    // ---- failures ----

    fn destroy(&mut self, i: usize) -> Result<(), Violation> {
        self.report.node_losses += 1;
        let node = &mut self.nodes[i];
        node.destroyed = true;
        node.alive = false;
        node.lose_contact(self.now);
        node.files.clear();
        for k in node.rotten.drain() {
            self.rotten_chunks.remove(&k);
        }
        let id = node.id;
        self.healing.push((id, self.now));
        let touched: Vec<ChunkId> = self
            .meta
            .sm
            .read()
            .fragments_on(id)
            .map_err(store_err(self.cfg.seed))?
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        for c in touched {
            self.check_chunk(c)?;
        }
        self.tick_when_out();
        Ok(())
    }

    /// Several holders of one chunk die at once: more than it can lose.
    fn disaster(&mut self) -> Result<(), Violation> {
        let Some((_, chunks)) = self.objects.choose(&mut self.rng).cloned() else {
            return Ok(());
        };
        let Some(&chunk) = chunks.choose(&mut self.rng) else {
            return Ok(());
        };
        let Some(rec) = self
            .meta
            .sm
            .read()
            .chunk(chunk)
            .map_err(store_err(self.cfg.seed))?
        else {
            return Ok(());
        };
        self.report.disasters += 1;
        let kill = rec.policy.tolerated_losses() + 1;
        let mut holders: Vec<NodeId> = rec.fragments.iter().map(|f| f.node).collect();
        holders.shuffle(&mut self.rng);
        for node in holders.into_iter().take(kill) {
            if let Some(&i) = self.index_of.get(&node)
                && !self.nodes[i].destroyed
                && !self.nodes[i].removed
            {
                self.destroy(i)?;
            }
        }
        Ok(())
    }

    fn rot(&mut self) -> Result<(), Violation> {
        let Some(i) = self.pick_node(|n| !n.destroyed && !n.files.is_empty()) else {
            return Ok(());
        };
        let (lo, hi) = self.cfg.rot_fragments;
        let want = self.rng.gen_range(lo..=hi.max(lo));
        let r = self.meta.sm.read();
        let on_node = r
            .fragments_on(self.nodes[i].id)
            .map_err(store_err(self.cfg.seed))?;
        drop(r);
        let picked: Vec<(ChunkId, u8)> = on_node
            .choose_multiple(&mut self.rng, want)
            .copied()
            .collect();
        for (chunk, index) in picked {
            let key = frag_key(chunk, index as usize);
            if self.nodes[i].files.contains(&key) && self.nodes[i].rotten.insert(key) {
                self.rotten_chunks.insert(key, chunk);
                self.report.rotted_fragments += 1;
                self.check_chunk(chunk)?;
            }
        }
        Ok(())
    }

    fn add_node(&mut self) -> Result<(), Violation> {
        let id = NodeId(self.rng.r#gen());
        let zone = format!("z{}", self.rng.gen_range(0..self.cfg.zones.max(1)));
        let at = self.nodes.len();
        self.nodes
            .push(SimNode::new(id, zone.clone(), self.cfg.capacity));
        self.index_of.insert(id, at);
        self.report.nodes_added += 1;
        if self.meta.up {
            let registered = self.apply(Command::RegisterNode {
                node: NodeRecord {
                    id,
                    addr: String::new(),
                    zone: Some(zone),
                    capacity: self.cfg.capacity,
                    joined_ms: self.now,
                },
            })?;
            registered.map_err(|r| self.malformed("node registration", &r.message))?;
        }
        let first = self.rng.gen_range(0..self.cfg.scrub_interval_ms.max(1));
        self.schedule(first, Ev::Scrub(at));
        self.tick_soon();
        Ok(())
    }

    fn drain(&mut self) -> Result<(), Violation> {
        if !self.meta.up {
            return Ok(());
        }
        let Some(i) = self.pick_node(|n| n.reachable()) else {
            return Ok(());
        };
        let node = self.nodes[i].id;
        if self
            .meta
            .sm
            .read()
            .node_admin(node)
            .map_err(store_err(self.cfg.seed))?
            != NodeAdmin::Active
        {
            return Ok(());
        }
        self.apply(Command::SetNodeAdmin {
            node,
            admin: NodeAdmin::Draining,
        })?
        .map_err(|r| self.malformed("drain", &r.message))?;
        self.draining.push(i);
        self.tick_soon();
        Ok(())
    }

    // ---- clients ----

    fn write_object(&mut self) -> Result<(), Violation> {
        if !self.meta.up {
            return Ok(());
        }
        self.refresh_liveness();
        let map = self.cluster_map()?;
        let view = ClusterView::from_map(&map);
        let placement = view.placement();
        let n = self.rng.gen_range(1..=self.cfg.chunks_per_object * 2);
        let policy = self.pick_policy();
        let mut records = Vec::new();
        for i in 0..n {
            let len = if i + 1 == n {
                self.rng.gen_range(1..=self.cfg.chunk_size)
            } else {
                self.cfg.chunk_size
            };
            let id = ChunkId(self.rng.r#gen());
            // The SDK's write: the placement order, a failed node replaced
            // by the next one.
            let mut holders = Vec::new();
            for node in placement.ranking(id) {
                if holders.len() == policy.fragments() {
                    break;
                }
                let at = self.index_of[&node];
                if !self.nodes[at].reachable() || self.lossy() {
                    continue;
                }
                holders.push(node);
            }
            if holders.len() < policy.fragments() {
                // The write fails; what it stored is garbage.
                for (j, node) in holders.iter().enumerate() {
                    let at = self.index_of[node];
                    self.nodes[at].files.insert(frag_key(id, j));
                    self.garbage_files.push_back((
                        self.now + self.cfg.gc_grace_ms,
                        at,
                        frag_key(id, j),
                        id,
                    ));
                }
                self.orphan(&records);
                return Ok(());
            }
            records.push(self.store_fragments(id, policy, len, &holders));
        }
        let key = self.new_key();
        match self.apply(commit_cmd(&key, &records, self.now))? {
            Ok(_) => {
                self.report.objects_written += 1;
                self.objects
                    .push((key, records.iter().map(|r| r.id).collect()));
                for r in &records {
                    self.check_chunk(r.id)?;
                }
            }
            Err(r) => return Err(self.malformed("object commit", &r.message)),
        }
        Ok(())
    }

    /// Chunks written but never committed: the collector's.
    fn orphan(&mut self, records: &[ChunkRecord]) {
        for r in records {
            for (j, f) in r.fragments.iter().enumerate() {
                let at = self.index_of[&f.node];
                self.garbage_files.push_back((
                    self.now + self.cfg.gc_grace_ms,
                    at,
                    frag_key(r.id, j),
                    r.id,
                ));
            }
        }
    }

    fn lossy(&mut self) -> bool {
        self.cfg.transfer_loss > 0.0 && self.rng.gen_bool(self.cfg.transfer_loss)
    }

    fn delete_object(&mut self) -> Result<(), Violation> {
        if !self.meta.up || self.objects.is_empty() {
            return Ok(());
        }
        let at = self.rng.gen_range(0..self.objects.len());
        let (key, _) = self.objects.swap_remove(at);
        self.apply(Command::DeleteObject {
            bucket: BUCKET.into(),
            key,
            at_ms: self.now,
        })?
        .map_err(|r| self.malformed("delete", &r.message))?;
        self.report.objects_deleted += 1;
        Ok(())
    }

    // ---- upkeep ----

    /// Meta purges garbage older than the grace period; nodes delete files
    /// no record places on them once they are older than it.
    fn collect(&mut self) -> Result<(), Violation> {
        if self.meta.up {
            let cutoff = self.now.saturating_sub(self.cfg.gc_grace_ms);
            let ids = self
                .meta
                .sm
                .read()
                .garbage_before(cutoff, 10_000)
                .map_err(store_err(self.cfg.seed))?;
            if !ids.is_empty() {
                let records = self
                    .meta
                    .sm
                    .read()
                    .chunks(&ids)
                    .map_err(store_err(self.cfg.seed))?;
                self.apply(Command::PurgeChunks { ids })?
                    .map_err(|r| self.malformed("purge", &r.message))?;
                for rec in records {
                    for (j, f) in rec.fragments.iter().enumerate() {
                        if let Some(&at) = self.index_of.get(&f.node) {
                            let key = frag_key(rec.id, j);
                            self.nodes[at].files.remove(&key);
                            if self.nodes[at].rotten.remove(&key) {
                                self.rotten_chunks.remove(&key);
                            }
                        }
                    }
                }
            }
        }
        while let Some(&(at, node, key, chunk)) = self.garbage_files.front() {
            if at > self.now || !self.meta.up {
                break;
            }
            self.garbage_files.pop_front();
            // A node asks meta before deleting: a fragment placed here again
            // (moved back) stays.
            if self.placed_on(chunk, key, node)? {
                continue;
            }
            self.nodes[node].files.remove(&key);
            if self.nodes[node].rotten.remove(&key) {
                self.rotten_chunks.remove(&key);
            }
        }
        Ok(())
    }

    fn placed_on(&self, chunk: ChunkId, key: FragKey, node: usize) -> Result<bool, Violation> {
        let index = (key & 0xff) as usize;
        Ok(self
            .meta
            .sm
            .read()
            .chunk(chunk)
            .map_err(store_err(self.cfg.seed))?
            .and_then(|r| r.fragments.get(index).map(|f| f.node))
            == Some(self.nodes[node].id))
    }

    /// A deep scrub of node `i`: every fragment meta places here that
    /// rotted is reported.
    fn scrub(&mut self, i: usize) -> Result<(), Violation> {
        let node = &self.nodes[i];
        if !node.reachable() || !self.meta.up || node.rotten.is_empty() {
            return Ok(());
        }
        let id = node.id;
        let rotten: Vec<FragKey> = node.rotten.iter().copied().collect();
        let mut reports = Vec::new();
        for key in rotten {
            let Some(&chunk) = self.rotten_chunks.get(&key) else {
                continue;
            };
            if self.placed_on(chunk, key, i)? {
                reports.push(Command::ReportCorrupt {
                    report: CorruptReport {
                        chunk,
                        index: (key & 0xff) as u8,
                        node: id,
                        reason: "deep scrub: BLAKE3 mismatch".into(),
                        at_ms: self.now,
                    },
                });
            }
        }
        if !reports.is_empty() {
            self.apply_all(reports)?;
            self.tick_soon();
        }
        Ok(())
    }
}

fn commit_cmd(key: &str, records: &[ChunkRecord], at_ms: u64) -> Command {
    Command::CommitObject {
        bucket: BUCKET.into(),
        key: key.into(),
        object: NewObject::of_chunks(records.to_vec()),
        at_ms,
        condition: tessera_proto::WriteCondition::Absent,
    }
}

/// Figures of the balance scenario.
#[derive(Debug, Clone, Default)]
pub struct BalanceFigures {
    /// Fullest node over its fair share with straw2 placement alone.
    pub placed: LoadBalance,
    /// ... after rebalancing converged.
    pub balanced: LoadBalance,
    pub balance_passes: u32,
    pub balance_moved_bytes: u64,
    /// A node added: bytes moved to converge again, and the new node's
    /// fair share.
    pub add_moved_bytes: u64,
    pub add_fair_share: u64,
    pub after_add: LoadBalance,
}

impl Sim {
    // ---- the repairer ----

    fn repair_tick(&mut self) -> Result<(), Violation> {
        if !self.repairer.up || !self.meta.up {
            return Ok(());
        }
        // A new round when this one's work ran out: at once if the last
        // assessment was cut at the batch limit, otherwise not more often
        // than every `round_every_ms` (between repairs, rebalancing moves go
        // on).
        let stale = self.now >= self.repairer.round_at + self.cfg.round_every_ms;
        let more = self.repairer.round_full;
        if self.repairer.round.is_none() || (self.repairer.work.is_empty() && (stale || more)) {
            self.repairer.round_at = self.now;
            self.report.repair_rounds += 1;
            self.refresh_liveness();
            let map = self.cluster_map()?;
            self.finish_drains(&map)?;
            let classes = node_classes(&map);
            let a = self
                .meta
                .sm
                .read()
                .assess(&classes, self.cfg.repair_batch)
                .map_err(store_err(self.cfg.seed))?;
            if a.pending_fragments == 0
                && a.moving_fragments == 0
                && a.health.degraded == 0
                && a.health.at_risk == 0
            {
                for (node, died) in std::mem::take(&mut self.healing) {
                    self.report.heal_times.push((node, died, self.now));
                }
            }
            self.check_plan_sorted(&a.work)?;
            self.repairer.round_full = a.work.len() >= self.cfg.repair_batch;
            let mut work: VecDeque<RepairItem> = a
                .work
                .into_iter()
                .filter(|w| !self.repairer.busy.contains(&w.record.id))
                .collect();
            if self.cfg.bug == Some(Bug::ReversedPlan) {
                work = work.into_iter().rev().collect();
            }
            self.repairer.work = work;
            let view = ClusterView::from_map(&map);
            self.repairer.round = Some(std::rc::Rc::new((map, view)));
        }
        let Some(round) = self.repairer.round.clone() else {
            return Ok(());
        };
        let (map, view) = (&round.0, &round.1);
        while self.repairer.jobs.len() < self.cfg.repair_parallel.max(1) {
            if let Some(item) = self.repairer.work.pop_front() {
                if self.repairer.busy.contains(&item.record.id) {
                    continue;
                }
                self.check_order(&item)?;
                let nodes: Vec<NodeId> = item.record.fragments.iter().map(|f| f.node).collect();
                let Some(step) = repair_step(view, item.record.id, &nodes, &item.states) else {
                    continue;
                };
                let bytes = repair_bytes(&item);
                self.start_job(item.record.id, JobKind::Repair(item, step), bytes);
                continue;
            }
            if let Some((rec, moves)) = self.repairer.moves.pop_front() {
                if self.repairer.busy.contains(&rec.id) {
                    continue;
                }
                let bytes = 2 * rec.fragment_len * moves.len() as u64;
                self.start_job(rec.id, JobKind::Move(rec, moves), bytes);
                continue;
            }
            break;
        }
        if self.repairer.jobs.is_empty()
            && self.repairer.work.is_empty()
            && self.repairer.moves.is_empty()
            && self.plan_rebalance(map, view)?
        {
            // A new pass wants a fresh look at the cluster next time.
            self.repairer.round = None;
            self.tick_soon();
            return Ok(());
        }
        if self.repairer.jobs.is_empty() {
            self.tick_at(IDLE_POLL);
        }
        Ok(())
    }

    fn start_job(&mut self, chunk: ChunkId, kind: JobKind, bytes: u64) {
        let id = self.repairer.next_job;
        self.repairer.next_job += 1;
        self.repairer.busy.insert(chunk);
        self.repairer.jobs.insert(id, Job { chunk, kind });
        // Jobs in flight share the repairer's rate.
        let per_job = (self.cfg.repair_rate / self.cfg.repair_parallel.max(1) as u64).max(1);
        let ms = (bytes.saturating_mul(1000) / per_job).max(1);
        self.schedule(ms, Ev::JobDone(id));
    }

    /// Nodes done draining are removed.
    fn finish_drains(&mut self, map: &ClusterMap) -> Result<(), Violation> {
        let mut still = Vec::new();
        for i in std::mem::take(&mut self.draining) {
            let id = self.nodes[i].id;
            let held = map
                .nodes
                .iter()
                .find(|n| n.id == id)
                .map(|n| n.fragments)
                .unwrap_or(0);
            if held > 0 || self.nodes[i].destroyed {
                if !self.nodes[i].destroyed {
                    still.push(i);
                }
                continue;
            }
            match self.apply(Command::RemoveNode { node: id })? {
                Ok(_) => {
                    self.report.nodes_drained += 1;
                    let node = &mut self.nodes[i];
                    node.removed = true;
                    node.alive = false;
                    node.lose_contact(self.now);
                    node.files.clear();
                    for k in node.rotten.drain() {
                        self.rotten_chunks.remove(&k);
                    }
                }
                Err(r) if r.kind == Refused::Conflict => still.push(i),
                Err(r) => return Err(self.malformed("node removal", &r.message)),
            }
        }
        self.draining = still;
        Ok(())
    }

    /// Plans a rebalancing pass if one is due and wanted; whether it
    /// planned moves.
    /// Starts a rebalancing pass if one is due, judged on the round's map
    /// and view (a round that found none due is not asked again).
    fn plan_rebalance(&mut self, map: &ClusterMap, view: &ClusterView) -> Result<bool, Violation> {
        if self
            .repairer
            .last_pass
            .is_some_and(|t| self.now < t + REBALANCE_EVERY)
            || self.repairer.pass_declined == Some(self.repairer.round_at)
        {
            return Ok(false);
        }
        let mut balancer = Balancer::new(view, self.cfg.balance_tolerance);
        let changed = self.repairer.pass_epoch != Some(map.epoch);
        let trigger = PassTrigger {
            drift: self.cfg.balance_drift,
        };
        if !trigger.due(&balancer, view, changed) {
            self.repairer.pass_declined = Some(self.repairer.round_at);
            return Ok(false);
        }
        self.repairer.last_pass = Some(self.now);
        self.repairer.pass_epoch = Some(map.epoch);
        let planned = self.plan_pass(&mut balancer)?;
        let (l1, biggest) = self.distance_from_fair(view, &planned);
        self.repairer.pass_limit = l1 / 2 + biggest;
        self.repairer.pass_moved = 0;
        let any = !planned.is_empty();
        if any {
            self.report.rebalance_passes += 1;
        }
        self.repairer.moves = planned.into();
        Ok(any)
    }

    /// Visits where every live chunk is, in id order, a page at a time, as
    /// the repairer walks them (a short page is the last).
    fn live_chunks(
        &mut self,
        visit: impl FnMut(&mut Sim, ChunkPlacement) -> Result<(), Violation>,
    ) -> Result<(), Violation> {
        self.live_chunks_while(visit, || true)
    }

    /// `live_chunks`, stopping after a page when `walk_on` says so.
    fn live_chunks_while(
        &mut self,
        mut visit: impl FnMut(&mut Sim, ChunkPlacement) -> Result<(), Violation>,
        mut walk_on: impl FnMut() -> bool,
    ) -> Result<(), Violation> {
        self.report.full_scans += 1;
        let mut after = None;
        while walk_on() {
            let page = self
                .meta
                .sm
                .read()
                .scan_placements(after, SCAN_PAGE)
                .map_err(store_err(self.cfg.seed))?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            let full = page.len() == SCAN_PAGE;
            for rec in page {
                visit(self, rec)?;
            }
            if !full {
                break;
            }
        }
        Ok(())
    }

    /// One pass of the balancer over every live chunk.
    fn plan_pass(
        &mut self,
        balancer: &mut Balancer,
    ) -> Result<Vec<(ChunkRecord, Vec<BalanceMove>)>, Violation> {
        let mut planned = Vec::new();
        let balancer = std::cell::RefCell::new(balancer);
        // As the repairer's pass: once the planned loads leave nothing to
        // do, no later chunk would move (`plan_chunk` plans nothing while
        // `needs_work` is false, and only its own moves change the loads).
        self.live_chunks_while(
            |sim, p| {
                if !sim.repairer.busy.contains(&p.id) {
                    let moves = balancer
                        .borrow_mut()
                        .plan_chunk(p.id, &p.nodes, p.fragment_len);
                    if !moves.is_empty() {
                        // The few chunks to move are read whole.
                        if let Some(rec) = sim.current(p.id)? {
                            planned.push((rec, moves));
                        }
                    }
                }
                Ok(())
            },
            || balancer.borrow().needs_work(),
        )?;
        Ok(planned)
    }

    /// The L1 distance of stored bytes from fair shares, and the largest
    /// fragment a pass moves (one fragment of slack).
    fn distance_from_fair(
        &self,
        view: &ClusterView,
        planned: &[(ChunkRecord, Vec<BalanceMove>)],
    ) -> (u64, u64) {
        let holders: Vec<_> = view.nodes().iter().filter(|n| n.holds_data()).collect();
        let stored: f64 = holders.iter().map(|n| n.stored as f64).sum();
        let capacity: f64 = holders.iter().map(|n| n.capacity as f64).sum();
        let l1: f64 = holders
            .iter()
            .map(|n| (n.stored as f64 - stored * n.capacity as f64 / capacity.max(1.0)).abs())
            .sum();
        let biggest = planned
            .iter()
            .map(|(r, _)| r.fragment_len)
            .max()
            .unwrap_or(0);
        (l1 as u64, biggest)
    }

    fn finish_job(&mut self, job: Job) -> Result<(), Violation> {
        if !self.repairer.up {
            return Ok(());
        }
        match job.kind {
            JobKind::Repair(item, step) => self.finish_repair(item, step),
            JobKind::Move(rec, moves) => self.finish_move(rec, moves),
        }
    }

    fn finish_repair(&mut self, item: RepairItem, step: RepairStep) -> Result<(), Violation> {
        let rec = &item.record;
        let lost: Vec<usize> = (0..item.states.len())
            .filter(|&i| item.states[i] == FragmentState::Lost)
            .collect();
        // Copies first; a copy that cannot be read is rebuilt instead.
        let mut bodies: Vec<(usize, bool, bool)> = Vec::new(); // (index, rebuilt, in place)
        let mut rebuild: Vec<(usize, bool)> = Vec::new();
        for r in &step.restore {
            if r.how == Restore::Copy && self.readable(rec, r.index) {
                bodies.push((r.index, false, false));
            } else {
                rebuild.push((r.index, r.in_place));
            }
        }
        if !rebuild.is_empty() {
            let mut avoid: FxHashSet<usize> = lost.iter().copied().collect();
            avoid.extend(rebuild.iter().map(|(i, _)| *i));
            if !self.read_sources(rec, &avoid)? {
                return Ok(());
            }
            bodies.extend(rebuild.iter().map(|&(i, in_place)| (i, true, in_place)));
        }
        let mut candidates: Vec<NodeId> = step.targets.clone();
        if self.cfg.bug == Some(Bug::TargetOnHolder) {
            // The broken rule: a node that holds a fragment is offered first.
            if let Some(f) = rec.fragments.iter().find(|f| {
                self.index_of
                    .get(&f.node)
                    .is_some_and(|&i| self.nodes[i].reachable())
            }) {
                candidates.insert(0, f.node);
            }
        }
        let mut candidates = candidates.into_iter();
        let mut moves = Vec::new();
        for (index, rebuilt, in_place) in bodies {
            let own = rec.fragments[index].node;
            let first = in_place.then_some(own);
            let mut placed = None;
            for to in first.into_iter().chain(candidates.by_ref()) {
                if self.write_fragment(to, rec.id, index) {
                    placed = Some(to);
                    break;
                }
            }
            if let Some(to) = placed {
                moves.push(FragmentMove {
                    index: index as u8,
                    from: own,
                    to,
                    rebuilt,
                });
            }
        }
        self.commit_moves(rec, moves, "repair")
    }

    /// Carries out a chunk's planned rebalancing moves, all or none: the
    /// balancer plans them together (one may make room in a zone for
    /// another), so committing only some could break the zone spread.
    fn finish_move(
        &mut self,
        rec: ChunkRecord,
        planned: Vec<BalanceMove>,
    ) -> Result<(), Violation> {
        let mut moves = Vec::new();
        for m in &planned {
            if !self.readable(&rec, m.index) || !self.write_fragment(m.to, rec.id, m.index) {
                break;
            }
            moves.push(FragmentMove {
                index: m.index as u8,
                from: m.from,
                to: m.to,
                rebuilt: false,
            });
        }
        if moves.len() < planned.len() {
            let written: Vec<(NodeId, usize)> =
                moves.iter().map(|m| (m.to, m.index as usize)).collect();
            self.discard(rec.id, &written);
            return Ok(());
        }
        let bytes = rec.fragment_len * moves.len() as u64;
        let before = self.report.repairs_committed;
        self.commit_moves(&rec, moves, "rebalancing move")?;
        if self.report.repairs_committed > before {
            self.repairer.pass_moved += bytes;
            self.report.rebalance_moved_bytes += bytes;
            if self.repairer.pass_moved > self.repairer.pass_limit {
                return Err(Violation::Rebalance {
                    seed: self.cfg.seed,
                    at_ms: self.now,
                    what: format!(
                        "a pass moved {} bytes, more than half the distance from fair shares ({})",
                        self.repairer.pass_moved, self.repairer.pass_limit
                    ),
                });
            }
        }
        Ok(())
    }

    /// Fragment `index` of `rec` can be read intact from where meta says it
    /// is; a rotten copy found on the way is reported, as a reader does.
    fn readable(&mut self, rec: &ChunkRecord, index: usize) -> bool {
        let Some(&at) = self.index_of.get(&rec.fragments[index].node) else {
            return false;
        };
        let key = frag_key(rec.id, index);
        let node = &self.nodes[at];
        if !node.reachable() || !node.files.contains(&key) {
            return false;
        }
        if node.rotten.contains(&key) {
            let report = Command::ReportCorrupt {
                report: CorruptReport {
                    chunk: rec.id,
                    index: index as u8,
                    node: node.id,
                    reason: "BLAKE3 mismatch on read".into(),
                    at_ms: self.now,
                },
            };
            if self.meta.up {
                let _ = self.apply(report);
            }
            return false;
        }
        !self.lossy()
    }

    /// Reads K good fragments not in `avoid`; whether there were enough.
    fn read_sources(
        &mut self,
        rec: &ChunkRecord,
        avoid: &FxHashSet<usize>,
    ) -> Result<bool, Violation> {
        let need = rec.policy.required();
        let mut good = 0;
        for i in 0..rec.fragments.len() {
            if good == need {
                break;
            }
            if !avoid.contains(&i) && self.readable(rec, i) {
                good += 1;
            }
        }
        Ok(good == need)
    }

    /// Stores a fragment on `to`: whether it took it.
    fn write_fragment(&mut self, to: NodeId, chunk: ChunkId, index: usize) -> bool {
        let Some(&at) = self.index_of.get(&to) else {
            return false;
        };
        if !self.nodes[at].reachable() || self.lossy() {
            return false;
        }
        let key = frag_key(chunk, index);
        let node = &mut self.nodes[at];
        node.files.insert(key);
        if node.rotten.remove(&key) {
            self.rotten_chunks.remove(&key);
        }
        true
    }

    /// Commits repair or rebalancing moves with meta's compare-and-set and
    /// checks the chunk is no less safe after it.
    fn commit_moves(
        &mut self,
        rec: &ChunkRecord,
        moves: Vec<FragmentMove>,
        what: &str,
    ) -> Result<(), Violation> {
        if moves.is_empty() {
            return Ok(());
        }
        let written: Vec<(NodeId, usize)> = moves
            .iter()
            .filter(|m| m.to != m.from)
            .map(|m| (m.to, m.index as usize))
            .collect();
        if !self.meta.up {
            self.discard(rec.id, &written);
            return Ok(());
        }
        let before = self.current(rec.id)?;
        let cmd = Command::CommitRepair {
            chunk: rec.id,
            moves: moves.clone(),
        };
        match self.apply(cmd)? {
            Ok(Applied::Repaired { .. }) => {
                self.report.repairs_committed += 1;
                for m in &moves {
                    if m.rebuilt {
                        self.report.fragments_rebuilt += 1;
                    } else {
                        self.report.fragments_moved += 1;
                    }
                    if m.to != m.from
                        && let Some(&at) = self.index_of.get(&m.from)
                    {
                        self.garbage_files.push_back((
                            self.now + self.cfg.gc_grace_ms,
                            at,
                            frag_key(rec.id, m.index as usize),
                            rec.id,
                        ));
                    }
                }
                self.check_commit(rec.id, before, what)?;
            }
            Ok(other) => {
                return Err(self.malformed(what, &format!("unexpected outcome {other:?}")));
            }
            Err(r) if r.kind == Refused::Conflict => {
                self.report.repairs_refused += 1;
                self.discard(rec.id, &written);
            }
            Err(r) => return Err(self.malformed(what, &r.message)),
        }
        Ok(())
    }

    /// Copies nobody will point at: the collector's, after the grace period.
    fn discard(&mut self, chunk: ChunkId, written: &[(NodeId, usize)]) {
        for &(node, index) in written {
            if let Some(&at) = self.index_of.get(&node) {
                self.garbage_files.push_back((
                    self.now + self.cfg.gc_grace_ms,
                    at,
                    frag_key(chunk, index),
                    chunk,
                ));
            }
        }
    }

    // ---- invariants ----

    fn malformed(&self, what: &str, message: &str) -> Violation {
        Violation::Malformed {
            seed: self.cfg.seed,
            step: self.step,
            at_ms: self.now,
            what: what.into(),
            message: message.into(),
        }
    }

    fn current(&self, chunk: ChunkId) -> Result<Option<ChunkRecord>, Violation> {
        self.meta
            .sm
            .read()
            .chunk(chunk)
            .map_err(store_err(self.cfg.seed))
    }

    /// Fragments of `rec` intact where meta places them.
    fn intact(&self, rec: &ChunkPlacement) -> usize {
        rec.nodes
            .iter()
            .enumerate()
            .filter(|(i, node)| {
                self.index_of
                    .get(node)
                    .is_some_and(|&at| self.nodes[at].intact(frag_key(rec.id, *i)))
            })
            .count()
    }

    fn per_zone_max(&self, rec: &ChunkRecord) -> usize {
        let mut zones: FxHashMap<&str, usize> = FxHashMap::default();
        for f in &rec.fragments {
            if let Some(&at) = self.index_of.get(&f.node) {
                *zones.entry(self.nodes[at].zone.as_str()).or_default() += 1;
            }
        }
        zones.values().copied().max().unwrap_or(0)
    }

    /// After a commit: no less safe, zone spread kept, and the usual
    /// per-chunk checks.
    fn zones_of(&self, rec: &ChunkRecord) -> Vec<String> {
        rec.fragments
            .iter()
            .map(|f| match self.index_of.get(&f.node) {
                Some(&at) => format!("{}:{}", self.nodes[at].zone, f.node),
                None => format!("?:{}", f.node),
            })
            .collect()
    }

    fn check_commit(
        &mut self,
        chunk: ChunkId,
        before: Option<ChunkRecord>,
        what: &str,
    ) -> Result<(), Violation> {
        let Some(after) = self.current(chunk)? else {
            return Ok(());
        };
        if let Some(before) = before {
            let (b, a) = (
                self.intact(&(&before).into()),
                self.intact(&(&after).into()),
            );
            if a < b {
                return Err(Violation::LessSafe {
                    seed: self.cfg.seed,
                    step: self.step,
                    at_ms: self.now,
                    chunk,
                    before: b,
                    after: a,
                });
            }
            let zones = self.cfg.zones.max(1);
            let allowed = self
                .per_zone_max(&before)
                .max(zone_cap(after.fragments.len(), zones));
            let per_zone = self.per_zone_max(&after);
            if per_zone > allowed {
                return Err(Violation::ZoneSpread {
                    seed: self.cfg.seed,
                    step: self.step,
                    at_ms: self.now,
                    chunk,
                    what: what.into(),
                    per_zone,
                    allowed,
                    before: self.zones_of(&before),
                    after: self.zones_of(&after),
                });
            }
        }
        self.check_chunk(chunk)
    }

    /// The per-chunk invariants: distinct nodes, every fragment meta places
    /// on an intact disk is there, and a chunk that lost more than it can
    /// is remembered as doomed.
    fn check_chunk(&mut self, chunk: ChunkId) -> Result<(), Violation> {
        let r = self.meta.sm.read();
        let err = store_err(self.cfg.seed);
        let Some(rec) = r.chunk(chunk).map_err(&err)? else {
            return Ok(());
        };
        if r.is_garbage(chunk).map_err(&err)? {
            return Ok(());
        }
        drop(r);
        self.check_record(&(&rec).into())
    }

    /// `check_chunk` for a live record in hand (a scan skips garbage).
    fn check_record(&mut self, rec: &ChunkPlacement) -> Result<(), Violation> {
        let chunk = rec.id;
        let mut losses = 0;
        for (i, &node_id) in rec.nodes.iter().enumerate() {
            // A handful of nodes: a linear look back costs less than a set.
            if rec.nodes[..i].contains(&node_id) {
                return Err(Violation::SharedNode {
                    seed: self.cfg.seed,
                    step: self.step,
                    at_ms: self.now,
                    chunk,
                    node: node_id,
                });
            }
            let Some(&at) = self.index_of.get(&node_id) else {
                losses += 1;
                continue;
            };
            let node = &self.nodes[at];
            let key = frag_key(chunk, i);
            if node.destroyed || node.rotten.contains(&key) {
                losses += 1;
            } else if !node.files.contains(&key) {
                return Err(Violation::MissingFragment {
                    seed: self.cfg.seed,
                    step: self.step,
                    at_ms: self.now,
                    chunk,
                    index: i,
                    node: node_id,
                });
            }
        }
        if losses > rec.policy.tolerated_losses() {
            self.doomed.insert(chunk);
        }
        Ok(())
    }

    fn check_plan_sorted(&self, work: &[RepairItem]) -> Result<(), Violation> {
        let key = |w: &RepairItem| {
            priority(
                &condition(w.record.policy.required(), &w.states),
                w.record.id,
            )
        };
        for pair in work.windows(2) {
            if key(&pair[1]) < key(&pair[0]) {
                return Err(self.order_violation(&pair[0], &pair[1]));
            }
        }
        Ok(())
    }

    /// The item about to start is no less at risk than any still waiting.
    fn check_order(&self, item: &RepairItem) -> Result<(), Violation> {
        let key = |w: &RepairItem| {
            priority(
                &condition(w.record.policy.required(), &w.states),
                w.record.id,
            )
        };
        let mine = key(item);
        if let Some(w) = self.repairer.work.iter().find(|w| key(w) < mine) {
            return Err(self.order_violation(item, w));
        }
        Ok(())
    }

    fn order_violation(&self, took: &RepairItem, waiting: &RepairItem) -> Violation {
        let show = |w: &RepairItem| {
            let c = condition(w.record.policy.required(), &w.states);
            format!("spare {}, lost {}, moving {}", c.spare, c.lost, c.moving)
        };
        Violation::RepairOrder {
            seed: self.cfg.seed,
            step: self.step,
            at_ms: self.now,
            chunk: took.record.id,
            took: show(took),
            waiting: waiting.record.id,
            waiting_priority: show(waiting),
        }
    }

    /// Every live chunk, checked.
    fn sweep(&mut self) -> Result<u64, Violation> {
        let mut live = 0;
        self.live_chunks(|sim, rec| {
            live += 1;
            sim.check_record(&rec)
        })?;
        Ok(live)
    }

    /// After the quiet time: every chunk that lost more than it could is
    /// reported lost, every other one is whole again, and rebalancing has
    /// converged.
    fn finish(mut self) -> Result<Report, Violation> {
        // One walk: the sweep's checks, and whether every chunk not doomed
        // is whole, that is every fragment intact where meta places it
        // (reported after the checks against meta's assessment).
        let mut not_whole = None;
        self.live_chunks(|sim, rec| {
            sim.check_record(&rec)?;
            if not_whole.is_none() && !sim.doomed.contains(&rec.id) {
                let intact = sim.intact(&rec);
                if intact < rec.nodes.len() {
                    not_whole = Some(Violation::Health {
                        seed: sim.cfg.seed,
                        at_ms: sim.now,
                        chunk: rec.id,
                        what: format!(
                            "{intact} of {} fragments intact after the quiet time, and meta does not know",
                            rec.nodes.len()
                        ),
                    });
                }
            }
            Ok(())
        })?;
        self.refresh_liveness();
        let map = self.cluster_map()?;
        let classes = node_classes(&map);
        let a = self
            .meta
            .sm
            .read()
            .assess(&classes, usize::MAX)
            .map_err(store_err(self.cfg.seed))?;
        let r = self.meta.sm.read();
        let err = store_err(self.cfg.seed);
        let mut doomed_live = 0;
        let mut doomed: Vec<ChunkId> = self.doomed.iter().copied().collect();
        doomed.sort();
        for chunk in doomed {
            if r.chunk(chunk).map_err(&err)?.is_none() || r.is_garbage(chunk).map_err(&err)? {
                continue;
            }
            doomed_live += 1;
            if !a.lost_chunks.contains(&chunk) {
                return Err(Violation::Health {
                    seed: self.cfg.seed,
                    at_ms: self.now,
                    chunk,
                    what: "lost more fragments than it can, but meta does not report it lost"
                        .into(),
                });
            }
        }
        for chunk in &a.lost_chunks {
            if !self.doomed.contains(chunk) {
                return Err(Violation::Health {
                    seed: self.cfg.seed,
                    at_ms: self.now,
                    chunk: *chunk,
                    what: "reported lost, but enough fragments survive".into(),
                });
            }
        }
        if let Some(w) = a.work.first() {
            return Err(Violation::Health {
                seed: self.cfg.seed,
                at_ms: self.now,
                chunk: w.record.id,
                what: format!(
                    "still not whole after the quiet time ({} chunks wait for repair)",
                    a.work.len()
                ),
            });
        }
        drop(r);
        if let Some(v) = not_whole {
            return Err(v);
        }
        // Converged: nothing would start another pass.
        let view = ClusterView::from_map(&map);
        let balancer = Balancer::new(&view, self.cfg.balance_tolerance);
        let changed = self.repairer.pass_epoch != Some(map.epoch);
        let trigger = PassTrigger {
            drift: self.cfg.balance_drift,
        };
        if trigger.due(&balancer, &view, changed) {
            return Err(Violation::Rebalance {
                seed: self.cfg.seed,
                at_ms: self.now,
                what: format!(
                    "not converged: another pass is due (balance {:?})",
                    load_balance(view.nodes())
                ),
            });
        }
        self.report.balance_end = load_balance(view.nodes());
        self.report.store_copies = self.meta.sm.store().copies();
        self.report.steps = self.step;
        self.report.live_chunks = a.health.total;
        self.report.lost_chunks = doomed_live;
        Ok(self.report)
    }

    // ---- scenarios for measurements ----

    /// Runs rebalancing passes at once (no time passes) until a pass plans
    /// nothing; returns (passes, bytes moved).
    fn rebalance_now(&mut self) -> Result<(u32, u64), Violation> {
        let mut passes = 0;
        let mut moved = 0;
        loop {
            self.refresh_liveness();
            let map = self.cluster_map()?;
            let view = ClusterView::from_map(&map);
            let mut balancer = Balancer::new(&view, self.cfg.balance_tolerance);
            let planned = self.plan_pass(&mut balancer)?;
            if planned.is_empty() {
                return Ok((passes, moved));
            }
            let (l1, biggest) = self.distance_from_fair(&view, &planned);
            self.repairer.pass_limit = l1 / 2 + biggest;
            self.repairer.pass_moved = 0;
            passes += 1;
            for (rec, moves) in planned {
                let before = self.report.rebalance_moved_bytes;
                self.finish_move(rec, moves)?;
                moved += self.report.rebalance_moved_bytes - before;
            }
            if passes > 50 {
                return Err(Violation::Rebalance {
                    seed: self.cfg.seed,
                    at_ms: self.now,
                    what: "more than 50 passes without converging".into(),
                });
            }
        }
    }

    fn balance_now(&mut self) -> Result<LoadBalance, Violation> {
        self.refresh_liveness();
        let map = self.cluster_map()?;
        Ok(load_balance(ClusterView::from_map(&map).nodes()))
    }

    /// `nodes` equal nodes (each its own zone), `chunks_per_node` chunks of
    /// `ec:4+2` per node: balance with placement alone, after rebalancing,
    /// and what adding one node moves.
    pub fn balance_scenario(
        seed: u64,
        nodes: usize,
        chunks_per_node: usize,
    ) -> Result<BalanceFigures, Violation> {
        let mut cfg = SimConfig::small(seed, nodes, nodes, nodes * chunks_per_node).quiet();
        cfg.policies = vec![(Policy::default(), 1)];
        cfg.chunks_per_object = 64;
        let mut sim = Sim::new(cfg)?;
        let mut f = BalanceFigures {
            placed: sim.balance_now()?,
            ..BalanceFigures::default()
        };
        let (passes, moved) = sim.rebalance_now()?;
        f.balance_passes = passes;
        f.balance_moved_bytes = moved;
        f.balanced = sim.balance_now()?;
        let stored: u64 = sim.cluster_map()?.nodes.iter().map(|n| n.stored).sum();
        sim.add_node()?;
        f.add_fair_share = stored / (nodes as u64 + 1);
        let (_, moved) = sim.rebalance_now()?;
        f.add_moved_bytes = moved;
        f.after_add = sim.balance_now()?;
        Ok(f)
    }

    /// One node dies for good in a quiet cluster: milliseconds from its
    /// death until every chunk is whole again (including the time until
    /// it counts as `out`).
    pub fn time_to_redundancy(mut cfg: SimConfig, repair_rate: u64) -> Result<u64, Violation> {
        cfg.repair_rate = repair_rate;
        let mut sim = Sim::new(cfg.quiet())?;
        sim.schedule(MIN, Ev::Loss);
        sim.end_of_failures = 2 * MIN;
        sim.cfg.losses_per_day = 1e-9;
        let report = sim.run()?;
        match report.heal_times.first() {
            Some((_, died, healed)) => Ok(healed - died),
            None => Err(Violation::Store {
                seed: report.seed,
                what: "the lost node's chunks never became whole".into(),
            }),
        }
    }
}

/// Bytes a repair reads and writes: K fragments read for a rebuild, one
/// read per copy, one write per restored fragment.
fn repair_bytes(item: &RepairItem) -> u64 {
    let len = item.record.fragment_len;
    let lost = item
        .states
        .iter()
        .filter(|s| **s == FragmentState::Lost)
        .count() as u64;
    let moving = item
        .states
        .iter()
        .filter(|s| **s == FragmentState::Move)
        .count() as u64;
    let reads = if lost > 0 {
        item.record.policy.required() as u64 + moving
    } else {
        moving
    };
    len * (reads + lost + moving)
}
