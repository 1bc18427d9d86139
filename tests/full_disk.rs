//! A node whose disk fills up refuses fragments with a clear error, keeps
//! nothing partial, and writes go to another node: nothing is lost.

mod common;

use std::time::Duration;

use common::{Cluster, SmallDisk, http_get, metric, random_file, same_file, wait_until};

#[test]
fn a_full_node_is_routed_around() {
    let disks = std::sync::Mutex::new(Vec::new());
    // Seven nodes so that ec:4+2 has a spare; node 0 gets a 2 MiB disk but,
    // like every node, claims 1 TiB (as when its disk fills from outside), so
    // placement keeps choosing it.
    let mut c = Cluster::start_prepared(7, &["--capacity", "1T"], |i, dir| {
        if i == 0 {
            disks.lock().unwrap().push(SmallDisk::mount(dir, "2m"));
        }
    });
    c.ok(&["bucket", "create", "data", "--policy", "ec:4+2"]);
    let src = c.path("src");
    random_file(&src, 40 << 20, 4);
    c.ok(&["put", src.to_str().unwrap(), "data/obj"]);
    let out = c.path("out");
    c.ok(&["get", "data/obj", out.to_str().unwrap()]);
    assert!(same_file(&src, &out));

    let (_, text) = http_get(c.metrics_addr(Some(0)), "/metrics");
    let id = c.node_id(0);
    let refused = metric(
        &text,
        &format!("tessera_node_fragment_put_errors_total{{node=\"{id}\"}}"),
    )
    .unwrap();
    assert!(refused >= 1.0, "node 0 never ran out of space: {text}");
    // What the full node refused left no partial file behind. A writer
    // that gave up on a slow fragment (a loaded machine) moves on before
    // the node's own failure removes its file: allow the node a moment.
    let tmp_files = || {
        std::fs::read_dir(c.node_dir(0).join("tmp"))
            .unwrap()
            .count()
    };
    wait_until("node 0's tmp/ to be empty", Duration::from_secs(10), || {
        tmp_files() == 0
    });
    // Every chunk still has six fragments on six distinct nodes.
    let stat = c.json(&["stat", "--json", "data/obj"]);
    for chunk in stat["placement"].as_array().unwrap() {
        let mut nodes: Vec<&str> = chunk["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        nodes.sort();
        nodes.dedup();
        assert_eq!(nodes.len(), 6);
    }
    // Unmount before the cluster's directory is removed: a mounted tmpfs
    // inside it would make the removal fail and leave the directory behind.
    c.kill_node(0);
    drop(std::mem::take(&mut *disks.lock().unwrap()));
    drop(c);
}
