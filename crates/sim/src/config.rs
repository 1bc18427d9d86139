//! What a simulation runs: the cluster, the load, the failure rates.

use tessera_types::Policy;

/// A deliberately broken rule, to show the simulator catches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// The repairer puts a rebuilt fragment on a node that already holds a
    /// fragment of the chunk.
    TargetOnHolder,
    /// The repairer takes its work in the wrong order (least at risk first).
    ReversedPlan,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub zones: usize,
    /// Bytes per node.
    pub capacity: u64,
    /// Chunks written before the clock starts.
    pub chunks: usize,
    pub chunks_per_object: usize,
    /// Bytes per full chunk (the last chunk of an object is shorter).
    pub chunk_size: u64,
    /// Policies of new chunks, with relative weights.
    pub policies: Vec<(Policy, u32)>,
    /// Simulated time to run, milliseconds.
    pub duration_ms: u64,
    /// Quiet time after `duration_ms`: no new failures; everything that
    /// can heal must have healed by its end.
    pub settle_ms: u64,
    pub down_after_ms: u64,
    pub out_after_ms: u64,
    pub restart_grace_ms: u64,
    pub gc_grace_ms: u64,
    /// Bytes per second the repairer reads and writes.
    pub repair_rate: u64,
    pub repair_parallel: usize,
    /// Chunks of work taken per repair round.
    pub repair_batch: usize,
    /// A repair round looks at the cluster afresh at most this often (a
    /// round cut at `repair_batch` is followed at once). Longer than the
    /// real repairer's poll: each round reassesses every chunk on a node
    /// that is down, which at a million chunks was most of the simulated
    /// week's time. Scenarios that measure repair keep it short.
    pub round_every_ms: u64,
    /// Mean events per simulated day.
    pub crashes_per_day: f64,
    /// A crashed node is back after this many minutes (uniform).
    pub crash_minutes: (u64, u64),
    pub losses_per_day: f64,
    /// Several nodes holding one chunk die together (a correlated failure).
    pub disasters_per_day: f64,
    pub rot_per_day: f64,
    /// Fragments one rot event corrupts on a node (uniform).
    pub rot_fragments: (usize, usize),
    pub partitions_per_day: f64,
    pub partition_minutes: (u64, u64),
    pub adds_per_day: f64,
    pub drains_per_day: f64,
    pub repairer_crashes_per_day: f64,
    pub meta_crashes_per_day: f64,
    /// How long meta or the repairer stays down after a crash (seconds, uniform).
    pub outage_secs: (u64, u64),
    /// Objects written and deleted per simulated hour.
    pub writes_per_hour: f64,
    pub deletes_per_hour: f64,
    /// Chance that one fragment transfer fails.
    pub transfer_loss: f64,
    /// Each node deep-scrubs everything it holds this often.
    pub scrub_interval_ms: u64,
    /// Rebalancing tolerance (fraction of fair share).
    pub balance_tolerance: f64,
    /// Drift from fair share that starts a pass on its own
    /// (`tessera_heal::PassTrigger`).
    pub balance_drift: f64,
    /// Full invariant sweeps this often (touched chunks are checked after
    /// every step regardless).
    pub sweep_every_ms: u64,
    pub bug: Option<Bug>,
}

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;

impl SimConfig {
    /// The scale: 1,000 nodes in 10 zones, 1,000,000 chunks mixing
    /// ec:4+2, ec:8+3 and rep:3, a simulated week of failures.
    pub fn week(seed: u64) -> Self {
        SimConfig {
            seed,
            nodes: 1000,
            zones: 10,
            capacity: 16 << 40,
            chunks: 1_000_000,
            chunks_per_object: 16,
            chunk_size: 4 << 20,
            policies: vec![
                (policy("ec:4+2"), 5),
                (policy("ec:8+3"), 3),
                (policy("rep:3"), 2),
            ],
            duration_ms: 7 * DAY,
            settle_ms: 2 * DAY,
            down_after_ms: 30_000,
            out_after_ms: 10 * MIN,
            restart_grace_ms: 10_000,
            gc_grace_ms: HOUR,
            repair_rate: 256 << 20,
            repair_parallel: 8,
            repair_batch: 256,
            // Repair starts within a minute of a node going out, which is
            // itself minutes after it went silent.
            round_every_ms: MIN,
            crashes_per_day: 4.0,
            crash_minutes: (1, 30),
            losses_per_day: 0.6,
            disasters_per_day: 0.15,
            rot_per_day: 3.0,
            rot_fragments: (1, 40),
            partitions_per_day: 2.0,
            partition_minutes: (1, 20),
            adds_per_day: 0.3,
            drains_per_day: 0.15,
            repairer_crashes_per_day: 0.5,
            meta_crashes_per_day: 0.3,
            outage_secs: (5, 120),
            writes_per_hour: 30.0,
            deletes_per_hour: 20.0,
            transfer_loss: 0.001,
            scrub_interval_ms: 2 * DAY,
            balance_tolerance: 0.02,
            balance_drift: 0.05,
            sweep_every_ms: 3 * DAY,
            bug: None,
        }
    }

    /// A small cluster for quick scenarios (tests, measurements).
    pub fn small(seed: u64, nodes: usize, zones: usize, chunks: usize) -> Self {
        SimConfig {
            nodes,
            zones,
            chunks,
            duration_ms: DAY,
            settle_ms: DAY,
            // Few fragments per node: one write moves a node by a percent.
            balance_drift: 0.25,
            // Time to full redundancy is measured here: rounds as often as
            // a small cluster's assessments allow.
            round_every_ms: 30_000,
            ..Self::week(seed)
        }
    }

    /// No failures, no client load: for measurements of one thing.
    pub fn quiet(mut self) -> Self {
        self.crashes_per_day = 0.0;
        self.losses_per_day = 0.0;
        self.disasters_per_day = 0.0;
        self.rot_per_day = 0.0;
        self.partitions_per_day = 0.0;
        self.adds_per_day = 0.0;
        self.drains_per_day = 0.0;
        self.repairer_crashes_per_day = 0.0;
        self.meta_crashes_per_day = 0.0;
        self.writes_per_hour = 0.0;
        self.deletes_per_hour = 0.0;
        self.transfer_loss = 0.0;
        self
    }
}

fn policy(s: &str) -> Policy {
    s.parse().unwrap_or_default()
}
