//! Block volumes: their records, extent maps, snapshots, clones and the
//! exclusive writer lease.
//!
//! A volume's address space is cut into extents of `VOLUME_EXTENT` bytes.
//! Each extent's map (an `ExtentRecord`: which chunk bytes make up which
//! part of it) is stored per sequence number: writes land at the volume's
//! `head_seq`; a snapshot takes the current sequence and moves the head on,
//! so the records it sees are never written again (constant time, whatever
//! the size). A view at sequence `v` sees, for each extent, the record with
//! the largest sequence not above `v`, else (for a clone) what its lineage
//! sees. The first write to an extent after a snapshot copies its map (not
//! its data) to the head: copy-on-write at extent level.
//!
//! Chunks are shared by pieces of many records (a flush writes one chunk
//! for many extents; snapshots and clones share maps), so each chunk keeps
//! a count of the pieces that refer to it and goes to garbage at zero.
//!
//! Nothing here knows NBD or how writers batch; the writer's epoch fences
//! commits of a writer whose lease was taken over.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use tessera_proto::{
    Attachment, ChunkRecord, ExtentRecord, SnapshotInfo, VOLUME_EXTENT, VolumeInfo, VolumeWrite,
};
use tessera_types::{ChunkId, Policy};

use super::chunks::{check_chunk_record, retire_chunk_ids, store_chunks};
use super::tables::{CHUNKS, EXTENTS, GARBAGE, VOLUME_CHUNK_REFS, VOLUMES, counter};
use super::{Applied, Refused, Txn, refuse};
use crate::MetaError;
use crate::keys::ExtentKey;
use crate::store::{KeyCodec, Read, Step};

/// Longest volume or snapshot name, in bytes.
pub const MAX_VOLUME_NAME: usize = 128;

/// Largest volume: 1 PiB keeps extent indexes and byte offsets far from
/// overflow and is beyond any cluster this runs.
pub const MAX_VOLUME_SIZE: u64 = 1 << 50;

/// Writes in one commit at most: bounds the work of one log entry.
pub const MAX_VOLUME_WRITES: usize = 16_384;

/// A volume or snapshot name: 1 to 128 bytes of ASCII letters, digits,
/// `.`, `_` and `-` (so `NAME@SNAP` is never ambiguous and names are safe in
/// URLs and export names). Errors: `BadRequest`.
pub fn validate_volume_name(name: &str) -> Result<(), MetaError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_VOLUME_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(refuse(
            Refused::BadRequest,
            format!(
                "invalid name {name:?}: 1 to {MAX_VOLUME_NAME} letters, digits, '.', '_' or '-'"
            ),
        ))
    }
}

fn no_such_volume(name: &str) -> MetaError {
    refuse(Refused::NoSuchVolume, format!("no volume {name}"))
}

fn busy(message: String) -> MetaError {
    refuse(Refused::VolumeBusy, message)
}

fn load(tx: &Txn<'_, '_>, name: &str) -> Result<VolumeInfo, MetaError> {
    tx.get(VOLUMES, &name.to_string())?
        .ok_or_else(|| no_such_volume(name))
}

fn snapshot<'v>(vol: &'v VolumeInfo, snap: &str) -> Result<&'v SnapshotInfo, MetaError> {
    vol.snapshots
        .iter()
        .find(|s| s.name == snap)
        .ok_or_else(|| {
            refuse(
                Refused::NotFound,
                format!("no snapshot {}@{snap}", vol.name),
            )
        })
}

fn check_size(size: u64, block_size: u32) -> Result<(), MetaError> {
    if size == 0 || size > MAX_VOLUME_SIZE || !size.is_multiple_of(block_size as u64) {
        return Err(refuse(
            Refused::BadRequest,
            format!(
                "volume size {size} must be above 0, at most {MAX_VOLUME_SIZE} bytes and a multiple of the block size {block_size}"
            ),
        ));
    }
    Ok(())
}

pub(super) fn create_volume(
    tx: &mut Txn<'_, '_>,
    name: &str,
    size: u64,
    policy: Policy,
    block_size: u32,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    validate_volume_name(name)?;
    if block_size != 512 && block_size != 4096 {
        return Err(refuse(
            Refused::BadRequest,
            format!("block size {block_size} must be 512 or 4096"),
        ));
    }
    check_size(size, block_size)?;
    policy
        .validate()
        .map_err(|e| refuse(Refused::InvalidPolicy, e.to_string()))?;
    if tx.contains(VOLUMES, &name.to_string())? {
        return Err(refuse(
            Refused::VolumeExists,
            format!("volume {name} already exists"),
        ));
    }
    let vol = VolumeInfo {
        id: next_volume_id(tx)?,
        name: name.to_string(),
        size,
        policy,
        block_size,
        created_ms: at_ms,
        head_seq: 1,
        lineage: Vec::new(),
        origin: None,
        snapshots: Vec::new(),
        attachment: None,
        epoch: 0,
        allocated: 0,
    };
    tx.put(VOLUMES, &vol.name, &vol)?;
    Ok(Applied::Volume(Box::new(vol)))
}

