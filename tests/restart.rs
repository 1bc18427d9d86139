//! Everything acknowledged before a crash of every process is there after.

mod common;

use common::{Cluster, random_file, same_file};

#[test]
fn data_survives_killing_and_restarting_everything() {
    let mut c = Cluster::start(6);
    c.ok(&["bucket", "create", "ecb", "--policy", "ec:4+2"]);
    c.ok(&["bucket", "create", "repb", "--policy", "rep:3"]);
    let objects = [
        ("ecb/a/small", 100usize),
        ("ecb/a/big", 9 << 20),
        ("repb/b/medium", (4 << 20) + 7),
        ("ecb/empty", 0),
    ];
    for (i, (target, len)) in objects.iter().enumerate() {
        let src = c.path(&format!("src{i}"));
        random_file(&src, *len, i as u64);
        c.ok(&["put", src.to_str().unwrap(), target]);
    }
    // Overwrite one: the new version must be the one that survives.
    let newer = c.path("newer");
    random_file(&newer, 5 << 20, 99);
    c.ok(&["put", newer.to_str().unwrap(), "ecb/a/big"]);
    let before = c.json(&["status", "--json"]);

    c.kill_meta();
    for i in 0..c.node_count {
        c.kill_node(i);
    }
    c.start_meta();
    for i in 0..c.node_count {
        c.start_node(i);
    }
    c.wait_nodes_up(6);

    for (i, (target, _)) in objects.iter().enumerate() {
        let out = c.path(&format!("out{i}"));
        c.ok(&["get", target, out.to_str().unwrap()]);
        let want = if *target == "ecb/a/big" {
            newer.clone()
        } else {
            c.path(&format!("src{i}"))
        };
        assert!(
            same_file(&want, &out),
            "{target} changed across the restart"
        );
    }
    let after = c.json(&["status", "--json"]);
    assert_eq!(before["objects"], after["objects"]);
    assert_eq!(before["buckets"], after["buckets"]);
    assert_eq!(
        after["nodes"].as_array().unwrap().len(),
        6,
        "nodes keep their identity across restarts"
    );
    let listing = c.ok(&["ls", "--recursive", "ecb"]);
    assert!(
        listing.contains("a/small") && listing.contains("a/big") && listing.contains("empty"),
        "{listing}"
    );
    let buckets = c.ok(&["bucket", "ls"]);
    assert!(
        buckets.contains("rep:3") && buckets.contains("ec:4+2"),
        "{buckets}"
    );
}

#[test]
fn nodes_and_clients_recover_from_a_meta_crash() {
    let mut c = Cluster::start(6);
    c.ok(&["bucket", "create", "data"]);
    let src = c.path("src");
    random_file(&src, 6 << 20, 1);
    c.ok(&["put", src.to_str().unwrap(), "data/before"]);

    c.kill_meta();
    let err = c.fails(&["ls", "data"]);
    assert!(err.contains("cannot reach the cluster's meta"), "{err}");

    c.start_meta();
    // Nodes keep heartbeating and are back in the map without a restart.
    c.wait_nodes_up(6);
    c.ok(&["put", src.to_str().unwrap(), "data/after"]);
    for key in ["data/before", "data/after"] {
        let out = c.path("out");
        c.ok(&["get", key, out.to_str().unwrap()]);
        assert!(same_file(&src, &out), "{key}");
    }
}
