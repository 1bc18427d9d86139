//! Fragment files. Each fragment is one file
//! `fragments/<c0c1>/<c2c3>/<chunk id hex>.<index>` holding a fixed header
//! (magic, version, index, chunk id, length, BLAKE3), then the bytes, then
//! (when written with `O_DIRECT`) zeros up to the next multiple of 4 KiB. A
//! write goes to `tmp/`, is fsynced, renamed into place, and the directory is
//! fsynced: after `put` returns, the fragment survives a crash, and a crash
//! before that leaves at most a temp file, removed at the next start.
//!
//! Fragment files are written with `O_DIRECT` where the file system takes
//! it: the bytes go from the received buffer to the disk without a copy
//! into the page cache, which a fragment (read again only by a GET, a
//! scrub or a repair, often much later) gains nothing from. Where
//! `O_DIRECT` is refused (`EINVAL`: tmpfs before Linux 6.6, some FUSE file
//! systems) the store writes through the page cache from then on.
//!
//! A direct write is whole 4 KiB blocks, so the file keeps its zero
//! padding: cutting it to the body's end would make the file system read
//! the last block back from the disk to zero its tail (one synchronous
//! read per fragment) and write it again. The padding costs no disk space
//! (ext4 and XFS allocate whole blocks) and readers take the length from
//! the header. Files without padding (page-cache writes, older nodes) read
//! the same.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tessera_proto::FragmentInfo;
use tessera_types::{ChunkId, Hash};
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::warn;

use crate::NodeError;

const MAGIC: [u8; 4] = *b"TSFR";
const FORMAT: u8 = 1;
pub const FRAGMENT_HEADER_LEN: usize = 64;
/// Largest fragment a node stores: a whole chunk of the largest size (rep:N).
pub const MAX_FRAGMENT_LEN: u64 = 64 * 1024 * 1024;
const IO_BUF: usize = 256 * 1024;
/// Bytes reserved up front for a fragment being received; more as it comes
/// (a peer's claimed length alone does not allocate).
const RECEIVE_RESERVE: u64 = 4 << 20;