fn next_volume_id(tx: &mut Txn<'_, '_>) -> Result<u64, MetaError> {
    let id = tx.counter_now(counter::VOLUME_SEQ)? + 1;
    tx.add(counter::VOLUME_SEQ, 1);
    Ok(id)
}

pub(super) fn resize_volume(
    tx: &mut Txn<'_, '_>,
    name: &str,
    size: u64,
    allow_shrink: bool,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    let mut vol = load(tx, name)?;
    check_size(size, vol.block_size)?;
    if size < vol.size {
        if !allow_shrink {
            return Err(refuse(
                Refused::BadRequest,
                format!(
                    "shrinking {name} from {} to {size} bytes drops data: allow it explicitly",
                    vol.size
                ),
            ));
        }
        let cut = VolumeWrite {
            offset: size,
            len: vol.size - size,
            data: None,
        };
        let mut refs = RefDeltas::default();
        apply_writes(tx, &mut vol, &[cut], &[], &mut refs)?;
        refs.apply(tx, at_ms)?;
    }
    vol.size = size;
    tx.put(VOLUMES, &vol.name, &vol)?;
    Ok(Applied::Volume(Box::new(vol)))
}

pub(super) fn delete_volume(
    tx: &mut Txn<'_, '_>,
    name: &str,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    let vol = load(tx, name)?;
    if vol.attached_at(at_ms) {
        return Err(busy(format!(
            "volume {name} is attached by {}",
            holder(&vol)
        )));
    }
    if let Some(s) = vol.snapshots.iter().find(|s| s.clones > 0) {
        return Err(busy(format!(
            "snapshot {name}@{} has {} clone(s): remove them first",
            s.name, s.clones
        )));
    }
    let mut refs = RefDeltas::default();
    for (key, rec) in own_records(tx, vol.id)? {
        refs.drop_record(&rec);
        tx.delete(EXTENTS, &key)?;
    }
    refs.apply(tx, at_ms)?;
    if let Some(&(parent, seq)) = vol.lineage.first() {
        adjust_clones(tx, parent, seq, -1)?;
    }
    tx.delete(VOLUMES, &vol.name)?;
    Ok(Applied::Deleted { existed: true })
}

fn holder(vol: &VolumeInfo) -> String {
    vol.attachment
        .as_ref()
        .map(|a| format!("{} (epoch {})", a.holder, a.epoch))
        .unwrap_or_default()
}

/// Counts a clone more or less on the snapshot `seq` of volume `id`.
fn adjust_clones(tx: &mut Txn<'_, '_>, id: u64, seq: u64, delta: i32) -> Result<(), MetaError> {
    let mut found = None;
    tx.scan(VOLUMES, &[], |_, _, v: VolumeInfo| {
        if v.id == id {
            found = Some(v);
            return Ok(Step::Stop);
        }
        Ok(Step::Continue)
    })?;
    if let Some(mut v) = found {
        if let Some(s) = v.snapshots.iter_mut().find(|s| s.seq == seq) {
            s.clones = s.clones.saturating_add_signed(delta);
        }
        tx.put(VOLUMES, &v.name.clone(), &v)?;
    }
    Ok(())
}

pub(super) fn snapshot_volume(
    tx: &mut Txn<'_, '_>,
    name: &str,
    snap: &str,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    validate_volume_name(snap)?;
    let mut vol = load(tx, name)?;
    if vol.snapshots.iter().any(|s| s.name == snap) {
        return Err(refuse(
            Refused::VolumeExists,
            format!("snapshot {name}@{snap} already exists"),
        ));
    }
    vol.snapshots.push(SnapshotInfo {
        name: snap.to_string(),
        seq: vol.head_seq,
        created_ms: at_ms,
        allocated: vol.allocated,
        clones: 0,
    });
    vol.head_seq += 1;
    tx.put(VOLUMES, &vol.name, &vol)?;
    Ok(Applied::Volume(Box::new(vol)))
}

pub(super) fn delete_snapshot(
    tx: &mut Txn<'_, '_>,
    name: &str,
    snap: &str,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    let mut vol = load(tx, name)?;
    let pos = vol
        .snapshots
        .iter()
        .position(|s| s.name == snap)
        .ok_or_else(|| refuse(Refused::NotFound, format!("no snapshot {name}@{snap}")))?;
    let s = &vol.snapshots[pos];
    if s.clones > 0 {
        return Err(busy(format!(
            "snapshot {name}@{snap} has {} clone(s): remove them first",
            s.clones
        )));
    }
    let seq = s.seq;
    let prev = if pos == 0 {
        0
    } else {
        vol.snapshots[pos - 1].seq
    };
    let next = vol
        .snapshots
        .get(pos + 1)
        .map(|s| s.seq)
        .unwrap_or(vol.head_seq);
    // Only the views at `prev` and `next` remain around this range: of the
    // records in (prev, seq], `next` sees the newest, and only if it has
    // none of its own in (seq, next]; `prev` sees none of them.
    let mut refs = RefDeltas::default();
    let mut by_index: BTreeMap<u64, Vec<(ExtentKey, ExtentRecord)>> = BTreeMap::new();
    for (key, rec) in own_records(tx, vol.id)? {
        if key.seq > prev && key.seq <= next {
            by_index.entry(key.index).or_default().push((key, rec));
        }
    }
    for (_, recs) in by_index {
        // Newest first (the key order).
        let mut keep_one = recs[0].0.seq <= seq;
        for (key, rec) in &recs {
            if key.seq > seq {
                continue;
            }
            if keep_one {
                keep_one = false;
                continue;
            }
            refs.drop_record(rec);
            tx.delete(EXTENTS, key)?;
        }
    }
    refs.apply(tx, at_ms)?;
    vol.snapshots.remove(pos);
    tx.put(VOLUMES, &vol.name, &vol)?;
    Ok(Applied::Volume(Box::new(vol)))
}

