//! A real Prometheus (Debian's `prometheus` package) scrapes a real
//! cluster with deploy/prometheus/alerts.yml loaded (its `for:` periods cut
//! to a second): after a node is SIGKILLed, TesseraNodeDown and
//! TesseraChunksAtRisk fire (a `rep:2` bucket loses a copy); once the node
//! is out and repair has rebuilt the copies, TesseraChunksAtRisk clears;
//! when the node comes back, TesseraNodeDown clears.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Cluster, curl, wait_until};
use serde_json::Value;

/// The Prometheus server; killed when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prometheus(c: &Cluster) -> (Prometheus, String) {
    let dir = c.path("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let rules =
        std::fs::read_to_string(common::repo_root().join("deploy/prometheus/alerts.yml")).unwrap();
    // The rules as shipped, but a test cannot wait their minutes out.
    let rules: String = rules
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("for:") {
                "        for: 1s".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("alerts.yml"), rules).unwrap();
    let nodes: Vec<String> = (0..c.node_count)
        .map(|i| format!("\"{}\"", c.metrics_addr(Some(i))))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yml]\n\
         scrape_configs:\n  - job_name: tessera-meta\n    static_configs:\n      - targets: [\"{}\"]\n\
         \x20 - job_name: tessera-node\n    static_configs:\n      - targets: [{}]\n",
        c.metrics_addr(None),
        nodes.join(", ")
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let listen = format!("{}:9090", c.ip);
    let log = std::fs::File::create(c.path("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect(
            "prometheus must be installed (Debian's prometheus package; tools/test installs it)",
        );
    let url = format!("http://{listen}");
    let ready = format!("{url}/-/ready");
    wait_until("Prometheus ready", Duration::from_secs(60), || {
        std::process::Command::new("curl")
            .args(["-sf", &ready])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    (Prometheus(child), url)
}

/// Alert name -> state ("pending" or "firing") of every active alert.
fn alerts(url: &str) -> Vec<(String, String)> {
    let r = curl("GET", &format!("{url}/api/v1/alerts"), None, &[]);
    let v: Value = r.json();
    v["data"]["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                        x["state"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn firing(url: &str, name: &str) -> bool {
    alerts(url)
        .iter()
        .any(|(n, state)| n == name && state == "firing")
}

/// The value of an instant query with one result.
fn query(url: &str, q: &str) -> Option<f64> {
    let r = curl(
        "GET",
        &format!("{url}/api/v1/query"),
        None,
        &["-G", "--data-urlencode", &format!("query={q}")],
    );
    r.json()["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
}

#[test]
fn alerts_fire_when_a_node_dies_and_clear_after_repair() {
    let mut c = Cluster::start_with(4, &["--down-after", "2s", "--out-after", "8s"]);
    c.ok(&["bucket", "create", "pairs", "--policy", "rep:2"]);
    let objects: Vec<(String, usize)> = (0..8).map(|i| (format!("o{i}"), 300_000)).collect();
    let stored = c.put_objects("pairs", &objects, 9, &[]);
    let (_prometheus, url) = start_prometheus(&c);
    wait_until("Prometheus scraping meta", Duration::from_secs(60), || {
        query(&url, "tessera_meta_chunks_by_health{health=\"healthy\"}").is_some_and(|v| v >= 1.0)
    });
    assert!(
        !firing(&url, "TesseraNodeDown") && !firing(&url, "TesseraChunksAtRisk"),
        "alerts before any failure: {:?}",
        alerts(&url)
    );

    let victim = (0..4)
        .max_by_key(|&i| c.node_entry(&c.status(), i).unwrap()["fragments"].as_u64())
        .unwrap();
    c.kill_node(victim);
    wait_until(
        "TesseraNodeDown and TesseraChunksAtRisk firing",
        Duration::from_secs(90),
        || firing(&url, "TesseraNodeDown") && firing(&url, "TesseraChunksAtRisk"),
    );

    // Out after 8 s; the repairer rebuilds the lost copies.
    c.wait_healed(Duration::from_secs(180));
    wait_until(
        "TesseraChunksAtRisk cleared",
        Duration::from_secs(60),
        || !firing(&url, "TesseraChunksAtRisk"),
    );
    assert!(firing(&url, "TesseraNodeDown"), "{:?}", alerts(&url));

    c.start_node(victim);
    c.wait_for_state(victim, "up");
    wait_until("TesseraNodeDown cleared", Duration::from_secs(60), || {
        !firing(&url, "TesseraNodeDown")
    });
    c.verify_objects(&stored);
}
