//! `tessera mount`: a bucket, or a prefix of it, as a file system through
//! the kernel's FUSE.
//!
//! Owns the inode table, open-file state (changed chunks held in memory,
//! written as new chunks and committed copy-on-write), directory streams,
//! the attribute convention (user metadata `tessera-mode`, `-uid`, `-gid`,
//! `-mtime`) and the mapping of cluster errors to errno.
//!
//! Must not know about nodes, fragments, codecs (the SDK's), S3, or how
//! meta stores anything.
//!
//! Consistency is close-to-open, as NFS: a file's writes are durable in the
//! cluster, and visible to every other mount, S3 and the SDK, once `close`
//! (or `fsync`) returns; every `open` looks at the cluster afresh. Renames,
//! of files and of whole directories, are one meta command each: atomic,
//! and no data is copied.

mod attrs;
mod cache;
mod file;
mod fs;
mod inodes;
mod metrics;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use fs::{MountConfig, TesseraFs};
use fuser::{Config, MountOption, SessionACL};
use tessera_sdk::{Client, SdkError};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Sdk(#[from] SdkError),
    #[error("mount point {0}: {1}")]
    MountPoint(PathBuf, String),
    #[error(
        "/dev/fuse is missing: load the fuse kernel module (modprobe fuse) or give the container the device"
    )]
    NoFuse,
    #[error("mounting at {0}: {1}")]
    Mount(PathBuf, std::io::Error),
}

/// A mounted file system: its session runs on its own thread until
/// `unmount` or an external `fusermount3 -u`.
pub struct Mounted {
    /// Shared with the file system, which unmounts when the session ends.
    unmounter: Arc<Mutex<Option<fuser::SessionUnmounter>>>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
    inner: std::sync::Arc<fs::Inner>,
    mountpoint: PathBuf,
}

/// Whether `dir` is a mount point now (per /proc/self/mountinfo).
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // Field 5 is the mount point, with spaces and the like escaped as \040.
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| unescape(m) == dir.to_string_lossy())
    })
}

fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks the mount point and /dev/fuse, then mounts. Must be called
/// within a tokio runtime, which serves the file system's requests.
pub async fn mount(
    client: Client,
    mountpoint: &Path,
    cfg: MountConfig,
    allow_other: bool,
) -> Result<Mounted, MountError> {
    let meta = std::fs::metadata(mountpoint)
        .map_err(|e| MountError::MountPoint(mountpoint.to_path_buf(), e.to_string()))?;
    if !meta.is_dir() {
        return Err(MountError::MountPoint(
            mountpoint.to_path_buf(),
            "not a directory".into(),
        ));
    }
    if is_mounted(mountpoint) {
        return Err(MountError::MountPoint(
            mountpoint.to_path_buf(),
            "busy: something is already mounted there".into(),
        ));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(MountError::NoFuse);
    }
    client.bucket(&cfg.bucket).await?;
    let read_only = cfg.read_only;
    let name = format!("tessera:{}/{}", cfg.bucket, cfg.prefix);
    let mut fs = TesseraFs::new(client, cfg).await?;
    let inner = fs.inner.clone();
    let unmounter = fs.unmounter.clone();
    fs.mountpoint = mountpoint
        .canonicalize()
        .unwrap_or_else(|_| mountpoint.to_path_buf());
    let mut options = vec![
        MountOption::FSName(name),
        MountOption::Subtype("tessera".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    options.push(if read_only {
        MountOption::RO
    } else {
        MountOption::RW
    });
    let mut config = Config::default();
    config.mount_options = options;
    config.acl = if allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let point = mountpoint.to_path_buf();
    // Mounting waits for the kernel's first request: off the runtime.
    let mut session = tokio::task::spawn_blocking(move || fuser::Session::new(fs, &point, &config))
        .await
        .map_err(|e| MountError::Mount(mountpoint.to_path_buf(), std::io::Error::other(e)))?
        .map_err(|e| MountError::Mount(mountpoint.to_path_buf(), e))?;
    *unmounter.lock().unwrap_or_else(|p| p.into_inner()) = Some(session.unmount_callable());
    let thread = std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || session.run())
        .map_err(|e| MountError::Mount(mountpoint.to_path_buf(), e))?;
    Ok(Mounted {
        unmounter,
        thread,
        inner,
        mountpoint: mountpoint.to_path_buf(),
    })
}

impl Mounted {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The mount's counters in the Prometheus text format.
    pub fn metrics(&self) -> impl Fn() -> String + Clone + Send + Sync + 'static {
        let m = self.inner.metrics.clone();
        move || m.render()
    }

    /// Whether the session ended (unmounted from outside).
    pub fn finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Saves every open file, unmounts and waits for the session to end.
    pub async fn unmount(self) -> Result<(), MountError> {
        self.inner.flush_all().await;
        let point = self.mountpoint.clone();
        let result = match self
            .unmounter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            Some(u) => u.unmount(),
            None => Ok(()),
        };
        if let Err(e) = result {
            // Busy (a process has a file open): detach it lazily, as
            // `fusermount3 -u -z` does; the kernel finishes when idle.
            tracing::warn!(error = %e, "unmount failed; detaching lazily");
            let _ = std::process::Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&point)
                .status();
        }
        join(self.thread, point).await
    }

    /// Waits until the session ends on its own (an external unmount).
    pub async fn wait(self) -> Result<(), MountError> {
        join(self.thread, self.mountpoint).await
    }
}

async fn join(
    thread: std::thread::JoinHandle<std::io::Result<()>>,
    point: PathBuf,
) -> Result<(), MountError> {
    let failed = |e: std::io::Error| MountError::Mount(point.clone(), e);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|e| failed(std::io::Error::other(e)))?
        .map_err(|_| failed(std::io::Error::other("session thread panicked")))?
        .map_err(failed)
}
