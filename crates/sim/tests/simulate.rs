//! The simulator under `cargo test`: a fixed set of seeds at the issue's
//! scale (1,000 nodes in 10 zones, 1,000,000 chunks, a simulated week of
//! failures), every invariant checked; the balance and healing figures;
//! and proof that a broken rule is caught.
//!
//! More seeds: `TESSERA_SIM_SEEDS=200 cargo test -p tessera-sim --release
//! -- --nocapture many_seeds` (seeds 1..=200; `TESSERA_SIM_FIRST_SEED`
//! moves the start; `TESSERA_SIM_CHUNKS` scales the cluster down).

// A `Violation` fails the test once: its size costs nothing.
#![allow(clippy::result_large_err)]

use std::time::Instant;

use tessera_sim::{Bug, Sim, SimConfig, Violation};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The fixed seeds `cargo test` runs at full scale.
const SEEDS: [u64; 2] = [1, 2];

fn run(cfg: SimConfig) -> Result<tessera_sim::Report, Violation> {
    let seed = cfg.seed;
    let started = Instant::now();
    let sim = Sim::new(cfg)?;
    let loaded = started.elapsed();
    let report = sim.run()?;
    eprintln!(
        "seed {seed}: loaded in {loaded:.1?}, simulated in {:.1?}: {report:?}",
        started.elapsed() - loaded
    );
    Ok(report)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// A week at full scale, the fixed seeds on both cores.
#[test]
fn a_simulated_week_at_scale_keeps_every_invariant() {
    let chunks = env_u64("TESSERA_SIM_CHUNKS").unwrap_or(1_000_000) as usize;
    let handles: Vec<_> = SEEDS
        .iter()
        .map(|&seed| {
            std::thread::spawn(move || {
                let mut cfg = SimConfig::week(seed);
                cfg.chunks = chunks;
                run(cfg)
            })
        })
        .collect();
    for h in handles {
        match h.join() {
            Ok(Ok(report)) => {
                assert!(report.node_losses > 0 && report.rotted_fragments > 0);
                assert!(report.fragments_rebuilt > 0);
            }
            Ok(Err(v)) => panic!("{v}"),
            Err(_) => panic!("a simulation thread panicked"),
        }
    }
}

/// Many more seeds, on demand.
#[test]
fn many_seeds() {
    let Some(n) = env_u64("TESSERA_SIM_SEEDS") else {
        return;
    };
    let first = env_u64("TESSERA_SIM_FIRST_SEED").unwrap_or(1);
    let chunks = env_u64("TESSERA_SIM_CHUNKS").unwrap_or(1_000_000) as usize;
    let seeds: Vec<u64> = (first..first + n).collect();
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = seeds
            .chunks(seeds.len().div_ceil(2).max(1))
            .map(|part| {
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for &seed in part {
                        let mut cfg = SimConfig::week(seed);
                        cfg.chunks = chunks;
                        if let Err(v) = run(cfg) {
                            failed.push(v.to_string());
                        }
                    }
                    failed
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|_| vec!["panicked".into()]))
            .collect()
    });
    assert!(failures.is_empty(), "{failures:#?}");
}

/// 12 equal nodes, 512 chunks per node: the fullest node within 3% of its
/// fair share after rebalancing; adding a node moves within 10% of its
/// fair share.
#[test]
fn balance_and_the_cost_of_adding_a_node() {
    for seed in [1, 2, 3] {
        let f = Sim::balance_scenario(seed, 12, 512).unwrap_or_else(|v| panic!("{v}"));
        eprintln!("seed {seed}: {f:?}");
        assert!(
            f.balanced.fullest_over_fair <= 1.03,
            "seed {seed}: fullest node at {:.4} of its fair share",
            f.balanced.fullest_over_fair
        );
        let ratio = f.add_moved_bytes as f64 / f.add_fair_share as f64;
        assert!(
            (0.9..=1.1).contains(&ratio),
            "seed {seed}: adding a node moved {ratio:.3} of its fair share"
        );
        assert!(f.after_add.fullest_over_fair <= 1.03);
    }
}

/// Time to full redundancy after one node is lost, against the repair rate.
#[test]
fn time_to_full_redundancy_follows_the_repair_rate() {
    let mut last = u64::MAX;
    for rate_mib in [64u64, 128, 256, 512] {
        let cfg = SimConfig::small(7, 100, 10, 100_000);
        let ms = Sim::time_to_redundancy(cfg, rate_mib << 20).unwrap_or_else(|v| panic!("{v}"));
        eprintln!(
            "repair rate {rate_mib} MiB/s: full redundancy {:.1} min after the node died",
            ms as f64 / 60_000.0
        );
        assert!(ms <= last, "a faster repair rate took longer");
        last = ms;
    }
}

/// A repairer that offers a node already holding a fragment of the chunk
/// as a target is caught.
#[test]
fn a_target_on_a_holder_is_caught() {
    let mut cfg = SimConfig::small(11, 60, 6, 20_000);
    cfg.bug = Some(Bug::TargetOnHolder);
    match Sim::new(cfg).and_then(|s| s.run()) {
        Err(v @ (Violation::Malformed { .. } | Violation::SharedNode { .. })) => {
            eprintln!("caught: {v}")
        }
        other => panic!("the broken rule went unnoticed: {other:?}"),
    }
}

/// A repairer that takes the least endangered chunks first is caught.
#[test]
fn repairs_out_of_order_are_caught() {
    let mut cfg = SimConfig::small(12, 60, 6, 20_000);
    cfg.bug = Some(Bug::ReversedPlan);
    cfg.disasters_per_day = 4.0;
    match Sim::new(cfg).and_then(|s| s.run()) {
        Err(v @ Violation::RepairOrder { .. }) => eprintln!("caught: {v}"),
        other => panic!("the broken rule went unnoticed: {other:?}"),
    }
}
