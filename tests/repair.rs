//! Repair: 7 nodes, ec:4+2, 2 GiB of objects of mixed sizes; one node is
//! SIGKILLed for good. Once meta declares it out, every chunk gets back to
//! full redundancy on the other six nodes: meta's placement names six
//! distinct live nodes for every chunk, each of those nodes holds the
//! fragment file with the bytes meta's BLAKE3 names (so reads need no
//! parity), and every object reads back byte-identical.
//!
//! `TESSERA_HEAL_BYTES=256MiB` scales the data set down for quick local runs.
//! The timings printed (lines starting `BENCH`) are the figures for
//! BENCHMARKS.md.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, env_size, http_get, metric, progress_line};
use rand::{Rng, SeedableRng};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const GIB: u64 = 1024 * 1024 * 1024;

/// Object sizes adding up to about `total`: many tiny ones (inline in meta
/// and single small chunks), 1-10 MiB ones, and a few hundred-MiB ones.
fn mixed_sizes(total: u64, seed: u64) -> Vec<(String, usize)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut left = total as i64;
    for n in 0..30 {
        let len = rng.gen_range(1..=4 * KIB);
        out.push((format!("tiny/{n}"), len));
        left -= len as i64;
    }
    for n in 0..20 {
        let len = rng.gen_range(4 * KIB + 1..=64 * KIB);
        out.push((format!("small/{n}"), len));
        left -= len as i64;
    }
    let large = if total >= GIB {
        3
    } else if total >= 256 * MIB as u64 {
        1
    } else {
        0
    };
    for n in 0..large {
        // 15% each: 3 x 307 MiB for 2 GiB.
        let len = (total as f64 * if large == 3 { 0.15 } else { 0.2 }) as usize;
        out.push((format!("large/{n}"), len));
        left -= len as i64;
    }
    let mut n = 0;
    while left > 0 {
        let len = (rng.gen_range(MIB..=10 * MIB) as i64).min(left) as usize;
        out.push((format!("medium/{n}"), len));
        left -= len as i64;
        n += 1;
    }
    out
}

/// Machine-wide CPU and disk counters, to tell what limited the repair.
#[derive(Clone, Copy, Debug)]
struct Counters {
    cpu_busy: u64,
    cpu_iowait: u64,
    cpu_total: u64,
    disk_read: u64,
    disk_written: u64,
}

fn counters() -> Counters {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = cpu.iter().sum();
    let idle = cpu.get(3).copied().unwrap_or(0);
    let iowait = cpu.get(4).copied().unwrap_or(0);
    let (mut read, mut written) = (0, 0);
    for l in std::fs::read_to_string("/proc/diskstats")
        .unwrap_or_default()
        .lines()
    {
        let f: Vec<&str> = l.split_whitespace().collect();
        // Whole disks only (partitions would count twice).
        if f.len() > 9
            && !f[2].starts_with("loop")
            && !f[2].starts_with("ram")
            && std::path::Path::new(&format!("/sys/block/{}", f[2])).exists()
        {
            read += f[5].parse::<u64>().unwrap_or(0) * 512;
            written += f[9].parse::<u64>().unwrap_or(0) * 512;
        }
    }
    Counters {
        cpu_busy: total - idle - iowait,
        cpu_iowait: iowait,
        cpu_total: total,
        disk_read: read,
        disk_written: written,
    }
}

fn describe(a: Counters, b: Counters, secs: f64) -> String {
    let dt = (b.cpu_total - a.cpu_total).max(1) as f64;
    format!(
        "CPU {:.0}% busy, {:.0}% iowait (all cores); disk {:.1} MB/s read, {:.1} MB/s written",
        100.0 * (b.cpu_busy - a.cpu_busy) as f64 / dt,
        100.0 * (b.cpu_iowait - a.cpu_iowait) as f64 / dt,
        (b.disk_read - a.disk_read) as f64 / secs / 1e6,
        (b.disk_written - a.disk_written) as f64 / secs / 1e6,
    )
}

