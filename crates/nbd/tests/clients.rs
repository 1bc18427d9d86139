//! The NBD server driven by the real clients people use: nbdinfo, qemu-img,
//! nbdcopy and nbdsh (libnbd's Python shell), over TCP and a unix socket.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;

use common::{TestServer, have_tool, output, run, sparse_image};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn nbdinfo_lists_exports_with_sizes_block_sizes_and_flags() {
    if !have_tool("nbdinfo") {
        return;
    }
    let server = TestServer::standard();
    let list = json(&run(Command::new("nbdinfo").args([
        "--list",
        "--json",
        &server.uri(""),
    ])));
    assert_eq!(list["protocol"], "newstyle-fixed");
    let exports = list["exports"].as_array().unwrap();
    let names: Vec<&str> = exports
        .iter()
        .map(|e| e["export-name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["disk", "disk512", "disk@snap"]);
    assert_eq!(exports[0]["description"], "a 64 MiB test disk");

    for uri in [server.uri("disk"), server.unix_uri("disk")] {
        let info = json(&run(Command::new("nbdinfo").args(["--json", &uri])));
        assert_eq!(info["structured"], true);
        let disk = &info["exports"][0];
        assert_eq!(disk["export-size"], 64 << 20);
        assert_eq!(disk["block_size_minimum"], 4096);
        assert_eq!(disk["block_size_preferred"], 4096);
        assert_eq!(disk["block_size_maximum"], 32 << 20);
        assert_eq!(disk["is_read_only"], false);
        assert_eq!(disk["can_multi_conn"], true);
        assert_eq!(disk["can_flush"], true);
        assert_eq!(disk["can_fua"], true);
        assert_eq!(disk["can_trim"], true);
        assert_eq!(disk["can_zero"], true);
        assert_eq!(disk["contexts"], serde_json::json!(["base:allocation"]));
    }
    let small = json(&run(
        Command::new("nbdinfo").args(["--json", &server.uri("disk512")])
    ));
    assert_eq!(small["exports"][0]["block_size_minimum"], 512);
    assert_eq!(small["exports"][0]["block_size_preferred"], 4096);
    let snap = json(&run(
        Command::new("nbdinfo").args(["--json", &server.uri("disk@snap")])
    ));
    assert_eq!(snap["exports"][0]["is_read_only"], true);
    assert_eq!(snap["exports"][0]["can_trim"], false);

    // An unknown export: nbdinfo fails and says why.
    let missing = output(Command::new("nbdinfo").arg(server.uri("nope")));
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("nope"), "{stderr}");
    // INFO opened and closed each export; nothing stays open.
    assert!(server.exports.opens("disk") >= 2);
    assert_eq!(
        server
            .device("disk")
            .counters()
            .closes
            .load(Ordering::Relaxed),
        server.exports.opens("disk")
    );
}

#[test]
fn nbdinfo_map_shows_holes_and_data() {
    if !have_tool("nbdinfo") {
        return;
    }
    let server = TestServer::standard();
    let map = run(Command::new("nbdinfo").args(["--map", &server.uri("disk@snap")]));
    let rows: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["0", "4194304", "3", "hole,zero"],
            vec!["4194304", "1048576", "0", "data"],
            vec!["5242880", "61865984", "3", "hole,zero"],
        ],
        "{map}"
    );
    let totals =
        run(Command::new("nbdinfo").args(["--map", "--totals", &server.unix_uri("disk@snap")]));
    assert!(totals.contains("data"), "{totals}");
}

#[test]
fn qemu_img_convert_in_and_out_is_byte_identical_and_map_shows_holes() {
    if !have_tool("qemu-img") {
        return;
    }
    let server = TestServer::standard();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.raw");
    let contents = sparse_image(&image, 64 << 20);
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&image)
        .arg(server.uri("disk512")));
    let device = server.device("disk512");
    assert_eq!(device.read_now(0, contents.len()), contents);
    // Only the data was stored: holes stayed holes.
    let data_bytes = (3 << 20) + 20480 + 8192;
    assert_eq!(device.allocated_bytes(), data_bytes);

    let map = json(&run(Command::new("qemu-img").args([
        "map",
        "--output=json",
        "-f",
        "raw",
        &server.uri("disk512"),
    ])));
    let extents: Vec<(u64, u64, bool)> = map
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["start"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                e["data"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        extents,
        [
            (0, 1 << 20, false),
            (1 << 20, 3 << 20, true),
            (4 << 20, 5 << 20, false),
            (9 << 20, 20480, true),
            (
                (9 << 20) + 20480,
                (64 << 20) - (9 << 20) - 20480 - 8192,
                false
            ),
            ((64 << 20) - 8192, 8192, true),
        ]
    );

    let back = dir.path().join("back.raw");
    run(Command::new("qemu-img")
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &server.unix_uri("disk512"),
        ])
        .arg(&back));
    assert!(
        std::fs::read(&back).unwrap() == contents,
        "qemu-img convert out differs"
    );
}

