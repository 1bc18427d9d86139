use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tessera_meta_client::{MetaCallError, MetaClient};
use tessera_net::{Endpoint, Identity, RecvStream, SendStream, read_frame, serve, write_frame};
use tessera_proto::{
    ErrorCode, FrameKind, Heartbeat, Lease, MetaResponse, NodeRequest, NodeResponse, RemoteError,
};
use tessera_types::NodeId;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::metrics::NodeMetrics;
use crate::upkeep::{Upkeep, UpkeepConfig, collect_forever, scrub_forever};
use crate::{FragmentStore, NodeError};

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    /// Address others use to reach this node; defaults to `listen`.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    pub zone: Option<String>,
    /// Bytes offered to the cluster; defaults to the size of the file system.
    pub capacity: Option<u64>,
    /// The meta group's replicas (one for a lone meta).
    pub meta: Vec<SocketAddr>,
    pub heartbeat_every: Duration,
    pub upkeep: UpkeepConfig,
}

/// A request frame must arrive within this time; bodies are covered by the
/// QUIC idle timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const LIST_LIMIT: u32 = 10_000;

/// Bytes of a fragment read from disk and handed to QUIC at a time.
const SEND_PIECE: usize = 1 << 20;

/// Bytes of the next piece of a fragment with `left` bytes still to send.
fn piece_len(left: u64) -> usize {
    left.min(SEND_PIECE as u64) as usize
}

/// Reads up to `len` bytes from `file` (fewer only at its end) into a new
/// buffer of that size; returns the file for the next piece.
fn read_piece(
    mut file: std::fs::File,
    len: usize,
) -> std::io::Result<(std::fs::File, bytes::Bytes)> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(len);
    (&mut file).take(len as u64).read_to_end(&mut buf)?;
    Ok((file, buf.into()))
}

/// The node's identity, created on first start and kept with its data.
pub fn load_or_create_node_id(dir: &Path) -> Result<NodeId, NodeError> {
    let path = dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().map_err(|_| NodeError::Corrupt {
            what: path.display().to_string(),
            why: "not a node id".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .map_err(|e| NodeError::io(format!("creating {}", dir.display()), e))?;
            let id = NodeId::random();
            let tmp = dir.join("node_id.tmp");
            std::fs::write(&tmp, format!("{id}\n"))
                .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| NodeError::io(format!("writing {}", path.display()), e))?;
            Ok(id)
        }
        Err(e) => Err(NodeError::io(format!("reading {}", path.display()), e)),
    }
}

pub(crate) struct Node {
    pub id: NodeId,
    pub store: FragmentStore,
    pub metrics: NodeMetrics,
    pub capacity: u64,
    pub upkeep: Upkeep,
}

async fn handle_stream(node: Arc<Node>, send: SendStream, mut recv: RecvStream) {
    let req = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_frame::<NodeRequest>(&mut recv, FrameKind::Request),
    )
    .await
    {
        Err(_) => Err(RemoteError::new(
            ErrorCode::BadRequest,
            "request not received in time",
        )),
        Ok(Err(e)) => {
            NodeMetrics::add(&node.metrics.bad_requests, 1);
            debug!(error = %e, "bad request frame");
            Err(RemoteError::new(
                ErrorCode::BadRequest,
                format!("bad request: {e}"),
            ))
        }
        Ok(Ok(req)) => Ok(req),
    };
    // Every line about a fragment read or write names the fragment and,
    // when a client request caused it, that request's id (the S3
    // gateway's `x-amz-request-id`), so one request can be followed from
    // the gateway's log into the nodes'.
    let span = match &req {
        Ok(NodeRequest::PutFragment {
            chunk,
            index,
            request,
            ..
        }) => fragment_span("put", chunk, *index, *request),
        Ok(NodeRequest::GetFragment {
            chunk,
            index,
            request,
        }) => fragment_span("get", chunk, *index, *request),
        _ => tracing::Span::none(),
    };
    answer(node, send, recv, req).instrument(span).await
}

fn fragment_span(
    op: &'static str,
    chunk: &tessera_types::ChunkId,
    index: u8,
    request: Option<tessera_types::RequestId>,
) -> tracing::Span {
    let span = info_span!("fragment", op, %chunk, index, request_id = tracing::field::Empty);
    if let Some(id) = request {
        span.record("request_id", tracing::field::display(id));
    }
    span
}

