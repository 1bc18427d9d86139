//! The transmission phase (spec "Transmission", "Request types"): requests
//! read in order, each checked and then run as its own task against the
//! device (up to the in-flight limit), replies written as they finish by one
//! writer.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, info, warn};

use crate::device::{BlockDevice, DeviceError, Extent};
use crate::wire::{self, RequestHeader};
use crate::{ConnectionError, MAX_PAYLOAD};

/// Payload bytes (write data received, read data to send) that one
/// connection may hold in flight.
const MAX_IN_FLIGHT_BYTES: u32 = 128 << 20;

/// Extents per `NBD_REPLY_TYPE_BLOCK_STATUS` chunk: "Servers SHOULD NOT send
/// more than 2^20 extents in a single reply chunk".
const MAX_EXTENTS: usize = 1 << 20;

/// The context id `NBD_OPT_SET_META_CONTEXT` gives `base:allocation`.
pub(crate) const BASE_ALLOCATION_ID: u32 = 1;

/// What the server advertises for an open device and checks requests
/// against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExportParams {
    pub size: u64,
    pub block_size: u32,
    pub read_only: bool,
}

impl ExportParams {
    /// Refuses a device whose block size the spec does not allow as a
    /// minimum block size ("Size constraints": a power of two, at most
    /// 2^16) or whose size is not a multiple of it.
    pub fn new(device: &dyn BlockDevice) -> Result<Self, String> {
        let block_size = device.block_size();
        if !block_size.is_power_of_two() || block_size > 65536 {
            return Err(format!(
                "block size {block_size} is not a power of two up to 65536"
            ));
        }
        let size = device.size();
        if !size.is_multiple_of(block_size as u64) {
            return Err(format!(
                "size {size} is not a multiple of the block size {block_size}"
            ));
        }
        Ok(Self {
            size,
            block_size,
            read_only: device.read_only(),
        })
    }

    /// Transmission flags ("Transmission flags"). A read-only export does
    /// not advertise the write-side commands.
    pub fn flags(&self, structured: bool) -> u16 {
        let mut flags = wire::FLAG_HAS_FLAGS | wire::FLAG_SEND_FLUSH | wire::FLAG_CAN_MULTI_CONN;
        if self.read_only {
            flags |= wire::FLAG_READ_ONLY;
        } else {
            flags |= wire::FLAG_SEND_FUA | wire::FLAG_SEND_TRIM | wire::FLAG_SEND_WRITE_ZEROES;
        }
        // Every read is answered in one content chunk, so "don't fragment"
        // costs nothing to honour.
        if structured {
            flags |= wire::FLAG_SEND_DF;
        }
        flags
    }

    /// `NBD_INFO_BLOCK_SIZE`: minimum, preferred and maximum payload.
    pub fn block_sizes(&self) -> (u32, u32, u32) {
        (self.block_size, self.block_size.max(4096), MAX_PAYLOAD)
    }
}

/// One connection's negotiated state for transmission.
pub(crate) struct Session {
    pub device: Arc<dyn BlockDevice>,
    pub params: ExportParams,
    pub structured: bool,
    pub base_allocation: bool,
}

/// A checked request, ready for the device.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Read {
        offset: u64,
        len: u32,
    },
    Write {
        offset: u64,
        fua: bool,
    },
    Flush,
    Trim {
        offset: u64,
        len: u32,
        fua: bool,
    },
    WriteZeroes {
        offset: u64,
        len: u32,
        no_hole: bool,
        fua: bool,
    },
    BlockStatus {
        offset: u64,
        len: u32,
        req_one: bool,
    },
    /// A zero-length read, write, trim or write-zeroes: the spec leaves
    /// them unspecified but says not to disconnect; they succeed and do
    /// nothing.
    Nothing,
}

/// A request refused before reaching the device: an NBD error value and a
/// message for the client.
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    errno: u32,
    message: String,
}

fn refuse(errno: u32, message: impl Into<String>) -> Refusal {
    Refusal {
        errno,
        message: message.into(),
    }
}

