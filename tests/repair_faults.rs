//! Repair under trouble: a second node dying while the first repair runs, a
//! client loop writing and reading through a failure, and the repairing
//! process (a standalone repairer, or meta with its built-in one) SIGKILLed
//! mid-repair and restarted. Nothing acknowledged is ever lost.
//!
//! The tests of this file run one at a time (a lock): each runs a cluster
//! of 8 processes, and a 2-core machine starved by four of them at once
//! would miss heartbeats and turn healthy nodes `down`.
//! `TESSERA_FAULT_BYTES=64MiB` scales the data sets down.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, TestObject, env_size, progress_line, random_file, same_file};
use rand::{Rng, SeedableRng};
use serde_json::Value;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn data_bytes() -> u64 {
    env_size("TESSERA_FAULT_BYTES", 240 * MIB as u64)
}

/// Objects of 64 KiB .. 8 MiB adding up to `total`.
fn sizes(total: u64, seed: u64) -> Vec<(String, usize)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut left = total as i64;
    let mut n = 0;
    while left > 0 {
        let len = (rng.gen_range(64 * KIB..=8 * MIB) as i64).min(left.max(64 * KIB as i64));
        out.push((format!("obj/{n}"), len as usize));
        left -= len;
        n += 1;
    }
    out
}

fn meta_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--down-after",
        "1s",
        "--out-after",
        "3s",
        // Puts must commit within half of it; 8 MiB puts on a loaded
        // 2-core machine can take a while.
        "--gc-grace",
        "10s",
    ];
    v.extend_from_slice(extra);
    v
}

const NODE_ARGS: [&str; 2] = ["--gc-interval", "1s"];

fn u(s: &Value, a: &str, b: &str) -> u64 {
    s[a][b]
        .as_u64()
        .unwrap_or_else(|| panic!("status has no {a}.{b}: {s}"))
}