async fn answer(
    node: Arc<Node>,
    mut send: SendStream,
    mut recv: RecvStream,
    req: Result<NodeRequest, RemoteError>,
) {
    let resp = match req {
        Err(e) => NodeResponse::Error(e),
        Ok(NodeRequest::GetFragment { chunk, index, .. }) => {
            // Open, check and read the first piece in one blocking call: a
            // 1 MiB object's 256 KiB fragments need no other hop.
            let open = node.store.open_fragment_blocking(chunk, index);
            let first = tokio::task::spawn_blocking(move || {
                let (header, file) = open()?;
                let (file, piece) = read_piece(file, piece_len(header.len))
                    .map_err(|e| NodeError::io("reading fragment", e))?;
                Ok::<_, NodeError>((header, file, piece))
            })
            .await
            .unwrap_or_else(|e| Err(NodeError::io("read task", std::io::Error::other(e))));
            match first {
                Ok((header, file, piece)) => {
                    let head = NodeResponse::Fragment {
                        len: header.len,
                        hash: header.hash,
                    };
                    if write_frame(&mut send, FrameKind::Response, &head)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    // Pieces read on a blocking thread straight into
                    // buffers QUIC then sends as they are (no copy).
                    let mut left = header.len;
                    let mut read = Ok((file, piece));
                    loop {
                        match read {
                            Ok((file, piece)) if piece.len() == piece_len(left) => {
                                left -= piece.len() as u64;
                                if send.write_chunk(piece).await.is_err() {
                                    return;
                                }
                                if left == 0 {
                                    break;
                                }
                                read = tokio::task::spawn_blocking(move || {
                                    read_piece(file, piece_len(left))
                                })
                                .await
                                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                            }
                            other => {
                                // The header promised more bytes: reset so the
                                // reader sees a failed stream, not a short one.
                                let error = match other {
                                    Err(e) => e.to_string(),
                                    Ok(_) => "file ended early".into(),
                                };
                                warn!(%chunk, index, %error, "read failed mid-fragment");
                                let _ = send.reset(tessera_net::VarInt::from_u32(1));
                                return;
                            }
                        }
                    }
                    let _ = send.finish();
                    debug!(len = header.len, "fragment sent");
                    NodeMetrics::add(&node.metrics.gets, 1);
                    NodeMetrics::add(&node.metrics.get_bytes, header.len);
                    return;
                }
                Err(e) => {
                    debug!(error = %e, "fragment read refused");
                    NodeMetrics::add(&node.metrics.get_errors, 1);
                    NodeResponse::Error(e.to_remote())
                }
            }
        }
        Ok(req) => match serve_request(&node, req, &mut recv).await {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "request failed");
                NodeResponse::Error(e.to_remote())
            }
        },
    };
    if write_frame(&mut send, FrameKind::Response, &resp)
        .await
        .is_ok()
    {
        let _ = send.finish();
    }
}

async fn serve_request(
    node: &Node,
    req: NodeRequest,
    recv: &mut RecvStream,
) -> Result<NodeResponse, NodeError> {
    Ok(match req {
        NodeRequest::Ping => NodeResponse::Pong { node: node.id },
        NodeRequest::PutFragment {
            chunk,
            index,
            len,
            hash,
            ..
        } => {
            if let Err(e) = node.store.put(chunk, index, len, hash, recv).await {
                NodeMetrics::add(&node.metrics.put_errors, 1);
                return Err(e);
            }
            debug!(len, "fragment stored");
            NodeMetrics::add(&node.metrics.puts, 1);
            NodeMetrics::add(&node.metrics.put_bytes, len);
            NodeResponse::Stored
        }
        NodeRequest::DeleteFragment { chunk, index } => {
            let existed = node.store.delete(chunk, index).await?;
            NodeMetrics::add(&node.metrics.deletes, u64::from(existed));
            NodeResponse::Deleted { existed }
        }
        NodeRequest::ListFragments { after, limit } => {
            let (items, more) = node
                .store
                .list(after, limit.clamp(1, LIST_LIMIT) as usize)
                .await?;
            NodeResponse::Fragments { items, more }
        }
        NodeRequest::VerifyFragment { chunk, index } => match node.store.verify(chunk, index).await
        {
            Ok(()) => NodeResponse::Verified {
                ok: true,
                detail: String::new(),
            },
            Err(e @ NodeError::Corrupt { .. }) => {
                NodeMetrics::add(&node.metrics.verify_failures, 1);
                NodeResponse::Verified {
                    ok: false,
                    detail: e.to_string(),
                }
            }
            Err(e) => return Err(e),
        },
        NodeRequest::GetFragment { .. } => unreachable!("served with its body in handle_stream"),
    })
}