#[test]
fn nbdcopy_both_directions_and_between_exports() {
    if !have_tool("nbdcopy") {
        return;
    }
    let server = TestServer::standard();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.raw");
    let contents = sparse_image(&image, 64 << 20);
    run(Command::new("nbdcopy")
        .arg("--flush")
        .arg(&image)
        .arg(server.uri("disk")));
    assert_eq!(server.device("disk").read_now(0, contents.len()), contents);
    assert!(
        server
            .device("disk")
            .counters()
            .flushes
            .load(Ordering::Relaxed)
            >= 1
    );

    let back = dir.path().join("back.raw");
    run(Command::new("nbdcopy")
        .arg(server.unix_uri("disk"))
        .arg(&back));
    assert!(
        std::fs::read(&back).unwrap() == contents,
        "nbdcopy out differs"
    );

    // Export to export, several connections each (multi-conn).
    run(Command::new("nbdcopy").args([
        "--connections=4",
        &server.uri("disk"),
        &server.uri("disk512"),
    ]));
    assert_eq!(
        server.device("disk512").read_now(0, contents.len()),
        contents
    );
    // One device per name, shared by all connections: opened once.
    assert_eq!(server.exports.opens("disk512"), 1);
}

/// nbdsh runs `python3 -m nbd`: the Debian package installs the module for
/// the system Python, so put /usr/bin first.
fn nbdsh(script: &str, uri: &str) -> std::process::Output {
    let path = format!("/usr/bin:{}", std::env::var("PATH").unwrap_or_default());
    output(
        Command::new("nbdsh")
            .env("PATH", path)
            .env("NBD_URI", uri)
            .args(["-n", "-c", script]),
    )
}

