//! Creating files through `tessera mount` (issue 17): a new file costs one
//! meta command, its commit at close, and until then it lives in the mount
//! alone (close-to-open). Counted with meta's applied-commands counter;
//! while the new file is still open, this mount must show it as any file
//! (stat, ls, read, rename, unlink, rmdir refusing its directory), another
//! mount and S3 must not, and both must after close. `touch` makes an
//! empty object; O_EXCL on a taken name is EEXIST; two mounts creating the
//! same name: the first to close wins, the second's close is EEXIST.
//!
//! One test, so that no other test of this binary spawns a process while
//! a file is open: FUSE sends a flush (the mount's commit) whenever any
//! copy of a descriptor is closed, and a spawned child closes its copies
//! at exec. Files that must stay open while the test runs commands are
//! held by a helper process (`Held`) instead.

mod common;

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::{Cluster, assert_errno, close_file, http_get, metric, run_ok};

/// Commands meta has applied (each one a synced write of its log).
fn meta_commands(c: &Cluster) -> u64 {
    let (status, body) = http_get(c.metrics_addr(None), "/metrics");
    assert!(status.contains("200"), "{status}");
    metric(&body, "tessera_meta_commands_applied_total")
        .unwrap_or_else(|| panic!("no tessera_meta_commands_applied_total in:\n{body}")) as u64
}

/// The names in a directory, listed through a mount.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("utf-8")
        })
        .collect()
}

/// The keys of the bucket as S3 clients see them (`tessera ls -r`).
fn keys(c: &Cluster, bucket: &str) -> BTreeSet<String> {
    c.ok(&["ls", "-r", bucket])
        .lines()
        .filter_map(|l| l.rsplit(' ').next())
        .map(String::from)
        .collect()
}

fn read(p: &Path) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    File::open(p)?.read_to_end(&mut out)?;
    Ok(out)
}

/// Opens `argv[1]` (O_RDWR|O_CREAT|O_TRUNC) and obeys one command a line:
/// `w TEXT` writes, `r` reads the whole file, `c` closes; answers `ok`,
/// `data TEXT` or `err ERRNO`.
const HOLDER: &str = r#"
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
print("ok", flush=True)
for line in sys.stdin:
    op, _, arg = line.rstrip("\n").partition(" ")
    try:
        if op == "w":
            os.write(fd, arg.encode())
            print("ok", flush=True)
        elif op == "r":
            print("data " + os.pread(fd, 1 << 16, 0).decode(), flush=True)
        elif op == "c":
            os.close(fd)
            print("ok", flush=True)
            break
    except OSError as e:
        print(f"err {e.errno}", flush=True)
        if op == "c":
            break
"#;

/// A new file held open by a helper process.
struct Held {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Held {
    fn create(path: &Path) -> Held {
        let mut child = Command::new("python3")
            .args(["-c", HOLDER])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 must be installed");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut h = Held {
            child,
            stdin,
            stdout,
        };
        let opened = h.answer();
        assert_eq!(opened, "ok", "create {}", path.display());
        h
    }

