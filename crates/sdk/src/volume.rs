//! Block volumes for programs: management calls on `Client`, and `Volume`,
//! a disk with `read_at`, `write_at`, `flush` and `trim`.
//!
//! Writes are buffered in the writer's memory by block; a flush (or a write
//! with `fua`, or the buffer passing `DIRTY_LIMIT`) stores everything
//! buffered as erasure-coded chunks of at most `VOLUME_CHUNK` bytes and
//! makes it part of the volume in one meta commit that maps the written
//! ranges to those chunks. So a 4 KiB write never rewrites a whole chunk,
//! and a batch of writes costs one commit, not one each. Until then the
//! data lives only here: what was acknowledged by a flush survives the
//! loss of any M nodes, as an object does, and what was not is lost if
//! this process dies (a disk's volatile write cache, which FLUSH and FUA
//! exist for).
//!
//! The writer holds the volume's lease in meta and renews it; a writer
//! whose lease was taken over (`--force`) is fenced: meta refuses its
//! commits, so it can never change the volume again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use tessera_proto::{
    ChunkRecord, ErrorCode, ExtentRecord, MetaQuery, MetaResponse, Proposal, VOLUME_EXTENT,
    VolumeInfo, VolumeWrite,
};
use tessera_types::{ChunkId, Policy};
use tracing::{debug, warn};

use crate::write::AbortOnDrop;
use crate::{Client, SdkError};

/// Largest chunk a flush writes: a 4 KiB read of a cold extent reads the
/// chunk holding it, so chunks stay small next to objects'.
pub const VOLUME_CHUNK: usize = 1 << 20;

/// Buffered bytes past which a write flushes before it returns.
pub const DIRTY_LIMIT: usize = 8 << 20;

/// Data fragments kept for reads (up to 256 KiB each for `ec:4+2`).
const FRAGMENT_CACHE: usize = 256;

/// How often the writer renews its lease (meta drops it after
/// `VOLUME_LEASE_MS` without renewal).
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Chunks one read fetches from at once.
const PARALLEL_READS: usize = 16;

/// Extent maps asked of meta at once.
const EXTENT_BATCH: u32 = 256;

/// A buffered block: its bytes, or zeros (TRIM, WRITE_ZEROES).
#[derive(Clone)]
enum Block {
    Data(Arc<[u8]>),
    Zero,
}

type Blocks = BTreeMap<u64, Block>;

/// One run of the volume's allocation: `len` bytes from the start of the
/// range asked, allocated (data) or a hole (reads as zeros, takes no space).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub len: u64,
    pub hole: bool,
}

impl Client {
    /// Creates a thin volume of `size` bytes (a multiple of `block_size`,
    /// 512 or 4096); `policy` defaults to the cluster's. Errors (`code()`):
    /// `VolumeExists`, `BadRequest`, `InvalidPolicy`.
    pub async fn create_volume(
        &self,
        name: &str,
        size: u64,
        policy: Option<Policy>,
        block_size: u32,
    ) -> Result<VolumeInfo, SdkError> {
        self.volume_call(Proposal::CreateVolume {
            name: name.into(),
            size,
            policy,
            block_size,
        })
        .await
    }

    /// Errors: `NoSuchVolume`.
    pub async fn volume_info(&self, name: &str) -> Result<VolumeInfo, SdkError> {
        match self
            .meta(MetaQuery::GetVolume { name: name.into() })
            .await?
        {
            MetaResponse::Volume(v) => Ok(v),
            other => Err(self.unexpected(other)),
        }
    }

    /// Every volume, in name order.
    pub async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, SdkError> {
        match self.meta(MetaQuery::ListVolumes).await? {
            MetaResponse::Volumes(v) => Ok(v),
            other => Err(self.unexpected(other)),
        }
    }

    /// Grows (or, with `allow_shrink`, shrinks) a volume to `size` bytes.
    pub async fn resize_volume(
        &self,
        name: &str,
        size: u64,
        allow_shrink: bool,
    ) -> Result<VolumeInfo, SdkError> {
        self.volume_call(Proposal::ResizeVolume {
            name: name.into(),
            size,
            allow_shrink,
        })
        .await
    }

