//! The mount's counters, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct MountMetrics {
    /// Requests and refusals by FUSE operation.
    ops: Mutex<BTreeMap<&'static str, (u64, u64)>>,
    pub read_bytes: AtomicU64,
    pub written_bytes: AtomicU64,
    pub commits: AtomicU64,
    pub chunks_written: AtomicU64,
    pub chunk_bytes_written: AtomicU64,
}

impl MountMetrics {
    pub fn op(&self, name: &'static str, failed: bool) {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        let e = ops.entry(name).or_default();
        e.0 += 1;
        e.1 += failed as u64;
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let ops = self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = writeln!(
            out,
            "# HELP tessera_mount_requests_total FUSE requests by operation.\n# TYPE tessera_mount_requests_total counter"
        );
        for (op, (n, _)) in &ops {
            let _ = writeln!(out, "tessera_mount_requests_total{{op=\"{op}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP tessera_mount_errors_total FUSE requests answered with an errno.\n# TYPE tessera_mount_errors_total counter"
        );
        for (op, (_, e)) in &ops {
            let _ = writeln!(out, "tessera_mount_errors_total{{op=\"{op}\"}} {e}");
        }
        for (name, help, v) in [
            (
                "read_bytes_total",
                "Bytes read by programs.",
                &self.read_bytes,
            ),
            (
                "written_bytes_total",
                "Bytes written by programs.",
                &self.written_bytes,
            ),
            ("commits_total", "Files committed to meta.", &self.commits),
            (
                "chunks_written_total",
                "Chunks stored in the cluster.",
                &self.chunks_written,
            ),
            (
                "chunk_bytes_written_total",
                "Bytes of the chunks stored (before erasure coding).",
                &self.chunk_bytes_written,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP tessera_mount_{name} {help}\n# TYPE tessera_mount_{name} counter\ntessera_mount_{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out
    }
}
