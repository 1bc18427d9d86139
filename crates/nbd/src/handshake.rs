//! The handshake phase (spec "Fixed newstyle negotiation", "Option types",
//! "TLS support"): the greeting, then options until the client picks an
//! export, aborts, or asks for TLS.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info, warn};

use crate::ConnectionError;
use crate::device::BlockDevice;
use crate::exports::{ExportTable, OpenExport};
use crate::transmission::{BASE_ALLOCATION_ID, ExportParams, Session};
use crate::wire::{self, InfoRequest, MetaContextRequest, OptionHeader};

/// Option data the server reads; longer options are skipped and refused
/// with `NBD_REP_ERR_TOO_BIG`. The largest legitimate option is a few
/// strings of at most 4096 bytes each.
const MAX_OPTION_LEN: u32 = 64 << 10;

/// What option haggling ended with.
pub(crate) enum Outcome {
    /// `NBD_OPT_GO` or `NBD_OPT_EXPORT_NAME` succeeded: transmission on
    /// `export`, which the caller releases when transmission ends.
    Transmission {
        export: OpenExport,
        session: Session,
    },
    /// `NBD_OPT_STARTTLS` was acknowledged: the caller starts TLS and
    /// negotiates again over it.
    StartTls,
    /// `NBD_OPT_ABORT`, or the client closed the connection.
    Ended,
}

/// The per-connection negotiation state.
pub(crate) struct Negotiation {
    pub table: Arc<ExportTable>,
    pub tls_available: bool,
    pub tls_required: bool,
    pub tls_active: bool,
    pub no_zeroes: bool,
    pub structured: bool,
    /// The export `base:allocation` was selected for by the last
    /// `NBD_OPT_SET_META_CONTEXT`.
    pub meta_export: Option<String>,
}

impl Negotiation {
    /// TLS started: "the server MUST NOT preserve any negotiation state
    /// (such as a request for NBD_OPT_STRUCTURED_REPLY, or metadata
    /// contexts from NBD_OPT_SET_META_CONTEXT) issued before this command".
    pub fn start_tls(&mut self) {
        self.tls_active = true;
        self.structured = false;
        self.meta_export = None;
    }
}

/// Sends the greeting ("Newstyle negotiation": NBDMAGIC, IHAVEOPT,
/// handshake flags) and reads the client flags. Unknown client flags end the
/// connection ("the server MUST drop the TCP connection if the client sets
/// an unknown flag").
pub(crate) async fn greet<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    n: &mut Negotiation,
) -> Result<(), ConnectionError> {
    let mut greeting = Vec::with_capacity(18);
    greeting.extend_from_slice(&wire::NBDMAGIC.to_be_bytes());
    greeting.extend_from_slice(&wire::IHAVEOPT.to_be_bytes());
    greeting.extend_from_slice(&(wire::FLAG_FIXED_NEWSTYLE | wire::FLAG_NO_ZEROES).to_be_bytes());
    stream.write_all(&greeting).await?;
    stream.flush().await?;
    let client_flags = stream.read_u32().await.map_err(truncated("client flags"))?;
    let known = wire::FLAG_C_FIXED_NEWSTYLE | wire::FLAG_C_NO_ZEROES;
    if client_flags & !known != 0 {
        return Err(ConnectionError::Protocol(format!(
            "unknown client flags {client_flags:#x}"
        )));
    }
    // "The server MUST operate in NOTLS mode unless ... the client replied
    // with NBD_FLAG_C_FIXED_NEWSTYLE".
    if client_flags & wire::FLAG_C_FIXED_NEWSTYLE == 0 && n.tls_required {
        return Err(ConnectionError::Protocol(
            "client without fixed newstyle, and TLS is required".into(),
        ));
    }
    n.no_zeroes = client_flags & wire::FLAG_C_NO_ZEROES != 0;
    Ok(())
}

fn truncated(what: &'static str) -> impl Fn(std::io::Error) -> ConnectionError {
    move |e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ConnectionError::Protocol(format!("connection closed in the middle of the {what}"))
        } else {
            ConnectionError::Io(e)
        }
    }
}

async fn reply<S: AsyncWrite + Unpin>(
    stream: &mut S,
    option: u32,
    reply_type: u32,
    data: &[u8],
) -> std::io::Result<()> {
    stream
        .write_all(&wire::option_reply(option, reply_type, data))
        .await?;
    stream.flush().await
}

async fn refuse<S: AsyncWrite + Unpin>(
    stream: &mut S,
    option: u32,
    reply_type: u32,
    message: &str,
) -> std::io::Result<()> {
    debug!(option, reply_type, "option refused: {message}");
    reply(stream, option, reply_type, wire::message_bytes(message)).await
}

