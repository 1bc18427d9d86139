//! The JSON documents of cluster status, nodes, keys and buckets: one shape
//! for `tessera status --json`, `tessera key ls --json` and the admin API,
//! built from what meta answers.

use serde::{Deserialize, Serialize};
use tessera_proto::{
    AccessKey, BucketInfo, BucketUsage, ClusterStatus, GarbageSummary, Grant, LifecycleProgress,
    NodeInfo,
};
use utoipa::ToSchema;

/// What `tessera status --json` prints and `GET /v1/status` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusDocument {
    /// The cluster map's epoch: it grows when nodes join, change or leave.
    pub epoch: u64,
    /// Policy of buckets created without one (`ec:K+M` or `rep:N`).
    pub default_policy: String,
    pub nodes: Vec<NodeDocument>,
    pub buckets: u64,
    pub objects: u64,
    pub chunks: ChunkHealthDocument,
    pub repair: RepairDocument,
    pub balance: BalanceDocument,
    /// The newest deep-scrub request (0: none yet).
    pub scrub_seq: u64,
    /// Corruption reports ever received.
    pub corrupt_reports: u64,
    /// The most recent corruption reports, newest first.
    pub recent_corrupt: Vec<CorruptDocument>,
    /// Deleted or replaced data waiting for garbage collection.
    pub garbage: GarbageDocument,
    /// What the nodes are storing and serving now: the sum of every up
    /// node's rates.
    #[serde(default)]
    pub throughput: ThroughputDocument,
    /// The S3 lifecycle worker (on the meta leader): its pass and totals.
    #[serde(default)]
    pub lifecycle: LifecycleDocument,
}

/// The S3 lifecycle worker's state (`tessera_proto::LifecycleProgress`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LifecycleDocument {
    /// Whether a pass over the buckets with lifecycle rules is running.
    pub running: bool,
    /// The bucket the running pass is in.
    pub bucket: Option<String>,
    /// Passes finished.
    pub passes: u64,
    /// Unix milliseconds when the last pass ended (null: none yet).
    pub last_pass_ms: Option<u64>,
    /// Current objects expired (deleted, or given a delete marker).
    pub expired_objects: u64,
    /// Noncurrent versions and delete markers removed.
    pub removed_versions: u64,
    /// Multipart uploads aborted.
    pub aborted_uploads: u64,
    /// Expiries refused because Object Lock keeps the version.
    pub kept_locked: u64,
    /// Versions queued for re-encoding into a mapped storage class.
    pub queued_transitions: u64,
}

impl LifecycleDocument {
    pub fn new(p: &LifecycleProgress) -> Self {
        LifecycleDocument {
            running: p.pass_started_ms.is_some(),
            bucket: p.bucket.clone(),
            passes: p.passes,
            last_pass_ms: p.last_pass_ms,
            expired_objects: p.expired_objects,
            removed_versions: p.removed_versions,
            aborted_uploads: p.aborted_uploads,
            kept_locked: p.kept_locked,
            queued_transitions: p.queued_transitions,
        }
    }
}

/// Fragment traffic at the nodes, in bytes per second, over the time
/// between their last two heartbeats. It counts what the disks see:
/// parity and repair traffic are in it, so an `ec:4+2` client write of
/// 100 MB/s shows as 150 MB/s written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ThroughputDocument {
    pub write_bytes_per_s: u64,
    pub read_bytes_per_s: u64,
}

impl ThroughputDocument {
    /// The sum of the nodes' rates (meta reports 0 for nodes not up).
    pub fn of(nodes: &[NodeInfo]) -> Self {
        ThroughputDocument {
            write_bytes_per_s: nodes.iter().map(|n| n.write_bytes_per_s).sum(),
            read_bytes_per_s: nodes.iter().map(|n| n.read_bytes_per_s).sum(),
        }
    }
}

/// Data no record refers to, kept for the grace period (`--gc-grace`) in
/// case a write in flight still needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GarbageDocument {
    pub chunks: u64,
    pub fragments: u64,
    /// Bytes of those fragments, still on the nodes' disks.
    pub bytes: u64,
    /// Unix milliseconds when the oldest became garbage (null: none).
    pub oldest_ms: Option<u64>,
    /// Unix milliseconds from which the oldest is collected: meta drops its
    /// record then, and the nodes delete its fragments on their next pass.
    pub collect_from_ms: Option<u64>,
    pub grace_ms: u64,
}

