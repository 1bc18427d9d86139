//! Garbage collection: fragments of deleted objects, of overwritten
//! objects' old versions and of a write that died half-way are deleted once
//! older than the grace period; disk usage returns to exactly what the live
//! objects need, and no live fragment is ever touched.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Cluster, FRAGMENT_HEADER, TestObject, fragment_file_len, random_file};
use rand::{Rng, RngCore, SeedableRng};

const MIB: usize = 1024 * 1024;

/// Fragment files the live objects need, with their lengths (header and
/// body, not a direct write's padding), per meta.
fn expected_files(c: &Cluster, live: &BTreeMap<String, TestObject>) -> BTreeMap<PathBuf, u64> {
    let ids = c.node_ids();
    let mut out = BTreeMap::new();
    for target in live.keys() {
        let stat = c.json(&["stat", "--json", target]);
        for chunk in stat["placement"].as_array().unwrap() {
            let id = chunk["id"].as_str().unwrap();
            let len = chunk["fragment_len"].as_u64().unwrap();
            for (index, node) in chunk["nodes"].as_array().unwrap().iter().enumerate() {
                let i = ids[node.as_str().unwrap()];
                out.insert(c.fragment_path(i, id, index), FRAGMENT_HEADER + len);
            }
        }
    }
    out
}

/// Every fragment file on every node's disk, with its header's and body's
/// length.
fn files_on_disk(c: &Cluster) -> BTreeMap<PathBuf, u64> {
    (0..c.node_count)
        .flat_map(|i| c.fragment_files(i))
        .filter_map(|p| fragment_file_len(&p).map(|len| (p, FRAGMENT_HEADER + len)))
        .collect()
}

/// The chunk id a fragment file belongs to (its name is `<chunk>.<index>`).
fn chunk_of(p: &std::path::Path) -> Option<String> {
    let name = p.file_name()?.to_str()?;
    Some(name.split_once('.')?.0.to_string())
}

fn total(files: &BTreeMap<PathBuf, u64>) -> u64 {
    files.values().sum()
}

