//! `tessera-nbd`: an NBD (Network Block Device) server, protocol only:
//! NBD requests in, [`BlockDevice`] calls out.
//!
//! Owns the NBD wire protocol as the specification
//! (<https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md>)
//! defines it: the fixed newstyle handshake and its options (`EXPORT_NAME`,
//! `ABORT`, `LIST`, `STARTTLS`, `INFO`, `GO`, `STRUCTURED_REPLY`,
//! `LIST_META_CONTEXT`, `SET_META_CONTEXT` with `base:allocation`), the
//! transmission phase (`READ`, `WRITE` with FUA, `FLUSH`, `TRIM`,
//! `WRITE_ZEROES`, `BLOCK_STATUS`, `DISC`) with pipelined requests answered
//! out of order, TLS through `NBD_OPT_STARTTLS`, and the sharing of one open
//! device among all connections to an export (so `NBD_FLAG_CAN_MULTI_CONN`
//! holds).
//!
//! Must not know about volumes, meta, nodes, leases or any other Tessera
//! crate: the caller implements [`Exports`] and [`BlockDevice`] (Tessera's
//! volumes, or [`MemoryDevice`] in tests).

mod device;
mod exports;
mod handshake;
mod memory;
mod transmission;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tracing::{Instrument, info, info_span, warn};

pub use device::{BlockDevice, DeviceError, ExportSummary, Exports, Extent};
pub use memory::{MEMORY_BLOCK, MemoryCounters, MemoryDevice, MemoryExports};

use exports::ExportTable;
use handshake::{Negotiation, Outcome};

/// The largest read or write payload the server accepts, in bytes (2^25,
/// 32 MiB): advertised as the maximum payload in `NBD_INFO_BLOCK_SIZE`; the
/// spec ("Size constraints") says no payload up to this size should be
/// treated as a denial of service.
pub const MAX_PAYLOAD: u32 = 32 << 20;

/// Requests one connection runs at once unless [`NbdOptions`] say otherwise.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// How a server runs.
#[derive(Clone)]
pub struct NbdOptions {
    /// TLS through `NBD_OPT_STARTTLS` (spec "TLS support"), with this
    /// rustls configuration (certificates, and client certificate
    /// verification if wanted). `None`: STARTTLS is refused with
    /// `NBD_REP_ERR_UNSUP` (the spec's NOTLS mode).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The spec's FORCEDTLS mode: every option but `NBD_OPT_STARTTLS` and
    /// `NBD_OPT_ABORT` is refused with `NBD_REP_ERR_TLS_REQD` until TLS is
    /// up. Needs `tls`; without it, every client is refused.
    pub tls_required: bool,
    /// Requests of one connection running against the device at once; more
    /// wait (the server stops reading). Payload bytes in flight are also
    /// capped, at 128 MiB per connection.
    pub max_in_flight: usize,
    /// How long a client may take from connecting to entering transmission
    /// (greeting, options, TLS handshake); past it the connection is
    /// dropped, so clients that connect and say nothing hold nothing.
    /// Transmission itself has no idle limit: an idle disk is normal.
    pub handshake_timeout: Duration,
}

impl Default for NbdOptions {
    fn default() -> Self {
        Self {
            tls: None,
            tls_required: false,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            handshake_timeout: Duration::from_secs(60),
        }
    }
}

/// Why one connection ended other than by the client's choice. Never
/// affects other connections.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The socket failed (or the client vanished mid-reply).
    #[error("connection I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol (wrong magic, truncated message,
    /// unknown client flags, `NBD_OPT_EXPORT_NAME` before a required TLS):
    /// the connection is dropped, as the spec allows ("hard disconnect").
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The TLS handshake after `NBD_OPT_STARTTLS` failed (e.g. a client
    /// certificate the configuration does not accept).
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    /// `NBD_OPT_EXPORT_NAME` named an export that could not be opened; that
    /// option cannot carry an error, so the connection ends.
    #[error("export {name:?}: {error}")]
    Open { name: String, error: DeviceError },
    /// The handshake took longer than [`NbdOptions::handshake_timeout`].
    #[error("handshake not finished within {0:?}")]
    HandshakeTimeout(Duration),
}

/// An NBD server over a set of [`Exports`]. Cheap to clone: clones share
/// the open devices (one per export name across all connections).
#[derive(Clone)]
pub struct NbdServer {
    inner: Arc<Inner>,
}

