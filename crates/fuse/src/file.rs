//! One open file: its content as a run of chunk-sized slots, each kept from
//! the committed version, changed in memory, or already written as a new
//! chunk that is not committed yet. A commit splices the new chunks into
//! the object's chunk list in one meta command (copy-on-write), so changing
//! one byte of a large file rewrites one chunk, not the file. Sequential
//! writes stream: each slot is written to the cluster as soon as the writer
//! moves past it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use md5::{Digest, Md5};
use tessera_proto::{
    ChunkRecord, ChunkRef, ErrorCode, NewObject, ObjectData, ObjectHeaders, ObjectInfo,
};
use tessera_sdk::{Client, SdkError, StagedWrite};
use tokio::task::JoinHandle;

use crate::attrs::MTIME;
use crate::cache::ChunkCache;
use crate::metrics::MountMetrics;

/// Slots changed in memory before the oldest are written out: bounds the
/// memory of a file written at random places.
const MAX_DIRTY: usize = 16;
/// Chunk writes in flight per file before a write waits for one.
const MAX_UPLOADS: usize = 8;

/// What every open file of a mount shares.
pub struct FileStore {
    pub client: Client,
    pub cache: Arc<ChunkCache>,
    pub bucket: String,
    pub chunk_size: u64,
    /// Content up to this size is committed inline in meta.
    pub inline_limit: u64,
    pub metrics: Arc<MountMetrics>,
}

enum Slot {
    /// A chunk of the committed version.
    Kept(ChunkRecord),
    /// Content in memory, maybe being written out.
    Dirty {
        buf: Arc<Vec<u8>>,
        upload: Option<JoinHandle<Result<ChunkRecord, SdkError>>>,
    },
    /// A new chunk, stored, not committed yet.
    Written(ChunkRecord),
}

impl Slot {
    fn len(&self) -> u64 {
        match self {
            Slot::Kept(r) | Slot::Written(r) => r.len,
            Slot::Dirty { buf, .. } => buf.len() as u64,
        }
    }
}

/// Part of a read: bytes copied out of memory, or a range of a stored chunk.
pub enum Piece {
    Bytes(Vec<u8>),
    Chunk(ChunkRecord, usize, usize),
}

pub struct OpenFile {
    store: Arc<FileStore>,
    /// The committed version this file is based on.
    pub info: ObjectInfo,
    slots: Vec<Slot>,
    starts: Vec<u64>,
    size: u64,
    /// Slots changed in memory and not being written.
    dirty: BTreeSet<usize>,
    content_dirty: bool,
    meta_dirty: bool,
    /// The attributes to commit.
    pub meta: BTreeMap<String, String>,
    /// MD5 of bytes `0..md5_len`, while the file is written strictly in
    /// order from empty: then the ETag can be the MD5 S3 clients expect.
    md5: Option<(Md5, u64)>,
    staged: Option<Arc<StagedWrite>>,
}

impl OpenFile {
    /// `records` are the chunk records of `info`'s chunks, in order.
    pub fn new(store: Arc<FileStore>, info: ObjectInfo, records: Vec<ChunkRecord>) -> Self {
        let mut slots = Vec::new();
        match &info.data {
            ObjectData::Inline(bytes) if !bytes.is_empty() => slots.push(Slot::Dirty {
                buf: Arc::new(bytes.clone()),
                upload: None,
            }),
            ObjectData::Inline(_) => {}
            ObjectData::Chunks(_) => slots.extend(records.into_iter().map(Slot::Kept)),
        }
        let md5 = (info.size == 0).then(|| (Md5::new(), 0));
        let mut f = OpenFile {
            store,
            meta: info.user_meta.clone(),
            size: info.size,
            info,
            slots,
            starts: Vec::new(),
            dirty: BTreeSet::new(),
            content_dirty: false,
            meta_dirty: false,
            md5,
            staged: None,
        };
        f.restart();
        f
    }

