//! Block volumes (issue 14) on a cluster of real processes, through
//! `tessera nbd` and the clients people use: `qemu-img convert` of a 2 GiB
//! image with holes in and out byte-identical, `qemu-img map` and
//! `nbdinfo --map` showing the holes, `nbdcopy`; snapshots, clones and
//! rollback; the exclusive writer (a second attach refused, `--force`
//! taking over, the old writer fenced); and removal freeing the nodes'
//! disks.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{BIN, Cluster, random_file, same_file, wait_until};

/// A `tessera nbd` process, SIGKILLed when dropped.
struct NbdServer {
    child: Option<Child>,
    addr: String,
}

impl NbdServer {
    fn start(c: &Cluster, port: u16, flags: &[&str]) -> NbdServer {
        let addr = format!("{}:{port}", c.ip);
        let log = std::fs::File::create(c.path(&format!("nbd-{port}.log"))).unwrap();
        let child = Command::new(BIN)
            .arg("nbd")
            .arg("--cluster")
            .arg(&c.cluster_file)
            .args(["--listen", &addr])
            .args(flags)
            .env("TESSERA_LOG", "info,quinn=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn tessera nbd");
        let sock: std::net::SocketAddr = addr.parse().unwrap();
        wait_until("the NBD server", Duration::from_secs(30), || {
            std::net::TcpStream::connect(sock).is_ok()
        });
        NbdServer {
            child: Some(child),
            addr,
        }
    }

    fn uri(&self, export: &str) -> String {
        format!("nbd://{}/{export}", self.addr)
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "kill {sig}");
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn need(tools: &[&str]) {
    for t in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{t} is required (tools/test installs it: libnbd-bin, nbdfuse, qemu-utils)"
        );
    }
}

/// A raw image of `size` bytes with data at `regions` (offset, len) and
/// holes elsewhere.
fn sparse_image(path: &Path, size: u64, regions: &[(u64, usize)], seed: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    for (i, &(off, len)) in regions.iter().enumerate() {
        let part = path.with_extension(format!("part{i}"));
        random_file(&part, len, seed + i as u64);
        run(Command::new("dd")
            .arg(format!("if={}", part.display()))
            .arg(format!("of={}", path.display()))
            .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
            .arg(format!("seek={}", off >> 20)));
        std::fs::remove_file(part).unwrap();
    }
}

fn qemu_out(uri: &str, to: &Path) {
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw", uri])
        .arg(to));
}

fn volume(c: &Cluster, name: &str) -> serde_json::Value {
    c.json(&["volume", "info", name, "--json"])
}