#[test]
fn a_node_lost_for_good_is_rebuilt_to_full_redundancy() {
    let total = env_size("TESSERA_HEAL_BYTES", 2 * GIB);
    let mut c = Cluster::start_full(
        7,
        &[
            "--down-after",
            "1s",
            "--out-after",
            "3s",
            // A put must commit within half the grace period (the SDK
            // refuses later commits, whose fragments GC may have taken):
            // the 300 MiB objects need more than the 2 s of tests/gc.rs.
            "--gc-grace",
            "60s",
        ],
        &["--gc-interval", "1s"],
    );
    c.ok(&["bucket", "create", "data", "--policy", "ec:4+2"]);

    let sizes = mixed_sizes(total, 2024);
    let bytes: usize = sizes.iter().map(|s| s.1).sum();
    let put_start = Instant::now();
    let objects = c.put_objects("data", &sizes, 1, &[]);
    let put_secs = put_start.elapsed().as_secs_f64();
    println!(
        "BENCH repair: put {} objects, {} bytes ({:.2} GiB) in {:.1}s ({:.1} MB/s)",
        objects.len(),
        bytes,
        bytes as f64 / GIB as f64,
        put_secs,
        bytes as f64 / put_secs / 1e6
    );

    // What the victim holds, per meta, before it dies; and a cheap check
    // that every committed fragment is on disk before anything failed.
    let victim = 3;
    let victim_id = c.node_id(victim);
    let (mut on_victim, mut on_victim_bytes, mut fragments) = (0u64, 0u64, 0usize);
    for o in &objects {
        let stat = c.json(&["stat", "--json", &o.target]);
        for chunk in stat["placement"].as_array().unwrap() {
            let len = chunk["fragment_len"].as_u64().unwrap();
            for node in chunk["nodes"].as_array().unwrap() {
                if node == victim_id.as_str() {
                    on_victim += 1;
                    on_victim_bytes += len;
                }
            }
        }
        fragments += c.check_fragment_files(&o.target);
    }
    let before = c.status_fresh();
    assert_eq!(
        before["chunks"]["healthy"], before["chunks"]["total"],
        "{before}"
    );
    let chunks_total = before["chunks"]["total"].as_u64().unwrap();
    let rebuilt_before = before["repair"]["rebuilt_fragments"].as_u64().unwrap();
    let rebuilt_bytes_before = before["repair"]["rebuilt_bytes"].as_u64().unwrap();
    println!(
        "{chunks_total} chunks, {fragments} fragment files; node {victim} holds {on_victim} fragments ({on_victim_bytes} bytes)"
    );

    c.kill_node(victim);
    let killed = Instant::now();
    c.wait_for_state(victim, "out");
    let out_at = Instant::now();
    let cnt_out = counters();
    let healed = c.wait_healed(Duration::from_secs(600));
    let heal_secs = out_at.elapsed().as_secs_f64();
    let cnt_healed = counters();

    let rebuilt = healed["repair"]["rebuilt_fragments"].as_u64().unwrap() - rebuilt_before;
    let rebuilt_bytes = healed["repair"]["rebuilt_bytes"].as_u64().unwrap() - rebuilt_bytes_before;
    println!(
        "BENCH repair: kill -> out {:.1}s; out -> full redundancy {:.1}s; rebuilt {rebuilt} fragments, {rebuilt_bytes} bytes = {:.1} MB/s rebuilt ({} bytes of data in {} objects)",
        (out_at - killed).as_secs_f64(),
        heal_secs,
        rebuilt_bytes as f64 / heal_secs / 1e6,
        bytes,
        objects.len()
    );
    println!(
        "BENCH repair: during the repair: {}",
        describe(cnt_out, cnt_healed, heal_secs)
    );
    println!("final: {}", progress_line(&healed));
    assert_eq!(healed["chunks"]["lost"], 0, "{healed}");
    assert_eq!(healed["chunks"]["total"], chunks_total, "{healed}");
    assert!(
        rebuilt >= on_victim,
        "the victim held {on_victim} fragments but only {rebuilt} were rebuilt"
    );
    if rebuilt > on_victim {
        println!("note: {rebuilt} fragments rebuilt for {on_victim} lost");
    }
    if let Some(dead) = c.node_entry(&healed, victim) {
        assert_eq!(dead["state"], "out", "{dead}");
        assert_eq!(
            dead["fragments"], 0,
            "meta still records fragments on the dead node: {dead}"
        );
    }

    // Meta's metrics agree.
    let (line, body) = http_get(c.metrics_addr(None), "/metrics");
    assert!(line.contains("200"), "{line}");
    assert_eq!(
        metric(&body, "tessera_meta_chunks_by_health{health=\"healthy\"}"),
        Some(chunks_total as f64),
        "{body}"
    );
    assert_eq!(
        metric(&body, "tessera_meta_chunks_by_health{health=\"lost\"}"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "tessera_meta_repair_pending_fragments"),
        Some(0.0),
        "{body}"
    );
    let human = c.ok(&["status"]);
    assert!(
        human.contains("chunks:") && human.contains("repair:"),
        "{human}"
    );

    // Placement and fragment files: six distinct live nodes per chunk, every
    // file there and hashing right, nothing on the dead node.
    let check_start = Instant::now();
    let mut checked = 0;
    for o in &objects {
        checked += c.check_fragments(&o.target, &[victim]);
    }
    assert_eq!(checked, fragments, "fragment count changed");
    println!(
        "checked {checked} fragment files in {:.1}s",
        check_start.elapsed().as_secs_f64()
    );

    let get_start = Instant::now();
    c.verify_objects(&objects);
    let get_secs = get_start.elapsed().as_secs_f64();
    println!(
        "BENCH repair: read back {} objects ({bytes} bytes) after repair in {:.1}s ({:.1} MB/s)",
        objects.len(),
        get_secs,
        bytes as f64 / get_secs / 1e6
    );
}