#[test]
fn deleted_overwritten_and_failed_write_data_is_collected() {
    let c = Cluster::start_full(6, &["--gc-grace", "2s"], &["--gc-interval", "1s"]);
    c.ok(&["bucket", "create", "ecb", "--policy", "ec:4+2"]);
    c.ok(&["bucket", "create", "repb", "--policy", "rep:3"]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let ec_sizes: Vec<(String, usize)> = (0..10)
        .map(|n| (format!("obj/{n}"), rng.gen_range(MIB..8 * MIB)))
        .collect();
    let rep_sizes: Vec<(String, usize)> = (0..3)
        .map(|n| (format!("obj/{n}"), rng.gen_range(MIB..6 * MIB)))
        .collect();
    let mut live: BTreeMap<String, TestObject> = BTreeMap::new();
    for o in c
        .put_objects("ecb", &ec_sizes, 1, &[])
        .into_iter()
        .chain(c.put_objects("repb", &rep_sizes, 2, &[]))
        .chain(c.put_objects("ecb", &[("inline".to_string(), 300)], 3, &[]))
    {
        live.insert(o.target.clone(), o);
    }

    // Nothing is garbage yet: the disks hold exactly the live fragments.
    // The repairer's first rebalancing pass may move a few fragments of so
    // small a data set (it records a move after the copy is stored, and
    // the old copy is garbage after the grace period), so this waits for
    // the disks to settle rather than looking once.
    let settle = Instant::now();
    let (expected, initial) = loop {
        let expected = expected_files(&c, &live);
        let initial = files_on_disk(&c);
        let missing: Vec<&PathBuf> = expected
            .keys()
            .filter(|p| !initial.contains_key(*p))
            .collect();
        assert!(missing.is_empty(), "live fragments missing: {missing:?}");
        if initial.keys().eq(expected.keys()) || settle.elapsed() > Duration::from_secs(30) {
            break (expected, initial);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        initial.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "fragment files on disk are not those of the live objects"
    );
    assert_eq!(initial, expected, "fragment file sizes differ from meta's");
    let live_chunks: std::collections::BTreeSet<String> =
        expected.keys().filter_map(|p| chunk_of(p)).collect();
    let live_bytes = total(&expected);
    eprintln!("{} live fragment files, {live_bytes} bytes", expected.len());

    // A write that dies half-way: a put from a pipe that sends three chunks
    // and then nothing, SIGKILLed once its first fragments are on disk.
    let err_log = std::fs::File::create(c.path("failed-put.err")).unwrap();
    let mut put = c
        .cli()
        .command(&["put", "-", "ecb/failed"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err_log))
        .spawn()
        .unwrap();
    let mut stdin = put.stdin.take().unwrap();
    let mut block = vec![0u8; MIB];
    for _ in 0..12 {
        rng.fill_bytes(&mut block);
        stdin.write_all(&block).unwrap();
    }
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let orphans = loop {
        let on = files_on_disk(&c);
        // A rebalancing move of a live chunk is not the failed write's.
        let new: Vec<PathBuf> = on
            .keys()
            .filter(|p| !expected.contains_key(*p))
            .filter(|p| chunk_of(p).is_none_or(|id| !live_chunks.contains(&id)))
            .cloned()
            .collect();
        if new.len() >= 6 {
            break new;
        }
        assert!(
            Instant::now() < deadline,
            "the piped put wrote no chunk in 60 s: {}",
            std::fs::read_to_string(c.path("failed-put.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    put.kill().unwrap();
    let exit = put.wait().unwrap();
    drop(stdin);
    assert!(!exit.success(), "the killed put exited 0");
    eprintln!(
        "failed put left {} fragment files before it was killed",
        orphans.len()
    );
    c.fails(&["stat", "ecb/failed"]);
    let peak_after_failed = total(&files_on_disk(&c));

    // Deletes and overwrites.
    let mut deleted = Vec::new();
    for target in [
        "ecb/obj/0",
        "ecb/obj/1",
        "ecb/obj/2",
        "ecb/obj/3",
        "repb/obj/0",
    ] {
        c.ok(&["rm", target]);
        live.remove(target);
        deleted.push(target);
    }
    for (n, target) in [
        "ecb/obj/4",
        "ecb/obj/5",
        "ecb/obj/6",
        "ecb/obj/7",
        "repb/obj/1",
    ]
    .iter()
    .enumerate()
    {
        let src = c.path(&format!("newer-{n}"));
        let len = rng.gen_range(MIB..9 * MIB);
        random_file(&src, len, 500 + n as u64);
        c.ok(&["put", src.to_str().unwrap(), target]);
        live.insert(
            target.to_string(),
            TestObject {
                target: target.to_string(),
                src,
                len,
            },
        );
    }
    let garbage_peak = total(&files_on_disk(&c)).max(peak_after_failed);

    // Collected: exactly the live objects' fragments remain. Where they
    // are is asked afresh each time: the rebalancer may move a fragment
    // meanwhile (it records the move only after the copy is stored, and
    // the old copy is then garbage like any other).
    let want_bytes = total(&expected_files(&c, &live));
    let t = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let expected = expected_files(&c, &live);
        let on = files_on_disk(&c);
        let missing: Vec<&PathBuf> = expected.keys().filter(|p| !on.contains_key(*p)).collect();
        assert!(
            missing.is_empty(),
            "GC deleted fragments of live objects: {missing:?}"
        );
        let extra: Vec<&PathBuf> = on.keys().filter(|p| !expected.contains_key(*p)).collect();
        let tmp: u64 = (0..c.node_count).map(|i| c.tmp_bytes(i)).sum();
        if extra.is_empty() && tmp == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "garbage still on disk after 3 min: {} files ({} bytes) and {tmp} temp bytes: {extra:?}",
            extra.len(),
            extra.iter().map(|p| on[*p]).sum::<u64>()
        );
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "waiting for GC: {} garbage files ({} bytes), {tmp} temp bytes",
                extra.len(),
                extra.iter().map(|p| on[*p]).sum::<u64>()
            );
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let collected_after = t.elapsed();
    // And it stays so (nothing live collected a little later either).
    std::thread::sleep(Duration::from_secs(4));
    let on = files_on_disk(&c);
    let expected = expected_files(&c, &live);
    assert_eq!(on, expected, "fragment files changed after GC settled");
    let per_node: Vec<u64> = (0..c.node_count).map(|i| c.fragment_bytes(i)).collect();
    assert_eq!(per_node.iter().sum::<u64>(), want_bytes);
    eprintln!(
        "fragment bytes: {live_bytes} initially, {garbage_peak} with garbage, {want_bytes} after GC ({:.1}s) = what the live objects need; per node {per_node:?}",
        collected_after.as_secs_f64()
    );

    let objects: Vec<TestObject> = live.values().cloned().collect();
    c.verify_objects(&objects);
    for target in deleted {
        let out = c.path("deleted.out");
        c.fails(&["get", target, out.to_str().unwrap()]);
    }
}