/// Reads and answers options until one ends the handshake phase.
pub(crate) async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    n: &mut Negotiation,
) -> Result<Outcome, ConnectionError> {
    loop {
        let mut raw = [0u8; 16];
        if let Err(e) = stream.read_exact(&mut raw).await {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                info!("client closed the connection during option haggling");
                return Ok(Outcome::Ended);
            }
            return Err(ConnectionError::Io(e));
        }
        let Some(OptionHeader { option, len }) = OptionHeader::parse(&raw) else {
            return Err(ConnectionError::Protocol(
                "wrong option magic (expected IHAVEOPT)".into(),
            ));
        };
        if len > MAX_OPTION_LEN {
            if option == wire::OPT_EXPORT_NAME {
                // No error reply exists for it, and no name is that long.
                return Err(ConnectionError::Protocol(format!(
                    "NBD_OPT_EXPORT_NAME of {len} bytes"
                )));
            }
            let skipped =
                tokio::io::copy(&mut (&mut *stream).take(len as u64), &mut tokio::io::sink())
                    .await?;
            if skipped < len as u64 {
                return Err(ConnectionError::Protocol("option data truncated".into()));
            }
            if n.tls_required && !n.tls_active {
                // Whatever it was, nothing but STARTTLS (which has no data)
                // is answered before TLS.
                refuse(stream, option, wire::REP_ERR_TLS_REQD, "TLS is required").await?;
            } else {
                let message =
                    format!("option data of {len} bytes exceeds the limit of {MAX_OPTION_LEN}");
                refuse(stream, option, wire::REP_ERR_TOO_BIG, &message).await?;
            }
            continue;
        }
        let mut data = vec![0u8; len as usize];
        stream
            .read_exact(&mut data)
            .await
            .map_err(truncated("option data"))?;

        // FORCEDTLS ("TLS support"): everything but STARTTLS and ABORT is
        // refused until TLS is up; EXPORT_NAME cannot be refused, so it ends
        // the session.
        if n.tls_required
            && !n.tls_active
            && option != wire::OPT_STARTTLS
            && option != wire::OPT_ABORT
        {
            if option == wire::OPT_EXPORT_NAME {
                return Err(ConnectionError::Protocol(
                    "NBD_OPT_EXPORT_NAME before TLS, which is required".into(),
                ));
            }
            refuse(
                stream,
                option,
                wire::REP_ERR_TLS_REQD,
                "TLS is required: send NBD_OPT_STARTTLS first",
            )
            .await?;
            continue;
        }

        match option {
            wire::OPT_EXPORT_NAME => return export_name(stream, n, &data).await,
            wire::OPT_ABORT => {
                // "the server SHOULD gracefully handle the client sending an
                // NBD_OPT_ABORT and closing the connection without waiting".
                let _ = reply(stream, option, wire::REP_ACK, &[]).await;
                return Ok(Outcome::Ended);
            }
            wire::OPT_LIST => list(stream, n, &data).await?,
            wire::OPT_STARTTLS => {
                if !data.is_empty() {
                    refuse(
                        stream,
                        option,
                        wire::REP_ERR_INVALID,
                        "NBD_OPT_STARTTLS carries no data",
                    )
                    .await?;
                } else if n.tls_active {
                    refuse(
                        stream,
                        option,
                        wire::REP_ERR_INVALID,
                        "TLS is already active",
                    )
                    .await?;
                } else if !n.tls_available {
                    refuse(
                        stream,
                        option,
                        wire::REP_ERR_UNSUP,
                        "this server has no TLS configured",
                    )
                    .await?;
                } else {
                    reply(stream, option, wire::REP_ACK, &[]).await?;
                    return Ok(Outcome::StartTls);
                }
            }
            wire::OPT_INFO | wire::OPT_GO => {
                if let Some(outcome) = info_or_go(stream, n, option, &data).await? {
                    return Ok(outcome);
                }
            }
            wire::OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    refuse(
                        stream,
                        option,
                        wire::REP_ERR_INVALID,
                        "NBD_OPT_STRUCTURED_REPLY carries no data",
                    )
                    .await?;
                } else if n.structured {
                    refuse(
                        stream,
                        option,
                        wire::REP_ERR_INVALID,
                        "structured replies already negotiated",
                    )
                    .await?;
                } else {
                    n.structured = true;
                    reply(stream, option, wire::REP_ACK, &[]).await?;
                }
            }
            wire::OPT_LIST_META_CONTEXT | wire::OPT_SET_META_CONTEXT => {
                meta_context(stream, n, option, &data).await?
            }
            other => {
                refuse(
                    stream,
                    other,
                    wire::REP_ERR_UNSUP,
                    &format!("option {other} is not supported"),
                )
                .await?;
            }
        }
    }
}

