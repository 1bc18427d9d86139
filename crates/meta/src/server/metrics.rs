//! Meta's Prometheus metrics: cluster gauges from the status, and request
//! counters kept by the RPC layer.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use tessera_proto::{BucketUsage, NodeState};

use super::Meta;
use crate::MetaError;
use crate::state::prelude::*;
use crate::state::tables::counter;

/// Most buckets with series of their own in the metrics (the largest by
/// bytes when there are more): two series each.
pub const MAX_BUCKET_SERIES: usize = 1000;

/// Requests answered, refused and malformed.
#[derive(Default)]
pub struct RequestCounters {
    pub(super) requests: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) bad_requests: AtomicU64,
}

impl Meta {
    /// Prometheus text exposition: cluster gauges and request counters.
    pub fn metrics_text(&self) -> Result<String, MetaError> {
        let status = self.status()?;
        let sm = self.sm();
        let snap = sm.read();
        let map = &status.map;
        let count = |state: NodeState| map.nodes.iter().filter(|n| n.state == state).count() as u64;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, labels: &str, value: u64| {
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            }
            let _ = writeln!(out, "{name}{labels} {value}");
        };
        let help = "Storage nodes by state.";
        metric(
            "tessera_meta_nodes",
            "gauge",
            help,
            "{state=\"up\"}",
            count(NodeState::Up),
        );
        metric(
            "tessera_meta_nodes",
            "gauge",
            "",
            "{state=\"down\"}",
            count(NodeState::Down),
        );
        metric(
            "tessera_meta_nodes",
            "gauge",
            "",
            "{state=\"out\"}",
            count(NodeState::Out),
        );
        metric(
            "tessera_meta_cluster_epoch",
            "gauge",
            "Cluster map epoch.",
            "",
            map.epoch,
        );
        metric(
            "tessera_meta_capacity_bytes",
            "gauge",
            "Capacity of all nodes.",
            "",
            map.nodes.iter().map(|n| n.capacity).sum(),
        );
        metric(
            "tessera_meta_used_bytes",
            "gauge",
            "Bytes used on all nodes.",
            "",
            map.nodes.iter().map(|n| n.used).sum(),
        );
        metric(
            "tessera_meta_buckets",
            "gauge",
            "Buckets.",
            "",
            snap.counter(counter::BUCKETS)?,
        );
        metric(
            "tessera_meta_objects",
            "gauge",
            "Objects.",
            "",
            snap.counter(counter::OBJECTS)?,
        );
        metric(
            "tessera_meta_chunks",
            "gauge",
            "Chunk records.",
            "",
            snap.counter(counter::CHUNKS)?,
        );
        let h = &status.health;
        for (i, (label, value)) in [
            ("healthy", h.healthy),
            ("degraded", h.degraded),
            ("at_risk", h.at_risk),
            ("lost", h.lost),
            ("misplaced", h.misplaced),
        ]
        .into_iter()
        .enumerate()
        {
            metric(
                "tessera_meta_chunks_by_health",
                "gauge",
                if i == 0 {
                    "Live chunks by redundancy (misplaced: healthy, on a draining node)."
                } else {
                    ""
                },
                &format!("{{health=\"{label}\"}}"),
                value,
            );
        }
        let r = &status.repair;
        metric(
            "tessera_meta_repair_pending_fragments",
            "gauge",
            "Lost fragments still to rebuild.",
            "",
            r.pending_fragments,
        );
        metric(
            "tessera_meta_repair_pending_bytes",
            "gauge",
            "Bytes of lost fragments still to rebuild.",
            "",
            r.pending_bytes,
        );
        metric(
            "tessera_meta_repair_moving_fragments",
            "gauge",
            "Fragments on draining nodes still to move.",
            "",
            r.moving_fragments,
        );
        metric(
            "tessera_meta_repair_rebuilt_fragments_total",
            "counter",
            "Fragments rebuilt from other fragments.",
            "",
            r.rebuilt_fragments,
        );
        metric(
            "tessera_meta_repair_rebuilt_bytes_total",
            "counter",
            "Bytes of fragments rebuilt.",
            "",
            r.rebuilt_bytes,
        );
        metric(
            "tessera_meta_repair_moved_fragments_total",
            "counter",
            "Fragments copied off draining or misplaced nodes.",
            "",
            r.moved_fragments,
        );
        metric(
            "tessera_meta_repair_moved_bytes_total",
            "counter",
            "Bytes of fragments copied off draining or misplaced nodes.",
            "",
            r.moved_bytes,
        );
        metric(
            "tessera_meta_repair_rate_bytes_per_second",
            "gauge",
            "Bytes rebuilt or moved per second over the last 30 s.",
            "",
            r.rate_bytes_per_s,
        );
        metric(
            "tessera_meta_scrub_requests_total",
            "counter",
            "Deep scrubs requested (tessera scrub now).",
            "",
            status.scrub_seq,
        );
        metric(
            "tessera_meta_corrupt_reports_total",
            "counter",
            "Corrupt fragments reported by readers.",
            "",
            snap.counter(counter::CORRUPT)?,
        );
        metric(
            "tessera_meta_commands_applied_total",
            "counter",
            "State machine commands applied.",
            "",
            snap.counter(counter::APPLIED)?,
        );
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metric(
            "tessera_meta_requests_total",
            "counter",
            "Requests answered.",
            "",
            get(&self.counters.requests),
        );
        metric(
            "tessera_meta_requests_refused_total",
            "counter",
            "Requests answered with an error.",
            "",
            get(&self.counters.refused),
        );
        metric(
            "tessera_meta_bad_requests_total",
            "counter",
            "Malformed or truncated requests.",
            "",
            get(&self.counters.bad_requests),
        );
        metric(
            "tessera_meta_garbage_fragments",
            "gauge",
            "Fragments of chunks no record refers to, waiting for the GC grace period.",
            "",
            snap.counter(counter::GARBAGE_FRAGMENTS)?,
        );
        metric(
            "tessera_meta_garbage_bytes",
            "gauge",
            "Bytes of those fragments.",
            "",
            snap.counter(counter::GARBAGE_BYTES)?,
        );
        let lc = snap.lifecycle_progress()?;
        metric(
            "tessera_meta_lifecycle_passes_total",
            "counter",
            "Lifecycle passes finished over every bucket with lifecycle rules.",
            "",
            lc.passes,
        );
        metric(
            "tessera_meta_lifecycle_pass_running",
            "gauge",
            "1 while a lifecycle pass is in progress.",
            "",
            u64::from(lc.pass_started_ms.is_some()),
        );
        metric(
            "tessera_meta_lifecycle_expired_objects_total",
            "counter",
            "Current objects expired by lifecycle rules (deleted, or given a delete marker).",
            "",
            lc.expired_objects,
        );
        metric(
            "tessera_meta_lifecycle_removed_versions_total",
            "counter",
            "Noncurrent versions and delete markers removed by lifecycle rules.",
            "",
            lc.removed_versions,
        );
        metric(
            "tessera_meta_lifecycle_aborted_uploads_total",
            "counter",
            "Multipart uploads aborted by lifecycle rules.",
            "",
            lc.aborted_uploads,
        );
        metric(
            "tessera_meta_lifecycle_kept_locked_total",
            "counter",
            "Lifecycle expiries refused because Object Lock keeps the version.",
            "",
            lc.kept_locked,
        );
        metric(
            "tessera_meta_lifecycle_queued_transitions_total",
            "counter",
            "Versions lifecycle rules queued for re-encoding into a mapped storage class.",
            "",
            lc.queued_transitions,
        );
        for (i, n) in map.nodes.iter().enumerate() {
            metric(
                "tessera_meta_node_up",
                "gauge",
                if i == 0 {
                    "1 while meta hears a node's heartbeats, 0 once it is down or out."
                } else {
                    ""
                },
                &format!("{{node=\"{}\",admin=\"{}\"}}", n.id, n.admin.as_str()),
                u64::from(n.state == NodeState::Up),
            );
        }
        // One series per bucket and metric, for at most
        // MAX_BUCKET_SERIES buckets (the largest): a scrape stays bounded
        // however many buckets there are. Bucket names need no escaping
        // (lower-case letters, digits, `-` and `.` only).
        let mut usage = snap.buckets_usage()?;
        if usage.len() > MAX_BUCKET_SERIES {
            usage.sort_by_key(|(_, u)| std::cmp::Reverse(u.bytes()));
            usage.truncate(MAX_BUCKET_SERIES);
            usage.sort_by(|a, b| a.0.cmp(&b.0));
        }
        type BucketFigure = fn(&BucketUsage) -> u64;
        let per_bucket: [(&str, &str, BucketFigure); 2] = [
            (
                "tessera_meta_bucket_objects",
                "Current objects in a bucket.",
                |u| u.objects,
            ),
            (
                "tessera_meta_bucket_bytes",
                "Logical bytes of a bucket's current and noncurrent object versions.",
                BucketUsage::bytes,
            ),
        ];
        for (name, help, value) in per_bucket {
            for (i, (bucket, u)) in usage.iter().enumerate() {
                let help = if i == 0 { help } else { "" };
                metric(
                    name,
                    "gauge",
                    help,
                    &format!("{{bucket=\"{bucket}\"}}"),
                    value(u),
                );
            }
        }
        let b = &status.balance;
        let _ = writeln!(
            out,
            "# HELP tessera_meta_load_fullest_over_fair_ratio Stored bytes of the fullest node over its capacity-weighted fair share.\n# TYPE tessera_meta_load_fullest_over_fair_ratio gauge\ntessera_meta_load_fullest_over_fair_ratio {}\n# HELP tessera_meta_load_max_deviation_ratio Largest deviation of a node's load from its fair share.\n# TYPE tessera_meta_load_max_deviation_ratio gauge\ntessera_meta_load_max_deviation_ratio {}",
            b.fullest_over_fair, b.max_deviation
        );
        Ok(out)
    }
}