/// Checks a request against the export (spec "Request types", "Size
/// constraints", "Error values"): unknown commands and flags -> `EINVAL`;
/// writes to a read-only export -> `EPERM`; read/write payloads over
/// [`MAX_PAYLOAD`] -> `EINVAL`; offsets or lengths not multiples of the
/// minimum block size -> `EINVAL`; ranges past the end -> `ENOSPC` for
/// write and write-zeroes, `EINVAL` otherwise; block status without a
/// negotiated `base:allocation` context -> `EINVAL`.
fn check(
    h: &RequestHeader,
    p: &ExportParams,
    structured: bool,
    base_allocation: bool,
) -> Result<Command, Refusal> {
    use wire::*;
    let (allowed_flags, writes) = match h.kind {
        CMD_READ => (
            CMD_FLAG_FUA | if structured { CMD_FLAG_DF } else { 0 },
            false,
        ),
        CMD_WRITE => (CMD_FLAG_FUA, true),
        CMD_FLUSH => (CMD_FLAG_FUA, false),
        CMD_TRIM => (CMD_FLAG_FUA, true),
        CMD_WRITE_ZEROES => (CMD_FLAG_FUA | CMD_FLAG_NO_HOLE, true),
        CMD_BLOCK_STATUS => (CMD_FLAG_FUA | CMD_FLAG_REQ_ONE, false),
        other => {
            return Err(refuse(
                EINVAL,
                format!("unknown or unsupported command {other}"),
            ));
        }
    };
    if h.flags & !allowed_flags != 0 {
        let message = if h.kind == CMD_WRITE_ZEROES && h.flags & CMD_FLAG_FAST_ZERO != 0 {
            // "If the server did not advertise NBD_FLAG_SEND_FAST_ZERO, then
            // it ... SHOULD fail with NBD_EINVAL".
            "NBD_CMD_FLAG_FAST_ZERO was not advertised".to_string()
        } else {
            format!(
                "command flags {:#x} not valid for command {}",
                h.flags & !allowed_flags,
                h.kind
            )
        };
        return Err(refuse(EINVAL, message));
    }
    let fua = h.flags & CMD_FLAG_FUA != 0;
    if h.kind == CMD_FLUSH {
        return Ok(Command::Flush);
    }
    if writes && p.read_only {
        return Err(refuse(EPERM, "the export is read-only"));
    }
    if h.kind == CMD_BLOCK_STATUS {
        if !(structured && base_allocation) {
            return Err(refuse(
                EINVAL,
                "block status needs the base:allocation context (NBD_OPT_SET_META_CONTEXT)",
            ));
        }
        if h.len == 0 || h.offset >= p.size || h.offset.saturating_add(h.len as u64) > p.size {
            return Err(refuse(
                EINVAL,
                format!(
                    "block status of {}+{} outside the export's {} bytes",
                    h.offset, h.len, p.size
                ),
            ));
        }
        return Ok(Command::BlockStatus {
            offset: h.offset,
            len: h.len,
            req_one: h.flags & CMD_FLAG_REQ_ONE != 0,
        });
    }
    if (h.kind == CMD_READ || h.kind == CMD_WRITE) && h.len > MAX_PAYLOAD {
        return Err(refuse(
            EINVAL,
            format!("length {} exceeds the maximum payload {MAX_PAYLOAD}", h.len),
        ));
    }
    let bs = p.block_size as u64;
    if !h.offset.is_multiple_of(bs) || !(h.len as u64).is_multiple_of(bs) {
        return Err(refuse(
            EINVAL,
            format!(
                "{}+{} is not aligned to the block size {bs}",
                h.offset, h.len
            ),
        ));
    }
    if h.offset
        .checked_add(h.len as u64)
        .is_none_or(|end| end > p.size)
    {
        let errno = if h.kind == CMD_WRITE || h.kind == CMD_WRITE_ZEROES {
            ENOSPC
        } else {
            EINVAL
        };
        return Err(refuse(
            errno,
            format!(
                "{}+{} beyond the export's {} bytes",
                h.offset, h.len, p.size
            ),
        ));
    }
    if h.len == 0 {
        return Ok(Command::Nothing);
    }
    Ok(match h.kind {
        CMD_READ => Command::Read {
            offset: h.offset,
            len: h.len,
        },
        CMD_WRITE => Command::Write {
            offset: h.offset,
            fua,
        },
        CMD_TRIM => Command::Trim {
            offset: h.offset,
            len: h.len,
            fua,
        },
        _ => Command::WriteZeroes {
            offset: h.offset,
            len: h.len,
            no_hole: h.flags & CMD_FLAG_NO_HOLE != 0,
            fua,
        },
    })
}

