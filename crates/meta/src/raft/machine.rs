//! Raft's state machine: meta's `StateMachine` on RocksDB, swappable as a
//! whole when a snapshot is installed.
//!
//! On disk, under meta's data directory:
//! - `db` or `db-<snapshot id>`: the state; `state-current` names which
//!   (absent: `db`, as a meta from before Raft left it);
//! - `snapshots/<id>.tar` and `<id>.meta`: the last snapshot, a RocksDB
//!   checkpoint of the state packed with `tar`, and its Raft metadata;
//! - `incoming.tar`: a snapshot being received.
//!
//! Applied entries are written without an fsync: the log is the durable
//! record, and after a crash Raft applies again whatever the state lost.
//! A snapshot syncs the state first, so the log behind it may be purged.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use tracing::{info, warn};

use super::{NodeId, Outcomes, TypeConfig};
use crate::MetaError;
use crate::state::{Command, StateMachine};
use crate::store::RocksStore;

type StorageResult<T> = Result<T, StorageError<NodeId>>;

const APPLIED: &str = "applied";
const MEMBERSHIP: &str = "membership";
const CURRENT: &str = "state-current";

fn sm_read_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(AnyError::error(e)).into()
}

fn sm_write_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(AnyError::error(e)).into()
}

fn snap_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, AnyError::error(e)).into()
}

/// The current state machine, shared by Raft (which applies to it and
/// replaces it on a snapshot) and the server (which reads it).
pub struct StateCell {
    sm: RwLock<Arc<StateMachine<RocksStore>>>,
}

impl StateCell {
    /// The state machine as of now. A reader keeps the one it got, whole,
    /// even if a snapshot replaces it meanwhile.
    pub fn get(&self) -> Arc<StateMachine<RocksStore>> {
        self.sm.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, sm: Arc<StateMachine<RocksStore>>) -> Arc<StateMachine<RocksStore>> {
        let mut cur = self.sm.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *cur, sm)
    }
}

/// Raft's view of meta's state (and the snapshot builder: clones share
/// everything).
#[derive(Clone)]
pub struct MachineStore {
    dir: PathBuf,
    cell: Arc<StateCell>,
    /// The index the next command gets in the state machine (commands are
    /// numbered on their own: an entry holds many).
    next_command: Arc<AtomicU64>,
}

fn io(e: std::io::Error, what: &str, path: &Path) -> MetaError {
    MetaError::Corrupt(format!("{what} {}: {e}", path.display()))
}

