//! The multi-process test harness: a real cluster of `tessera meta` and
//! `tessera node` processes on a loopback address of its own, driven through
//! the `tessera` CLI, with helpers to kill nodes (SIGKILL), restart them and
//! reach into their fragment files. Every test of the workspace that needs a
//! cluster uses this one.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tessera");

static NEXT_CLUSTER: AtomicU32 = AtomicU32::new(1);

/// A loopback address no other cluster in this test run uses: clusters of
/// parallel tests (and of parallel test runs) never share ports.
fn cluster_ip() -> String {
    let n = NEXT_CLUSTER.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    format!("127.{}.{}.{}", 10 + pid % 240, (pid / 240) % 250 + 1, n)
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub ip: String,
    pub cluster_file: PathBuf,
    meta: Option<Child>,
    nodes: Vec<Option<Child>>,
    pub node_count: usize,
    meta_args: Vec<String>,
    node_args: Vec<String>,
    zones: Vec<Option<String>>,
}

impl Cluster {
    pub fn start(nodes: usize) -> Cluster {
        Self::start_with(nodes, &[])
    }

    /// One node per entry, in the zone the entry names.
    pub fn start_zoned(zones: &[&str]) -> Cluster {
        let mut c = Self::start_with(0, &[]);
        c.zones = zones.iter().map(|z| Some(z.to_string())).collect();
        c.nodes = zones.iter().map(|_| None).collect();
        c.node_count = zones.len();
        for i in 0..zones.len() {
            c.start_node(i);
        }
        c.wait_nodes_up(zones.len());
        c
    }

    /// Like `start`, but runs `prepare(i, dir)` on each node's data directory
    /// before that node starts (to mount a small file system there, say).
    pub fn start_prepared(
        nodes: usize,
        node_args: &[&str],
        prepare: impl Fn(usize, &Path),
    ) -> Cluster {
        let mut c = Self::start_with(0, &[]);
        c.node_args = node_args.iter().map(|s| s.to_string()).collect();
        c.nodes = (0..nodes).map(|_| None).collect();
        c.node_count = nodes;
        for i in 0..nodes {
            std::fs::create_dir_all(c.node_dir(i)).expect("node dir");
            prepare(i, &c.node_dir(i));
            c.start_node(i);
        }
        c.wait_nodes_up(nodes);
        c
    }

    /// Starts meta (with extra `meta_args`) and `nodes` nodes, and waits
    /// until every node has registered.
    pub fn start_with(nodes: usize, meta_args: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("tessera-test-")
            .tempdir()
            .expect("temp dir");
        let ip = cluster_ip();
        let cluster_dir = dir.path().join("cluster");
        let out = Command::new(BIN)
            .args(["init", "--dir"])
            .arg(&cluster_dir)
            .args(["--meta", &format!("{ip}:7700")])
            .output()
            .expect("run tessera init");
        assert!(
            out.status.success(),
            "tessera init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut c = Cluster {
            cluster_file: cluster_dir.join("cluster.toml"),
            dir,
            ip,
            meta: None,
            nodes: (0..nodes).map(|_| None).collect(),
            node_count: nodes,
            meta_args: meta_args.iter().map(|s| s.to_string()).collect(),
            node_args: Vec::new(),
            zones: Vec::new(),
        };
        c.start_meta();
        for i in 0..nodes {
            c.start_node(i);
        }
        c.wait_nodes_up(nodes);
        c
    }

    fn log(&self, name: &str) -> Stdio {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .expect("log file");
        Stdio::from(f)
    }

    pub fn meta_addr(&self) -> SocketAddr {
        format!("{}:7700", self.ip).parse().unwrap()
    }

    pub fn node_addr(&self, i: usize) -> SocketAddr {
        format!("{}:{}", self.ip, 7701 + i).parse().unwrap()
    }

