//! A highly available meta: three `tessera meta` replicas (a Raft group),
//! six nodes and an S3 gateway, as separate processes. A client loop of
//! PUTs, GETs and listings runs through the gateway while the meta leader
//! is SIGKILLed, then the next leader, then a follower's data directory is
//! wiped and it rejoins from a snapshot. The recorded history is checked
//! for linearizability (registers written by one writer each, and the set
//! of keys a listing shows), every acknowledged PUT reads back
//! byte-identical, and the longest stretch without a successful write is
//! printed. Further tests fill a follower's disk and stop one for minutes
//! under the same loop, and check that only meta certificates speak Raft
//! or change the group.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use common::{Cluster, SmallDisk, run_ok, wait_until};

const BUCKET: &str = "history";
const WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 3;

/// One operation of the history, with when it began and ended (since the
/// test's start).
#[derive(Debug, Clone)]
enum Op {
    /// A PUT of `seq` to `key`; `ok` when acknowledged (a failed one may or
    /// may not have taken effect).
    Put {
        key: String,
        seq: u64,
        start: Duration,
        end: Duration,
        ok: bool,
    },
    /// A GET of `key` that answered `seq` (0: no such key).
    Get {
        key: String,
        seq: u64,
        start: Duration,
        end: Duration,
    },
    /// A listing that answered `keys`.
    List {
        keys: BTreeSet<String>,
        start: Duration,
        end: Duration,
    },
}

/// The body of write `seq` of `key`: the sequence number first, then bytes
/// derived from both (so a torn or mixed-up body shows), of a size that
/// varies between inline objects and chunked ones.
fn body(key: &str, seq: u64) -> Vec<u8> {
    let len = if seq.is_multiple_of(4) {
        300_000
    } else {
        200 + (seq % 7) as usize * 100
    };
    let mut v = format!("{seq:020}").into_bytes();
    let seed = blake3::hash(format!("{key}/{seq}").as_bytes());
    let mut out = blake3::Hasher::new_keyed(seed.as_bytes()).finalize_xof();
    let mut rest = vec![0u8; len - v.len()];
    out.fill(&mut rest);
    v.extend(rest);
    v
}

/// The sequence number a body carries, checked against the whole body.
fn seq_of(key: &str, data: &[u8]) -> u64 {
    let seq: u64 = std::str::from_utf8(&data[..20.min(data.len())])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{key}: a body without a sequence number"));
    assert!(
        data == body(key, seq),
        "{key}: body of write {seq} is not what was written"
    );
    seq
}