    /// Deletes a volume and its snapshots. Errors: `VolumeBusy` while
    /// attached or cloned from.
    pub async fn delete_volume(&self, name: &str) -> Result<(), SdkError> {
        match self
            .meta(Proposal::DeleteVolume { name: name.into() })
            .await?
        {
            MetaResponse::Deleted { .. } => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    /// Snapshots what the volume's writer has flushed.
    pub async fn snapshot_volume(&self, name: &str, snap: &str) -> Result<VolumeInfo, SdkError> {
        self.volume_call(Proposal::SnapshotVolume {
            name: name.into(),
            snapshot: snap.into(),
        })
        .await
    }

    /// Errors: `NotFound`, `VolumeBusy` while cloned from.
    pub async fn delete_snapshot(&self, name: &str, snap: &str) -> Result<VolumeInfo, SdkError> {
        self.volume_call(Proposal::DeleteSnapshot {
            name: name.into(),
            snapshot: snap.into(),
        })
        .await
    }

    /// A new volume `new_name` reading as `name@snap` until written.
    pub async fn clone_volume(
        &self,
        name: &str,
        snap: &str,
        new_name: &str,
    ) -> Result<VolumeInfo, SdkError> {
        self.volume_call(Proposal::CloneVolume {
            name: name.into(),
            snapshot: snap.into(),
            new_name: new_name.into(),
        })
        .await
    }

    /// Makes the volume read as `name@snap` again. Errors: `VolumeBusy`
    /// while attached.
    pub async fn rollback_volume(&self, name: &str, snap: &str) -> Result<VolumeInfo, SdkError> {
        self.volume_call(Proposal::RollbackVolume {
            name: name.into(),
            snapshot: snap.into(),
        })
        .await
    }

    async fn volume_call(&self, p: Proposal) -> Result<VolumeInfo, SdkError> {
        match self.meta(p).await? {
            MetaResponse::Volume(v) => Ok(v),
            other => Err(self.unexpected(other)),
        }
    }

    /// Attaches volume `name` as its only writer (`force` takes the lease
    /// from a writer that is presumed dead, fencing it). `holder` names
    /// this writer for people (`host/pid`). Errors: `NoSuchVolume`,
    /// `VolumeBusy`.
    pub async fn open_volume(
        &self,
        name: &str,
        holder: &str,
        force: bool,
    ) -> Result<Volume, SdkError> {
        let info = self
            .volume_call(Proposal::AttachVolume {
                name: name.into(),
                holder: holder.into(),
                epoch: None,
                force,
            })
            .await?;
        let epoch = info.epoch;
        let vol = Volume::new(self.clone(), info, None, Some(epoch));
        let weak = Arc::downgrade(&vol.inner);
        let client = self.clone();
        let name = name.to_string();
        let holder = holder.to_string();
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                let renew = Proposal::AttachVolume {
                    name: name.clone(),
                    holder: holder.clone(),
                    epoch: Some(epoch),
                    force: false,
                };
                match client.meta(renew).await {
                    Ok(_) => {}
                    Err(e) if e.code() == Some(ErrorCode::Fenced) => {
                        warn!(volume = %name, epoch, "the volume's lease was taken over: this writer is fenced");
                        inner.fenced.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => {
                        debug!(volume = %name, error = %e, "renewing the volume lease failed")
                    }
                }
            }
        });
        if let Ok(mut r) = vol.inner.renewer.lock() {
            *r = Some(AbortOnDrop(renewer));
        }
        Ok(vol)
    }

    /// Opens snapshot `name@snap` read-only (no lease: it never changes).
    pub async fn open_snapshot(&self, name: &str, snap: &str) -> Result<Volume, SdkError> {
        let info = self.volume_info(name).await?;
        if !info.snapshots.iter().any(|s| s.name == snap) {
            return Err(Client::remote(
                ErrorCode::NotFound,
                format!("no snapshot {name}@{snap}"),
            ));
        }
        Ok(Volume::new(
            self.clone(),
            info,
            Some(snap.to_string()),
            None,
        ))
    }
}

