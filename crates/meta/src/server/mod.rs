use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tessera_net::{Endpoint, Identity, RecvStream, SendStream, read_frame, serve, write_frame};
use tessera_proto::{
    ClusterMap, ClusterStatus, CorruptReport, ErrorCode, FragmentState, FrameKind, Heartbeat,
    HeartbeatReply, LoadBalance, MetaRequest, MetaResponse, NodeAdmin, NodeInfo, NodeState,
    RemoteError, RepairProgress, ScrubProgress,
};
use tessera_types::{NodeId, Policy};
use tracing::{debug, info, warn};

use crate::MetaError;
use crate::state::{Assessment, Command, NodeClasses, NodeRecord, Outcome, StateMachine, counter};

#[derive(Debug, Clone)]
pub struct MetaConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// A node with no heartbeat for this long is `down`.
    pub down_after: Duration,
    /// ... and for this long, `out`.
    pub out_after: Duration,
    pub default_policy: Policy,
    /// Objects up to this many bytes are stored inline in meta.
    pub inline_limit: u32,
    /// Data no record refers to is deleted once older than this.
    pub gc_grace: Duration,
    /// Multipart uploads neither completed nor aborted this long after
    /// they began are aborted.
    pub upload_expiry: Duration,
}

impl MetaConfig {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        MetaConfig {
            listen,
            data_dir,
            down_after: Duration::from_secs(30),
            out_after: Duration::from_secs(600),
            default_policy: Policy::default(),
            inline_limit: 4096,
            gc_grace: Duration::from_secs(6 * 3600),
            upload_expiry: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A node's state from the time since its last heartbeat.
pub fn liveness(silent_for: Duration, down_after: Duration, out_after: Duration) -> NodeState {
    if silent_for > out_after {
        NodeState::Out
    } else if silent_for > down_after {
        NodeState::Down
    } else {
        NodeState::Up
    }
}

/// A request must arrive whole within this time, or the stream is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Corruption reports shown in status.
const RECENT_CORRUPT: usize = 20;

struct Liveness {
    last_seen: Instant,
    used: u64,
    scrub: ScrubProgress,
    /// False until the node's first heartbeat to this meta process.
    heard: bool,
}

/// After a meta restart, nodes not yet heard from get this much longer
/// before they count as out: reconnecting can take a connect timeout or
/// two, and a false `out` would set off needless repairs.
const RESTART_GRACE: Duration = Duration::from_secs(10);

/// Chunks a writer is storing, protected from the collector.
struct Reservation {
    renewed: Instant,
    chunks: std::collections::HashSet<tessera_types::ChunkId>,
}

/// Repair traffic over this window gives the rate in status.
const RATE_WINDOW: Duration = Duration::from_secs(30);
/// Chunk assessments are this fresh at most: status and the repairer poll.
const ASSESS_TTL: Duration = Duration::from_millis(500);
/// Most garbage chunks purged per command.
const PURGE_BATCH: usize = 1000;

pub struct Meta {
    sm: StateMachine,
    config: MetaConfig,
    live: Mutex<HashMap<NodeId, Liveness>>,
    /// (when, bytes) of recent repair commits.
    repaired: Mutex<VecDeque<(Instant, u64)>>,
    /// The last assessment, when, and the node classes it was made with.
    assessed: Mutex<Option<(Instant, NodeClasses, Arc<Assessment>)>>,
    /// Writes in progress (soft state: a meta restart drops them, and their
    /// commits are refused).
    writes: Mutex<HashMap<u64, Reservation>>,
    requests: AtomicU64,
    refused: AtomicU64,
    bad_requests: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Meta {
    pub fn open(config: MetaConfig) -> Result<Arc<Self>, MetaError> {
        let sm = StateMachine::open(&config.data_dir.join("db"))?;
        // After a restart every known node gets a full grace period to report.
        let start = Instant::now();
        let live = sm
            .nodes()?
            .into_iter()
            .map(|n| {
                (
                    n.id,
                    Liveness {
                        last_seen: start,
                        used: 0,
                        scrub: ScrubProgress::default(),
                        heard: false,
                    },
                )
            })
            .collect();
        Ok(Arc::new(Meta {
            sm,
            config,
            live: Mutex::new(live),
            repaired: Mutex::new(VecDeque::new()),
            assessed: Mutex::new(None),
            writes: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
        }))
    }

    /// Prometheus text exposition: cluster gauges and request counters.
    pub fn metrics_text(&self) -> Result<String, MetaError> {
        let status = self.status()?;
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
            self.sm.counter(counter::BUCKETS)?,
        );
        metric(
            "tessera_meta_objects",
            "gauge",
            "Objects.",
            "",
            self.sm.counter(counter::OBJECTS)?,
        );
        metric(
            "tessera_meta_chunks",
            "gauge",
            "Chunk records.",
            "",
            self.sm.counter(counter::CHUNKS)?,
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
            "tessera_meta_repair_rate_bytes",
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
            self.sm.counter(counter::CORRUPT)?,
        );
        metric(
            "tessera_meta_commands_applied_total",
            "counter",
            "State machine commands applied.",
            "",
            self.sm.counter(counter::APPLIED)?,
        );
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metric(
            "tessera_meta_requests_total",
            "counter",
            "Requests answered.",
            "",
            get(&self.requests),
        );
        metric(
            "tessera_meta_requests_refused_total",
            "counter",
            "Requests answered with an error.",
            "",
            get(&self.refused),
        );
        metric(
            "tessera_meta_bad_requests_total",
            "counter",
            "Malformed or truncated requests.",
            "",
            get(&self.bad_requests),
        );
        let b = &status.balance;
        let _ = writeln!(
            out,
            "# HELP tessera_meta_load_fullest_over_fair Stored bytes of the fullest node over its capacity-weighted fair share.\n# TYPE tessera_meta_load_fullest_over_fair gauge\ntessera_meta_load_fullest_over_fair {}\n# HELP tessera_meta_load_max_deviation Largest deviation of a node's load from its fair share.\n# TYPE tessera_meta_load_max_deviation gauge\ntessera_meta_load_max_deviation {}",
            b.fullest_over_fair, b.max_deviation
        );
        Ok(out)
    }

