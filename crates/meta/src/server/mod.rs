//! Meta as a network service. Requests arrive over QUIC (`rpc`): queries
//! read a snapshot, proposals become commands that the committer applies in
//! groups (`committer`: many concurrent commands, one fsync), leases update
//! soft state (`liveness` from heartbeats, `reservations` of writes in
//! progress). `status` assembles the cluster map and health, `metrics`
//! renders them for Prometheus, `upkeep` purges garbage and expires
//! abandoned uploads.
//!
//! Meta runs as a group of replicas (`crate::raft`): one leads, and only
//! the leader answers clients, takes heartbeats and reservations, and runs
//! upkeep; the others answer `NotLeader` with the leader's address. A
//! group of one is the plain single meta.
//!
//! Soft state is lost on restart and on a change of leader by design: every
//! node gets a fresh grace period (no false `out`), and the new leader
//! protects writes it has not heard of for a grace period
//! (`reservations`).

mod committer;
mod group;
mod lifecycle;
mod liveness;
mod metrics;
mod reservations;
mod rpc;
mod status;
mod upkeep;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tessera_net::{Endpoint, Identity, serve};
use tessera_types::Policy;
use tracing::info;

use crate::MetaError;
use crate::raft::{MetaRaft, NodeId, StateCell, replica_id};

use crate::state::StateMachine;
use crate::store::RocksStore;
pub(crate) use group::raft_write_error;
pub use group::while_leading;

pub use metrics::RequestCounters;

#[derive(Debug, Clone)]
pub struct MetaConfig {
    pub listen: SocketAddr,
    /// This replica's address as the group and clients know it
    /// (`HOST:PORT`, one of `group`'s when it is in the initial group).
    pub advertise: String,
    /// The initial group (`HOST:PORT` each), as the cluster file lists it:
    /// a replica named here starts the group when its log is empty; one not
    /// named waits for `tessera meta add`. Empty: a group of this replica
    /// alone.
    pub group: Vec<String>,
    /// Entries between snapshots of the state (the log behind a snapshot
    /// is purged).
    pub snapshot_every: u64,
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
    /// The length of a lifecycle day: rules' Days count in these (a real
    /// day in production; tests shorten it).
    pub lifecycle_day: Duration,
    /// Most commands the lifecycle worker proposes per second.
    pub lifecycle_rate: u32,
}

impl MetaConfig {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        MetaConfig {
            listen,
            advertise: listen.to_string(),
            group: Vec::new(),
            snapshot_every: 20_000,
            data_dir,
            down_after: Duration::from_secs(30),
            out_after: Duration::from_secs(600),
            default_policy: Policy::default(),
            inline_limit: 4096,
            gc_grace: Duration::from_secs(6 * 3600),
            upload_expiry: Duration::from_secs(7 * 24 * 3600),
            lifecycle_day: Duration::from_secs(24 * 3600),
            lifecycle_rate: 100,
        }
    }
}

/// The meta service's state: the state machine and the soft state around
/// it.
pub struct Meta {
    cell: Arc<StateCell>,
    raft: MetaRaft,
    /// This replica's id in the group.
    me: NodeId,
    config: MetaConfig,
    committer: committer::Committer,
    liveness: liveness::Liveness,
    reservations: Arc<reservations::Reservations>,
    status: status::StatusCache,
    counters: RequestCounters,
    /// Monotonic time base for soft state (liveness, reservations).
    started: Instant,
}

