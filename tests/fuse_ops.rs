//! The mount as a new user meets it (issue 16): `fallocate` in every mode
//! it supports, through the copy-on-write chunk list, and EOPNOTSUPP for
//! the rest; and the background mount's log (`--log`, or where an operator
//! looks by default), readiness before `tessera mount` returns, requests it
//! does not implement said once, and a clean exit after `fusermount3 -u`.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{BIN, Cluster, forget_cached, is_mounted, lazy_unmount};
use rand::{RngCore, SeedableRng};

const MIB: usize = 1 << 20;
/// The mount's default chunk size.
const CHUNK: usize = 4 * MIB;

fn run(program: &str, args: &[&str], file: &Path) -> Output {
    Command::new(program)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

/// `fallocate ARGS FILE`, which must succeed.
fn fallocate(args: &[&str], file: &Path) {
    let out = run("fallocate", args, file);
    assert!(
        out.status.success(),
        "fallocate {args:?} {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `path`'s content read afresh (its cached pages dropped first).
fn read_uncached(path: &Path) -> Vec<u8> {
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    forget_cached(&f);
    let mut out = Vec::new();
    f.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    out
}

/// Asserts that `path` holds exactly `want`, naming the first difference.
fn assert_content(path: &Path, want: &[u8], what: &str) {
    let got = read_uncached(path);
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} has {} bytes, {} expected",
        path.display(),
        got.len(),
        want.len()
    );
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: {} differs first at byte {i}: {} read, {} expected",
            path.display(),
            got[i],
            want[i]
        );
    }
}

#[test]
fn fallocate_allocates_punches_and_zeroes_through_the_chunk_list() {
    let c = Cluster::start(1);
    c.ok(&["bucket", "create", "ops", "--policy", "rep:1"]);
    let m = c.mount("ops", &[]);

    // Mode 0 on a new file: the file grows to 1 MiB of zeros (a user saw
    // "Operation not supported" and an empty file).
    let small = m.join("one-mib");
    fallocate(&["-l", "1M"], &small);
    assert_content(&small, &vec![0; MIB], "fallocate -l 1M");
    // Past several chunks.
    let big = m.join("nine-mib");
    fallocate(&["-l", "9M"], &big);
    assert_content(&big, &vec![0; 9 * MIB], "fallocate -l 9M");

    // KEEP_SIZE: the size stays.
    fallocate(&["-n", "-l", "8M"], &small);
    assert_content(&small, &vec![0; MIB], "fallocate -n -l 8M");
    // Mode 0 with an offset grows from where the file ends.
    fallocate(&["-o", "1M", "-l", "512K"], &small);
    assert_content(&small, &vec![0; MIB + MIB / 2], "fallocate -o 1M -l 512K");

    // A file of random bytes over three chunks.
    let mut want = vec![0u8; 2 * CHUNK + 2 * MIB + 123];
    rand::rngs::StdRng::seed_from_u64(16).fill_bytes(&mut want);
    let data = m.join("data");
    std::fs::write(&data, &want).expect("write data through the mount");
    assert_content(&data, &want, "written");

    // Punch a hole from inside chunk 0, over the whole of chunk 1, into
    // chunk 2: the size stays, the range reads as zeros.
    let (off, len) = (3 * MIB + 5, 6 * MIB);
    fallocate(
        &["-p", "-o", &off.to_string(), "-l", &len.to_string()],
        &data,
    );
    want[off..off + len].fill(0);
    assert_content(&data, &want, "fallocate -p (punch hole)");

    // A hole past the end changes nothing.
    fallocate(
        &["-p", "-o", &(want.len() + MIB).to_string(), "-l", "1M"],
        &data,
    );
    assert_content(&data, &want, "fallocate -p past the end");

    // Zero a range inside one chunk, then one that runs past the end
    // (without KEEP_SIZE it grows the file, with zeros).
    fallocate(&["-z", "-o", "100", "-l", "50"], &data);
    want[100..150].fill(0);
    assert_content(&data, &want, "fallocate -z inside a chunk");
    let (off, len) = (want.len() - 1000, 3 * MIB);
    fallocate(
        &["-z", "-o", &off.to_string(), "-l", &len.to_string()],
        &data,
    );
    want[off..].fill(0);
    want.resize(off + len, 0);
    assert_content(&data, &want, "fallocate -z past the end");
    // With KEEP_SIZE it does not grow.
    fallocate(
        &["-z", "-n", "-o", &(want.len() - 10).to_string(), "-l", "1M"],
        &data,
    );
    let end = want.len();
    want[end - 10..].fill(0);
    assert_content(&data, &want, "fallocate -z -n past the end");

    // The modes not supported answer EOPNOTSUPP and change nothing.
    for mode in [
        &["-c", "-o", "0", "-l", "4M"][..],
        &["-i", "-o", "0", "-l", "4M"][..],
    ] {
        let out = run("fallocate", mode, &data);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("Operation not supported"),
            "fallocate {mode:?}: {} {err}",
            out.status
        );
    }
    assert_content(&data, &want, "after the refused modes");

    // Committed at close: a second mount reads the same bytes.
    let other = c.mount("ops", &["--read-only"]);
    assert_content(&other.join("data"), &want, "through a second mount");
    assert_content(
        &other.join("one-mib"),
        &vec![0; MIB + MIB / 2],
        "one-mib elsewhere",
    );
    other.unmount();
    m.unmount();
}