    pub fn state(&self) -> &StateMachine {
        &self.sm
    }

    pub fn cluster_map(&self) -> Result<ClusterMap, MetaError> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let nodes = self
            .sm
            .nodes()?
            .into_iter()
            .map(|n| {
                let (state, used, last_seen_ms, scrub) = match live.get(&n.id) {
                    Some(l) => {
                        let age = l.last_seen.elapsed();
                        let out_after = if l.heard {
                            self.config.out_after
                        } else {
                            self.config.out_after + RESTART_GRACE
                        };
                        let state = liveness(age, self.config.down_after, out_after);
                        (state, l.used, age.as_millis() as u64, l.scrub)
                    }
                    None => (NodeState::Down, 0, u64::MAX, ScrubProgress::default()),
                };
                Ok(NodeInfo {
                    id: n.id,
                    addr: n.addr,
                    zone: n.zone,
                    capacity: n.capacity,
                    used,
                    state,
                    last_seen_ms,
                    admin: self.sm.node_admin(n.id)?,
                    fragments: self.sm.counter(&counter::node_fragments(n.id))?,
                    stored: self.sm.counter(&counter::node_bytes(n.id))?,
                    scrub,
                })
            })
            .collect::<Result<_, MetaError>>()?;
        Ok(ClusterMap {
            epoch: self.sm.counter(counter::EPOCH)?,
            nodes,
            default_policy: self.config.default_policy,
            inline_limit: self.config.inline_limit,
            gc_grace_ms: self.config.gc_grace.as_millis() as u64,
        })
    }

    /// What a fragment on each node that is not plainly up and active is.
    fn node_classes(map: &ClusterMap) -> NodeClasses {
        map.nodes
            .iter()
            .filter_map(|n| {
                let class = match (n.state, n.admin) {
                    (NodeState::Out, _) => FragmentState::Lost,
                    (NodeState::Down, _) => FragmentState::Down,
                    (NodeState::Up, NodeAdmin::Active) => return None,
                    (NodeState::Up, _) => FragmentState::Move,
                };
                Some((n.id, class))
            })
            .collect()
    }

    /// The health of every chunk and the repair work, at most
    /// `ASSESS_TTL` old.
    pub fn assess(&self, map: &ClusterMap) -> Result<Arc<Assessment>, MetaError> {
        let classes = Self::node_classes(map);
        let mut cached = self.assessed.lock().unwrap_or_else(|p| p.into_inner());
        // Fresh enough, and made with the same node states as `map`: a
        // status must never show a map and health that disagree.
        if let Some((at, seen, a)) = cached.as_ref()
            && at.elapsed() < ASSESS_TTL
            && *seen == classes
        {
            return Ok(a.clone());
        }
        let a = Arc::new(self.sm.assess(&classes, 10_000)?);
        *cached = Some((Instant::now(), classes, a.clone()));
        Ok(a)
    }