/// Wall-clock milliseconds since the Unix epoch: the timestamps commands
/// carry into records.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Meta {
    /// Opens the log and the state under `config.data_dir`, starts this
    /// replica's Raft (and the group, when it is new) and the committer.
    /// Errors: the databases' (locked, damaged, wrong format), Raft's.
    pub async fn open(config: MetaConfig, endpoint: Endpoint) -> Result<Arc<Self>, MetaError> {
        let me = crate::raft::own_id(&config.data_dir, &config.advertise)?;
        let initial = if config.group.is_empty() {
            Some([(me, openraft::BasicNode::new(&config.advertise))].into())
        } else if config.group.contains(&config.advertise) {
            Some(
                config
                    .group
                    .iter()
                    .map(|a| (replica_id(a), openraft::BasicNode::new(a)))
                    .collect(),
            )
        } else {
            None
        };
        let (raft, cell) = crate::raft::start(
            &config.data_dir,
            config.snapshot_every,
            me,
            endpoint,
            initial,
        )
        .await?;
        let reservations = Arc::new(reservations::Reservations::new(config.gc_grace));
        let committer = committer::Committer::start(raft.clone(), reservations.clone());
        let meta = Arc::new(Meta {
            liveness: liveness::Liveness::new(&config),
            status: status::StatusCache::default(),
            counters: RequestCounters::default(),
            started: Instant::now(),
            cell,
            raft,
            me,
            config,
            committer,
            reservations,
        });
        tokio::spawn(group::watch_leadership(Arc::downgrade(&meta)));
        Ok(meta)
    }

    /// The state machine as of now.
    pub fn state(&self) -> Arc<StateMachine<RocksStore>> {
        self.cell.get()
    }

    /// Shorthand for `state`.
    pub(crate) fn sm(&self) -> Arc<StateMachine<RocksStore>> {
        self.cell.get()
    }

    /// This replica's Raft.
    pub fn raft(&self) -> &MetaRaft {
        &self.raft
    }

    pub fn config(&self) -> &MetaConfig {
        &self.config
    }

    /// Milliseconds since this meta process started (monotonic).
    pub(crate) fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
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
        let _ = self.meta.raft.shutdown().await;
        self.endpoint.close();
        let _ = self.task.await;
    }

    /// Runs until the endpoint closes.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Free bytes a replica's data directory needs before it starts: enough
/// for RocksDB to open both databases, replay their logs and take the
/// first entries (or a snapshot's first chunks), so a nearly full disk is
/// found out here, not half-way through writing.
pub const MIN_FREE_TO_START: u64 = 64 << 20;

/// How often a replica waiting for space says so.
const SPACE_WARNING_EVERY: Duration = Duration::from_secs(30);

/// Free bytes for an unprivileged writer on the file system holding
/// `dir`. Errors: `statvfs`'s.
fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Waits until `dir` has `MIN_FREE_TO_START` bytes free, warning every 30
/// s: a replica started on a full disk would fail on its first write (or
/// halfway through a snapshot) and stop again, while waiting costs the
/// group nothing (it serves without this replica) and the replica catches
/// up once space is freed. Errors: `statvfs`'s.
async fn wait_for_space(dir: &std::path::Path) -> Result<(), MetaError> {
    let mut warned: Option<Instant> = None;
    loop {
        let free = free_bytes(dir)
            .map_err(|e| MetaError::Corrupt(format!("free space of {}: {e}", dir.display())))?;
        if free >= MIN_FREE_TO_START {
            if warned.is_some() {
                info!(dir = %dir.display(), free, "meta's data directory has space again: starting");
            }
            return Ok(());
        }
        if warned.is_none_or(|w| w.elapsed() >= SPACE_WARNING_EVERY) {
            tracing::warn!(
                dir = %dir.display(),
                free,
                needed = MIN_FREE_TO_START,
                "meta's data directory {} has {free} bytes free, less than the {MIN_FREE_TO_START} \
                 it needs to start: waiting for space (free some; this replica then starts and \
                 catches up from the group)",
                dir.display()
            );
            warned = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Opens meta and serves it on `config.listen` until shut down. Waits
/// first while the data directory has less than `MIN_FREE_TO_START` free.
pub async fn start(config: MetaConfig, identity: &Identity) -> Result<RunningMeta, MetaError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| MetaError::Corrupt(format!("creating {}: {e}", config.data_dir.display())))?;
    wait_for_space(&config.data_dir).await?;
    let listen = config.listen;
    // Listening before Raft starts: the other replicas' votes and entries
    // must reach this one while it starts.
    let endpoint = Endpoint::server(listen, identity)?;
    let meta = Meta::open(config, endpoint.clone()).await?;
    info!(addr = %endpoint.local_addr()?, "meta listening");
    let m = meta.clone();
    let ep = endpoint.clone();
    let upkeep = group::while_leading(meta.clone(), {
        let m = meta.clone();
        move || upkeep::run(m.clone())
    });
    let lifecycle = group::while_leading(meta.clone(), {
        let m = meta.clone();
        move || lifecycle::run(m.clone())
    });
    let task = tokio::spawn(async move {
        serve(ep, move |peer, send, recv| {
            rpc::handle_stream(m.clone(), peer, send, recv)
        })
        .await;
        upkeep.abort();
        lifecycle.abort();
    });
    Ok(RunningMeta {
        meta,
        endpoint,
        task,
    })
}
