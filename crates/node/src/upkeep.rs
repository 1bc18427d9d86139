//! A node's own upkeep: the deep scrub (re-read and re-hash every fragment
//! meta's records place here, and report what is missing or rotten) and the
//! garbage collector (delete fragment files no record refers to once they
//! are older than meta's grace period). Both ask meta what should be here;
//! neither changes a record.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tessera_meta_client::{MetaCallError, MetaClient};
use tessera_net::Pacer;
use tessera_proto::{ExpectedFragment, MetaQuery, MetaResponse, Proposal, ScrubProgress};
use tessera_types::ChunkId;
use tracing::{info, warn};

use crate::metrics::NodeMetrics;
use crate::server::Node;
use crate::store::hash_body;
use crate::{FragmentStore, NodeError};

/// Fragments asked about per meta request.
const PAGE: usize = 1000;
const TICK: Duration = Duration::from_secs(1);

/// What heartbeats learn from meta, and what the scrub reports back.
#[derive(Default)]
pub(crate) struct Upkeep {
    /// Meta's count of requested scrubs.
    pub scrub_wanted: AtomicU64,
    /// Meta's grace period for garbage; 0 until the first heartbeat reply.
    pub gc_grace_ms: AtomicU64,
    pub scrub: Mutex<ScrubProgress>,
}