impl MachineStore {
    /// Opens the current state under `dir` and removes what an interrupted
    /// snapshot install left. Errors: the database's or the file system's.
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        let current = match std::fs::read_to_string(dir.join(CURRENT)) {
            Ok(name) => name.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "db".to_string(),
            Err(e) => return Err(io(e, "reading", &dir.join(CURRENT))),
        };
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if (name.starts_with("db-") && name != current) || name == "incoming.tar" {
                    let p = entry.path();
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                }
            }
        }
        let sm = StateMachine::open(&dir.join(&current))?;
        let next = sm.applied_index()? + 1;
        std::fs::create_dir_all(dir.join("snapshots"))
            .map_err(|e| io(e, "creating", &dir.join("snapshots")))?;
        Ok(MachineStore {
            dir: dir.to_path_buf(),
            cell: Arc::new(StateCell {
                sm: RwLock::new(Arc::new(sm)),
            }),
            next_command: Arc::new(AtomicU64::new(next)),
        })
    }

    pub fn cell(&self) -> Arc<StateCell> {
        self.cell.clone()
    }

    fn snapshots(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    /// The last snapshot's metadata and the path of its data, if any.
    fn last_snapshot(&self) -> StorageResult<Option<(SnapshotMeta<NodeId, BasicNode>, PathBuf)>> {
        let Ok(entries) = std::fs::read_dir(self.snapshots()) else {
            return Ok(None);
        };
        let mut best: Option<(SnapshotMeta<NodeId, BasicNode>, PathBuf)> = None;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "meta") {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(sm_read_err)?;
            let meta: SnapshotMeta<NodeId, BasicNode> =
                postcard::from_bytes(&bytes).map_err(sm_read_err)?;
            let data = path.with_extension("tar");
            if !data.exists() {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|(b, _)| b.last_log_id < meta.last_log_id)
            {
                best = Some((meta, data));
            }
        }
        Ok(best)
    }

    /// Keeps `meta` as the last snapshot (its data already at
    /// `<id>.tar`) and removes older ones.
    fn keep_snapshot(&self, meta: &SnapshotMeta<NodeId, BasicNode>) -> StorageResult<()> {
        let path = self.snapshots().join(format!("{}.meta", meta.snapshot_id));
        let bytes = postcard::to_allocvec(meta).map_err(snap_err)?;
        tessera_net::write_atomically(&path, &bytes, false).map_err(snap_err)?;
        if let Ok(entries) = std::fs::read_dir(self.snapshots()) {
            for entry in entries.flatten() {
                let p = entry.path();
                let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
                if stem.as_deref() != Some(meta.snapshot_id.as_str()) {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        Ok(())
    }
}

/// A record of the `replication` table, decoded.
fn decode_record<T: serde::de::DeserializeOwned>(
    bytes: Result<Option<Vec<u8>>, MetaError>,
) -> StorageResult<Option<T>> {
    match bytes.map_err(sm_read_err)? {
        Some(bytes) => Ok(Some(postcard::from_bytes(&bytes).map_err(sm_read_err)?)),
        None => Ok(None),
    }
}

fn record<T: serde::de::DeserializeOwned>(
    sm: &StateMachine<RocksStore>,
    key: &str,
) -> StorageResult<Option<T>> {
    decode_record(sm.replication_record(key))
}

/// Packs the directory `from` into the tar file `to`, synced.
fn pack(from: &Path, to: &Path) -> std::io::Result<()> {
    let file = std::fs::File::create(to)?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.append_dir_all(".", from)?;
    let file = tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

/// Unpacks the tar file `from` into the new directory `to`, synced.
fn unpack(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    let file = std::fs::File::open(from)?;
    tar::Archive::new(std::io::BufReader::new(file)).unpack(to)?;
    for entry in std::fs::read_dir(to)?.flatten() {
        std::fs::File::open(entry.path())?.sync_all()?;
    }
    std::fs::File::open(to)?.sync_all()
}

impl RaftSnapshotBuilder<TypeConfig> for MachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let this = self.clone();
        let meta = tokio::task::spawn_blocking(move || -> StorageResult<_> {
            let sm = this.cell.get();
            // The log behind the snapshot will be purged: what it covers
            // must be on disk first.
            sm.sync().map_err(snap_err)?;
            let work = this.snapshots().join("building");
            let _ = std::fs::remove_dir_all(&work);
            let (applied, membership) = sm.with_writes_paused(|store| -> StorageResult<_> {
                let applied: Option<LogId<NodeId>> = record(&sm, APPLIED)?;
                let membership: Option<StoredMembership<NodeId, BasicNode>> =
                    record(&sm, MEMBERSHIP)?;
                store.checkpoint(&work).map_err(snap_err)?;
                Ok((applied, membership.unwrap_or_default()))
            })?;
            let id = match &applied {
                Some(l) => format!(
                    "{}-{}-{}",
                    l.leader_id.term,
                    l.index,
                    crate::server::now_ms()
                ),
                None => format!("0-0-{}", crate::server::now_ms()),
            };
            let data = this.snapshots().join(format!("{id}.tar"));
            pack(&work, &data).map_err(snap_err)?;
            let _ = std::fs::remove_dir_all(&work);
            let meta = SnapshotMeta {
                last_log_id: applied,
                last_membership: membership,
                snapshot_id: id,
            };
            this.keep_snapshot(&meta)?;
            info!(snapshot = %meta.snapshot_id, "snapshot built");
            Ok(meta)
        })
        .await
        .map_err(snap_err)??;
        let data = self.snapshots().join(format!("{}.tar", meta.snapshot_id));
        let file = tokio::fs::File::open(&data).await.map_err(snap_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let sm = self.cell.get();
        let applied = record(&sm, APPLIED)?;
        let membership = record(&sm, MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Outcomes>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else {
            return Ok(Vec::new());
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.apply_blocking(entries, last))
            .await
            .map_err(sm_write_err)?
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<tokio::fs::File>> {
        let file = tokio::fs::File::create(self.dir.join("incoming.tar"))
            .await
            .map_err(snap_err)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> StorageResult<()> {
        snapshot.sync_all().await.map_err(snap_err)?;
        drop(snapshot);
        let this = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || this.install_blocking(&meta))
            .await
            .map_err(snap_err)?
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let Some((meta, data)) = self.last_snapshot()? else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(&data).await.map_err(sm_read_err)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}

impl MachineStore {
    fn apply_blocking(
        &self,
        entries: Vec<Entry<TypeConfig>>,
        last: LogId<NodeId>,
    ) -> StorageResult<Vec<Outcomes>> {
        let sm = self.cell.get();
        let mut membership: Option<StoredMembership<NodeId, BasicNode>> = None;
        let mut counts = Vec::with_capacity(entries.len());
        let mut commands: Vec<Command> = Vec::new();
        for entry in entries {
            match entry.payload {
                EntryPayload::Blank => counts.push(0),
                EntryPayload::Normal(p) => {
                    counts.push(p.0.len());
                    commands.extend(p.0);
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    counts.push(0);
                }
            }
        }
        let first = self.next_command.load(Ordering::SeqCst);
        let numbered: Vec<(u64, &Command)> = commands
            .iter()
            .enumerate()
            .map(|(i, c)| (first + i as u64, c))
            .collect();
        let mut records = vec![(APPLIED, postcard::to_allocvec(&last).map_err(sm_write_err)?)];
        if let Some(m) = &membership {
            records.push((MEMBERSHIP, postcard::to_allocvec(m).map_err(sm_write_err)?));
        }
        let outcomes = sm
            .apply_replicated(&numbered, &records)
            .map_err(|e| StorageError::from(StorageIOError::apply(last, AnyError::error(e))))?;
        self.next_command
            .store(first + commands.len() as u64, Ordering::SeqCst);
        let mut outcomes = outcomes.into_iter();
        Ok(counts
            .into_iter()
            .map(|n| Outcomes(outcomes.by_ref().take(n).collect()))
            .collect())
    }

    fn install_blocking(&self, meta: &SnapshotMeta<NodeId, BasicNode>) -> StorageResult<()> {
        let incoming = self.dir.join("incoming.tar");
        let name = format!("db-{}", meta.snapshot_id);
        let target = self.dir.join(&name);
        let _ = std::fs::remove_dir_all(&target);
        unpack(&incoming, &target).map_err(snap_err)?;
        let sm = StateMachine::open(&target).map_err(snap_err)?;
        let next = sm.applied_index().map_err(snap_err)? + 1;
        // The new state is whole on disk before the pointer names it.
        tessera_net::write_atomically(&self.dir.join(CURRENT), name.as_bytes(), false)
            .map_err(snap_err)?;
        let old = self.cell.replace(Arc::new(sm));
        self.next_command.store(next, Ordering::SeqCst);
        // The received snapshot becomes this replica's own.
        let data = self.snapshots().join(format!("{}.tar", meta.snapshot_id));
        std::fs::rename(&incoming, &data).map_err(snap_err)?;
        self.keep_snapshot(meta)?;
        info!(snapshot = %meta.snapshot_id, "snapshot installed");
        // The old state's files go once its last reader lets go.
        let old_dir = self.dir.clone();
        std::thread::spawn(move || {
            while Arc::strong_count(&old) > 1 {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            drop(old);
            if let Ok(entries) = std::fs::read_dir(&old_dir) {
                let current = std::fs::read_to_string(old_dir.join(CURRENT)).unwrap_or_default();
                for entry in entries.flatten() {
                    let n = entry.file_name().to_string_lossy().into_owned();
                    if (n == "db" || n.starts_with("db-"))
                        && n != current.trim()
                        && let Err(e) = std::fs::remove_dir_all(entry.path())
                    {
                        warn!(error = %e, dir = %n, "removing a replaced state");
                    }
                }
            }
        });
        Ok(())
    }
}