    fn repair_progress(&self, a: &Assessment) -> Result<RepairProgress, MetaError> {
        let mut window = self.repaired.lock().unwrap_or_else(|p| p.into_inner());
        while window
            .front()
            .is_some_and(|(at, _)| at.elapsed() > RATE_WINDOW)
        {
            window.pop_front();
        }
        let bytes: u64 = window.iter().map(|(_, b)| b).sum();
        // Over the window, or since the first commit in it if repair just began.
        let span = window
            .front()
            .map(|(at, _)| at.elapsed().max(Duration::from_secs(1)))
            .unwrap_or(RATE_WINDOW)
            .min(RATE_WINDOW);
        let rate = (bytes as f64 / span.as_secs_f64()) as u64;
        let todo = a.pending_bytes + a.moving_bytes;
        let recent = window
            .back()
            .is_some_and(|(at, _)| at.elapsed() < Duration::from_secs(5));
        Ok(RepairProgress {
            pending_fragments: a.pending_fragments,
            pending_bytes: a.pending_bytes,
            moving_fragments: a.moving_fragments,
            rebuilt_fragments: self.sm.counter(counter::REBUILT_FRAGMENTS)?,
            rebuilt_bytes: self.sm.counter(counter::REBUILT_BYTES)?,
            moved_fragments: self.sm.counter(counter::MOVED_FRAGMENTS)?,
            moved_bytes: self.sm.counter(counter::MOVED_BYTES)?,
            rate_bytes_per_s: rate,
            eta_s: (todo > 0 && rate > 0).then(|| todo.div_ceil(rate)),
            active: todo > 0 && recent,
        })
    }

    pub fn status(&self) -> Result<ClusterStatus, MetaError> {
        let map = self.cluster_map()?;
        let a = self.assess(&map)?;
        Ok(ClusterStatus {
            balance: load_balance(&map),
            buckets: self.sm.counter(counter::BUCKETS)?,
            objects: self.sm.counter(counter::OBJECTS)?,
            chunks: a.health.total,
            corrupt_reports: self.sm.counter(counter::CORRUPT)?,
            recent_corrupt: self.sm.recent_corrupt(RECENT_CORRUPT)?,
            health: a.health,
            repair: self.repair_progress(&a)?,
            scrub_seq: self.sm.counter(counter::SCRUB_SEQ)?,
            map,
        })
    }

    /// Deletes the records of chunks that have been garbage for longer than
    /// the grace period; nodes then find their fragments unreferenced.
    pub fn collect_garbage(&self) -> Result<usize, MetaError> {
        let expired = now_ms().saturating_sub(self.config.upload_expiry.as_millis() as u64);
        for u in self.sm.uploads(None)? {
            if u.initiated_ms < expired {
                info!(upload = %u.id, bucket = %u.bucket, key = %u.key, "abandoned multipart upload aborted");
                self.sm.apply(&Command::AbortUpload {
                    upload: u.id,
                    at_ms: now_ms(),
                })?;
            }
        }
        let cutoff = now_ms().saturating_sub(self.config.gc_grace.as_millis() as u64);
        let mut purged = 0;
        loop {
            let ids = self.sm.garbage_before(cutoff, PURGE_BATCH)?;
            if ids.is_empty() {
                return Ok(purged);
            }
            purged += ids.len();
            let full = ids.len() == PURGE_BATCH;
            self.sm.apply(&Command::PurgeChunks { ids })?;
            if !full {
                return Ok(purged);
            }
        }
    }