    fn answer(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("helper answer");
        line.trim_end_matches('\n').to_string()
    }

    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").expect("helper command");
        self.answer()
    }

    fn write(&mut self, text: &str) {
        assert_eq!(self.ask(&format!("w {text}")), "ok", "write {text:?}");
    }

    fn read(&mut self) -> String {
        let got = self.ask("r");
        got.strip_prefix("data ")
            .unwrap_or_else(|| panic!("read through the open descriptor: {got}"))
            .to_string()
    }

    /// close(2): `Err(errno)` when it failed.
    fn close(mut self) -> Result<(), i32> {
        let got = self.ask("c");
        let _ = self.child.wait();
        match got.strip_prefix("err ") {
            None if got == "ok" => Ok(()),
            Some(n) => Err(n.parse().expect("errno")),
            None => panic!("close: {got:?}"),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_new_file_costs_one_commit_and_is_a_file_in_its_mount_until_close() {
    let c = Cluster::start(6);
    c.ok(&["bucket", "create", "new"]);
    let m = c.mount("new", &[]);
    let other = c.mount("new", &[]);

    // N small files, created, written and closed one after another: one
    // meta command each (the commit at close), not two.
    std::fs::create_dir(m.join("many")).expect("mkdir");
    let n = 40u64;
    let body = vec![0x42u8; 4096];
    let before = meta_commands(&c);
    for i in 0..n {
        let mut f = File::create(m.join(format!("many/f{i:03}"))).expect("create");
        f.write_all(&body).expect("write");
        close_file(f).expect("close");
    }
    let took = meta_commands(&c) - before;
    assert_eq!(
        took, n,
        "{n} files of 4 KiB created through the mount took {took} meta commands"
    );
    assert_eq!(names(&m.join("many")).len(), n as usize);
    assert_eq!(names(&other.join("many")).len(), n as usize);
    assert_eq!(
        c.ok(&["get", "new/many/f007", "-"]).as_bytes(),
        &body[..],
        "content through S3's view"
    );

    // `touch`: an empty object. (GNU touch closes the descriptor it made
    // before it sets the times through a copy of it: a commit at that
    // close and one for the times.)
    run_ok(Command::new("touch").arg(m.join("many/touched")));
    assert!(keys(&c, "new").contains("many/touched"));
    assert_eq!(c.ok(&["get", "new/many/touched", "-"]), "");
    assert_eq!(std::fs::metadata(m.join("many/touched")).unwrap().len(), 0);
    assert_eq!(
        std::fs::metadata(other.join("many/touched")).unwrap().len(),
        0
    );

    // Open and written, not closed: this mount shows it, nobody else.
    std::fs::create_dir(m.join("d")).expect("mkdir");
    for name in ["a", "c", "b/inner"] {
        let p = m.join("d").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).expect("mkdir -p");
        std::fs::write(p, name).expect("write a committed file");
    }
    let before = meta_commands(&c);
    let mut h = Held::create(&m.join("d/bb"));
    h.write("hello");
    let meta = std::fs::metadata(m.join("d/bb")).expect("stat of an open new file");
    assert!(meta.is_file());
    assert_eq!(meta.len(), 5);
    let want: BTreeSet<String> = ["a", "b", "bb", "c"].map(String::from).into();
    assert_eq!(
        names(&m.join("d")),
        want,
        "readdir while the new file is open"
    );
    let ls = run_ok(Command::new("ls").arg(m.join("d")));
    assert_eq!(
        ls.split_whitespace().collect::<Vec<_>>(),
        ["a", "b", "bb", "c"]
    );
    assert_eq!(h.read(), "hello");
    assert_errno(
        "O_CREAT|O_EXCL of an open new file",
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m.join("d/bb")),
        libc::EEXIST,
    );
    assert_errno(
        "mkdir over an open new file",
        std::fs::create_dir(m.join("d/bb")),
        libc::EEXIST,
    );
    assert!(
        !keys(&c, "new").contains("d/bb"),
        "S3 sees an open new file"
    );
    assert_errno(
        "stat in another mount before close",
        std::fs::metadata(other.join("d/bb")),
        libc::ENOENT,
    );
    assert!(!names(&other.join("d")).contains("bb"));
    assert_eq!(meta_commands(&c), before, "nothing committed before close");
    h.write(", world");
    assert_eq!(h.close(), Ok(()));
    assert_eq!(meta_commands(&c) - before, 1, "one commit at close");
    assert_eq!(c.ok(&["get", "new/d/bb", "-"]), "hello, world");
    assert_eq!(read(&other.join("d/bb")).unwrap(), b"hello, world");
    assert!(names(&other.join("d")).contains("bb"));
    assert_eq!(read(&m.join("d/bb")).unwrap(), b"hello, world");

    // O_EXCL on a name another client made.
    std::fs::write(other.join("d/theirs"), b"x").expect("write in the other mount");
    assert_errno(
        "O_CREAT|O_EXCL of a name another mount made",
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m.join("d/theirs")),
        libc::EEXIST,
    );

    // Renamed while open: it moves in this mount alone, and is committed
    // once, under its new name, at close.
    let before = meta_commands(&c);
    let mut h = Held::create(&m.join("d/r1"));
    h.write("abc");
    std::fs::rename(m.join("d/r1"), m.join("r2")).expect("rename of an open new file");
    assert_eq!(meta_commands(&c), before, "a rename of a new file is local");
    assert_errno(
        "stat of the old name",
        std::fs::metadata(m.join("d/r1")),
        libc::ENOENT,
    );
    assert_eq!(std::fs::metadata(m.join("r2")).unwrap().len(), 3);
    assert!(names(&m.path).contains("r2"));
    assert!(!names(&m.join("d")).contains("r1"));
    h.write("def");
    assert_eq!(h.close(), Ok(()));
    assert_eq!(meta_commands(&c) - before, 1, "one commit at close");
    let k = keys(&c, "new");
    assert!(k.contains("r2") && !k.contains("d/r1"), "{k:?}");
    assert_eq!(c.ok(&["get", "new/r2", "-"]), "abcdef");

    // Renamed over an existing file while open: every client sees the old
    // file until the rename, the new one after.
    std::fs::write(m.join("d/target"), b"OLD").expect("write");
    let mut h = Held::create(&m.join("d/tmp"));
    h.write("NEW");
    std::fs::rename(m.join("d/tmp"), m.join("d/target")).expect("rename over a file");
    assert_eq!(c.ok(&["get", "new/d/target", "-"]), "NEW");
    assert_eq!(read(&other.join("d/target")).unwrap(), b"NEW");
    assert!(!keys(&c, "new").contains("d/tmp"));
    h.write("ER");
    assert_eq!(h.close(), Ok(()));
    assert_eq!(c.ok(&["get", "new/d/target", "-"]), "NEWER");

    // Unlinked while open: gone at once, and never committed.
    let before = meta_commands(&c);
    let mut h = Held::create(&m.join("d/gone"));
    h.write("x");
    std::fs::remove_file(m.join("d/gone")).expect("unlink of an open new file");
    assert_errno(
        "stat after unlink",
        std::fs::metadata(m.join("d/gone")),
        libc::ENOENT,
    );
    assert!(!names(&m.join("d")).contains("gone"));
    h.write("more");
    assert_eq!(h.read(), "xmore", "reads of an unlinked open file");
    assert_eq!(h.close(), Ok(()));
    assert_eq!(
        meta_commands(&c),
        before,
        "an unlinked new file costs nothing"
    );
    assert!(!keys(&c, "new").contains("d/gone"));
    assert_errno(
        "stat in another mount",
        std::fs::metadata(other.join("d/gone")),
        libc::ENOENT,
    );

    // A directory holding only an open new file is not empty.
    std::fs::create_dir(m.join("e")).expect("mkdir");
    let h = Held::create(&m.join("e/p"));
    assert_errno(
        "rmdir of a directory with an open new file",
        std::fs::remove_dir(m.join("e")),
        libc::ENOTEMPTY,
    );
    assert_eq!(h.close(), Ok(()));
    std::fs::remove_file(m.join("e/p")).expect("unlink");
    std::fs::remove_dir(m.join("e")).expect("rmdir once empty");

    // Two mounts create the same name: the first close wins; the second
    // close is EEXIST and overwrites nothing.
    let mut mine = Held::create(&m.join("race"));
    let mut theirs = Held::create(&other.join("race"));
    mine.write("mine");
    theirs.write("theirs");
    assert_eq!(theirs.close(), Ok(()), "the first close");
    assert_eq!(mine.close(), Err(libc::EEXIST), "the second close");
    assert_eq!(c.ok(&["get", "new/race", "-"]), "theirs");
    // Once the kernel's attributes of the loser (1 s) have expired, this
    // mount shows the winner too.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(read(&m.join("race")).unwrap(), b"theirs");

    other.unmount();
    m.unmount();
}