pub(super) fn clone_volume(
    tx: &mut Txn<'_, '_>,
    name: &str,
    snap: &str,
    new_name: &str,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    validate_volume_name(new_name)?;
    let mut parent = load(tx, name)?;
    if tx.contains(VOLUMES, &new_name.to_string())? {
        return Err(refuse(
            Refused::VolumeExists,
            format!("volume {new_name} already exists"),
        ));
    }
    let s = snapshot(&parent, snap)?.clone();
    let mut lineage = vec![(parent.id, s.seq)];
    lineage.extend(parent.lineage.iter().copied());
    let vol = VolumeInfo {
        id: next_volume_id(tx)?,
        name: new_name.to_string(),
        size: parent.size,
        policy: parent.policy,
        block_size: parent.block_size,
        created_ms: at_ms,
        head_seq: 1,
        lineage,
        origin: Some(format!("{name}@{snap}")),
        snapshots: Vec::new(),
        attachment: None,
        epoch: 0,
        allocated: s.allocated,
    };
    if let Some(p) = parent.snapshots.iter_mut().find(|p| p.name == snap) {
        p.clones += 1;
    }
    tx.put(VOLUMES, &parent.name.clone(), &parent)?;
    tx.put(VOLUMES, &vol.name, &vol)?;
    Ok(Applied::Volume(Box::new(vol)))
}

pub(super) fn rollback_volume(
    tx: &mut Txn<'_, '_>,
    name: &str,
    snap: &str,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    let mut vol = load(tx, name)?;
    if vol.attached_at(at_ms) {
        return Err(busy(format!(
            "volume {name} is attached by {}: detach it before a rollback",
            holder(&vol)
        )));
    }
    let s = snapshot(&vol, snap)?.clone();
    let mut refs = RefDeltas::default();
    let mut changed: BTreeMap<u64, Option<ExtentRecord>> = BTreeMap::new();
    for (key, rec) in own_records(tx, vol.id)? {
        if key.seq > s.seq {
            let head = changed.entry(key.index).or_default();
            if key.seq == vol.head_seq {
                *head = Some(rec);
            }
        }
    }
    for (index, head) in changed {
        let key = ExtentKey {
            volume: vol.id,
            index,
            seq: vol.head_seq,
        };
        if let Some(old) = head {
            refs.drop_record(&old);
        }
        let then = visible(tx, &vol, s.seq, index)?;
        let below = has_below(tx, &vol, index)?;
        match then {
            Some(rec) if !rec.pieces.is_empty() || below => {
                refs.add_record(&rec);
                tx.put(EXTENTS, &key, &rec)?;
            }
            None if below => tx.put(EXTENTS, &key, &ExtentRecord::default())?,
            _ => tx.delete(EXTENTS, &key)?,
        }
    }
    refs.apply(tx, at_ms)?;
    vol.allocated = s.allocated;
    tx.put(VOLUMES, &vol.name, &vol)?;
    Ok(Applied::Volume(Box::new(vol)))
}

pub(super) fn attach_volume(
    tx: &mut Txn<'_, '_>,
    name: &str,
    holder_name: &str,
    epoch: Option<u64>,
    force: bool,
    at_ms: u64,
) -> Result<Applied, MetaError> {
    let mut vol = load(tx, name)?;
    match (epoch, vol.attachment.as_mut()) {
        (Some(e), Some(a)) if a.epoch == e => a.renewed_ms = at_ms,
        (Some(e), _) => {
            return Err(refuse(
                Refused::Fenced,
                format!("the lease of volume {name} at epoch {e} was taken over"),
            ));
        }
        (None, _) => {
            if vol.attached_at(at_ms) && !force {
                return Err(busy(format!(
                    "volume {name} is attached by {}; --force takes it over once that writer is dead",
                    holder(&vol)
                )));
            }
            vol.epoch += 1;
            vol.attachment = Some(Attachment {
                holder: holder_name.to_string(),
                epoch: vol.epoch,
                since_ms: at_ms,
                renewed_ms: at_ms,
            });
        }
    }
    tx.put(VOLUMES, &vol.name, &vol)?;
    Ok(Applied::Volume(Box::new(vol)))
}

pub(super) fn detach_volume(
    tx: &mut Txn<'_, '_>,
    name: &str,
    epoch: u64,
) -> Result<Applied, MetaError> {
    let mut vol = load(tx, name)?;
    if vol.attachment.as_ref().is_some_and(|a| a.epoch == epoch) {
        vol.attachment = None;
        tx.put(VOLUMES, &vol.name, &vol)?;
    }
    Ok(Applied::Done)
}

