//! Meta as a network service. Requests arrive over QUIC (`rpc`): queries
//! read a snapshot, proposals become commands that the committer applies in
//! groups (`committer`: many concurrent commands, one fsync), leases update
//! soft state (`liveness` from heartbeats, `reservations` of writes in
//! progress). `status` assembles the cluster map and health, `metrics`
//! renders them for Prometheus, `upkeep` purges garbage and expires
//! abandoned uploads.
//!
//! Soft state is lost on restart by design: every node gets a fresh grace
//! period (no false `out`), and writes whose reservation vanished are
//! refused at commit rather than risk the collector taking their fragments.

mod committer;
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
use crate::state::StateMachine;
use crate::store::RocksStore;

pub use metrics::RequestCounters;

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

/// The meta service's state: the state machine and the soft state around
/// it.
pub struct Meta {
    sm: Arc<StateMachine<RocksStore>>,
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
    /// Opens the database under `config.data_dir` and starts the
    /// committer. Errors: the database's (locked, damaged, wrong format).
    pub fn open(config: MetaConfig) -> Result<Arc<Self>, MetaError> {
        let sm = Arc::new(StateMachine::open(&config.data_dir.join("db"))?);
        let reservations = Arc::new(reservations::Reservations::new(config.gc_grace));
        let committer = committer::Committer::start(sm.clone(), reservations.clone())?;
        Ok(Arc::new(Meta {
            liveness: liveness::Liveness::new(&config),
            status: status::StatusCache::default(),
            counters: RequestCounters::default(),
            started: Instant::now(),
            sm,
            config,
            committer,
            reservations,
        }))
    }

    pub fn state(&self) -> &StateMachine<RocksStore> {
        &self.sm
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
        self.endpoint.close();
        let _ = self.task.await;
    }

    /// Runs until the endpoint closes.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Opens meta and serves it on `config.listen` until shut down.
pub async fn start(config: MetaConfig, identity: &Identity) -> Result<RunningMeta, MetaError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| MetaError::Corrupt(format!("creating {}: {e}", config.data_dir.display())))?;
    let listen = config.listen;
    let meta = Meta::open(config)?;
    let endpoint = Endpoint::server(listen, identity)?;
    info!(addr = %endpoint.local_addr()?, "meta listening");
    let m = meta.clone();
    let ep = endpoint.clone();
    let upkeep = tokio::spawn(upkeep::run(meta.clone()));
    let task = tokio::spawn(async move {
        serve(ep, move |_peer, send, recv| {
            rpc::handle_stream(m.clone(), send, recv)
        })
        .await;
        upkeep.abort();
    });
    Ok(RunningMeta {
        meta,
        endpoint,
        task,
    })
}