/// A storage node as the cluster map has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeDocument {
    /// 16 hex digits.
    pub id: String,
    /// QUIC address it serves fragments on.
    pub addr: String,
    /// `up`, `down` (silent past down-after) or `out` (silent past out-after).
    pub state: String,
    /// `active`, `draining` or `removed`.
    pub admin: String,
    /// Bytes offered.
    pub capacity: u64,
    /// Bytes used on its file system.
    pub used: u64,
    pub zone: Option<String>,
    /// Milliseconds since its last heartbeat (null: never heard from).
    pub last_seen_ms: Option<u64>,
    /// Fragments meta's records place there, and their bytes.
    pub fragments: u64,
    pub stored: u64,
    pub scrub: ScrubDocument,
    /// Fragment bytes per second it stored and served lately (0 unless up).
    #[serde(default)]
    pub write_bytes_per_s: u64,
    #[serde(default)]
    pub read_bytes_per_s: u64,
}

/// A node's deep scrub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScrubDocument {
    pub seq_done: u64,
    pub running: bool,
    pub checked: u64,
    pub found: u64,
    /// Unix milliseconds of the last finished scrub (0: none).
    pub last_done_ms: u64,
}

/// Live chunks by redundancy: `healthy + degraded + at_risk + lost == total`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChunkHealthDocument {
    pub total: u64,
    pub healthy: u64,
    pub degraded: u64,
    /// One more lost fragment and they are unreadable.
    pub at_risk: u64,
    pub lost: u64,
    /// Healthy, with fragments to move off draining nodes.
    pub misplaced: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RepairDocument {
    pub pending_fragments: u64,
    pub pending_bytes: u64,
    pub moving_fragments: u64,
    pub rebuilt_fragments: u64,
    pub rebuilt_bytes: u64,
    pub moved_fragments: u64,
    pub moved_bytes: u64,
    /// Over the last half minute.
    pub rate_bytes_per_s: u64,
    /// Seconds to go at that rate (null: nothing to do, or no rate yet).
    pub eta_s: Option<u64>,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BalanceDocument {
    /// Bytes on the fullest node over its capacity-weighted fair share.
    pub fullest_over_fair: f64,
    /// Largest |share / fair share - 1| over the nodes.
    pub max_deviation: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CorruptDocument {
    pub chunk: String,
    pub index: u8,
    pub node: String,
    pub reason: String,
    pub at_ms: u64,
}

impl NodeDocument {
    pub fn new(n: &NodeInfo) -> Self {
        NodeDocument {
            id: n.id.to_string(),
            addr: n.addr.clone(),
            state: n.state.as_str().into(),
            admin: n.admin.as_str().into(),
            capacity: n.capacity,
            used: n.used,
            zone: n.zone.clone(),
            last_seen_ms: (n.last_seen_ms != u64::MAX).then_some(n.last_seen_ms),
            fragments: n.fragments,
            stored: n.stored,
            scrub: ScrubDocument {
                seq_done: n.scrub.seq_done,
                running: n.scrub.running,
                checked: n.scrub.checked,
                found: n.scrub.found,
                last_done_ms: n.scrub.last_done_ms,
            },
            write_bytes_per_s: n.write_bytes_per_s,
            read_bytes_per_s: n.read_bytes_per_s,
        }
    }
}

impl StatusDocument {
    /// The document of a status and the garbage summary meta answered.
    pub fn new(s: &ClusterStatus, g: &GarbageSummary) -> Self {
        let (h, r) = (&s.health, &s.repair);
        StatusDocument {
            epoch: s.map.epoch,
            default_policy: s.map.default_policy.to_string(),
            nodes: s.map.nodes.iter().map(NodeDocument::new).collect(),
            buckets: s.buckets,
            objects: s.objects,
            chunks: ChunkHealthDocument {
                total: h.total,
                healthy: h.healthy,
                degraded: h.degraded,
                at_risk: h.at_risk,
                lost: h.lost,
                misplaced: h.misplaced,
            },
            repair: RepairDocument {
                pending_fragments: r.pending_fragments,
                pending_bytes: r.pending_bytes,
                moving_fragments: r.moving_fragments,
                rebuilt_fragments: r.rebuilt_fragments,
                rebuilt_bytes: r.rebuilt_bytes,
                moved_fragments: r.moved_fragments,
                moved_bytes: r.moved_bytes,
                rate_bytes_per_s: r.rate_bytes_per_s,
                eta_s: r.eta_s,
                active: r.active,
            },
            balance: BalanceDocument {
                fullest_over_fair: s.balance.fullest_over_fair,
                max_deviation: s.balance.max_deviation,
            },
            scrub_seq: s.scrub_seq,
            corrupt_reports: s.corrupt_reports,
            recent_corrupt: s
                .recent_corrupt
                .iter()
                .map(|c| CorruptDocument {
                    chunk: c.chunk.to_string(),
                    index: c.index,
                    node: c.node.to_string(),
                    reason: c.reason.clone(),
                    at_ms: c.at_ms,
                })
                .collect(),
            garbage: GarbageDocument {
                chunks: g.chunks,
                fragments: g.fragments,
                bytes: g.bytes,
                oldest_ms: g.oldest_ms,
                collect_from_ms: g.oldest_ms.map(|t| t.saturating_add(g.grace_ms)),
                grace_ms: g.grace_ms,
            },
            throughput: ThroughputDocument::of(&s.map.nodes),
            lifecycle: LifecycleDocument::default(),
        }
    }

    /// The same document with the lifecycle worker's state.
    pub fn with_lifecycle(mut self, p: &LifecycleProgress) -> Self {
        self.lifecycle = LifecycleDocument::new(p);
        self
    }
}

/// An access key's grant on a bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyGrantDocument {
    pub bucket: String,
    /// `read`, `write` or `owner`.
    pub permission: String,
}

/// An S3 access key without its secret: what `tessera key ls --json`
/// prints and `GET /v1/keys` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyDocument {
    pub access_key: String,
    pub name: String,
    /// Unix milliseconds.
    pub created_ms: u64,
    pub grants: Vec<KeyGrantDocument>,
}