    /// Where meta (`None`) or node `i` serves Prometheus metrics.
    pub fn metrics_addr(&self, node: Option<usize>) -> SocketAddr {
        let port = node.map(|i| 9101 + i).unwrap_or(9100);
        format!("{}:{port}", self.ip).parse().unwrap()
    }

    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}"))
    }

    pub fn start_meta(&mut self) {
        let child = Command::new(BIN)
            .arg("meta")
            .arg("--cluster")
            .arg(&self.cluster_file)
            .arg("--data")
            .arg(self.dir.path().join("meta"))
            .args(["--metrics-listen", &self.metrics_addr(None).to_string()])
            .args(&self.meta_args)
            .env("TESSERA_LOG", "info,quinn=warn")
            .stdout(self.log("meta"))
            .stderr(self.log("meta"))
            .spawn()
            .expect("spawn tessera meta");
        self.meta = Some(child);
    }

    pub fn start_node(&mut self, i: usize) {
        let child = Command::new(BIN)
            .arg("node")
            .arg("--cluster")
            .arg(&self.cluster_file)
            .arg("--data")
            .arg(self.node_dir(i))
            .arg("--listen")
            .arg(self.node_addr(i).to_string())
            .args(["--heartbeat", "500ms"])
            .args(["--metrics-listen", &self.metrics_addr(Some(i)).to_string()])
            .args(&self.node_args)
            .args(
                self.zones
                    .get(i)
                    .cloned()
                    .flatten()
                    .map(|z| vec!["--zone".to_string(), z])
                    .unwrap_or_default(),
            )
            .env("TESSERA_LOG", "info,quinn=warn")
            .stdout(self.log(&format!("node-{i}")))
            .stderr(self.log(&format!("node-{i}")))
            .spawn()
            .expect("spawn tessera node");
        self.nodes[i] = Some(child);
    }

    /// SIGKILL: the process gets no chance to flush or say goodbye.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].take() {
            c.kill().expect("kill node");
            c.wait().expect("reap node");
        }
    }

    pub fn kill_meta(&mut self) {
        if let Some(mut c) = self.meta.take() {
            c.kill().expect("kill meta");
            c.wait().expect("reap meta");
        }
    }

    /// The id a node chose at first start.
    pub fn node_id(&self, i: usize) -> String {
        std::fs::read_to_string(self.node_dir(i).join("node_id"))
            .expect("node_id file")
            .trim()
            .to_string()
    }

    pub fn node_index(&self, id: &str) -> usize {
        (0..self.node_count)
            .find(|&i| self.node_id(i) == id)
            .unwrap_or_else(|| panic!("no node with id {id}"))
    }

    /// Path of a fragment file on the node that holds it.
    pub fn fragment_path(&self, node: usize, chunk: &str, index: usize) -> PathBuf {
        self.node_dir(node)
            .join("fragments")
            .join(&chunk[..2])
            .join(&chunk[2..4])
            .join(format!("{chunk}.{index}"))
    }

    pub fn wait_nodes_up(&self, want: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.tessera(&["status", "--json"]);
            if out.status.success() {
                let v: serde_json::Value =
                    serde_json::from_slice(&out.stdout).expect("status JSON");
                let up = v["nodes"]
                    .as_array()
                    .map(|n| n.iter().filter(|n| n["state"] == "up").count())
                    .unwrap_or(0);
                if up >= want {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "cluster did not come up: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs the CLI against this cluster.
    pub fn tessera(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("TESSERA_CLUSTER", &self.cluster_file)
            .env("TESSERA_LOG", "error")
            .output()
            .expect("run tessera")
    }

    /// Runs the CLI and insists that it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.tessera(args);
        assert!(
            out.status.success(),
            "tessera {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI and insists that it fails; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.tessera(args);
        assert!(
            !out.status.success(),
            "tessera {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }

    /// Node indices holding chunk `n` of an object, fragment order.
    pub fn placement(&self, target: &str, n: usize) -> (String, Vec<usize>) {
        let stat = self.json(&["stat", "--json", target]);
        let chunk = &stat["placement"][n];
        let nodes = chunk["nodes"].as_array().expect("placement nodes");
        let ids = nodes
            .iter()
            .map(|id| self.node_index(id.as_str().unwrap()))
            .collect();
        (chunk["id"].as_str().unwrap().to_string(), ids)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.nodes.iter_mut().flatten().chain(self.meta.iter_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            // Leave the evidence for whoever reads the failure.
            for entry in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let p = entry.path();
                if p.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(30).collect();
                    eprintln!("---- {} (last lines) ----", p.display());
                    for l in tail.into_iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

/// A file of `len` pseudo-random bytes (seeded, so a failure replays),
/// written in blocks so that the test process stays small however large the
/// file: the memory tests measure the CLI, not us.
pub fn random_file(path: &Path, len: usize, seed: u64) {
    use rand::{RngCore, SeedableRng};
    use std::io::Write;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create test file"));
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        rng.fill_bytes(&mut block[..n]);
        f.write_all(&block[..n]).expect("write test file");
        left -= n;
    }
    f.flush().expect("flush test file");
}

/// Byte-for-byte comparison, in blocks.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).expect("open a"),
        std::fs::File::open(b).expect("open b"),
    );
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).expect("read a");
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).expect("read b");
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// A plain HTTP GET; returns (status line, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    // HTTP/1.0: no chunked encoding to undo.
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The value of an unlabelled or labelled sample in a Prometheus exposition.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