    fn heartbeat(&self, hb: Heartbeat) -> Result<HeartbeatReply, MetaError> {
        if self.sm.node_admin(hb.node)? == NodeAdmin::Removed {
            return Err(MetaError::Refused(RemoteError::new(
                ErrorCode::NodeRemoved,
                format!(
                    "node {} was removed from the cluster; to join again, start it on an empty data directory",
                    hb.node
                ),
            )));
        }
        let known = self.sm.node(hb.node)?;
        let changed = match &known {
            Some(n) => n.addr != hb.addr || n.zone != hb.zone || n.capacity != hb.capacity,
            None => true,
        };
        if changed {
            let joined_ms = known.as_ref().map(|n| n.joined_ms).unwrap_or_else(now_ms);
            let node = NodeRecord {
                id: hb.node,
                addr: hb.addr.clone(),
                zone: hb.zone.clone(),
                capacity: hb.capacity,
                joined_ms,
            };
            self.sm.apply(&Command::RegisterNode { node })?;
            info!(node = %hb.node, addr = %hb.addr, zone = ?hb.zone, capacity = hb.capacity, "node registered");
        }
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(
            hb.node,
            Liveness {
                last_seen: Instant::now(),
                used: hb.used,
                scrub: hb.scrub,
                heard: true,
            },
        );
        Ok(HeartbeatReply {
            scrub_seq: self.sm.counter(counter::SCRUB_SEQ)?,
            gc_grace_ms: self.config.gc_grace.as_millis() as u64,
        })
    }