/// Holes `nbdinfo --map` reports, in bytes.
fn mapped_holes(uri: &str) -> u64 {
    let out = run(Command::new("nbdinfo").args(["--map", "--json", uri]));
    let map: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    map.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"].as_u64().unwrap_or(0) & 1 == 1)
        .map(|e| e["length"].as_u64().unwrap())
        .sum()
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

#[test]
fn volumes_through_nbd_with_qemu_img_nbdinfo_and_nbdcopy_snapshots_clones_and_rollback() {
    need(&["qemu-img", "nbdinfo", "nbdcopy"]);
    let c = Cluster::start_full(6, &["--gc-grace", "2s"], &["--gc-interval", "1s"]);
    c.wait_nodes_up(6);
    c.ok(&["volume", "create", "disk", "--size", "2GiB"]);
    let nbd = NbdServer::start(&c, 10809, &[]);

    // A 2 GiB image with 24 MiB of data in three places.
    let image = c.path("image.raw");
    let regions = [(0, 8 << 20), (GIB, 8 << 20), (2 * GIB - 8 * MIB, 8 << 20)];
    sparse_image(&image, 2 * GIB, &regions, 1);
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&image)
        .arg(nbd.uri("disk")));
    let back = c.path("back.raw");
    qemu_out(&nbd.uri("disk"), &back);
    assert!(same_file(&image, &back), "the image read back differs");

    // The holes stay holes: the volume maps only what was written.
    let holes = mapped_holes(&nbd.uri("disk"));
    assert!(
        holes >= 2 * GIB - 32 * MIB,
        "nbdinfo --map shows {holes} bytes of holes"
    );
    let map =
        run(Command::new("qemu-img").args(["map", "--output=json", "-f", "raw", &nbd.uri("disk")]));
    let map: serde_json::Value = serde_json::from_slice(&map.stdout).unwrap();
    let data: u64 = map
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    assert!(data <= 32 * MIB, "qemu-img map shows {data} bytes of data");
    let info = volume(&c, "disk");
    assert_eq!(info["allocated"].as_u64(), Some(24 * MIB), "{info}");
    let ls = c.json(&["volume", "ls", "--json"]);
    assert_eq!(ls[0]["name"], "disk");
    assert_eq!(ls[0]["size"].as_u64(), Some(2 * GIB));
    assert_eq!(ls[0]["policy"], "ec:4+2");

    // The read-only export of a snapshot, and nbdcopy both ways.
    c.ok(&["volume", "snapshot", "disk", "s1"]);
    let info: serde_json::Value = serde_json::from_slice(
        &run(Command::new("nbdinfo").args(["--json", &nbd.uri("disk@s1")])).stdout,
    )
    .unwrap();
    assert_eq!(info["exports"][0]["is_read_only"], true, "{info}");
    let patch = c.path("patch.raw");
    random_file(&patch, 16 << 20, 99);
    let patch_img = c.path("patched.raw");
    std::fs::copy(&image, &patch_img).unwrap();
    run(Command::new("dd")
        .arg(format!("if={}", patch.display()))
        .arg(format!("of={}", patch_img.display()))
        .args(["bs=1M", "conv=notrunc", "status=none"]));
    run(Command::new("nbdcopy").arg(&patch_img).arg(nbd.uri("disk")));
    let now = c.path("now.raw");
    run(Command::new("nbdcopy").arg(nbd.uri("disk")).arg(&now));
    assert!(same_file(&patch_img, &now), "nbdcopy read back differs");
    let snap = c.path("snap.raw");
    qemu_out(&nbd.uri("disk@s1"), &snap);
    assert!(
        same_file(&image, &snap),
        "the snapshot changed after writes"
    );

    // A clone diverges from its snapshot without changing it.
    c.ok(&["volume", "clone", "disk@s1", "c1"]);
    let cloned = c.path("clone.raw");
    qemu_out(&nbd.uri("c1"), &cloned);
    assert!(
        same_file(&image, &cloned),
        "a fresh clone differs from its snapshot"
    );
    run(Command::new("nbdcopy").arg(&patch).arg(nbd.uri("c1")));
    qemu_out(&nbd.uri("c1"), &cloned);
    assert!(same_file(&patch_img, &cloned), "the clone after writes");
    qemu_out(&nbd.uri("disk@s1"), &snap);
    assert!(
        same_file(&image, &snap),
        "writing the clone changed its snapshot"
    );

    // The snapshot cannot go while the clone needs it; rollback restores.
    let refused = c.fails(&["volume", "rm", "disk@s1"]);
    assert!(refused.contains("clone"), "{refused}");
    c.ok(&["volume", "rollback", "disk@s1"]);
    qemu_out(&nbd.uri("disk"), &now);
    assert!(
        same_file(&image, &now),
        "rollback did not restore the snapshot"
    );

    // Everything removed: the nodes' disks empty again once GC has run.
    c.ok(&["volume", "rm", "c1"]);
    c.ok(&["volume", "rm", "disk@s1"]);
    c.ok(&["volume", "rm", "disk"]);
    let ls = c.json(&["volume", "ls", "--json"]);
    assert_eq!(ls.as_array().map(|a| a.len()), Some(0), "{ls}");
    wait_until(
        "the nodes' disks to empty",
        Duration::from_secs(120),
        || (0..6).map(|i| c.fragment_bytes(i)).sum::<u64>() == 0,
    );
}

/// Python with libnbd: writes `byte` to block `block`, flushes, prints
/// `written`, then waits for a line on stdin and does it again to
/// `block + 1`, printing `second ok` or `second failed: ...`.
const WRITER: &str = r#"
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
b = int(sys.argv[2]); v = int(sys.argv[3])
h.pwrite(bytes([v]) * 4096, b * 4096)
h.flush()
print("written", flush=True)
sys.stdin.readline()
try:
    h.pwrite(bytes([v]) * 4096, (b + 1) * 4096)
    h.flush()
    print("second ok", flush=True)