/// The `base:allocation` descriptors for a block status reply (spec
/// `NBD_REPLY_TYPE_BLOCK_STATUS`): consecutive equal extents merged, cut
/// after the first that reaches `len` (or to one extent no longer than `len`
/// with `req_one`), never past `limit` bytes (the end of the export) nor
/// more than 2^20. A device answer that is empty or has zero-length extents
/// becomes one allocated extent of `len`, which the spec allows for any
/// block.
fn descriptors(extents: &[Extent], len: u32, limit: u64, req_one: bool) -> Vec<(u32, u32)> {
    if extents.is_empty() || extents.iter().any(|e| e.len == 0) {
        return vec![(len, 0)];
    }
    let mut out: Vec<(u32, u32)> = Vec::new();
    let mut covered: u64 = 0;
    for e in extents {
        if covered >= len as u64 || covered >= limit || out.len() >= MAX_EXTENTS {
            break;
        }
        let n = (e.len as u64).min(limit - covered) as u32;
        match out.last_mut() {
            Some(last) if last.1 == e.flags() => last.0 = last.0.saturating_add(n),
            _ => out.push((n, e.flags())),
        }
        covered += n as u64;
    }
    if req_one {
        out.truncate(1);
        out[0].0 = out[0].0.min(len);
    }
    out
}

/// A reply ready for the writer: header bytes, then data (empty for none).
struct Reply {
    head: Vec<u8>,
    data: Vec<u8>,
}

fn error_reply(cookie: u64, structured: bool, errno: u32, message: &str) -> Reply {
    // With structured replies, errors go in an error chunk, which carries a
    // message ("The server SHOULD prefer sending errors via a structured
    // reply"), and a read must not get a simple reply.
    let head = if structured {
        wire::error_chunk(cookie, errno, message)
    } else {
        wire::simple_reply(cookie, errno)
    };
    Reply {
        head,
        data: Vec::new(),
    }
}

fn ok_reply(cookie: u64) -> Reply {
    Reply {
        head: wire::simple_reply(cookie, 0),
        data: Vec::new(),
    }
}

fn read_reply(cookie: u64, structured: bool, offset: u64, data: Vec<u8>) -> Reply {
    if !structured {
        return Reply {
            head: wire::simple_reply(cookie, 0),
            data,
        };
    }
    if data.is_empty() {
        return Reply {
            head: wire::chunk_header(wire::REPLY_FLAG_DONE, wire::REPLY_TYPE_NONE, cookie, 0),
            data,
        };
    }
    let mut head = wire::chunk_header(
        wire::REPLY_FLAG_DONE,
        wire::REPLY_TYPE_OFFSET_DATA,
        cookie,
        8 + data.len() as u32,
    );
    head.extend_from_slice(&offset.to_be_bytes());
    Reply { head, data }
}