    /// Answers one request. Blocking: it reads and writes RocksDB.
    pub fn handle(&self, req: MetaRequest) -> Result<MetaResponse, MetaError> {
        use MetaRequest as R;
        Ok(match req {
            R::Heartbeat(hb) => MetaResponse::HeartbeatReply(self.heartbeat(hb)?),
            R::ClusterMap => MetaResponse::ClusterMap(self.cluster_map()?),
            R::Status => MetaResponse::Status(self.status()?),
            R::CreateBucket { name, policy } => {
                let policy = policy.unwrap_or(self.config.default_policy);
                self.sm.apply(&Command::CreateBucket {
                    name: name.clone(),
                    policy,
                    at_ms: now_ms(),
                })?;
                MetaResponse::Bucket(self.sm.bucket(&name)?)
            }
            R::DeleteBucket { name } => deleted(self.sm.apply(&Command::DeleteBucket { name })?),
            R::GetBucket { name } => MetaResponse::Bucket(self.sm.bucket(&name)?),
            R::ListBuckets => MetaResponse::Buckets(self.sm.buckets()?),
            R::CommitObject {
                bucket,
                key,
                object,
                write,
                if_absent,
            } => {
                self.commit_reserved(
                    write,
                    &Command::CommitObject {
                        bucket: bucket.clone(),
                        key: key.clone(),
                        object,
                        at_ms: now_ms(),
                        if_absent,
                    },
                )?;
                MetaResponse::Object(self.sm.object(&bucket, &key)?)
            }
            R::CreateUpload {
                bucket,
                key,
                content_type,
                user_meta,
                headers,
            } => {
                let upload = tessera_proto::UploadInfo {
                    id: random_text(UPLOAD_ID_CHARS, 32),
                    bucket,
                    key,
                    initiated_ms: now_ms(),
                    content_type,
                    user_meta,
                    headers,
                };
                self.sm.apply(&Command::CreateUpload {
                    upload: upload.clone(),
                })?;
                MetaResponse::Upload(upload)
            }
            R::CommitPart {
                upload,
                number,
                part,
                write,
            } => {
                self.commit_reserved(
                    write,
                    &Command::CommitPart {
                        upload: upload.clone(),
                        number,
                        part,
                        at_ms: now_ms(),
                    },
                )?;
                // One lookup, not a scan: an upload may have 10,000 parts.
                match self.sm.part(&upload, number)? {
                    Some(p) => MetaResponse::Part(p),
                    None => return Err(MetaError::Corrupt(format!("part {number} vanished"))),
                }
            }
            R::CompleteUpload { upload, parts } => {
                let info = self.sm.upload(&upload)?;
                self.sm.apply(&Command::CompleteUpload {
                    upload,
                    parts,
                    at_ms: now_ms(),
                })?;
                MetaResponse::Object(self.sm.object(&info.bucket, &info.key)?)
            }
            R::AbortUpload { upload } => deleted(self.sm.apply(&Command::AbortUpload {
                upload,
                at_ms: now_ms(),
            })?),
            R::GetUpload { upload } => MetaResponse::Upload(self.sm.upload(&upload)?),
            R::Rename {
                bucket,
                from,
                to,
                replace,
                keep_dir,
            } => match self.sm.apply(&Command::Rename {
                bucket,
                from,
                to,
                replace,
                keep_dir,
                at_ms: now_ms(),
            })? {
                Outcome::Renamed { objects } => MetaResponse::Renamed { objects },
                other => deleted(other),
            },
            R::Lookup { bucket, key } => MetaResponse::Found(self.sm.lookup(&bucket, &key)?),
            R::ListDir {
                bucket,
                prefix,
                after,
                limit,
            } => MetaResponse::DirListing(self.sm.list_dir(
                &bucket,
                &prefix,
                after.as_deref(),
                limit as usize,
            )?),
            R::PutDir {
                bucket,
                path,
                info,
                create,
            } => deleted(self.sm.apply(&Command::PutDir {
                bucket,
                path,
                info,
                create,
            })?),
            R::RemoveDir {
                bucket,
                path,
                keep_dir,
            } => deleted(self.sm.apply(&Command::RemoveDir {
                bucket,
                path,
                keep_dir,
                at_ms: now_ms(),
            })?),
            R::PatchObject {
                bucket,
                key,
                object,
                write,
                if_absent,
            } => {
                self.commit_reserved(
                    write,
                    &Command::PatchObject {
                        bucket: bucket.clone(),
                        key: key.clone(),
                        object,
                        if_absent,
                        at_ms: now_ms(),
                    },
                )?;
                MetaResponse::Object(self.sm.object(&bucket, &key)?)
            }
            R::Unlink {
                bucket,
                key,
                keep_dir,
            } => deleted(self.sm.apply(&Command::Unlink {
                bucket,
                key,
                keep_dir,
                at_ms: now_ms(),
            })?),
            R::ListParts { upload } => {
                self.sm.upload(&upload)?;
                MetaResponse::Parts(self.sm.parts(&upload)?)
            }
            R::ListUploads { bucket } => {
                self.sm.bucket(&bucket)?;
                MetaResponse::Uploads(self.sm.uploads(Some(&bucket))?)
            }
            R::ReserveChunks { write, chunks } => {
                let grace = self.config.gc_grace;
                let mut writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
                writes.retain(|_, r| r.renewed.elapsed() < grace);
                let r = writes.entry(write).or_insert_with(|| Reservation {
                    renewed: Instant::now(),
                    chunks: Default::default(),
                });
                r.renewed = Instant::now();
                r.chunks.extend(chunks);
                MetaResponse::Ok
            }
            R::HeadObject { bucket, key } => MetaResponse::Object(self.sm.object(&bucket, &key)?),
            R::GetChunks { ids } => MetaResponse::Chunks(self.sm.chunks(&ids)?),
            R::DeleteObject { bucket, key } => deleted(self.sm.apply(&Command::DeleteObject {
                bucket,
                key,
                at_ms: now_ms(),
            })?),
            R::ListObjects {
                bucket,
                prefix,
                delimiter,
                start_after,
                max_keys,
            } => {
                let max_keys = (max_keys as usize).clamp(1, 10_000);
                MetaResponse::Listing(self.sm.list(
                    &bucket,
                    &prefix,
                    delimiter.as_deref(),
                    start_after.as_deref(),
                    max_keys,
                )?)
            }
            R::ReportCorrupt {
                chunk,
                index,
                node,
                reason,
            } => {
                warn!(%chunk, index, %node, %reason, "corrupt fragment reported");
                let report = CorruptReport {
                    chunk,
                    index,
                    node,
                    reason,
                    at_ms: now_ms(),
                };
                self.sm.apply(&Command::ReportCorrupt { report })?;
                self.invalidate();
                MetaResponse::Ok
            }
            R::NodeFragments { node, after, limit } => {
                let limit = (limit as usize).clamp(1, 10_000);
                let (items, more) = self.sm.node_fragments(node, after, limit)?;
                MetaResponse::NodeFragments { items, more }
            }
            R::UnknownFragments { node, items } => {
                let writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
                let reserved = |c: &tessera_types::ChunkId| {
                    writes
                        .values()
                        .any(|r| r.renewed.elapsed() < self.config.gc_grace && r.chunks.contains(c))
                };
                let unknown = self.sm.unknown_fragments(node, &items)?;
                MetaResponse::UnknownFragments(
                    unknown.into_iter().filter(|(c, _)| !reserved(c)).collect(),
                )
            }
            R::RepairWork { limit } => {
                let map = self.cluster_map()?;
                let a = self.assess(&map)?;
                let limit = (limit as usize).min(a.work.len());
                MetaResponse::RepairWork(a.work[..limit].to_vec())
            }
            R::ScanChunks { after, limit } => {
                let limit = (limit as usize).clamp(1, 10_000);
                MetaResponse::Chunks(self.sm.scan_chunks(after, limit)?)
            }
            R::CommitRepair { chunk, moves } => {
                let bytes = self
                    .sm
                    .chunks(&[chunk])
                    .map(|c| c[0].fragment_len * moves.len() as u64)
                    .unwrap_or(0);
                self.sm.apply(&Command::CommitRepair {
                    chunk,
                    moves: moves.clone(),
                })?;
                debug!(%chunk, ?moves, "repair committed");
                self.repaired
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back((Instant::now(), bytes));
                self.invalidate();
                MetaResponse::Ok
            }
            R::StartScrub => {
                self.sm.apply(&Command::RequestScrub)?;
                let seq = self.sm.counter(counter::SCRUB_SEQ)?;
                info!(seq, "deep scrub requested");
                MetaResponse::ScrubStarted { seq }
            }
            R::DrainNode { node } => {
                self.sm.apply(&Command::SetNodeAdmin {
                    node,
                    admin: NodeAdmin::Draining,
                })?;
                info!(%node, "node draining");
                self.invalidate();
                MetaResponse::Ok
            }
            R::CreateKey { name, id, secret } => {
                let key = tessera_proto::AccessKey {
                    id: id.unwrap_or_else(|| random_text(KEY_ID_CHARS, 20)),
                    secret: secret.unwrap_or_else(|| random_text(SECRET_CHARS, 40)),
                    name,
                    created_ms: now_ms(),
                    may_create_buckets: true,
                };
                self.sm.apply(&Command::CreateKey { key: key.clone() })?;
                info!(id = %key.id, name = %key.name, "access key created");
                MetaResponse::Key(key)
            }
            R::ListKeys => MetaResponse::Keys(self.sm.access_keys()?),
            R::GetKey { id } => MetaResponse::Key(self.sm.access_key(&id)?),
            R::DeleteKey { id } => deleted(self.sm.apply(&Command::DeleteKey { id })?),
            R::SetGrant {
                bucket,
                key,
                permission,
            } => {
                self.sm.apply(&Command::SetGrant {
                    bucket,
                    key,
                    permission,
                })?;
                MetaResponse::Ok
            }
            R::ListGrants { bucket, key } => {
                MetaResponse::Grants(self.sm.grants(bucket.as_deref(), key.as_deref())?)
            }
            R::RemoveNode { node } => {
                self.sm.apply(&Command::RemoveNode { node })?;
                self.live
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&node);
                info!(%node, "node removed");
                self.invalidate();
                MetaResponse::Ok
            }
        })
    }
}

