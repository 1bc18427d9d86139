//! What an NBD server serves: the exports and their block devices. The
//! server calls these; implementations (Tessera volumes, [`crate::MemoryDevice`])
//! know nothing of the wire.

use std::sync::Arc;

use async_trait::async_trait;

use crate::wire;

/// One export as `NBD_OPT_LIST` shows it (spec "Option reply types",
/// `NBD_REP_SERVER`): its name and a human-readable description (may be
/// empty). Both are strings as the spec's "Conventions" define them (UTF-8,
/// no NUL, at most 4096 bytes); longer descriptions are cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// The name a client passes to `NBD_OPT_GO` / `NBD_OPT_EXPORT_NAME`.
    pub name: String,
    /// Free text for humans (`nbdinfo --list` shows it).
    pub description: String,
}

/// The set of exports a server serves, by name.
///
/// The server shares one open device among all connections to the same name
/// (which is what makes `NBD_FLAG_CAN_MULTI_CONN` true: a FLUSH on one
/// connection covers writes replied to on any other), so [`Exports::open`]
/// is called once per name while any connection uses it, and
/// [`BlockDevice::close`] once the last connection to it ends. `NBD_OPT_INFO`
/// opens the export too (and closes it again if nobody else uses it).
#[async_trait]
pub trait Exports: Send + Sync + 'static {
    /// Every export, for `NBD_OPT_LIST`.
    async fn list(&self) -> Result<Vec<ExportSummary>, DeviceError>;

    /// Opens export `name` (for Tessera: a volume, or `VOLUME@SNAP`
    /// read-only). The empty name is the spec's "default export"; refuse it
    /// with [`DeviceError::NotFound`] if there is none.
    ///
    /// Errors are answered during `NBD_OPT_GO` / `NBD_OPT_INFO` as
    /// [`DeviceError::option_reply`] says (`NotFound` -> `NBD_REP_ERR_UNKNOWN`,
    /// `Busy` -> `NBD_REP_ERR_POLICY` with the message); during
    /// `NBD_OPT_EXPORT_NAME`, which cannot carry an error, by closing the
    /// connection.
    async fn open(&self, name: &str) -> Result<Arc<dyn BlockDevice>, DeviceError>;
}

/// One open block device: a fixed number of bytes addressed by offset.
///
/// The server checks every request before calling: offsets and lengths are
/// multiples of [`BlockDevice::block_size`], `offset + len <= size()`,
/// `len <= MAX_PAYLOAD` for read and write, and no write reaches a device
/// whose [`BlockDevice::read_only`] is true. Calls run concurrently (up to
/// the server's in-flight limit per connection, and across connections to
/// the same export).
#[async_trait]
pub trait BlockDevice: Send + Sync + 'static {
    /// Size in bytes; a multiple of [`BlockDevice::block_size`] (spec "Size
    /// constraints": otherwise the last bytes cannot be addressed).
    fn size(&self) -> u64;

    /// The device's block size in bytes, a power of two from 512 to 65536
    /// (512 or 4096 for Tessera volumes). Advertised as the minimum and the
    /// preferred block size (`NBD_INFO_BLOCK_SIZE`; the preferred size is at
    /// least 4096); requests not aligned to it are refused with `NBD_EINVAL`.
    fn block_size(&self) -> u32;

    /// A read-only device (a snapshot): advertised with `NBD_FLAG_READ_ONLY`,
    /// and writes, trims and write-zeroes are refused with `NBD_EPERM`
    /// without calling the device.
    fn read_only(&self) -> bool;

    /// A description for `NBD_INFO_DESCRIPTION`; empty for none.
    fn description(&self) -> String {
        String::new()
    }

    /// Reads `len` bytes at `offset`. Must return exactly `len` bytes (a
    /// shorter or longer answer is a device bug, answered `NBD_EIO`).
    /// Never-written ranges read as zeros.
    async fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, DeviceError>;

    /// Writes `data` at `offset`. With `fua` (`NBD_CMD_FLAG_FUA`), returns
    /// only once the data is durable; without, once later reads see it.
    async fn write(&self, offset: u64, data: Vec<u8>, fua: bool) -> Result<(), DeviceError>;

    /// Makes durable every write, trim and write-zeroes that returned before
    /// this call started (spec "Ordering of messages and writes": a FLUSH
    /// covers every write the server replied to before it; the server
    /// replies to a write only after the device call returned).
    async fn flush(&self) -> Result<(), DeviceError>;

    /// Discards `[offset, offset + len)`: it should read as zeros afterwards
    /// and may become a hole (`NBD_CMD_TRIM` is a hint: the spec lets a
    /// client assume nothing about the range until it writes it again).
    /// A FUA trim is followed by a [`BlockDevice::flush`].
    async fn trim(&self, offset: u64, len: u32) -> Result<(), DeviceError>;

    /// Makes `[offset, offset + len)` read as zeros (`NBD_CMD_WRITE_ZEROES`).
    /// `no_hole` is `NBD_CMD_FLAG_NO_HOLE`: the client asks that the range
    /// stay allocated rather than become a hole (a thin device that cannot
    /// promise allocation anyway may ignore it); `fua` as for
    /// [`BlockDevice::write`].
    async fn write_zeroes(
        &self,
        offset: u64,
        len: u32,
        no_hole: bool,
        fua: bool,
    ) -> Result<(), DeviceError>;

    /// Allocation of `[offset, offset + len)` for the `base:allocation`
    /// metadata context (spec "`base:allocation` metadata context"):
    /// consecutive extents starting at `offset`, covering at least its first
    /// byte; they may stop before `offset + len` (the client asks again from
    /// where they stop) or run past it. Lengths should be multiples of the
    /// block size. An empty answer or a zero-length extent is a device bug:
    /// the server then reports the whole range as allocated data, which the
    /// spec allows for any block.
    async fn block_status(&self, offset: u64, len: u32) -> Result<Vec<Extent>, DeviceError>;

    /// Called once when the last connection using this device ends (or
    /// after an `NBD_OPT_INFO` nobody else holds it open for). Should
    /// flush and release what [`Exports::open`] took (for Tessera: the
    /// volume's writer lease).
    async fn close(&self);
}