/// Bytes of the file system holding `dir` (0 if it cannot be read): a
/// node's capacity unless `--capacity` says otherwise.
pub fn file_system_capacity(dir: &Path) -> u64 {
    rustix::fs::statvfs(dir)
        .map(|s| s.f_blocks * s.f_frsize)
        .unwrap_or(0)
}

pub struct RunningNode {
    pub id: NodeId,
    node: Arc<Node>,
    endpoint: Endpoint,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// Renders this node's gauges and counters in the Prometheus format.
    pub fn metrics_renderer(&self) -> impl Fn() -> String + Clone + Send + Sync + 'static {
        let n = self.node.clone();
        move || {
            n.metrics.render(
                &n.id.to_string(),
                n.capacity,
                n.store.used(),
                n.store.count(),
                n.store.writes_direct(),
            )
        }
    }

    pub fn local_addr(&self) -> Result<SocketAddr, NodeError> {
        Ok(self.endpoint.local_addr()?)
    }

    pub async fn shutdown(self) {
        self.endpoint.close();
        for t in self.tasks {
            t.abort();
        }
    }

    pub async fn wait(mut self) {
        if let Some(t) = self.tasks.drain(..).next() {
            let _ = t.await;
        }
    }
}

pub async fn start(config: NodeConfig, identity: &Identity) -> Result<RunningNode, NodeError> {
    let id = load_or_create_node_id(&config.data_dir)?;
    let store = FragmentStore::open(&config.data_dir)?;
    let endpoint = Endpoint::server(config.listen, identity)?;
    let local = endpoint.local_addr()?;
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| local.to_string());
    info!(node = %id, addr = %local, fragments = store.count(), used = store.used(), "node listening");
    let capacity = config
        .capacity
        .unwrap_or_else(|| file_system_capacity(&config.data_dir));
    let node = Arc::new(Node {
        id,
        store,
        metrics: NodeMetrics::default(),
        capacity,
        upkeep: Upkeep::default(),
    });

    let n = node.clone();
    let ep = endpoint.clone();
    let server = tokio::spawn(async move {
        serve(ep, move |_peer, send, recv| {
            handle_stream(n.clone(), send, recv)
        })
        .await;
    });

    // Meta is retried at every heartbeat: a node must be back in the map as
    // soon as meta is, before meta's down and out periods run out.
    let meta = MetaClient::with_group(
        Endpoint::client(identity)?,
        config.meta.clone(),
        config.heartbeat_every,
    );
    let scrub = tokio::spawn(scrub_forever(
        node.clone(),
        meta.clone(),
        config.data_dir.clone(),
        config.upkeep.clone(),
    ));
    let gc = tokio::spawn(collect_forever(
        node.clone(),
        meta.clone(),
        config.upkeep.gc_interval,
    ));
    let n = node.clone();
    let heartbeats = tokio::spawn(async move {
        let mut failing = false;
        loop {
            let hb = Heartbeat {
                node: n.id,
                addr: advertise.clone(),
                zone: config.zone.clone(),
                capacity: n.capacity,
                used: n.store.used(),
                fragments: n.store.count(),
                scrub: n.upkeep.progress(),
                put_bytes: n.metrics.put_bytes.load(Ordering::Relaxed),
                get_bytes: n.metrics.get_bytes.load(Ordering::Relaxed),
            };
            match meta.call(Lease::Heartbeat(hb)).await {
                Ok(MetaResponse::HeartbeatReply(reply)) => {
                    if failing {
                        info!("heartbeats reach meta again");
                    }
                    failing = false;
                    n.upkeep
                        .scrub_wanted
                        .store(reply.scrub_seq, Ordering::Relaxed);
                    n.upkeep
                        .gc_grace_ms
                        .store(reply.gc_grace_ms, Ordering::Relaxed);
                }
                Err(MetaCallError::Refused(e)) if e.code == ErrorCode::NodeRemoved => {
                    // Keep serving reads, but say loudly why nothing else comes.
                    if !failing {
                        warn!(error = %e.message, "meta refuses this node");
                    }
                    failing = true;
                }
                Ok(other) => warn!(?other, "meta answered a heartbeat oddly"),
                Err(MetaCallError::Refused(e)) => warn!(error = %e, "meta refused a heartbeat"),
                Err(e) => {
                    if !failing {
                        warn!(meta = %meta.addr(), error = %e, "heartbeat failed");
                    }
                    failing = true;
                }
            }
            tokio::time::sleep(config.heartbeat_every).await;
        }
    });
    Ok(RunningNode {
        id,
        node,
        endpoint,
        tasks: vec![server, heartbeats, scrub, gc],
    })
}
