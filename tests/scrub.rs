//! Deep scrub: 1% of the fragment files of a cluster are corrupted (bytes
//! flipped past the header) or deleted on disk. `tessera scrub now --wait`
//! finds every one of them, repair fixes every one, and every object reads
//! back byte-identical. A scrub of a healthy cluster finds nothing.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Cluster, fragment_body, http_get, metric, progress_line};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const KIB: usize = 1024;

/// `scrub N done: C fragments checked, F problems found` -> (N, C, F).
fn scrub_now(c: &Cluster) -> (u64, u64, u64) {
    let out = c.ok(&["scrub", "now", "--wait"]);
    let line = out
        .lines()
        .find(|l| l.contains("problems found"))
        .unwrap_or_else(|| panic!("no scrub summary line in {out:?}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let num = |w: &str| -> u64 {
        w.trim_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .unwrap_or_else(|_| panic!("unexpected scrub summary {line:?}"))
    };
    match words.as_slice() {
        [
            "scrub",
            n,
            "done:",
            checked,
            "fragments",
            "checked,",
            found,
            "problems",
            "found",
        ] => (num(n), num(checked), num(found)),
        _ => panic!("unexpected scrub summary {line:?}"),
    }
}

fn flip_bytes(path: &std::path::Path, rng: &mut impl Rng) {
    let mut raw = std::fs::read(path).expect("fragment file");
    // Past the 64-byte header: the body is what rots silently.
    let body = fragment_body(&raw);
    assert!(!body.is_empty(), "{}: empty fragment", path.display());
    for off in [body.start, rng.gen_range(body.clone()), body.end - 1] {
        raw[off] ^= 0x5a;
    }
    std::fs::write(path, raw).unwrap();
}

/// A fragment of an object: (object, chunk id, fragment index, node index).
type Frag = (String, String, usize, usize);

fn all_fragments(c: &Cluster, targets: &[String]) -> Vec<Frag> {
    let ids = c.node_ids();
    let mut out = Vec::new();
    for t in targets {
        let stat = c.json(&["stat", "--json", t]);
        for chunk in stat["placement"].as_array().unwrap() {
            let id = chunk["id"].as_str().unwrap();
            for (index, node) in chunk["nodes"].as_array().unwrap().iter().enumerate() {
                out.push((
                    t.clone(),
                    id.to_string(),
                    index,
                    ids[node.as_str().unwrap()],
                ));
            }
        }
    }
    out
}

#[test]
fn deep_scrub_finds_every_damaged_fragment_and_repair_fixes_it() {
    let c = Cluster::start_full(
        7,
        &[
            "--down-after",
            "2s",
            "--out-after",
            "30s",
            "--gc-grace",
            "10s",
        ],
        &["--gc-interval", "1s"],
    );
    c.ok(&["bucket", "create", "data", "--policy", "ec:4+2"]);
    // 64 KiB chunks: a few hundred chunks, over a thousand fragments.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut sizes: Vec<(String, usize)> = (0..14)
        .map(|n| (format!("obj/{n}"), rng.gen_range(200 * KIB..2048 * KIB)))
        .collect();
    sizes.push(("obj/inline".into(), 100));
    let objects = c.put_objects("data", &sizes, 7, &["--chunk-size", "64KiB"]);
    let targets: Vec<String> = objects.iter().map(|o| o.target.clone()).collect();
    let frags = all_fragments(&c, &targets);
    let total = frags.len() as u64;
    let chunks = c.status_fresh()["chunks"]["total"].as_u64().unwrap();
    eprintln!(
        "{} objects, {chunks} chunks, {total} fragments",
        objects.len()
    );
    assert!(total >= 500, "only {total} fragments");

    // A healthy cluster: nothing found, every fragment checked.
    let (seq1, checked1, found1) = scrub_now(&c);
    eprintln!("clean scrub {seq1}: {checked1} checked, {found1} found");
    assert_eq!(found1, 0, "a scrub of a healthy cluster found problems");
    assert_eq!(checked1, total, "the scrub did not check every fragment");

    // Damage 1% (at least 5), at most one fragment per chunk, across nodes.
    let want = ((total / 100) as usize).max(5);
    let mut shuffled = frags.clone();
    shuffled.shuffle(&mut rng);
    let mut seen_chunks = HashSet::new();
    let mut damaged: Vec<(Frag, &str)> = Vec::new();
    for f in shuffled {
        if damaged.len() == want {
            break;
        }
        if !seen_chunks.insert(f.1.clone()) {
            continue;
        }
        let path = c.fragment_path(f.3, &f.1, f.2);
        let how = if damaged.len().is_multiple_of(2) {
            flip_bytes(&path, &mut rng);
            "corrupted"
        } else {
            std::fs::remove_file(&path).unwrap();
            "deleted"
        };
        eprintln!("{how} {} fragment {} on node {} ({})", f.1, f.2, f.3, f.0);
        damaged.push((f, how));
    }
    let nodes_hit: HashSet<usize> = damaged.iter().map(|d| d.0.3).collect();
    eprintln!(
        "damaged {} of {total} fragment files on {} nodes",
        damaged.len(),
        nodes_hit.len()
    );

    // Findings of the scrub that do not match the contract are collected
    // and reported at the end, after the repair has been checked too.
    let mut problems: Vec<String> = Vec::new();
    let (seq2, checked2, found2) = scrub_now(&c);
    eprintln!("scrub {seq2}: {checked2} checked, {found2} found");
    if seq2 <= seq1 {
        problems.push(format!("scrub sequence did not advance: {seq1} -> {seq2}"));
    }
    if found2 != damaged.len() as u64 {
        problems.push(format!(
            "scrub found {found2} problems, {} fragments were damaged",
            damaged.len()
        ));
    }
    // (No exact count here: repair starts on the first reports and moves
    // fragments between nodes while others are still scrubbing.)
    let status = c.status();
    let reported: HashSet<(String, u64)> = status["recent_corrupt"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["chunk"].as_str().unwrap_or("").to_string(),
                        r["index"].as_u64().unwrap_or(u64::MAX),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let unreported: Vec<String> = damaged
        .iter()
        .filter(|(f, _)| !reported.contains(&(f.1.clone(), f.2 as u64)))
        .map(|(f, how)| format!("{how} {} fragment {}", f.1, f.2))
        .collect();
    if !unreported.is_empty() {
        problems.push(format!(
            "damaged fragments missing from status recent_corrupt: {unreported:?}"
        ));
    }
    if status["corrupt_reports"].as_u64().unwrap_or(0) < damaged.len() as u64 {
        problems.push(format!(
            "corrupt_reports {} < {} damaged",
            status["corrupt_reports"],
            damaged.len()
        ));
    }
    let node_found: u64 = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["scrub"]["found"].as_u64().unwrap_or(0))
        .sum();
    if node_found != damaged.len() as u64 {
        problems.push(format!(
            "nodes' scrub.found add up to {node_found}, {} damaged: {}",
            damaged.len(),
            status["nodes"]
        ));
    }
    for n in status["nodes"].as_array().unwrap() {
        if n["scrub"]["seq_done"].as_u64().unwrap_or(0) < seq2 {
            problems.push(format!("node has not finished scrub {seq2}: {n}"));
        }
    }

    // Repair fixes every one: full redundancy, and every fragment meta now
    // records (wherever repair put it) is on disk and hashes right.
    let healed = c.wait_healed(Duration::from_secs(300));
    assert_eq!(healed["chunks"]["lost"], 0, "{healed}");
    assert!(
        healed["repair"]["rebuilt_fragments"].as_u64().unwrap() >= damaged.len() as u64,
        "fewer fragments rebuilt than damaged: {}",
        progress_line(&healed)
    );
    for t in &targets {
        c.check_fragments(t, &[]);
    }
    let now = all_fragments(&c, &targets);
    for ((target, chunk, index, node), how) in &damaged {
        let holder = now
            .iter()
            .find(|f| &f.1 == chunk && f.2 == *index)
            .unwrap_or_else(|| panic!("{target}: chunk {chunk} fragment {index} gone from meta"));
        eprintln!(
            "{how} {chunk} fragment {index}: was on node {node}, now on node {} (file checked)",
            holder.3
        );
    }
    c.verify_objects(&objects);

    // Meta's metrics count every chunk healthy.
    let (line, body) = http_get(c.metrics_addr(None), "/metrics");
    assert!(line.contains("200"), "{line}");
    assert_eq!(
        metric(&body, "tessera_meta_chunks_by_health{health=\"healthy\"}"),
        Some(chunks as f64),
        "{body}"
    );

    // And a scrub after the repair finds nothing left.
    let (seq3, checked3, found3) = scrub_now(&c);
    eprintln!("scrub {seq3} after repair: {checked3} checked, {found3} found");
    if found3 != 0 {
        problems.push(format!("scrub after repair found {found3} problems"));
    }
    assert!(problems.is_empty(), "scrub problems: {problems:#?}");
}
