//! A file system on an NBD export: nbdfuse exposes the export as a file,
//! a loop device turns the file into a block device, and ext4 runs on it
//! (mkfs, mount, a tree of files, umount, `fsck.ext4 -n` clean, mount again
//! and compare). Needs root, /dev/fuse and loop devices (no kernel NBD).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestServer, have_tool, output, run};
use tessera_nbd::{MemoryDevice, MemoryExports, NbdOptions};

/// Undoes whatever was set up, in reverse order, even when the test panics.
#[derive(Default)]
struct Cleanup {
    mounted: Option<PathBuf>,
    loop_device: Option<String>,
    fuse_mount: Option<PathBuf>,
    nbdfuse: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(dir) = self.mounted.take() {
            let _ = Command::new("umount").arg(dir).status();
        }
        if let Some(dev) = self.loop_device.take() {
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
        if let Some(dir) = self.fuse_mount.take() {
            // The loop device lets go of the file asynchronously after
            // `losetup -d`: until then the unmount is refused as busy.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !Command::new("fusermount3")
                .arg("-u")
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success())
            {
                if Instant::now() > deadline {
                    let _ = Command::new("umount").arg("-l").arg(&dir).status();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if let Some(mut child) = self.nbdfuse.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
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

fn can_mount() -> bool {
    let root = output(Command::new("id").arg("-u")).stdout == b"0\n";
    let ok = root && Path::new("/dev/fuse").exists() && Path::new("/dev/loop-control").exists();
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the nbdfuse test needs root, /dev/fuse and loop devices (CI=true)");
        }
        eprintln!("skipping: needs root, /dev/fuse and loop devices");
    }
    ok
}

/// A tree of files with contents that depend on their path.
fn write_tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for d in 0..5 {
        let dir = root.join(format!("dir{d}")).join("sub");
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..20 {
            let path = dir.join(format!("file{f}.bin"));
            let len = 1000 + (d * 20 + f) * 7919;
            let contents: Vec<u8> = (0..len).map(|i| (i * 31 + d * 7 + f) as u8).collect();
            std::fs::write(&path, &contents).unwrap();
            files.push((path.strip_prefix(root).unwrap().to_path_buf(), contents));
        }
    }
    let big: Vec<u8> = (0..(8u32 << 20))
        .map(|i| (i / 4096) as u8 ^ (i as u8))
        .collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    files.push((PathBuf::from("big.bin"), big));
    files
}

#[test]
fn ext4_on_nbdfuse_4096_byte_blocks() {
    ext4_on_nbdfuse(4096);
}

#[test]
fn ext4_on_nbdfuse_512_byte_blocks() {
    ext4_on_nbdfuse(512);
}

/// Exposes export `vol` as a file with nbdfuse (a connection of its own)
/// and attaches a loop device to it, with the export's block size as its
/// sector size, so the kernel never sends the export I/O smaller than the
/// minimum block size it advertises (libnbd refuses such requests itself).
fn attach(server: &TestServer, work: &Path, block_size: u32, round: u32) -> (Cleanup, String) {
    let fuse_dir = work.join(format!("fuse{round}"));
    std::fs::create_dir_all(&fuse_dir).unwrap();
    let pidfile = work.join("nbdfuse.pid");
    let _ = std::fs::remove_file(&pidfile);
    let mut cleanup = Cleanup::default();
    let image = fuse_dir.join("vol");
    cleanup.nbdfuse = Some(
        Command::new("nbdfuse")
            .arg("-P")
            .arg(&pidfile)
            .arg(&image)
            .arg(server.unix_uri("vol"))
            .spawn()
            .expect("start nbdfuse"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pidfile.exists() {
        assert!(Instant::now() < deadline, "nbdfuse did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    cleanup.fuse_mount = Some(fuse_dir);
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 256 << 20);
    let loop_device = run(Command::new("losetup")
        .args(["-f", "--show", "--sector-size", &block_size.to_string()])
        .arg(&image))
    .trim()
    .to_string();
    cleanup.loop_device = Some(loop_device.clone());
    (cleanup, loop_device)
}

/// mkfs, mount, a tree of files, umount; then through a new nbdfuse and
/// loop device (nothing cached from the first): fsck, mount, compare.
fn ext4_on_nbdfuse(block_size: u32) {
    for tool in [
        "nbdfuse",
        "fusermount3",
        "losetup",
        "mkfs.ext4",
        "fsck.ext4",
        "mount",
    ] {
        if !have_tool(tool) {
            return;
        }
    }
    if !can_mount() {
        return;
    }
    let exports = Arc::new(MemoryExports::new());
    exports.insert("vol", Arc::new(MemoryDevice::new(256 << 20, block_size)));
    let server = TestServer::start(exports, NbdOptions::default());
    let work = tempfile::tempdir().unwrap();
    let fs_dir = work.path().join("fs");
    std::fs::create_dir_all(&fs_dir).unwrap();

    let (mut cleanup, loop_device) = attach(&server, work.path(), block_size, 1);
    run(Command::new("mkfs.ext4").args(["-q", "-F", &loop_device]));
    run(Command::new("mount").arg(&loop_device).arg(&fs_dir));
    cleanup.mounted = Some(fs_dir.clone());
    let files = write_tree(&fs_dir);
    run(Command::new("umount").arg(&fs_dir));
    cleanup.mounted = None;
    drop(cleanup);
    let device = server.device("vol");
    assert!(
        device
            .counters()
            .flushes
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );

    let (mut cleanup, loop_device) = attach(&server, work.path(), block_size, 2);
    run(Command::new("fsck.ext4").args(["-n", "-f", &loop_device]));
    run(Command::new("mount")
        .args(["-o", "ro"])
        .arg(&loop_device)
        .arg(&fs_dir));
    cleanup.mounted = Some(fs_dir.clone());
    for (path, contents) in &files {
        assert!(
            std::fs::read(fs_dir.join(path)).unwrap() == *contents,
            "{} differs after remount",
            path.display()
        );
    }
    drop(cleanup);
    // The file system's data is on the device, and most of it is holes.
    assert!(device.allocated_bytes() > 8 << 20);
    assert!(
        device.allocated_bytes() < 128 << 20,
        "{} bytes allocated",
        device.allocated_bytes()
    );
}