/// Undoes a background mount a failing test leaves behind.
struct Background {
    path: PathBuf,
    pid: Option<i32>,
}

impl Drop for Background {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            lazy_unmount(&self.path);
        }
        if let Some(pid) = self.pid.take() {
            // SAFETY: kill(2) and waitpid(2) of the mount process, which
            // this process adopted (PR_SET_CHILD_SUBREAPER).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// `tessera mount` without `--foreground`: returns once the mount is up;
/// the mount process's id, from what it printed.
fn mount_in_background(
    c: &Cluster,
    target: &str,
    mountpoint: &Path,
    extra: &[&str],
) -> (Output, Option<i32>) {
    let out = Command::new(BIN)
        .arg("mount")
        .arg(target)
        .arg(mountpoint)
        .arg("--cluster")
        .arg(&c.cluster_file)
        .args(extra)
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("run tessera mount");
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    let pid = said
        .split("(process ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok());
    (out, pid)
}

/// Waits up to `timeout` for process `pid` (adopted by this process) to
/// exit; its wait status.
fn wait_adopted(pid: i32, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) with WNOHANG on a process this one adopted.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn background_mount_logs_where_told_says_unimplemented_requests_once_and_exits_cleanly() {
    // The mount process outlives `tessera mount`; adopting it lets this
    // test see its exit status.
    // SAFETY: prctl(2) on this process; no memory is passed.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
    let c = Cluster::start(1);
    c.ok(&["bucket", "create", "logged", "--policy", "rep:1"]);
    let mnt = c.path("mnt-bg");
    std::fs::create_dir_all(&mnt).unwrap();
    let mnt = mnt.canonicalize().unwrap();
    let log = c.path("logs/mount.log");

    let (out, pid) = mount_in_background(&c, "logged", &mnt, &["--log", log.to_str().unwrap()]);
    let mut guard = Background {
        path: mnt.clone(),
        pid,
    };
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tessera mount failed: {said}");
    // Ready when it returned, not some time after.
    assert!(
        is_mounted(&mnt),
        "tessera mount returned before the mount was up: {said}"
    );
    assert!(
        said.contains(log.to_str().unwrap()),
        "the log's place is not said: {said}"
    );
    let pid = pid.unwrap_or_else(|| panic!("no process id in: {said}"));
    assert!(log.exists(), "no log at {}", log.display());

    // Requests the mount does not implement, many times over: ioctls from
    // lsattr (FS_IOC_GETFLAGS) and filefrag (FIEMAP, then FIBMAP).
    let file = mnt.join("f");
    std::fs::write(&file, b"some bytes").unwrap();
    for _ in 0..3 {
        let out = run("lsattr", &[], &file);
        assert!(!out.status.success(), "lsattr on the mount succeeded");
        let _ = run("filefrag", &[], &file);
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let said_ioctl: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("not implemented") && l.contains("ioctl"))
        .collect();
    assert_eq!(
        said_ioctl.len(),
        1,
        "ioctl said {} times:\n{text}",
        said_ioctl.len()
    );
    assert!(
        !text.contains("[Not Implemented]"),
        "fuser's own warnings in the log:\n{text}"
    );

    // A clean unmount from outside is not a failure, and the process ends
    // with 0.
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fusermount3 -u: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = wait_adopted(pid, Duration::from_secs(30));
    guard.pid = if status.is_none() { Some(pid) } else { None };
    let text = std::fs::read_to_string(&log).unwrap();
    let status = status
        .unwrap_or_else(|| panic!("the mount process did not exit after fusermount3 -u:\n{text}"));
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the mount process ended with wait status {status:#x}:\n{text}"
    );
    for bad in ["Failed to umount", "Unmount failed", "unmounting failed"] {
        assert!(
            !text.contains(bad),
            "{bad:?} after a clean unmount:\n{text}"
        );
    }
    assert!(!is_mounted(&mnt));

    // A mount that cannot start fails `tessera mount` with the mount
    // process's own error.
    let (out, _) = mount_in_background(&c, "nosuchbucket", &mnt, &["--log", log.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "mounting a missing bucket succeeded: {said}"
    );
    assert!(
        said.contains("nosuchbucket"),
        "the mount process's error is not passed on: {said}"
    );
    assert!(!is_mounted(&mnt));

    // Without --log, as root: /var/log/tessera/mount-MOUNTPOINT.log.
    let (out, pid) = mount_in_background(&c, "logged", &mnt, &[]);
    guard.pid = pid;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tessera mount failed: {said}");
    let default = PathBuf::from(format!(
        "/var/log/tessera/mount-{}.log",
        mnt.to_str().unwrap().trim_matches('/').replace('/', "-")
    ));
    assert!(
        said.contains(default.to_str().unwrap()),
        "not logging to {}: {said}",
        default.display()
    );
    let text = std::fs::read_to_string(&default).unwrap_or_default();
    let _ = std::fs::remove_file(&default);
    assert!(
        text.contains("tessera mount: ready"),
        "{}:\n{text}",
        default.display()
    );
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(out.status.success());
    let pid = pid.expect("a process id");
    let status = wait_adopted(pid, Duration::from_secs(30));
    guard.pid = if status.is_none() { Some(pid) } else { None };
    assert!(status.is_some_and(|s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0));
}