/// Why a fragment file's header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("bad magic")]
    BadMagic,
    #[error("unknown format {0}")]
    UnknownFormat(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader {
    pub chunk: ChunkId,
    pub index: u8,
    pub len: u64,
    pub hash: Hash,
}

impl FragmentHeader {
    pub fn encode(&self) -> [u8; FRAGMENT_HEADER_LEN] {
        let mut b = [0u8; FRAGMENT_HEADER_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = FORMAT;
        b[5] = self.index;
        b[8..24].copy_from_slice(&self.chunk.0);
        b[24..32].copy_from_slice(&self.len.to_be_bytes());
        b[32..64].copy_from_slice(&self.hash);
        b
    }

    /// Reads a header from a fragment file's first 64 bytes. Errors: not a
    /// fragment file (magic), or a format this build does not know.
    pub fn decode(b: &[u8; FRAGMENT_HEADER_LEN]) -> Result<Self, HeaderError> {
        if b[..4] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if b[4] != FORMAT {
            return Err(HeaderError::UnknownFormat(b[4]));
        }
        let mut chunk = [0u8; 16];
        chunk.copy_from_slice(&b[8..24]);
        let mut len = [0u8; 8];
        len.copy_from_slice(&b[24..32]);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&b[32..64]);
        Ok(FragmentHeader {
            chunk: ChunkId(chunk),
            index: b[5],
            len: u64::from_be_bytes(len),
            hash,
        })
    }
}

pub struct FragmentStore {
    root: PathBuf,
    tmp: PathBuf,
    used: AtomicU64,
    count: AtomicU64,
    /// Renames into place and garbage deletions of the same fragment name
    /// take its stripe, so the collector never removes a copy written
    /// after it judged the old one unreferenced.
    stripes: Arc<[tokio::sync::Mutex<()>]>,
    /// Whether fragment files are still written with `O_DIRECT`.
    direct: Arc<AtomicBool>,
}

const STRIPES: usize = 64;

fn name(chunk: ChunkId, index: u8) -> String {
    format!("{chunk}.{index}")
}

/// The (chunk, index) a fragment file's name `<chunk hex>.<index>` gives;
/// `None` for any other name.
pub fn parse_fragment_name(file: &str) -> Option<(ChunkId, u8)> {
    let (c, i) = file.split_once('.')?;
    Some((c.parse().ok()?, i.parse().ok()?))
}

/// Every fragment file under `root`: (path, chunk, index), unsorted.
fn walk_dir(root: &Path) -> Result<Vec<(PathBuf, ChunkId, u8)>, NodeError> {
    let mut out = Vec::new();

    let read = |p: &Path| {
        std::fs::read_dir(p).map_err(|e| NodeError::io(format!("listing {}", p.display()), e))
    };
    for a in read(root)? {
        let a = a.map_err(|e| NodeError::io("listing fragments", e))?.path();
        if !a.is_dir() {
            continue;
        }
        for b in read(&a)? {
            let b = b.map_err(|e| NodeError::io("listing fragments", e))?.path();
            if !b.is_dir() {
                continue;
            }
            for f in read(&b)? {
                let f = f.map_err(|e| NodeError::io("listing fragments", e))?.path();
                if let Some((c, i)) = f
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(parse_fragment_name)
                {
                    out.push((f, c, i));
                }
            }
        }
    }
    Ok(out)
}

/// Alignment, in bytes, of the buffer, offset and length of an `O_DIRECT`
/// write: 4 KiB, the largest logical block size in use, so smaller ones
/// (512 bytes) are met too.
const DIRECT_ALIGN: usize = 4096;

/// `n` rounded up to a multiple of [`DIRECT_ALIGN`].
fn padded_len(n: usize) -> usize {
    n.next_multiple_of(DIRECT_ALIGN)
}

/// A fragment file's bytes as they go to disk: the header, the body, then
/// zeros up to a multiple of [`DIRECT_ALIGN`], starting at an address
/// aligned to it, so the file can be written with `O_DIRECT`.
struct FileImage {
    buf: Vec<u8>,
    /// Offset of the aligned start in `buf`; `DIRECT_ALIGN` when the
    /// allocator's address could not be aligned (then never written direct).
    start: usize,
    body_len: usize,
}

impl FileImage {
    /// An image of a `body_len`-byte fragment, all zeros.
    fn zeroed(body_len: usize) -> Self {
        let padded = padded_len(FRAGMENT_HEADER_LEN + body_len);
        let buf = vec![0u8; padded + DIRECT_ALIGN];
        // `align_offset` may decline (usize::MAX); fall back to an
        // unaligned start inside the spare block.
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        FileImage {
            buf,
            start,
            body_len,
        }
    }

    fn is_aligned(&self) -> bool {
        self.start < DIRECT_ALIGN
    }

    /// Header and body: the file's contents, `FRAGMENT_HEADER_LEN + body_len` bytes.
    fn file_bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + FRAGMENT_HEADER_LEN + self.body_len]
    }

    /// The file's contents padded with zeros to a multiple of `DIRECT_ALIGN`.
    fn padded_bytes(&self) -> &[u8] {
        let len = padded_len(FRAGMENT_HEADER_LEN + self.body_len);
        &self.buf[self.start..self.start + len]
    }

    fn header_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + FRAGMENT_HEADER_LEN]
    }

    fn body(&self) -> &[u8] {
        &self.file_bytes()[FRAGMENT_HEADER_LEN..]
    }

    fn body_mut(&mut self) -> &mut [u8] {
        let at = self.start + FRAGMENT_HEADER_LEN;
        &mut self.buf[at..at + self.body_len]
    }
}