/// A run of bytes with one allocation state, as `NBD_REPLY_TYPE_BLOCK_STATUS`
/// reports it for `base:allocation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Bytes in the run; nonzero.
    pub len: u32,
    /// Not allocated (`NBD_STATE_HOLE`): writing it may need space.
    pub hole: bool,
    /// Reads as zeros (`NBD_STATE_ZERO`).
    pub zero: bool,
}

impl Extent {
    /// The status flags of `base:allocation`.
    pub fn flags(&self) -> u32 {
        (if self.hole { wire::STATE_HOLE } else { 0 })
            | (if self.zero { wire::STATE_ZERO } else { 0 })
    }
}

/// What a device or the export set can fail with. Each maps to an NBD error
/// value in transmission ([`DeviceError::errno`], spec "Error values") and
/// to an option reply during negotiation ([`DeviceError::option_reply`]);
/// the message goes to the client in an `NBD_REPLY_TYPE_ERROR` chunk when
/// structured replies were negotiated, and to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The storage failed: `NBD_EIO`.
    #[error("I/O error: {0}")]
    Io(String),
    /// No space (or quota) left: `NBD_ENOSPC`.
    #[error("no space left: {0}")]
    NoSpace(String),
    /// The request makes no sense for this device: `NBD_EINVAL`.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A write to something read-only, e.g. a snapshot: `NBD_EPERM`.
    #[error("read-only: {0}")]
    ReadOnly(String),
    /// No such export (from [`Exports::open`]): `NBD_REP_ERR_UNKNOWN`
    /// (`NBD_EIO` if it vanishes during transmission).
    #[error("no such export: {0}")]
    NotFound(String),
    /// The export is in use elsewhere (e.g. attached by another writer):
    /// `NBD_REP_ERR_POLICY` with the message, `NBD_EIO` in transmission.
    #[error("busy: {0}")]
    Busy(String),
    /// This device may not be used any more (shutting down, or the writer
    /// lease was lost): `NBD_ESHUTDOWN`, which tells the client to
    /// disconnect; `NBD_REP_ERR_SHUTDOWN` during negotiation.
    #[error("shut down: {0}")]
    Shutdown(String),
}

impl DeviceError {
    /// The NBD error value for a transmission reply (spec "Error values").
    pub fn errno(&self) -> u32 {
        match self {
            DeviceError::Io(_) | DeviceError::NotFound(_) | DeviceError::Busy(_) => wire::EIO,
            DeviceError::NoSpace(_) => wire::ENOSPC,
            DeviceError::Invalid(_) => wire::EINVAL,
            DeviceError::ReadOnly(_) => wire::EPERM,
            DeviceError::Shutdown(_) => wire::ESHUTDOWN,
        }
    }

    /// The option reply type for a failed `NBD_OPT_GO` / `NBD_OPT_INFO` /
    /// `NBD_OPT_LIST` (spec "Option reply types").
    pub fn option_reply(&self) -> u32 {
        match self {
            DeviceError::NotFound(_) | DeviceError::Io(_) => wire::REP_ERR_UNKNOWN,
            DeviceError::Invalid(_) => wire::REP_ERR_INVALID,
            DeviceError::Shutdown(_) => wire::REP_ERR_SHUTDOWN,
            DeviceError::Busy(_) | DeviceError::NoSpace(_) | DeviceError::ReadOnly(_) => {
                wire::REP_ERR_POLICY
            }
        }
    }
}
