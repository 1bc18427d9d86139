//! File attributes as the mount stores them: in an object's user metadata
//! (so S3 shows them as `x-amz-meta-tessera-*`), in directory entries, or
//! the mount's defaults; and the mapping from cluster errors to errno.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};
use tessera_proto::{DirInfo, ErrorCode, ObjectInfo};
use tessera_sdk::SdkError;

/// `st_mode` in octal, type bits included (`100644`, `120777`).
pub const MODE: &str = "tessera-mode";
pub const UID: &str = "tessera-uid";
pub const GID: &str = "tessera-gid";
/// Modification time set by `utimens`, as `seconds.nanoseconds`; absent, the
/// object's commit time is the file's mtime.
pub const MTIME: &str = "tessera-mtime";

pub const S_IFMT: u32 = libc::S_IFMT;
pub const S_IFREG: u32 = libc::S_IFREG;
pub const S_IFLNK: u32 = libc::S_IFLNK;
pub const S_IFDIR: u32 = libc::S_IFDIR;

/// Longest name of one path component, as most Linux file systems.
pub const NAME_MAX: usize = 255;
/// Longest object key (S3's limit).
pub const KEY_MAX: usize = 1024;

/// Who owns what carries no owner of its own.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub uid: u32,
    pub gid: u32,
}

pub fn ms_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

pub fn time_text(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

fn parse_time(s: &str) -> Option<SystemTime> {
    let (secs, nanos) = s.split_once('.').unwrap_or((s, "0"));
    let secs: u64 = secs.parse().ok()?;
    let nanos: u32 = nanos.parse().ok().filter(|n| *n < 1_000_000_000)?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// The file type and permission bits an object's metadata records.
pub fn object_mode(meta: &BTreeMap<String, String>) -> u32 {
    meta.get(MODE)
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .filter(|m| matches!(m & S_IFMT, S_IFREG | S_IFLNK))
        .unwrap_or(S_IFREG | 0o644)
}

pub fn is_symlink(meta: &BTreeMap<String, String>) -> bool {
    object_mode(meta) & S_IFMT == S_IFLNK
}

fn kind(mode: u32) -> FileType {
    match mode & S_IFMT {
        S_IFLNK => FileType::Symlink,
        S_IFDIR => FileType::Directory,
        _ => FileType::RegularFile,
    }
}

fn base(ino: u64, size: u64, mtime: SystemTime, mode: u32, uid: u32, gid: u32) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: kind(mode),
        perm: (mode & 0o7777) as u16,
        nlink: if mode & S_IFMT == S_IFDIR { 2 } else { 1 },
        uid,
        gid,
        rdev: 0,
        blksize: 1 << 20,
        flags: 0,
    }
}

/// Attributes of a file from its metadata; `size` is the object's, or an
/// open file's when it has unsaved writes.
pub fn file_attr(
    ino: u64,
    size: u64,
    mtime_ms: u64,
    meta: &BTreeMap<String, String>,
    d: Defaults,
) -> FileAttr {
    let mtime = meta
        .get(MTIME)
        .and_then(|t| parse_time(t))
        .unwrap_or_else(|| ms_time(mtime_ms));
    let num = |k: &str, default: u32| meta.get(k).and_then(|v| v.parse().ok()).unwrap_or(default);
    base(
        ino,
        size,
        mtime,
        object_mode(meta),
        num(UID, d.uid),
        num(GID, d.gid),
    )
}

pub fn object_attr(ino: u64, o: &ObjectInfo, d: Defaults) -> FileAttr {
    file_attr(ino, o.size, o.mtime_ms, &o.user_meta, d)
}

pub fn dir_attr(ino: u64, info: Option<&DirInfo>, d: Defaults) -> FileAttr {
    let info = info.copied().unwrap_or_default();
    base(
        ino,
        0,
        ms_time(info.mtime_ms),
        S_IFDIR | info.mode.unwrap_or(0o755) & 0o7777,
        info.uid.unwrap_or(d.uid),
        info.gid.unwrap_or(d.gid),
    )
}

/// The errno a failed cluster call means to a program.
pub fn errno(e: &SdkError) -> Errno {
    match e.code() {
        Some(ErrorCode::NoSuchKey | ErrorCode::NotFound | ErrorCode::NoSuchBucket) => Errno::ENOENT,
        Some(ErrorCode::PreconditionFailed | ErrorCode::BucketExists) => Errno::EEXIST,
        Some(ErrorCode::NotEmpty | ErrorCode::BucketNotEmpty) => Errno::ENOTEMPTY,
        Some(ErrorCode::InvalidKey) => Errno::ENAMETOOLONG,
        Some(ErrorCode::NoSpace) => Errno::ENOSPC,
        Some(ErrorCode::TooLarge) => Errno::EFBIG,
        Some(ErrorCode::BadRequest | ErrorCode::InvalidBucketName | ErrorCode::InvalidPolicy) => {
            Errno::EINVAL
        }
        _ => Errno::EIO,
    }
}