/// Runs one request against the device and builds its reply.
async fn execute(session: &Session, h: RequestHeader, payload: Vec<u8>) -> Reply {
    let structured = session.structured;
    let command = match check(&h, &session.params, structured, session.base_allocation) {
        Ok(command) => command,
        Err(refusal) => {
            debug!(
                kind = h.kind,
                offset = h.offset,
                len = h.len,
                errno = refusal.errno,
                "refused: {}",
                refusal.message
            );
            return error_reply(h.cookie, structured, refusal.errno, &refusal.message);
        }
    };
    let device = &session.device;
    let result = match command {
        Command::Read { offset, len } => match device.read(offset, len).await {
            Ok(data) if data.len() == len as usize => {
                Ok(read_reply(h.cookie, structured, offset, data))
            }
            Ok(data) => Err(DeviceError::Io(format!(
                "device returned {} bytes for a read of {len}",
                data.len()
            ))),
            Err(e) => Err(e),
        },
        Command::Write { offset, fua } => device
            .write(offset, payload, fua)
            .await
            .map(|()| ok_reply(h.cookie)),
        Command::Flush => device.flush().await.map(|()| ok_reply(h.cookie)),
        Command::Trim { offset, len, fua } => match device.trim(offset, len).await {
            Ok(()) if fua => device.flush().await.map(|()| ok_reply(h.cookie)),
            other => other.map(|()| ok_reply(h.cookie)),
        },
        Command::WriteZeroes {
            offset,
            len,
            no_hole,
            fua,
        } => device
            .write_zeroes(offset, len, no_hole, fua)
            .await
            .map(|()| ok_reply(h.cookie)),
        Command::BlockStatus {
            offset,
            len,
            req_one,
        } => device.block_status(offset, len).await.map(|extents| {
            let limit = session.params.size - offset;
            let descriptors = descriptors(&extents, len, limit, req_one);
            Reply {
                head: wire::block_status_chunk(h.cookie, BASE_ALLOCATION_ID, &descriptors),
                data: Vec::new(),
            }
        }),
        Command::Nothing if h.kind == wire::CMD_READ => {
            Ok(read_reply(h.cookie, structured, h.offset, Vec::new()))
        }
        Command::Nothing => Ok(ok_reply(h.cookie)),
    };
    result.unwrap_or_else(|e| {
        warn!(
            kind = h.kind,
            offset = h.offset,
            len = h.len,
            "device error: {e}"
        );
        error_reply(h.cookie, structured, e.errno(), &e.to_string())
    })
}

/// Answers `NBD_EIO` for a request whose device call panicked (a device
/// bug), so the client is not left waiting for that cookie forever. The
/// reply channel has room for every request in flight, so `try_send`
/// succeeds unless the writer is gone.
struct AnswerIfPanicking {
    replies: Option<mpsc::Sender<Reply>>,
    cookie: u64,
    structured: bool,
}

impl AnswerIfPanicking {
    fn disarm(mut self) {
        self.replies = None;
    }
}

impl Drop for AnswerIfPanicking {
    fn drop(&mut self) {
        if let Some(replies) = self.replies.take() {
            warn!(cookie = self.cookie, "device call panicked: answering EIO");
            let reply = error_reply(self.cookie, self.structured, wire::EIO, "the device failed");
            let _ = replies.try_send(reply);
        }
    }
}

/// Writes replies in the order they finish, flushing the socket when no
/// other reply is ready, until every sender is gone; then closes the stream
/// (a TLS close_notify, or a TCP FIN).
async fn write_replies<W: AsyncWrite + Unpin>(
    writer: W,
    mut replies: mpsc::Receiver<Reply>,
) -> std::io::Result<()> {
    let mut writer = BufWriter::with_capacity(256 << 10, writer);
    while let Some(mut reply) = replies.recv().await {
        loop {
            writer.write_all(&reply.head).await?;
            writer.write_all(&reply.data).await?;
            match replies.try_recv() {
                Ok(next) => reply = next,
                Err(_) => break,
            }
        }
        writer.flush().await?;
    }
    writer.shutdown().await
}