/// `NBD_OPT_EXPORT_NAME`: cannot answer an error, so a failure ends the
/// session; success answers size, flags and (unless `NBD_FLAG_C_NO_ZEROES`)
/// 124 zero bytes.
async fn export_name<S: AsyncWrite + Unpin>(
    stream: &mut S,
    n: &mut Negotiation,
    data: &[u8],
) -> Result<Outcome, ConnectionError> {
    let name = wire::parse_string(data, "export name")
        .map_err(|e| ConnectionError::Protocol(format!("NBD_OPT_EXPORT_NAME: invalid {}", e.0)))?;
    let export = n
        .table
        .acquire(&name)
        .await
        .map_err(|error| ConnectionError::Open {
            name: name.clone(),
            error,
        })?;
    let params = match ExportParams::new(export.device.as_ref()) {
        Ok(params) => params,
        Err(message) => {
            export.release().await;
            return Err(ConnectionError::Protocol(format!(
                "export {name:?} is unusable: {message}"
            )));
        }
    };
    let mut answer = Vec::with_capacity(134);
    answer.extend_from_slice(&params.size.to_be_bytes());
    answer.extend_from_slice(&params.flags(n.structured).to_be_bytes());
    if !n.no_zeroes {
        answer.extend_from_slice(&[0u8; 124]);
    }
    let sent = async {
        stream.write_all(&answer).await?;
        stream.flush().await
    };
    if let Err(e) = sent.await {
        export.release().await;
        return Err(e.into());
    }
    info!(export = %name, "transmission (NBD_OPT_EXPORT_NAME)");
    let session = session(n, &name, export.device.clone(), params);
    Ok(Outcome::Transmission { export, session })
}

fn session(
    n: &Negotiation,
    name: &str,
    device: Arc<dyn BlockDevice>,
    params: ExportParams,
) -> Session {
    Session {
        device,
        params,
        structured: n.structured,
        base_allocation: n.structured && n.meta_export.as_deref() == Some(name),
    }
}

/// `NBD_OPT_LIST`: one `NBD_REP_SERVER` per export (name length, name,
/// description), then `NBD_REP_ACK`.
async fn list<S: AsyncWrite + Unpin>(
    stream: &mut S,
    n: &Negotiation,
    data: &[u8],
) -> Result<(), ConnectionError> {
    let option = wire::OPT_LIST;
    if !data.is_empty() {
        refuse(
            stream,
            option,
            wire::REP_ERR_INVALID,
            "NBD_OPT_LIST carries no data",
        )
        .await?;
        return Ok(());
    }
    match n.table.exports().list().await {
        Ok(exports) => {
            for export in exports {
                let name = wire::message_bytes(&export.name);
                let mut entry = (name.len() as u32).to_be_bytes().to_vec();
                entry.extend_from_slice(name);
                entry.extend_from_slice(wire::message_bytes(&export.description));
                stream
                    .write_all(&wire::option_reply(option, wire::REP_SERVER, &entry))
                    .await?;
            }
            reply(stream, option, wire::REP_ACK, &[]).await?;
        }
        Err(e) => {
            warn!("listing exports: {e}");
            refuse(stream, option, e.option_reply(), &e.to_string()).await?;
        }
    }
    Ok(())
}

/// `NBD_OPT_INFO` and `NBD_OPT_GO`: `NBD_REP_INFO` replies (`NBD_INFO_EXPORT`
/// and `NBD_INFO_BLOCK_SIZE` always, since the server enforces its block
/// size; `NBD_INFO_NAME` and `NBD_INFO_DESCRIPTION` when asked), then
/// `NBD_REP_ACK`. Returns the outcome when `NBD_OPT_GO` succeeded.
async fn info_or_go<S: AsyncWrite + Unpin>(
    stream: &mut S,
    n: &mut Negotiation,
    option: u32,
    data: &[u8],
) -> Result<Option<Outcome>, ConnectionError> {
    let request = match InfoRequest::parse(data) {
        Ok(request) => request,
        Err(e) => {
            refuse(stream, option, wire::REP_ERR_INVALID, e.0).await?;
            return Ok(None);
        }
    };
    let name = request.name;
    let export = match n.table.acquire(&name).await {
        Ok(export) => export,
        Err(e) => {
            info!(export = %name, "open refused: {e}");
            refuse(stream, option, e.option_reply(), &e.to_string()).await?;
            return Ok(None);
        }
    };
    let device = export.device.clone();
    let result = answer_info(stream, n, option, &name, &request.requests, device.as_ref()).await;
    match result {
        Ok(Some(params)) if option == wire::OPT_GO => {
            info!(export = %name, structured = n.structured, "transmission (NBD_OPT_GO)");
            let session = session(n, &name, device, params);
            Ok(Some(Outcome::Transmission { export, session }))
        }
        other => {
            export.release().await;
            other.map(|_| None)
        }
    }
}