/// An open volume (or read-only snapshot): a disk of `size()` bytes in
/// blocks of `block_size()`. Cheap to clone; all clones share one buffer,
/// so FLUSH on any covers writes through every one.
#[derive(Clone)]
pub struct Volume {
    inner: Arc<VolumeInner>,
}

struct VolumeInner {
    client: Client,
    info: VolumeInfo,
    snapshot: Option<String>,
    /// The lease epoch commits carry; `None` when read-only.
    epoch: Option<u64>,
    fenced: AtomicBool,
    /// Writes not yet being flushed, by block index.
    dirty: Mutex<Dirty>,
    /// The batch a flush is storing now, readable until committed.
    flushing: Mutex<Option<Arc<Blocks>>>,
    flush_lock: tokio::sync::Mutex<()>,
    /// Extent maps as committed (`None`: a hole), by extent index. This
    /// writer is the only one, so what it committed stays true.
    maps: Mutex<HashMap<u64, Option<ExtentRecord>>>,
    records: Mutex<HashMap<ChunkId, ChunkRecord>>,
    fragments: Mutex<FragmentCache>,
    renewer: Mutex<Option<AbortOnDrop<()>>>,
}

/// Recently read data fragments by (chunk, index), oldest dropped first.
#[derive(Default)]
struct FragmentCache {
    by_key: HashMap<(ChunkId, u64), Arc<Vec<u8>>>,
    order: VecDeque<(ChunkId, u64)>,
}

impl FragmentCache {
    fn insert(&mut self, key: (ChunkId, u64), bytes: Arc<Vec<u8>>) {
        if self.by_key.insert(key, bytes).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > FRAGMENT_CACHE {
            if let Some(old) = self.order.pop_front() {
                self.by_key.remove(&old);
            }
        }
    }
}

#[derive(Default)]
struct Dirty {
    blocks: Blocks,
    bytes: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these leaves plain data behind, still
    // consistent block by block.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Volume {
    fn new(client: Client, info: VolumeInfo, snapshot: Option<String>, epoch: Option<u64>) -> Self {
        Volume {
            inner: Arc::new(VolumeInner {
                client,
                info,
                snapshot,
                epoch,
                fenced: AtomicBool::new(false),
                dirty: Mutex::new(Dirty::default()),
                flushing: Mutex::new(None),
                flush_lock: tokio::sync::Mutex::new(()),
                maps: Mutex::new(HashMap::new()),
                records: Mutex::new(HashMap::new()),
                fragments: Mutex::new(FragmentCache::default()),
                renewer: Mutex::new(None),
            }),
        }
    }

    /// The volume as it was when opened.
    pub fn info(&self) -> &VolumeInfo {
        &self.inner.info
    }

    /// Bytes.
    pub fn size(&self) -> u64 {
        self.inner.info.size
    }

    /// Bytes: reads and writes are whole blocks.
    pub fn block_size(&self) -> u32 {
        self.inner.info.block_size
    }

