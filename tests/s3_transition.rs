//! Lifecycle transitions between storage classes (issue 15): the operator
//! maps STANDARD_IA to ec:4+2 (`tessera storage-class set`), boto3 writes
//! objects into a bucket of policy rep:2 and a rule moves them to
//! STANDARD_IA after one lifecycle day (`--lifecycle-day 2s`); the meta
//! leader's repairer re-encodes them, slowly (`--repair-rate`), and a node
//! is SIGKILLed while it does. Every object keeps its bytes, reports its
//! new class, and its chunks are laid out as ec:4+2 (`tessera stat
//! --json`); writes naming the class take its policy at once
//! (tests/s3_transition.py).

mod common;

use std::time::{Duration, Instant};

use common::Cluster;

/// The policy of each chunk of `target`, from `tessera stat --json`.
fn chunk_policies(c: &Cluster, target: &str) -> Vec<(String, usize)> {
    let stat = c.json(&["stat", target, "--json"]);
    stat["placement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["policy"].as_str().unwrap().to_string(),
                p["nodes"].as_array().unwrap().len(),
            )
        })
        .collect()
}

#[test]
fn transitions_re_encode_objects_in_the_new_policy() {
    let mut c = Cluster::start_with(7, &["--lifecycle-day", "2s", "--repair-rate", "6MiB"]);
    let endpoint = c.start_s3();
    let k = c.json(&["key", "create", "tier", "--json"]);
    let (id, secret) = (
        k["access_key"].as_str().unwrap().to_string(),
        k["secret_key"].as_str().unwrap().to_string(),
    );

    // The operator's map: S3's STANDARD is each bucket's policy, and
    // archive classes (read only after a restore in S3) cannot be mapped.
    c.ok(&["storage-class", "set", "STANDARD_IA", "ec:4+2"]);
    let err = c.fails(&["storage-class", "set", "STANDARD", "rep:3"]);
    assert!(err.contains("STANDARD"), "{err}");
    let err = c.fails(&["storage-class", "set", "GLACIER", "ec:4+2"]);
    assert!(err.contains("GLACIER"), "{err}");
    let classes = c.json(&["storage-class", "ls", "--json"]);
    assert_eq!(
        classes,
        serde_json::json!([{"class": "STANDARD_IA", "policy": "ec:4+2"}])
    );

    common::python_checks(
        "s3_transition.py",
        &[&endpoint, &id, &secret, "put"],
        "transition: put done",
    );
    assert_eq!(chunk_policies(&c, "tier/direct")[0], ("ec:4+2".into(), 6));
    assert_eq!(chunk_policies(&c, "tier/multi")[0], ("ec:4+2".into(), 6));
    assert_eq!(chunk_policies(&c, "tier/t/00")[0], ("rep:2".into(), 2));

    // SIGKILL a node once the re-encoding has begun and before it ends.
    let started = Instant::now();
    let policy_of = |i: usize| chunk_policies(&c, &format!("tier/t/{i:02}"))[0].0.clone();
    loop {
        let done = (0..24).filter(|i| policy_of(*i) == "ec:4+2").count();
        if done > 0 {
            assert!(done < 24, "every object re-encoded before the kill");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no transition began"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.kill_node(3);

    common::python_checks(
        "s3_transition.py",
        &[&endpoint, &id, &secret, "check"],
        "transition: all checks passed",
    );
    for i in 0..24 {
        for (policy, nodes) in chunk_policies(&c, &format!("tier/t/{i:02}")) {
            assert_eq!((policy.as_str(), nodes), ("ec:4+2", 6), "tier/t/{i:02}");
        }
    }
    // Archive classes without a mapping: stored, answered, not applied.
    assert_eq!(chunk_policies(&c, "tier/g/archive")[0].0, "rep:2");
    // The node comes back; nothing was lost while it was gone.
    c.start_node(3);
    c.wait_nodes_up(7);
    let status = c.json(&["status", "--json"]);
    assert_eq!(status["chunks"]["lost"], 0, "{status}");
    common::assert_no_error_lines(&c.path("s3.log"));
}