/// Receives a fragment's body into a [`FileImage`]: exactly `len` bytes
/// (at most `MAX_FRAGMENT_LEN`), then the end of the stream. Errors:
/// `Truncated`, `Overlong`, the stream's.
async fn receive<R: AsyncRead + Unpin>(len: u64, body: &mut R) -> Result<FileImage, NodeError> {
    let io = |e| NodeError::io("reading body", e);
    let image = if len <= RECEIVE_RESERVE {
        let mut image = FileImage::zeroed(len as usize);
        let dst = image.body_mut();
        let mut got = 0;
        while got < dst.len() {
            match body.read(&mut dst[got..]).await.map_err(io)? {
                0 => break,
                n => got += n,
            }
        }
        if (got as u64) < len {
            return Err(NodeError::Truncated {
                got: got as u64,
                expected: len,
            });
        }
        image
    } else {
        // Past the reserve, memory follows the bytes received, not the
        // length a peer claims; the image is filled once they are all here.
        let mut data = Vec::with_capacity(RECEIVE_RESERVE as usize);
        let got = (&mut *body)
            .take(len)
            .read_to_end(&mut data)
            .await
            .map_err(io)? as u64;
        if got < len {
            return Err(NodeError::Truncated { got, expected: len });
        }
        let mut image = FileImage::zeroed(data.len());
        image.body_mut().copy_from_slice(&data);
        image
    };
    // The stream must end where the header said it would.
    if body.read(&mut [0u8; 1]).await.map_err(io)? != 0 {
        return Err(NodeError::Overlong(len));
    }
    Ok(image)
}

/// Writes `image` as the fragment file at `path` and fdatasyncs it: with
/// `O_DIRECT` while `direct` holds, through the page cache otherwise.
/// `direct` is cleared the first time the file system refuses `O_DIRECT`.
/// Returns the file's size in bytes: padded when written direct.
fn write_synced(path: &Path, image: &FileImage, direct: &AtomicBool) -> Result<u64, NodeError> {
    let ctx = || format!("writing {}", path.display());
    if direct.load(Ordering::Relaxed) && image.is_aligned() {
        match write_direct(path, image) {
            Ok(()) => return Ok(image.padded_bytes().len() as u64),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                if direct.swap(false, Ordering::Relaxed) {
                    warn!(path = %path.display(), error = %e,
                        "the file system refuses O_DIRECT; fragments are written through the page cache");
                }
            }
            Err(e) => return Err(NodeError::io(ctx(), e)),
        }
    }
    write_buffered(path, image).map_err(|e| NodeError::io(ctx(), e))?;
    Ok(image.file_bytes().len() as u64)
}

/// One aligned `O_DIRECT` write of the padded image; the fdatasync makes
/// the file's size and block map durable. The padding stays (module doc).
fn write_direct(path: &Path, image: &FileImage) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path)?;
    file.write_all(image.padded_bytes())?;
    file.sync_data()
}

fn write_buffered(path: &Path, image: &FileImage) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(image.file_bytes())?;
    file.sync_data()
}

/// The BLAKE3 of the `len`-byte body that `file` is positioned at (as
/// [`FragmentStore::open_fragment`] leaves it), read in 256 KiB pieces;
/// padding after the body is not read. Errors: the file's, and
/// `UnexpectedEof` if it ends before `len` bytes.
pub(crate) async fn hash_body(file: &mut tokio::fs::File, len: u64) -> std::io::Result<Hash> {
    let mut body = (&mut *file).take(len);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; IO_BUF.min(len as usize)];
    let mut got = 0u64;
    while got < len {
        match body.read(&mut buf).await? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                hasher.update(&buf[..n]);
                got += n as u64;
            }
        }
    }
    Ok(*hasher.finalize().as_bytes())
}

/// Whether a fragment file of `size` bytes holds a body of `len` bytes:
/// header and body exactly, or padded to a multiple of 4 KiB by a direct
/// write. `len` comes from the disk: a length no file can have fits no
/// size (no overflow).
fn size_fits(size: u64, len: u64) -> bool {
    let Some(exact) = len.checked_add(FRAGMENT_HEADER_LEN as u64) else {
        return false;
    };
    size == exact || exact.checked_next_multiple_of(DIRECT_ALIGN as u64) == Some(size)
}

