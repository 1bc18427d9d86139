//! Failure detection: a silent node goes down, then out; back, it is up.

mod common;

use common::Cluster;

#[test]
fn silent_nodes_go_down_then_out_and_come_back_up() {
    let mut c = Cluster::start_with(6, &["--down-after", "1s", "--out-after", "3s"]);
    c.kill_node(2);
    c.wait_for_state(2, "down");
    c.wait_for_state(2, "out");
    let human = c.ok(&["status"]);
    assert!(human.contains("5 up, 0 down, 1 out"), "{human}");
    // Out nodes receive no new fragments.
    c.ok(&["bucket", "create", "data", "--policy", "ec:3+2"]);
    let src = c.path("src");
    common::random_file(&src, 5 << 20, 1);
    c.ok(&["put", src.to_str().unwrap(), "data/obj"]);
    let stat = c.json(&["stat", "--json", "data/obj"]);
    let dead = c.node_id(2);
    for chunk in stat["placement"].as_array().unwrap() {
        assert!(
            !chunk["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == dead.as_str())
        );
    }
    c.start_node(2);
    c.wait_for_state(2, "up");
}

/// Starts a second meta on `port` with `args`, which must fail; its stderr.
fn meta_refuses(c: &Cluster, port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new(common::BIN)
        .args([
            "meta",
            "--cluster",
            c.cluster_file.to_str().unwrap(),
            "--data",
        ])
        .arg(c.path(&format!("meta-{port}")))
        .args(["--listen", &format!("{}:{port}", c.ip)])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "meta started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn liveness_periods_come_from_the_cluster_file_and_are_checked() {
    let c = Cluster::start(1);
    let err = meta_refuses(&c, 7799, &["--down-after", "10s", "--out-after", "5s"]);
    assert!(err.contains("must be longer"), "{err}");
    let mut file = std::fs::read_to_string(&c.cluster_file).unwrap();
    file.push_str("down_after = \"nonsense\"\n");
    std::fs::write(&c.cluster_file, file).unwrap();
    let err = meta_refuses(&c, 7798, &[]);
    assert!(err.contains("down_after"), "{err}");
}
