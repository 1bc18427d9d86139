//! `tessera mount` (issue 6) on the real kernel FUSE, mounting buckets of a
//! local multi-process cluster and driven with the tools people use on
//! files: a 2,000-file tree copied in and out with `cp -r`, `rsync -a` and
//! `tar`; 10,000 random writes, truncates, appends and reads checked
//! against a local file; a directory of 10,000 files renamed under two
//! listing processes; the same objects seen through the mount and through
//! S3 (aws-cli) and through a second mount (close-to-open); a node
//! SIGKILLed while reading and writing; a 1-byte write into a 1 GiB file
//! that must rewrite one chunk, not the file; and modes, owners, mtimes,
//! symlinks, rename over a file and statfs, kept across a remount.
//!
//! Sizes and counts can be lowered for a quick local run (TESSERA_FUSE_OPS,
//! TESSERA_FUSE_SEED, TESSERA_FUSE_TREE_FILES, TESSERA_FUSE_TREE_BIG,
//! TESSERA_FUSE_RENAME_FILES, TESSERA_FUSE_KILL_BYTES,
//! TESSERA_FUSE_ONE_BYTE_FILE); CI runs the defaults.
//!
//! errno checks live in tests/fuse_errors.rs. Every mount is a
//! `common::Mount`: unmounted with SIGTERM at the end of a passing test,
//! and never left behind by a failing one.

mod common;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    Aws, Cluster, close_file, env_size, forget_cached, random_file, run_ok, same_file, tail_lines,
};
use rand::{Rng, RngCore, SeedableRng};

const MIB: u64 = 1 << 20;
/// The mount's default chunk size.
const CHUNK: u64 = 4 * MIB;

fn secs(t: Instant) -> String {
    format!("{:.1}s", t.elapsed().as_secs_f64())
}

/// Copies `src` to `dst` (a path in the mount) in 1 MiB writes and checks
/// close(2): on the mount, close is where the data becomes durable.
fn write_through(src: &Path, dst: &Path) {
    let mut from = File::open(src).expect("open source");
    let mut to = File::create(dst).unwrap_or_else(|e| panic!("create {}: {e}", dst.display()));
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = from.read(&mut buf).expect("read source");
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("write {}: {e}", dst.display()));
    }
    close_file(to).unwrap_or_else(|e| panic!("close {}: {e}", dst.display()));
}

/// Reads `path` from the file system (its cached pages dropped first) and
/// compares it with `want`; the first differing offset otherwise.
fn check_uncached(path: &Path, want: &Path) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    forget_cached(&f);
    compare_readers(f, File::open(want).expect("open reference"))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Compares two streams block by block: Err names the first difference.
fn compare_readers(mut a: impl Read, mut b: impl Read) -> Result<(), String> {
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut off = 0u64;
    loop {
        let na = read_fully(&mut a, &mut ba).map_err(|e| format!("read at {off}: {e}"))?;
        let nb = read_fully(&mut b, &mut bb).map_err(|e| format!("reference at {off}: {e}"))?;
        if let Some(i) = (0..na.min(nb)).find(|&i| ba[i] != bb[i]) {
            return Err(format!(
                "differs at byte {}: {:#04x}, want {:#04x}",
                off + i as u64,
                ba[i],
                bb[i]
            ));
        }
        if na != nb {
            return Err(format!(
                "length differs: {} bytes, want {}",
                off + na as u64,
                off + nb as u64
            ));
        }
        if na == 0 {
            return Ok(());
        }
        off += na as u64;
    }
}