except Exception as e:
    print("second failed:", e, flush=True)
"#;

fn read_block(uri: &str, block: u64) -> Vec<u8> {
    let out = run(Command::new("/usr/bin/python3").args([
        "-c",
        "import sys, nbd\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\nsys.stdout.buffer.write(h.pread(4096, int(sys.argv[2]) * 4096))",
        uri,
        &block.to_string(),
    ]));
    out.stdout
}

/// A libnbd client script run by Debian's python (which has the `nbd`
/// module), talked to line by line; killed when dropped.
struct ScriptClient {
    child: Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl ScriptClient {
    fn start(c: &Cluster, name: &str, script: &str, args: &[&str]) -> ScriptClient {
        let path = c.path(name);
        std::fs::write(&path, script).unwrap();
        let mut child = Command::new("/usr/bin/python3")
            .arg(&path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        ScriptClient { child, out }
    }

    /// The next line it prints, trimmed.
    fn line(&mut self) -> String {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.out, &mut line).unwrap();
        line.trim().to_string()
    }

    /// Sends it an empty line (what `WRITER` waits for).
    fn go_on(&mut self) {
        use std::io::Write;
        writeln!(self.child.stdin.as_mut().unwrap()).unwrap();
    }
}

impl Drop for ScriptClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn one_writer_at_a_time_and_a_writer_taken_over_is_fenced() {
    need(&["nbdinfo"]);
    let c = Cluster::start(6);
    c.wait_nodes_up(6);
    c.ok(&["volume", "create", "v", "--size", "64MiB"]);
    let a = NbdServer::start(&c, 10809, &[]);
    let b = NbdServer::start(&c, 10810, &[]);

    // Writer A holds the volume through its open connection.
    let mut writer = ScriptClient::start(&c, "writer.py", WRITER, &[&a.uri("v"), "0", "65"]);
    assert_eq!(writer.line(), "written");
    let held = volume(&c, "v");
    assert_eq!(held["attached"], true, "{held}");

    // A second server is refused while A holds it.
    let refused = Command::new("nbdinfo").arg(b.uri("v")).output().unwrap();
    assert!(!refused.status.success(), "a second writer attached");

    // A stops (as if hung); B takes over with --force and writes.
    a.signal("-STOP");
    let mut forced = NbdServer::start(&c, 10811, &["--force"]);
    let epoch_a = held["epoch"].as_u64().unwrap();
    // B's writer keeps its connection (and so the lease) until told.
    let mut b_writer =
        ScriptClient::start(&c, "writer_b.py", WRITER, &[&forced.uri("v"), "0", "66"]);
    assert_eq!(b_writer.line(), "written");
    assert!(volume(&c, "v")["epoch"].as_u64().unwrap() > epoch_a);