/// Waits until repair has rebuilt something and still has work pending;
/// returns that status. Panics if the repair finishes before we catch it
/// mid-way (the test would not test what it says).
fn wait_mid_repair(c: &Cluster) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last_print = Instant::now();
    loop {
        if let Some(s) = c.try_status() {
            let rebuilt = u(&s, "repair", "rebuilt_fragments");
            let pending = u(&s, "repair", "pending_fragments");
            if rebuilt > 0 {
                assert!(
                    pending > 0,
                    "repair finished before the test could interrupt it (lower --repair-rate?): {}",
                    progress_line(&s)
                );
                eprintln!("mid-repair: {}", progress_line(&s));
                return s;
            }
            if last_print.elapsed() > Duration::from_secs(5) {
                eprintln!("waiting for repair to start: {}", progress_line(&s));
                last_print = Instant::now();
            }
        }
        assert!(Instant::now() < deadline, "repair never started");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn setup(c: &Cluster, seed: u64) -> Vec<TestObject> {
    c.ok(&["bucket", "create", "data", "--policy", "ec:4+2"]);
    let t = Instant::now();
    let objects = c.put_objects("data", &sizes(data_bytes(), seed), seed, &[]);
    eprintln!(
        "put {} objects in {:.1}s",
        objects.len(),
        t.elapsed().as_secs_f64()
    );
    objects
}

#[test]
fn two_nodes_killed_one_after_another_lose_nothing() {
    let _serial = serial();
    let mut c = Cluster::start_full(7, &meta_args(&["--repair-rate", "10MiB"]), &NODE_ARGS);
    let objects = setup(&c, 11);

    let (first, second) = (1, 4);
    c.kill_node(first);
    c.wait_for_state(first, "out");
    let mid = wait_mid_repair(&c);
    c.kill_node(second);
    eprintln!(
        "second node killed with {} fragments still pending",
        u(&mid, "repair", "pending_fragments")
    );
    // The most dangerous moment: two nodes gone, the first repair half done.
    c.verify_objects(&objects);

    c.wait_for_state(second, "out");
    // Five nodes are left: ec:4+2 cannot get back to six distinct nodes, but
    // every chunk should get back to five (none at risk) and none is lost.
    std::thread::sleep(common::STATUS_CACHE);
    let settle = Instant::now();
    let mut last_print = Instant::now();
    let settled = loop {
        let s = c.status();
        assert_eq!(u(&s, "chunks", "lost"), 0, "a chunk was lost: {s}");
        if u(&s, "chunks", "at_risk") == 0
            && u(&s, "chunks", "healthy") + u(&s, "chunks", "degraded") == u(&s, "chunks", "total")
        {
            eprintln!(
                "settled after {:.1}s: {}",
                settle.elapsed().as_secs_f64(),
                progress_line(&s)
            );
            break true;
        }
        if settle.elapsed() > Duration::from_secs(300) {
            eprintln!(
                "NOTE: chunks still at risk 5 min after the second node went out: {}",
                progress_line(&s)
            );
            break false;
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!("settling: {}", progress_line(&s));
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    c.verify_objects(&objects);
    let s = c.status();
    assert_eq!(u(&s, "chunks", "lost"), 0, "{s}");

    // A sixth node again: everything gets back to full redundancy.
    let fresh = c.add_node();
    let healed = c.wait_healed(Duration::from_secs(600));
    assert_eq!(u(&healed, "chunks", "lost"), 0, "{healed}");
    for o in &objects {
        c.check_fragments(&o.target, &[first, second]);
    }
    c.verify_objects(&objects);
    eprintln!("node {fresh} added; final: {}", progress_line(&healed));
    assert!(
        settled,
        "with five nodes left, chunks with four fragments were not brought back to five (see NOTE above)"
    );
}

/// What the client loop saw.
#[derive(Default)]
struct LoopReport {
    acked: Vec<TestObject>,
    put_failures: Vec<String>,
    gets: usize,
    get_failures: Vec<String>,
}

#[test]
fn writes_and_reads_go_on_while_a_node_dies_and_repair_runs() {
    let _serial = serial();
    let mut c = Cluster::start_full(7, &meta_args(&["--repair-rate", "20MiB"]), &NODE_ARGS);
    let base = setup(&c, 22);

    let cli = c.cli();
    let dir = c.path("loop");
    std::fs::create_dir_all(&dir).unwrap();
    let stop = AtomicBool::new(false);
    let puts_done = AtomicUsize::new(0);
    let victim = 2;

    let report = std::thread::scope(|scope| {
        let client = scope.spawn(|| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(33);
            let mut r = LoopReport::default();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let len = rng.gen_range(64 * KIB..=8 * MIB);
                let src = dir.join(format!("put-{n}"));
                random_file(&src, len, 1000 + n as u64);
                let target = format!("data/loop/{n}");
                let out = cli.tessera(&["put", src.to_str().unwrap(), &target]);
                if out.status.success() {
                    r.acked.push(TestObject { target, src, len });
                } else {
                    r.put_failures.push(format!(
                        "{target}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                puts_done.fetch_add(1, Ordering::SeqCst);
                // Read back something acknowledged: the newest put, or a
                // random older object.
                let pick = if rng.gen_bool(0.5) || r.acked.is_empty() {
                    &base[rng.gen_range(0..base.len())]
                } else {
                    &r.acked[rng.gen_range(0..r.acked.len())]
                };
                let got = dir.join("get.out");
                let out = cli.tessera(&["get", &pick.target, got.to_str().unwrap()]);
                r.gets += 1;
                if out.status.success() {
                    assert!(
                        same_file(&pick.src, &got),
                        "a get during the loop returned wrong bytes for {}",
                        pick.target
                    );
                } else {
                    r.get_failures.push(format!(
                        "{}: {}",
                        pick.target,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                let _ = std::fs::remove_file(&got);
                n += 1;
            }
            r
        });

        let wait_puts = |at_least: usize| {
            common::wait_until(
                &format!("{at_least} puts in the client loop"),
                Duration::from_secs(300),
                || puts_done.load(Ordering::SeqCst) >= at_least || client.is_finished(),
            )
        };
        wait_puts(3);
        c.kill_node(victim);
        let killed_at = puts_done.load(Ordering::SeqCst);
        c.wait_for_state(victim, "out");
        let healed = c.wait_healed(Duration::from_secs(600));
        let healed_at = puts_done.load(Ordering::SeqCst);
        eprintln!(
            "client loop: {killed_at} puts before the kill, {} during down/out/repair; {}",
            healed_at - killed_at,
            progress_line(&healed)
        );
        wait_puts(healed_at + 3);
        stop.store(true, Ordering::SeqCst);
        client.join().expect("client loop panicked")
    });

    eprintln!(
        "client loop: {} puts acknowledged, {} failed; {} gets, {} failed",
        report.acked.len(),
        report.put_failures.len(),
        report.gets,
        report.get_failures.len()
    );
    for f in &report.put_failures {
        eprintln!("  put failed: {f}");
    }
    assert!(
        report.get_failures.is_empty(),
        "gets of acknowledged objects failed with one node dead: {:#?}",
        report.get_failures
    );
    assert!(!report.acked.is_empty(), "no put was acknowledged");

    // Puts that wrote to the victim just before it died leave work: let
    // repair finish, then every object, old or new, is whole and off the victim.
    c.wait_healed(Duration::from_secs(600));
    for o in base.iter().chain(&report.acked) {
        c.check_fragments(&o.target, &[victim]);
    }
    c.verify_objects(&base);
    c.verify_objects(&report.acked);
}

#[test]
fn a_standalone_repairer_killed_mid_repair_resumes_after_restart() {
    let _serial = serial();
    let mut c = Cluster::start_full(7, &meta_args(&["--no-repair"]), &NODE_ARGS);
    let repairer_args = ["--repair-rate", "10MiB"];
    c.start_repairer(&repairer_args);
    let objects = setup(&c, 44);

    let victim = 5;
    c.kill_node(victim);
    c.wait_for_state(victim, "out");
    wait_mid_repair(&c);
    c.kill_repairer();
    let s1 = c.status();
    std::thread::sleep(Duration::from_secs(3));
    let s2 = c.status();
    eprintln!(
        "repairer killed: {}\n3 s later: {}",
        progress_line(&s1),
        progress_line(&s2)
    );
    assert!(
        u(&s2, "chunks", "healthy") >= u(&s1, "chunks", "healthy"),
        "chunks repaired before the kill lost their repair: {s1} -> {s2}"
    );
    assert!(
        u(&s2, "repair", "rebuilt_fragments") >= u(&s1, "repair", "rebuilt_fragments"),
        "repair progress went backwards: {s1} -> {s2}"
    );
    assert!(
        u(&s2, "repair", "pending_fragments") > 0,
        "no work left for the restarted repairer: {s2}"
    );
    assert_eq!(u(&s2, "chunks", "lost"), 0, "{s2}");
    // Meta runs no repairer of its own (--no-repair): nothing moves now.
    assert!(
        u(&s2, "repair", "pending_fragments") <= u(&s1, "repair", "pending_fragments"),
        "{s1} -> {s2}"
    );

    c.start_repairer(&repairer_args);
    let healed = c.wait_healed(Duration::from_secs(600));
    assert_eq!(u(&healed, "chunks", "lost"), 0, "{healed}");
    assert!(u(&healed, "repair", "rebuilt_fragments") > 0, "{healed}");
    for o in &objects {
        c.check_fragments(&o.target, &[victim]);
    }
    c.verify_objects(&objects);
}

#[test]
fn meta_killed_mid_repair_resumes_after_restart() {
    let _serial = serial();
    let mut c = Cluster::start_full(7, &meta_args(&["--repair-rate", "10MiB"]), &NODE_ARGS);
    let objects = setup(&c, 55);

    let victim = 0;
    c.kill_node(victim);
    c.wait_for_state(victim, "out");
    let s1 = wait_mid_repair(&c);
    c.kill_meta();
    std::thread::sleep(Duration::from_secs(2));
    c.start_meta();
    c.wait_nodes_up(6);
    // A restarted meta counts every known node up for a grace period: only
    // heartbeats keep the six live ones up past --down-after.
    std::thread::sleep(Duration::from_secs(3));
    common::wait_until(
        "the six live nodes heartbeating the restarted meta",
        Duration::from_secs(30),
        || {
            c.try_status().is_some_and(|s| {
                (0..7)
                    .filter(|&i| i != victim)
                    .all(|i| c.node_entry(&s, i).is_some_and(|n| n["state"] == "up"))
            })
        },
    );
    let s2 = c.status();
    eprintln!(
        "meta killed at: {}\nafter restart: {}",
        progress_line(&s1),
        progress_line(&s2)
    );
    assert!(
        u(&s2, "chunks", "healthy") >= u(&s1, "chunks", "healthy"),
        "chunks repaired before the crash lost their repair: {s1} -> {s2}"
    );
    assert_eq!(u(&s2, "chunks", "total"), u(&s1, "chunks", "total"));
    assert_eq!(u(&s2, "chunks", "lost"), 0, "{s2}");

    // The dead node never heartbeats this meta: it must still go out.
    c.wait_for_state_within(victim, "out", Duration::from_secs(120));
    let healed = c.wait_healed(Duration::from_secs(600));
    assert_eq!(u(&healed, "chunks", "lost"), 0, "{healed}");
    for o in &objects {
        c.check_fragments(&o.target, &[victim]);
    }
    c.verify_objects(&objects);
}
