//! The FUSE operations. Each request is answered from a task on the tokio
//! runtime, so slow cluster calls never hold the kernel's other requests up;
//! per-file state is behind one async lock per open file.
//!
//! A file created here is pending until its first commit (close, fsync):
//! meta has no object for it yet, so creating a small file costs one
//! synced meta command, not two. Inside the mount it is a file like any
//! other (lookup, readdir, rename, unlink see it); other clients see it
//! after close (close-to-open), and a crash before then loses it.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, IoctlFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, PollEvents,
    PollFlags, PollNotifier, RenameFlags, ReplyAttr, ReplyBmap, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLock, ReplyLseek,
    ReplyOpen, ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr, Request, SessionUnmounter,
    TimeOrNow, WriteFlags,
};
use tessera_proto::{DirInfo, ErrorCode, Found, ObjectData, ObjectInfo, Permission};
use tessera_sdk::{Client, SdkError};
use tokio::sync::Mutex as AsyncMutex;
use tracing::{debug, info, warn};

use crate::attrs::{
    self, Defaults, GID, KEY_MAX, MODE, MTIME, NAME_MAX, S_IFLNK, S_IFMT, S_IFREG, UID, errno,
};
use crate::cache::ChunkCache;
use crate::file::{FileStore, OpenFile, Piece, md5_hex, records_of};
use crate::inodes::{Inodes, ROOT, child, parent_of};
use crate::metrics::MountMetrics;

/// How long the kernel may trust attributes and names without asking.
const TTL: Duration = Duration::from_secs(1);
/// Names fetched per directory page: one consistent view each.
const DIR_PAGE: u32 = 10_000;
/// Chunks the mount keeps decoded for readers.
const CACHE_CHUNKS: usize = 24;
/// Free names remembered for `create` (see `Inner::absent`).
const ABSENT_MAX: usize = 4096;

/// What a mount serves and how.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub bucket: String,
    /// Empty, or a key prefix ending in `/`: the mount's root.
    pub prefix: String,
    pub read_only: bool,
    /// Owner of files and directories that record none.
    pub uid: u32,
    pub gid: u32,
    /// An S3 access key whose grant on the bucket limits what the mount
    /// may do (re-read every 10 s); `None`: the cluster certificate's full
    /// access.
    pub access_key: Option<String>,
}

pub(crate) struct Inner {
    cfg: MountConfig,
    client: Client,
    store: Arc<FileStore>,
    inodes: Mutex<Inodes>,
    handles: Mutex<HashMap<u64, Arc<OpenHandle>>>,
    dirs: Mutex<HashMap<u64, Arc<AsyncMutex<DirStream>>>>,
    next_fh: AtomicU64,
    /// The access key's permission, when the mount has one.
    pub(crate) grant: Mutex<Option<Permission>>,
    statfs: Mutex<Option<(Instant, [u64; 3])>>,
    pub(crate) metrics: Arc<MountMetrics>,
    /// Held to read while a path is turned into a cluster call, and to
    /// write by a rename from its meta command until the inode table
    /// follows: otherwise a listing could ask for a name meta already
    /// moved (and see it empty), or a lookup give the moved directory a
    /// second inode.
    names: tokio::sync::RwLock<()>,
    /// Names meta just said are free, and when: the kernel looks a name
    /// up right before it creates it (in the same open(2)), so `create`
    /// trusts that answer instead of asking again. Bounded by
    /// `ABSENT_MAX`; entries older than `TTL` are not trusted.
    absent: Mutex<HashMap<String, Instant>>,
    /// The root's mtime when the prefix has no entry of its own.
    started_ms: u64,
    /// Kinds of kernel request this mount does not implement that it has
    /// logged already: each is said once, not at every `lsattr`.
    said_unimplemented: Mutex<HashSet<&'static str>>,
}

struct OpenHandle {
    ino: u64,
    file: Arc<AsyncMutex<OpenFile>>,
    writable: bool,
    /// Where the last read ended: reads that continue it fetch ahead.
    read_end: AtomicU64,
}

struct DirStream {
    ino: u64,
    /// One page of names: entry `i` of the stream is `buf[i - start]`.
    buf: Vec<(String, bool)>,
    start: u64,
    /// Where the next page starts, relative to the directory (so that it
    /// stays right when the directory is renamed meanwhile).
    next: Option<String>,
    fetched: bool,
}

pub struct TesseraFs {
    pub(crate) inner: Arc<Inner>,
    rt: tokio::runtime::Handle,
    /// The session's unmounter, once the session exists (see `destroy`).
    pub(crate) unmounter: Arc<Mutex<Option<SessionUnmounter>>>,
    pub(crate) mountpoint: PathBuf,
}

type Res<T> = Result<T, Errno>;