    // A comes back: its writes are refused, and nothing of it lands.
    a.signal("-CONT");
    writer.go_on();
    let line = writer.line();
    assert!(
        line.starts_with("second failed"),
        "the fenced writer wrote: {line}"
    );
    drop(writer);
    // The second writer is SIGKILLed: its lease is still fresh, so a plain
    // attach is refused and --force takes over.
    forced.kill();
    let refused = Command::new("nbdinfo").arg(b.uri("v")).output().unwrap();
    assert!(!refused.status.success(), "attached over a fresh lease");
    drop(b_writer);
    let reader = NbdServer::start(&c, 10812, &["--force"]);
    // B's write is there; A's second write (to block 1) never landed.
    assert!(
        read_block(&reader.uri("v"), 0) == vec![66u8; 4096],
        "block 0"
    );
    let b1 = read_block(&reader.uri("v"), 1);
    assert!(b1 == vec![0u8; 4096], "block 1 begins {:?}", &b1[..8]);
}

/// Random 4 KiB writes at queue depth 32 by fio's nbd engine, with a flush
/// every 32 writes and crc32c in every block, while a node is SIGKILLed:
/// every block reads back and verifies, and then repair restores full
/// redundancy (volume chunks are ordinary chunks to the repairer).
#[test]
fn random_writes_survive_a_node_killed_midway_and_heal() {
    need(&["fio"]);
    let mut c = Cluster::start_full(
        7,
        &[
            "--down-after",
            "1s",
            "--out-after",
            "3s",
            "--gc-grace",
            "60s",
        ],
        &[],
    );
    c.wait_nodes_up(7);
    c.ok(&["volume", "create", "v", "--size", "256MiB"]);
    let nbd = NbdServer::start(&c, 10809, &[]);
    let report = c.path("fio.json");
    let mut fio = Command::new("fio")
        .args([
            "--name=verify",
            "--ioengine=nbd",
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=32",
            "--size=96M",
            "--fsync=32",
            "--end_fsync=1",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--randseed=7",
            "--output-format=json",
        ])
        .arg(format!("--uri={}", nbd.uri("v")))
        .arg(format!("--output={}", report.display()))
        .current_dir(c.path(""))
        .stdout(Stdio::null())
        .spawn()
        .expect("start fio");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        fio.try_wait().unwrap().is_none(),
        "fio finished before the node was killed: make its job bigger"
    );
    c.kill_node(3);
    let status = fio.wait().unwrap();
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    assert!(status.success(), "fio failed: {text}");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let job = &report["jobs"][0];
    assert_eq!(job["error"], 0, "{job}");
    assert_eq!(job["write"]["io_bytes"].as_u64(), Some(96 << 20));
    assert_eq!(
        job["read"]["io_bytes"].as_u64(),
        Some(96 << 20),
        "verify read"
    );
    c.wait_for_state(3, "out");
    c.wait_healed(Duration::from_secs(180));
}

