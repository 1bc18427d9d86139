//! `tessera mount` (issue 6) errors, each as the errno a program sees on the
//! real kernel FUSE: ENOENT, EEXIST, ENOTEMPTY, ENAMETOOLONG (a name over
//! 255 bytes, a key over 1024), EROFS on a read-only mount, EACCES when the
//! mount's access key lacks a grant, EIO for data that cannot be read back
//! (never wrong bytes), ENOSPC when every node is full, EPERM for hard
//! links and ENOTSUP for extended attributes; and `tessera mount` refusing
//! a missing or busy mountpoint and a missing bucket with a clear error.

mod common;

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Cluster, SmallDisk, assert_errno, close_file, errno_name, forget_cached, fragment_body,
    is_mounted, lazy_unmount, mount_count, random_file,
};

const MIB: u64 = 1 << 20;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// The result of a libc call returning -1 on error, as io::Result.
fn check(r: libc::c_long) -> std::io::Result<libc::c_long> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setxattr(p: &Path, name: &str, value: &[u8]) -> std::io::Result<libc::c_long> {
    let name = CString::new(name).unwrap();
    // SAFETY: valid C strings and a buffer of the given length.
    check(unsafe {
        libc::setxattr(
            cpath(p).as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    } as libc::c_long)
}

fn getxattr(p: &Path, name: &str) -> std::io::Result<libc::c_long> {
    let name = CString::new(name).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    check(unsafe {
        libc::getxattr(
            cpath(p).as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    } as libc::c_long)
}

fn listxattr(p: &Path) -> std::io::Result<libc::c_long> {
    let mut buf = [0u8; 256];
    // SAFETY: a valid C string and a buffer of the given length.
    check(
        unsafe { libc::listxattr(cpath(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
            as libc::c_long,
    )
}

fn truncate(p: &Path, len: i64) -> std::io::Result<libc::c_long> {
    // SAFETY: a valid C string.
    check(unsafe { libc::truncate(cpath(p).as_ptr(), len) } as libc::c_long)
}

/// create + write + close of `path`: the first error, if any. A mount
/// may refuse at open, at write, or only when close sends the data.
fn create_write_close(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    close_file(f)
}

/// open(O_WRONLY) + pwrite + close of an existing file: the first error.
fn overwrite(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.write_all_at(data, 0)?;
    close_file(f)
}

fn read_dir_all(p: &Path) -> std::io::Result<Vec<String>> {
    std::fs::read_dir(p)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect()
}

/// A name of `len` ASCII bytes starting with `tag`.
fn name(tag: char, len: usize) -> String {
    std::iter::once(tag)
        .chain(std::iter::repeat_n('x', len - 1))
        .collect()
}

#[test]
fn namespace_errors_map_to_errno() {
    let c = Cluster::start(1);
    c.ok(&["bucket", "create", "errs", "--policy", "rep:1"]);
    // Objects made outside the mount, never looked up through it before
    // the checks: the mount must ask meta, not only its own cache.
    let src = c.path("small");
    std::fs::write(&src, b"from the CLI").unwrap();
    for key in [
        "errs/cli-made.txt",
        "errs/implicit/obj",
        "errs/implicit2/a/b",
    ] {
        c.ok(&["put", src.to_str().unwrap(), key]);
    }
    let m = c.mount("errs", &[]);
    let p = |rel: &str| m.join(rel);

    // ENOENT
    assert_errno(
        "stat of a missing file",
        std::fs::metadata(p("nope")),
        libc::ENOENT,
    );
    assert_errno(
        "open of a missing file",
        File::open(p("nope")),
        libc::ENOENT,
    );
    assert_errno(
        "unlink of a missing file",
        std::fs::remove_file(p("nope")),
        libc::ENOENT,
    );
    assert_errno(
        "rmdir of a missing directory",
        std::fs::remove_dir(p("nope")),
        libc::ENOENT,
    );
    assert_errno(
        "readdir of a missing directory",
        read_dir_all(&p("nope")),
        libc::ENOENT,
    );
    assert_errno(
        "rename of a missing file",
        std::fs::rename(p("nope"), p("nope2")),
        libc::ENOENT,
    );
    assert_errno(
        "create in a missing directory",
        File::create(p("nodir/x")),
        libc::ENOENT,
    );
    assert_errno(
        "open below a missing directory",
        File::open(p("nodir/x/y")),
        libc::ENOENT,
    );

    // EEXIST
    std::fs::create_dir(p("made")).expect("mkdir");
    create_write_close(&p("made/file"), b"x").expect("create a file");
    assert_errno(
        "mkdir of an existing directory",
        std::fs::create_dir(p("made")),
        libc::EEXIST,
    );
    assert_errno(
        "mkdir of a directory that objects imply",
        std::fs::create_dir(p("implicit")),
        libc::EEXIST,
    );
    assert_errno(
        "mkdir over a file",
        std::fs::create_dir(p("made/file")),
        libc::EEXIST,
    );
    let excl = |rel: &str| OpenOptions::new().write(true).create_new(true).open(p(rel));
    assert_errno(
        "O_CREAT|O_EXCL of an existing file",
        excl("made/file"),
        libc::EEXIST,
    );
    assert_errno(
        "O_CREAT|O_EXCL of an object made by the CLI",
        excl("cli-made.txt"),
        libc::EEXIST,
    );
    assert_errno("O_CREAT|O_EXCL of a directory", excl("made"), libc::EEXIST);
    assert_eq!(std::fs::read(p("cli-made.txt")).unwrap(), b"from the CLI");

    // ENOTEMPTY
    assert_errno(
        "rmdir of a directory with a file",
        std::fs::remove_dir(p("made")),
        libc::ENOTEMPTY,
    );
    assert_errno(
        "rmdir of a directory that objects imply",
        std::fs::remove_dir(p("implicit2")),
        libc::ENOTEMPTY,
    );
    std::fs::create_dir_all(p("outer/inner")).expect("mkdir -p");
    assert_errno(
        "rmdir of a directory holding an empty directory",
        std::fs::remove_dir(p("outer")),
        libc::ENOTEMPTY,
    );
    // ... and once emptied, they go.
    std::fs::remove_dir(p("outer/inner")).expect("rmdir of an empty directory");
    std::fs::remove_dir(p("outer")).expect("rmdir of an emptied directory");
    std::fs::remove_file(p("made/file")).expect("unlink");
    std::fs::remove_dir(p("made")).expect("rmdir of an emptied directory");
    assert_errno(
        "stat after rmdir",
        std::fs::metadata(p("made")),
        libc::ENOENT,
    );

    // ENAMETOOLONG: a name over 255 bytes; a key over 1024 bytes.
    create_write_close(&p(&name('a', 255)), b"ok").expect("a 255-byte name");
    assert_errno(
        "create with a 256-byte name",
        File::create(p(&name('b', 256))),
        libc::ENAMETOOLONG,
    );
    assert_errno(
        "mkdir with a 256-byte name",
        std::fs::create_dir(p(&name('c', 256))),
        libc::ENAMETOOLONG,
    );
    // Four directories of 200 bytes: "d/d/d/d" is 803 bytes of key, so a
    // file named with 220 bytes makes a key of exactly 1024, 221 one of 1025.
    let deep: PathBuf = ['1', '2', '3', '4'].iter().map(|t| name(*t, 200)).collect();
    std::fs::create_dir_all(m.join(&deep)).expect("four 200-byte directories");
    assert_errno(
        "create of a 1025-byte key",
        File::create(m.join(&deep).join(name('l', 221))),
        libc::ENAMETOOLONG,
    );
    assert_errno(
        "mkdir of a 1025-byte key",
        std::fs::create_dir(m.join(&deep).join(name('m', 221))),
        libc::ENAMETOOLONG,
    );
    assert_errno(
        "rename to a 1025-byte key",
        std::fs::rename(p(&name('a', 255)), m.join(&deep).join(name('n', 221))),
        libc::ENAMETOOLONG,
    );
    assert!(
        p(&name('a', 255)).exists(),
        "a refused rename lost its source"
    );

    // Hard links: EPERM; extended attributes: ENOTSUP.
    create_write_close(&p("plain"), b"plain").expect("create");
    assert_errno(
        "link(2)",
        std::fs::hard_link(p("plain"), p("hard")),
        libc::EPERM,
    );
    assert_errno(
        "setxattr",
        setxattr(&p("plain"), "user.colour", b"blue"),
        libc::ENOTSUP,
    );
    assert_errno(
        "getxattr",
        getxattr(&p("plain"), "user.colour"),
        libc::ENOTSUP,
    );
    // An empty list is as good an answer as ENOTSUP.
    match listxattr(&p("plain")) {
        Ok(0) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
        other => panic!("listxattr: expected ENOTSUP or an empty list, got {other:?}"),
    }

    // A key of exactly 1024 bytes is a valid key (S3's limit): an object
    // made by the CLI reads through the mount, and the mount makes one.
    let key = format!("{}/{}", deep.to_str().unwrap(), name('j', 220));
    assert_eq!(key.len(), 1024);
    c.ok(&["put", src.to_str().unwrap(), &format!("errs/{key}")]);
    assert_eq!(
        std::fs::read(m.join(&key)).expect("read of a 1024-byte key made by the CLI"),
        b"from the CLI"
    );
    let key = format!("{}/{}", deep.to_str().unwrap(), name('k', 220));
    create_write_close(&m.join(&key), b"1024").expect("create of a 1024-byte key");
    c.ok(&["stat", &format!("errs/{key}")]);
    m.unmount();
}

#[test]
fn a_read_only_mount_gives_erofs() {
    let c = Cluster::start(1);
    c.ok(&["bucket", "create", "rdonly", "--policy", "rep:1"]);
    let src = c.path("small");
    std::fs::write(&src, b"read me").unwrap();
    c.ok(&["put", src.to_str().unwrap(), "rdonly/file.txt"]);
    c.ok(&["put", src.to_str().unwrap(), "rdonly/dir/x"]);
    let m = c.mount("rdonly", &["--read-only"]);
    let p = |rel: &str| m.join(rel);
    assert_eq!(std::fs::read(p("file.txt")).expect("read"), b"read me");
    let mut names = read_dir_all(&m.path).expect("readdir");
    names.sort();
    assert_eq!(names, ["dir", "file.txt"]);

    assert_errno("create", File::create(p("new.txt")), libc::EROFS);
    assert_errno(
        "open for writing",
        overwrite(&p("file.txt"), b"X"),
        libc::EROFS,
    );
    assert_errno("truncate", truncate(&p("file.txt"), 0), libc::EROFS);
    assert_errno("mkdir", std::fs::create_dir(p("newdir")), libc::EROFS);
    assert_errno("unlink", std::fs::remove_file(p("file.txt")), libc::EROFS);
    assert_errno("rmdir", std::fs::remove_dir(p("dir")), libc::EROFS);
    assert_errno(
        "rename",
        std::fs::rename(p("file.txt"), p("moved")),
        libc::EROFS,
    );
    assert_errno(
        "symlink",
        std::os::unix::fs::symlink("file.txt", p("link")),
        libc::EROFS,
    );
    use std::os::unix::fs::PermissionsExt;
    assert_errno(
        "chmod",
        std::fs::set_permissions(p("file.txt"), std::fs::Permissions::from_mode(0o600)),
        libc::EROFS,
    );
    // Nothing changed.
    let out = c.path("out");
    c.ok(&["get", "rdonly/file.txt", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), b"read me");
    assert!(!c.ok(&["ls", "-r", "rdonly"]).contains("new.txt"));
    m.unmount();
}

#[test]
fn a_key_without_grants_gives_eacces() {
    let c = Cluster::start(1);
    c.ok(&["bucket", "create", "acl", "--policy", "rep:1"]);
    let src = c.path("small");
    std::fs::write(&src, b"hello").unwrap();
    c.ok(&["put", src.to_str().unwrap(), "acl/hello.txt"]);
    c.ok(&["put", src.to_str().unwrap(), "acl/dir/x"]);
    let key = |name: &str| {
        c.json(&["key", "create", name, "--json"])["access_key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (reader, nobody, writer) = (key("reader"), key("nobody"), key("writer"));
    c.ok(&["bucket", "allow", "acl", &reader, "read"]);
    c.ok(&["bucket", "allow", "acl", &writer, "write"]);

    // Read grant: reads work, every change is EACCES.
    let m = c.mount("acl", &["--access-key", &reader]);
    let p = |rel: &str| m.join(rel);
    assert_eq!(
        std::fs::read(p("hello.txt")).expect("read with a read grant"),
        b"hello"
    );
    let mut names = read_dir_all(&m.path).expect("readdir with a read grant");
    names.sort();
    assert_eq!(names, ["dir", "hello.txt"]);
    assert_errno(
        "create with a read grant",
        create_write_close(&p("new.txt"), b"x"),
        libc::EACCES,
    );
    assert_errno(
        "overwrite with a read grant",
        overwrite(&p("hello.txt"), b"J"),
        libc::EACCES,
    );
    assert_errno(
        "mkdir with a read grant",
        std::fs::create_dir(p("newdir")),
        libc::EACCES,
    );
    assert_errno(
        "unlink with a read grant",
        std::fs::remove_file(p("hello.txt")),
        libc::EACCES,
    );
    assert_errno(
        "rename with a read grant",
        std::fs::rename(p("hello.txt"), p("moved.txt")),
        libc::EACCES,
    );
    m.unmount();
    let out = c.path("out");
    c.ok(&["get", "acl/hello.txt", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"hello",
        "a refused write changed the object"
    );
    let ls = c.ok(&["ls", "-r", "acl"]);
    assert!(!ls.contains("new.txt") && !ls.contains("moved.txt"), "{ls}");

    // No grant: reads are EACCES too.
    let m = c.mount("acl", &["--access-key", &nobody]);
    assert_errno(
        "read without a grant",
        std::fs::read(m.join("hello.txt")),
        libc::EACCES,
    );
    assert_errno(
        "readdir without a grant",
        read_dir_all(&m.path),
        libc::EACCES,
    );
    m.unmount();

    // Write grant: a write goes through (the key is what was checked).
    let m = c.mount("acl", &["--access-key", &writer]);
    create_write_close(&m.join("new.txt"), b"by the writer").expect("create with a write grant");
    m.unmount();
    c.ok(&["get", "acl/new.txt", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), b"by the writer");
}

/// Reads `path` from the start with read(2) until end of file or an error;
/// the bytes read and the error.
fn read_until_error(path: &Path) -> (Vec<u8>, Option<std::io::Error>) {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return (Vec::new(), Some(e)),
    };
    forget_cached(&f);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (got, Some(e)),
        }
    }
}

/// Reading `path` (a copy of `src` with chunk `bad` unreadable) must end
/// in EIO, after bytes that are all right and all before that chunk.
fn assert_eio_after_right_bytes(path: &Path, src: &Path, bad_chunk_start: u64) {
    let want = std::fs::read(src).unwrap();
    let (got, err) = read_until_error(path);
    let err = err.unwrap_or_else(|| {
        panic!(
            "{}: read to the end ({} of {} bytes) without an error although a chunk is unreadable{}",
            path.display(),
            got.len(),
            want.len(),
            if got == want {
                ""
            } else {
                ", and the bytes are wrong"
            }
        )
    });
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EIO),
        "{}: reading an unreadable chunk: expected EIO, got {err} ({})",
        path.display(),
        errno_name(err.raw_os_error().unwrap_or(0))
    );
    assert!(
        got.len() as u64 <= bad_chunk_start,
        "{}: {} bytes read before EIO, but the chunk from byte {bad_chunk_start} is unreadable",
        path.display(),
        got.len()
    );
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!("{}: wrong byte at {i} before EIO", path.display());
    }
}

#[test]
fn unreadable_data_gives_eio_never_wrong_bytes() {
    let c = Cluster::start(6);
    c.ok(&["bucket", "create", "data", "--policy", "ec:4+2"]);
    let objects = [
        ("gone.bin", 10 * MIB + 123),
        ("rot.bin", 6 * MIB),
        ("fine.bin", 5 * MIB),
    ];
    for (i, (name, len)) in objects.iter().enumerate() {
        let src = c.path(name);
        random_file(&src, *len as usize, 50 + i as u64);
        c.ok(&["put", src.to_str().unwrap(), &format!("data/{name}")]);
    }
    // gone.bin: three of the six fragment files of chunk 1 deleted (ec:4+2
    // needs four). rot.bin: three fragments of chunk 0 with flipped bytes.
    let (chunk, holders) = c.placement("data/gone.bin", 1);
    for (index, node) in holders.iter().enumerate().take(3) {
        std::fs::remove_file(c.fragment_path(*node, &chunk, index)).expect("remove fragment");
    }
    let (chunk, holders) = c.placement("data/rot.bin", 0);
    for (index, node) in holders.iter().enumerate().take(3) {
        let path = c.fragment_path(*node, &chunk, index);
        let mut raw = std::fs::read(&path).expect("fragment file");
        let body = fragment_body(&raw);
        for off in [body.start + 10, body.start + 1000, body.end - 1] {
            raw[off] ^= 0x5a;
        }
        std::fs::write(&path, raw).unwrap();
    }
    // The setup is what it should be: the CLI cannot read them either.
    let out = c.path("out");
    c.fails(&["get", "data/gone.bin", out.to_str().unwrap()]);
    c.fails(&["get", "data/rot.bin", out.to_str().unwrap()]);

    let m = c.mount("data", &[]);
    let gone_src = std::fs::read(c.path("gone.bin")).unwrap();
    // What is readable reads: chunk 0's first MiB, chunk 2.
    let f = File::open(m.join("gone.bin")).expect("open");
    let mut buf = vec![0u8; MIB as usize];
    f.read_exact_at(&mut buf, 0)
        .expect("read of intact chunk 0");
    assert!(buf == gone_src[..MIB as usize], "chunk 0 reads wrong bytes");
    f.read_exact_at(&mut buf[..MIB as usize / 2], 8 * MIB + 100)
        .expect("read of intact chunk 2");
    assert!(
        buf[..MIB as usize / 2]
            == gone_src[(8 * MIB + 100) as usize..(8 * MIB + 100 + MIB / 2) as usize],
        "chunk 2 reads wrong bytes"
    );
    // What is not: EIO.
    let r = f.read_exact_at(&mut buf[..4096], 5 * MIB);
    assert_errno("pread inside the unreadable chunk", r, libc::EIO);
    drop(f);
    assert_eio_after_right_bytes(&m.join("gone.bin"), &c.path("gone.bin"), 4 * MIB);
    assert_eio_after_right_bytes(&m.join("rot.bin"), &c.path("rot.bin"), 0);
    // The mount is fine afterwards.
    let (got, err) = read_until_error(&m.join("fine.bin"));
    assert!(err.is_none(), "fine.bin: {err:?}");
    assert!(
        got == std::fs::read(c.path("fine.bin")).unwrap(),
        "fine.bin reads wrong bytes"
    );
    // cp gives up with an error, and never writes wrong bytes.
    let cp = Command::new("cp")
        .arg(m.join("gone.bin"))
        .arg(c.path("cp.out"))
        .output()
        .expect("run cp");
    assert!(!cp.status.success(), "cp of an unreadable file succeeded");
    let stderr = String::from_utf8_lossy(&cp.stderr);
    assert!(stderr.contains("Input/output error"), "cp: {stderr}");
    m.unmount();
}

#[test]
fn a_full_cluster_gives_enospc() {
    // Six nodes with 8 MiB disks each: ec:4+2 stores 1.5x, so 48 MiB of
    // disk holds well under 32 MiB of data; a 64 MiB file cannot fit.
    let disks = std::sync::Mutex::new(Vec::new());
    let mut c = Cluster::start_prepared(6, &[], |_, dir| {
        disks.lock().unwrap().push(SmallDisk::mount(dir, "8m"));
    });
    c.ok(&["bucket", "create", "full", "--policy", "ec:4+2"]);
    let m = c.mount("full", &[]);
    create_write_close(&m.join("small.txt"), b"fits").expect("a small file");
    // A chunked file stored before the disks fill must stay readable.
    let before = c.path("before.src");
    random_file(&before, (4 * MIB + 5) as usize, 8);
    create_write_close(&m.join("before.bin"), &std::fs::read(&before).unwrap())
        .expect("a 4 MiB file before the cluster is full");

    let t = Instant::now();
    // Where it shows is the mount's choice (write, fsync or close); that
    // it shows, as ENOSPC, is not.
    let mut step = "create";
    let r = (|| -> std::io::Result<()> {
        let mut f = File::create(m.join("huge.bin"))?;
        let block = vec![0x5au8; MIB as usize];
        step = "write";
        for _ in 0..64 {
            f.write_all(&block)?;
        }
        step = "fsync";
        f.sync_all()?;
        step = "close";
        close_file(f)
    })();
    eprintln!(
        "the 64 MiB write ended after {:?} at {step}: {r:?}",
        t.elapsed()
    );
    assert_errno(
        "write, fsync and close of 64 MiB on a full cluster",
        r,
        libc::ENOSPC,
    );
    // The mount still answers, and what was stored before is intact.
    let names = read_dir_all(&m.path).expect("readdir after ENOSPC");
    assert!(names.contains(&"small.txt".to_string()), "{names:?}");
    assert_eq!(std::fs::read(m.join("small.txt")).expect("read"), b"fits");
    let (got, err) = read_until_error(&m.join("before.bin"));
    assert!(err.is_none(), "before.bin after ENOSPC: {err:?}");
    assert!(
        got == std::fs::read(&before).unwrap(),
        "before.bin reads wrong bytes after ENOSPC"
    );
    m.unmount();
    // Unmount the small disks before the cluster's directory is removed.
    for i in 0..6 {
        c.kill_node(i);
    }
    drop(std::mem::take(&mut *disks.lock().unwrap()));
    drop(c);
}

/// Runs `tessera mount` where it must refuse; its stderr. A mount that
/// starts anyway is undone before the test fails.
fn mount_must_fail(c: &Cluster, target: &str, mountpoint: &Path) -> String {
    let before = mount_count(mountpoint);
    let log = c.path(&format!("refused-{}.log", target.replace('/', "_")));
    let mut child = c
        .mount_command(target, mountpoint, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(&log).unwrap()))
        .spawn()
        .expect("spawn tessera mount");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline || mount_count(mountpoint) > before {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("tessera mount {target} {}: {stderr}", mountpoint.display());
    match status {
        Some(s) => {
            assert!(
                !s.success(),
                "tessera mount {target} {} exited 0: {stderr}",
                mountpoint.display()
            );
            stderr
        }
        None => {
            // SAFETY: kill(2) of our own child, not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(2));
            if mount_count(mountpoint) > before {
                lazy_unmount(mountpoint);
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "tessera mount {target} {} did not refuse (still running after 30s or mounted): {stderr}",
                mountpoint.display()
            );
        }
    }
}

#[test]
fn mount_refuses_missing_or_busy_mountpoints_and_missing_buckets() {
    let c = Cluster::start(1);
    c.ok(&["bucket", "create", "bkt", "--policy", "rep:1"]);
    let missing = c.path("no/such/dir");
    let err = mount_must_fail(&c, "bkt", &missing);
    assert!(
        err.contains(missing.to_str().unwrap()),
        "the error for a missing mountpoint does not name it: {err}"
    );
    assert!(!is_mounted(&missing));

    let m = c.mount("bkt", &[]);
    let err = mount_must_fail(&c, "bkt", &m.path);
    assert!(
        err.contains(m.path.to_str().unwrap()),
        "the error for a busy mountpoint does not name it: {err}"
    );
    // The first mount is untouched.
    create_write_close(&m.join("still.txt"), b"here").expect("the first mount works");

    let dir = c.path("mnt-nobucket");
    std::fs::create_dir_all(&dir).unwrap();
    let err = mount_must_fail(&c, "nosuchbucket", &dir);
    assert!(
        err.contains("nosuchbucket"),
        "the error for a missing bucket does not name it: {err}"
    );
    assert!(!is_mounted(&dir));
    m.unmount();
}