    /// A file created by this mount and not committed yet: `info` is what
    /// its first commit will make (empty, with the creator's attributes),
    /// and that commit happens even if nothing is written (`touch`).
    pub fn new_pending(store: Arc<FileStore>, info: ObjectInfo) -> Self {
        let mut f = OpenFile::new(store, info, Vec::new());
        f.content_dirty = true;
        f
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_dirty(&self) -> bool {
        self.content_dirty || self.meta_dirty
    }

    pub fn set_meta(&mut self, key: &str, value: Option<String>) {
        match value {
            Some(v) => self.meta.insert(key.to_string(), v),
            None => self.meta.remove(key),
        };
        self.meta_dirty = true;
    }

    fn restart(&mut self) {
        self.starts.clear();
        let mut at = 0;
        for s in &self.slots {
            self.starts.push(at);
            at += s.len();
        }
    }

    /// The slot holding byte `pos` (< size).
    fn locate(&self, pos: u64) -> usize {
        self.starts.partition_point(|s| *s <= pos).saturating_sub(1)
    }

    /// Makes slot `i` changeable in memory, fetching its content if needed.
    async fn load(&mut self, i: usize) -> Result<(), SdkError> {
        let record = match &mut self.slots[i] {
            Slot::Kept(r) | Slot::Written(r) => r.clone(),
            Slot::Dirty { upload, .. } => {
                // Its content is about to change: an upload in flight
                // would store the old one (left to the garbage collector).
                *upload = None;
                return Ok(());
            }
        };
        let bytes = self.store.cache.get(&record).await?;
        self.slots[i] = Slot::Dirty {
            buf: Arc::new(bytes.as_ref().clone()),
            upload: None,
        };
        Ok(())
    }

    fn buf(&mut self, i: usize) -> &mut Vec<u8> {
        self.dirty.insert(i);
        match &mut self.slots[i] {
            Slot::Dirty { buf, upload } => {
                *upload = None;
                Arc::make_mut(buf)
            }
            _ => unreachable!("slot {i} is loaded before it is changed"),
        }
    }

    fn changed(&mut self) {
        self.content_dirty = true;
        // The time of the commit becomes the file's mtime again.
        self.meta.remove(MTIME);
    }

    pub async fn write(&mut self, off: u64, data: &[u8]) -> Result<(), SdkError> {
        if off > self.size {
            self.extend_to(off).await?;
        }
        match &mut self.md5 {
            Some((h, len)) if *len == off => {
                h.update(data);
                *len += data.len() as u64;
            }
            _ => self.md5 = None,
        }
        self.changed();
        let first = if self.size == 0 {
            0
        } else {
            self.locate(off.min(self.size - 1))
        };
        let chunk = self.store.chunk_size;
        let (mut pos, mut rest) = (off, data);
        while !rest.is_empty() {
            if pos == self.size {
                let room = self.slots.last().is_some_and(|s| s.len() < chunk);
                if !room {
                    self.slots.push(Slot::Dirty {
                        buf: Arc::new(Vec::with_capacity(chunk as usize)),
                        upload: None,
                    });
                    self.starts.push(self.size);
                }
                let i = self.slots.len() - 1;
                self.load(i).await?;
                let buf = self.buf(i);
                let n = (chunk as usize - buf.len()).min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                self.size += n as u64;
                pos += n as u64;
                rest = &rest[n..];
            } else {
                let i = self.locate(pos);
                self.load(i).await?;
                let within = (pos - self.starts[i]) as usize;
                let buf = self.buf(i);
                let n = (buf.len() - within).min(rest.len());
                buf[within..within + n].copy_from_slice(&rest[..n]);
                pos += n as u64;
                rest = &rest[n..];
            }
        }
        // Slots this write went past are done with, as far as a sequential
        // writer goes: they stream to the cluster now.
        let last = self.locate(pos.saturating_sub(1));
        for i in first..last {
            if self.dirty.contains(&i) && self.slots[i].len() == chunk {
                self.start_upload(i).await?;
            }
        }
        self.relieve().await
    }

    /// Writes out changed slots when too many are held, and waits when too
    /// many writes are in flight.
    async fn relieve(&mut self) -> Result<(), SdkError> {
        while self.dirty.len() > MAX_DIRTY {
            let Some(&i) = self.dirty.iter().next() else {
                break;
            };
            self.start_upload(i).await?;
        }
        loop {
            let in_flight: Vec<usize> = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    matches!(
                        s,
                        Slot::Dirty {
                            upload: Some(_),
                            ..
                        }
                    )
                })
                .map(|(i, _)| i)
                .collect();
            if in_flight.len() <= MAX_UPLOADS {
                return Ok(());
            }
            self.finish_upload(in_flight[0]).await?;
        }
    }

    async fn staged(&mut self) -> Result<Arc<StagedWrite>, SdkError> {
        if let Some(s) = &self.staged {
            return Ok(s.clone());
        }
        let s = Arc::new(self.store.client.staged_write(&self.store.bucket).await?);
        self.staged = Some(s.clone());
        Ok(s)
    }

    async fn start_upload(&mut self, i: usize) -> Result<(), SdkError> {
        let staged = self.staged().await?;
        self.dirty.remove(&i);
        if let Slot::Dirty { buf, upload } = &mut self.slots[i]
            && upload.is_none()
        {
            let bytes = buf.as_ref().clone();
            *upload = Some(tokio::spawn(async move { staged.write_chunk(bytes).await }));
        }
        Ok(())
    }

    /// Waits for slot `i`'s write; on success it becomes a written chunk.
    async fn finish_upload(&mut self, i: usize) -> Result<(), SdkError> {
        let Slot::Dirty { upload, .. } = &mut self.slots[i] else {
            return Ok(());
        };
        let Some(handle) = upload.take() else {
            return Ok(());
        };
        let record = handle
            .await
            .map_err(|e| SdkError::Invalid(format!("chunk writer task: {e}")))?;
        match record {
            Ok(r) => {
                MountMetrics::add(&self.store.metrics.chunks_written, 1);
                MountMetrics::add(&self.store.metrics.chunk_bytes_written, r.len);
                self.slots[i] = Slot::Written(r);
                Ok(())
            }
            Err(e) => {
                self.dirty.insert(i);
                Err(e)
            }
        }
    }

    /// Grows the file with zeros.
    async fn extend_to(&mut self, new_size: u64) -> Result<(), SdkError> {
        let chunk = self.store.chunk_size;
        self.md5 = None;
        self.changed();
        while self.size < new_size {
            let room = self.slots.last().is_some_and(|s| s.len() < chunk);
            if !room {
                self.slots.push(Slot::Dirty {
                    buf: Arc::default(),
                    upload: None,
                });
                self.starts.push(self.size);
            }
            let i = self.slots.len() - 1;
            self.load(i).await?;
            let want = new_size - self.size;
            let buf = self.buf(i);
            let n = (chunk - buf.len() as u64).min(want);
            buf.resize(buf.len() + n as usize, 0);
            self.size += n;
            self.relieve().await?;
        }
        Ok(())
    }

    pub async fn truncate(&mut self, new_size: u64) -> Result<(), SdkError> {
        if new_size == self.size {
            return Ok(());
        }
        if new_size > self.size {
            return self.extend_to(new_size).await;
        }
        self.changed();
        if new_size == 0 {
            self.slots.clear();
            self.starts.clear();
            self.dirty.clear();
            self.size = 0;
            self.md5 = Some((Md5::new(), 0));
            return Ok(());
        }
        if self.md5.as_ref().is_some_and(|(_, len)| *len > new_size) {
            self.md5 = None;
        }
        let i = self.locate(new_size - 1);
        self.slots.truncate(i + 1);
        self.starts.truncate(i + 1);
        self.dirty.retain(|d| *d <= i);
        let keep = (new_size - self.starts[i]) as usize;
        if self.slots[i].len() > keep as u64 {
            self.load(i).await?;
            self.buf(i).truncate(keep);
        }
        self.size = new_size;
        Ok(())
    }

    /// Makes bytes `off..end` (within the file) read as zeros, through the
    /// chunk list: a slot wholly inside the range becomes a new slot of
    /// zeros without its old content being fetched (the old chunk is
    /// dropped from the list at the commit, garbage for the collector);
    /// the slots at the range's ends are loaded and zeroed in part. The
    /// size does not change.
    pub async fn zero_range(&mut self, off: u64, end: u64) -> Result<(), SdkError> {
        let end = end.min(self.size);
        if off >= end {
            return Ok(());
        }
        self.changed();
        self.md5 = None;
        let mut i = self.locate(off);
        while i < self.slots.len() && self.starts[i] < end {
            let start = self.starts[i];
            let len = self.slots[i].len();
            let from = off.max(start) - start;
            let to = end.min(start + len) - start;
            if from == 0 && to == len {
                // A pending upload of the old content is dropped with it.
                self.slots[i] = Slot::Dirty {
                    buf: Arc::new(vec![0; len as usize]),
                    upload: None,
                };
                self.dirty.insert(i);
            } else {
                self.load(i).await?;
                self.buf(i)[from as usize..to as usize].fill(0);
            }
            // Zeroed slots are written out as other changed slots are,
            // oldest first past MAX_DIRTY: memory stays bounded however
            // large the range.
            self.relieve().await?;
            i += 1;
        }
        Ok(())
    }

    /// Grows the file with zeros to `new_size` if it is smaller (an
    /// allocation with `fallocate` mode 0).
    pub async fn grow_to(&mut self, new_size: u64) -> Result<(), SdkError> {
        if new_size > self.size {
            self.extend_to(new_size).await?;
        }
        Ok(())
    }

    /// What a read of `len` bytes at `off` consists of, and the chunks after
    /// it worth fetching ahead. The caller fetches chunk pieces without
    /// holding the file.
    pub fn read_plan(&self, off: u64, len: u64) -> (Vec<Piece>, Vec<ChunkRecord>) {
        let end = (off + len).min(self.size);
        let mut pieces = Vec::new();
        let mut ahead = Vec::new();
        if off >= end {
            return (pieces, ahead);
        }
        let mut pos = off;
        let mut i = self.locate(off);
        while pos < end {
            let start = self.starts[i];
            let from = (pos - start) as usize;
            let to = ((end - start).min(self.slots[i].len())) as usize;
            match &self.slots[i] {
                Slot::Kept(r) | Slot::Written(r) => pieces.push(Piece::Chunk(r.clone(), from, to)),
                Slot::Dirty { buf, .. } => pieces.push(Piece::Bytes(buf[from..to].to_vec())),
            }
            pos = start + to as u64;
            i += 1;
        }
        for s in self.slots.iter().skip(i).take(2) {
            if let Slot::Kept(r) | Slot::Written(r) = s {
                ahead.push(r.clone());
            }
        }
        (pieces, ahead)
    }

    async fn contents(&self) -> Result<Vec<u8>, SdkError> {
        let (pieces, _) = self.read_plan(0, self.size);
        let mut out = Vec::with_capacity(self.size as usize);
        for p in pieces {
            match p {
                Piece::Bytes(b) => out.extend_from_slice(&b),
                Piece::Chunk(r, from, to) => {
                    out.extend_from_slice(&self.store.cache.get(&r).await?[from..to])
                }
            }
        }
        Ok(out)
    }

    /// Makes what was written durable as `key`: one meta command that
    /// keeps every chunk not touched. Returns the new version, or `None`
    /// when there was nothing to commit. `if_absent`: the commit creates
    /// the object and is refused (`PreconditionFailed`) if `key` exists.
    pub async fn commit(
        &mut self,
        key: &str,
        if_absent: bool,
    ) -> Result<Option<ObjectInfo>, SdkError> {
        if !self.is_dirty() {
            return Ok(None);
        }
        match self.try_commit(key, if_absent).await {
            Err(e) if e.code() == Some(ErrorCode::Conflict) && self.content_dirty => {
                // Someone replaced the object meanwhile: the chunks kept
                // from the old version are not its chunks any more. Last
                // writer wins, as on a local file system: store them anew.
                tracing::info!(key, "object changed under an open file; rewriting it whole");
                for i in 0..self.slots.len() {
                    if matches!(self.slots[i], Slot::Kept(_)) {
                        self.load(i).await?;
                        self.dirty.insert(i);
                    }
                }
                self.try_commit(key, if_absent).await
            }
            other => other,
        }
    }

    async fn try_commit(
        &mut self,
        key: &str,
        if_absent: bool,
    ) -> Result<Option<ObjectInfo>, SdkError> {
        let store = self.store.clone();
        let (data, chunks, etag) = if !self.content_dirty {
            (self.info.data.clone(), Vec::new(), self.info.etag.clone())
        } else if self.size <= store.inline_limit && self.size < store.chunk_size {
            let bytes = self.contents().await?;
            let etag = md5_hex(&bytes);
            (ObjectData::Inline(bytes), Vec::new(), etag)
        } else {
            for i in 0..self.slots.len() {
                if matches!(self.slots[i], Slot::Dirty { upload: None, .. }) {
                    self.start_upload(i).await?;
                }
            }
            for i in 0..self.slots.len() {
                self.finish_upload(i).await?;
            }
            let mut refs = Vec::with_capacity(self.slots.len());
            let mut chunks = Vec::new();
            for s in &self.slots {
                match s {
                    Slot::Kept(r) => refs.push(ChunkRef {
                        id: r.id,
                        len: r.len,
                    }),
                    Slot::Written(r) => {
                        refs.push(ChunkRef {
                            id: r.id,
                            len: r.len,
                        });
                        chunks.push(r.clone());
                    }
                    Slot::Dirty { .. } => {
                        return Err(SdkError::Invalid("a slot was not written".into()));
                    }
                }
            }
            let etag = match &self.md5 {
                Some((h, len)) if *len == self.size => hex::encode(h.clone().finalize()),
                _ => chunk_etag(&refs),
            };
            (ObjectData::Chunks(refs), chunks, etag)
        };
        let headers = if self.content_dirty {
            // Checksums S3 clients sent describe the old content.
            ObjectHeaders {
                checksums: BTreeMap::new(),
                ..self.info.headers.clone()
            }
        } else {
            self.info.headers.clone()
        };
        let object = NewObject {
            size: self.size,
            etag,
            content_type: self.info.content_type.clone(),
            user_meta: self.meta.clone(),
            headers,
            data,
            chunks,
        };
        let info = store
            .client
            .patch_object(
                &store.bucket,
                key,
                object,
                self.staged.as_deref(),
                if_absent,
            )
            .await?;
        for s in &mut self.slots {
            if let Slot::Written(r) = s {
                *s = Slot::Kept(r.clone());
            }
        }
        self.dirty.clear();
        self.content_dirty = false;
        self.meta_dirty = false;
        self.info = info.clone();
        Ok(Some(info))
    }
}

/// The ETag of content that was changed in place: not an MD5 (computing one
/// would read the whole file), and shaped like a multipart ETag so that S3
/// clients do not check it as one.
fn chunk_etag(refs: &[ChunkRef]) -> String {
    let mut h = Md5::new();
    for r in refs {
        h.update(r.id.0);
        h.update(r.len.to_be_bytes());
    }
    format!("{}-{}", hex::encode(h.finalize()), refs.len().max(1))
}

/// The ETag S3 clients expect of content written in one piece.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// The records of an object's chunks, by id, for `OpenFile::new`.
pub async fn records_of(client: &Client, info: &ObjectInfo) -> Result<Vec<ChunkRecord>, SdkError> {
    let records = client.chunk_records(info).await?;
    if let ObjectData::Chunks(refs) = &info.data {
        let by_id: HashMap<_, _> = records.iter().map(|r| (r.id, r)).collect();
        if refs.iter().any(|r| !by_id.contains_key(&r.id)) {
            return Err(SdkError::Invalid(format!(
                "chunk records of {} are missing",
                info.key
            )));
        }
    }
    Ok(records)
}