/// Undoes an nbdfuse mount, its loop device and a mount of it, in reverse
/// order, even when the test panics.
#[derive(Default)]
struct Mounted {
    mounted: Option<std::path::PathBuf>,
    loop_device: Option<String>,
    fuse_mount: Option<std::path::PathBuf>,
    nbdfuse: Option<Child>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(dir) = self.mounted.take() {
            let _ = Command::new("umount").arg(dir).status();
        }
        if let Some(dev) = self.loop_device.take() {
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
        if let Some(dir) = self.fuse_mount.take() {
            let _ = Command::new("fusermount3").arg("-u").arg(dir).status();
        }
        if let Some(mut child) = self.nbdfuse.take() {
            for _ in 0..200 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Exposes `uri` as a file with nbdfuse and puts a loop device on it.
fn loop_device(work: &Path, uri: &str) -> (Mounted, String) {
    let fuse_dir = work.join("fuse");
    std::fs::create_dir_all(&fuse_dir).unwrap();
    let pidfile = work.join("nbdfuse.pid");
    let _ = std::fs::remove_file(&pidfile);
    let mut m = Mounted::default();
    m.nbdfuse = Some(
        Command::new("nbdfuse")
            .arg("-P")
            .arg(&pidfile)
            .arg(fuse_dir.join("vol"))
            .arg(uri)
            .spawn()
            .expect("start nbdfuse"),
    );
    wait_until("nbdfuse", Duration::from_secs(20), || pidfile.exists());
    m.fuse_mount = Some(fuse_dir.clone());
    let dev = String::from_utf8(
        run(Command::new("losetup")
            .args(["-f", "--show", "--sector-size", "4096"])
            .arg(fuse_dir.join("vol")))
        .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    m.loop_device = Some(dev.clone());
    (m, dev)
}

/// ext4 on a Tessera volume: nbdfuse exposes the export as a file, a loop
/// device makes it a block device; mkfs, a tree of files (and an 8 MiB
/// one), umount; then through a fresh nbdfuse and loop device `fsck.ext4
/// -n` is clean and every file reads back the same.
#[test]
fn ext4_on_a_volume_through_nbdfuse_and_a_loop_device() {
    need(&[
        "nbdfuse",
        "fusermount3",
        "losetup",
        "mkfs.ext4",
        "fsck.ext4",
        "mount",
    ]);
    let c = Cluster::start(6);
    c.wait_nodes_up(6);
    c.ok(&["volume", "create", "fs", "--size", "512MiB"]);
    let nbd = NbdServer::start(&c, 10809, &[]);
    let list = run(Command::new("nbdinfo").args(["--list", "--json", &nbd.uri("")]));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["exports"][0]["export-name"], "fs", "{list}");

    let work = c.path("ext4");
    std::fs::create_dir_all(&work).unwrap();
    let files = {
        let (mut m, dev) = loop_device(&work, &nbd.uri("fs"));
        run(Command::new("mkfs.ext4").args(["-q", "-F", &dev]));
        let mnt = work.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        run(Command::new("mount").arg(&dev).arg(&mnt));
        m.mounted = Some(mnt.clone());
        let mut files = Vec::new();
        for d in 0..4 {
            let dir = mnt.join(format!("dir{d}/sub"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..25 {
                let path = dir.join(format!("file{f}"));
                random_file(&path, 1000 + (d * 25 + f) * 7919, (d * 100 + f) as u64);
                files.push(path.strip_prefix(&mnt).unwrap().to_path_buf());
            }
        }
        random_file(&mnt.join("big"), 8 << 20, 4242);
        files.push("big".into());
        // Keep copies to compare with after the remount.
        let copy = work.join("copy");
        run(Command::new("cp").arg("-a").arg(&mnt).arg(&copy));
        drop(m);
        files
    };
    let (mut m, dev) = loop_device(&work, &nbd.uri("fs"));
    run(Command::new("fsck.ext4").args(["-n", "-f", &dev]));
    let mnt = work.join("mnt");
    run(Command::new("mount").arg(&dev).arg(&mnt));
    m.mounted = Some(mnt.clone());
    for f in &files {
        assert!(
            same_file(&work.join("copy").join(f), &mnt.join(f)),
            "{} differs after remounting",
            f.display()
        );
    }
    drop(m);
    let info = volume(&c, "fs");
    assert!(info["allocated"].as_u64().unwrap() > 8 << 20, "{info}");
}

/// Python with libnbd: rounds 1..=N, each writes its number into every
/// 4 KiB block of the first `blocks` and flushes, then prints the round.
const ROUNDS: &str = r#"
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
blocks, rounds = int(sys.argv[2]), int(sys.argv[3])
for r in range(1, rounds + 1):
    data = r.to_bytes(4, "little") * 1024
    for b in range(blocks):
        h.pwrite(data, b * 4096)
    h.flush()
    print(r, flush=True)
"#;

/// A snapshot taken while a writer rewrites a region and flushes round
/// after round reads back exactly one whole round: one it could have seen
/// (not older than the last round flushed before the snapshot was asked
/// for, not newer than the one in flight when it returned), never a mix.
#[test]
fn a_snapshot_under_write_load_is_one_flushed_state() {
    let c = Cluster::start(6);
    c.wait_nodes_up(6);
    c.ok(&["volume", "create", "v", "--size", "64MiB"]);
    let nbd = NbdServer::start(&c, 10809, &[]);
    let script = c.path("rounds.py");
    std::fs::write(&script, ROUNDS).unwrap();
    let blocks = 64;
    let mut writer = Command::new("/usr/bin/python3")
        .arg(&script)
        .args([&nbd.uri("v"), &blocks.to_string(), "100000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let latest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let out = writer.stdout.take().unwrap();
    let seen = latest.clone();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            let Ok(line) = line else { break };
            if let Ok(r) = line.trim().parse() {
                seen.store(r, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let round = || latest.load(std::sync::atomic::Ordering::SeqCst);
    wait_until("the writer's 20th round", Duration::from_secs(60), || {
        round() >= 20
    });
    let before = round();
    c.ok(&["volume", "snapshot", "v", "s1"]);
    let after = round();
    wait_until("rounds after the snapshot", Duration::from_secs(60), || {
        round() >= after + 5
    });
    let _ = writer.kill();
    let _ = writer.wait();
    let snap = (0..blocks)
        .map(|b| read_block(&nbd.uri("v@s1"), b))
        .collect::<Vec<_>>();
    let r = u32::from_le_bytes(snap[0][..4].try_into().unwrap()) as u64;
    for (b, block) in snap.iter().enumerate() {
        let want = (r as u32).to_le_bytes().repeat(1024);
        assert!(*block == want, "block {b} of the snapshot is not round {r}");
    }
    assert!(
        before <= r && r <= after + 1,
        "the snapshot holds round {r}; flushed before it was asked for: {before}, when it returned: {after}"
    );
}

/// `tessera nbd --tls`: clients with a certificate from the cluster CA are
/// served over STARTTLS (libnbd checks the server's certificate, issued at
/// start for the listening address, against the cluster CA); a plain
/// client, or one without a client certificate, gets nothing.
#[test]
fn nbd_over_tls_with_the_cluster_certificates() {
    need(&["nbdinfo", "nbdcopy"]);
    let c = Cluster::start(6);
    c.wait_nodes_up(6);
    c.ok(&["volume", "create", "v", "--size", "64MiB"]);
    let nbd = NbdServer::start(&c, 10809, &["--tls"]);
    // libnbd's layout: ca-cert.pem, client-cert.pem, client-key.pem.
    let cluster = tessera_sdk::ClusterConfig::load(&c.cluster_file).unwrap();
    let dir = c.cluster_file.parent().unwrap();
    let file = |k: &str| {
        dir.join(match k {
            "ca_cert" => &cluster.ca_cert,
            "cert" => &cluster.cert,
            _ => &cluster.key,
        })
    };
    let certs = c.path("nbd-certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(file("ca_cert"), certs.join("ca-cert.pem")).unwrap();
    std::fs::copy(file("cert"), certs.join("client-cert.pem")).unwrap();
    std::fs::copy(file("key"), certs.join("client-key.pem")).unwrap();
    let tls_uri = format!("nbds://{}/v?tls-certificates={}", nbd.addr, certs.display());
    let data = c.path("data.raw");
    random_file(&data, 8 << 20, 5);
    let padded = c.path("padded.raw");
    std::fs::copy(&data, &padded).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&padded)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    run(Command::new("nbdcopy").arg(&padded).arg(&tls_uri));
    let back = c.path("back.raw");
    run(Command::new("nbdcopy").arg(&tls_uri).arg(&back));
    assert!(same_file(&padded, &back), "read back over TLS differs");

    let plain = Command::new("nbdinfo").arg(nbd.uri("v")).output().unwrap();
    assert!(!plain.status.success(), "served without TLS");
    let no_client_cert = c.path("ca-only");
    std::fs::create_dir_all(&no_client_cert).unwrap();
    std::fs::copy(file("ca_cert"), no_client_cert.join("ca-cert.pem")).unwrap();
    let anon = Command::new("nbdinfo")
        .arg(format!(
            "nbds://{}/v?tls-certificates={}",
            nbd.addr,
            no_client_cert.display()
        ))
        .output()
        .unwrap();
    assert!(
        !anon.status.success(),
        "served without a client certificate"
    );
}

/// The SDK's `Volume` without NBD: writes read back before and after a
/// flush, trims read as zeros and free the space, a second open is
/// refused, a snapshot opens read-only, a grow is seen by a new open, a
/// shrink needs `allow_shrink`, removal is refused while attached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_volume_reads_writes_flushes_and_trims() {
    use tessera_sdk::{Client, ClusterConfig, ErrorCode};
    let c = Cluster::start(6);
    c.wait_nodes_up(6);
    let client = Client::connect(&ClusterConfig::load(&c.cluster_file).unwrap())
        .await
        .unwrap();
    client
        .create_volume("v", 16 << 20, None, 4096)
        .await
        .unwrap();
    let vol = client.open_volume("v", "test", false).await.unwrap();
    let a: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8).collect();
    vol.write_at(4096, &a, false).await.unwrap();
    assert_eq!(vol.read_at(4096, a.len() as u64).await.unwrap(), a);
    assert_eq!(vol.read_at(0, 4096).await.unwrap(), vec![0u8; 4096]);
    vol.flush().await.unwrap();
    assert_eq!(vol.read_at(4096, a.len() as u64).await.unwrap(), a);
    assert_eq!(
        client.volume_info("v").await.unwrap().allocated,
        a.len() as u64
    );
    // Misaligned and out-of-range requests are refused.
    assert!(vol.write_at(1, &a, false).await.is_err());
    assert!(vol.read_at(16 << 20, 4096).await.is_err());
    // Trim: zeros, space freed once flushed.
    vol.trim(8192, 4096, true).await.unwrap();
    let mut want = a.clone();
    want[4096..8192].fill(0);
    assert_eq!(vol.read_at(4096, a.len() as u64).await.unwrap(), want);
    assert_eq!(client.volume_info("v").await.unwrap().allocated, 8192);
    let holes = vol.allocation(0, 16 << 20).await.unwrap();
    assert_eq!(
        holes[0],
        tessera_sdk::Allocation {
            len: 4096,
            hole: true
        }
    );
    // One writer at a time; removal refused while attached.
    let second = client.open_volume("v", "other", false).await;
    assert_eq!(
        second.err().and_then(|e| e.code()),
        Some(ErrorCode::VolumeBusy)
    );
    let rm = client.delete_volume("v").await;
    assert_eq!(rm.err().and_then(|e| e.code()), Some(ErrorCode::VolumeBusy));
    // A snapshot opens read-only and keeps its state.
    client.snapshot_volume("v", "s").await.unwrap();
    vol.write_at(4096, &vec![9u8; 4096], true).await.unwrap();
    let snap = client.open_snapshot("v", "s").await.unwrap();
    assert!(snap.read_only());
    assert_eq!(snap.read_at(4096, a.len() as u64).await.unwrap(), want);
    assert!(snap.write_at(0, &[0u8; 4096], false).await.is_err());
    vol.close().await.unwrap();
    // Resize: grow; a shrink needs allow_shrink and drops what lies beyond.
    let grown = client.resize_volume("v", 32 << 20, false).await.unwrap();
    assert_eq!(grown.size, 32 << 20);
    let refused = client.resize_volume("v", 4096, false).await;
    assert_eq!(
        refused.err().and_then(|e| e.code()),
        Some(ErrorCode::BadRequest)
    );
    client.resize_volume("v", 8192, true).await.unwrap();
    client.resize_volume("v", 1 << 20, false).await.unwrap();
    let vol = client.open_volume("v", "test", false).await.unwrap();
    assert_eq!(vol.size(), 1 << 20);
    let mut after = vec![0u8; 3 * 4096];
    after[..4096].copy_from_slice(&vec![9u8; 4096]);
    assert_eq!(vol.read_at(4096, 3 * 4096).await.unwrap(), after);
    vol.close().await.unwrap();
    // The CLI shows the same: snapshots, and the sizes.
    let snaps = c.json(&["volume", "snapshots", "v", "--json"]);
    assert_eq!(snaps[0]["name"], "s");
    let refused = c.fails(&["volume", "resize", "v", "--size", "4KiB"]);
    assert!(refused.contains("allow"), "{refused}");
    client.delete_snapshot("v", "s").await.unwrap();
    client.delete_volume("v").await.unwrap();
    assert!(client.list_volumes().await.unwrap().is_empty());
}

/// Python with libnbd: writes `byte` to block `block` without a flush,
/// prints `buffered`, then holds the connection until killed.
const UNFLUSHED: &str = r#"
import sys, time, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(bytes([int(sys.argv[3])]) * 4096, int(sys.argv[2]) * 4096)
print("buffered", flush=True)
time.sleep(600)
"#;

/// `tessera nbd` stopped by SIGTERM flushes what its volumes buffer and
/// gives their leases up: another server attaches at once without
/// `--force` and reads the write a client never flushed.
#[test]
fn a_stopped_nbd_server_flushes_and_detaches() {
    let c = Cluster::start(6);
    c.wait_nodes_up(6);
    c.ok(&["volume", "create", "v", "--size", "64MiB"]);
    let mut a = NbdServer::start(&c, 10809, &[]);
    let mut writer = ScriptClient::start(&c, "unflushed.py", UNFLUSHED, &[&a.uri("v"), "3", "77"]);
    assert_eq!(writer.line(), "buffered");
    assert_eq!(volume(&c, "v")["attached"], true);
    a.signal("-TERM");
    let child = a.child.as_mut().unwrap();
    wait_until("the NBD server to exit", Duration::from_secs(30), || {
        child.try_wait().unwrap().is_some()
    });
    a.child = None;
    assert_eq!(volume(&c, "v")["attached"], false, "the lease was kept");
    drop(writer);
    let b = NbdServer::start(&c, 10810, &[]);
    assert!(
        read_block(&b.uri("v"), 3) == vec![77u8; 4096],
        "the buffered write was lost"
    );
}