/// Opens the fragment file at `path`, checks its header against the name
/// (`chunk`, `index`) and its size against the header, and leaves it at the
/// first body byte. The body is `header.len` bytes; zero padding may
/// follow it. Blocking.
fn open_at(
    path: &Path,
    chunk: ChunkId,
    index: u8,
) -> Result<(FragmentHeader, std::fs::File), NodeError> {
    use std::io::Read;
    let what = || name(chunk, index);
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(NodeError::NotFound(what()));
        }
        Err(e) => return Err(NodeError::io(format!("opening {}", path.display()), e)),
    };
    let mut raw = [0u8; FRAGMENT_HEADER_LEN];
    file.read_exact(&mut raw).map_err(|_| NodeError::Corrupt {
        what: what(),
        why: "header is truncated".into(),
    })?;
    let header = FragmentHeader::decode(&raw).map_err(|e| NodeError::Corrupt {
        what: what(),
        why: e.to_string(),
    })?;
    if header.chunk != chunk || header.index != index {
        return Err(NodeError::Corrupt {
            what: what(),
            why: "header names another fragment".into(),
        });
    }
    let size = file.metadata().map_err(|e| NodeError::io("stat", e))?.len();
    if !size_fits(size, header.len) {
        return Err(NodeError::Corrupt {
            what: what(),
            why: format!("file is {size} bytes, header says {}", header.len),
        });
    }
    // `read_exact` left the file at the first body byte.
    Ok((header, file))
}

/// Renames the synced temp file `tmp` to `dst`, creating `dst`'s
/// directory `dir` if it is missing; the size of the file it replaced, if
/// any. Blocking.
///
/// Most names are new, so the first try is a rename that refuses to
/// replace (`renameat2(RENAME_NOREPLACE)`): it needs neither a stat of
/// `dst` nor a `mkdir` of its directory first, which cost about 4% of a
/// node's CPU on 1 MiB objects. Where the name exists, or the file system
/// does not know the flag (`EINVAL`), the size is read and a plain rename
/// replaces the file.
fn place(tmp: &Path, dst: &Path, dir: &Path) -> Result<Option<u64>, NodeError> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    use rustix::io::Errno;
    let mkdir = || {
        std::fs::create_dir_all(dir)
            .map_err(|e| NodeError::io(format!("creating {}", dir.display()), e))
    };
    let fresh = || renameat_with(CWD, tmp, CWD, dst, RenameFlags::NOREPLACE);
    let first = match fresh() {
        Err(Errno::NOENT) => {
            mkdir()?;
            fresh()
        }
        other => other,
    };
    match first {
        Ok(()) => Ok(None),
        Err(Errno::EXIST | Errno::INVAL | Errno::NOSYS) => {
            let replaced = std::fs::metadata(dst).map(|m| m.len()).ok();
            mkdir()?;
            std::fs::rename(tmp, dst)
                .map_err(|e| NodeError::io(format!("renaming into {}", dst.display()), e))?;
            Ok(replaced)
        }
        Err(e) => Err(NodeError::io(
            format!("renaming into {}", dst.display()),
            e.into(),
        )),
    }
}

/// [`FragmentStore::list`] on the calling thread. Blocking.
fn list_blocking(
    root: &Path,
    after: Option<(ChunkId, u8)>,
    limit: usize,
) -> Result<(Vec<FragmentInfo>, bool), NodeError> {
    let mut all: Vec<(ChunkId, u8, PathBuf)> = walk_dir(root)?
        .into_iter()
        .filter(|(_, c, i)| after.is_none_or(|a| (*c, *i) > a))
        .map(|(p, c, i)| (c, i, p))
        .collect();
    all.sort_by_key(|(c, i, _)| (*c, *i));
    let more = all.len() > limit;
    let items = all
        .into_iter()
        .take(limit)
        .map(|(chunk, index, p)| FragmentInfo {
            chunk,
            index,
            // The header's length: the file may be padded. A file whose
            // header is unreadable is listed by its size.
            len: open_at(&p, chunk, index)
                .map(|(header, _)| header.len)
                .or_else(|_| {
                    std::fs::metadata(&p)
                        .map(|m| m.len().saturating_sub(FRAGMENT_HEADER_LEN as u64))
                })
                .unwrap_or(0),
        })
        .collect();
    Ok((items, more))
}

/// The stripe of `FragmentStore::stripes` that a fragment name takes.
fn stripe_of(chunk: ChunkId, index: u8) -> usize {
    (chunk.0[15] as usize ^ index as usize) % STRIPES
}

