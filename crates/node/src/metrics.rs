//! Counters a node keeps about its own work, rendered in the Prometheus text
//! format. Serving them over HTTP is the binary's job.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct NodeMetrics {
    pub puts: AtomicU64,
    pub put_bytes: AtomicU64,
    pub put_errors: AtomicU64,
    pub gets: AtomicU64,
    pub get_bytes: AtomicU64,
    pub get_errors: AtomicU64,
    pub deletes: AtomicU64,
    pub verify_failures: AtomicU64,
    pub bad_requests: AtomicU64,
    pub scrub_checked: AtomicU64,
    pub scrub_bytes: AtomicU64,
    pub scrub_problems: AtomicU64,
    pub gc_deleted: AtomicU64,
}

impl NodeMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus exposition, with the gauges the caller passes.
    /// `direct_io`: whether fragment files are written with `O_DIRECT`.
    pub fn render(
        &self,
        node: &str,
        capacity: u64,
        used: u64,
        fragments: u64,
        direct_io: bool,
    ) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{node=\"{node}\"}} {value}"
            );
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metric(
            "tessera_node_capacity_bytes",
            "gauge",
            "Bytes this node offers.",
            capacity,
        );
        metric(
            "tessera_node_used_bytes",
            "gauge",
            "Bytes of fragment files stored.",
            used,
        );
        metric(
            "tessera_node_fragments",
            "gauge",
            "Fragment files stored.",
            fragments,
        );
        metric(
            "tessera_node_direct_io",
            "gauge",
            "1 while fragment files are written with O_DIRECT, 0 once the file system refused it.",
            u64::from(direct_io),
        );
        metric(
            "tessera_node_scrub_checked_total",
            "counter",
            "Fragments re-read and re-hashed by deep scrubs.",
            get(&self.scrub_checked),
        );
        metric(
            "tessera_node_scrub_bytes_total",
            "counter",
            "Bytes re-read by deep scrubs.",
            get(&self.scrub_bytes),
        );
        metric(
            "tessera_node_scrub_problems_total",
            "counter",
            "Missing or corrupt fragments deep scrubs reported.",
            get(&self.scrub_problems),
        );
        metric(
            "tessera_node_gc_deleted_total",
            "counter",
            "Unreferenced fragments deleted by garbage collection.",
            get(&self.gc_deleted),
        );
        metric(
            "tessera_node_fragment_puts_total",
            "counter",
            "Fragments stored.",
            get(&self.puts),
        );
        metric(
            "tessera_node_fragment_put_bytes_total",
            "counter",
            "Body bytes of fragments stored.",
            get(&self.put_bytes),
        );
        metric(
            "tessera_node_fragment_put_errors_total",
            "counter",
            "Fragment puts refused or failed.",
            get(&self.put_errors),
        );
        metric(
            "tessera_node_fragment_gets_total",
            "counter",
            "Fragments served.",
            get(&self.gets),
        );
        metric(
            "tessera_node_fragment_get_bytes_total",
            "counter",
            "Body bytes of fragments served.",
            get(&self.get_bytes),
        );
        metric(
            "tessera_node_fragment_get_errors_total",
            "counter",
            "Fragment reads that failed (missing, corrupt, I/O).",
            get(&self.get_errors),
        );
        metric(
            "tessera_node_fragment_deletes_total",
            "counter",
            "Fragments deleted.",
            get(&self.deletes),
        );
        metric(
            "tessera_node_verify_failures_total",
            "counter",
            "Fragments that failed verification.",
            get(&self.verify_failures),
        );
        metric(
            "tessera_node_bad_requests_total",
            "counter",
            "Malformed or truncated requests.",
            get(&self.bad_requests),
        );
        out
    }
}