fn name_of(name: &OsStr) -> Res<&str> {
    let name = name.to_str().ok_or(Errno::EINVAL)?;
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if name.is_empty() || name.contains('/') {
        return Err(Errno::EINVAL);
    }
    Ok(name)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn time_of(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// A stable number for a name listed but never looked up (readdir must
/// give one; programs that use it stat the name anyway). High bit set, so
/// it never equals a number the table hands out.
fn listed_ino(path: &str) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    path.hash(&mut h);
    h.finish() | (1 << 63)
}

impl TesseraFs {
    pub async fn new(client: Client, cfg: MountConfig) -> Result<Self, SdkError> {
        let map = client.cluster_map().await?;
        let metrics = Arc::new(MountMetrics::default());
        let store = Arc::new(FileStore {
            metrics: metrics.clone(),
            cache: Arc::new(ChunkCache::new(client.clone(), CACHE_CHUNKS)),
            client: client.clone(),
            bucket: cfg.bucket.clone(),
            chunk_size: client.chunk_size() as u64,
            inline_limit: map.inline_limit as u64,
        });
        let inner = Arc::new(Inner {
            cfg,
            client,
            store,
            inodes: Mutex::new(Inodes::default()),
            handles: Mutex::default(),
            dirs: Mutex::default(),
            next_fh: AtomicU64::new(1),
            grant: Mutex::new(None),
            statfs: Mutex::new(None),
            metrics,
            names: tokio::sync::RwLock::new(()),
            absent: Mutex::default(),
            started_ms: now_ms(),
            said_unimplemented: Mutex::default(),
        });
        inner.refresh_grant().await?;
        Ok(TesseraFs {
            inner,
            rt: tokio::runtime::Handle::current(),
            unmounter: Arc::default(),
            mountpoint: PathBuf::new(),
        })
    }
}

impl Inner {
    fn lock_inodes(&self) -> std::sync::MutexGuard<'_, Inodes> {
        self.inodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        }
    }

    fn key(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.prefix)
    }

    /// The prefix of directory `path` (`a/b/` for `a/b`; the mount's prefix
    /// for its root).
    fn dir_key(&self, path: &str) -> String {
        if path.is_empty() {
            self.cfg.prefix.clone()
        } else {
            format!("{}{path}/", self.cfg.prefix)
        }
    }

    /// The directory a removal or rename must keep, if any.
    fn keep(&self, parent: &str) -> Option<String> {
        Some(self.dir_key(parent)).filter(|k| !k.is_empty())
    }

    fn path(&self, ino: u64) -> Res<(String, bool)> {
        self.lock_inodes()
            .get(ino)
            .map(|n| (n.path.clone(), n.dir))
            .ok_or(Errno::ENOENT)
    }

    fn child_path(&self, parent: u64, name: &OsStr) -> Res<String> {
        let name = name_of(name)?;
        let (p, dir) = self.path(parent)?;
        if !dir {
            return Err(Errno::ENOTDIR);
        }
        let path = child(&p, name);
        // A directory's entry adds a '/': meta refuses one over the limit.
        if self.key(&path).len() > KEY_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        Ok(path)
    }

    async fn refresh_grant(&self) -> Result<(), SdkError> {
        let Some(key) = &self.cfg.access_key else {
            return Ok(());
        };
        let grants = self
            .client
            .grants(Some(&self.cfg.bucket), Some(key))
            .await?;
        let best = grants.iter().map(|g| g.permission).max();
        *self.grant.lock().unwrap_or_else(|p| p.into_inner()) = best;
        Ok(())
    }

    fn may(&self, need: Permission) -> Res<()> {
        if need >= Permission::Write && self.cfg.read_only {
            return Err(Errno::EROFS);
        }
        if self.cfg.access_key.is_none() {
            return Ok(());
        }
        let have = *self.grant.lock().unwrap_or_else(|p| p.into_inner());
        match have {
            Some(p) if p >= need => Ok(()),
            _ => Err(Errno::EACCES),
        }
    }

    /// An open file's attributes: its unsaved size and attributes count.
    fn open_attr(&self, ino: u64, f: &OpenFile) -> FileAttr {
        attrs::file_attr(ino, f.size(), f.info.mtime_ms, &f.meta, self.defaults())
    }

    /// The number `path` gets, counting one more kernel reference, and
    /// its open file if it has one.
    fn remember_file(&self, path: &str) -> (u64, Option<Arc<AsyncMutex<OpenFile>>>) {
        let mut t = self.lock_inodes();
        let ino = t.remember(path, false);
        (ino, t.get(ino).and_then(|n| n.file.clone()))
    }

    async fn lookup(&self, parent: u64, name: &OsStr) -> Res<FileAttr> {
        self.may(Permission::Read)?;
        let names = self.names.read().await;
        let path = self.child_path(parent, name)?;
        // An open file's lock is taken only after the names are let go: a
        // commit holds its file while it waits for them, and a rename
        // waiting to write them would otherwise close the circle.
        let pending = self.lock_inodes().pending(&path).is_some();
        if pending && let (ino, Some(file)) = self.remember_file(&path) {
            // Pending in this mount: meta does not know it yet.
            drop(names);
            return Ok(self.open_attr(ino, &*file.lock().await));
        }
        let found = self
            .client
            .lookup(&self.cfg.bucket, &self.key(&path))
            .await
            .map_err(|e| errno(&e))?;
        self.note_absent(&path, matches!(found, Found::Nothing));
        match found {
            Found::Nothing => Err(Errno::ENOENT),
            Found::Dir(info) => {
                let ino = self.lock_inodes().remember(&path, true);
                Ok(attrs::dir_attr(ino, info.as_ref(), self.defaults()))
            }
            Found::Object(o) => {
                let (ino, file) = self.remember_file(&path);
                drop(names);
                Ok(match file {
                    Some(f) => self.open_attr(ino, &*f.lock().await),
                    None => attrs::object_attr(ino, &o, self.defaults()),
                })
            }
        }
    }

    /// Remembers whether meta just said `path` is free.
    fn note_absent(&self, path: &str, free: bool) {
        let mut absent = self.absent.lock().unwrap_or_else(|p| p.into_inner());
        if !free {
            absent.remove(path);
            return;
        }
        if absent.len() >= ABSENT_MAX {
            absent.retain(|_, at| at.elapsed() < TTL);
            if absent.len() >= ABSENT_MAX {
                absent.clear();
            }
        }
        absent.insert(path.to_string(), Instant::now());
    }

    /// Whether meta said `path` was free within `TTL` (once: the answer is
    /// used up).
    fn take_absent(&self, path: &str) -> bool {
        self.absent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path)
            .is_some_and(|at| at.elapsed() < TTL)
    }

    /// Refuses a new name that a pending file of this mount holds.
    fn refuse_pending(&self, path: &str) -> Res<()> {
        match self.lock_inodes().pending(path) {
            Some(_) => Err(Errno::EEXIST),
            None => Ok(()),
        }
    }

    async fn getattr(&self, ino: u64) -> Res<FileAttr> {
        self.may(Permission::Read)?;
        let names = self.names.read().await;
        let (path, _) = self.path(ino)?;
        if ino == ROOT {
            let info = DirInfo {
                mtime_ms: self.started_ms,
                ..DirInfo::default()
            };
            return Ok(attrs::dir_attr(ROOT, Some(&info), self.defaults()));
        }
        let file = self.lock_inodes().get(ino).and_then(|n| n.file.clone());
        if let Some(f) = file {
            // Not holding the names (see `lookup`).
            drop(names);
            return Ok(self.open_attr(ino, &*f.lock().await));
        }
        let found = self
            .client
            .lookup(&self.cfg.bucket, &self.key(&path))
            .await
            .map_err(|e| errno(&e))?;
        match found {
            Found::Nothing => Err(Errno::ENOENT),
            Found::Dir(info) => Ok(attrs::dir_attr(ino, info.as_ref(), self.defaults())),
            Found::Object(o) => Ok(attrs::object_attr(ino, &o, self.defaults())),
        }
    }

    /// The open state of file `ino`, shared with its other handles, or a
    /// fresh one from the cluster (close-to-open: every first open looks).
    async fn open_file(&self, ino: u64) -> Res<(Arc<AsyncMutex<OpenFile>>, bool)> {
        let _names = self.names.read().await;
        let (path, dir) = self.path(ino)?;
        if dir {
            return Err(Errno::EISDIR);
        }
        {
            let mut t = self.lock_inodes();
            if let Some(n) = t.get_mut(ino)
                && let Some(f) = &n.file
            {
                n.opens += 1;
                return Ok((f.clone(), true));
            }
        }
        let found = self
            .client
            .lookup(&self.cfg.bucket, &self.key(&path))
            .await
            .map_err(|e| errno(&e))?;
        let info = match found {
            Found::Object(o) => *o,
            Found::Dir(_) => return Err(Errno::EISDIR),
            Found::Nothing => return Err(Errno::ENOENT),
        };
        // Stored with S3 server-side encryption: the bytes are ciphertext
        // and the key is the S3 gateway's (or its client's), never the
        // mount's. Refused rather than shown as garbage or overwritten.
        if info.headers.encryption.is_some() {
            return Err(Errno::EACCES);
        }
        let records = records_of(&self.client, &info)
            .await
            .map_err(|e| errno(&e))?;
        let version = (info.etag.clone(), info.mtime_ms);
        let file = Arc::new(AsyncMutex::new(OpenFile::new(
            self.store.clone(),
            info,
            records,
        )));
        let mut t = self.lock_inodes();
        let n = t.get_mut(ino).ok_or(Errno::ENOENT)?;
        if let Some(f) = &n.file {
            // Another open won the race: share its state.
            n.opens += 1;
            return Ok((f.clone(), true));
        }
        let unchanged = n.version.as_ref() == Some(&version);
        n.version = Some(version);
        n.file = Some(file.clone());
        n.opens += 1;
        Ok((file, unchanged))
    }

    fn add_handle(&self, ino: u64, file: Arc<AsyncMutex<OpenFile>>, writable: bool) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let h = Arc::new(OpenHandle {
            ino,
            file,
            writable,
            read_end: AtomicU64::new(u64::MAX),
        });
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, h);
        fh
    }

    fn handle(&self, fh: u64) -> Res<Arc<OpenHandle>> {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    async fn open(&self, ino: u64, flags: OpenFlags) -> Res<(u64, FopenFlags)> {
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        self.may(if writable {
            Permission::Write
        } else {
            Permission::Read
        })?;
        let (file, unchanged) = self.open_file(ino).await?;
        let fh = self.add_handle(ino, file, writable);
        let flags = if unchanged {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        Ok((fh, flags))
    }

    async fn create(
        &self,
        req_uid: u32,
        req_gid: u32,
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> Res<(FileAttr, u64)> {
        self.may(Permission::Write)?;
        let names = self.names.read().await;
        let path = self.child_path(parent, name)?;
        // O_EXCL, as far as a read can tell: the kernel creates only a
        // name it has just looked up and found free (in the same open(2),
        // so that answer is used when it is fresh), but another client
        // may have taken it since. The commit at close checks again, in
        // the same step as it writes.
        self.refuse_pending(&path)?;
        let key = self.key(&path);
        if !self.take_absent(&path) {
            match self
                .client
                .lookup(&self.cfg.bucket, &key)
                .await
                .map_err(|e| errno(&e))?
            {
                Found::Nothing => {}
                Found::Object(_) | Found::Dir(_) => return Err(Errno::EEXIST),
            }
        }
        let mut meta = std::collections::BTreeMap::new();
        meta.insert(MODE.to_string(), format!("{:o}", S_IFREG | (mode & 0o7777)));
        self.owner_meta(&mut meta, req_uid, req_gid);
        let info = ObjectInfo {
            key,
            size: 0,
            etag: md5_hex(b""),
            content_type: None,
            user_meta: meta,
            headers: Default::default(),
            mtime_ms: now_ms(),
            data: ObjectData::Inline(Vec::new()),
            parts: Vec::new(),
            version_id: None,
            part_checksums: Vec::new(),
        };
        let file = Arc::new(AsyncMutex::new(OpenFile::new_pending(
            self.store.clone(),
            info,
        )));
        let ino = {
            let mut t = self.lock_inodes();
            if t.pending(&path).is_some() {
                // Another create of the same name in this mount won.
                return Err(Errno::EEXIST);
            }
            let ino = t.remember(&path, false);
            if let Some(n) = t.get_mut(ino) {
                n.file = Some(file.clone());
                n.opens += 1;
                n.unlinked = false;
                n.pending = true;
                n.version = None;
            }
            ino
        };
        drop(names);
        let fh = self.add_handle(ino, file.clone(), true);
        Ok((self.open_attr(ino, &*file.lock().await), fh))
    }

    /// Records an owner only when it differs from the mount's default.
    fn owner_meta(
        &self,
        meta: &mut std::collections::BTreeMap<String, String>,
        uid: u32,
        gid: u32,
    ) {
        if uid != self.cfg.uid {
            meta.insert(UID.to_string(), uid.to_string());
        }
        if gid != self.cfg.gid {
            meta.insert(GID.to_string(), gid.to_string());
        }
    }

    async fn read(&self, fh: u64, off: u64, size: u32) -> Res<Vec<u8>> {
        self.may(Permission::Read)?;
        let h = self.handle(fh)?;
        let (pieces, ahead) = h.file.lock().await.read_plan(off, size as u64);
        let sequential = h.read_end.swap(off + size as u64, Ordering::Relaxed) == off;
        if sequential {
            for r in ahead {
                self.store.cache.prefetch(r);
            }
        }
        let mut out = Vec::with_capacity(size as usize);
        for p in pieces {
            match p {
                Piece::Bytes(b) => out.extend_from_slice(&b),
                Piece::Chunk(r, from, to) => {
                    let bytes = self.store.cache.get(&r).await.map_err(|e| {
                        warn!(chunk = %r.id, error = %e, "read failed");
                        Errno::EIO
                    })?;
                    out.extend_from_slice(&bytes[from..to]);
                }
            }
        }
        MountMetrics::add(&self.metrics.read_bytes, out.len() as u64);
        Ok(out)
    }

    async fn write(&self, fh: u64, off: u64, data: &[u8]) -> Res<u32> {
        self.may(Permission::Write)?;
        let h = self.handle(fh)?;
        if !h.writable {
            return Err(Errno::EBADF);
        }
        h.file
            .lock()
            .await
            .write(off, data)
            .await
            .map_err(|e| errno(&e))?;
        MountMetrics::add(&self.metrics.written_bytes, data.len() as u64);
        Ok(data.len() as u32)
    }

    /// fallocate(2) on an open file, as `libc::FALLOC_FL_*` `mode` says:
    /// 0 grows the file with zeros to `off + len` (there is nothing to
    /// reserve: chunks are written at commit); `KEEP_SIZE` alone changes
    /// nothing; `PUNCH_HOLE | KEEP_SIZE` and `ZERO_RANGE` (with or without
    /// `KEEP_SIZE`) make the range read as zeros through the chunk list,
    /// and `ZERO_RANGE` without `KEEP_SIZE` grows the file as mode 0 does.
    /// Every other mode (`COLLAPSE_RANGE`, `INSERT_RANGE`, `UNSHARE_RANGE`,
    /// ...) is `EOPNOTSUPP`: never ENOSYS, after which the kernel would
    /// stop sending the modes that work.
    async fn fallocate(&self, fh: u64, off: u64, len: u64, mode: i32) -> Res<()> {
        const KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE;
        const ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE;
        let keep = mode & KEEP_SIZE != 0;
        let zero = match mode & !KEEP_SIZE {
            0 => false,
            PUNCH_HOLE if keep => true,
            ZERO_RANGE => true,
            _ => return Err(Errno::EOPNOTSUPP),
        };
        self.may(Permission::Write)?;
        let h = self.handle(fh)?;
        if !h.writable {
            return Err(Errno::EBADF);
        }
        let end = off.checked_add(len).ok_or(Errno::EFBIG)?;
        let mut f = h.file.lock().await;
        if zero {
            f.zero_range(off, end).await.map_err(|e| errno(&e))?;
        }
        if !keep {
            f.grow_to(end).await.map_err(|e| errno(&e))?;
        }
        Ok(())
    }

    /// Logs, the first time only, that the kernel sent a request of kind
    /// `op` this mount does not implement.
    fn not_implemented(&self, op: &'static str, answer: Errno) {
        let first = self
            .said_unimplemented
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(op);
        if first {
            info!(
                request = op,
                answer = %std::io::Error::from_raw_os_error(i32::from(answer)),
                "kernel request not implemented by this mount (said once per kind of request)"
            );
        }
    }

    /// Commits an open file under its current name, unless it was removed.
    async fn commit(&self, ino: u64, file: &Arc<AsyncMutex<OpenFile>>) -> Res<()> {
        let mut f = file.lock().await;
        if !f.is_dirty() {
            return Ok(());
        }
        let _names = self.names.read().await;
        let (path, unlinked, pending) = {
            let t = self.lock_inodes();
            let n = t.get(ino).ok_or(Errno::ENOENT)?;
            (n.path.clone(), n.unlinked, n.pending)
        };
        if unlinked {
            return Ok(());
        }
        // A pending file's first commit creates the object, and only if
        // no other client created that name since: never overwrite a file
        // this mount did not know about.
        let info = f.commit(&self.key(&path), pending).await.map_err(|e| {
            if pending && e.code() == Some(ErrorCode::PreconditionFailed) {
                warn!(
                    path,
                    "another client created this name before the new file was closed: not stored"
                );
            } else {
                warn!(path, error = %e, "commit failed");
            }
            errno(&e)
        })?;
        if info.is_some() {
            MountMetrics::add(&self.metrics.commits, 1);
        }
        if let Some(n) = self.lock_inodes().get_mut(ino) {
            n.pending = false;
            if let Some(info) = info {
                n.version = Some((info.etag, info.mtime_ms));
            }
        }
        Ok(())
    }

    async fn flush(&self, fh: u64) -> Res<()> {
        let h = self.handle(fh)?;
        self.commit(h.ino, &h.file).await
    }

    async fn release(&self, fh: u64) -> Res<()> {
        let h = self.handle(fh)?;
        let result = self.commit(h.ino, &h.file).await;
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
        self.lock_inodes().closed(h.ino);
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        mtime: Option<TimeOrNow>,
    ) -> Res<FileAttr> {
        self.may(Permission::Write)?;
        let (path, dir) = self.path(ino)?;
        if dir {
            if size.is_some() {
                return Err(Errno::EISDIR);
            }
            let key = self.dir_key(&path);
            if key.is_empty() {
                return Err(Errno::EPERM);
            }
            let current = match self
                .client
                .lookup(&self.cfg.bucket, key.trim_end_matches('/'))
                .await
                .map_err(|e| errno(&e))?
            {
                Found::Dir(info) => info.unwrap_or_default(),
                _ => return Err(Errno::ENOENT),
            };
            let info = DirInfo {
                mode: mode.map(|m| m & 0o7777).or(current.mode),
                uid: uid.or(current.uid),
                gid: gid.or(current.gid),
                mtime_ms: match mtime {
                    Some(t) => time_of(t)
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                    None => current.mtime_ms,
                },
            };
            self.client
                .put_dir(&self.cfg.bucket, &key, info, false)
                .await
                .map_err(|e| errno(&e))?;
            return Ok(attrs::dir_attr(ino, Some(&info), self.defaults()));
        }
        let (file, _) = self.open_file(ino).await?;
        let result = async {
            {
                let mut f = file.lock().await;
                if let Some(size) = size {
                    f.truncate(size).await.map_err(|e| errno(&e))?;
                }
                if let Some(mode) = mode {
                    let kind = attrs::object_mode(&f.meta) & S_IFMT;
                    f.set_meta(MODE, Some(format!("{:o}", kind | (mode & 0o7777))));
                }
                if let Some(uid) = uid {
                    f.set_meta(UID, Some(uid.to_string()));
                }
                if let Some(gid) = gid {
                    f.set_meta(GID, Some(gid.to_string()));
                }
                if let Some(t) = mtime {
                    f.set_meta(MTIME, Some(attrs::time_text(time_of(t))));
                }
            }
            // A pending file keeps the change for its first commit.
            let pending = self.lock_inodes().get(ino).is_some_and(|n| n.pending);
            if !pending {
                self.commit(ino, &file).await?;
            }
            Ok(self.open_attr(ino, &*file.lock().await))
        }
        .await;
        // Undoes `open_file`'s count: the change was made without a handle.
        self.lock_inodes().closed(ino);
        result
    }

    async fn mkdir(
        &self,
        uid: u32,
        gid: u32,
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> Res<FileAttr> {
        self.may(Permission::Write)?;
        let path = self.child_path(parent, name)?;
        self.refuse_pending(&path)?;
        self.note_absent(&path, false);
        let info = DirInfo {
            mode: Some(mode & 0o7777),
            uid: (uid != self.cfg.uid).then_some(uid),
            gid: (gid != self.cfg.gid).then_some(gid),
            mtime_ms: now_ms(),
        };
        self.client
            .put_dir(&self.cfg.bucket, &self.dir_key(&path), info, true)
            .await
            .map_err(|e| errno(&e))?;
        let ino = self.lock_inodes().remember(&path, true);
        Ok(attrs::dir_attr(ino, Some(&info), self.defaults()))
    }

    async fn unlink(&self, parent: u64, name: &OsStr) -> Res<()> {
        self.may(Permission::Write)?;
        let path = self.child_path(parent, name)?;
        if self.lock_inodes().pending(&path).is_some() {
            // Meta has nothing to remove: the file just must never be
            // committed. Holding the names to write waits for a commit of
            // it already under way, so it is either done (and removed
            // below like any file) or never starts.
            let _names = self.names.write().await;
            let path = self.child_path(parent, name)?;
            let mut t = self.lock_inodes();
            if t.pending(&path).is_some() {
                t.removed(&path);
                return Ok(());
            }
        }
        let path = self.child_path(parent, name)?;
        let keep = self.keep(parent_of(&path));
        self.client
            .unlink(&self.cfg.bucket, &self.key(&path), keep.as_deref())
            .await
            .map_err(|e| errno(&e))?;
        self.lock_inodes().removed(&path);
        Ok(())
    }

    async fn rmdir(&self, parent: u64, name: &OsStr) -> Res<()> {
        self.may(Permission::Write)?;
        let path = self.child_path(parent, name)?;
        {
            // Meta cannot see files pending in this mount.
            let t = self.lock_inodes();
            if t.pending(&path).is_some() {
                return Err(Errno::ENOTDIR);
            }
            if t.pending_under(&path) {
                return Err(Errno::ENOTEMPTY);
            }
        }
        let keep = self.keep(parent_of(&path));
        match self
            .client
            .remove_dir(&self.cfg.bucket, &self.dir_key(&path), keep.as_deref())
            .await
        {
            Ok(()) => {}
            Err(e) if e.code() == Some(tessera_proto::ErrorCode::NoSuchKey) => {
                // No entry: a file by that name is "not a directory".
                return match self.client.lookup(&self.cfg.bucket, &self.key(&path)).await {
                    Ok(Found::Object(_)) => Err(Errno::ENOTDIR),
                    _ => Err(Errno::ENOENT),
                };
            }
            Err(e) => return Err(errno(&e)),
        }
        self.lock_inodes().removed(&path);
        Ok(())
    }

    async fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Res<()> {
        self.may(Permission::Write)?;
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return Err(Errno::EINVAL);
        }
        // A pending file renamed over an existing file is committed first
        // (then it is a file like any other), so that the replacement is
        // still one meta command: the old file until then, the new after.
        while let Some((ino, file)) = self
            .rename_once(parent, name, newparent, newname, flags)
            .await?
        {
            self.commit(ino, &file).await?;
        }
        Ok(())
    }

    /// One attempt of `rename`: `Some` is a pending file to commit before
    /// trying again.
    async fn rename_once(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Res<Option<(u64, Arc<AsyncMutex<OpenFile>>)>> {
        let _names = self.names.write().await;
        let from = self.child_path(parent, name)?;
        let to = self.child_path(newparent, newname)?;
        if from == to {
            return Ok(None);
        }
        let (src_pending, dst_pending) = {
            let t = self.lock_inodes();
            (t.pending(&from), t.pending(&to))
        };
        let bucket = &self.cfg.bucket;
        let src_dir = match src_pending {
            Some(_) => false,
            None => match self
                .client
                .lookup(bucket, &self.key(&from))
                .await
                .map_err(|e| errno(&e))?
            {
                Found::Nothing => return Err(Errno::ENOENT),
                Found::Dir(_) => true,
                Found::Object(_) => false,
            },
        };
        let dst = match dst_pending {
            Some(_) => Found::Nothing,
            None => self
                .client
                .lookup(bucket, &self.key(&to))
                .await
                .map_err(|e| errno(&e))?,
        };
        match (&dst, src_dir) {
            (Found::Nothing, _) if dst_pending.is_none() => {}
            _ if flags.contains(RenameFlags::RENAME_NOREPLACE) => return Err(Errno::EEXIST),
            (Found::Nothing, true) => return Err(Errno::ENOTDIR),
            (Found::Object(_), true) => return Err(Errno::ENOTDIR),
            (Found::Dir(_), false) => return Err(Errno::EISDIR),
            // Meta would take it for empty.
            (Found::Dir(_), true) if self.lock_inodes().pending_under(&to) => {
                return Err(Errno::ENOTEMPTY);
            }
            _ => {}
        }
        if let Some(ino) = src_pending {
            if matches!(dst, Found::Object(_)) {
                let file = self
                    .lock_inodes()
                    .get(ino)
                    .and_then(|n| n.file.clone())
                    .ok_or(Errno::ENOENT)?;
                return Ok(Some((ino, file)));
            }
            // Meta holds nothing under either name: the file moves in this
            // mount only (a pending file at `to` is replaced, never
            // committed).
            self.note_absent(&to, false);
            self.lock_inodes().renamed(&from, &to);
            return Ok(None);
        }
        let keep = self.keep(parent_of(&from));
        let (from_key, to_key) = if src_dir {
            if to.starts_with(&format!("{from}/")) {
                return Err(Errno::EINVAL);
            }
            (self.dir_key(&from), self.dir_key(&to))
        } else {
            (self.key(&from), self.key(&to))
        };
        self.client
            .rename_keeping(bucket, &from_key, &to_key, true, keep.as_deref())
            .await
            .map_err(|e| errno(&e))?;
        // A pending file at `to` is replaced: `renamed` marks it removed.
        self.note_absent(&to, false);
        self.lock_inodes().renamed(&from, &to);
        Ok(None)
    }

    async fn symlink(
        &self,
        uid: u32,
        gid: u32,
        parent: u64,
        name: &OsStr,
        target: &Path,
    ) -> Res<FileAttr> {
        self.may(Permission::Write)?;
        let path = self.child_path(parent, name)?;
        self.refuse_pending(&path)?;
        self.note_absent(&path, false);
        let target = target.to_str().ok_or(Errno::EINVAL)?.as_bytes().to_vec();
        if target.len() as u64 > self.store.inline_limit {
            return Err(Errno::ENAMETOOLONG);
        }
        let mut meta = std::collections::BTreeMap::new();
        meta.insert(MODE.to_string(), format!("{:o}", S_IFLNK | 0o777));
        self.owner_meta(&mut meta, uid, gid);
        let object = tessera_proto::NewObject {
            size: target.len() as u64,
            etag: md5_hex(&target),
            content_type: None,
            user_meta: meta,
            headers: Default::default(),
            data: ObjectData::Inline(target),
            chunks: Vec::new(),
        };
        let info = self
            .client
            .patch_object(&self.cfg.bucket, &self.key(&path), object, None, true)
            .await
            .map_err(|e| errno(&e))?;
        let ino = self.lock_inodes().remember(&path, false);
        Ok(attrs::object_attr(ino, &info, self.defaults()))
    }

    async fn readlink(&self, ino: u64) -> Res<Vec<u8>> {
        self.may(Permission::Read)?;
        let (path, _) = self.path(ino)?;
        let info = match self
            .client
            .lookup(&self.cfg.bucket, &self.key(&path))
            .await
            .map_err(|e| errno(&e))?
        {
            Found::Object(o) => o,
            _ => return Err(Errno::ENOENT),
        };
        if !attrs::is_symlink(&info.user_meta) {
            return Err(Errno::EINVAL);
        }
        match info.data {
            ObjectData::Inline(b) => Ok(b),
            ObjectData::Chunks(_) => {
                let mut out = Vec::new();
                self.client
                    .read_object(&info, None, &mut out)
                    .await
                    .map_err(|e| errno(&e))?;
                Ok(out)
            }
        }
    }

    /// Total and free 4 KiB blocks, and the bucket's data fraction, from
    /// the cluster map (cached for 5 s).
    async fn statfs(&self) -> Res<[u64; 3]> {
        if let Some((at, v)) = *self.statfs.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < Duration::from_secs(5)
        {
            return Ok(v);
        }
        let map = self
            .client
            .cluster_map_fresh()
            .await
            .map_err(|e| errno(&e))?;
        let policy = self
            .client
            .bucket(&self.cfg.bucket)
            .await
            .map_err(|e| errno(&e))?
            .policy;
        let (mut cap, mut used) = (0u64, 0u64);
        for n in map.nodes.iter().filter(|n| n.writable()) {
            cap += n.capacity;
            used += n.used.min(n.capacity);
        }
        // What the bucket's policy turns raw bytes into.
        let (data, all) = (policy.required() as u64, policy.fragments() as u64);
        let blocks = cap / all * data / 4096;
        let free = (cap - used) / all * data / 4096;
        let v = [blocks, free, free];
        *self.statfs.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), v));
        Ok(v)
    }

    async fn readdir(&self, fh: u64, offset: u64, mut reply: ReplyDirectory) {
        let stream = self
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned();
        let Some(stream) = stream else {
            return reply.error(Errno::EBADF);
        };
        let mut s = stream.lock().await;
        if offset < 2 + s.start && s.start > 0 {
            // A rewind past the page held: list again from the start.
            s.buf.clear();
            s.start = 0;
            s.next = None;
            s.fetched = false;
        }
        // Only to number names already known; a rename meanwhile just
        // leaves them numbered like names never looked up.
        let dirpath = match self.path(s.ino) {
            Ok((p, _)) => p,
            Err(e) => return reply.error(e),
        };
        let mut idx = offset;
        loop {
            let (name, dir, ino) = match idx {
                0 => (".".to_string(), true, s.ino),
                1 => ("..".to_string(), true, ROOT),
                _ => {
                    let j = idx - 2;
                    while j >= s.start + s.buf.len() as u64 && (!s.fetched || s.next.is_some()) {
                        if let Err(e) = self.next_page(&mut s).await {
                            return reply.error(e);
                        }
                    }
                    let Some((name, dir)) = s.buf.get((j - s.start) as usize).cloned() else {
                        break;
                    };
                    let path = child(&dirpath, &name);
                    let ino = self
                        .lock_inodes()
                        .by_path(&path)
                        .unwrap_or_else(|| listed_ino(&path));
                    (name, dir, ino)
                }
            };
            let kind = if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(ino), idx + 1, kind, &name) {
                break;
            }
            idx += 1;
        }
        reply.ok();
    }

    async fn next_page(&self, s: &mut DirStream) -> Res<()> {
        let _names = self.names.read().await;
        let (path, _) = self.path(s.ino)?;
        let prefix = self.dir_key(&path);
        let after = s.next.as_ref().map(|rel| format!("{prefix}{rel}"));
        let page = self
            .client
            .list_dir(&self.cfg.bucket, &prefix, after.as_deref(), DIR_PAGE)
            .await
            .map_err(|e| errno(&e))?;
        let mut buf: Vec<(String, bool)> = page
            .entries
            .into_iter()
            .filter(|e| e.name != "." && e.name != ".." && e.name.len() <= NAME_MAX)
            .map(|e| (e.name, e.dir))
            .collect();
        let next = page
            .next
            .and_then(|n| n.strip_prefix(&prefix).map(String::from));
        // Files pending in this mount that fall within this page, in the
        // page's (key) order: a directory's key is its name and a '/'.
        let pending = self.lock_inodes().pending_in(&path);
        if !pending.is_empty() {
            let before = buf.len();
            for name in pending {
                let in_page = s.next.as_ref().is_none_or(|a| name > *a)
                    && next.as_ref().is_none_or(|b| name <= *b);
                if in_page && !buf.iter().any(|(n, _)| *n == name) {
                    buf.push((name, false));
                }
            }
            if buf.len() > before {
                buf.sort_by_cached_key(|(n, dir)| if *dir { format!("{n}/") } else { n.clone() });
            }
        }
        s.start += s.buf.len() as u64;
        s.buf = buf;
        s.next = next;
        s.fetched = true;
        Ok(())
    }

    /// Commits every open file: before an unmount.
    pub(crate) async fn flush_all(&self) {
        let files = self.lock_inodes().open_files();
        for (ino, file) in files {
            if let Err(e) = self.commit(ino, &file).await {
                warn!(ino, ?e, "could not save an open file before unmounting");
            }
        }
    }
}

