//! The client of the meta service: one type, [`MetaClient`], used by the
//! SDK, by storage nodes (heartbeats, scrub and GC questions) and, through
//! the SDK, by the repairer.
//!
//! Owns how a request reaches meta: the connection (reused, retried after a
//! short hold-off, since nothing works without meta), one retry when a
//! cached connection turns out dead, a deadline per call, and typed errors
//! (refused by meta, unreachable, timed out, unexpected answer). It must
//! not know what the requests mean: callers build them from
//! `tessera_proto` and match the answers.

use std::net::SocketAddr;
use std::time::Duration;

use tessera_net::{ConnectionPool, Endpoint, NetError, VarInt, call};
use tessera_proto::{MetaRequest, MetaResponse, RemoteError};

/// How long one meta call may take before it fails with `Timeout`: far
/// above any healthy answer (a batch of commits is a few milliseconds),
/// below what makes a client look hung.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum MetaCallError {
    /// Meta understood the request and refused it; `code` says why.
    #[error("{}", .0.message)]
    Refused(RemoteError),
    /// Meta could not be reached, or the connection failed mid-call.
    #[error("meta at {addr}: {source}")]
    Net {
        addr: SocketAddr,
        #[source]
        source: NetError,
    },
    #[error("meta at {addr} did not answer within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    /// An answer of the wrong kind for the request.
    #[error("unexpected answer from meta: {0}")]
    Unexpected(String),
}

impl MetaCallError {
    /// For callers that got an answer they cannot use.
    pub fn unexpected(resp: &MetaResponse) -> Self {
        MetaCallError::Unexpected(format!("{resp:?}"))
    }
}

/// A connection to meta, cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct MetaClient {
    addr: SocketAddr,
    pool: ConnectionPool,
    timeout: Duration,
}

impl MetaClient {
    /// A client of meta at `addr` over `endpoint`; after a failed
    /// connection attempt it waits `hold_off` before trying again.
    pub fn new(endpoint: Endpoint, addr: SocketAddr, hold_off: Duration) -> Self {
        MetaClient {
            addr,
            pool: ConnectionPool::with_hold_off(endpoint, hold_off),
            timeout: CALL_TIMEOUT,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one request and returns meta's answer; `MetaResponse::Error`
    /// becomes `MetaCallError::Refused`. A cached connection that turns
    /// out dead is replaced once.
    pub async fn call(&self, req: impl Into<MetaRequest>) -> Result<MetaResponse, MetaCallError> {
        let req = req.into();
        match tokio::time::timeout(self.timeout, self.call_once_or_twice(&req)).await {
            Ok(r) => r,
            Err(_) => Err(MetaCallError::Timeout {
                addr: self.addr,
                after: self.timeout,
            }),
        }
    }

    async fn call_once_or_twice(&self, req: &MetaRequest) -> Result<MetaResponse, MetaCallError> {
        let net = |source| MetaCallError::Net {
            addr: self.addr,
            source,
        };
        for attempt in 0..2 {
            let conn = self.pool.get(self.addr).await.map_err(net)?;
            match call::<_, MetaResponse>(&conn, req).await {
                Ok(MetaResponse::Error(e)) => return Err(MetaCallError::Refused(e)),
                Ok(resp) => return Ok(resp),
                Err(e) if attempt == 0 && e.is_peer_failure() => {
                    conn.close(VarInt::from_u32(1), b"retry");
                    continue;
                }
                Err(e) => {
                    if e.is_peer_failure() {
                        self.pool.mark_failed(self.addr);
                    }
                    return Err(net(e));
                }
            }
        }
        Err(MetaCallError::Unexpected("no answer after a retry".into()))
    }
}