impl KeyDocument {
    /// Every key with its grants (from all grants of the cluster).
    pub fn list(keys: &[AccessKey], grants: &[Grant]) -> Vec<Self> {
        keys.iter()
            .map(|k| KeyDocument {
                access_key: k.id.clone(),
                name: k.name.clone(),
                created_ms: k.created_ms,
                grants: grants
                    .iter()
                    .filter(|g| g.key == k.id)
                    .map(|g| KeyGrantDocument {
                        bucket: g.bucket.clone(),
                        permission: g.permission.as_str().into(),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// An access key's grant, seen from its bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BucketGrantDocument {
    pub access_key: String,
    pub permission: String,
}

/// A block volume: `GET /v1/volumes`, and `tessera volume ls --json` /
/// `volume info --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VolumeDocument {
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// `ec:K+M` or `rep:N`.
    pub policy: String,
    /// Bytes: 512 or 4096.
    pub block_size: u32,
    /// Bytes the volume maps to data (holes and trimmed ranges excluded).
    pub allocated: u64,
    /// Oldest first.
    pub snapshots: Vec<SnapshotDocument>,
    /// `NAME@SNAP` this volume was cloned from.
    pub origin: Option<String>,
    /// Unix milliseconds.
    pub created_ms: u64,
    /// Whether a writer holds the volume's lease now.
    pub attached: bool,
    /// Who holds (or last held) the lease.
    pub holder: Option<String>,
    /// The last lease epoch granted.
    pub epoch: u64,
}

/// A volume's snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotDocument {
    pub name: String,
    /// Unix milliseconds.
    pub created_ms: u64,
    /// Bytes mapped to data when taken.
    pub allocated: u64,
    /// Clones made from it (it cannot be removed while any exists).
    pub clones: u32,
}

impl VolumeDocument {
    /// The document of `v` as of `now_ms` (for whether its lease is fresh).
    pub fn new(v: &tessera_proto::VolumeInfo, now_ms: u64) -> Self {
        VolumeDocument {
            name: v.name.clone(),
            size: v.size,
            policy: v.policy.to_string(),
            block_size: v.block_size,
            allocated: v.allocated,
            snapshots: v
                .snapshots
                .iter()
                .map(|s| SnapshotDocument {
                    name: s.name.clone(),
                    created_ms: s.created_ms,
                    allocated: s.allocated,
                    clones: s.clones,
                })
                .collect(),
            origin: v.origin.clone(),
            created_ms: v.created_ms,
            attached: v.attached_at(now_ms),
            holder: v.attachment.as_ref().map(|a| a.holder.clone()),
            epoch: v.epoch,
        }
    }
}

/// A bucket: `GET /v1/buckets` and `tessera bucket ls --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BucketDocument {
    pub name: String,
    /// `ec:K+M` or `rep:N`.
    pub policy: String,
    /// Unix milliseconds.
    pub created_ms: u64,
    pub grants: Vec<BucketGrantDocument>,
    /// Logical bytes of the bucket's current and noncurrent object
    /// versions (the objects' sizes, not the fragments storing them;
    /// parts of multipart uploads in progress are not counted).
    pub bytes: u64,
    /// Current objects.
    pub objects: u64,
    /// Noncurrent object versions (versioned buckets).
    pub noncurrent_versions: u64,
    /// Bytes of those noncurrent versions (part of `bytes`).
    pub noncurrent_bytes: u64,
    /// Delete markers (versioned buckets).
    pub delete_markers: u64,
}

impl BucketDocument {
    /// Every bucket with its grants (from all grants of the cluster) and
    /// its usage (a bucket missing from `usage` counts as empty).
    pub fn list(
        buckets: &[BucketInfo],
        grants: &[Grant],
        usage: &[(String, BucketUsage)],
    ) -> Vec<Self> {
        // Indexed once: a cluster may hold thousands of buckets.
        let usage: std::collections::HashMap<&str, BucketUsage> =
            usage.iter().map(|(name, u)| (name.as_str(), *u)).collect();
        let mut grants_of: std::collections::HashMap<&str, Vec<BucketGrantDocument>> =
            std::collections::HashMap::new();
        for g in grants {
            grants_of
                .entry(g.bucket.as_str())
                .or_default()
                .push(BucketGrantDocument {
                    access_key: g.key.clone(),
                    permission: g.permission.as_str().into(),
                });
        }
        buckets
            .iter()
            .map(|b| {
                let u = usage.get(b.name.as_str()).copied().unwrap_or_default();
                BucketDocument {
                    name: b.name.clone(),
                    policy: b.policy.to_string(),
                    created_ms: b.created_ms,
                    grants: grants_of.remove(b.name.as_str()).unwrap_or_default(),
                    bytes: u.bytes(),
                    objects: u.objects,
                    noncurrent_versions: u.noncurrent,
                    noncurrent_bytes: u.noncurrent_bytes,
                    delete_markers: u.delete_markers,
                }
            })
            .collect()
    }
}

/// Repair and scrub progress: `GET /v1/repair`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RepairStatusDocument {
    pub chunks: ChunkHealthDocument,
    pub repair: RepairDocument,
    /// The newest deep-scrub request.
    pub scrub_seq: u64,
    /// Each node's deep scrub, by node id.
    pub scrub: Vec<NodeScrubDocument>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeScrubDocument {
    pub node: String,
    pub state: String,
    #[serde(flatten)]
    pub scrub: ScrubDocument,
}

impl RepairStatusDocument {
    pub fn new(s: &StatusDocument) -> Self {
        RepairStatusDocument {
            chunks: s.chunks.clone(),
            repair: s.repair.clone(),
            scrub_seq: s.scrub_seq,
            scrub: s
                .nodes
                .iter()
                .map(|n| NodeScrubDocument {
                    node: n.id.clone(),
                    state: n.state.clone(),
                    scrub: n.scrub.clone(),
                })
                .collect(),
        }
    }
}

/// Bytes for people: `1.5 KiB`, `12 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