/// Checks the history: for each key (one writer, so its writes are
/// ordered), every read returns a write that had begun before the read
/// ended and is no older than the last write acknowledged before the read
/// began, and of two reads one after the other the later never returns an
/// older write; every listing holds every key acknowledged before it began
/// and no key not yet being written when it ended. For registers with a
/// single writer these are exactly the linearizable histories.
fn check_linearizable(history: &[Op]) {
    let mut writes: BTreeMap<&str, Vec<(u64, Duration, Duration, bool)>> = BTreeMap::new();
    let mut reads: BTreeMap<&str, Vec<(u64, Duration, Duration)>> = BTreeMap::new();
    for op in history {
        match op {
            Op::Put {
                key,
                seq,
                start,
                end,
                ok,
            } => writes
                .entry(key)
                .or_default()
                .push((*seq, *start, *end, *ok)),
            Op::Get {
                key,
                seq,
                start,
                end,
            } => reads.entry(key).or_default().push((*seq, *start, *end)),
            Op::List { .. } => {}
        }
    }
    let mut checked = 0;
    for (key, rs) in &reads {
        let ws = writes.get(key).cloned().unwrap_or_default();
        for &(v, start, end) in rs {
            let floor = ws
                .iter()
                .filter(|w| w.3 && w.2 < start)
                .map(|w| w.0)
                .max()
                .unwrap_or(0);
            assert!(
                v >= floor,
                "{key}: a read from {start:?} to {end:?} returned write {v}, but write {floor} was acknowledged before it began (a stale read)"
            );
            if v > 0 {
                let w = ws
                    .iter()
                    .find(|w| w.0 == v)
                    .unwrap_or_else(|| panic!("{key}: a read returned write {v}, never made"));
                assert!(
                    w.1 < end,
                    "{key}: a read ending at {end:?} returned write {v}, begun at {:?}",
                    w.1
                );
            }
            checked += 1;
        }
        let mut by_end = rs.clone();
        by_end.sort_by_key(|r| r.2);
        for (i, a) in by_end.iter().enumerate() {
            for b in &by_end[i + 1..] {
                if a.2 < b.1 {
                    assert!(
                        b.0 >= a.0,
                        "{key}: a read returned write {} after an earlier read had returned {}",
                        b.0,
                        a.0
                    );
                }
            }
        }
    }
    for op in history {
        if let Op::List { keys, start, end } = op {
            for (key, ws) in &writes {
                let acked_before = ws.iter().any(|w| w.3 && w.2 < *start);
                let begun = ws.iter().any(|w| w.1 < *end);
                if acked_before {
                    assert!(
                        keys.contains(*key),
                        "a listing from {start:?} misses {key}, written before it began"
                    );
                }
                if keys.contains(*key) {
                    assert!(
                        begun,
                        "a listing ending at {end:?} shows {key} before its first write"
                    );
                }
            }
            checked += 1;
        }
    }
    eprintln!(
        "history: {} operations, {checked} reads and listings checked",
        history.len()
    );
}

fn code<E: aws_sdk_s3::error::ProvideErrorMetadata, R>(
    e: &aws_sdk_s3::error::SdkError<E, R>,
) -> Option<String> {
    e.as_service_error()
        .and_then(|s| s.code())
        .map(String::from)
}