impl FragmentStore {
    /// Opens (creating if needed) the store under `dir`, removes temp files
    /// left by a crash, and counts what is stored.
    pub fn open(dir: &Path) -> Result<Self, NodeError> {
        let root = dir.join("fragments");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&root)
            .map_err(|e| NodeError::io(format!("creating {}", root.display()), e))?;
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)
            .map_err(|e| NodeError::io(format!("creating {}", tmp.display()), e))?;
        let store = FragmentStore {
            root,
            tmp,
            used: AtomicU64::new(0),
            count: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            direct: Arc::new(AtomicBool::new(true)),
        };
        let (mut used, mut count) = (0, 0);
        for (path, _, _) in store.walk()? {
            used += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            count += 1;
        }
        store.used.store(used, Ordering::Relaxed);
        store.count.store(count, Ordering::Relaxed);
        Ok(store)
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether fragment files are written with `O_DIRECT` (false once the
    /// file system has refused it).
    pub fn writes_direct(&self) -> bool {
        self.direct.load(Ordering::Relaxed)
    }

    pub fn path(&self, chunk: ChunkId, index: u8) -> PathBuf {
        let hex = chunk.to_string();
        self.root
            .join(&hex[..2])
            .join(&hex[2..4])
            .join(name(chunk, index))
    }

    fn walk(&self) -> Result<Vec<(PathBuf, ChunkId, u8)>, NodeError> {
        walk_dir(&self.root)
    }

    /// Stores a fragment from `body`, which must hold exactly `len` bytes
    /// hashing to `hash`; anything else is refused and nothing is kept.
    ///
    /// The whole body is received first (at most `MAX_FRAGMENT_LEN`, 1 MiB
    /// for a 4 MiB chunk under ec:4+2, which its sender holds too); then one
    /// blocking call checks its hash, writes it with its header to `tmp/`
    /// (with `O_DIRECT` where the file system takes it), fdatasyncs it,
    /// renames it into place and fsyncs the directory. One
    /// thread hop per fragment: a hop for the write, one for the stat of
    /// the old copy and one for the rename cost two thirds of a node's
    /// context switches on 1 MiB objects.
    pub async fn put<R: AsyncRead + Unpin>(
        &self,
        chunk: ChunkId,
        index: u8,
        len: u64,
        hash: Hash,
        body: &mut R,
    ) -> Result<(), NodeError> {
        if len > MAX_FRAGMENT_LEN {
            return Err(NodeError::TooLarge(len));
        }
        let mut image = receive(len, body).await?;
        let header = FragmentHeader {
            chunk,
            index,
            len,
            hash,
        };
        image.header_mut().copy_from_slice(&header.encode());
        let direct = self.direct.clone();
        let tmp = self.tmp.join(format!(
            "{}.{:016x}",
            name(chunk, index),
            rand::random::<u64>()
        ));
        let dst = self.path(chunk, index);
        let stripes = self.stripes.clone();
        let stripe = stripe_of(chunk, index);
        let (size, replaced) = tokio::task::spawn_blocking(move || -> Result<_, NodeError> {
            if *blake3::hash(image.body()).as_bytes() != header.hash {
                return Err(NodeError::HashMismatch);
            }
            let size = match write_synced(&tmp, &image, &direct) {
                Ok(size) => size,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            let dir = dst
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            // The garbage collector's delete of this name waits for the
            // rename, so it never removes the copy written here.
            let _stripe = stripes[stripe].blocking_lock();
            let replaced = match place(&tmp, &dst, &dir) {
                Ok(replaced) => replaced,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            // The rename is durable only once the directory entry is.
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| NodeError::io(format!("syncing {}", dir.display()), e))?;
            Ok((size, replaced))
        })
        .await
        .map_err(|e| NodeError::io("write task", std::io::Error::other(e)))??;
        match replaced {
            Some(old) => {
                self.used.fetch_sub(old.min(self.used()), Ordering::Relaxed);
            }
            None => {
                self.count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.used.fetch_add(size, Ordering::Relaxed);
        Ok(())
    }

    /// Opens a fragment for reading: its header (checked against the name it
    /// was asked for) and the file positioned at the first body byte.
    /// Errors: `NotFound`, `Corrupt` (header or size), I/O.
    pub async fn open_fragment(
        &self,
        chunk: ChunkId,
        index: u8,
    ) -> Result<(FragmentHeader, tokio::fs::File), NodeError> {
        let path = self.path(chunk, index);
        let (header, file) = tokio::task::spawn_blocking(move || open_at(&path, chunk, index))
            .await
            .map_err(|e| NodeError::io("open task", std::io::Error::other(e)))??;
        Ok((header, tokio::fs::File::from_std(file)))
    }

    /// [`FragmentStore::open_fragment`] for a blocking thread: the caller
    /// runs it with the first read in one hop.
    pub fn open_fragment_blocking(
        &self,
        chunk: ChunkId,
        index: u8,
    ) -> impl FnOnce() -> Result<(FragmentHeader, std::fs::File), NodeError> + Send + 'static {
        let path = self.path(chunk, index);
        move || open_at(&path, chunk, index)
    }

    /// Re-reads a fragment and checks it against its own header.
    pub async fn verify(&self, chunk: ChunkId, index: u8) -> Result<(), NodeError> {
        let (header, mut file) = self.open_fragment(chunk, index).await?;
        let hash = hash_body(&mut file, header.len)
            .await
            .map_err(|e| NodeError::io("reading fragment", e))?;
        if hash != header.hash {
            return Err(NodeError::Corrupt {
                what: name(chunk, index),
                why: "BLAKE3 mismatch".into(),
            });
        }
        Ok(())
    }

    pub async fn delete(&self, chunk: ChunkId, index: u8) -> Result<bool, NodeError> {
        let path = self.path(chunk, index);
        let size = match tokio::fs::metadata(&path).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(NodeError::io(format!("stat {}", path.display()), e)),
        };
        tokio::fs::remove_file(&path)
            .await
            .map_err(|e| NodeError::io(format!("removing {}", path.display()), e))?;
        self.used
            .fetch_sub(size.min(self.used()), Ordering::Relaxed);
        self.count.fetch_sub(1, Ordering::Relaxed);
        Ok(true)
    }

    fn stripe(&self, chunk: ChunkId, index: u8) -> &tokio::sync::Mutex<()> {
        &self.stripes[stripe_of(chunk, index)]
    }

    /// Every fragment on disk, (chunk, index), unsorted: one walk.
    pub async fn inventory(&self) -> Result<Vec<(ChunkId, u8)>, NodeError> {
        let store_root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            Ok(walk_dir(&store_root)?
                .into_iter()
                .map(|(_, c, i)| (c, i))
                .collect())
        })
        .await
        .map_err(|e| NodeError::io("walk task", std::io::Error::other(e)))?
    }

    /// Deletes a fragment if its file was last written before `cutoff`: the
    /// garbage collector's delete, safe against a fresh copy written since.
    pub async fn delete_if_older(
        &self,
        chunk: ChunkId,
        index: u8,
        cutoff: std::time::SystemTime,
    ) -> Result<bool, NodeError> {
        let _stripe = self.stripe(chunk, index).lock().await;
        let path = self.path(chunk, index);
        let meta = match tokio::fs::metadata(&path).await {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(NodeError::io(format!("stat {}", path.display()), e)),
        };
        let written = meta
            .modified()
            .map_err(|e| NodeError::io(format!("mtime of {}", path.display()), e))?;
        if written >= cutoff {
            return Ok(false);
        }
        tokio::fs::remove_file(&path)
            .await
            .map_err(|e| NodeError::io(format!("removing {}", path.display()), e))?;
        self.used
            .fetch_sub(meta.len().min(self.used()), Ordering::Relaxed);
        self.count.fetch_sub(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Fragments in (chunk, index) order after `after`, at most `limit`;
    /// the flag says whether more follow.
    pub async fn list(
        &self,
        after: Option<(ChunkId, u8)>,
        limit: usize,
    ) -> Result<(Vec<FragmentInfo>, bool), NodeError> {
        // A walk of the whole store and a header read per listed file: on a
        // blocking thread, not the server's async workers.
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || list_blocking(&root, after, limit))
            .await
            .map_err(|e| NodeError::io("list task", std::io::Error::other(e)))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: &[u8]) -> Hash {
        *blake3::hash(b).as_bytes()
    }

    #[tokio::test]
    async fn put_get_verify_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = FragmentStore::open(dir.path()).unwrap();
        let c = ChunkId([1; 16]);
        // Stores `body` as fragment 2 and checks the counts.
        let put_checked = async |body: &[u8]| {
            store
                .put(c, 2, body.len() as u64, h(body), &mut &body[..])
                .await
                .unwrap();
            assert_eq!(store.count(), 1);
            let on_disk = std::fs::metadata(store.path(c, 2)).unwrap().len();
            assert!(size_fits(on_disk, body.len() as u64));
            assert_eq!(store.used(), on_disk);
        };
        let body = vec![5u8; 300_000];
        put_checked(&body).await;
        let (hdr, mut f) = store.open_fragment(c, 2).await.unwrap();
        assert_eq!(hdr.len, body.len() as u64);
        let mut back = vec![];
        (&mut f).take(hdr.len).read_to_end(&mut back).await.unwrap();
        assert_eq!(back, body);
        store.verify(c, 2).await.unwrap();
        let (items, more) = store.list(None, 10).await.unwrap();
        assert_eq!((items.len(), more), (1, false));
        assert_eq!(items[0].len, body.len() as u64, "the header's length");
        // Writing the same name again replaces the file (a rename over an
        // existing name) and counts it once.
        put_checked(&[6u8; 5000]).await;
        store.verify(c, 2).await.unwrap();
        // Reopening counts what is there.
        drop(store);
        let store = FragmentStore::open(dir.path()).unwrap();
        assert_eq!(store.count(), 1);
        assert!(store.delete(c, 2).await.unwrap());
        assert!(!store.delete(c, 2).await.unwrap());
        assert!(matches!(
            store.open_fragment(c, 2).await,
            Err(NodeError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn refuses_bad_bodies_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FragmentStore::open(dir.path()).unwrap();
        let c = ChunkId([2; 16]);
        let body = vec![9u8; 1000];
        let r = store.put(c, 0, 2000, h(&body), &mut &body[..]).await;
        assert!(matches!(
            r,
            Err(NodeError::Truncated {
                got: 1000,
                expected: 2000
            })
        ));
        let r = store.put(c, 0, 500, h(&body[..500]), &mut &body[..]).await;
        assert!(matches!(r, Err(NodeError::Overlong(500))));
        let r = store.put(c, 0, 1000, h(b"other"), &mut &body[..]).await;
        assert!(matches!(r, Err(NodeError::HashMismatch)));
        let r = store
            .put(c, 0, MAX_FRAGMENT_LEN + 1, h(&body), &mut &body[..])
            .await;
        assert!(matches!(r, Err(NodeError::TooLarge(_))));
        assert_eq!(store.count(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    fn image_of(header: &FragmentHeader, body: &[u8]) -> FileImage {
        let mut image = FileImage::zeroed(body.len());
        image.header_mut().copy_from_slice(&header.encode());
        image.body_mut().copy_from_slice(body);
        image
    }

    #[test]
    fn direct_writes_leave_header_body_and_zero_padding() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, 4032, 4033, 4096, 300_000] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let header = FragmentHeader {
                chunk: ChunkId([7; 16]),
                index: 3,
                len: len as u64,
                hash: h(&body),
            };
            let image = image_of(&header, &body);
            assert!(image.is_aligned());
            assert_eq!(image.padded_bytes().len() % DIRECT_ALIGN, 0);
            assert_eq!(image.padded_bytes().as_ptr() as usize % DIRECT_ALIGN, 0);
            let direct = AtomicBool::new(true);
            let path = dir.path().join(format!("f{len}"));
            write_synced(&path, &image, &direct).unwrap();
            let mut want = header.encode().to_vec();
            want.extend_from_slice(&body);
            want.resize(padded_len(want.len()), 0);
            assert_eq!(std::fs::read(&path).unwrap(), want, "len {len}");
            let (read, _) = open_at(&path, header.chunk, header.index).unwrap();
            assert_eq!(read, header);
        }
    }

    #[tokio::test]
    async fn padded_and_exact_files_read_alike_and_cut_ones_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = FragmentStore::open(dir.path()).unwrap();
        let c = ChunkId([9; 16]);
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        store
            .put(c, 4, body.len() as u64, h(&body), &mut &body[..])
            .await
            .unwrap();
        let path = store.path(c, 4);
        let exact = (FRAGMENT_HEADER_LEN + body.len()) as u64;
        let padded = padded_len(exact as usize) as u64;
        let resize = |size: u64| {
            let file = std::fs::OpenOptions::new().write(true).open(&path);
            file.unwrap().set_len(size).unwrap();
        };
        // Padded (a direct write), exact (a page-cache write or an older
        // node): both hold the body.
        for size in [padded, exact] {
            resize(size);
            store.verify(c, 4).await.unwrap();
            let (header, mut file) = store.open_fragment(c, 4).await.unwrap();
            assert_eq!(hash_body(&mut file, header.len).await.unwrap(), h(&body));
        }
        // A header length no file can have fits no size.
        assert!(!size_fits(u64::MAX, u64::MAX));
        assert!(!size_fits(padded, u64::MAX - 10));
        // Any other size is corrupt: the body cut short, or bytes added.
        for size in [exact - 1, exact + 1, padded - 1, padded + 1, padded + 4096] {
            resize(size);
            assert!(
                matches!(store.verify(c, 4).await, Err(NodeError::Corrupt { .. })),
                "size {size}"
            );
        }
    }

    #[test]
    fn a_refused_direct_write_falls_back_to_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let body = vec![42u8; 10_000];
        let header = FragmentHeader {
            chunk: ChunkId([8; 16]),
            index: 0,
            len: body.len() as u64,
            hash: h(&body),
        };
        // An image one byte off its alignment, which `O_DIRECT` refuses
        // (`EINVAL`) wherever it enforces alignment.
        let aligned = image_of(&header, &body);
        let mut buf = vec![0u8; aligned.buf.len() + DIRECT_ALIGN];
        let a = buf.as_ptr().align_offset(DIRECT_ALIGN);
        let start = if a + 1 < DIRECT_ALIGN { a + 1 } else { a - 1 };
        let len = aligned.padded_bytes().len();
        buf[start..start + len].copy_from_slice(aligned.padded_bytes());
        let image = FileImage {
            buf,
            start,
            body_len: body.len(),
        };
        assert!(image.is_aligned(), "the direct write is tried");
        let refused = matches!(
            write_direct(&dir.path().join("probe"), &image),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
        );
        let direct = AtomicBool::new(true);
        let path = dir.path().join("f");
        write_synced(&path, &image, &direct).unwrap();
        let mut want = header.encode().to_vec();
        want.extend_from_slice(&body);
        let got = std::fs::read(&path).unwrap();
        if !refused {
            // Written direct after all: padded.
            want.resize(padded_len(want.len()), 0);
        }
        assert_eq!(got, want);
        assert_eq!(direct.load(Ordering::Relaxed), !refused);
        // Once refused, later fragments go through the page cache too.
        write_synced(&dir.path().join("g"), &aligned, &direct).unwrap();
        assert_eq!(direct.load(Ordering::Relaxed), !refused);
    }

    #[tokio::test]
    async fn detects_flipped_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = FragmentStore::open(dir.path()).unwrap();
        let c = ChunkId([3; 16]);
        let body = vec![1u8; 4096];
        store
            .put(c, 1, 4096, h(&body), &mut &body[..])
            .await
            .unwrap();
        let path = store.path(c, 1);
        let mut raw = std::fs::read(&path).unwrap();
        raw[100] ^= 0xff;
        std::fs::write(&path, raw).unwrap();
        assert!(matches!(
            store.verify(c, 1).await,
            Err(NodeError::Corrupt { .. })
        ));
    }
}