fn nbdsh_ok(script: &str, uri: &str) {
    let out = nbdsh(script, uri);
    assert!(
        out.status.success(),
        "nbdsh failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const NBDSH_COMMANDS: &str = r#"
import errno, os
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(os.environ["NBD_URI"])
assert h.can_fua() and h.can_flush() and h.can_trim() and h.can_zero() and h.can_multi_conn()
bs = 4096
h.pwrite(b"\x11" * (4 * bs), 0, nbd.CMD_FLAG_FUA)
assert h.pread(4 * bs, 0) == b"\x11" * (4 * bs)
h.flush()
h.trim(bs, 2 * bs)
assert h.pread(bs, 2 * bs) == bytes(bs)
h.zero(bs, 0)
assert h.pread(bs, 0) == bytes(bs)
h.zero(bs, 3 * bs, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)
assert h.pread(bs, 3 * bs) == bytes(bs)

seen = []
def extents(context, offset, entries, err):
    assert context == nbd.CONTEXT_BASE_ALLOCATION
    seen.append((offset, list(entries)))
h.block_status(8 * bs, 0, extents)
# [0,bs) zeroed into a hole, [bs,2bs) data, [2bs,3bs) trimmed, [3bs,4bs)
# zeroed but kept allocated (NO_HOLE), then never written.
assert seen == [(0, [bs, 3, bs, 0, bs, 3, bs, 2, 4 * bs, 3])], seen
seen.clear()
h.block_status(8 * bs, 0, extents, nbd.CMD_FLAG_REQ_ONE)
assert seen == [(0, [bs, 3])], seen

# Pipelining: 64 writes in flight, then 64 reads, completed in any order.
cookies = [h.aio_pwrite(bytes([i]) * bs, (16 + i) * bs) for i in range(64)]
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c)
bufs = [nbd.Buffer(bs) for i in range(64)]
cookies = [h.aio_pread(bufs[i], (16 + i) * bs) for i in range(64)]
while h.aio_in_flight() > 0:
    h.poll(-1)
for i, c in enumerate(cookies):
    assert h.aio_command_completed(c)
    assert bufs[i].to_bytearray() == bytes([i]) * bs

# Errors the server must answer itself (libnbd's own checks off).
h.set_strict_mode(0)
def fails(expected, f, *args):
    try:
        f(*args)
    except nbd.Error as e:
        # libnbd 1.14 gives the errno's name, newer ones its number.
        got = e.errno if isinstance(e.errno, str) else errno.errorcode[e.errno]
        assert got == errno.errorcode[expected], (f, args, e.errno, e.string)
        return
    raise AssertionError(("no error", f, args))
size = h.get_size()
fails(errno.EINVAL, h.pread, bs, size)
fails(errno.ENOSPC, h.pwrite, b"x" * bs, size)
fails(errno.ENOSPC, h.zero, bs, size)
fails(errno.EINVAL, h.trim, bs, size)
fails(errno.EINVAL, h.pread, bs, h.get_block_size(nbd.SIZE_MINIMUM) // 2)
fails(errno.EINVAL, h.pwrite, b"x" * 100, 0)
fails(errno.EINVAL, h.pread, 64 << 20, 0)
fails(errno.EINVAL, h.zero, bs, 0, nbd.CMD_FLAG_FAST_ZERO)
# The connection still works after errors.
assert h.pread(bs, bs) == b"\x11" * bs
h.shutdown()
"#;

#[test]
fn nbdsh_fua_flush_trim_zero_block_status_pipelining_and_errors() {
    if !have_tool("nbdsh") {
        return;
    }
    let server = TestServer::standard();
    nbdsh_ok(NBDSH_COMMANDS, &server.uri("disk"));
    let disk = server.device("disk");
    let counters = disk.counters();
    assert!(counters.fua_writes.load(Ordering::Relaxed) >= 1);
    assert!(counters.flushes.load(Ordering::Relaxed) >= 1);
    assert!(counters.trims.load(Ordering::Relaxed) >= 1);
    assert!(counters.write_zeroes.load(Ordering::Relaxed) >= 2);
    // The same over the unix socket, with simple replies only.
    let simple = NBDSH_COMMANDS
        .replace(
            "h = nbd.NBD()\n",
            "h = nbd.NBD()\nh.set_request_structured_replies(False)\n",
        )
        .replace("h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)\n", "")
        .replace(
            "h.block_status(8 * bs, 0, extents)",
            "seen.append((0, [bs, 3, bs, 0, bs, 3, bs, 2, 4 * bs, 3]))",
        )
        .replace(
            "h.block_status(8 * bs, 0, extents, nbd.CMD_FLAG_REQ_ONE)",
            "seen.append((0, [bs, 3]))",
        );
    nbdsh_ok(&simple, &server.unix_uri("disk512"));
}

const NBDSH_READ_ONLY: &str = r#"
import errno, os
h = nbd.NBD()
h.connect_uri(os.environ["NBD_URI"])
assert h.is_read_only()
assert h.pread(4096, 4 << 20) == b"\xa5" * 4096
h.set_strict_mode(0)
for f, args in [(h.pwrite, (b"x" * 4096, 0)), (h.trim, (4096, 0)), (h.zero, (4096, 0))]:
    try:
        f(*args)
        raise AssertionError("write to a read-only export succeeded")
    except nbd.Error as e:
        assert e.errno in ("EPERM", errno.EPERM), (e.errno, e.string)
h.flush()
h.shutdown()
"#;

#[test]
fn nbdsh_writes_to_a_read_only_export_get_eperm() {
    if !have_tool("nbdsh") {
        return;
    }
    let server = TestServer::standard();
    nbdsh_ok(NBDSH_READ_ONLY, &server.uri("disk@snap"));
    assert_eq!(
        server
            .device("disk@snap")
            .counters()
            .writes
            .load(Ordering::Relaxed),
        0
    );
}

#[test]
fn fio_random_writes_at_queue_depth_32_verify() {
    if !have_tool("fio") {
        return;
    }
    let server = TestServer::standard();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("fio.json");
    run(Command::new("fio")
        .args([
            "--name=verify",
            "--ioengine=nbd",
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=32",
            "--size=32M",
        ])
        .args([
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--output-format=json",
        ])
        .arg(format!("--uri={}", server.uri("disk")))
        .arg(format!("--output={}", report.display()))
        // fio saves its verify state in the working directory.
        .current_dir(dir.path()));
    let report = json(&std::fs::read_to_string(&report).unwrap());
    let job = &report["jobs"][0];
    assert_eq!(job["error"], 0);
    assert_eq!(job["write"]["io_bytes"], 32 << 20);
    // Every block written was read back and its checksum verified.
    assert_eq!(job["read"]["io_bytes"], 32 << 20);
}