/// Answers a request from a task: `body` (given the shared state) is
/// awaited, and its value passed to `ok` or its errno to the kernel.
macro_rules! spawn_reply {
    ($self:ident, $reply:ident, $op:literal, |$inner:ident| $body:expr, |$v:ident| $ok:expr) => {{
        let $inner = $self.inner.clone();
        $self.rt.spawn(async move {
            let result = $body.await;
            $inner.metrics.op($op, result.is_err());
            match result {
                Ok($v) => $ok,
                Err(e) => {
                    debug!(op = $op, errno = ?e, "request refused");
                    $reply.error(e)
                }
            }
        });
    }};
}

impl Filesystem for TesseraFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        if let Err(max) = config.set_max_readahead(1 << 20) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_PARALLEL_DIROPS);
        // The access key's grant is looked at again every 10 s, so that a
        // revoked grant takes effect without a remount.
        if self.inner.cfg.access_key.is_some() {
            let inner = self.inner.clone();
            self.rt.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    if let Err(e) = inner.refresh_grant().await {
                        warn!(error = %e, "could not re-read the access key's grant");
                    }
                }
            });
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_owned();
        spawn_reply!(
            self,
            reply,
            "lookup",
            |inner| inner.lookup(parent.0, &name),
            |attr| { reply.entry(&TTL, &attr, Generation(0)) }
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inner.lock_inodes().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        spawn_reply!(
            self,
            reply,
            "getattr",
            |inner| inner.getattr(ino.0),
            |attr| reply.attr(&TTL, &attr)
        );
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if mode.is_none() && uid.is_none() && gid.is_none() && size.is_none() && mtime.is_none() {
            // atime only: not kept (as with noatime).
            spawn_reply!(
                self,
                reply,
                "setattr",
                |inner| inner.getattr(ino.0),
                |attr| reply.attr(&TTL, &attr)
            );
            return;
        }
        spawn_reply!(
            self,
            reply,
            "setattr",
            |inner| inner.setattr(ino.0, mode, uid, gid, size, mtime),
            |attr| reply.attr(&TTL, &attr)
        );
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        spawn_reply!(
            self,
            reply,
            "readlink",
            |inner| inner.readlink(ino.0),
            |data| reply.data(&data)
        );
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & S_IFMT != S_IFREG {
            // Devices, fifos and sockets have no object form.
            return reply.error(Errno::EPERM);
        }
        let (uid, gid, name) = (req.uid(), req.gid(), name.to_owned());
        let inner = self.inner.clone();
        self.rt.spawn(async move {
            match inner.create(uid, gid, parent.0, &name, mode & !umask).await {
                Ok((attr, fh)) => {
                    let _ = inner.release(fh).await;
                    reply.entry(&TTL, &attr, Generation(0));
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let (uid, gid, name) = (req.uid(), req.gid(), name.to_owned());
        spawn_reply!(
            self,
            reply,
            "mkdir",
            |inner| inner.mkdir(uid, gid, parent.0, &name, mode & !umask),
            |attr| reply.entry(&TTL, &attr, Generation(0))
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        spawn_reply!(
            self,
            reply,
            "unlink",
            |inner| inner.unlink(parent.0, &name),
            |_v| { reply.ok() }
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        spawn_reply!(
            self,
            reply,
            "rmdir",
            |inner| inner.rmdir(parent.0, &name),
            |_v| { reply.ok() }
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (uid, gid) = (req.uid(), req.gid());
        let (name, target) = (link_name.to_owned(), target.to_owned());
        spawn_reply!(
            self,
            reply,
            "symlink",
            |inner| inner.symlink(uid, gid, parent.0, &name, &target),
            |attr| reply.entry(&TTL, &attr, Generation(0))
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name.to_owned(), newname.to_owned());
        spawn_reply!(
            self,
            reply,
            "rename",
            |inner| inner.rename(parent.0, &name, newparent.0, &newname, flags),
            |_v| reply.ok()
        );
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // An object has one name; a second name would be a copy.
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        spawn_reply!(self, reply, "open", |inner| inner.open(ino.0, flags), |v| {
            reply.opened(FileHandle(v.0), v.1)
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        spawn_reply!(
            self,
            reply,
            "read",
            |inner| inner.read(fh.0, offset, size),
            |data| { reply.data(&data) }
        );
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        spawn_reply!(
            self,
            reply,
            "write",
            |inner| inner.write(fh.0, offset, &data),
            |n| { reply.written(n) }
        );
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        spawn_reply!(self, reply, "flush", |inner| inner.flush(fh.0), |_v| reply
            .ok());
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        spawn_reply!(self, reply, "release", |inner| inner.release(fh.0), |_v| {
            reply.ok()
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        spawn_reply!(self, reply, "fsync", |inner| inner.flush(fh.0), |_v| reply
            .ok());
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if let Err(e) = self.inner.may(Permission::Read) {
            return reply.error(e);
        }
        match self.inner.path(ino.0) {
            Ok((_, true)) => {}
            Ok(_) => return reply.error(Errno::ENOTDIR),
            Err(e) => return reply.error(e),
        }
        let fh = self.inner.next_fh.fetch_add(1, Ordering::Relaxed);
        let stream = DirStream {
            ino: ino.0,
            buf: Vec::new(),
            start: 0,
            next: None,
            fetched: false,
        };
        self.inner
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(AsyncMutex::new(stream)));
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let inner = self.inner.clone();
        self.rt
            .spawn(async move { inner.readdir(fh.0, offset, reply).await });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.inner
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory changes are durable in meta when they return.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        spawn_reply!(self, reply, "statfs", |inner| inner.statfs(), |v| reply
            .statfs(
                v[0],
                v[1],
                v[2],
                u64::MAX >> 1,
                u64::MAX >> 1,
                4096,
                NAME_MAX as u32,
                4096
            ));
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOTSUP);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOTSUP);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOTSUP);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOTSUP);
    }

    /// After the kernel ends the session: fuser unmounts next, and after an
    /// unmount from outside (`fusermount3 -u`) its attempt finds nothing
    /// mounted and logs "Failed to umount filesystem: Invalid argument" at
    /// WARN, a failure that is none. Unmounting here first, where that case
    /// is told apart by the mount table, leaves fuser nothing to do.
    fn destroy(&mut self) {
        let mut slot = self.unmounter.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(unmounter) = slot.as_mut()
            && let Err(e) = unmounter.unmount()
        {
            if crate::is_mounted(&self.mountpoint) {
                warn!(error = %e, at = %self.mountpoint.display(), "unmounting failed");
            } else {
                debug!(error = %e, "already unmounted (from outside)");
            }
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        spawn_reply!(
            self,
            reply,
            "fallocate",
            |inner| inner.fallocate(fh.0, offset, length, mode),
            |_v| reply.ok()
        );
    }

    // Requests this mount does not implement: each answered as the kernel
    // expects and logged once (fuser's defaults log every one, over several
    // lines).

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        self.inner.not_implemented("access", Errno::ENOSYS);
        reply.error(Errno::ENOSYS);
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.inner.not_implemented("readdirplus", Errno::ENOSYS);
        reply.error(Errno::ENOSYS);
    }

    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        self.inner.not_implemented("getlk", Errno::ENOSYS);
        reply.error(Errno::ENOSYS);
    }

    fn setlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        _sleep: bool,
        reply: ReplyEmpty,
    ) {
        self.inner.not_implemented("setlk", Errno::ENOSYS);
        reply.error(Errno::ENOSYS);
    }

    fn bmap(&self, _req: &Request, _ino: INodeNo, _blocksize: u32, _idx: u64, reply: ReplyBmap) {
        self.inner.not_implemented("bmap", Errno::ENOSYS);
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        // What a file system without ioctls answers (`lsattr`, `chattr`,
        // `filefrag` then say "Inappropriate ioctl for device").
        self.inner.not_implemented("ioctl", Errno::ENOTTY);
        reply.error(Errno::ENOTTY);
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: PollNotifier,
        _events: PollEvents,
        _flags: PollFlags,
        reply: ReplyPoll,
    ) {
        self.inner.not_implemented("poll", Errno::ENOSYS);
        reply.error(Errno::ENOSYS);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: ReplyLseek,
    ) {
        // ENOSYS: the kernel then seeks by itself (SEEK_DATA/SEEK_HOLE see
        // the whole file as data), and stops asking.
        self.inner.not_implemented("lseek", Errno::ENOSYS);
        reply.error(Errno::ENOSYS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // ENOSYS: the kernel copies through read and write instead.
        self.inner.not_implemented("copy_file_range", Errno::ENOSYS);
        reply.error(Errno::ENOSYS);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let (uid, gid, name) = (req.uid(), req.gid(), name.to_owned());
        spawn_reply!(
            self,
            reply,
            "create",
            |inner| inner.create(uid, gid, parent.0, &name, mode & !umask),
            |v| reply.created(
                &TTL,
                &v.0,
                Generation(0),
                FileHandle(v.1),
                FopenFlags::empty()
            )
        );
    }
}
