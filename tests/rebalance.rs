//! Rebalance: a node drained (its data readable throughout) and removed, a
//! new node added: data moves, nothing is lost, and the fullest node ends
//! within 10% of its fair (capacity-weighted) share.
//!
//! `TESSERA_REBALANCE_BYTES=64MiB` scales the data set down.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Cluster, env_size, http_get, metric, progress_line};
use rand::{Rng, SeedableRng};
use serde_json::Value;

const MIB: usize = 1024 * 1024;

fn u(s: &Value, a: &str, b: &str) -> u64 {
    s[a][b]
        .as_u64()
        .unwrap_or_else(|| panic!("status has no {a}.{b}: {s}"))
}

fn node_fragments(c: &Cluster, s: &Value, i: usize) -> u64 {
    c.node_entry(s, i)
        .and_then(|n| n["fragments"].as_u64())
        .unwrap_or_else(|| panic!("no fragments count for node {i} in {s}"))
}

#[test]
fn drain_remove_and_add_move_data_and_balance_load() {
    let mut c = Cluster::start_full(
        7,
        &[
            "--down-after",
            "2s",
            "--out-after",
            "30s",
            // Puts must commit within half of it (64 KiB chunks of 8 MiB
            // objects take a while).
            "--gc-grace",
            "30s",
        ],
        &["--capacity", "1G", "--gc-interval", "1s"],
    );
    c.ok(&["bucket", "create", "data", "--policy", "ec:4+2"]);
    let total = env_size("TESSERA_REBALANCE_BYTES", 192 * MIB as u64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut sizes = Vec::new();
    let mut left = total as i64;
    while left > 0 {
        let len = (rng.gen_range(MIB..=8 * MIB) as i64).min(left.max(MIB as i64));
        sizes.push((format!("obj/{}", sizes.len()), len as usize));
        left -= len;
    }
    let t = Instant::now();
    let objects = c.put_objects("data", &sizes, 5, &["--chunk-size", "64KiB"]);
    let s0 = c.status_fresh();
    eprintln!(
        "put {} objects in {:.1}s: {} chunks; balance {}",
        objects.len(),
        t.elapsed().as_secs_f64(),
        s0["chunks"]["total"],
        s0["balance"]
    );
    assert!(u(&s0, "chunks", "total") >= 1000, "{s0}");

    // A node that holds fragments cannot be removed.
    let id0 = c.node_id(0);
    let id1 = c.node_id(1);
    let err = c.fails(&["node", "rm", &id1]);
    assert!(err.contains("fragments"), "{err}");

    // Drain node 0 while reading everything.
    let before = node_fragments(&c, &s0, 0);
    assert!(before > 0);
    let t = Instant::now();
    let mut drain = c
        .cli()
        .command(&["node", "drain", &id0, "--wait"])
        // Files, not pipes: a chatty --wait must not block on a full pipe.
        .stdout(Stdio::from(
            std::fs::File::create(c.path("drain.out")).unwrap(),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(c.path("drain.err")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let mut rounds = 0;
    loop {
        c.verify_objects(&objects);
        rounds += 1;
        if drain.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(900),
            "drain --wait still running after 15 min: {}",
            progress_line(&c.status())
        );
        eprintln!("draining: {}", progress_line(&c.status()));
    }
    let exit = drain.wait().unwrap();
    assert!(
        exit.success(),
        "node drain failed: {}{}",
        std::fs::read_to_string(c.path("drain.err")).unwrap_or_default(),
        std::fs::read_to_string(c.path("drain.out")).unwrap_or_default()
    );
    let s1 = c.status_fresh();
    eprintln!(
        "drained {before} fragments off node 0 in {:.1}s, {rounds} read rounds during; {}",
        t.elapsed().as_secs_f64(),
        progress_line(&s1)
    );
    let n0 = c.node_entry(&s1, 0).expect("drained node listed");
    assert_eq!(
        n0["fragments"], 0,
        "drained node still holds fragments: {n0}"
    );
    assert_eq!(n0["admin"], "draining", "{n0}");
    assert_eq!(u(&s1, "chunks", "misplaced"), 0, "{s1}");
    assert_eq!(u(&s1, "chunks", "lost"), 0, "{s1}");
    for o in &objects {
        c.check_fragments(&o.target, &[0]);
    }
    c.verify_objects(&objects);
    // The moved fragments' old copies are garbage: collected off node 0's disk.
    common::wait_until(
        "node 0's fragment files collected",
        Duration::from_secs(180),
        || c.fragment_files(0).is_empty(),
    );

    c.ok(&["node", "rm", &id0]);
    c.kill_node(0);
    let s2 = c.status_fresh();
    // Gone from the map (or listed as removed, holding nothing).
    if let Some(n0) = c.node_entry(&s2, 0) {
        assert_eq!(
            n0["admin"], "removed",
            "a removed node is still in the map: {n0}"
        );
        assert_eq!(n0["fragments"], 0, "{n0}");
    }
    let moved_before = u(&s2, "repair", "moved_fragments");

    // A new node gets its fair share.
    let fresh = c.add_node();
    let t = Instant::now();
    let mut last = u64::MAX;
    let mut stable_since = Instant::now();
    let mut last_print = Instant::now();
    let settled = loop {
        let s = c.status();
        let got = node_fragments(&c, &s, fresh);
        if got != last {
            last = got;
            stable_since = Instant::now();
        }
        let idle = u(&s, "chunks", "misplaced") == 0
            && u(&s, "repair", "moving_fragments") == 0
            && u(&s, "repair", "pending_fragments") == 0
            && u(&s, "chunks", "healthy") == u(&s, "chunks", "total");
        if got > 0 && idle && stable_since.elapsed() > Duration::from_secs(5) {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(900),
            "rebalance onto the new node did not settle in 15 min: new node {got} fragments; {}",
            progress_line(&s)
        );
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "rebalancing: new node {got} fragments; balance {}; {}",
                s["balance"],
                progress_line(&s)
            );
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(1000));
    };
    let got = node_fragments(&c, &settled, fresh);
    let moved = u(&settled, "repair", "moved_fragments") - moved_before;
    let fullest = settled["balance"]["fullest_over_fair"]
        .as_f64()
        .unwrap_or_else(|| panic!("no balance.fullest_over_fair: {settled}"));
    let deviation = settled["balance"]["max_deviation"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let per_node: Vec<String> = settled["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| format!("{}:{}", n["fragments"], n["stored"]))
        .collect();
    println!(
        "BENCH rebalance: new node got {got} fragments ({moved} moved) in {:.1}s; fullest node at {fullest:.3}x its fair share, max deviation {:.1}%; per node fragments:bytes {per_node:?}",
        t.elapsed().as_secs_f64(),
        deviation * 100.0
    );
    assert!(
        fullest <= 1.10,
        "fullest node at {fullest}x its fair share: {}",
        settled["nodes"]
    );
    // Moving as little as possible: about what the new node received.
    assert!(
        moved <= got * 2,
        "{moved} fragments moved for {got} on the new node"
    );
    let human = c.ok(&["status"]);
    assert!(human.contains("load balance:"), "{human}");
    let (line, body) = http_get(c.metrics_addr(None), "/metrics");
    assert!(line.contains("200"), "{line}");
    let m = metric(&body, "tessera_meta_load_fullest_over_fair_ratio");
    assert!(
        m.is_some_and(|v| (v - fullest).abs() < 0.05),
        "tessera_meta_load_fullest_over_fair_ratio {m:?}, status says {fullest}"
    );

    for o in &objects {
        c.check_fragments(&o.target, &[0]);
    }
    c.verify_objects(&objects);
}