/// Fills `buf` unless the stream ends first; returns the bytes read.
fn read_fully(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// pread until `len` bytes or end of file.
fn read_full_at(f: &File, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = f.read_at(&mut buf[got..], off + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    Ok(buf)
}

/// `tessera ls -r BUCKET/PREFIX`: key -> size.
fn objects(c: &Cluster, target: &str) -> BTreeMap<String, u64> {
    c.ok(&["ls", "-r", target])
        .lines()
        .filter(|l| l.len() > 19)
        .map(|l| {
            // "YYYY-MM-DD HH:MM:SS" then the right-aligned size, then the key.
            let (size, key) = l[19..]
                .trim_start()
                .split_once(' ')
                .unwrap_or_else(|| panic!("ls line {l:?}"));
            (key.to_string(), size.parse().expect("ls size"))
        })
        .collect()
}

/// Every regular file under `root`: relative path -> size.
fn local_files(root: &Path) -> BTreeMap<String, u64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("dir entry");
            let t = e.file_type().expect("file type");
            if t.is_dir() {
                walk(root, &e.path(), out);
            } else if t.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into();
                out.insert(rel, e.metadata().expect("metadata").len());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn total_fragment_bytes(c: &Cluster) -> u64 {
    (0..c.node_count)
        .map(|i| c.fragment_bytes(i) + c.tmp_bytes(i))
        .sum()
}

// ---------------------------------------------------------------------------
// 1. A tree of 2,000 files in and out with cp -r, rsync -a and tar.

/// A seeded tree: `files` files, mostly 0..64 KiB, in nested directories
/// (names with spaces and non-ASCII letters among them), one empty
/// directory, and two files over 100 MiB. Returns the bytes written.
fn make_tree(root: &Path, files: usize, big: u64, seed: u64) -> u64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    std::fs::create_dir_all(root.join("big")).unwrap();
    let mut total = 0u64;
    random_file(&root.join("big/one.bin"), (big + 3) as usize, seed + 1);
    random_file(&root.join("big/two.bin"), (big + 12_345) as usize, seed + 2);
    total += 2 * big + 12_348;
    let mut buf = vec![0u8; 64 << 10];
    for i in 0..files - 2 {
        let dir = match i % 10 {
            0 => PathBuf::new(),
            1 => PathBuf::from(format!("deep/a/b/c/d/e/f{}", i % 3)),
            2 => PathBuf::from(format!("naïve dir {}", i % 4)),
            _ => PathBuf::from(format!("d{:02}/s{}", i % 17, i % 5)),
        };
        std::fs::create_dir_all(root.join(&dir)).unwrap();
        // 2% empty files; the rest 1 byte .. 64 KiB.
        let len = if rng.gen_ratio(1, 50) {
            0
        } else {
            rng.gen_range(1..=64 << 10)
        };
        rng.fill_bytes(&mut buf[..len]);
        let name = if i % 97 == 0 {
            format!("file {i} with spaces é.txt")
        } else {
            format!("f{i:04}.bin")
        };
        std::fs::write(root.join(&dir).join(name), &buf[..len]).unwrap();
        total += len as u64;
    }
    total
}

/// `diff -r a b` must find nothing.
fn diff_r(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .expect("run diff");
    assert!(
        out.status.success(),
        "diff -r {} {} ({}):\n{}{}",
        a.display(),
        b.display(),
        out.status,
        tail_lines(&String::from_utf8_lossy(&out.stdout), 40),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// BLAKE3 of `tar c --sort=name ARGS -C dir .`, and its length.
fn tar_hash(dir: &Path, args: &[&str]) -> (String, u64) {
    let mut child = Command::new("tar")
        .args([
            "c",
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
        ])
        .args(args)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tar");
    let mut out = child.stdout.take().unwrap();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut len = 0u64;
    loop {
        let n = out.read(&mut buf).expect("read tar output");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    let done = child.wait_with_output().expect("wait for tar");
    assert!(
        done.status.success(),
        "tar c of {} failed ({}): {}",
        dir.display(),
        done.status,
        String::from_utf8_lossy(&done.stderr)
    );
    (hasher.finalize().to_hex().to_string(), len)
}

/// `tar tv` of the same archive: names, modes, sizes, mtimes, for a
/// readable difference when two archives differ.
fn tar_listing(dir: &Path, args: &[&str]) -> Vec<String> {
    let script = format!(
        "tar c --sort=name --owner=0 --group=0 --numeric-owner {} -C \"$1\" . | tar tv --numeric-owner --full-time",
        args.join(" ")
    );
    run_ok(Command::new("bash").args(["-c", &script, "tar"]).arg(dir))
        .lines()
        .map(str::to_string)
        .collect()
}

fn assert_same_tar(a: &Path, b: &Path, args: &[&str], what: &str) {
    let (ha, la) = tar_hash(a, args);
    let (hb, lb) = tar_hash(b, args);
    if ha != hb {
        let (ta, tb) = (tar_listing(a, args), tar_listing(b, args));
        let diffs: Vec<String> = ta
            .iter()
            .zip(&tb)
            .filter(|(x, y)| x != y)
            .take(10)
            .map(|(x, y)| format!("  {x}\n  {y}"))
            .collect();
        panic!(
            "{what}: tar streams differ ({la} vs {lb} bytes; {} vs {} entries); first differing entries:\n{}",
            ta.len(),
            tb.len(),
            diffs.join("\n")
        );
    }
}

#[test]
fn a_tree_copies_in_and_out_with_cp_rsync_and_tar() {
    let t0 = Instant::now();
    let c = Cluster::start(6);
    c.ok(&["bucket", "create", "tree", "--policy", "ec:4+2"]);
    let src = c.path("src-tree");
    let files = env_size("TESSERA_FUSE_TREE_FILES", 2_000) as usize;
    let big = env_size("TESSERA_FUSE_TREE_BIG", 101 * MIB);
    let bytes = make_tree(&src, files, big, 2026);
    let want = local_files(&src);
    assert_eq!(want.len(), files);
    eprintln!(
        "tree: {files} files, {} MiB, made in {}",
        bytes >> 20,
        secs(t0)
    );
    let m = c.mount("tree", &[]);

    // In with cp -r: the whole tree, directories created on the way.
    let t = Instant::now();
    run_ok(Command::new("cp").arg("-r").arg(&src).arg(m.join("cp")));
    eprintln!("cp -r into the mount: {}", secs(t));
    let t = Instant::now();
    diff_r(&src, &m.join("cp"));
    eprintln!("diff -r: {}", secs(t));

    // In with rsync -a (which also sets modes, owners and mtimes). A second
    // run must find nothing to do: sizes, mtimes and modes stuck.
    let t = Instant::now();
    run_ok(
        Command::new("rsync")
            .arg("-a")
            .arg(format!("{}/", src.display()))
            .arg(format!("{}/", m.join("rs").display())),
    );
    eprintln!("rsync -a into the mount: {}", secs(t));
    diff_r(&src, &m.join("rs"));
    // A new mount process: from here on, reads show what the cluster kept
    // (data, modes, mtimes), not what the first mount or the kernel cached.
    m.unmount();
    let m = c.mount("tree", &[]);
    let again = run_ok(
        Command::new("rsync")
            .args(["-a", "--dry-run", "--itemize-changes"])
            .arg(format!("{}/", src.display()))
            .arg(format!("{}/", m.join("rs").display())),
    );
    assert!(
        again.trim().is_empty(),
        "a second rsync -a would change these (attributes not kept by the mount):\n{}",
        tail_lines(&again, 20)
    );

    // The object view: one object per file, at its path, with its size;
    // directories (the empty one included) are not objects.
    for dir in ["cp", "rs"] {
        let got: BTreeMap<String, u64> = objects(&c, &format!("tree/{dir}/"))
            .into_iter()
            .map(|(k, v)| (k[dir.len() + 1..].to_string(), v))
            .collect();
        if got != want {
            let missing: Vec<_> = want
                .keys()
                .filter(|k| !got.contains_key(*k))
                .take(5)
                .collect();
            let extra: Vec<_> = got
                .keys()
                .filter(|k| !want.contains_key(*k))
                .take(5)
                .collect();
            let sized: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
                .take(5)
                .collect();
            panic!(
                "objects under tree/{dir}/ differ from the files copied: {} objects for {} files; missing {missing:?}, extra {extra:?}, wrong sizes {sized:?}",
                got.len(),
                want.len()
            );
        }
    }

    // Out again, with both tools, from both copies.
    let out = c.path("out");
    std::fs::create_dir_all(&out).unwrap();
    let t = Instant::now();
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(m.join("rs"))
            .arg(out.join("cp")),
    );
    diff_r(&src, &out.join("cp"));
    run_ok(
        Command::new("rsync")
            .arg("-a")
            .arg(format!("{}/", m.join("cp").display()))
            .arg(format!("{}/", out.join("rs").display())),
    );
    diff_r(&src, &out.join("rs"));
    eprintln!("cp -r and rsync -a out of the mount, diffs: {}", secs(t));

    // tar. Archives hold names, sizes, modes, mtimes and owners, so the
    // comparisons are byte for byte with owners normalised (--owner=0
    // --group=0 --numeric-owner): the rsync -a copy kept modes and mtimes,
    // so its archive must equal the source's as is; the cp -r copy has new
    // mtimes (modes come from the source under the same umask), so both
    // sides are archived with --mtime=@0. A difference prints the first
    // differing `tar tv` lines.
    let t = Instant::now();
    assert_same_tar(
        &src,
        &m.join("rs"),
        &[],
        "source vs rsync -a copy in the mount",
    );
    assert_same_tar(
        &src,
        &m.join("cp"),
        &["--mtime=@0"],
        "source vs cp -r copy in the mount",
    );
    eprintln!("tar of both copies: {}", secs(t));
    // And tar through the mount the other way: extracting into it.
    let t = Instant::now();
    let script = "tar c -C \"$1\" . | tar x -C \"$2\"";
    std::fs::create_dir(m.join("tarx")).expect("mkdir tarx in the mount");
    run_ok(
        Command::new("bash")
            .args(["-c", script, "tar"])
            .arg(&src)
            .arg(m.join("tarx")),
    );
    diff_r(&src, &m.join("tarx"));
    eprintln!("tar x into the mount: {}", secs(t));

    // The big files read back through the SDK path, not only the mount.
    let got = c.path("big.out");
    c.ok(&["get", "tree/cp/big/two.bin", got.to_str().unwrap()]);
    assert!(same_file(&src.join("big/two.bin"), &got));
    m.unmount();
    eprintln!("tree test: {}", secs(t0));
}

// ---------------------------------------------------------------------------
// 2. Random operations against a local reference file.

/// One file under test: its handle in the mount and on local disk.
struct Pair {
    name: String,
    mnt_path: PathBuf,
    ref_path: PathBuf,
    mnt: File,
    reference: File,
    len: u64,
}

fn open_rw(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

impl Pair {
    /// close(2) both (checked on the mount) and open them again, with the
    /// mount's cached pages dropped so reads go to the mount process.
    fn reopen(&mut self) -> std::io::Result<()> {
        let mnt = std::mem::replace(&mut self.mnt, File::open("/dev/null").unwrap());
        close_file(mnt)?;
        self.mnt = open_rw(&self.mnt_path);
        forget_cached(&self.mnt);
        self.reference = open_rw(&self.ref_path);
        Ok(())
    }
}

/// A length from 1 byte to 1 MiB, log-uniform: mostly small, sometimes large.
fn random_len(rng: &mut impl Rng) -> u64 {
    let bits = rng.gen_range(0..=20u32);
    rng.gen_range(1..=1u64 << bits)
}

/// An offset in 0..=limit, a quarter of the time near a chunk boundary.
fn random_offset(rng: &mut impl Rng, limit: u64) -> u64 {
    if limit >= CHUNK && rng.gen_ratio(1, 4) {
        let k = rng.gen_range(1..=limit / CHUNK);
        let jitter = rng.gen_range(0..128u64 << 10);
        (k * CHUNK + jitter).saturating_sub(64 << 10).min(limit)
    } else {
        rng.gen_range(0..=limit)
    }
}

fn fail_op(seed: u64, recent: &[String], msg: String) -> ! {
    panic!(
        "{msg}\nlast operations (seed {seed}):\n  {}",
        recent.join("\n  ")
    )
}

#[test]
fn random_operations_match_a_local_file() {
    let t0 = Instant::now();
    let ops = env_size("TESSERA_FUSE_OPS", 10_000);
    let seed = env_size("TESSERA_FUSE_SEED", 6);
    // Sizes stay in the tens of MiB so that operations cross the 4 MiB
    // chunk boundaries often; flushes (fsync, close) are rare enough that
    // many writes land in each rewritten chunk, which keeps the run short.
    const MAX_LEN: u64 = 40 * MIB;
    const CHECKPOINT: u64 = 2_500;
    eprintln!("random operations: {ops}, seed {seed} (TESSERA_FUSE_OPS, TESSERA_FUSE_SEED)");
    // Every flush rewrites the chunks it touches and leaves the old ones to
    // garbage collection: a short grace keeps the nodes' disks from filling
    // with thousands of replaced chunks (and has GC run under the mount).
    let c = Cluster::start_full(6, &["--gc-grace", "2s"], &["--gc-interval", "1s"]);
    c.ok(&["bucket", "create", "rand", "--policy", "ec:4+2"]);
    let mut m = c.mount("rand", &[]);
    let local = c.path("reference");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::create_dir_all(m.join("sub/deeper")).expect("mkdir -p in the mount");

    let mut pairs: Vec<Pair> = ["f0", "sub/f1", "sub/deeper/f2"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let ref_path = local.join(name.replace('/', "_"));
            let len = [9 * MIB + 17, 17 * MIB, 26 * MIB - 5][i];
            random_file(&ref_path, len as usize, seed * 10 + i as u64);
            let mnt_path = m.join(name);
            write_through(&ref_path, &mnt_path);
            Pair {
                name: name.to_string(),
                mnt: open_rw(&mnt_path),
                reference: open_rw(&ref_path),
                mnt_path,
                ref_path,
                len,
            }
        })
        .collect();

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // The last operations, for the failure message.
    let mut recent: Vec<String> = Vec::new();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut data = vec![0u8; MIB as usize];
    for op in 0..ops {
        let f = rng.gen_range(0..pairs.len());
        let p = &mut pairs[f];
        let roll = rng.gen_range(0..1000u32);
        let kind = match roll {
            0..=379 => "write",
            380..=479 => "append",
            480..=539 => "truncate",
            540..=929 => "read",
            930..=989 => "stat",
            990..=994 => "fsync",
            _ => "reopen",
        };
        *counts.entry(kind).or_default() += 1;
        match kind {
            "write" | "append" => {
                let len = random_len(&mut rng).min(MAX_LEN);
                let off = if kind == "append" && p.len + len <= MAX_LEN {
                    p.len
                } else {
                    // Up to 1 MiB past the end: the gap must read as zeros.
                    random_offset(&mut rng, (p.len + MIB).min(MAX_LEN - len))
                };
                let buf = &mut data[..len as usize];
                rng.fill_bytes(buf);
                recent.push(format!(
                    "#{op} {} {kind} {len} @ {off} (len {})",
                    p.name, p.len
                ));
                p.reference.write_all_at(buf, off).expect("write reference");
                if let Err(e) = p.mnt.write_all_at(buf, off) {
                    fail_op(seed, &recent, format!("write to the mount failed: {e}"));
                }
                p.len = p.len.max(off + len);
            }
            "truncate" => {
                // Down or up by up to 12 MiB, up while under 8 MiB (sizes
                // stay in the tens of MiB), and now and then to zero.
                let to = if rng.gen_ratio(1, 25) {
                    0
                } else if p.len >= 8 * MIB && rng.gen_bool(0.5) {
                    p.len.saturating_sub(rng.gen_range(0..=12 * MIB))
                } else {
                    (p.len + rng.gen_range(0..=12 * MIB)).min(MAX_LEN)
                };
                recent.push(format!("#{op} {} truncate to {to} (len {})", p.name, p.len));
                p.reference.set_len(to).expect("truncate reference");
                if let Err(e) = p.mnt.set_len(to) {
                    fail_op(seed, &recent, format!("ftruncate on the mount failed: {e}"));
                }
                p.len = to;
            }
            "read" => {
                let len = random_len(&mut rng);
                let off = random_offset(&mut rng, p.len + (64 << 10));
                recent.push(format!(
                    "#{op} {} read {len} @ {off} (len {})",
                    p.name, p.len
                ));
                let want = read_full_at(&p.reference, off, len as usize).expect("read reference");
                let got = match read_full_at(&p.mnt, off, len as usize) {
                    Ok(g) => g,
                    Err(e) => fail_op(seed, &recent, format!("read from the mount failed: {e}")),
                };
                if got != want {
                    let at = got.iter().zip(&want).position(|(a, b)| a != b);
                    fail_op(
                        seed,
                        &recent,
                        format!(
                            "read returned wrong bytes: {} bytes, want {}; first difference at file offset {:?}",
                            got.len(),
                            want.len(),
                            at.map(|i| off + i as u64)
                        ),
                    );
                }
            }
            "stat" => {
                recent.push(format!("#{op} {} stat (len {})", p.name, p.len));
                let by_fd = p.mnt.metadata().map(|m| m.len());
                let by_path = std::fs::metadata(&p.mnt_path).map(|m| m.len());
                if by_fd.as_ref().ok() != Some(&p.len) || by_path.as_ref().ok() != Some(&p.len) {
                    fail_op(
                        seed,
                        &recent,
                        format!("size: fstat {by_fd:?}, stat {by_path:?}, want {}", p.len),
                    );
                }
            }
            "fsync" => {
                recent.push(format!("#{op} {} fsync", p.name));
                if let Err(e) = p.mnt.sync_all() {
                    fail_op(seed, &recent, format!("fsync on the mount failed: {e}"));
                }
            }
            _ => {
                recent.push(format!("#{op} {} close and reopen", p.name));
                if let Err(e) = p.reopen() {
                    fail_op(seed, &recent, format!("close on the mount failed: {e}"));
                }
            }
        }
        if recent.len() > 30 {
            recent.remove(0);
        }
        if (op + 1) % CHECKPOINT == 0 {
            // Close everything, reopen, and compare whole files read from
            // the mount process rather than from the kernel's cache.
            for p in pairs.iter_mut() {
                if let Err(e) = p.reopen() {
                    fail_op(seed, &recent, format!("close of {} failed: {e}", p.name));
                }
                if let Err(e) = check_uncached(&p.mnt_path, &p.ref_path) {
                    fail_op(seed, &recent, format!("after {} operations: {e}", op + 1));
                }
            }
            eprintln!(
                "[{}] {} operations, files equal after close and reopen ({:?} MiB; {} MiB of fragments on the nodes)",
                secs(t0),
                op + 1,
                pairs.iter().map(|p| p.len >> 20).collect::<Vec<_>>(),
                total_fragment_bytes(&c) >> 20
            );
        }
    }
    eprintln!("operations: {counts:?}");
    for p in pairs.drain(..) {
        close_file(p.mnt).unwrap_or_else(|e| panic!("close {}: {e}", p.name));
        if let Err(e) = check_uncached(&p.mnt_path, &p.ref_path) {
            panic!("at the end: {e}");
        }
        // The object as the SDK path reads it.
        let out = c.path("get.out");
        c.ok(&["get", &format!("rand/{}", p.name), out.to_str().unwrap()]);
        assert!(
            same_file(&out, &p.ref_path),
            "tessera get rand/{} differs from the reference",
            p.name
        );
        // And through a new mount process, with nothing cached.
        let _ = std::fs::remove_file(&out);
    }
    m.unmount();
    m = c.mount("rand", &[]);
    for name in ["f0", "sub/f1", "sub/deeper/f2"] {
        let r = local.join(name.replace('/', "_"));
        check_uncached(&m.join(name), &r).unwrap_or_else(|e| panic!("after a remount: {e}"));
    }
    m.unmount();
    eprintln!("random operations test: {}", secs(t0));
}

// ---------------------------------------------------------------------------
// 3. Rename a directory of 10,000 files under two listing processes.

/// A loop in its own process until STOP exists, one line per listing,
/// each "START END RESULT" (nanoseconds since the epoch): `find PARENT
/// -type f` as "find OLD NEW OTHER STATUS", or `ls -U -A` of the old and
/// the new directory and of PARENT as "ls OLDCOUNT OLDSTATUS NEWCOUNT
/// NEWSTATUS PARENT-ENTRIES".
const LISTER: &str = r#"
parent=$1 stop=$2 mode=$3 err=$4
while [ ! -e "$stop" ]; do
  s=$(date +%s%N)
  if [ "$mode" = find ]; then
    r=$(find "$parent" -type f 2>"$err" | awk -v p="$parent" '
      index($0, p "/dir/") == 1 { o++; next }
      index($0, p "/newdir/") == 1 { n++; next }
      { x++ }
      END { printf "find %d %d %d", o, n, x }'; echo " ${PIPESTATUS[0]}")
  else
    out=$(ls -U -A "$parent/dir" 2>/dev/null); as=$?
    a=$(printf '%s' "$out" | grep -c '')
    out=$(ls -U -A "$parent/newdir" 2>/dev/null); bs=$?
    b=$(printf '%s' "$out" | grep -c '')
    top=$(ls -A "$parent" | tr '\n' ',')
    r="ls $a $as $b $bs $top"
  fi
  echo "$s $(date +%s%N) $r"
done
"#;

fn epoch_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A lister's line: (start, end, result).
fn stamped(l: &str) -> (u128, u128, &str) {
    let mut it = l.splitn(3, ' ');
    let s = it.next().and_then(|s| s.parse().ok());
    let e = it.next().and_then(|s| s.parse().ok());
    match (s, e, it.next()) {
        (Some(s), Some(e), Some(r)) => (s, e, r),
        _ => panic!("lister line {l:?}"),
    }
}

#[test]
fn a_directory_of_10000_files_renames_atomically_under_listers() {
    let t0 = Instant::now();
    let files = env_size("TESSERA_FUSE_RENAME_FILES", 10_000) as usize;
    let c = Cluster::start(6);
    c.ok(&["bucket", "create", "lists", "--policy", "ec:4+2"]);
    // The small files go in through the SDK, 32 at a time: the fastest
    // way to make 10,000 objects (they are kept inline in meta); the
    // mount sees them as they are. One 9 MiB file written through the
    // mount gives the directory real chunks to (not) copy.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use futures::StreamExt;
        let client = tessera_sdk::Client::connect(
            &tessera_sdk::ClusterConfig::load(&c.cluster_file).expect("cluster file"),
        )
        .await
        .expect("connect");
        let mut puts = futures::stream::iter(0..files - 1)
            .map(|i| {
                let client = client.clone();
                async move {
                    let key = format!("top/dir/f{i:05}");
                    client
                        .put(
                            "lists",
                            &key,
                            key.as_bytes(),
                            tessera_sdk::PutOptions::default(),
                        )
                        .await
                }
            })
            .buffer_unordered(32);
        while let Some(r) = puts.next().await {
            r.expect("SDK put");
        }
        for key in ["top/sibling.txt", "top/other/x"] {
            client
                .put(
                    "lists",
                    key,
                    key.as_bytes(),
                    tessera_sdk::PutOptions::default(),
                )
                .await
                .expect("SDK put");
        }
    });
    eprintln!("{} objects made in {}", files + 1, secs(t0));
    let m = c.mount("lists", &[]);
    let parent = m.join("top");
    let big = c.path("big.src");
    random_file(&big, (9 * MIB + 7) as usize, 77);
    write_through(&big, &parent.join("dir/big.bin"));
    let listed = std::fs::read_dir(parent.join("dir"))
        .expect("read_dir of the directory")
        .count();
    assert_eq!(listed, files, "entries in the directory before the rename");
    let on_disk_before = total_fragment_bytes(&c);

    // Two listers, each its own process, each its own output file.
    let stop = c.path("listers.stop");
    let spawn = |mode: &str| {
        let out = File::create(c.path(&format!("lister-{mode}.out"))).unwrap();
        Command::new("bash")
            .args(["-c", LISTER, "lister"])
            .arg(&parent)
            .arg(&stop)
            .arg(mode)
            .arg(c.path(&format!("lister-{mode}.err")))
            .stdout(Stdio::from(out))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn lister")
    };
    let mut listers = [spawn("find"), spawn("ls")];
    let lines = |mode: &str| -> Vec<String> {
        std::fs::read_to_string(c.path(&format!("lister-{mode}.out")))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    let wait_lines = |n: usize, what: &str| {
        common::wait_until(what, Duration::from_secs(120), || {
            lines("find").len() >= n && lines("ls").len() >= n
        })
    };
    wait_lines(2, "two listings of each lister before the rename");
    // 41 renames, back and forth at random moments, so that many land in
    // the middle of a listing; the tree ends up as newdir.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let (mut mv_times, mut renames) = (Vec::new(), Vec::new());
    for n in 0..41 {
        let (from, to) = if n % 2 == 0 {
            ("dir", "newdir")
        } else {
            ("newdir", "dir")
        };
        let t = Instant::now();
        let start = epoch_ns();
        run_ok(
            Command::new("mv")
                .arg(parent.join(from))
                .arg(parent.join(to)),
        );
        mv_times.push(t.elapsed());
        renames.push((start, epoch_ns()));
        std::thread::sleep(Duration::from_millis(rng.gen_range(10..200)));
    }
    let (before_find, before_ls) = (lines("find").len(), lines("ls").len());
    // Two more complete listings each, begun after the last rename.
    common::wait_until(
        "listings after the rename",
        Duration::from_secs(120),
        || lines("find").len() >= before_find + 3 && lines("ls").len() >= before_ls + 3,
    );
    File::create(&stop).unwrap();
    for l in listers.iter_mut() {
        l.wait().expect("lister exits");
    }
    mv_times.sort();
    eprintln!(
        "41 renames of a directory of {files} files: median {:?}, slowest {:?}",
        mv_times[mv_times.len() / 2],
        mv_times[mv_times.len() - 1]
    );

    let (all_old, all_new) = (format!("find {files} 0 2 0"), format!("find 0 {files} 2 0"));
    let mut vanished = 0;
    // Listings in progress while a rename ran: the cases that matter.
    let overlapping = |ls: &[String]| {
        ls.iter()
            .filter(|l| {
                let (s, e, _) = stamped(l);
                renames.iter().any(|&(rs, re)| s < re && rs < e)
            })
            .count()
    };
    let finds: Vec<String> = lines("find")
        .iter()
        .map(|l| stamped(l).2.to_string())
        .collect();
    let finds_during = overlapping(&lines("find"));
    for l in &finds {
        if *l == all_old || *l == all_new {
            continue;
        }
        // find read "dir" in PARENT, then the rename made it vanish before
        // find opened it: as on any POSIX file system, zero files and an
        // error. Not a half-moved tree.
        if l == "find 0 0 2 1" {
            vanished += 1;
            continue;
        }
        panic!(
            "`find` saw a half-moved tree: {l:?} (want {all_old:?} or {all_new:?}); all listings:\n{}",
            finds.join("\n")
        );
    }
    assert!(
        finds.contains(&all_old),
        "no find listing before: {finds:?}"
    );
    assert!(finds.contains(&all_new), "no find listing after: {finds:?}");
    // Each `ls` is one listing: of a directory, all its entries (status 0)
    // or none (ENOENT: status 2); of PARENT, exactly one of the two names.
    // The three run one after the other, so renames between them may show
    // the tree at both places or at neither; each listing is whole.
    let lss: Vec<String> = lines("ls")
        .iter()
        .map(|l| stamped(l).2.to_string())
        .collect();
    let lss_during = overlapping(&lines("ls"));
    let whole = |count: &str, status: &str| {
        (count == files.to_string() && status == "0") || (count == "0" && status != "0")
    };
    for l in &lss {
        let f: Vec<&str> = l.splitn(6, ' ').collect();
        let (old, new) = ((f[1], f[2]), (f[3], f[4]));
        let mut top: Vec<&str> = f
            .get(5)
            .unwrap_or(&"")
            .split(',')
            .filter(|s| !s.is_empty())
            .collect();
        top.sort();
        let top_ok =
            top == ["dir", "other", "sibling.txt"] || top == ["newdir", "other", "sibling.txt"];
        assert!(
            whole(old.0, old.1) && whole(new.0, new.1) && top_ok,
            "`ls` saw a half-moved tree: {l:?} (fields: entries and status of ls dir, of ls newdir, then ls PARENT); all listings:\n{}",
            lss.join("\n")
        );
    }
    eprintln!(
        "listings: {} by find ({finds_during} while a rename ran, {vanished} found the directory gone mid-walk), {} by ls ({lss_during} while a rename ran)",
        finds.len(),
        lss.len()
    );
    assert!(
        finds_during + lss_during > 0,
        "no listing ran while a rename did: the test proved nothing"
    );

    // Moved, not copied: every object under the new prefix, none under the
    // old, not one fragment byte more on the nodes.
    assert_eq!(
        total_fragment_bytes(&c),
        on_disk_before,
        "the rename copied data"
    );
    assert_eq!(objects(&c, "lists/top/dir/").len(), 0);
    assert_eq!(objects(&c, "lists/top/newdir/").len(), files);
    check_uncached(&parent.join("newdir/big.bin"), &big).expect("big file after the rename");
    assert_eq!(
        std::fs::read(parent.join("newdir/f00123")).expect("small file after the rename"),
        b"top/dir/f00123"
    );
    m.unmount();
    eprintln!("rename test: {}", secs(t0));
}

// ---------------------------------------------------------------------------
// 4. One namespace, two views: the mount and S3 (aws-cli).

impl Aws {
    /// Every key in the bucket (list-objects-v2, one page is plenty here).
    fn keys(&self, bucket: &str) -> BTreeMap<String, u64> {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&[
            "s3api",
            "list-objects-v2",
            "--bucket",
            bucket,
            "--output",
            "json",
        ]))
        .unwrap_or_default();
        v["Contents"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|o| {
                        (
                            o["Key"].as_str().unwrap().to_string(),
                            o["Size"].as_u64().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Polls until the mount shows `path` as `want` (None: absent), for at
/// most 30 s: another client's change reaches the mount once its cached
/// attributes expire. Returns how long it took.
fn wait_for_view(path: &Path, want: Option<&[u8]>) -> Duration {
    let t = Instant::now();
    loop {
        let got = std::fs::read(path).ok();
        if got.as_deref() == want {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{} still reads {:?} 30s after the change through S3, want {:?}",
            path.display(),
            got.map(|g| String::from_utf8_lossy(&g).into_owned()),
            want.map(String::from_utf8_lossy)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_mount_and_s3_see_one_namespace() {
    let t0 = Instant::now();
    let mut c = Cluster::start(6);
    let endpoint = c.start_s3();
    let k = c.json(&["key", "create", "views", "--json"]);
    let aws = Aws {
        endpoint,
        key: k["access_key"].as_str().unwrap().to_string(),
        secret: k["secret_key"].as_str().unwrap().to_string(),
    };
    c.ok(&["bucket", "create", "views", "--policy", "ec:4+2"]);
    c.ok(&["bucket", "allow", "views", &aws.key, "owner"]);
    let m = c.mount("views", &[]);

    // Mount -> S3: a nested small file and a chunked one; after close, S3
    // reads exactly those bytes at exactly those keys.
    std::fs::create_dir_all(m.join("docs/a/b")).expect("mkdir -p in the mount");
    let text = b"written through the mount\n";
    let mut f = File::create(m.join("docs/a/b/c.txt")).expect("create in the mount");
    f.write_all(text).expect("write");
    close_file(f).expect("close");
    let big = c.path("big.src");
    random_file(&big, (9 * MIB + 7) as usize, 9);
    write_through(&big, &m.join("docs/big.bin"));
    let got = c.path("s3.out");
    aws.ok(&["s3", "cp", "s3://views/docs/big.bin", got.to_str().unwrap()]);
    assert!(
        same_file(&big, &got),
        "S3 reads other bytes than the mount wrote"
    );
    aws.ok(&[
        "s3",
        "cp",
        "s3://views/docs/a/b/c.txt",
        got.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&got).unwrap(), text);
    let keys = aws.keys("views");
    assert_eq!(
        keys,
        BTreeMap::from([
            ("docs/a/b/c.txt".to_string(), text.len() as u64),
            ("docs/big.bin".to_string(), 9 * MIB + 7),
        ]),
        "S3's listing of what the mount wrote"
    );

    // S3 -> mount: a multipart upload (aws-cli splits at 8 MiB) and an odd
    // name, read through the mount.
    let multi = c.path("multi.src");
    random_file(&multi, (20 * MIB + 1) as usize, 10);
    aws.ok(&[
        "s3",
        "cp",
        multi.to_str().unwrap(),
        "s3://views/from-s3/multi.bin",
    ]);
    let odd = c.path("odd.src");
    std::fs::write(&odd, b"version 1").unwrap();
    aws.ok(&[
        "s3",
        "cp",
        odd.to_str().unwrap(),
        "s3://views/from-s3/with space é.txt",
    ]);
    check_uncached(&m.join("from-s3/multi.bin"), &multi).expect("S3 upload read through the mount");
    let odd_in_mount = m.join("from-s3/with space é.txt");
    assert_eq!(std::fs::read(&odd_in_mount).expect("read"), b"version 1");
    let mut names: Vec<String> = std::fs::read_dir(m.join("from-s3"))
        .expect("read_dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["multi.bin", "with space é.txt"]);

    // Changes through S3 to what the mount has already read reach it.
    std::fs::write(&odd, b"version 2, longer").unwrap();
    aws.ok(&[
        "s3",
        "cp",
        odd.to_str().unwrap(),
        "s3://views/from-s3/with space é.txt",
    ]);
    let took = wait_for_view(&odd_in_mount, Some(b"version 2, longer"));
    eprintln!("an S3 overwrite reached the mount in {took:?}");
    aws.ok(&["s3", "rm", "s3://views/from-s3/with space é.txt"]);
    let took = wait_for_view(&odd_in_mount, None);
    eprintln!("an S3 delete reached the mount in {took:?}");
    // And a change through the mount reaches S3 at close, and another
    // mount at its next open (close-to-open), even with the old contents
    // in its cache.
    let other = c.mount("views", &[]);
    assert_eq!(
        std::fs::read(other.join("docs/a/b/c.txt")).expect("read in a second mount"),
        text
    );
    let f = OpenOptions::new()
        .write(true)
        .open(m.join("docs/a/b/c.txt"))
        .expect("open for writing");
    f.write_all_at(b"W", 0).expect("write");
    close_file(f).expect("close");
    assert_eq!(
        std::fs::read(other.join("docs/a/b/c.txt")).expect("read in a second mount"),
        b"Written through the mount\n",
        "a second mount does not see a change closed in the first at its next open"
    );
    let f = OpenOptions::new()
        .write(true)
        .open(other.join("docs/big.bin"))
        .expect("open for writing in the second mount");
    f.write_all_at(b"second mount", 5 * MIB).expect("write");
    close_file(f).expect("close");
    {
        let f = OpenOptions::new().write(true).open(&big).unwrap();
        f.write_all_at(b"second mount", 5 * MIB).unwrap();
    }
    // Not check_uncached: the kernel's cached pages of the first mount
    // must be dropped by the mount itself when the file changed.
    assert!(
        same_file(&m.join("docs/big.bin"), &big),
        "the first mount does not read what the second wrote and closed (stale cache?)"
    );
    other.unmount();
    aws.ok(&[
        "s3",
        "cp",
        "s3://views/docs/a/b/c.txt",
        got.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&got).unwrap(), b"Written through the mount\n");

    // An empty directory is a directory in the mount and nothing in S3.
    std::fs::create_dir(m.join("empty")).expect("mkdir in the mount");
    std::fs::create_dir_all(m.join("docs/empty-too/deeper")).expect("mkdir -p");
    let top = aws.ok(&["s3", "ls", "s3://views/"]);
    assert!(
        !top.contains("empty"),
        "aws s3 ls shows an empty directory:\n{top}"
    );
    let docs = aws.ok(&["s3", "ls", "s3://views/docs/"]);
    assert!(
        !docs.contains("empty-too"),
        "aws s3 ls shows an empty directory:\n{docs}"
    );
    let keys = aws.keys("views");
    assert!(
        keys.keys().all(|k| !k.contains("empty")),
        "S3 lists a directory object: {keys:?}"
    );
    assert!(!c.ok(&["ls", "-r", "views"]).contains("empty"));
    let ls = run_ok(Command::new("ls").arg(m.join("")));
    assert!(ls.lines().any(|l| l == "empty"), "ls of the mount: {ls}");
    assert!(m.join("docs/empty-too/deeper").is_dir());

    // Rename through the mount: S3 sees the new keys only.
    run_ok(Command::new("mv").arg(m.join("docs")).arg(m.join("docs2")));
    let keys = aws.keys("views");
    assert!(
        keys.contains_key("docs2/big.bin")
            && keys.contains_key("docs2/a/b/c.txt")
            && !keys.keys().any(|k| k.starts_with("docs/")),
        "S3 after mv docs docs2: {keys:?}"
    );

    // A mount of BUCKET/PREFIX sees only that prefix, without it.
    let pm = c.mount("views/from-s3", &[]);
    check_uncached(&pm.join("multi.bin"), &multi).expect("read through a prefix mount");
    let mut f = File::create(pm.join("new.txt")).expect("create in a prefix mount");
    f.write_all(b"prefixed").expect("write");
    close_file(f).expect("close");
    aws.ok(&[
        "s3",
        "cp",
        "s3://views/from-s3/new.txt",
        got.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&got).unwrap(), b"prefixed");
    assert!(
        !pm.join("docs2").exists(),
        "a prefix mount shows what is outside its prefix"
    );
    pm.unmount();

    // Empty directories live in meta, not in the mount process: a new
    // mount has them.
    m.unmount();
    let m = c.mount("views", &[]);
    assert!(
        m.join("empty").is_dir(),
        "an empty directory did not survive a remount"
    );
    assert!(m.join("docs2/empty-too/deeper").is_dir());
    m.unmount();
    eprintln!("two views test: {}", secs(t0));
}

// ---------------------------------------------------------------------------
// 5. SIGKILL a node while reading and writing through the mount.

#[test]
fn a_node_killed_during_reads_and_writes_loses_nothing() {
    let t0 = Instant::now();
    let size = env_size("TESSERA_FUSE_KILL_BYTES", 50 * MIB) as usize;
    // Seven nodes: ec:4+2 needs six for every new chunk, so with one node
    // dead writes need a seventh to go to (as tests/full_disk.rs does).
    let mut c = Cluster::start(7);
    c.ok(&["bucket", "create", "kill", "--policy", "ec:4+2"]);
    let m = c.mount("kill", &[]);
    // Three files written before the kill, four during and after it.
    let srcs: Vec<PathBuf> = (0..7)
        .map(|i| {
            let p = c.path(&format!("src-{i}"));
            random_file(&p, size + i * 4099, 100 + i as u64);
            p
        })
        .collect();
    for (i, src) in srcs.iter().enumerate().take(3) {
        write_through(src, &m.join(format!("old-{i}.bin")));
    }
    eprintln!("three files written in {}", secs(t0));

    // (file in the mount, its source) that are complete and may be read.
    let done: Arc<Mutex<Vec<(PathBuf, PathBuf)>>> = Arc::new(Mutex::new(
        (0..3)
            .map(|i| (m.join(format!("old-{i}.bin")), srcs[i].clone()))
            .collect(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    // Which new file the writer is at, and how far into it.
    let (writing, progress) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (done, stop, reads) = (done.clone(), stop.clone(), reads.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let list = done.lock().unwrap().clone();
                let (path, src) = &list[n % list.len()];
                let t = Instant::now();
                check_uncached(path, src).map_err(|e| format!("read #{n}: {e}"))?;
                eprintln!("  read {} ok in {}", path.display(), secs(t));
                reads.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
            Ok(())
        })
    };
    let writer = {
        let (done, killed) = (done.clone(), killed.clone());
        let (writing, progress) = (writing.clone(), progress.clone());
        let (dir, srcs) = (m.path.clone(), srcs.clone());
        // Returns the files begun after the kill.
        std::thread::spawn(move || -> Result<Vec<String>, String> {
            let mut after = Vec::new();
            for (i, src) in srcs.iter().enumerate().skip(3) {
                let name = format!("new-{i}.bin");
                if killed.load(Ordering::SeqCst) {
                    after.push(name.clone());
                }
                let dst = dir.join(&name);
                let t = Instant::now();
                progress.store(0, Ordering::SeqCst);
                writing.store(i, Ordering::SeqCst);
                let mut from = File::open(src).expect("source");
                let mut to = File::create(&dst).map_err(|e| format!("create {name}: {e}"))?;
                let mut buf = vec![0u8; MIB as usize];
                loop {
                    let n = from.read(&mut buf).expect("read source");
                    if n == 0 {
                        break;
                    }
                    to.write_all(&buf[..n])
                        .map_err(|e| format!("write {name}: {e}"))?;
                    progress.fetch_add(n as u64, Ordering::SeqCst);
                }
                close_file(to).map_err(|e| format!("close {name}: {e}"))?;
                eprintln!("  wrote {name} in {}", secs(t));
                done.lock().unwrap().push((dst, src.clone()));
            }
            Ok(after)
        })
    };
    // SIGKILL in the middle of the first new file (a write in flight) while
    // the reader is in its first pass (a read in flight).
    let wait = Instant::now();
    while !(writing.load(Ordering::SeqCst) == 3 && progress.load(Ordering::SeqCst) >= 20 * MIB) {
        assert!(
            wait.elapsed() < Duration::from_secs(300) && !writer.is_finished(),
            "the writer never got 20 MiB into new-3.bin"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let victim = 2;
    killed.store(true, Ordering::SeqCst);
    c.kill_node(victim);
    let killed_at_reads = reads.load(Ordering::SeqCst);
    eprintln!(
        "[{}] SIGKILL node {victim}: writing new-3.bin at {} MiB, {killed_at_reads} reads done",
        secs(t0),
        progress.load(Ordering::SeqCst) >> 20
    );
    let writes = writer.join().expect("writer thread");
    // Reads go on until every file has been read at least once since.
    let want_reads = killed_at_reads + 8;
    let wait = Instant::now();
    while reads.load(Ordering::SeqCst) < want_reads && !reader.is_finished() {
        assert!(
            wait.elapsed() < Duration::from_secs(600),
            "reads stalled after the kill"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let reads_result = reader.join().expect("reader thread");
    reads_result.unwrap_or_else(|e| panic!("a read through the mount failed after the kill: {e}"));
    let after =
        writes.unwrap_or_else(|e| panic!("a write through the mount failed after the kill: {e}"));
    eprintln!(
        "{} reads, {} since the kill; all writes succeeded; begun after the kill: {after:?}",
        reads.load(Ordering::SeqCst),
        reads.load(Ordering::SeqCst) - killed_at_reads
    );

    // After: every file reads back through the mount and through the CLI,
    // and files begun after the kill have no fragment on the dead node.
    let out = c.path("get.out");
    for (path, src) in done.lock().unwrap().iter() {
        check_uncached(path, src).unwrap_or_else(|e| panic!("after the kill: {e}"));
        let name = path.file_name().unwrap().to_str().unwrap();
        c.ok(&["get", &format!("kill/{name}"), out.to_str().unwrap()]);
        assert!(same_file(&out, src), "tessera get kill/{name} differs");
    }
    assert!(!after.is_empty(), "no file was begun after the kill");
    for name in &after {
        c.check_fragments(&format!("kill/{name}"), &[victim]);
    }
    m.unmount();
    eprintln!("node kill test: {}", secs(t0));
}

// ---------------------------------------------------------------------------
// 6. A 1-byte write in the middle of a 1 GiB file rewrites one chunk.

/// (chunk id, chunk length) of each chunk of `target`, in order.
fn chunks(c: &Cluster, target: &str) -> Vec<(String, u64)> {
    let stat = c.json(&["stat", "--json", target]);
    stat["placement"]
        .as_array()
        .unwrap_or_else(|| panic!("no placement in stat of {target}: {stat}"))
        .iter()
        .map(|ch| {
            (
                ch["id"].as_str().unwrap().to_string(),
                ch["len"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_one_byte_write_rewrites_one_chunk() {
    let t0 = Instant::now();
    let size = env_size("TESSERA_FUSE_ONE_BYTE_FILE", 1 << 30);
    let c = Cluster::start(6);
    c.ok(&["bucket", "create", "onebyte", "--policy", "ec:4+2"]);
    let m = c.mount("onebyte", &[]);
    let src = c.path("big.src");
    random_file(&src, size as usize, 1);
    let t = Instant::now();
    write_through(&src, &m.join("big.bin"));
    eprintln!(
        "{} MiB written through the mount in {} ({:.0} MiB/s)",
        size >> 20,
        secs(t),
        (size >> 20) as f64 / t.elapsed().as_secs_f64()
    );
    let before = chunks(&c, "onebyte/big.bin");
    let bytes_before = total_fragment_bytes(&c);

    // One byte, in the middle, through open(O_WRONLY) + pwrite + close.
    let off = size / 2 + 1_234_567;
    let old = {
        let f = File::open(&src).unwrap();
        read_full_at(&f, off, 1).unwrap()[0]
    };
    let new = !old;
    let f = OpenOptions::new()
        .write(true)
        .open(m.join("big.bin"))
        .expect("open for writing");
    f.write_all_at(&[new], off).expect("write 1 byte");
    close_file(f).expect("close after the 1-byte write");
    {
        let f = OpenOptions::new().write(true).open(&src).unwrap();
        f.write_all_at(&[new], off).unwrap();
    }
    // Nothing is deleted meanwhile (replaced chunks wait for --gc-grace,
    // 6h), so the difference is what the write added.
    let added = total_fragment_bytes(&c).saturating_sub(bytes_before);
    let after = chunks(&c, "onebyte/big.bin");

    // The chunk holding `off` is new; every other chunk is the same one.
    let mut start = 0;
    let mut hit = None;
    for (i, (_, len)) in before.iter().enumerate() {
        if (start..start + len).contains(&off) {
            hit = Some((i, *len));
        }
        start += len;
    }
    let (hit, hit_len) = hit.expect("a chunk holds the offset");
    assert_eq!(after.len(), before.len(), "chunk count changed");
    let changed: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect();
    assert_eq!(
        changed,
        [hit],
        "chunks rewritten by a 1-byte write at {off} (want only chunk {hit})"
    );
    // ec:4+2: six fragments of a quarter chunk each, 64-byte headers, and
    // rounding of the shards to 64 bytes.
    let limit = 6 * (hit_len.div_ceil(4) + 64 + 64) + (64 << 10);
    eprintln!(
        "a 1-byte write added {added} fragment bytes on the nodes (limit {limit}: one {hit_len}-byte chunk)"
    );
    assert!(
        added <= limit,
        "a 1-byte write added {added} bytes of fragments, more than one chunk's worth ({limit})"
    );

    // The content: around the byte through the mount, whole through the CLI.
    let f = File::open(m.join("big.bin")).unwrap();
    forget_cached(&f);
    let lo = off.saturating_sub(2 * MIB);
    let got = read_full_at(&f, lo, (4 * MIB) as usize).expect("read around the byte");
    let want = read_full_at(&File::open(&src).unwrap(), lo, (4 * MIB) as usize).unwrap();
    assert!(
        got == want,
        "the mount reads wrong bytes around the 1-byte write"
    );
    drop(f);
    // Streamed from `tessera get ... -` and compared on the fly: another
    // 1 GiB on disk is what CI machines have least of.
    let t = Instant::now();
    let mut get = c
        .cli()
        .command(&["get", "onebyte/big.bin", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tessera get");
    let same = compare_readers(get.stdout.take().unwrap(), File::open(&src).unwrap());
    let status = get.wait().expect("wait for tessera get");
    assert!(
        status.success(),
        "tessera get onebyte/big.bin failed: {status}"
    );
    same.unwrap_or_else(|e| panic!("tessera get reads other bytes: {e}"));
    eprintln!("full read back through the CLI: {}", secs(t));
    m.unmount();
    eprintln!("one-byte test: {}", secs(t0));
}

// ---------------------------------------------------------------------------
// 7. What `ls -l`, `chmod`, `chown`, `touch`, `ln -s` and `df` rely on.

#[test]
fn attributes_symlinks_and_statfs_persist() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let c = Cluster::start(1);
    c.ok(&["bucket", "create", "attrs", "--policy", "rep:1"]);
    let src = c.path("small");
    std::fs::write(&src, b"from the CLI").unwrap();
    c.ok(&["put", src.to_str().unwrap(), "attrs/cli.txt"]);
    let m = c.mount("attrs", &[]);
    let mut f = File::create(m.join("f.txt")).expect("create");
    f.write_all(b"attributes").expect("write");
    close_file(f).expect("close");
    std::fs::set_permissions(m.join("f.txt"), std::fs::Permissions::from_mode(0o640))
        .expect("chmod");
    std::os::unix::fs::chown(m.join("f.txt"), Some(42), Some(43)).expect("chown");
    run_ok(
        Command::new("touch")
            .args(["-m", "-d", "@1500000000"])
            .arg(m.join("f.txt")),
    );
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(m.join("private"))
        .expect("mkdir 0700");
    std::os::unix::fs::symlink("f.txt", m.join("link")).expect("symlink");

    let check = |m: &common::Mount, when: &str| {
        let md = std::fs::metadata(m.join("f.txt")).expect("stat");
        assert_eq!(md.mode() & 0o7777, 0o640, "{when}: mode after chmod 640");
        assert_eq!((md.uid(), md.gid()), (42, 43), "{when}: owner after chown");
        assert_eq!(md.mtime(), 1_500_000_000, "{when}: mtime after touch -d");
        assert_eq!(md.len(), 10, "{when}: size");
        let md = std::fs::metadata(m.join("private")).expect("stat dir");
        assert!(md.is_dir(), "{when}");
        assert_eq!(md.mode() & 0o7777, 0o700, "{when}: mode of mkdir 0700");
        let l = std::fs::symlink_metadata(m.join("link")).expect("lstat");
        assert!(l.file_type().is_symlink(), "{when}: link is not a symlink");
        assert_eq!(
            std::fs::read_link(m.join("link")).expect("readlink"),
            Path::new("f.txt"),
            "{when}"
        );
        assert_eq!(
            std::fs::read(m.join("link")).expect("read through the link"),
            b"attributes"
        );
        // SAFETY: statvfs into a zeroed struct on a valid C path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let path = std::ffi::CString::new(m.path.to_str().unwrap()).unwrap();
        assert_eq!(
            unsafe { libc::statvfs(path.as_ptr(), &mut st) },
            0,
            "{when}: statvfs"
        );
        assert!(
            st.f_blocks > 0 && st.f_frsize > 0 && st.f_bavail <= st.f_blocks,
            "{when}: statvfs says blocks {} of {} bytes, {} available",
            st.f_blocks,
            st.f_frsize,
            st.f_bavail
        );
    };
    check(&m, "in the mount that made them");
    m.unmount();
    let m = c.mount("attrs", &[]);
    check(&m, "after a remount");

    // rename(2) over an existing file replaces it in one step: the target
    // has the new bytes, the source is gone, S3's view has one object.
    let mut f = File::create(m.join("old.txt")).expect("create");
    f.write_all(b"old contents").expect("write");
    close_file(f).expect("close");
    let mut f = File::create(m.join("new.txt")).expect("create");
    f.write_all(b"new").expect("write");
    close_file(f).expect("close");
    std::fs::rename(m.join("new.txt"), m.join("old.txt")).expect("rename over a file");
    assert_eq!(std::fs::read(m.join("old.txt")).expect("read"), b"new");
    assert!(
        !m.join("new.txt").exists(),
        "the source of a rename is still there"
    );
    let out = c.path("out");
    c.ok(&["get", "attrs/old.txt", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), b"new");
    assert!(!c.ok(&["ls", "attrs"]).contains("new.txt"));
    // fusermount3 -u works as well as SIGTERM.
    m.unmount_with_fusermount();

    // --uid/--gid: the owner of files that have none of their own.
    let m = c.mount("attrs", &["--uid", "1234", "--gid", "5678"]);
    let md = std::fs::metadata(m.join("cli.txt")).expect("stat");
    assert_eq!(
        (md.uid(), md.gid()),
        (1234, 5678),
        "owner under --uid 1234 --gid 5678"
    );
    m.unmount();
}
