//! `tessera dev`, the README's first command: one process, a whole cluster.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, random_file, same_file};

/// Runs `tessera ARGS` on `cluster`; its stdout, once it succeeded.
fn cli_ok(cluster: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("TESSERA_CLUSTER", cluster)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts `tessera dev` with `args` and returns it with the banner it
/// printed up to "Press Ctrl-C" (within a minute).
fn start_dev(args: &[&str]) -> (std::process::Child, String) {
    let mut dev = Command::new(BIN)
        .arg("dev")
        .args(args)
        .env("TESSERA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = dev.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("Press Ctrl-C") {
                let _ = tx.send(seen.clone());
            }
        }
    });
    let banner = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("tessera dev did not come up");
    (dev, banner)
}

#[test]
fn dev_cluster_serves_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let ip = format!("127.{}.250.1", 10 + std::process::id() % 240);
    let (mut dev, banner) = start_dev(&[
        "--data",
        data.to_str().unwrap(),
        "--meta-listen",
        &format!("{ip}:7700"),
    ]);
    assert!(
        banner.contains("6 nodes") && banner.contains("ec:4+2"),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("S3 endpoint: http://{ip}:9000"))
            && banner.contains("AWS_ACCESS_KEY_ID=")
            && banner.contains("AWS_SECRET_ACCESS_KEY="),
        "{banner}"
    );

    let cluster = data.join("cluster.toml");
    let cli = |args: &[&str]| cli_ok(&cluster, args);
    cli(&["bucket", "create", "demo"]);
    let src = dir.path().join("src");
    random_file(&src, 9 << 20, 5);
    cli(&["put", src.to_str().unwrap(), "demo/file"]);
    let out = dir.path().join("out");
    cli(&["get", "demo/file", out.to_str().unwrap()]);
    assert!(same_file(&src, &out));
    // The S3 key dev printed owns what its CLI created: no `bucket allow`.
    let printed = |name: &str| {
        banner
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("{name} not in {banner}"))
            .to_string()
    };
    let ls = Command::new("aws")
        .args(["--endpoint-url", &format!("http://{ip}:9000")])
        .args(["s3", "ls", "s3://demo/"])
        .env("AWS_ACCESS_KEY_ID", printed("AWS_ACCESS_KEY_ID"))
        .env("AWS_SECRET_ACCESS_KEY", printed("AWS_SECRET_ACCESS_KEY"))
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("aws-cli must be installed (tools/test installs it)");
    assert!(
        ls.status.success() && String::from_utf8_lossy(&ls.stdout).contains("file"),
        "the dev key cannot list a bucket dev's CLI made: {}{}",
        String::from_utf8_lossy(&ls.stdout),
        String::from_utf8_lossy(&ls.stderr)
    );
    let status: serde_json::Value = serde_json::from_str(&cli(&["status", "--json"])).unwrap();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 6);
    assert_eq!(status["default_policy"], "ec:4+2");
    // The nodes share one disk: together they offer it once (issue 16).
    let df = Command::new("df")
        .args(["-B1", "--output=size"])
        .arg(&data)
        .output()
        .unwrap();
    let disk: u64 = String::from_utf8_lossy(&df.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df's size");
    let capacities: Vec<u64> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["capacity"].as_u64().unwrap())
        .collect();
    let total: u64 = capacities.iter().sum();
    assert!(
        total <= disk && total + 6 * 4096 >= disk - disk / 100,
        "nodes offer {total} of a {disk}-byte disk: {capacities:?}"
    );
    assert!(
        banner.contains("an equal share of the file system"),
        "{banner}"
    );

    // The console and admin API on port 9001, with the token dev printed.
    assert!(
        banner.contains(&format!("Console: http://{ip}:9001/")),
        "{banner}"
    );
    let token = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("admin token: "))
        .unwrap_or_else(|| panic!("no admin token in {banner}"));
    let api = common::curl(
        "GET",
        &format!("http://{ip}:9001/v1/status"),
        Some(token),
        &[],
    );
    assert_eq!(api.status, 200, "{}", api.body);
    assert_eq!(api.json()["nodes"].as_array().unwrap().len(), 6);
    let console = common::curl("GET", &format!("http://{ip}:9001/"), None, &[]);
    assert!(console.body.contains("name=\"token\""), "{}", console.body);

    // SIGTERM stops it cleanly.
    let ok = Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = dev.wait().unwrap();
    assert!(status.success(), "tessera dev exited with {status}");
}

/// `tessera dev --meta-replicas 3`: meta as a Raft group of three in the
/// one process; the CLI finds the leader and the data path works.
#[test]
fn dev_runs_a_meta_group_of_three() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let ip = format!("127.{}.251.1", 10 + std::process::id() % 240);
    let (mut dev, banner) = start_dev(&[
        "--data",
        data.to_str().unwrap(),
        "--meta-listen",
        &format!("{ip}:7700"),
        "--meta-replicas",
        "3",
    ]);
    assert!(
        banner.contains(&format!("meta on {ip}:7700,{ip}:7750,{ip}:7751")),
        "{banner}"
    );
    let cluster = data.join("cluster.toml");
    let cli = |args: &[&str]| cli_ok(&cluster, args);
    let group: serde_json::Value =
        serde_json::from_str(&cli(&["meta", "status", "--json"])).unwrap();
    let members = group["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{group}");
    assert_eq!(
        members.iter().filter(|m| m["role"] == "leader").count(),
        1,
        "{group}"
    );
    assert!(group["leader"].as_u64().is_some(), "{group}");
    cli(&["bucket", "create", "demo"]);
    let src = dir.path().join("src");
    random_file(&src, 3 << 20, 7);
    cli(&["put", src.to_str().unwrap(), "demo/file"]);
    let out = dir.path().join("out");
    cli(&["get", "demo/file", out.to_str().unwrap()]);
    assert!(same_file(&src, &out));
    let ok = Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = dev.wait().unwrap();
    assert!(status.success(), "tessera dev exited with {status}");
}