pub(super) fn commit_volume_writes(
    tx: &mut Txn<'_, '_>,
    name: &str,
    epoch: u64,
    chunks: &[ChunkRecord],
    writes: &[VolumeWrite],
    at_ms: u64,
) -> Result<Applied, MetaError> {
    let mut vol = load(tx, name)?;
    if vol.attachment.as_ref().is_none_or(|a| a.epoch != epoch) {
        return Err(refuse(
            Refused::Fenced,
            format!("volume {name}: epoch {epoch} does not hold the lease"),
        ));
    }
    if writes.len() > MAX_VOLUME_WRITES {
        return Err(refuse(
            Refused::TooLarge,
            format!(
                "{} writes in one commit; at most {MAX_VOLUME_WRITES}",
                writes.len()
            ),
        ));
    }
    if let Some(first) = chunks.first()
        && tx.contains(CHUNKS, &first.id)?
    {
        // The same commit again: the writer resent it after its meta
        // connection failed, not knowing it was applied. Nothing else can
        // have written the volume since (it holds the lease).
        let indexes = touched(writes);
        let mut out = Vec::with_capacity(indexes.len());
        for index in indexes {
            let rec = visible(tx, &vol, vol.head_seq, index)?.unwrap_or_default();
            out.push((index, rec));
        }
        return Ok(Applied::Extents(out));
    }
    for c in chunks {
        check_chunk_record(tx, c)?;
    }
    store_chunks(tx, chunks)?;
    let mut refs = RefDeltas::default();
    let out = apply_writes(tx, &mut vol, writes, chunks, &mut refs)?;
    // A chunk whose every byte this same commit overwrote is referred to
    // by nothing: it goes to garbage at once.
    for c in chunks {
        refs.0.entry(c.id).or_insert(0);
    }
    refs.apply(tx, at_ms)?;
    tx.put(VOLUMES, &vol.name, &vol)?;
    Ok(Applied::Extents(out))
}

fn touched(writes: &[VolumeWrite]) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for w in writes {
        if w.len == 0 {
            continue;
        }
        let first = w.offset / VOLUME_EXTENT;
        let last = (w.offset + w.len - 1) / VOLUME_EXTENT;
        out.extend(first..=last);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Lays `writes` over the head in order; answers the head's new map of
/// every extent touched. Data writes must name chunks of `chunks`.
fn apply_writes(
    tx: &mut Txn<'_, '_>,
    vol: &mut VolumeInfo,
    writes: &[VolumeWrite],
    chunks: &[ChunkRecord],
    refs: &mut RefDeltas,
) -> Result<Vec<(u64, ExtentRecord)>, MetaError> {
    let bad = |m: String| refuse(Refused::BadRequest, m);
    let block = vol.block_size as u64;
    // extent index -> (map before, map after)
    let mut maps: BTreeMap<u64, (ExtentRecord, ExtentRecord)> = BTreeMap::new();
    for w in writes {
        let end = w.offset.saturating_add(w.len);
        if w.len == 0 || end > vol.size {
            return Err(bad(format!(
                "write of {} bytes at {} is outside volume {} of {} bytes",
                w.len, w.offset, vol.name, vol.size
            )));
        }
        if !w.offset.is_multiple_of(block) || !w.len.is_multiple_of(block) {
            return Err(bad(format!(
                "write of {} bytes at {} is not aligned to the block size {block}",
                w.len, w.offset
            )));
        }
        if let Some((chunk, chunk_off)) = w.data {
            let c = chunks.iter().find(|c| c.id == chunk).ok_or_else(|| {
                bad(format!(
                    "write names chunk {chunk}, which this commit does not store"
                ))
            })?;
            if chunk_off as u64 + w.len > c.len {
                return Err(bad(format!(
                    "write of {} bytes from {chunk_off} runs past chunk {chunk} of {} bytes",
                    w.len, c.len
                )));
            }
        }
        let mut pos = w.offset;
        while pos < end {
            let index = pos / VOLUME_EXTENT;
            let ext_start = index * VOLUME_EXTENT;
            let run_end = end.min(ext_start + VOLUME_EXTENT);
            let (_, after) = match maps.entry(index) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let before = visible(tx, vol, vol.head_seq, index)?.unwrap_or_default();
                    e.insert((before.clone(), before))
                }
            };
            let data = w
                .data
                .map(|(chunk, chunk_off)| (chunk, chunk_off + (pos - w.offset) as u32));
            after.overlay((pos - ext_start) as u32, (run_end - pos) as u32, data);
            pos = run_end;
        }
    }
    let mut out = Vec::with_capacity(maps.len());
    let mut allocated = vol.allocated as i64;
    for (index, (before, after)) in maps {
        let key = ExtentKey {
            volume: vol.id,
            index,
            seq: vol.head_seq,
        };
        if let Some(old) = tx.get(EXTENTS, &key)? {
            refs.drop_record(&old);
        }
        refs.add_record(&after);
        allocated += after.mapped() as i64 - before.mapped() as i64;
        if after.pieces.is_empty() && !has_below(tx, vol, index)? {
            tx.delete(EXTENTS, &key)?;
        } else {
            tx.put(EXTENTS, &key, &after)?;
        }
        out.push((index, after));
    }
    vol.allocated = allocated.max(0) as u64;
    Ok(out)
}