async fn writer(
    s3: Client,
    w: usize,
    t0: Instant,
    history: Arc<Mutex<Vec<Op>>>,
    stop: Arc<AtomicBool>,
) {
    let mut seq = BTreeMap::<String, u64>::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("w{w}/k{}", i % KEYS_PER_WRITER);
        i += 1;
        let n = seq.entry(key.clone()).or_insert(0);
        *n += 1;
        let n = *n;
        let start = t0.elapsed();
        let r = s3
            .put_object()
            .bucket(BUCKET)
            .key(&key)
            .body(ByteStream::from(body(&key, n)))
            .send()
            .await;
        let end = t0.elapsed();
        history.lock().unwrap().push(Op::Put {
            key,
            seq: n,
            start,
            end,
            ok: r.is_ok(),
        });
        if r.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn reader(
    s3: Client,
    r: usize,
    t0: Instant,
    history: Arc<Mutex<Vec<Op>>>,
    stop: Arc<AtomicBool>,
) {
    let mut i = r;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let key = format!("w{}/k{}", i % WRITERS, (i / WRITERS) % KEYS_PER_WRITER);
        let start = t0.elapsed();
        let got = match s3.get_object().bucket(BUCKET).key(&key).send().await {
            Ok(out) => match out.body.collect().await {
                Ok(b) => Some(seq_of(&key, &b.into_bytes())),
                Err(_) => None,
            },
            Err(e) if code(&e).as_deref() == Some("NoSuchKey") => Some(0),
            Err(_) => None,
        };
        let end = t0.elapsed();
        match got {
            Some(seq) => history.lock().unwrap().push(Op::Get {
                key,
                seq,
                start,
                end,
            }),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn lister(s3: Client, t0: Instant, history: Arc<Mutex<Vec<Op>>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let start = t0.elapsed();
        match s3.list_objects_v2().bucket(BUCKET).send().await {
            Ok(out) => {
                let end = t0.elapsed();
                let keys = out
                    .contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from))
                    .collect();
                history.lock().unwrap().push(Op::List { keys, start, end });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The longest time between two successful writes (or from the first
/// fault to the next success), in the history.
fn longest_write_gap(history: &[Op]) -> (Duration, Duration) {
    let mut ends: Vec<Duration> = history
        .iter()
        .filter_map(|op| match op {
            Op::Put { ok: true, end, .. } => Some(*end),
            _ => None,
        })
        .collect();
    ends.sort();
    ends.windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max()
        .unwrap_or_default()
}

/// Waits until the group has applied at least `index` log entries.
fn wait_committed(c: &Cluster, index: u64) {
    wait_until(
        &format!("the meta group to apply {index} entries"),
        Duration::from_secs(180),
        || {
            let out = c.tessera(&["meta", "status", "--json"]);
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .is_ok_and(|g| g["committed"].as_u64().is_some_and(|i| i >= index))
        },
    );
}

/// Waits until replica `i` is a caught-up member of the group (its log
/// within a few entries of the leader's).
fn wait_caught_up(c: &Cluster, i: usize) {
    let addr = c.meta_replica_addr(i).to_string();
    wait_until(
        &format!("meta replica {i} to catch up"),
        Duration::from_secs(60),
        || {
            let out = c.tessera(&["meta", "status", "--json"]);
            let Ok(g) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                return false;
            };
            member(&g, &addr).is_some_and(|m| m["lag"].as_u64().is_some_and(|l| l <= 8))
        },
    );
}

/// One test at a time: each runs a cluster and a client load, and two at
/// once on two cores would time out elections needlessly.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A meta group of three, six nodes, a gateway and a client loop on it.
struct Load {
    c: Cluster,
    s3: Client,
    t0: Instant,
    history: Arc<Mutex<Vec<Op>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(meta_args: &[&str]) -> Load {
        let c = Cluster::start_group(3, 6, meta_args);
        let g = c.meta_group();
        assert_eq!(g["members"].as_array().map(Vec::len), Some(3), "{g}");
        let mut c = c;
        let endpoint = c.start_s3();
        let k = c.json(&["key", "create", "history", "--json"]);
        let s3 = tessera_cli::s3_client(
            &endpoint,
            "us-east-1",
            k["access_key"].as_str().unwrap(),
            k["secret_key"].as_str().unwrap(),
        );
        s3.create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("create the bucket");
        let t0 = Instant::now();
        let history = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            tasks.push(tokio::spawn(writer(
                s3.clone(),
                w,
                t0,
                history.clone(),
                stop.clone(),
            )));
        }
        for r in 0..2 {
            tasks.push(tokio::spawn(reader(
                s3.clone(),
                r,
                t0,
                history.clone(),
                stop.clone(),
            )));
        }
        tasks.push(tokio::spawn(lister(
            s3.clone(),
            t0,
            history.clone(),
            stop.clone(),
        )));
        Load {
            c,
            s3,
            t0,
            history,
            stop,
            tasks,
        }
    }

    fn say(&self, what: &str) {
        eprintln!("{:?}: {what}", self.t0.elapsed());
    }

    /// Acknowledged PUTs and answered GETs that began at `since` or later
    /// (time since the loop started).
    fn served_since(&self, since: Duration) -> (usize, usize) {
        let history = self.history.lock().unwrap();
        let puts = history
            .iter()
            .filter(|o| matches!(o, Op::Put { ok: true, start, .. } if *start >= since))
            .count();
        let gets = history
            .iter()
            .filter(|o| matches!(o, Op::Get { start, .. } if *start >= since))
            .count();
        (puts, gets)
    }

    /// Stops the loop, checks the history and reads every key back.
    async fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("a client task");
        }
        let history = self.history.lock().unwrap().clone();
        let puts = history
            .iter()
            .filter(|o| matches!(o, Op::Put { ok: true, .. }))
            .count();
        let failed = history
            .iter()
            .filter(|o| matches!(o, Op::Put { ok: false, .. }))
            .count();
        assert!(puts > 50, "only {puts} PUTs succeeded");
        check_linearizable(&history);
        let (gap, at) = longest_write_gap(&history);
        eprintln!(
            "{puts} PUTs acknowledged, {failed} failed; longest stretch without a successful write: {gap:?} (from {at:?})"
        );
        // Every acknowledged PUT reads back: each key holds its last
        // acknowledged write, or a later one that failed to answer but
        // took effect.
        let mut last: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for op in &history {
            if let Op::Put { key, seq, ok, .. } = op {
                let e = last.entry(key.clone()).or_insert((0, 0));
                if *ok {
                    e.0 = e.0.max(*seq);
                }
                e.1 = e.1.max(*seq);
            }
        }
        for (key, (acked, tried)) in &last {
            let out = self
                .s3
                .get_object()
                .bucket(BUCKET)
                .key(key)
                .send()
                .await
                .expect("read back");
            let seq = seq_of(key, &out.body.collect().await.unwrap().into_bytes());
            assert!(
                seq >= *acked && seq <= *tried,
                "{key} holds write {seq}; acknowledged up to {acked}, tried up to {tried}"
            );
        }
    }
}

/// Drops UDP between one meta replica and the others (both ways) while it
/// lives: the replicas share the cluster's address and differ by port,
/// and Raft's traffic comes from each replica's own port.
struct Cut {
    rules: Vec<Vec<String>>,
}

impl Cut {
    fn new(c: &Cluster, alone: usize, others: &[usize]) -> Cut {
        let ip = c.ip.clone();
        let port = |i: usize| c.meta_replica_addr(i).port().to_string();
        let mut rules = Vec::new();
        for &o in others {
            for (from, to) in [(alone, o), (o, alone)] {
                rules.push(vec![
                    "INPUT".into(),
                    "-p".into(),
                    "udp".into(),
                    "-s".into(),
                    ip.clone(),
                    "--sport".into(),
                    port(from),
                    "-d".into(),
                    ip.clone(),
                    "--dport".into(),
                    port(to),
                    "-j".into(),
                    "DROP".into(),
                ]);
            }
        }
        for r in &rules {
            let out = std::process::Command::new("iptables")
                .arg("-I")
                .args(r)
                .output()
                .expect("run iptables (the test needs it, as root)");
            assert!(
                out.status.success(),
                "iptables: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Cut { rules }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        for r in &self.rules {
            let _ = std::process::Command::new("iptables")
                .arg("-D")
                .args(r)
                .output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_meta_group_survives_leader_deaths_and_a_wiped_replica() {
    let _one = ONE_AT_A_TIME.lock().await;
    const SNAPSHOT_EVERY: u64 = 400;
    let mut load = Load::start(&["--snapshot-every", &SNAPSHOT_EVERY.to_string()]).await;
    let settle = || tokio::time::sleep(Duration::from_secs(3));
    settle().await;
    // The leader dies; then it comes back and the next leader dies.
    for round in 0..2 {
        let leader = load.c.meta_leader();
        load.say(&format!(
            "SIGKILL meta leader, replica {leader} (round {round})"
        ));
        load.c.kill_meta_replica(leader);
        settle().await;
        let next = load.c.meta_leader();
        assert_ne!(next, leader);
        load.say(&format!("replica {next} leads; replica {leader} restarts"));
        load.c.start_meta_replica(leader);
        wait_caught_up(&load.c, leader);
    }
    // A follower loses its disk: it rejoins empty and catches up from a
    // snapshot. The leader keeps `SNAPSHOT_EVERY` entries behind its last
    // snapshot (`raft_config`), so only once its log has passed a second
    // snapshot is the start of the log purged and a snapshot the only way
    // back; on a slow machine the loop may not have written that many yet.
    wait_committed(&load.c, 2 * SNAPSHOT_EVERY + 50);
    let leader = load.c.meta_leader();
    let follower = (0..3).find(|i| *i != leader).unwrap();
    load.say(&format!("wiping follower replica {follower}"));
    load.c.kill_meta_replica(follower);
    std::fs::remove_dir_all(load.c.meta_replica_dir(follower)).expect("wipe the replica");
    settle().await;
    load.c.start_meta_replica(follower);
    wait_caught_up(&load.c, follower);
    assert!(
        load.c
            .meta_replica_dir(follower)
            .join("state-current")
            .exists(),
        "the wiped replica did not install a snapshot"
    );
    settle().await;
    load.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_meta_group_survives_a_partition_a_stopped_replica_and_membership_changes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut load = Load::start(&[]).await;
    let settle = || tokio::time::sleep(Duration::from_secs(3));
    settle().await;
    // The leader is cut off from the other two: they elect a new leader
    // and serve; the old one commits nothing meanwhile.
    let old = load.c.meta_leader();
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    load.say(&format!("cutting leader {old} off from {others:?}"));
    let cut = Cut::new(&load.c, old, &others);
    let mut next = old;
    wait_until(
        "a new leader beyond the cut",
        Duration::from_secs(30),
        || {
            next = load.c.meta_leader();
            next != old
        },
    );
    load.say(&format!("replica {next} leads the majority"));
    settle().await;
    let before = load.history.lock().unwrap().len();
    settle().await;
    let during = load.history.lock().unwrap()[before..]
        .iter()
        .filter(|o| matches!(o, Op::Put { ok: true, .. }))
        .count();
    assert!(
        during > 0,
        "no write succeeded while the old leader was cut off"
    );
    drop(cut);
    load.say("the cut heals");
    wait_caught_up(&load.c, old);
    let g = load.c.meta_group();
    let old_addr = load.c.meta_replica_addr(old).to_string();
    let old_role = member(&g, &old_addr).map(|m| m["role"].clone());
    assert_eq!(old_role, Some(serde_json::json!("follower")), "{g}");

    // A follower is stopped (alive, silent), then resumes and catches up.
    let leader = load.c.meta_leader();
    let paused = (0..3).find(|i| *i != leader).unwrap();
    load.say(&format!("SIGSTOP follower {paused}"));
    load.c.pause_meta_replica(paused, true);
    tokio::time::sleep(Duration::from_secs(8)).await;
    load.c.pause_meta_replica(paused, false);
    load.say(&format!("SIGCONT follower {paused}"));
    wait_caught_up(&load.c, paused);

    // A fourth replica joins, then one of the first three leaves.
    load.c.start_meta_replica(3);
    let new_addr = load.c.meta_replica_addr(3).to_string();
    load.say(&format!("adding replica {new_addr}"));
    load.c.ok(&["meta", "add", &new_addr]);
    wait_caught_up(&load.c, 3);
    let g = load.c.meta_group();
    assert_eq!(g["members"].as_array().map(Vec::len), Some(4), "{g}");
    let leader = load.c.meta_leader();
    let leaving = (0..3).find(|i| *i != leader).unwrap();
    let leaving_addr = load.c.meta_replica_addr(leaving).to_string();
    let id = member(&g, &leaving_addr)
        .and_then(|m| m["id"].as_u64())
        .expect("the leaving replica's id");
    load.say(&format!("removing replica {leaving} (id {id})"));
    load.c.ok(&["meta", "remove", &id.to_string()]);
    let g = load.c.meta_group();
    assert_eq!(g["members"].as_array().map(Vec::len), Some(3), "{g}");
    load.c.kill_meta_replica(leaving);
    settle().await;
    load.finish().await;
}

/// Writes to `path` (appending) until its file system has no space left;
/// returns the bytes written.
fn fill(path: &std::path::Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the fill file");
    let block = vec![0x5a_u8; 1 << 20];
    let mut written = 0;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    written
}

/// What `DIR/state-current` names (the state installed from the last
/// snapshot received), or "" before any.
fn installed_state(c: &Cluster, i: usize) -> String {
    std::fs::read_to_string(c.meta_replica_dir(i).join("state-current")).unwrap_or_default()
}

/// The member at `addr` in a `meta status --json`.
fn member<'a>(g: &'a serde_json::Value, addr: &str) -> Option<&'a serde_json::Value> {
    g["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["addr"] == addr)
}

/// Replica `i`'s match index and lag as the leader reports them.
fn replica_lag(c: &Cluster, i: usize) -> (serde_json::Value, serde_json::Value) {
    let g = c.meta_group();
    let m = member(&g, &c.meta_replica_addr(i).to_string())
        .cloned()
        .unwrap_or_default();
    (m["match_index"].clone(), m["lag"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_meta_group_survives_a_full_disk_and_a_follower_stopped_for_minutes() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Snapshots every 200 entries: a replica stopped for minutes finds the
    // log it missed purged behind a snapshot (and on a full disk, should
    // its appends land in space RocksDB preallocated, the next snapshot
    // fails soon).
    let mut load = Load::start(&["--snapshot-every", "200"]).await;
    let settle = || tokio::time::sleep(Duration::from_secs(3));
    settle().await;

    // A follower's data directory moves onto a small disk of its own.
    let leader = load.c.meta_leader();
    let full = (0..3).find(|i| *i != leader).unwrap();
    let dir = load.c.meta_replica_dir(full);
    load.say(&format!(
        "moving follower {full}'s data onto a 512 MiB tmpfs"
    ));
    load.c.kill_meta_replica(full);
    let aside = dir.with_extension("before");
    std::fs::rename(&dir, &aside).expect("move the replica's data aside");
    std::fs::create_dir(&dir).expect("mount point");
    let _disk = SmallDisk::mount(&dir, "512m");
    run_ok(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(aside.join("."))
            .arg(&dir),
    );
    load.c.start_meta_replica(full);
    wait_caught_up(&load.c, full);

    // Its disk fills: it stops with a clear message; the others serve.
    let filler = dir.join("fill");
    let filled_at = load.t0.elapsed();
    let bytes = tokio::task::spawn_blocking({
        let filler = filler.clone();
        move || fill(&filler)
    })
    .await
    .unwrap();
    load.say(&format!("filled follower {full}'s disk ({bytes} bytes)"));
    let mut status = None;
    wait_until(
        "the replica on the full disk to stop",
        Duration::from_secs(120),
        || {
            status = load.c.meta_replica_exited(full);
            status.is_some()
        },
    );
    let stopped_after = load.t0.elapsed() - filled_at;
    let status = status.unwrap();
    let log = load.c.meta_replica_log(full);
    let message = log
        .lines()
        .find(|l| l.starts_with("error: meta replica stopped"))
        .unwrap_or_else(|| panic!("no clear message in the replica's log:\n{log}"));
    load.say(&format!(
        "replica {full} stopped {stopped_after:?} after the fill ({status}): {message}"
    ));
    assert_eq!(status.code(), Some(1), "{message}");
    assert!(message.contains(&dir.display().to_string()), "{message}");
    assert!(message.contains("No space left on device"), "{message}");
    settle().await;
    let (puts, gets) = load.served_since(filled_at);
    load.say(&format!(
        "while follower {full}'s disk was full: {puts} PUTs acknowledged, {gets} GETs answered"
    ));
    assert!(puts > 0 && gets > 0, "the group stopped serving");

    // Restarted on the still full disk, it waits for space.
    fill(&filler);
    let logged = log.len();
    load.c.start_meta_replica(full);
    wait_until(
        "the restarted replica to wait for space",
        Duration::from_secs(60),
        || load.c.meta_replica_log(full)[logged..].contains("waiting for space"),
    );
    assert_eq!(load.c.meta_replica_exited(full), None);
    load.say(&format!("replica {full} waits for space; freeing it"));
    std::fs::remove_file(&filler).expect("free the space");
    let freed = Instant::now();
    wait_caught_up(&load.c, full);
    let disk_catch_up = freed.elapsed();
    load.say(&format!(
        "replica {full} caught up {disk_catch_up:?} after space was freed"
    ));

    // A follower stopped for two minutes falls behind the purged log and
    // catches up from a snapshot.
    let leader = load.c.meta_leader();
    let paused = (0..3).find(|i| *i != leader).unwrap();
    let state_before = installed_state(&load.c, paused);
    load.say(&format!("SIGSTOP follower {paused} for 120 s"));
    let paused_at = load.t0.elapsed();
    load.c.pause_meta_replica(paused, true);
    tokio::time::sleep(Duration::from_secs(120)).await;
    let (match_index, lag) = replica_lag(&load.c, paused);
    load.c.pause_meta_replica(paused, false);
    let resumed = Instant::now();
    load.say(&format!(
        "SIGCONT follower {paused}: match index {match_index}, lag {lag}"
    ));
    wait_caught_up(&load.c, paused);
    let pause_catch_up = resumed.elapsed();
    let (puts, gets) = load.served_since(paused_at);
    load.say(&format!(
        "replica {paused} caught up {pause_catch_up:?} after SIGCONT; meanwhile {puts} PUTs acknowledged, {gets} GETs answered"
    ));
    assert!(
        lag.as_u64().is_some_and(|l| l > 200),
        "the stopped replica was only {lag} entries behind: no snapshot was needed"
    );
    assert_ne!(
        installed_state(&load.c, paused),
        state_before,
        "the replica stopped for minutes did not install a snapshot"
    );
    eprintln!(
        "catch-up: {disk_catch_up:?} after the full disk was freed, {pause_catch_up:?} after 120 s stopped"
    );
    settle().await;
    load.finish().await;
}

/// Sends `req` to the replica at `addr` alone, as the holder of `identity`.
async fn ask_as(
    identity: &tessera_net::Identity,
    addr: std::net::SocketAddr,
    req: tessera_proto::MetaRequest,
) -> Result<tessera_proto::MetaResponse, tessera_meta_client::MetaCallError> {
    let endpoint = tessera_net::Endpoint::client(identity).expect("client endpoint");
    tessera_meta_client::MetaClient::new(endpoint, addr, Duration::from_millis(100))
        .call(req)
        .await
}

/// The wire error code of a refused call.
fn refused_code(
    r: &Result<tessera_proto::MetaResponse, tessera_meta_client::MetaCallError>,
) -> Option<tessera_proto::ErrorCode> {
    match r {
        Err(tessera_meta_client::MetaCallError::Refused(e)) => Some(e.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_meta_certificates_speak_raft_or_change_the_group() {
    use tessera_net::role;
    use tessera_proto::{ErrorCode, GroupRequest, MetaRequest, RaftMessage};
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::start_group(3, 0, &[]);

    // `tessera meta status --json`: exactly the fields the issue names.
    let g = c.meta_group();
    let keys = |v: &serde_json::Value| -> BTreeSet<String> {
        v.as_object().expect("an object").keys().cloned().collect()
    };
    let names = |n: &[&str]| -> BTreeSet<String> { n.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        keys(&g),
        names(&["leader", "term", "committed", "members"]),
        "{g}"
    );
    let members = g["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{g}");
    for m in members {
        assert_eq!(
            keys(m),
            names(&["id", "addr", "role", "match_index", "lag"]),
            "{g}"
        );
        assert!(m["id"].is_u64() && m["addr"].is_string(), "{g}");
        assert!(
            ["leader", "follower"].contains(&m["role"].as_str().unwrap_or("")),
            "{g}"
        );
    }
    let leaders: Vec<_> = members.iter().filter(|m| m["role"] == "leader").collect();
    assert_eq!(leaders.len(), 1, "{g}");
    assert_eq!(leaders[0]["id"], g["leader"], "{g}");
    assert_eq!(leaders[0]["lag"], 0, "{g}");
    assert!(g["term"].as_u64().is_some_and(|t| t >= 1), "{g}");
    assert!(g["committed"].is_u64(), "{g}");

    // Certificates of each role, from the cluster's CA.
    let cfg = tessera_sdk::ClusterConfig::load(&c.cluster_file).expect("cluster file");
    let ca = cfg
        .ca()
        .expect("CA")
        .expect("the test's cluster file holds ca_key");
    let ca_pem = cfg.ca_cert_pem().expect("CA certificate");
    let identity = |cn: &str| {
        let (cert, key) = ca.issue(cn).expect("issue");
        tessera_net::Identity::from_pem(&ca_pem, &cert, &key).expect("identity")
    };
    let garbage = || {
        [
            RaftMessage::AppendEntries(vec![1, 2, 3]),
            RaftMessage::Vote(vec![1, 2, 3]),
            RaftMessage::InstallSnapshot(vec![1, 2, 3]),
        ]
    };
    for cn in [role::NODE, role::CLIENT] {
        let id = identity(cn);
        for i in 0..3 {
            for msg in garbage() {
                let r = ask_as(&id, c.meta_replica_addr(i), MetaRequest::Raft(msg)).await;
                assert_eq!(
                    refused_code(&r),
                    Some(ErrorCode::Forbidden),
                    "{cn} to {i}: {r:?}"
                );
            }
        }
        let leader = c.meta_replica_addr(c.meta_leader());
        let add = GroupRequest::Add {
            addr: c.meta_replica_addr(3).to_string(),
        };
        let remove = GroupRequest::Remove {
            id: members[0]["id"].as_u64().unwrap(),
        };
        for req in [add, remove] {
            let r = ask_as(&id, leader, MetaRequest::Group(req.clone())).await;
            assert_eq!(
                refused_code(&r),
                Some(ErrorCode::Forbidden),
                "{cn}: {req:?}: {r:?}"
            );
        }
        // Reading the group's status needs no role.
        let r = ask_as(&id, leader, MetaRequest::Group(GroupRequest::Status)).await;
        assert!(r.is_ok(), "{cn}: status: {r:?}");
    }
    // A meta certificate gets past the check (its garbage is then refused
    // as garbage).
    let meta = identity(role::META);
    for i in 0..3 {
        for msg in garbage() {
            let r = ask_as(&meta, c.meta_replica_addr(i), MetaRequest::Raft(msg)).await;
            assert_eq!(
                refused_code(&r),
                Some(ErrorCode::BadRequest),
                "meta to {i}: {r:?}"
            );
        }
    }
    let g = c.meta_group();
    assert_eq!(g["members"].as_array().map(Vec::len), Some(3), "{g}");

    // The CLI with a cluster file without the CA's key has only a client
    // certificate: it reads the group but may not change it, and says why.
    let text = std::fs::read_to_string(&c.cluster_file).expect("cluster file");
    let client_only = c.cluster_file.with_file_name("client-only.toml");
    let without_key: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("ca_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&client_only, without_key).expect("client-only cluster file");
    let cli = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .args(args)
            .env("TESSERA_CLUSTER", &client_only)
            .env("TESSERA_LOG", "error")
            .output()
            .expect("run tessera")
    };
    assert!(cli(&["meta", "status", "--json"]).status.success());
    let id = members[0]["id"].as_u64().unwrap().to_string();
    let out = cli(&["meta", "remove", &id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a client certificate removed a replica"
    );
    assert!(
        stderr.contains("meta certificate") && stderr.contains("ca_key"),
        "{stderr}"
    );
    eprintln!("without ca_key: {}", stderr.trim());

    // With the CA's key the CLI issues itself a meta certificate: an
    // operator adds and removes replicas as before.
    c.start_meta_replica(3);
    let new_addr = c.meta_replica_addr(3).to_string();
    c.ok(&["meta", "add", &new_addr]);
    wait_caught_up(&c, 3);
    let new_id = member(&c.meta_group(), &new_addr)
        .and_then(|m| m["id"].as_u64())
        .expect("the new replica's id");
    c.ok(&["meta", "remove", &new_id.to_string()]);
    let g = c.meta_group();
    assert_eq!(g["members"].as_array().map(Vec::len), Some(3), "{g}");
}