struct Inner {
    table: Arc<ExportTable>,
    options: NbdOptions,
}

impl NbdServer {
    /// A server for `exports` with `options`.
    pub fn new(exports: Arc<dyn Exports>, options: NbdOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                table: Arc::new(ExportTable::new(exports)),
                options,
            }),
        }
    }

    /// Closes every open device ([`BlockDevice::close`]: for Tessera,
    /// flushes what the volume buffers and gives its lease up), for a
    /// server that is stopping: drop the `serve_*` future first, so that
    /// nothing opens them again. Clients still connected get the devices'
    /// errors from then on.
    pub async fn close_devices(&self) {
        self.inner.table.close_all().await;
    }

    /// Serves every connection `listener` accepts, each in its own task,
    /// until the returned future is dropped (connections already accepted
    /// keep running). Accept errors (e.g. out of file descriptors) are
    /// logged and retried.
    pub async fn serve_tcp(&self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    // Replies are written whole; Nagle would only delay them.
                    let _ = stream.set_nodelay(true);
                    self.spawn_connection(stream, peer.to_string());
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }

    /// As [`NbdServer::serve_tcp`], on a unix socket.
    pub async fn serve_unix(&self, listener: UnixListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => self.spawn_connection(stream, "unix".to_string()),
                Err(e) => accept_failed(e).await,
            }
        }
    }

    fn spawn_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        &self,
        stream: S,
        peer: String,
    ) {
        let server = self.clone();
        let span = info_span!("nbd", peer = %peer);
        tokio::spawn(
            async move {
                match server.serve_connection(stream).await {
                    Ok(()) => info!("connection closed"),
                    Err(e) => warn!("connection dropped: {e}"),
                }
            }
            .instrument(span),
        );
    }

    /// Serves one connection from the greeting to its end: the handshake,
    /// TLS if the client asks for it, then transmission on the chosen
    /// export. Returns when the client disconnects (`Ok`) or breaks the
    /// protocol (`Err`, after which the stream is dropped).
    pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &self,
        mut stream: S,
    ) -> Result<(), ConnectionError> {
        let options = &self.inner.options;
        let mut negotiation = Negotiation {
            table: self.inner.table.clone(),
            tls_available: options.tls.is_some(),
            tls_required: options.tls_required,
            tls_active: false,
            no_zeroes: false,
            structured: false,
            meta_export: None,
        };
        let limit = options.handshake_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        let in_time = |_: tokio::time::error::Elapsed| ConnectionError::HandshakeTimeout(limit);
        tokio::time::timeout_at(deadline, handshake::greet(&mut stream, &mut negotiation))
            .await
            .map_err(in_time)??;
        let outcome = tokio::time::timeout_at(
            deadline,
            handshake::negotiate(&mut stream, &mut negotiation),
        )
        .await
        .map_err(in_time)??;
        match outcome {
            Outcome::Ended => Ok(()),
            Outcome::Transmission { export, session } => {
                self.transmit(stream, export, session).await
            }
            Outcome::StartTls => {
                let Some(config) = options.tls.clone() else {
                    return Err(ConnectionError::Protocol(
                        "STARTTLS acknowledged without TLS configured".into(),
                    ));
                };
                let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                let mut stream = tokio::time::timeout_at(deadline, accept)
                    .await
                    .map_err(in_time)?
                    .map_err(ConnectionError::Tls)?;
                info!("TLS established");
                negotiation.start_tls();
                let outcome = tokio::time::timeout_at(
                    deadline,
                    handshake::negotiate(&mut stream, &mut negotiation),
                )
                .await
                .map_err(in_time)??;
                match outcome {
                    Outcome::Ended => {
                        let _ = stream.shutdown().await;
                        Ok(())
                    }
                    Outcome::Transmission { export, session } => {
                        self.transmit(stream, export, session).await
                    }
                    Outcome::StartTls => Err(ConnectionError::Protocol("second STARTTLS".into())),
                }
            }
        }
    }

    async fn transmit<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &self,
        stream: S,
        export: exports::OpenExport,
        session: transmission::Session,
    ) -> Result<(), ConnectionError> {
        let result = transmission::serve(stream, session, self.inner.options.max_in_flight).await;
        export.release().await;
        result
    }
}

async fn accept_failed(e: std::io::Error) {
    warn!("accepting an NBD connection: {e}");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}
