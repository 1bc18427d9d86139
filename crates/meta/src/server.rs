use std::collections::HashMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tessera_net::{Endpoint, Identity, RecvStream, SendStream, read_frame, serve, write_frame};
use tessera_proto::{
    ClusterMap, ClusterStatus, CorruptReport, ErrorCode, FrameKind, Heartbeat, MetaRequest,
    MetaResponse, NodeInfo, NodeState, RemoteError,
};
use tessera_types::Policy;
use tracing::{debug, info, warn};

use crate::MetaError;
use crate::state::{Command, NodeRecord, Outcome, StateMachine, counter};

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
}

pub struct Meta {
    sm: StateMachine,
    config: MetaConfig,
    live: Mutex<HashMap<tessera_types::NodeId, Liveness>>,
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
                    },
                )
            })
            .collect();
        Ok(Arc::new(Meta {
            sm,
            config,
            live: Mutex::new(live),
            requests: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
        }))
    }

    /// Prometheus text exposition: cluster gauges and request counters.
    pub fn metrics_text(&self) -> Result<String, MetaError> {
        let map = self.cluster_map()?;
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
                let (state, used, last_seen_ms) = match live.get(&n.id) {
                    Some(l) => {
                        let age = l.last_seen.elapsed();
                        let state = liveness(age, self.config.down_after, self.config.out_after);
                        (state, l.used, age.as_millis() as u64)
                    }
                    None => (NodeState::Down, 0, u64::MAX),
                };
                NodeInfo {
                    id: n.id,
                    addr: n.addr,
                    zone: n.zone,
                    capacity: n.capacity,
                    used,
                    state,
                    last_seen_ms,
                }
            })
            .collect();
        Ok(ClusterMap {
            epoch: self.sm.counter(counter::EPOCH)?,
            nodes,
            default_policy: self.config.default_policy,
            inline_limit: self.config.inline_limit,
        })
    }

    fn heartbeat(&self, hb: Heartbeat) -> Result<(), MetaError> {
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
            },
        );
        Ok(())
    }

    /// Answers one request. Blocking: it reads and writes RocksDB.
    pub fn handle(&self, req: MetaRequest) -> Result<MetaResponse, MetaError> {
        use MetaRequest as R;
        Ok(match req {
            R::Heartbeat(hb) => {
                self.heartbeat(hb)?;
                MetaResponse::Ok
            }
            R::ClusterMap => MetaResponse::ClusterMap(self.cluster_map()?),
            R::Status => MetaResponse::Status(ClusterStatus {
                map: self.cluster_map()?,
                buckets: self.sm.counter(counter::BUCKETS)?,
                objects: self.sm.counter(counter::OBJECTS)?,
                chunks: self.sm.counter(counter::CHUNKS)?,
                corrupt_reports: self.sm.counter(counter::CORRUPT)?,
                recent_corrupt: self.sm.recent_corrupt(RECENT_CORRUPT)?,
            }),
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
            } => {
                self.sm.apply(&Command::CommitObject {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    object,
                    at_ms: now_ms(),
                })?;
                MetaResponse::Object(self.sm.object(&bucket, &key)?)
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
                MetaResponse::Ok
            }
        })
    }
}

fn deleted(outcome: Outcome) -> MetaResponse {
    match outcome {
        Outcome::Deleted { existed } => MetaResponse::Deleted { existed },
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

pub async fn start(config: MetaConfig, identity: &Identity) -> Result<RunningMeta, MetaError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| MetaError::Corrupt(format!("creating {}: {e}", config.data_dir.display())))?;
    let listen = config.listen;
    let meta = Meta::open(config)?;
    let endpoint = Endpoint::server(listen, identity)?;
    info!(addr = %endpoint.local_addr()?, "meta listening");
    let m = meta.clone();
    let ep = endpoint.clone();
    let task = tokio::spawn(async move {
        serve(ep, move |_peer, send, recv| {
            handle_stream(m.clone(), send, recv)
        })
        .await;
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