/// What a view of `vol` at `seq` sees of extent `index`.
fn visible(
    r: &(impl Read + ?Sized),
    vol: &VolumeInfo,
    seq: u64,
    index: u64,
) -> Result<Option<ExtentRecord>, MetaError> {
    let levels = std::iter::once((vol.id, seq)).chain(vol.lineage.iter().copied());
    for (volume, at) in levels {
        if let Some((_, rec)) = newest_at(r, volume, index, at)? {
            return Ok(Some(rec));
        }
    }
    Ok(None)
}

/// Whether anything below the head shows through extent `index` (an older
/// record of the volume's own, or its lineage's).
fn has_below(r: &(impl Read + ?Sized), vol: &VolumeInfo, index: u64) -> Result<bool, MetaError> {
    if vol.head_seq > 0 && newest_at(r, vol.id, index, vol.head_seq - 1)?.is_some() {
        return Ok(true);
    }
    for &(parent, pseq) in &vol.lineage {
        if newest_at(r, parent, index, pseq)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The newest record of `(volume, index)` with a sequence not above `seq`.
fn newest_at(
    r: &(impl Read + ?Sized),
    volume: u64,
    index: u64,
    seq: u64,
) -> Result<Option<(ExtentKey, ExtentRecord)>, MetaError> {
    let start = ExtentKey { volume, index, seq }.encode();
    let mut found = None;
    r.scan(EXTENTS, &start, |_, k: ExtentKey, rec: ExtentRecord| {
        if k.volume == volume && k.index == index && k.seq <= seq {
            found = Some((k, rec));
        }
        Ok(Step::Stop)
    })?;
    Ok(found)
}

/// Every record of volume `id`, in key order.
fn own_records(
    r: &(impl Read + ?Sized),
    id: u64,
) -> Result<Vec<(ExtentKey, ExtentRecord)>, MetaError> {
    let start = id.to_be_bytes();
    let mut out = Vec::new();
    r.scan(EXTENTS, &start, |_, k: ExtentKey, rec: ExtentRecord| {
        if k.volume != id {
            return Ok(Step::Stop);
        }
        out.push((k, rec));
        Ok(Step::Continue)
    })?;
    Ok(out)
}

/// Changes to chunks' piece counts, settled at the end of a command.
#[derive(Default)]
struct RefDeltas(BTreeMap<ChunkId, i64>);

impl RefDeltas {
    fn add_record(&mut self, rec: &ExtentRecord) {
        for p in &rec.pieces {
            *self.0.entry(p.chunk).or_default() += 1;
        }
    }

    fn drop_record(&mut self, rec: &ExtentRecord) {
        for p in &rec.pieces {
            *self.0.entry(p.chunk).or_default() -= 1;
        }
    }

    fn settle(&self, tx: &mut Txn<'_, '_>) -> Result<Vec<ChunkId>, MetaError> {
        let mut dead = Vec::new();
        for (&chunk, &delta) in &self.0 {
            let have = tx.get(VOLUME_CHUNK_REFS, &chunk)?.unwrap_or(0);
            let now = have.saturating_add_signed(delta);
            if now == 0 {
                tx.delete(VOLUME_CHUNK_REFS, &chunk)?;
                if tx.contains(CHUNKS, &chunk)? && !tx.contains(GARBAGE, &chunk)? {
                    dead.push(chunk);
                }
            } else if now != have {
                tx.put(VOLUME_CHUNK_REFS, &chunk, &now)?;
            }
        }
        Ok(dead)
    }

    /// Settles the counts and hands chunks nothing refers to any more to
    /// garbage collection.
    fn apply(&self, tx: &mut Txn<'_, '_>, at_ms: u64) -> Result<(), MetaError> {
        let dead = self.settle(tx)?;
        retire_chunk_ids(tx, &dead, at_ms)
    }
}

/// Queries of volumes and their extent maps.
pub trait VolumeQueries: Read {
    /// Errors: `NoSuchVolume`.
    fn volume(&self, name: &str) -> Result<VolumeInfo, MetaError> {
        self.get(VOLUMES, &name.to_string())?
            .ok_or_else(|| no_such_volume(name))
    }

    /// Every volume in name order.
    fn volumes(&self) -> Result<Vec<VolumeInfo>, MetaError> {
        let mut out = Vec::new();
        self.scan(VOLUMES, &[], |_, _, v: VolumeInfo| {
            out.push(v);
            Ok(Step::Continue)
        })?;
        Ok(out)
    }

    /// The maps of extents `first..first+count` (at most 4096) as the
    /// volume (or its snapshot) sees them, holes left out. Errors:
    /// `NoSuchVolume`, `NotFound` for an unknown snapshot.
    fn volume_extents(
        &self,
        name: &str,
        snap: Option<&str>,
        first: u64,
        count: u32,
    ) -> Result<Vec<(u64, ExtentRecord)>, MetaError> {
        let vol = self.volume(name)?;
        let seq = match snap {
            Some(s) => snapshot(&vol, s)?.seq,
            None => vol.head_seq,
        };
        let count = count.min(4096) as u64;
        let end = first.saturating_add(count);
        // Own records first, then each lineage level for what is still
        // unresolved; a record found (even an empty one) hides lower ones.
        let mut found: BTreeMap<u64, ExtentRecord> = BTreeMap::new();
        let mut levels = vec![(vol.id, seq)];
        levels.extend(vol.lineage.iter().copied());
        for (volume, at) in levels {
            let seek = |index: u64| {
                ExtentKey {
                    volume,
                    index,
                    seq: at,
                }
                .encode()
            };
            self.scan(
                EXTENTS,
                &seek(first),
                |_, k: ExtentKey, rec: ExtentRecord| {
                    if k.volume != volume || k.index >= end {
                        return Ok(Step::Stop);
                    }
                    if k.seq > at {
                        // Newer than the view: jump to where the view starts
                        // within this extent.
                        return Ok(Step::Seek(seek(k.index)));
                    }
                    found.entry(k.index).or_insert(rec);
                    Ok(Step::Seek(seek(k.index + 1)))
                },
            )?;
        }
        Ok(found
            .into_iter()
            .filter(|(_, r)| !r.pieces.is_empty())
            .collect())
    }
}

impl<R: Read + ?Sized> VolumeQueries for R {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tessera_proto::{ChunkRecord, FragmentRecord, VOLUME_EXTENT, VolumeInfo, VolumeWrite};
    use tessera_types::{ChunkId, NodeId, Policy};

    use super::VolumeQueries;
    use crate::state::tables::{CHUNKS, EXTENTS, GARBAGE, VOLUME_CHUNK_REFS};
    use crate::state::testkit::{Command, Kit};
    use crate::state::{Applied, Refused};
    use crate::store::{Read, Step};

    const BLOCK: u64 = 4096;
    const EXTENTS_PER_VOLUME: u64 = 4;
    const SIZE: u64 = EXTENTS_PER_VOLUME * VOLUME_EXTENT;
    const BLOCKS: usize = (SIZE / BLOCK) as usize;

    /// What each block of a view reads: a chunk's byte offset, or zeros.
    type Blocks = Vec<Option<(ChunkId, u32)>>;

    fn chunk(n: u32, len: u64, nodes: &[NodeId]) -> ChunkRecord {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        ChunkRecord {
            id: ChunkId(id),
            policy: Policy::default(),
            len,
            fragment_len: len.div_ceil(4),
            hash: [0; 32],
            fragments: nodes
                .iter()
                .map(|n| FragmentRecord {
                    node: *n,
                    hash: [0; 32],
                })
                .collect(),
        }
    }

    fn volume(k: &Kit, name: &str) -> VolumeInfo {
        k.sm.read().volume(name).unwrap()
    }

    fn create(k: &Kit, name: &str) {
        k.ok(Command::CreateVolume {
            name: name.into(),
            size: SIZE,
            policy: Policy::default(),
            block_size: BLOCK as u32,
            at_ms: 1,
        });
    }

    fn attach(k: &Kit, name: &str, force: bool, at_ms: u64) -> Result<u64, Refused> {
        match k.apply(Command::AttachVolume {
            name: name.into(),
            holder: "test".into(),
            epoch: None,
            force,
            at_ms,
        }) {
            Ok(Applied::Volume(v)) => Ok(v.epoch),
            Ok(other) => panic!("{other:?}"),
            Err(r) => Err(r.kind),
        }
    }

    /// The blocks a view reads, resolved from meta's extent maps.
    fn read_view(k: &Kit, name: &str, snap: Option<&str>) -> Blocks {
        let maps =
            k.sm.read()
                .volume_extents(name, snap, 0, EXTENTS_PER_VOLUME as u32)
                .unwrap();
        let mut out = vec![None; BLOCKS];
        for (index, rec) in maps {
            let mut last_end = 0;
            for p in &rec.pieces {
                assert!(p.off >= last_end, "pieces overlap: {rec:?}");
                assert!(p.len > 0);
                last_end = p.off + p.len;
                for b in (0..p.len as u64).step_by(BLOCK as usize) {
                    let at = index * VOLUME_EXTENT + p.off as u64 + b;
                    out[(at / BLOCK) as usize] = Some((p.chunk, p.chunk_off + b as u32));
                }
            }
        }
        out
    }

    /// The piece counts recorded equal the pieces the records hold, and a
    /// chunk is garbage exactly when nothing refers to it.
    fn check_refs(k: &Kit) {
        let r = k.sm.read();
        let mut counted: BTreeMap<ChunkId, u64> = BTreeMap::new();
        r.scan(
            EXTENTS,
            &[],
            |_, _: crate::keys::ExtentKey, rec: tessera_proto::ExtentRecord| {
                for p in rec.pieces {
                    *counted.entry(p.chunk).or_default() += 1;
                }
                Ok(Step::Continue)
            },
        )
        .unwrap();
        let mut stored: BTreeMap<ChunkId, u64> = BTreeMap::new();
        r.scan(VOLUME_CHUNK_REFS, &[], |_, c: ChunkId, n: u64| {
            stored.insert(c, n);
            Ok(Step::Continue)
        })
        .unwrap();
        assert_eq!(counted, stored);
        r.scan(CHUNKS, &[], |_, c: ChunkId, _: ChunkRecord| {
            let garbage = r.contains(GARBAGE, &c).unwrap();
            assert_eq!(garbage, !stored.contains_key(&c), "chunk {c}");
            Ok(Step::Continue)
        })
        .unwrap();
    }

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Random writes, trims, snapshots, rollbacks, snapshot removals and a
    /// clone, each view checked block by block against a plain model.
    #[test]
    fn views_match_a_block_model_through_snapshots_clones_and_rollbacks() {
        for seed in 1..=12u64 {
            let k = Kit::new();
            let nodes = k.nodes(6);
            create(&k, "v");
            let mut epochs: BTreeMap<String, u64> = BTreeMap::new();
            epochs.insert("v".into(), attach(&k, "v", false, 1).unwrap());
            let mut model: BTreeMap<String, Blocks> = BTreeMap::new();
            model.insert("v".into(), vec![None; BLOCKS]);
            let mut snaps: Vec<(String, String)> = Vec::new(); // (volume, snap)
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut next_chunk = 1u32;
            for step in 0..120 {
                let vols: Vec<String> =
                    model.keys().filter(|n| !n.contains('@')).cloned().collect();
                let name = vols[rng.below(vols.len() as u64) as usize].clone();
                match rng.below(20) {
                    0..=11 => {
                        let first = rng.below(BLOCKS as u64);
                        let n = 1 + rng.below((BLOCKS as u64 - first).min(400));
                        let trim = rng.below(4) == 0;
                        let (chunks, data) = if trim {
                            (vec![], None)
                        } else {
                            next_chunk += 1;
                            let c = chunk(next_chunk, n * BLOCK + BLOCK, &nodes);
                            let id = c.id;
                            (vec![c], Some((id, BLOCK as u32)))
                        };
                        k.ok(Command::CommitVolumeWrites {
                            name: name.clone(),
                            epoch: epochs[&name],
                            chunks,
                            writes: vec![VolumeWrite {
                                offset: first * BLOCK,
                                len: n * BLOCK,
                                data,
                            }],
                            at_ms: 2,
                        });
                        let m = model.get_mut(&name).unwrap();
                        for i in 0..n {
                            m[(first + i) as usize] =
                                data.map(|(c, off)| (c, off + (i * BLOCK) as u32));
                        }
                    }
                    12..=14 => {
                        let snap = format!("s{step}");
                        k.ok(Command::SnapshotVolume {
                            name: name.clone(),
                            snapshot: snap.clone(),
                            at_ms: 2,
                        });
                        let m = model[&name].clone();
                        model.insert(format!("{name}@{snap}"), m);
                        snaps.push((name.clone(), snap));
                    }
                    15 | 16 if !snaps.is_empty() => {
                        let i = rng.below(snaps.len() as u64) as usize;
                        let (vol, snap) = snaps[i].clone();
                        k.ok(Command::DetachVolume {
                            name: vol.clone(),
                            epoch: epochs[&vol],
                        });
                        k.ok(Command::RollbackVolume {
                            name: vol.clone(),
                            snapshot: snap.clone(),
                            at_ms: 3,
                        });
                        epochs.insert(vol.clone(), attach(&k, &vol, false, 3).unwrap());
                        let m = model[&format!("{vol}@{snap}")].clone();
                        model.insert(vol, m);
                    }
                    17 | 18 if !snaps.is_empty() => {
                        let i = rng.below(snaps.len() as u64) as usize;
                        let (vol, snap) = snaps[i].clone();
                        let busy = volume(&k, &vol)
                            .snapshots
                            .iter()
                            .any(|s| s.name == snap && s.clones > 0);
                        let cmd = Command::DeleteSnapshot {
                            name: vol.clone(),
                            snapshot: snap.clone(),
                            at_ms: 3,
                        };
                        if busy {
                            assert_eq!(k.refused(cmd), Refused::VolumeBusy);
                        } else {
                            k.ok(cmd);
                            snaps.remove(i);
                            model.remove(&format!("{vol}@{snap}"));
                        }
                    }
                    _ if !snaps.is_empty() && vols.len() < 4 => {
                        let i = rng.below(snaps.len() as u64) as usize;
                        let (vol, snap) = snaps[i].clone();
                        let new = format!("c{step}");
                        k.ok(Command::CloneVolume {
                            name: vol.clone(),
                            snapshot: snap.clone(),
                            new_name: new.clone(),
                            at_ms: 3,
                        });
                        epochs.insert(new.clone(), attach(&k, &new, false, 3).unwrap());
                        let m = model[&format!("{vol}@{snap}")].clone();
                        model.insert(new, m);
                    }
                    _ => {}
                }
                for (view, want) in &model {
                    let (vol, snap) = match view.split_once('@') {
                        Some((v, s)) => (v, Some(s)),
                        None => (view.as_str(), None),
                    };
                    let got = read_view(&k, vol, snap);
                    assert!(got == *want, "seed {seed} step {step}: view {view} differs");
                    let allocated = want.iter().filter(|b| b.is_some()).count() as u64 * BLOCK;
                    let info = volume(&k, vol);
                    let recorded = match snap {
                        None => info.allocated,
                        Some(s) => {
                            info.snapshots
                                .iter()
                                .find(|x| x.name == s)
                                .unwrap()
                                .allocated
                        }
                    };
                    assert_eq!(
                        recorded, allocated,
                        "seed {seed} step {step}: {view} allocated"
                    );
                }
                check_refs(&k);
            }
            // Everything goes, clones before what they were cloned from.
            let mut vols: Vec<String> =
                model.keys().filter(|n| !n.contains('@')).cloned().collect();
            while !vols.is_empty() {
                vols.retain(|vol| {
                    for s in volume(&k, vol).snapshots {
                        let _ = k.apply(Command::DeleteSnapshot {
                            name: vol.clone(),
                            snapshot: s.name,
                            at_ms: 4,
                        });
                    }
                    k.ok(Command::DetachVolume {
                        name: vol.clone(),
                        epoch: epochs[vol],
                    });
                    let gone = k
                        .apply(Command::DeleteVolume {
                            name: vol.clone(),
                            at_ms: 4,
                        })
                        .is_ok();
                    !gone
                });
            }
            check_refs(&k);
            let r = k.sm.read();
            let mut left = 0;
            r.scan(
                EXTENTS,
                &[],
                |_, _: crate::keys::ExtentKey, _: tessera_proto::ExtentRecord| {
                    left += 1;
                    Ok(Step::Continue)
                },
            )
            .unwrap();
            assert_eq!(left, 0, "seed {seed}: extent records left behind");
        }
    }

    #[test]
    fn a_second_writer_is_refused_until_forced_and_the_first_is_fenced() {
        let k = Kit::new();
        let nodes = k.nodes(6);
        create(&k, "v");
        let first = attach(&k, "v", false, 1_000).unwrap();
        assert_eq!(attach(&k, "v", false, 2_000), Err(Refused::VolumeBusy));
        let second = attach(&k, "v", true, 2_000).unwrap();
        assert!(second > first);
        let c = chunk(7, BLOCK, &nodes);
        let write = |epoch| Command::CommitVolumeWrites {
            name: "v".into(),
            epoch,
            chunks: vec![c.clone()],
            writes: vec![VolumeWrite {
                offset: 0,
                len: BLOCK,
                data: Some((c.id, 0)),
            }],
            at_ms: 3_000,
        };
        assert_eq!(k.refused(write(first)), Refused::Fenced);
        // Renewing the lost lease is refused too.
        let renew = Command::AttachVolume {
            name: "v".into(),
            holder: "old".into(),
            epoch: Some(first),
            force: false,
            at_ms: 3_000,
        };
        assert_eq!(k.refused(renew), Refused::Fenced);
        k.ok(write(second));
        // Sent again (a resend after a meta failover): answered, not
        // applied twice.
        k.ok(write(second));
        check_refs(&k);
        // A lease not renewed for its whole term may be taken without force.
        assert_eq!(
            attach(&k, "v", false, 3_000 + tessera_proto::VOLUME_LEASE_MS + 1).map(|e| e > second),
            Ok(true)
        );
        // Removal is refused while attached.
        assert_eq!(
            k.refused(Command::DeleteVolume {
                name: "v".into(),
                at_ms: 40_000
            }),
            Refused::VolumeBusy
        );
    }

    #[test]
    fn bad_writes_and_names_are_refused_and_change_nothing() {
        let k = Kit::new();
        let nodes = k.nodes(6);
        create(&k, "v");
        let epoch = attach(&k, "v", false, 1).unwrap();
        let c = chunk(9, 2 * BLOCK, &nodes);
        let cases = [
            (SIZE, BLOCK),             // past the end
            (SIZE - BLOCK, 2 * BLOCK), // runs past the end
            (1, BLOCK),                // misaligned
            (0, 0),                    // empty
            (0, 3 * BLOCK),            // past the chunk
        ];
        for (offset, len) in cases {
            let r = k.refused(Command::CommitVolumeWrites {
                name: "v".into(),
                epoch,
                chunks: vec![c.clone()],
                writes: vec![VolumeWrite {
                    offset,
                    len,
                    data: Some((c.id, 0)),
                }],
                at_ms: 2,
            });
            assert_eq!(r, Refused::BadRequest, "{offset} {len}");
        }
        assert_eq!(read_view(&k, "v", None), vec![None; BLOCKS]);
        check_refs(&k);
        for name in ["", "a@b", "a/b", &"x".repeat(129)] {
            let r = k.refused(Command::CreateVolume {
                name: name.into(),
                size: SIZE,
                policy: Policy::default(),
                block_size: 4096,
                at_ms: 1,
            });
            assert_eq!(r, Refused::BadRequest, "{name:?}");
        }
        for (size, block_size) in [(0, 4096), (4097, 4096), (SIZE, 1024)] {
            let r = k.refused(Command::CreateVolume {
                name: "w".into(),
                size,
                policy: Policy::default(),
                block_size,
                at_ms: 1,
            });
            assert_eq!(r, Refused::BadRequest, "{size} {block_size}");
        }
    }
}