/// Serves requests until `NBD_CMD_DISC`, the client closes, or a protocol
/// violation (wrong request magic, truncated request), which ends this
/// connection only. Every request in flight is answered (or abandoned, if
/// the client is gone) before this returns.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(
    stream: S,
    session: Session,
    max_in_flight: usize,
) -> Result<(), ConnectionError> {
    let session = Arc::new(session);
    let (mut reader, writer) = tokio::io::split(stream);
    let (replies, pending) = mpsc::channel::<Reply>(max_in_flight.max(1));
    let requests = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let bytes = Arc::new(Semaphore::new(MAX_IN_FLIGHT_BYTES as usize));

    let read_requests = async {
        let replies = replies; // dropped when reading ends, so the writer can finish
        loop {
            let mut raw = [0u8; wire::REQUEST_HEADER_LEN];
            if let Err(e) = reader.read_exact(&mut raw).await {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    info!("client closed the connection without NBD_CMD_DISC");
                    return Ok(());
                }
                return Err(ConnectionError::Io(e));
            }
            let Some(h) = RequestHeader::parse(&raw) else {
                return Err(ConnectionError::Protocol("wrong request magic".into()));
            };
            if h.kind == wire::CMD_DISC {
                debug!("NBD_CMD_DISC");
                return Ok(());
            }
            let carries_payload = h.kind == wire::CMD_READ || h.kind == wire::CMD_WRITE;
            let cost = if carries_payload {
                h.len.min(MAX_PAYLOAD)
            } else {
                0
            };
            // The semaphores are never closed: acquiring only waits.
            let (Ok(slot), Ok(budget)) = (
                requests.clone().acquire_owned().await,
                bytes.clone().acquire_many_owned(cost).await,
            ) else {
                return Err(ConnectionError::Protocol("in-flight limits closed".into()));
            };
            let mut payload = Vec::new();
            if h.kind == wire::CMD_WRITE {
                if h.len > MAX_PAYLOAD {
                    // Skip the payload so the stream stays in step; the
                    // request is then refused by `check`.
                    let skipped = tokio::io::copy(
                        &mut (&mut reader).take(h.len as u64),
                        &mut tokio::io::sink(),
                    )
                    .await?;
                    if skipped < h.len as u64 {
                        return Err(ConnectionError::Protocol("write payload truncated".into()));
                    }
                } else {
                    payload = vec![0u8; h.len as usize];
                    if let Err(e) = reader.read_exact(&mut payload).await {
                        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            ConnectionError::Protocol("write payload truncated".into())
                        } else {
                            ConnectionError::Io(e)
                        });
                    }
                }
            }
            let session = session.clone();
            let replies = replies.clone();
            tokio::spawn(async move {
                let unanswered = AnswerIfPanicking {
                    replies: Some(replies.clone()),
                    cookie: h.cookie,
                    structured: session.structured,
                };
                let reply = execute(&session, h, payload).await;
                unanswered.disarm();
                // The writer is gone only if the client is: nothing to tell.
                let _ = replies.send(reply).await;
                drop((slot, budget));
            });
        }
    };
    let (read_result, write_result) = tokio::join!(read_requests, write_replies(writer, pending));
    // Wait for request tasks still running against the device (when the
    // writer failed, they finish without anyone to answer).
    let _ = requests.acquire_many(max_in_flight.max(1) as u32).await;
    read_result?;
    write_result.map_err(ConnectionError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::*;

    fn params() -> ExportParams {
        ExportParams {
            size: 1 << 20,
            block_size: 4096,
            read_only: false,
        }
    }

    fn req(kind: u16, flags: u16, offset: u64, len: u32) -> RequestHeader {
        RequestHeader {
            flags,
            kind,
            cookie: 1,
            offset,
            len,
        }
    }

    fn errno(r: Result<Command, Refusal>) -> u32 {
        r.err().map(|r| r.errno).unwrap_or(0)
    }

    #[test]
    fn checks_follow_the_spec() {
        let p = params();
        assert_eq!(
            check(&req(CMD_READ, 0, 4096, 8192), &p, false, false),
            Ok(Command::Read {
                offset: 4096,
                len: 8192
            })
        );
        assert_eq!(
            errno(check(&req(CMD_READ, 0, 100, 4096), &p, false, false)),
            EINVAL
        );
        assert_eq!(
            errno(check(&req(CMD_READ, 0, 1 << 20, 4096), &p, false, false)),
            EINVAL
        );
        assert_eq!(
            errno(check(&req(CMD_WRITE, 0, 1 << 20, 4096), &p, false, false)),
            ENOSPC
        );
        assert_eq!(
            errno(check(
                &req(CMD_WRITE_ZEROES, 0, u64::MAX - 4095, 4096),
                &p,
                false,
                false
            )),
            ENOSPC
        );
        assert_eq!(
            errno(check(
                &req(CMD_READ, 0, 0, MAX_PAYLOAD + 4096),
                &p,
                false,
                false
            )),
            EINVAL
        );
        assert_eq!(
            errno(check(
                &req(CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 0, 4096),
                &p,
                false,
                false
            )),
            EINVAL
        );
        assert_eq!(
            errno(check(
                &req(CMD_READ, CMD_FLAG_DF, 0, 4096),
                &p,
                false,
                false
            )),
            EINVAL
        );
        assert_eq!(
            check(&req(CMD_READ, CMD_FLAG_DF, 0, 4096), &p, true, false),
            Ok(Command::Read {
                offset: 0,
                len: 4096
            })
        );
        assert_eq!(errno(check(&req(5, 0, 0, 4096), &p, false, false)), EINVAL);
        assert_eq!(
            errno(check(&req(CMD_BLOCK_STATUS, 0, 0, 4096), &p, true, false)),
            EINVAL
        );
        assert_eq!(
            check(
                &req(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, 4096),
                &p,
                true,
                true
            ),
            Ok(Command::BlockStatus {
                offset: 0,
                len: 4096,
                req_one: true
            })
        );
        // Trim with a length over the payload limit is fine: no payload.
        assert!(check(&req(CMD_TRIM, CMD_FLAG_FUA, 0, 1 << 20), &p, false, false).is_ok());
        assert_eq!(
            check(&req(CMD_WRITE, 0, 0, 0), &p, false, false),
            Ok(Command::Nothing)
        );
        let ro = ExportParams {
            read_only: true,
            ..p
        };
        assert_eq!(
            errno(check(&req(CMD_WRITE, 0, 0, 4096), &ro, false, false)),
            EPERM
        );
        assert_eq!(
            errno(check(&req(CMD_TRIM, 0, 0, 4096), &ro, false, false)),
            EPERM
        );
        assert_eq!(
            check(&req(CMD_FLUSH, 0, 0, 0), &ro, false, false),
            Ok(Command::Flush)
        );
        assert_eq!(
            ro.flags(false) & (FLAG_READ_ONLY | FLAG_SEND_TRIM),
            FLAG_READ_ONLY
        );
    }

    #[test]
    fn descriptors_merge_cut_and_fall_back() {
        let hole = |len| Extent {
            len,
            hole: true,
            zero: true,
        };
        let data = |len| Extent {
            len,
            hole: false,
            zero: false,
        };
        assert_eq!(
            descriptors(&[hole(4096), hole(4096), data(8192)], 16384, 1 << 20, false),
            [(8192, 3), (8192, 0)]
        );
        // Stops after the first extent reaching the requested length.
        assert_eq!(
            descriptors(&[data(8192), hole(4096)], 4096, 1 << 20, false),
            [(8192, 0)]
        );
        assert_eq!(
            descriptors(&[data(8192), hole(4096)], 4096, 1 << 20, true),
            [(4096, 0)]
        );
        // Never past the end of the export.
        assert_eq!(descriptors(&[hole(8192)], 4096, 4096, false), [(4096, 3)]);
        assert_eq!(descriptors(&[], 4096, 1 << 20, false), [(4096, 0)]);
        assert_eq!(descriptors(&[hole(0)], 4096, 1 << 20, false), [(4096, 0)]);
    }
}