impl Upkeep {
    pub fn progress(&self) -> ScrubProgress {
        *self.scrub.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut ScrubProgress)) {
        f(&mut self.scrub.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

#[derive(Debug, Clone)]
pub struct UpkeepConfig {
    /// A deep scrub starts this long after the last one finished.
    pub scrub_interval: Duration,
    /// Bytes per second a scrub reads; 0: unlimited.
    pub scrub_rate: u64,
    /// How often unreferenced fragments are looked for.
    pub gc_interval: Duration,
}

impl Default for UpkeepConfig {
    fn default() -> Self {
        UpkeepConfig {
            scrub_interval: Duration::from_secs(7 * 24 * 3600),
            scrub_rate: 64 << 20,
            gc_interval: Duration::from_secs(600),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where the last finished scrub is remembered across restarts:
/// "<finished at ms> <request seq>".
fn state_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("scrub_state")
}

fn load_state(path: &std::path::Path) -> Option<(u64, u64)> {
    parse_scrub_state(&std::fs::read_to_string(path).ok()?)
}

/// The (finished at ms, request seq) a `scrub_state` file holds; `None` for
/// anything else (a damaged file means "scrub again", never an error).
pub fn parse_scrub_state(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.split_whitespace();
    let state = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    parts.next().is_none().then_some(state)
}

fn save_state(path: &std::path::Path, at_ms: u64, seq: u64) {
    let tmp = path.with_extension("tmp");
    let result =
        std::fs::write(&tmp, format!("{at_ms} {seq}\n")).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        warn!(error = %e, "could not record the finished scrub");
    }
}

/// Why an upkeep pass stopped (it is retried at the next one).
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpkeepError {
    #[error(transparent)]
    Meta(#[from] MetaCallError),
    #[error(transparent)]
    Store(#[from] NodeError),
}

pub(crate) async fn scrub_forever(
    node: Arc<Node>,
    meta: MetaClient,
    data_dir: PathBuf,
    config: UpkeepConfig,
) {
    let path = state_path(&data_dir);
    let (mut last_ms, mut seq_done) = match load_state(&path) {
        Some(s) => s,
        None => {
            // The first periodic scrub comes one interval after first start.
            let now = now_ms();
            save_state(&path, now, 0);
            (now, 0)
        }
    };
    node.upkeep.update(|p| {
        p.seq_done = seq_done;
        p.last_done_ms = last_ms;
    });
    let pacer = Pacer::new(config.scrub_rate);
    loop {
        tokio::time::sleep(TICK).await;
        let wanted = node.upkeep.scrub_wanted.load(Ordering::Relaxed);
        let due = now_ms().saturating_sub(last_ms) >= config.scrub_interval.as_millis() as u64;
        if wanted <= seq_done && !due {
            continue;
        }
        info!(request = wanted, "deep scrub starting");
        match scrub_once(&node, &meta, &pacer).await {
            Ok((checked, found)) => {
                seq_done = seq_done.max(wanted);
                last_ms = now_ms();
                save_state(&path, last_ms, seq_done);
                node.upkeep.update(|p| {
                    p.running = false;
                    p.seq_done = seq_done;
                    p.last_done_ms = last_ms;
                });
                info!(checked, found, "deep scrub finished");
            }
            Err(e) => {
                node.upkeep.update(|p| p.running = false);
                warn!(error = %e, "deep scrub stopped; it starts again shortly");
            }
        }
    }
}

/// One pass over what meta says this node holds: (checked, problems).
async fn scrub_once(
    node: &Node,
    meta: &MetaClient,
    pacer: &Pacer,
) -> Result<(u64, u64), UpkeepError> {
    node.upkeep.update(|p| {
        p.running = true;
        p.checked = 0;
        p.found = 0;
    });
    let (mut checked, mut found) = (0, 0);
    let mut after = None;
    loop {
        let req = MetaQuery::NodeFragments {
            node: node.id,
            after,
            limit: PAGE as u32,
        };
        let (items, more) = match meta.call(req).await? {
            MetaResponse::NodeFragments { items, more } => (items, more),
            other => return Err(MetaCallError::unexpected(&other).into()),
        };
        for exp in &items {
            pacer.take(exp.len).await;
            if let Err(why) = check(&node.store, exp).await {
                found += 1;
                NodeMetrics::add(&node.metrics.scrub_problems, 1);
                warn!(chunk = %exp.chunk, index = exp.index, %why, "deep scrub found a bad fragment");
                let report = Proposal::ReportCorrupt {
                    chunk: exp.chunk,
                    index: exp.index,
                    node: node.id,
                    reason: format!("deep scrub: {why}"),
                };
                meta.call(report).await?;
            }
            checked += 1;
            NodeMetrics::add(&node.metrics.scrub_checked, 1);
            NodeMetrics::add(&node.metrics.scrub_bytes, exp.len);
            node.upkeep.update(|p| {
                p.checked = checked;
                p.found = found;
            });
        }
        match items.last() {
            Some(last) if more => after = Some((last.chunk, last.index)),
            _ => return Ok((checked, found)),
        }
    }
}

/// Re-reads one fragment; the reason it is bad, if it is.
async fn check(store: &FragmentStore, exp: &ExpectedFragment) -> Result<(), String> {
    let (header, mut file) = match store.open_fragment(exp.chunk, exp.index).await {
        Ok(f) => f,
        Err(NodeError::NotFound(_)) => return Err("missing".into()),
        Err(NodeError::Corrupt { why, .. }) => return Err(why),
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    if header.len != exp.len || header.hash != exp.hash {
        return Err("header differs from meta's record".into());
    }
    match hash_body(&mut file, header.len).await {
        Ok(hash) if hash == exp.hash => Ok(()),
        Ok(_) => Err("BLAKE3 mismatch".into()),
        Err(e) => Err(format!("unreadable: {e}")),
    }
}

pub(crate) async fn collect_forever(node: Arc<Node>, meta: MetaClient, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let grace = node.upkeep.gc_grace_ms.load(Ordering::Relaxed);
        if grace == 0 {
            continue; // meta has not told us its grace period yet
        }
        match collect_once(&node, &meta, Duration::from_millis(grace)).await {
            Ok(0) => {}
            Ok(n) => info!(deleted = n, "unreferenced fragments deleted"),
            Err(e) => warn!(error = %e, "garbage collection pass stopped"),
        }
    }
}

async fn collect_once(node: &Node, meta: &MetaClient, grace: Duration) -> Result<u64, UpkeepError> {
    let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(UNIX_EPOCH);
    let inventory: Vec<(ChunkId, u8)> = node.store.inventory().await?;
    let mut deleted = 0;
    for page in inventory.chunks(PAGE) {
        let req = MetaQuery::UnknownFragments {
            node: node.id,
            items: page.to_vec(),
        };
        let unknown = match meta.call(req).await? {
            MetaResponse::UnknownFragments(u) => u,
            other => return Err(MetaCallError::unexpected(&other).into()),
        };
        for (chunk, index) in unknown {
            match node.store.delete_if_older(chunk, index, cutoff).await {
                Ok(true) => {
                    deleted += 1;
                    NodeMetrics::add(&node.metrics.gc_deleted, 1);
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(%chunk, index, error = %e, "could not delete an unreferenced fragment")
                }
            }
        }
    }
    Ok(deleted)
}
