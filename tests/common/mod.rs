//! The multi-process test harness: a real cluster of `tessera meta` and
//! `tessera node` processes on a loopback address of its own, driven through
//! the `tessera` CLI, with helpers to kill nodes (SIGKILL), restart them and
//! reach into their fragment files. Every test of the workspace that needs a
//! cluster uses this one.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

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
    /// Replicas 1.. of a meta group (replica 0 is `meta`).
    more_metas: Vec<Option<Child>>,
    nodes: Vec<Option<Child>>,
    repairer: Option<Child>,
    s3: Vec<Child>,
    pub node_count: usize,
    meta_args: Vec<String>,
    node_args: Vec<String>,
    zones: Vec<Option<String>>,
    /// Meta serves the admin API and console on `admin_addr()`.
    admin: bool,
    /// What the cluster's processes log (`TESSERA_LOG`).
    log_filter: String,
}

/// What a cluster's processes log unless a test asks for more.
const LOG_FILTER: &str = "info,quinn=warn";

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
        Self::start_prepared_with(nodes, &[], node_args, prepare)
    }

    /// Starts meta with `meta_args` and `nodes` nodes with `node_args`, and
    /// waits until every node has registered.
    pub fn start_full(nodes: usize, meta_args: &[&str], node_args: &[&str]) -> Cluster {
        Self::start_prepared_with(nodes, meta_args, node_args, |_, _| {})
    }

    /// `start_prepared` with extra meta arguments too.
    pub fn start_prepared_with(
        nodes: usize,
        meta_args: &[&str],
        node_args: &[&str],
        prepare: impl Fn(usize, &Path),
    ) -> Cluster {
        let mut c = Self::start_with(0, meta_args);
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
        Self::launch(1, nodes, meta_args, false, LOG_FILTER)
    }

    /// `nodes` nodes, meta and nodes started with `args` (global flags
    /// such as `--log-format json`), every process of the cluster logging
    /// what `filter` (`TESSERA_LOG`) lets through.
    pub fn start_logging(nodes: usize, args: &[&str], filter: &str) -> Cluster {
        let mut c = Self::launch(1, 0, args, false, filter);
        c.node_args = args.iter().map(|s| s.to_string()).collect();
        c.nodes = (0..nodes).map(|_| None).collect();
        c.node_count = nodes;
        for i in 0..nodes {
            c.start_node(i);
        }
        c.wait_nodes_up(nodes);
        c
    }

    /// `nodes` nodes and a meta that serves the admin API and console on
    /// `admin_addr()`.
    pub fn start_admin(nodes: usize) -> Cluster {
        Self::launch(1, nodes, &[], true, LOG_FILTER)
    }

    /// Starts a meta group of `replicas` processes (each with `meta_args`),
    /// then `nodes` nodes, and waits until every node has registered.
    pub fn start_group(replicas: usize, nodes: usize, meta_args: &[&str]) -> Cluster {
        Self::launch(replicas, nodes, meta_args, false, LOG_FILTER)
    }

    fn launch(
        replicas: usize,
        nodes: usize,
        meta_args: &[&str],
        admin: bool,
        log_filter: &str,
    ) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("tessera-test-")
            .tempdir()
            .expect("temp dir");
        let ip = cluster_ip();
        let cluster_dir = dir.path().join("cluster");
        let endpoints: Vec<String> = (0..replicas.max(1))
            .map(|i| format!("{ip}:{}", meta_port(i)))
            .collect();
        let out = Command::new(BIN)
            .args(["init", "--dir"])
            .arg(&cluster_dir)
            .args(["--meta", &endpoints.join(",")])
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
            more_metas: Vec::new(),
            nodes: (0..nodes).map(|_| None).collect(),
            repairer: None,
            s3: Vec::new(),
            node_count: nodes,
            meta_args: meta_args.iter().map(|s| s.to_string()).collect(),
            node_args: Vec::new(),
            zones: Vec::new(),
            admin,
            log_filter: log_filter.to_string(),
        };
        c.more_metas = (1..replicas.max(1)).map(|_| None).collect();
        c.start_meta();
        for i in 1..replicas {
            c.start_meta_replica(i);
        }
        for i in 0..nodes {
            c.start_node(i);
        }
        c.wait_nodes_up(nodes);
        c
    }

    /// Meta group replica `i`'s address (`meta_addr` is replica 0's).
    pub fn meta_replica_addr(&self, i: usize) -> SocketAddr {
        format!("{}:{}", self.ip, meta_port(i)).parse().unwrap()
    }

    /// Replica `i`'s data directory.
    pub fn meta_replica_dir(&self, i: usize) -> PathBuf {
        match i {
            0 => self.dir.path().join("meta"),
            i => self.dir.path().join(format!("meta-{i}")),
        }
    }

    /// Starts meta group replica `i` (0 is `start_meta`'s), or a new
    /// replica `i` past the group's end, which waits for `tessera meta add`.
    pub fn start_meta_replica(&mut self, i: usize) {
        if i == 0 {
            return self.start_meta();
        }
        let child = Command::new(BIN)
            .arg("meta")
            .arg("--cluster")
            .arg(&self.cluster_file)
            .arg("--data")
            .arg(self.meta_replica_dir(i))
            .args(["--listen", &self.meta_replica_addr(i).to_string()])
            .args(["--metrics-listen", &format!("{}:{}", self.ip, 9090 + i)])
            .args(&self.meta_args)
            .env("TESSERA_LOG", &self.log_filter)
            .stdout(self.log(&format!("meta-{i}")))
            .stderr(self.log(&format!("meta-{i}")))
            .spawn()
            .expect("spawn tessera meta");
        while self.more_metas.len() < i {
            self.more_metas.push(None);
        }
        self.more_metas[i - 1] = Some(child);
    }

    /// SIGKILL meta group replica `i`.
    pub fn kill_meta_replica(&mut self, i: usize) {
        if i == 0 {
            return self.kill_meta();
        }
        if let Some(mut c) = self.more_metas.get_mut(i - 1).and_then(Option::take) {
            c.kill().expect("kill meta");
            c.wait().expect("reap meta");
        }
    }

    /// Meta group replica `i`'s log so far (its stdout and stderr).
    pub fn meta_replica_log(&self, i: usize) -> String {
        let name = match i {
            0 => "meta.log".to_string(),
            i => format!("meta-{i}.log"),
        };
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Meta group replica `i`'s exit status, once its process has ended by
    /// itself (`None` while it runs, or when the harness runs none).
    pub fn meta_replica_exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let child = match i {
            0 => self.meta.as_mut(),
            i => self.more_metas.get_mut(i - 1).and_then(Option::as_mut),
        }?;
        child.try_wait().expect("poll meta replica")
    }

    /// SIGSTOP (`true`) or SIGCONT meta group replica `i`: alive, silent.
    pub fn pause_meta_replica(&mut self, i: usize, stop: bool) {
        let child = match i {
            0 => self.meta.as_ref(),
            i => self.more_metas.get(i - 1).and_then(Option::as_ref),
        };
        if let Some(c) = child {
            let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: signalling a child process this harness started.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// The meta group's status (`tessera meta status --json`).
    pub fn meta_group(&self) -> Value {
        self.json(&["meta", "status", "--json"])
    }

    /// The index of the replica that leads the meta group, once one does.
    pub fn meta_leader(&self) -> usize {
        let mut found = None;
        wait_until("a meta leader", Duration::from_secs(30), || {
            let out = self.tessera(&["meta", "status", "--json"]);
            let Ok(g) = serde_json::from_slice::<Value>(&out.stdout) else {
                return false;
            };
            let leader = g["leader"].as_u64();
            let addr = g["members"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["id"].as_u64() == leader && leader.is_some())
                .and_then(|m| m["addr"].as_str().map(String::from));
            found =
                addr.and_then(|a| (0..16).find(|i| self.meta_replica_addr(*i).to_string() == a));
            found.is_some()
        });
        found.expect("a leader")
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

    /// Where meta serves the admin API and console (`start_admin`).
    pub fn admin_addr(&self) -> SocketAddr {
        format!("{}:9001", self.ip).parse().unwrap()
    }

    /// `http://ADMIN_ADDR`, once it answers.
    pub fn admin_url(&self) -> String {
        let addr = self.admin_addr();
        wait_until("the admin endpoint", Duration::from_secs(30), || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        format!("http://{addr}")
    }

    /// A new admin token from `tessera admin-token create --json`.
    pub fn admin_token(&self) -> String {
        let v = self.json(&["admin-token", "create", "--json"]);
        v["token"]
            .as_str()
            .expect("token in the answer")
            .to_string()
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
            .args(if self.admin {
                vec!["--admin-listen".to_string(), self.admin_addr().to_string()]
            } else {
                vec![]
            })
            .args(&self.meta_args)
            .env("TESSERA_LOG", &self.log_filter)
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
            .env("TESSERA_LOG", &self.log_filter)
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

    /// A new access key named `name`: (access key id, secret).
    pub fn create_key(&self, name: &str) -> (String, String) {
        let k = self.json(&["key", "create", name, "--json"]);
        (
            k["access_key"].as_str().unwrap().to_string(),
            k["secret_key"].as_str().unwrap().to_string(),
        )
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

    /// Starts one more node with the next index (its own port, directory
    /// and log; the cluster's node arguments) and waits until meta has it up.
    /// Returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.node_count;
        self.nodes.push(None);
        if !self.zones.is_empty() {
            self.zones.push(None);
        }
        self.node_count += 1;
        self.start_node(i);
        wait_until(&format!("new node {i} up"), Duration::from_secs(60), || {
            self.node_dir(i).join("node_id").exists() && self.node_state(i).as_deref() == Some("up")
        });
        i
    }

    /// Starts a standalone `tessera repairer` (for metas run with
    /// `--no-repair`), with extra `args` such as `--repair-rate 10MiB`.
    pub fn start_repairer(&mut self, args: &[&str]) {
        assert!(self.repairer.is_none(), "a repairer is already running");
        let child = Command::new(BIN)
            .arg("repairer")
            .arg("--cluster")
            .arg(&self.cluster_file)
            .args(args)
            .env("TESSERA_LOG", &self.log_filter)
            .stdout(self.log("repairer"))
            .stderr(self.log("repairer"))
            .spawn()
            .expect("spawn tessera repairer");
        self.repairer = Some(child);
    }

    /// Starts `tessera s3` on this cluster's address, port 9000; returns the
    /// endpoint URL once it answers.
    pub fn start_s3(&mut self) -> String {
        self.start_s3_with(9000, &[])
    }

    /// Starts another `tessera s3` on `port` with extra flags.
    pub fn start_s3_with(&mut self, port: u16, flags: &[&str]) -> String {
        let addr = format!("{}:{port}", self.ip);
        let child = Command::new(BIN)
            .arg("s3")
            .arg("--cluster")
            .arg(&self.cluster_file)
            .args(["--listen", &addr])
            .args(flags)
            .env("TESSERA_LOG", &self.log_filter)
            .stdout(self.log("s3"))
            .stderr(self.log("s3"))
            .spawn()
            .expect("spawn tessera s3");
        self.s3.push(child);
        let sock: SocketAddr = addr.parse().expect("s3 address");
        wait_until("the S3 endpoint", Duration::from_secs(30), || {
            std::net::TcpStream::connect(sock).is_ok()
        });
        format!("http://{addr}")
    }

    /// SIGKILL the standalone repairer.
    pub fn kill_repairer(&mut self) {
        if let Some(mut c) = self.repairer.take() {
            c.kill().expect("kill repairer");
            c.wait().expect("reap repairer");
        }
    }

    /// Whether node `i`'s process is running (as far as this harness knows).
    pub fn node_running(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.is_some())
    }

    /// Every fragment file (not temp file) node `i` holds on disk.
    pub fn fragment_files(&self, i: usize) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            // Files and directories may vanish under us (GC, repair): skip them.
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&p, out),
                    Ok(t) if t.is_file() => out.push(p),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.node_dir(i).join("fragments"), &mut out);
        out.sort();
        out
    }

    /// Bytes of fragments node `i` holds: headers and bodies, as the
    /// headers give them (not the zero padding of a direct write).
    pub fn fragment_bytes(&self, i: usize) -> u64 {
        self.fragment_files(i)
            .iter()
            .filter_map(|p| fragment_file_len(p))
            .map(|len| FRAGMENT_HEADER + len)
            .sum()
    }

    /// Bytes in node `i`'s temp directory (fragments being written).
    pub fn tmp_bytes(&self, i: usize) -> u64 {
        std::fs::read_dir(self.node_dir(i).join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    }

    /// `tessera status --json`; panics if meta does not answer.
    pub fn status(&self) -> Value {
        self.json(&["status", "--json"])
    }

    /// A status that reflects everything done before this call: meta
    /// caches chunk health for up to half a second.
    pub fn status_fresh(&self) -> Value {
        std::thread::sleep(STATUS_CACHE);
        self.status()
    }

    /// `tessera status --json`, or None while meta is unreachable.
    pub fn try_status(&self) -> Option<Value> {
        let out = self.tessera(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Node `i`'s entry in a status, if meta lists it.
    pub fn node_entry(&self, status: &Value, i: usize) -> Option<Value> {
        let id = self.node_id(i);
        status["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["id"] == id.as_str())
            .cloned()
    }

    /// Node `i`'s state as meta sees it now ("up", "down", "out").
    pub fn node_state(&self, i: usize) -> Option<String> {
        let status = self.try_status()?;
        self.node_entry(&status, i)
            .and_then(|n| n["state"].as_str().map(str::to_string))
    }

    pub fn wait_for_state(&self, i: usize, want: &str) {
        self.wait_for_state_within(i, want, Duration::from_secs(60));
    }

    pub fn wait_for_state_within(&self, i: usize, want: &str, timeout: Duration) {
        wait_until(&format!("node {i} {want}"), timeout, || {
            self.node_state(i).as_deref() == Some(want)
        });
    }

    /// Node id -> index, for every node this cluster has started.
    pub fn node_ids(&self) -> HashMap<String, usize> {
        (0..self.node_count)
            .filter(|&i| self.node_dir(i).join("node_id").exists())
            .map(|i| (self.node_id(i), i))
            .collect()
    }

    /// A handle for running the CLI from another thread while the test
    /// keeps `&mut Cluster` for killing and starting processes.
    pub fn cli(&self) -> Cli {
        Cli {
            cluster_file: self.cluster_file.clone(),
        }
    }

    /// Waits until every chunk is at full redundancy and no repair work is
    /// pending, printing progress; returns the last status. Only meaningful
    /// once meta has noticed the damage (a node out, a scrub report).
    pub fn wait_healed(&self, timeout: Duration) -> Value {
        let start = Instant::now();
        // Chunk health is cached for up to half a second: a status from
        // before the damage was known must not count as healed.
        std::thread::sleep(STATUS_CACHE);
        let mut last_print = Instant::now();
        loop {
            if let Some(s) = self.try_status() {
                let (healthy, total) = (&s["chunks"]["healthy"], &s["chunks"]["total"]);
                let pending = s["repair"]["pending_fragments"].as_u64();
                if healthy.is_u64() && healthy == total && pending == Some(0) {
                    eprintln!(
                        "healed after {:.1}s: {}",
                        start.elapsed().as_secs_f64(),
                        progress_line(&s)
                    );
                    return s;
                }
                if last_print.elapsed() >= Duration::from_secs(5) {
                    eprintln!(
                        "[{:>5.1}s] waiting for full redundancy: {}",
                        start.elapsed().as_secs_f64(),
                        progress_line(&s)
                    );
                    last_print = Instant::now();
                }
                assert!(
                    start.elapsed() < timeout,
                    "no full redundancy after {timeout:?}: {s}"
                );
            } else {
                assert!(
                    start.elapsed() < timeout,
                    "no full redundancy after {timeout:?}: meta unreachable"
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Puts each (size, key) as `bucket/key` from a seeded random file kept
    /// for comparison; `put_args` go to every put (`--chunk-size 64KiB`).
    pub fn put_objects(
        &self,
        bucket: &str,
        objects: &[(String, usize)],
        seed: u64,
        put_args: &[&str],
    ) -> Vec<TestObject> {
        let dir = self.path("src");
        std::fs::create_dir_all(&dir).unwrap();
        objects
            .iter()
            .enumerate()
            .map(|(n, (key, len))| {
                let src = dir.join(format!("{bucket}-{n}-{seed}"));
                random_file(
                    &src,
                    *len,
                    seed.wrapping_mul(1_000_003).wrapping_add(n as u64),
                );
                let target = format!("{bucket}/{key}");
                let mut args = vec!["put", src.to_str().unwrap(), &target];
                args.extend_from_slice(put_args);
                self.ok(&args);
                TestObject {
                    target,
                    src,
                    len: *len,
                }
            })
            .collect()
    }

    /// Every object reads back byte-identical (`get` into a scratch file).
    pub fn verify_objects(&self, objects: &[TestObject]) {
        let out = self.path("verify.out");
        for o in objects {
            self.ok(&["get", &o.target, out.to_str().unwrap()]);
            assert!(
                same_file(&o.src, &out),
                "{} ({} bytes) reads back different bytes",
                o.target,
                o.len
            );
            let _ = std::fs::remove_file(&out);
        }
    }

    /// Checks every chunk of `target` against meta's placement: as many
    /// fragments as the policy has, on distinct nodes, none on `avoid`, and
    /// every fragment file present on its node with the length and BLAKE3
    /// meta recorded. Returns the number of fragments checked.
    pub fn check_fragments(&self, target: &str, avoid: &[usize]) -> usize {
        self.check_fragments_with(target, avoid, true)
    }

    /// `check_fragments` without reading the files: each one exists with
    /// the right length (a cheap check before anything fails).
    pub fn check_fragment_files(&self, target: &str) -> usize {
        self.check_fragments_with(target, &[], false)
    }

    fn check_fragments_with(&self, target: &str, avoid: &[usize], hash: bool) -> usize {
        let ids = self.node_ids();
        let stat = self.json(&["stat", "--json", target]);
        let mut checked = 0;
        for (n, chunk) in stat["placement"].as_array().unwrap().iter().enumerate() {
            let id = chunk["id"].as_str().unwrap();
            let want = policy_fragments(chunk["policy"].as_str().unwrap());
            let frag_len = chunk["fragment_len"].as_u64().unwrap();
            let nodes: Vec<&str> = chunk["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let hashes: Vec<&str> = chunk["hashes"]
                .as_array()
                .unwrap_or_else(|| panic!("{target} chunk {n}: no hashes in stat: {chunk}"))
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(nodes.len(), want, "{target} chunk {n} ({id}): {chunk}");
            assert_eq!(hashes.len(), want, "{target} chunk {n} ({id}): {chunk}");
            let mut distinct = nodes.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(
                distinct.len(),
                want,
                "{target} chunk {n} ({id}): two fragments on one node: {chunk}"
            );
            for (index, node) in nodes.iter().enumerate() {
                let i = *ids
                    .get(*node)
                    .unwrap_or_else(|| panic!("{target} chunk {id}: unknown node {node}"));
                assert!(
                    !avoid.contains(&i),
                    "{target} chunk {n} ({id}) fragment {index} is on node {i}, which it must not be on: {chunk}"
                );
                let path = self.fragment_path(i, id, index);
                let len = fragment_file_len(&path).unwrap_or_else(|| {
                    panic!(
                        "{target} chunk {n} ({id}) fragment {index}: {} on node {i}: missing or headless",
                        path.display()
                    )
                });
                assert_eq!(
                    len, frag_len,
                    "{target} chunk {id} fragment {index} on node {i}: wrong length"
                );
                if !hash {
                    checked += 1;
                    continue;
                }
                let raw = std::fs::read(&path).unwrap_or_else(|e| {
                    panic!(
                        "{target} chunk {n} ({id}) fragment {index}: {} on node {i}: {e}",
                        path.display()
                    )
                });
                let got = blake3::hash(&raw[fragment_body(&raw)]);
                assert_eq!(
                    hex::encode(got.as_bytes()),
                    hashes[index],
                    "{target} chunk {id} fragment {index} on node {i}: BLAKE3 differs from meta's"
                );
                checked += 1;
            }
        }
        checked
    }
}

/// Longer than meta caches its assessment of chunk health (500 ms).
pub const STATUS_CACHE: Duration = Duration::from_secs(1);

/// Bytes before the fragment body in every fragment file.
pub const FRAGMENT_HEADER: u64 = 64;

/// The body length a fragment file's header gives, after checking that the
/// file's size fits it: header and body exactly, or padded with zeros to a
/// multiple of 4 KiB (a node's `O_DIRECT` write). `None` if the file is
/// gone or has no header. Panics on a size that fits neither.
pub fn fragment_file_len(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; FRAGMENT_HEADER as usize];
    f.read_exact(&mut head).ok()?;
    let size = f.metadata().ok()?.len();
    let len = fragment_body(&head).len() as u64;
    let exact = FRAGMENT_HEADER + len;
    assert!(
        size == exact || size == exact.div_ceil(4096) * 4096,
        "{}: {size} bytes on disk for a {len}-byte body",
        path.display()
    );
    Some(len)
}

/// How many fragments a policy ("ec:4+2", "rep:3") stores per chunk.
/// Meta group replica `i`'s port: 7700 for the first (a lone meta's),
/// 7680 + i for the others.
fn meta_port(i: usize) -> usize {
    if i == 0 { 7700 } else { 7680 + i }
}

/// The body of a fragment file's bytes `raw`: after the 64-byte header,
/// as long as the header's length field (bytes 24..32, big-endian) says.
/// A file written with `O_DIRECT` has zero padding after it.
pub fn fragment_body(raw: &[u8]) -> std::ops::Range<usize> {
    let mut len = [0u8; 8];
    len.copy_from_slice(&raw[24..32]);
    64..64 + u64::from_be_bytes(len) as usize
}

pub fn policy_fragments(policy: &str) -> usize {
    if let Some(km) = policy.strip_prefix("ec:") {
        let (k, m) = km.split_once('+').expect("ec:K+M");
        k.parse::<usize>().unwrap() + m.parse::<usize>().unwrap()
    } else if let Some(n) = policy.strip_prefix("rep:") {
        n.parse().unwrap()
    } else {
        panic!("unknown policy {policy}")
    }
}

/// An object a test stored, and the file holding the bytes it must read back as.
#[derive(Clone, Debug)]
pub struct TestObject {
    pub target: String,
    pub src: PathBuf,
    pub len: usize,
}

/// The CLI against one cluster, usable from any thread.
#[derive(Clone, Debug)]
pub struct Cli {
    pub cluster_file: PathBuf,
}

impl Cli {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("TESSERA_CLUSTER", &self.cluster_file)
            .env("TESSERA_LOG", "error");
        cmd
    }

    pub fn tessera(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run tessera")
    }
}

/// Polls `cond` every 200 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One line of a status's chunk health and repair progress.
pub fn progress_line(s: &Value) -> String {
    let ch = &s["chunks"];
    let r = &s["repair"];
    format!(
        "chunks {}/{} healthy, {} degraded, {} at risk, {} lost, {} misplaced; repair: {} fragments ({} bytes) pending, {} moving, {} rebuilt ({} bytes), {} moved, {} B/s, eta {}, active {}",
        ch["healthy"],
        ch["total"],
        ch["degraded"],
        ch["at_risk"],
        ch["lost"],
        ch["misplaced"],
        r["pending_fragments"],
        r["pending_bytes"],
        r["moving_fragments"],
        r["rebuilt_fragments"],
        r["rebuilt_bytes"],
        r["moved_fragments"],
        r["rate_bytes_per_s"],
        r["eta_s"],
        r["active"]
    )
}

/// A size from the environment (`TESSERA_HEAL_BYTES=200MiB`), else `default`.
pub fn env_size(var: &str, default: u64) -> u64 {
    let Ok(v) = std::env::var(var) else {
        return default;
    };
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num
        .parse()
        .unwrap_or_else(|_| panic!("{var}={v:?}: not a size"));
    let mult: u64 = match unit.trim().trim_end_matches(['i', 'B']) {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        _ => panic!("{var}={v:?}: unknown unit"),
    };
    n * mult
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self
            .nodes
            .iter_mut()
            .flatten()
            .chain(self.repairer.iter_mut())
            .chain(self.s3.iter_mut())
            .chain(self.meta.iter_mut())
            .chain(self.more_metas.iter_mut().flatten())
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::env::var_os("TESSERA_KEEP_TEST_DIR").is_some()
            && let Ok(fresh) = tempfile::tempdir()
        {
            let kept = std::mem::replace(&mut self.dir, fresh).keep();
            eprintln!("test directory kept: {}", kept.display());
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
                    // A panic is the story, however far back it is.
                    let lines: Vec<&str> = text.lines().collect();
                    for (i, l) in lines.iter().enumerate() {
                        if l.contains("panicked at") {
                            eprintln!("---- {} panicked ----", p.display());
                            for l in &lines[i..(i + 3).min(lines.len())] {
                                eprintln!("{l}");
                            }
                        }
                    }
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

/// The checkout the tests run from. Read when the test runs (cargo sets
/// `CARGO_MANIFEST_DIR` for it), not baked in when it was compiled: a test
/// binary built from another clone of the same commit sharing the target
/// directory (as CI's clean clones do) is fresh to cargo and reused, and
/// its compile-time path may no longer exist.
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Runs the python checks in `tests/SCRIPT` (boto3 and friends, which
/// tools/test installs) with `args`; panics with their output unless they
/// exit 0 and print `done`.
pub fn python_checks(script: &str, args: &[&str], done: &str) {
    let path = repo_root().join("tests").join(script);
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("python3 must be installed (tools/test installs boto3)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(done),
        "{script} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Refusals are the client's problem (INFO); the log at `path` must hold no
/// ERROR line.
pub fn assert_no_error_lines(path: &Path) {
    let log = std::fs::read_to_string(path).unwrap();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "client errors logged as ERROR:\n{}",
        errors.join("\n")
    );
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

/// What curl got: the HTTP status, the response headers (lower-case
/// names) and the body.
pub struct CurlReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl CurlReply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP request with curl: `method` `url`, with `Authorization: Bearer
/// TOKEN` when a token is given, and extra curl arguments.
pub fn curl(method: &str, url: &str, token: Option<&str>, extra: &[&str]) -> CurlReply {
    let headers = tempfile::NamedTempFile::new().expect("temp file");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, "-D"])
        .arg(headers.path())
        .args(["-w", "\n%{http_code}"])
        .args(extra);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("curl must be installed (tools/test installs it)");
    assert!(
        out.status.success(),
        "curl {method} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("curl's status line");
    let head = std::fs::read_to_string(headers.path()).expect("curl's headers");
    CurlReply {
        status: code.trim().parse().expect("HTTP status"),
        headers: head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect(),
        body: body.to_string(),
    }
}

/// The value of an unlabelled or labelled sample in a Prometheus exposition.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

// ---- FUSE mounts (issue 6) ----

static NEXT_MOUNT: AtomicU32 = AtomicU32::new(1);

/// A `tessera mount --foreground` child process and the mount it made. It
/// unmounts with SIGTERM (`unmount`, which checks a clean exit); dropped
/// without that (a failing test), it still never leaves a mount behind:
/// SIGTERM, then `fusermount3 -u -z`, then SIGKILL. A watchdog kills the
/// mount process if the test runs past `TESSERA_FUSE_WATCHDOG` seconds
/// (default 1200): a hung FUSE request would otherwise hang the test (and
/// CI) forever, while a dead daemon makes the kernel fail every pending
/// request with ENOTCONN, so the test fails instead.
pub struct Mount {
    pub path: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    watchdog: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Cluster {
    /// Mounts `target` (BUCKET or BUCKET/PREFIX) on a fresh directory of
    /// this cluster with `extra` flags (`--read-only`, `--access-key K`),
    /// and waits until the kernel has the mount.
    pub fn mount(&self, target: &str, extra: &[&str]) -> Mount {
        let n = NEXT_MOUNT.fetch_add(1, Ordering::SeqCst);
        let dir = self.path(&format!("mnt-{n}"));
        std::fs::create_dir_all(&dir).expect("create mountpoint");
        let dir = dir.canonicalize().expect("canonical mountpoint");
        let log = self.dir.path().join(format!("mount-{n}.log"));
        Mount::start(&self.cluster_file, target, &dir, extra, &log)
    }

    /// The `tessera mount` command line for `target` on `mountpoint` (not
    /// started), logging into this cluster's directory as `mount-NAME.log`.
    pub fn mount_command(&self, target: &str, mountpoint: &Path, extra: &[&str]) -> Command {
        mount_command(&self.cluster_file, target, mountpoint, extra)
    }
}

fn mount_command(cluster_file: &Path, target: &str, mountpoint: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("mount")
        .arg(target)
        .arg(mountpoint)
        .arg("--cluster")
        .arg(cluster_file)
        .arg("--foreground")
        .args(extra)
        .env("TESSERA_LOG", "info,quinn=warn");
    cmd
}

impl Mount {
    pub fn start(
        cluster_file: &Path,
        target: &str,
        mountpoint: &Path,
        extra: &[&str],
        log: &Path,
    ) -> Mount {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("mount log file");
        let err = out.try_clone().expect("mount log file");
        let child = mount_command(cluster_file, target, mountpoint, extra)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn tessera mount");
        let limit = std::env::var("TESSERA_FUSE_WATCHDOG")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1200u64);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (pid, path) = (child.id() as i32, mountpoint.to_path_buf());
        let handle = std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(Duration::from_secs(limit))
            {
                eprintln!(
                    "mount watchdog: {} still mounted after {limit}s: killing the mount process so that hung requests fail",
                    path.display()
                );
                // SAFETY: plain kill(2) of our own child, not yet reaped
                // (Mount joins this thread before it waits for the child).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                lazy_unmount(&path);
            }
        });
        let mut m = Mount {
            path: mountpoint.to_path_buf(),
            log: log.to_path_buf(),
            child: Some(child),
            watchdog: Some((tx, handle)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if is_mounted(&m.path) {
                return m;
            }
            if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                m.child = None;
                panic!(
                    "tessera mount {target} {} exited ({status}) before mounting:\n{}",
                    m.path.display(),
                    m.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} not in /proc/self/mountinfo 30s after `tessera mount {target}`:\n{}",
                    m.path.display(),
                    m.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A path inside the mount.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// The mount process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The last `lines` lines of the mount process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn stop_watchdog(&mut self) {
        if let Some((tx, handle)) = self.watchdog.take() {
            drop(tx);
            let _ = handle.join();
        }
    }

    /// SIGTERM, as a person's Ctrl-C or systemd would: the process must
    /// flush, unmount and exit 0 within 60 s, leaving no mount behind.
    pub fn unmount(mut self) {
        self.stop_watchdog();
        let mut child = self.child.take().expect("mount process");
        // SAFETY: kill(2) of our own child, which has not been reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = wait_child(&mut child, Duration::from_secs(60));
        let still = is_mounted(&self.path);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if still {
            lazy_unmount(&self.path);
        }
        let log = self.log_tail(20);
        let status = status
            .unwrap_or_else(|| panic!("tessera mount did not exit within 60s of SIGTERM:\n{log}"));
        assert!(
            status.success(),
            "tessera mount exited with {status} after SIGTERM:\n{log}"
        );
        assert!(
            !still,
            "{} was still mounted after tessera mount exited:\n{log}",
            self.path.display()
        );
    }
}

impl Mount {
    /// `fusermount3 -u` (not lazy), as a person would: the mount process
    /// must then exit 0 by itself within 30 s.
    pub fn unmount_with_fusermount(mut self) {
        self.stop_watchdog();
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.path)
            .output()
            .expect("run fusermount3");
        assert!(
            out.status.success(),
            "fusermount3 -u {} failed: {}",
            self.path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = self.child.take().expect("mount process");
        let status = wait_child(&mut child, Duration::from_secs(30));
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = self.log_tail(20);
        let status = status.unwrap_or_else(|| {
            panic!("tessera mount still running 30s after fusermount3 -u:\n{log}")
        });
        assert!(
            status.success(),
            "tessera mount exited with {status} after fusermount3 -u:\n{log}"
        );
        assert!(!is_mounted(&self.path));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.stop_watchdog();
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) of our own child, which has not been reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            if wait_child(&mut child, Duration::from_secs(10)).is_none() {
                lazy_unmount(&self.path);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if is_mounted(&self.path) {
            lazy_unmount(&self.path);
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {} (last lines) ----\n{}",
                self.log.display(),
                self.log_tail(40)
            );
        }
    }
}

/// Waits up to `timeout` for `child` to exit.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `fusermount3 -u -z`: detaches the mount even while it is busy.
pub fn lazy_unmount(path: &Path) {
    let _ = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether the kernel lists `path` as a mount point of this process's
/// mount namespace (/proc/self/mountinfo, field 5, octal escapes undone).
pub fn is_mounted(path: &Path) -> bool {
    let want = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| unescape_mountinfo(p) == want)
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Closes `f` and reports close(2)'s error, which `drop` throws away: on
/// a mount, close is where buffered data reaches the cluster and where
/// ENOSPC, EIO or EACCES may first show.
pub fn close_file(f: std::fs::File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: we own `fd` (taken out of the File) and close it once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Drops the kernel's cached pages of `f` (clean ones), so the next read
/// goes to the file system, here the mount process and the cluster.
pub fn forget_cached(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise on an open descriptor; advice only.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise(DONTNEED) failed: {r}");
}

/// The errno of a failed operation, for asserting on it.
pub fn errno<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("{what}: succeeded ({v:?}), expected an error"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: an error without errno: {e}")),
    }
}

/// The name of an errno, for messages.
pub fn errno_name(e: i32) -> String {
    let names = [
        (libc::ENOENT, "ENOENT"),
        (libc::EEXIST, "EEXIST"),
        (libc::ENOTEMPTY, "ENOTEMPTY"),
        (libc::ENAMETOOLONG, "ENAMETOOLONG"),
        (libc::EROFS, "EROFS"),
        (libc::ENOSPC, "ENOSPC"),
        (libc::EIO, "EIO"),
        (libc::EACCES, "EACCES"),
        (libc::EPERM, "EPERM"),
        (libc::ENOTSUP, "ENOTSUP"),
        (libc::ENOSYS, "ENOSYS"),
        (libc::ENOTDIR, "ENOTDIR"),
        (libc::EISDIR, "EISDIR"),
        (libc::EINVAL, "EINVAL"),
        (libc::ENOTCONN, "ENOTCONN"),
        (libc::EBUSY, "EBUSY"),
        (libc::EXDEV, "EXDEV"),
        (libc::ENODATA, "ENODATA"),
    ];
    names
        .iter()
        .find(|(n, _)| *n == e)
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| format!("errno {e}"))
}

/// Asserts that `r` failed with `want`, naming both errnos otherwise.
pub fn assert_errno<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>, want: i32) {
    let got = errno(what, r);
    assert_eq!(
        got,
        want,
        "{what}: expected {}, got {}",
        errno_name(want),
        errno_name(got)
    );
}

/// Runs a command and insists that it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        tail_lines(&String::from_utf8_lossy(&out.stdout), 40)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The last `n` lines of `s`.
pub fn tail_lines(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

/// How many mounts the kernel lists at `path` (stacked mounts count each).
pub fn mount_count(path: &Path) -> usize {
    let want = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| unescape_mountinfo(p) == want)
        .count()
}

/// A small tmpfs mounted for the test's lifetime (needs root, as in CI).
pub struct SmallDisk(PathBuf);

impl SmallDisk {
    pub fn mount(dir: &Path, size: &str) -> SmallDisk {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: the node process may still hold files open.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// aws-cli against an S3 endpoint with one access key.
pub struct Aws {
    pub endpoint: String,
    pub key: String,
    pub secret: String,
}

impl Aws {
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("aws")
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("aws-cli must be installed (tools/test installs it)")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "aws {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "aws {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}
