//! Acknowledged writes survive the loss of as many nodes as the policy
//! tolerates, and one loss more gives a clear error, never wrong bytes.

mod common;

use common::{Cluster, random_file, same_file};

const MIB: usize = 1024 * 1024;
const SIZES: [(&str, usize); 5] = [
    ("empty", 0),
    ("one", 1),
    ("under-chunk", 4 * MIB - 1),
    ("over-chunk", 4 * MIB + 1),
    ("big", 50 * MIB),
];

fn survives_losses(policy: &str, seed: u64) {
    let mut c = Cluster::start(6);
    c.ok(&["bucket", "create", "data", "--policy", policy]);
    for (i, (name, len)) in SIZES.iter().enumerate() {
        let src = c.path(name);
        random_file(&src, *len, seed + i as u64);
        c.ok(&["put", src.to_str().unwrap(), &format!("data/{name}")]);
    }
    // Kill nodes that hold fragments of the big object's first chunk, so the
    // third kill is sure to take that chunk below what it needs.
    let (_, holders) = c.placement("data/big", 0);
    let tolerated = 2; // ec:4+2 loses M = 2, rep:3 loses N - 1 = 2
    for &node in &holders[..tolerated] {
        c.kill_node(node);
    }
    for (name, _) in SIZES {
        let out = c.path(&format!("{name}.out"));
        c.ok(&["get", &format!("data/{name}"), out.to_str().unwrap()]);
        assert!(
            same_file(&c.path(name), &out),
            "{policy}: {name} differs after {tolerated} nodes died"
        );
    }
    // A range read across a chunk boundary, through the degraded path.
    let ranged = c.path("range.out");
    c.ok(&[
        "get",
        "data/big",
        ranged.to_str().unwrap(),
        "--range",
        &format!("{}-{}", 4 * MIB - 10, 4 * MIB + 9),
    ]);
    let whole = std::fs::read(c.path("big")).unwrap();
    assert_eq!(
        std::fs::read(&ranged).unwrap(),
        &whole[4 * MIB - 10..4 * MIB + 10]
    );

    c.kill_node(holders[tolerated]);
    let out = c.path("lost.out");
    let err = c.fails(&["get", "data/big", out.to_str().unwrap()]);
    assert!(
        err.contains("unreadable") && err.contains("fragments needed"),
        "unclear error: {err}"
    );
    assert!(!out.exists(), "a failed read must not leave a file behind");
    // Small objects live in meta and stay readable.
    let small = c.path("one.again");
    c.ok(&["get", "data/one", small.to_str().unwrap()]);
    assert!(same_file(&c.path("one"), &small));
}

#[test]
fn ec_4_2_survives_two_node_kills() {
    survives_losses("ec:4+2", 100);
}

#[test]
fn rep_3_survives_two_node_kills() {
    survives_losses("rep:3", 200);
}

#[test]
fn writes_route_around_a_dead_node() {
    // Seven nodes, ec:4+2: with one dead, a write still finds six.
    let mut c = Cluster::start(7);
    c.ok(&["bucket", "create", "data", "--policy", "ec:4+2"]);
    c.kill_node(3);
    let src = c.path("obj");
    random_file(&src, 9 * MIB, 7);
    c.ok(&["put", src.to_str().unwrap(), "data/obj"]);
    let dead = c.node_id(3);
    let stat = c.json(&["stat", "--json", "data/obj"]);
    for chunk in stat["placement"].as_array().unwrap() {
        let nodes: Vec<&str> = chunk["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert!(
            !nodes.contains(&dead.as_str()),
            "fragment placed on the dead node"
        );
        let mut distinct = nodes.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 6, "fragments must be on six distinct nodes");
    }
    let out = c.path("obj.out");
    c.ok(&["get", "data/obj", out.to_str().unwrap()]);
    assert!(same_file(&src, &out));
}
