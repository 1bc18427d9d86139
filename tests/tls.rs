//! Only holders of a certificate from the cluster's own CA get in.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{BIN, Cluster};

/// A `tessera node` command using another cluster's credentials.
fn intruder_node(cluster_file: &Path, data: &Path, listen: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("node")
        .arg("--cluster")
        .arg(cluster_file)
        .arg("--data")
        .arg(data)
        .args(["--listen", listen])
        .args(extra);
    cmd
}

#[test]
fn clients_and_nodes_of_another_ca_are_refused() {
    let c = Cluster::start(6);
    // A second cluster's credentials, aimed at this cluster's meta.
    let foreign = c.path("foreign");
    let out = Command::new(BIN)
        .args([
            "init",
            "--dir",
            foreign.to_str().unwrap(),
            "--meta",
            &c.meta_addr().to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let foreign_file = foreign.join("cluster.toml");

    let out = Command::new(BIN)
        .args(["status"])
        .env("TESSERA_CLUSTER", &foreign_file)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a foreign client got in");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the cluster") && err.contains("cannot connect"),
        "{err}"
    );

    // A node with a foreign certificate cannot register.
    let node_dir = c.path("intruder");
    let mut intruder = intruder_node(
        &foreign_file,
        &node_dir,
        &format!("{}:7790", c.ip),
        &["--heartbeat", "200ms"],
    )
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let status = c.json(&["status", "--json"]);
    assert_eq!(
        status["nodes"].as_array().unwrap().len(),
        6,
        "the intruder joined: {status}"
    );
    intruder.kill().unwrap();
    let out = intruder.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("heartbeat failed"), "{log}");

    // And our own client does not trust the intruder as a server: the
    // intruder's node port speaks TLS with a certificate our CA did not sign.
    let mut intruder = intruder_node(&foreign_file, &node_dir, &format!("{}:7791", c.ip), &[])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(async {
        let cfg = tessera_sdk::ClusterConfig::load(&c.cluster_file).unwrap();
        let ep = tessera_net::Endpoint::client(&cfg.identity().unwrap()).unwrap();
        ep.connect(format!("{}:7791", c.ip).parse().unwrap())
            .await
            .err()
    });
    intruder.kill().unwrap();
    let _ = intruder.wait();
    let err = err
        .expect("connected to a server with a foreign certificate")
        .to_string();
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn clusters_can_name_meta_by_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let init = |meta: &str| {
        Command::new(BIN)
            .args([
                "init",
                "--force",
                "--dir",
                dir.path().to_str().unwrap(),
                "--meta",
                meta,
            ])
            .output()
            .unwrap()
    };
    assert!(init("localhost:7700").status.success());
    let file = std::fs::read_to_string(dir.path().join("cluster.toml")).unwrap();
    assert!(file.contains("meta = \"localhost:7700\""), "{file}");
    let out = init("no-port-here");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not HOST:PORT"));
}