async fn answer_info<S: AsyncWrite + Unpin>(
    stream: &mut S,
    n: &Negotiation,
    option: u32,
    name: &str,
    requests: &[u16],
    device: &dyn BlockDevice,
) -> Result<Option<ExportParams>, ConnectionError> {
    let params = match ExportParams::new(device) {
        Ok(params) => params,
        Err(message) => {
            warn!(export = %name, "unusable device: {message}");
            refuse(
                stream,
                option,
                wire::REP_ERR_UNKNOWN,
                &format!("export {name:?} is unusable: {message}"),
            )
            .await?;
            return Ok(None);
        }
    };
    let mut export = wire::INFO_EXPORT.to_be_bytes().to_vec();
    export.extend_from_slice(&params.size.to_be_bytes());
    export.extend_from_slice(&params.flags(n.structured).to_be_bytes());
    stream
        .write_all(&wire::option_reply(option, wire::REP_INFO, &export))
        .await?;

    let (minimum, preferred, maximum) = params.block_sizes();
    let mut sizes = wire::INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    for value in [minimum, preferred, maximum] {
        sizes.extend_from_slice(&value.to_be_bytes());
    }
    stream
        .write_all(&wire::option_reply(option, wire::REP_INFO, &sizes))
        .await?;

    if requests.contains(&wire::INFO_NAME) {
        let mut info = wire::INFO_NAME.to_be_bytes().to_vec();
        info.extend_from_slice(wire::message_bytes(name));
        stream
            .write_all(&wire::option_reply(option, wire::REP_INFO, &info))
            .await?;
    }
    let description = device.description();
    if requests.contains(&wire::INFO_DESCRIPTION) && !description.is_empty() {
        let mut info = wire::INFO_DESCRIPTION.to_be_bytes().to_vec();
        info.extend_from_slice(wire::message_bytes(&description));
        stream
            .write_all(&wire::option_reply(option, wire::REP_INFO, &info))
            .await?;
    }
    reply(stream, option, wire::REP_ACK, &[]).await?;
    Ok(Some(params))
}

/// `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT` ("Metadata
/// querying", "The `base:` metadata namespace"): the only context is
/// `base:allocation`; `base:` lists it; other namespaces are ignored.
async fn meta_context<S: AsyncWrite + Unpin>(
    stream: &mut S,
    n: &mut Negotiation,
    option: u32,
    data: &[u8],
) -> Result<(), ConnectionError> {
    let setting = option == wire::OPT_SET_META_CONTEXT;
    if setting {
        // "Issuing this command replaces all previously-set metadata
        // contexts (including when this command fails)".
        n.meta_export = None;
    }
    if !n.structured {
        refuse(
            stream,
            option,
            wire::REP_ERR_INVALID,
            "negotiate NBD_OPT_STRUCTURED_REPLY first",
        )
        .await?;
        return Ok(());
    }
    let request = match MetaContextRequest::parse(data) {
        Ok(request) => request,
        Err(e) => {
            refuse(stream, option, wire::REP_ERR_INVALID, e.0).await?;
            return Ok(());
        }
    };
    if let Some(query) = request.queries.iter().find(|q| !q.contains(':')) {
        let message = format!("query {query:?} has no namespace");
        refuse(stream, option, wire::REP_ERR_INVALID, &message).await?;
        return Ok(());
    }
    let selected = if setting {
        request.queries.iter().any(|q| q == wire::BASE_ALLOCATION)
    } else {
        request.queries.is_empty()
            || request
                .queries
                .iter()
                .any(|q| q == "base:" || q == wire::BASE_ALLOCATION)
    };
    if selected {
        // The id is reserved (zero) in a list answer.
        let id = if setting { BASE_ALLOCATION_ID } else { 0 };
        let mut context = id.to_be_bytes().to_vec();
        context.extend_from_slice(wire::BASE_ALLOCATION.as_bytes());
        stream
            .write_all(&wire::option_reply(
                option,
                wire::REP_META_CONTEXT,
                &context,
            ))
            .await?;
        if setting {
            n.meta_export = Some(request.export);
        }
    }
    reply(stream, option, wire::REP_ACK, &[]).await?;
    Ok(())
}