impl Meta {
    /// Applies a command that makes chunks written under reservation
    /// `write` referenced, refusing it if the reservation lapsed. The lock
    /// is held across the commit: the collector's question about these
    /// chunks is answered wholly before or after it.
    fn commit_reserved(&self, write: Option<u64>, cmd: &Command) -> Result<(), MetaError> {
        let mut writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = write {
            let fresh = writes
                .get(&w)
                .is_some_and(|r| r.renewed.elapsed() < self.config.gc_grace);
            if !fresh {
                return Err(MetaError::Refused(RemoteError::new(
                    ErrorCode::Conflict,
                    "the write's reservation lapsed (idle longer than the garbage grace period, or meta restarted): its fragments may be collected, so it was not committed; write it again",
                )));
            }
        }
        self.sm.apply(cmd)?;
        if let Some(w) = write {
            writes.remove(&w);
        }
        Ok(())
    }

    /// The next status or repair request looks afresh.
    fn invalidate(&self) {
        *self.assessed.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// How evenly stored bytes follow capacity over the nodes that should hold
/// data (active, not out).
pub fn load_balance(map: &ClusterMap) -> LoadBalance {
    let nodes: Vec<&NodeInfo> = map
        .nodes
        .iter()
        .filter(|n| n.admin == NodeAdmin::Active && n.state != NodeState::Out && n.capacity > 0)
        .collect();
    let stored: f64 = nodes.iter().map(|n| n.stored as f64).sum();
    let capacity: f64 = nodes.iter().map(|n| n.capacity as f64).sum();
    if stored == 0.0 || capacity == 0.0 {
        return LoadBalance::default();
    }
    let mut b = LoadBalance::default();
    for n in nodes {
        let ratio = n.stored as f64 / (stored * n.capacity as f64 / capacity);
        b.fullest_over_fair = b.fullest_over_fair.max(ratio);
        b.max_deviation = b.max_deviation.max((ratio - 1.0).abs());
    }
    b
}

const KEY_ID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const UPLOAD_ID_CHARS: &[u8] = b"0123456789abcdef";
const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `len` characters of `alphabet` from the OS random source.
fn random_text(alphabet: &[u8], len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

fn deleted(outcome: Outcome) -> MetaResponse {
    match outcome {
        Outcome::Deleted { existed } => MetaResponse::Deleted { existed },
        Outcome::Renamed { objects } => MetaResponse::Renamed { objects },
        Outcome::Done => MetaResponse::Ok,
    }
}

async fn handle_stream(meta: Arc<Meta>, mut send: SendStream, mut recv: RecvStream) {
    let response = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_frame::<MetaRequest>(&mut recv, FrameKind::Request),
    )
    .await
    {
        Err(_) => MetaResponse::Error(RemoteError::new(
            ErrorCode::BadRequest,
            "request not received in time",
        )),
        Ok(Err(e)) => {
            debug!(error = %e, "bad request frame");
            meta.bad_requests.fetch_add(1, Ordering::Relaxed);
            MetaResponse::Error(RemoteError::new(
                ErrorCode::BadRequest,
                format!("bad request: {e}"),
            ))
        }
        Ok(Ok(req)) => {
            let m = meta.clone();
            match tokio::task::spawn_blocking(move || m.handle(req)).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) => MetaResponse::Error(e.to_remote()),
                Err(e) => MetaResponse::Error(RemoteError::new(ErrorCode::Internal, e.to_string())),
            }
        }
    };
    meta.requests.fetch_add(1, Ordering::Relaxed);
    if matches!(response, MetaResponse::Error(_)) {
        meta.refused.fetch_add(1, Ordering::Relaxed);
    }
    if write_frame(&mut send, FrameKind::Response, &response)
        .await
        .is_ok()
    {
        let _ = send.finish();
    }
}