    /// A snapshot, or a writer that was fenced.
    pub fn read_only(&self) -> bool {
        self.inner.epoch.is_none()
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), SdkError> {
        let bs = self.block_size() as u64;
        let end = offset.checked_add(len);
        if end.is_none_or(|e| e > self.size()) {
            return Err(SdkError::InvalidRange {
                start: offset,
                end: offset.saturating_add(len),
                size: self.size(),
            });
        }
        if !offset.is_multiple_of(bs) || !len.is_multiple_of(bs) {
            return Err(SdkError::Invalid(format!(
                "{len} bytes at {offset} are not whole blocks of {bs} bytes"
            )));
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<u64, SdkError> {
        let Some(epoch) = self.inner.epoch else {
            return Err(Client::remote(
                ErrorCode::BadRequest,
                format!(
                    "{}@{} is a snapshot: read-only",
                    self.inner.info.name,
                    self.inner.snapshot.as_deref().unwrap_or("")
                ),
            ));
        };
        if self.inner.fenced.load(Ordering::SeqCst) {
            return Err(Client::remote(
                ErrorCode::Fenced,
                format!(
                    "volume {}: this writer's lease was taken over",
                    self.inner.info.name
                ),
            ));
        }
        Ok(epoch)
    }

    /// Buffers `data` at `offset` (whole blocks); with `fua` it is durable
    /// when this returns. Errors: `InvalidRange`, `Invalid` (not whole
    /// blocks), `Fenced`, a snapshot's `BadRequest`, and a flush's errors.
    pub async fn write_at(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), SdkError> {
        self.check(offset, data.len() as u64)?;
        self.check_writable()?;
        let bs = self.block_size() as usize;
        let over = {
            let mut d = lock(&self.inner.dirty);
            for (i, block) in data.chunks(bs).enumerate() {
                let index = offset / bs as u64 + i as u64;
                if let Some(Block::Data(_)) = d.blocks.insert(index, Block::Data(block.into())) {
                    d.bytes -= bs;
                }
                d.bytes += bs;
            }
            d.bytes >= DIRTY_LIMIT
        };
        if fua || over {
            self.flush().await?;
        }
        Ok(())
    }

    /// Makes `len` bytes at `offset` read as zeros and frees their space
    /// (TRIM and WRITE_ZEROES alike). Durable after the next flush.
    pub async fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), SdkError> {
        self.check(offset, len)?;
        self.check_writable()?;
        let bs = self.block_size() as u64;
        {
            let mut d = lock(&self.inner.dirty);
            for index in offset / bs..(offset + len) / bs {
                if let Some(Block::Data(_)) = d.blocks.insert(index, Block::Zero) {
                    d.bytes -= bs as usize;
                }
            }
        }
        if fua {
            self.flush().await?;
        }
        Ok(())
    }

    /// Makes every write and trim that returned before this call durable:
    /// stored as chunks on the nodes and committed in meta.
    pub async fn flush(&self) -> Result<(), SdkError> {
        if self.read_only() {
            return Ok(());
        }
        let epoch = self.check_writable()?;
        let _one = self.inner.flush_lock.lock().await;
        let batch = {
            let mut d = lock(&self.inner.dirty);
            d.bytes = 0;
            Arc::new(std::mem::take(&mut d.blocks))
        };
        if batch.is_empty() {
            return Ok(());
        }
        *lock(&self.inner.flushing) = Some(batch.clone());
        let result = self.store(&batch, epoch).await;
        if result.is_err() {
            // Keep what was not stored for the next flush, under anything
            // written since.
            let mut d = lock(&self.inner.dirty);
            for (index, block) in batch.iter() {
                if !d.blocks.contains_key(index) {
                    if let Block::Data(_) = block {
                        d.bytes += self.block_size() as usize;
                    }
                    d.blocks.insert(*index, block.clone());
                }
            }
        }
        *lock(&self.inner.flushing) = None;
        if let Err(e) = &result
            && e.code() == Some(ErrorCode::Fenced)
        {
            self.inner.fenced.store(true, Ordering::SeqCst);
        }
        result
    }

    /// Writes a batch as chunks and commits it.
    async fn store(&self, batch: &Blocks, epoch: u64) -> Result<(), SdkError> {
        let bs = self.block_size() as u64;
        // Runs of consecutive blocks of one kind, in order.
        let mut writes: Vec<VolumeWrite> = Vec::new();
        let mut buffers: Vec<Vec<u8>> = Vec::new();
        let mut current: Vec<u8> = Vec::new();
        // (write index, buffer index) of data writes, to fill in chunk ids.
        let mut pending: Vec<(usize, usize)> = Vec::new();
        for (&index, block) in batch {
            let offset = index * bs;
            match block {
                Block::Zero => {
                    if let Some(w) = writes.last_mut()
                        && w.data.is_none()
                        && w.offset + w.len == offset
                    {
                        w.len += bs;
                    } else {
                        writes.push(VolumeWrite {
                            offset,
                            len: bs,
                            data: None,
                        });
                    }
                }
                Block::Data(bytes) => {
                    if current.len() + bytes.len() > VOLUME_CHUNK {
                        buffers.push(std::mem::take(&mut current));
                    }
                    let at = current.len() as u32;
                    let buf = buffers.len();
                    current.extend_from_slice(bytes);
                    let extends = writes.last().is_some_and(|w| {
                        w.offset + w.len == offset
                            && pending
                                .last()
                                .is_some_and(|&(wi, b)| wi == writes.len() - 1 && b == buf)
                    });
                    if extends {
                        if let Some(w) = writes.last_mut() {
                            w.len += bs;
                        }
                    } else {
                        pending.push((writes.len(), buf));
                        writes.push(VolumeWrite {
                            offset,
                            len: bs,
                            // The chunk id is filled in once stored.
                            data: Some((ChunkId([0; 16]), at)),
                        });
                    }
                }
            }
        }
        if !current.is_empty() {
            buffers.push(current);
        }
        let client = &self.inner.client;
        let map = client.cluster_map().await?;
        let reservation = client.reserve(&map);
        let policy = self.inner.info.policy;
        let mut stores: FuturesOrdered<_> = buffers
            .into_iter()
            .map(|buf| {
                let map = map.clone();
                let id = reservation.id;
                async move {
                    let _permit = client
                        .inner
                        .write_budget
                        .acquire()
                        .await
                        .map_err(|_| SdkError::Invalid("write budget closed".into()))?;
                    client.write_chunk(buf.into(), policy, &map, id).await
                }
            })
            .collect();
        let mut chunks = Vec::new();
        while let Some(r) = stores.next().await {
            chunks.push(r?);
        }
        for &(wi, b) in &pending {
            if let Some((id, _)) = writes[wi].data.as_mut() {
                *id = chunks[b].id;
            }
        }
        let resp = client
            .meta(Proposal::CommitVolumeWrites {
                name: self.inner.info.name.clone(),
                epoch,
                chunks: chunks.clone(),
                writes,
                write: Some(reservation.id),
            })
            .await?;
        let MetaResponse::Extents(maps) = resp else {
            return Err(client.unexpected(resp));
        };
        {
            let mut records = lock(&self.inner.records);
            for c in chunks {
                records.insert(c.id, c);
            }
        }
        let mut cache = lock(&self.inner.maps);
        for (index, rec) in maps {
            let rec = (!rec.pieces.is_empty()).then_some(rec);
            cache.insert(index, rec);
        }
        Ok(())
    }

    /// The committed maps of extents `first..=last`.
    async fn maps(&self, first: u64, last: u64) -> Result<Vec<Option<ExtentRecord>>, SdkError> {
        let missing: Vec<u64> = {
            let cache = lock(&self.inner.maps);
            (first..=last).filter(|i| !cache.contains_key(i)).collect()
        };
        if let (Some(&lo), Some(&hi)) = (missing.first(), missing.last()) {
            let mut at = lo;
            while at <= hi {
                let count = ((hi - at + 1) as u32).min(EXTENT_BATCH);
                let resp = self
                    .inner
                    .client
                    .meta(MetaQuery::VolumeExtents {
                        name: self.inner.info.name.clone(),
                        snapshot: self.inner.snapshot.clone(),
                        first: at,
                        count,
                    })
                    .await?;
                let MetaResponse::Extents(found) = resp else {
                    return Err(self.inner.client.unexpected(resp));
                };
                let mut found: HashMap<u64, ExtentRecord> = found.into_iter().collect();
                let mut cache = lock(&self.inner.maps);
                for i in at..at + count as u64 {
                    // A flush may have committed this extent meanwhile: its
                    // entry is newer than this answer.
                    cache.entry(i).or_insert_with(|| found.remove(&i));
                }
                at += count as u64;
            }
        }
        let cache = lock(&self.inner.maps);
        Ok((first..=last)
            .map(|i| cache.get(&i).cloned().flatten())
            .collect())
    }

    async fn record(&self, id: ChunkId) -> Result<ChunkRecord, SdkError> {
        if let Some(r) = lock(&self.inner.records).get(&id) {
            return Ok(r.clone());
        }
        let client = &self.inner.client;
        let record = match client.meta(MetaQuery::GetChunks { ids: vec![id] }).await? {
            MetaResponse::Chunks(mut c) if c.len() == 1 => c.remove(0),
            other => return Err(client.unexpected(other)),
        };
        lock(&self.inner.records).insert(id, record.clone());
        Ok(record)
    }

    /// Bytes `range` of chunk `id`, from the data fragments that hold them
    /// (cached, or read from their nodes: a 4 KiB read costs one fragment,
    /// not the chunk).
    async fn chunk_bytes(&self, id: ChunkId, range: Range<u64>) -> Result<Vec<u8>, SdkError> {
        let record = self.record(id).await?;
        if range.end > record.len || range.is_empty() {
            return Err(SdkError::Invalid(format!(
                "bytes {range:?} of chunk {id} of {} bytes",
                record.len
            )));
        }
        let flen = match record.policy {
            Policy::Erasure { .. } => record.fragment_len.max(1),
            Policy::Replicated { .. } => record.len.max(1),
        };
        let (first, last) = (range.start / flen, (range.end - 1) / flen);
        let mut frags: Vec<Option<Arc<Vec<u8>>>> = {
            let cache = lock(&self.inner.fragments);
            (first..=last)
                .map(|i| cache.by_key.get(&(id, i)).cloned())
                .collect()
        };
        let lo = frags.iter().position(Option::is_none);
        let hi = frags.iter().rposition(Option::is_none);
        if let (Some(lo), Some(hi)) = (lo, hi) {
            let wanted = (first as usize + lo)..=(first as usize + hi);
            let got = self
                .inner
                .client
                .read_data_fragments(&record, wanted)
                .await?;
            let mut cache = lock(&self.inner.fragments);
            for (k, bytes) in got.into_iter().enumerate() {
                let bytes = Arc::new(bytes);
                cache.insert((id, first + (lo + k) as u64), bytes.clone());
                frags[lo + k] = Some(bytes);
            }
        }
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        for (k, f) in frags.iter().enumerate() {
            let base = (first + k as u64) * flen;
            let s = range.start.max(base) - base;
            let e = range.end.min(base + flen) - base;
            let f = f
                .as_ref()
                .and_then(|f| f.get(s as usize..e as usize))
                .ok_or_else(|| SdkError::Invalid(format!("fragment of chunk {id} is short")))?;
            out.extend_from_slice(f);
        }
        Ok(out)
    }

    /// Reads `len` bytes at `offset` (whole blocks): what was written last,
    /// flushed or not; zeros where nothing was. Every byte from a node was
    /// checked against its BLAKE3.
    pub async fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>, SdkError> {
        self.check(offset, len)?;
        let bs = self.block_size() as u64;
        // Buffered blocks first (a flush committing meanwhile then only
        // makes the maps agree with them).
        let flushing = lock(&self.inner.flushing).clone();
        let dirty: Vec<(u64, Block)> = lock(&self.inner.dirty)
            .blocks
            .range(offset / bs..(offset + len) / bs)
            .map(|(i, b)| (*i, b.clone()))
            .collect();
        let mut out = vec![0u8; len as usize];
        if len == 0 {
            return Ok(out);
        }
        let first = offset / VOLUME_EXTENT;
        let last = (offset + len - 1) / VOLUME_EXTENT;
        let maps = self.maps(first, last).await?;
        // What each chunk must supply: (bytes of `out`, bytes of the chunk).
        let mut wanted: HashMap<ChunkId, Vec<(Range<usize>, u64)>> = HashMap::new();
        for (i, rec) in maps.iter().enumerate() {
            let Some(rec) = rec else { continue };
            let ext = (first + i as u64) * VOLUME_EXTENT;
            for p in &rec.pieces {
                let start = (ext + p.off as u64).max(offset);
                let end = (ext + p.off as u64 + p.len as u64).min(offset + len);
                if start >= end {
                    continue;
                }
                let from = p.chunk_off as u64 + (start - ext - p.off as u64);
                let dst = (start - offset) as usize..(end - offset) as usize;
                wanted.entry(p.chunk).or_default().push((dst, from));
            }
        }
        // One read per chunk, covering all its pieces; chunks concurrently
        // (a map written by small random writes points into many).
        let reads = wanted.into_iter().map(|(chunk, parts)| async move {
            let lo = parts.iter().map(|(_, from)| *from).min().unwrap_or(0);
            let hi = parts
                .iter()
                .map(|(dst, from)| from + dst.len() as u64)
                .max()
                .unwrap_or(0);
            let bytes = self.chunk_bytes(chunk, lo..hi).await?;
            Ok::<_, SdkError>((bytes, lo, parts))
        });
        let mut reads = futures::stream::iter(reads).buffer_unordered(PARALLEL_READS);
        while let Some(r) = reads.next().await {
            let (bytes, lo, parts) = r?;
            for (dst, from) in parts {
                let at = (from - lo) as usize;
                out[dst.clone()].copy_from_slice(&bytes[at..at + dst.len()]);
            }
        }
        let mut put = |index: u64, block: &Block| {
            let at = (index * bs - offset) as usize;
            let dst = &mut out[at..at + bs as usize];
            match block {
                Block::Data(b) => dst.copy_from_slice(b),
                Block::Zero => dst.fill(0),
            }
        };
        if let Some(f) = flushing {
            for (i, b) in f.range(offset / bs..(offset + len) / bs) {
                put(*i, b);
            }
        }
        for (i, b) in &dirty {
            put(*i, b);
        }
        Ok(out)
    }

    /// The allocation of `len` bytes at `offset`: runs covering the range
    /// in order, holes where nothing was written or all was trimmed.
    pub async fn allocation(&self, offset: u64, len: u64) -> Result<Vec<Allocation>, SdkError> {
        if offset >= self.size() || len == 0 {
            return Ok(Vec::new());
        }
        let end = (offset + len).min(self.size());
        let bs = self.block_size() as u64;
        let first = offset / VOLUME_EXTENT;
        let last = (end - 1) / VOLUME_EXTENT;
        let maps = self.maps(first, last).await?;
        // Allocated byte ranges from the maps, then buffered blocks.
        let mut allocated: BTreeMap<u64, bool> = BTreeMap::new();
        let blocks = |from: u64, to: u64| (from / bs)..to.div_ceil(bs);
        for (i, rec) in maps.iter().enumerate() {
            let Some(rec) = rec else { continue };
            let ext = (first + i as u64) * VOLUME_EXTENT;
            for p in &rec.pieces {
                let s = ext + p.off as u64;
                for b in blocks(s.max(offset), (s + p.len as u64).min(end)) {
                    allocated.insert(b, true);
                }
            }
        }
        let mut apply = |blocks: &Blocks| {
            for (i, b) in blocks.range(offset / bs..end.div_ceil(bs)) {
                allocated.insert(*i, matches!(b, Block::Data(_)));
            }
        };
        if let Some(f) = lock(&self.inner.flushing).clone() {
            apply(&f);
        }
        apply(&lock(&self.inner.dirty).blocks);
        let mut out: Vec<Allocation> = Vec::new();
        let mut at = offset;
        while at < end {
            let b = at / bs;
            let hole = !allocated.get(&b).copied().unwrap_or(false);
            let next = ((b + 1) * bs).min(end);
            match out.last_mut() {
                Some(a) if a.hole == hole => a.len += next - at,
                _ => out.push(Allocation {
                    len: next - at,
                    hole,
                }),
            }
            at = next;
        }
        Ok(out)
    }

    /// Flushes and gives the lease up. A volume dropped without `close`
    /// loses what was not flushed, and its lease runs out by itself.
    pub async fn close(&self) -> Result<(), SdkError> {
        let Some(epoch) = self.inner.epoch else {
            return Ok(());
        };
        let flushed = self.flush().await;
        lock(&self.inner.renewer).take();
        self.inner
            .client
            .meta(Proposal::DetachVolume {
                name: self.inner.info.name.clone(),
                epoch,
            })
            .await?;
        flushed
    }
}
