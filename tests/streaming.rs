//! Objects stream through the client: memory does not grow with object size.

mod common;

use common::{BIN, Cluster, random_file, same_file};

/// Runs the CLI and returns the peak resident memory of that process (KiB).
fn peak_rss_kib(c: &Cluster, args: &[&str]) -> i64 {
    let status = std::process::Command::new(BIN)
        .args(args)
        .env("TESSERA_CLUSTER", &c.cluster_file)
        .env("TESSERA_LOG", "error")
        .status()
        .unwrap();
    assert!(status.success(), "tessera {args:?} failed");
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    usage.ru_maxrss
}

#[test]
fn put_and_get_of_a_large_object_use_bounded_memory() {
    let c = Cluster::start(6);
    c.ok(&["bucket", "create", "big"]);
    let src = c.path("src");
    let len = 300 << 20;
    random_file(&src, len, 77);
    // RUSAGE_CHILDREN reports the largest child so far: every earlier child
    // (init, status) is tiny, so this is the put's peak.
    let put = peak_rss_kib(&c, &["put", src.to_str().unwrap(), "big/obj"]);
    let out = c.path("out");
    let get = peak_rss_kib(&c, &["get", "big/obj", out.to_str().unwrap()]);
    assert!(same_file(&src, &out));
    eprintln!(
        "peak RSS for 300 MiB: put {} MiB, get {} MiB",
        put / 1024,
        get / 1024
    );
    // Bounded by the chunks in flight (4 x (4 MiB + 6 MiB of fragments), plus
    // QUIC send buffers) and the runtime, not by the object: about 90 MiB
    // measured. (The get figure is the largest child so far, so at least the put's.)
    let limit = 128 * 1024;
    assert!(
        put < limit,
        "put peaked at {put} KiB for a {len}-byte object"
    );
    assert!(
        get < limit,
        "get peaked at {get} KiB for a {len}-byte object"
    );
}