/// A meta service running on its own tasks.
pub struct RunningMeta {
    pub meta: Arc<Meta>,
    endpoint: Endpoint,
    task: tokio::task::JoinHandle<()>,
}

impl RunningMeta {
    pub fn local_addr(&self) -> Result<SocketAddr, MetaError> {
        Ok(self.endpoint.local_addr()?)
    }

    pub async fn shutdown(self) {
        self.endpoint.close();
        let _ = self.task.await;
    }

    /// Runs until the endpoint closes.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Purges expired garbage records a few times per grace period.
async fn collect_garbage_forever(meta: Arc<Meta>) {
    let every =
        (meta.config.gc_grace / 4).clamp(Duration::from_millis(500), Duration::from_secs(60));
    loop {
        tokio::time::sleep(every).await;
        let m = meta.clone();
        match tokio::task::spawn_blocking(move || m.collect_garbage()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                info!(chunks = n, "garbage chunk records purged");
                meta.invalidate();
            }
            Ok(Err(e)) => warn!(error = %e, "garbage collection failed"),
            Err(e) => warn!(error = %e, "garbage collection task failed"),
        }
    }
}

pub async fn start(config: MetaConfig, identity: &Identity) -> Result<RunningMeta, MetaError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| MetaError::Corrupt(format!("creating {}: {e}", config.data_dir.display())))?;
    let listen = config.listen;
    let meta = Meta::open(config)?;
    let endpoint = Endpoint::server(listen, identity)?;
    info!(addr = %endpoint.local_addr()?, "meta listening");
    let m = meta.clone();
    let ep = endpoint.clone();
    let gc = tokio::spawn(collect_garbage_forever(meta.clone()));
    let task = tokio::spawn(async move {
        serve(ep, move |_peer, send, recv| {
            handle_stream(m.clone(), send, recv)
        })
        .await;
        gc.abort();
    });
    Ok(RunningMeta {
        meta,
        endpoint,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_go_down_then_out() {
        let (down, out) = (Duration::from_secs(5), Duration::from_secs(20));
        assert_eq!(liveness(Duration::from_secs(0), down, out), NodeState::Up);
        assert_eq!(liveness(Duration::from_secs(5), down, out), NodeState::Up);
        assert_eq!(liveness(Duration::from_secs(6), down, out), NodeState::Down);
        assert_eq!(
            liveness(Duration::from_secs(20), down, out),
            NodeState::Down
        );
        assert_eq!(liveness(Duration::from_secs(21), down, out), NodeState::Out);
    }
}
