//! Bytes that rot on disk are never returned: the read verifies every
//! fragment against the BLAKE3 meta recorded, reads another fragment instead,
//! and reports the bad one to meta.

mod common;

use common::{Cluster, fragment_body, random_file, same_file};

fn flip_bytes(path: &std::path::Path) {
    let mut raw = std::fs::read(path).expect("fragment file");
    // Past the 64-byte header: the body is what rots silently.
    let body = fragment_body(&raw);
    for off in [body.start + 10, body.start + 1000, body.end - 1] {
        raw[off] ^= 0x5a;
    }
    std::fs::write(path, raw).unwrap();
}

fn reports(c: &Cluster) -> Vec<(String, u64, String)> {
    let status = c.json(&["status", "--json"]);
    status["recent_corrupt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["chunk"].as_str().unwrap().to_string(),
                r["index"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn wait_for_report(c: &Cluster, chunk: &str, index: u64) -> String {
    // The report is sent beside the read; give it a moment to land.
    for _ in 0..50 {
        if let Some(r) = reports(c)
            .into_iter()
            .find(|r| r.0 == chunk && r.1 == index)
        {
            return r.2;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "no corruption report for chunk {chunk} fragment {index}: {:?}",
        reports(c)
    );
}

#[test]
fn flipped_bytes_are_repaired_on_read_and_reported() {
    let c = Cluster::start(6);
    for (bucket, policy) in [("ecb", "ec:4+2"), ("repb", "rep:3")] {
        c.ok(&["bucket", "create", bucket, "--policy", policy]);
        let src = c.path(&format!("{bucket}.src"));
        random_file(&src, 10 * 1024 * 1024 + 123, 42);
        let target = format!("{bucket}/obj");
        c.ok(&["put", src.to_str().unwrap(), &target]);

        let (chunk, holders) = c.placement(&target, 0);
        // Fragment 0 is the first one a reader asks for, so it will be read.
        flip_bytes(&c.fragment_path(holders[0], &chunk, 0));

        let out = c.path(&format!("{bucket}.out"));
        c.ok(&["get", &target, out.to_str().unwrap()]);
        assert!(
            same_file(&src, &out),
            "{policy}: corrupt fragment leaked into the read"
        );
        let reason = wait_for_report(&c, &chunk, 0);
        assert!(reason.contains("BLAKE3"), "{reason}");
    }
    let status = c.json(&["status", "--json"]);
    assert!(status["corrupt_reports"].as_u64().unwrap() >= 2);
}

#[test]
fn missing_fragment_file_is_read_around_and_reported() {
    let c = Cluster::start(6);
    c.ok(&["bucket", "create", "data", "--policy", "ec:4+2"]);
    let src = c.path("src");
    random_file(&src, 6 * 1024 * 1024, 9);
    c.ok(&["put", src.to_str().unwrap(), "data/obj"]);
    let (chunk, holders) = c.placement("data/obj", 1);
    std::fs::remove_file(c.fragment_path(holders[1], &chunk, 1)).unwrap();
    let out = c.path("out");
    c.ok(&["get", "data/obj", out.to_str().unwrap()]);
    assert!(same_file(&src, &out));
    let reason = wait_for_report(&c, &chunk, 1);
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn corruption_beyond_parity_fails_cleanly() {
    let c = Cluster::start(6);
    c.ok(&["bucket", "create", "data", "--policy", "ec:4+2"]);
    let src = c.path("src");
    random_file(&src, 5 * 1024 * 1024, 11);
    c.ok(&["put", src.to_str().unwrap(), "data/obj"]);
    let (chunk, holders) = c.placement("data/obj", 0);
    for (i, node) in holders.iter().enumerate().take(3) {
        flip_bytes(&c.fragment_path(*node, &chunk, i));
    }
    let out = c.path("out");
    let err = c.fails(&["get", "data/obj", out.to_str().unwrap()]);
    assert!(
        err.contains("unreadable") && err.contains("BLAKE3"),
        "{err}"
    );
    assert!(!out.exists());
}
