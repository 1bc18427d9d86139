//! The client of the meta service: one type, [`MetaClient`], used by the
//! SDK, by storage nodes (heartbeats, scrub and GC questions) and, through
//! the SDK, by the repairer.
//!
//! Owns how a request reaches meta: finding the meta group's leader (a
//! follower answers `NotLeader` with the leader's address; an unreachable
//! replica is passed over for the next one of the group), the connection
//! (reused, retried after a short hold-off, since nothing works without
//! meta), one retry when a cached connection turns out dead, a deadline per
//! call, proposals, leases and small queries made at the same moment sent
//! together (`MetaRequest::Batch`), and typed errors (refused by meta, unreachable,
//! timed out, unexpected answer). It must not know what the requests mean:
//! callers build them from `tessera_proto` and match the answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_net::{ConnectionPool, Endpoint, NetError, VarInt, call_encoded};
use tessera_proto::{
    ErrorCode, FrameKind, MetaRequest, MetaResponse, ProtoError, RemoteError, encode_frame,
};
use tokio::sync::oneshot;

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

    /// The same failure for another request of the batch it ended: a
    /// network error is not `Clone` (it may hold an I/O error), so each
    /// copy carries its text as a lost connection, as most are.
    fn duplicate(&self) -> Self {
        match self {
            MetaCallError::Refused(e) => MetaCallError::Refused(e.clone()),
            MetaCallError::Net { addr, source } => MetaCallError::Net {
                addr: *addr,
                source: match source {
                    NetError::Unreachable { addr } => NetError::Unreachable { addr: *addr },
                    NetError::Timeout(d) => NetError::Timeout(*d),
                    other => NetError::ConnectionLost(other.to_string()),
                },
            },
            MetaCallError::Timeout { addr, after } => MetaCallError::Timeout {
                addr: *addr,
                after: *after,
            },
            MetaCallError::Unexpected(m) => MetaCallError::Unexpected(m.clone()),
        }
    }
}

/// A connection to meta, cheap to clone (clones share the connection and
/// send their concurrent proposals together).
#[derive(Clone)]
pub struct MetaClient {
    /// The group's replicas as configured (the cluster file's list).
    group: Arc<Vec<SocketAddr>>,
    /// Where the leader is believed to be.
    leader: Arc<Mutex<SocketAddr>>,
    pool: ConnectionPool,
    timeout: Duration,
    outbox: Arc<Mutex<Outbox>>,
    /// Request frames sent (see `round_trips`).
    round_trips: Arc<AtomicU64>,
}

/// Most requests sent together. Proposals, leases, queries with small
/// answers (`MetaQuery::has_small_answer`) and reads of one object
/// (`MetaQuery::reads_one_object`, which meta answers `TooLarge` when they
/// do not fit the batch's frame: those are sent again alone); a batch of
/// listings could outgrow a frame. Batches of
/// 16 keep several in flight at 64 callers, so that meta's committer
/// applies one group while the last one syncs (64 at once went in lock
/// step: about 17,500 commits/s at 64 callers against 22,000 at 16; see
/// BENCHMARKS.md).
const MAX_TOGETHER: usize = 16;

/// In a meta group, a replica that has not answered one attempt within
/// this long is taken for dead and the next one is asked: a SIGKILLed
/// leader's QUIC connection would otherwise look alive until its idle
/// timeout (10 s). Healthy answers take milliseconds; one slower than
/// this is sent again (see `call_leader` on resending).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// A sender task that has not taken the waiting requests in this long was
/// lost: it takes them after one yield, far sooner.
const SENDER_LOST_AFTER: Duration = Duration::from_secs(1);

/// Requests waiting to be sent together.
#[derive(Default)]
struct Outbox {
    waiting: Vec<(MetaRequest, Reply)>,
    /// Since when a sender task has been gathering `waiting` (it will take
    /// it after one yield).
    gathering: Option<Instant>,
}

type Reply = oneshot::Sender<Result<MetaResponse, MetaCallError>>;

impl MetaClient {
    /// A client of meta at `addr` over `endpoint`; after a failed
    /// connection attempt it waits `hold_off` before trying again.
    pub fn new(endpoint: Endpoint, addr: SocketAddr, hold_off: Duration) -> Self {
        Self::with_group(endpoint, vec![addr], hold_off)
    }

    /// A client of the meta group whose replicas are at `group` (at least
    /// one; an empty list is taken as unreachable `0.0.0.0:0`). Calls go to
    /// the leader, found by asking.
    pub fn with_group(endpoint: Endpoint, group: Vec<SocketAddr>, hold_off: Duration) -> Self {
        let first = group
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        MetaClient {
            group: Arc::new(group),
            leader: Arc::new(Mutex::new(first)),
            pool: ConnectionPool::with_hold_off(endpoint, hold_off),
            timeout: CALL_TIMEOUT,
            outbox: Arc::default(),
            round_trips: Arc::default(),
        }
    }

    /// Request frames this client and its clones have sent to meta since
    /// they were made: a batch of requests is one, a request sent again to
    /// another replica (or after a dead connection) still one. What a
    /// frontend reports as the meta round trips its requests cost.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Where the leader is believed to be now.
    pub fn addr(&self) -> SocketAddr {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn follow(&self, leader: SocketAddr) {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = leader;
    }

    /// Moves on from `failed` to the next replica of the group (unless
    /// another call already moved on).
    fn pass_over(&self, failed: SocketAddr) {
        let mut leader = self.leader.lock().unwrap_or_else(|p| p.into_inner());
        if *leader != failed || self.group.is_empty() {
            return;
        }
        let next = match self.group.iter().position(|a| *a == failed) {
            Some(i) => self.group[(i + 1) % self.group.len()],
            // A leader learnt from a hint, not in the list: start over.
            None => self.group[0],
        };
        *leader = next;
    }

    /// Sends one request and returns meta's answer; `MetaResponse::Error`
    /// becomes `MetaCallError::Refused`. A cached connection that turns
    /// out dead is replaced once.
    ///
    /// Proposals, leases and small queries (a key, grants, a bucket's
    /// settings: what the S3 gateway asks for every request) made while
    /// others are on their way go out together: the first starts a sender task, which yields once so that
    /// the ones made at the same moment join, then sends them all on one
    /// stream. Many concurrent commits (a busy gateway) then cost meta one
    /// stream and a few packets for many, not one each. A lone call costs a
    /// task hand-off more than sending it directly.
    pub async fn call(&self, req: impl Into<MetaRequest>) -> Result<MetaResponse, MetaCallError> {
        let req = req.into();
        let together = match &req {
            MetaRequest::Propose(_) | MetaRequest::Lease(_) => true,
            MetaRequest::Query(q) => q.has_small_answer() || q.reads_one_object(),
            _ => false,
        };
        if !together {
            return self.call_alone(&req).await;
        }
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut out = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
            out.waiting.push((req, reply));
            // A sender that has not taken its requests within a second
            // never ran (its runtime shut down first): another starts.
            let now = Instant::now();
            let start = out
                .gathering
                .is_none_or(|since| now.duration_since(since) > SENDER_LOST_AFTER);
            if start {
                out.gathering = Some(now);
            }
            start
        };
        if start {
            // Spawned, not awaited here: the waiting calls must go out even
            // if this caller gives up.
            let client = self.clone();
            tokio::spawn(client.sender());
        }
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(MetaCallError::Unexpected(
                "the sender of a batch of requests stopped".into(),
            )),
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> MetaCallError {
        MetaCallError::Timeout {
            addr: self.addr(),
            after: self.timeout,
        }
    }

    async fn call_alone(&self, req: &MetaRequest) -> Result<MetaResponse, MetaCallError> {
        let frame = encode_frame(FrameKind::Request, req).map_err(|e| self.net(e.into()))?;
        self.call_encoded(&frame).await
    }

    async fn call_encoded(&self, frame: &[u8]) -> Result<MetaResponse, MetaCallError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.timeout, self.call_leader(frame)).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out()),
        }
    }

    fn net(&self, source: NetError) -> MetaCallError {
        MetaCallError::Net {
            addr: self.addr(),
            source,
        }
    }

    /// Sends `frame` to the leader: a follower's `NotLeader` sends it on to
    /// the leader it names (or, during an election, to the next replica
    /// after a pause); an unreachable replica is passed over for the next.
    /// A lone replica that cannot be reached fails at once, as before
    /// there were groups; a group fails once every replica was tried three
    /// times.
    ///
    /// Resending after a lost connection may send a proposal that was
    /// applied before the connection died; meta answers a resent object
    /// commit as it answered the first (same chunks, same object), and
    /// other proposals by their own rules.
    async fn call_leader(&self, frame: &[u8]) -> Result<MetaResponse, MetaCallError> {
        let mut unreachable = 0;
        let mut elections = 0u32;
        loop {
            let addr = self.addr();
            let attempt = if self.group.len() > 1 {
                match tokio::time::timeout(ATTEMPT_TIMEOUT, self.call_once_or_twice(addr, frame))
                    .await
                {
                    Ok(answer) => answer,
                    Err(_) => {
                        self.pool.mark_failed(addr);
                        Err(MetaCallError::Net {
                            addr,
                            source: NetError::Timeout(ATTEMPT_TIMEOUT),
                        })
                    }
                }
            } else {
                self.call_once_or_twice(addr, frame).await
            };
            let no_leader = match attempt {
                Ok(MetaResponse::NotLeader { leader }) => {
                    match leader.as_deref().map(str::parse::<SocketAddr>) {
                        Some(Ok(l)) if l != addr => {
                            self.follow(l);
                            continue;
                        }
                        _ => true,
                    }
                }
                Err(MetaCallError::Refused(e)) if e.code == ErrorCode::NotLeader => true,
                Err(e @ MetaCallError::Net { .. }) => {
                    unreachable += 1;
                    if self.group.len() <= 1 || unreachable >= 3 * self.group.len() {
                        return Err(e);
                    }
                    self.pass_over(addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                other => return other,
            };
            if no_leader {
                // An election is on (or this replica has not heard of the
                // new leader yet): ask another shortly.
                elections += 1;
                self.pass_over(addr);
                tokio::time::sleep(Duration::from_millis(50 * u64::from(elections.min(10)))).await;
            }
        }
    }

    /// `send_waiting`, boxed: it spawns itself when more than one batch
    /// waits, and a future that contains itself needs a name for its type.
    fn sender(self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(self.send_waiting())
    }

    /// Takes what is waiting (after letting calls made at the same moment
    /// join) and sends it: one request alone, more as one batch. A batch
    /// whose frame would be too large goes request by request (nothing of
    /// it was sent).
    async fn send_waiting(self) {
        tokio::task::yield_now().await;
        let batch = {
            let mut out = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
            let take = out.waiting.len().min(MAX_TOGETHER);
            let rest = out.waiting.split_off(take);
            let batch = std::mem::replace(&mut out.waiting, rest);
            if out.waiting.is_empty() {
                out.gathering = None;
            } else {
                // More than one batch waits: the next goes in parallel.
                out.gathering = Some(Instant::now());
                let client = self.clone();
                tokio::spawn(client.sender());
            }
            batch
        };
        // Another sender (one started when this one seemed lost) may have
        // taken everything.
        if batch.is_empty() {
            return;
        }
        let (reqs, mut replies): (Vec<MetaRequest>, Vec<Reply>) = batch.into_iter().unzip();
        if reqs.len() == 1 {
            if let (Some(req), Some(reply)) = (reqs.first(), replies.pop()) {
                let _ = reply.send(self.call_alone(req).await);
            }
            return;
        }
        let together = MetaRequest::Batch(reqs);
        let frame = match encode_frame(FrameKind::Request, &together) {
            Ok(frame) => frame,
            Err(ProtoError::FrameTooLarge(_)) => {
                let MetaRequest::Batch(reqs) = together else {
                    return;
                };
                for (reply, req) in replies.into_iter().zip(reqs) {
                    let client = self.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(client.call_alone(&req).await);
                    });
                }
                return;
            }
            Err(e) => {
                let e = self.net(e.into());
                for reply in replies {
                    let _ = reply.send(Err(e.duplicate()));
                }
                return;
            }
        };
        match self.call_encoded(&frame).await {
            Ok(MetaResponse::Batch(answers)) if answers.len() == replies.len() => {
                let MetaRequest::Batch(reqs) = together else {
                    return;
                };
                for ((reply, answer), req) in replies.into_iter().zip(answers).zip(reqs) {
                    match answer {
                        // Meta had no room for this read's answer in the
                        // batch's frame: it goes again, alone.
                        MetaResponse::Error(e)
                            if e.code == ErrorCode::TooLarge
                                && matches!(&req, MetaRequest::Query(q) if q.reads_one_object()) =>
                        {
                            let client = self.clone();
                            tokio::spawn(async move {
                                let _ = reply.send(client.call_alone(&req).await);
                            });
                        }
                        MetaResponse::Error(e) => {
                            let _ = reply.send(Err(MetaCallError::Refused(e)));
                        }
                        other => {
                            let _ = reply.send(Ok(other));
                        }
                    }
                }
            }
            Ok(other) => {
                for reply in replies {
                    let _ = reply.send(Err(MetaCallError::unexpected(&other)));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.duplicate()));
                }
            }
        }
    }

    async fn call_once_or_twice(
        &self,
        addr: SocketAddr,
        frame: &[u8],
    ) -> Result<MetaResponse, MetaCallError> {
        let net = |source| MetaCallError::Net { addr, source };
        for attempt in 0..2 {
            let conn = self.pool.get(addr).await.map_err(net)?;
            match call_encoded::<MetaResponse>(&conn, frame).await {
                Ok(MetaResponse::Error(e)) => return Err(MetaCallError::Refused(e)),
                Ok(resp) => return Ok(resp),
                Err(e) if attempt == 0 && e.is_peer_failure() => {
                    conn.close(VarInt::from_u32(1), b"retry");
                    continue;
                }
                Err(e) => {
                    if e.is_peer_failure() {
                        self.pool.mark_failed(addr);
                    }
                    return Err(net(e));
                }
            }
        }
        Err(MetaCallError::Unexpected("no answer after a retry".into()))
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;
    use tessera_net::{ClusterCa, Identity};
    use tessera_proto::Lease;

    fn lease() -> Lease {
        Lease::ReserveChunks {
            write: 1,
            chunks: vec![],
        }
    }

    /// A call queued for a sender task whose runtime shut down before it
    /// ran is not left to hold the queue: a later call starts another
    /// sender, and gets an answer (here: nothing listens, so a connection
    /// error within the connect timeout) rather than waiting out its 30 s
    /// deadline.
    #[test]
    fn a_lost_sender_does_not_hold_the_queue() {
        let home = tokio::runtime::Runtime::new().unwrap();
        let client = home.block_on(async {
            let ca = ClusterCa::generate("test").unwrap();
            let (cert, key) = ca.issue("client").unwrap();
            let id = Identity::from_pem(ca.cert_pem(), &cert, &key).unwrap();
            let nobody = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = nobody.local_addr().unwrap();
            drop(nobody);
            MetaClient::new(Endpoint::client(&id).unwrap(), addr, Duration::from_secs(1))
        });
        // Polled once (queued, its sender spawned), then dropped: the
        // runtime ends without having run the sender.
        let gone = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        gone.block_on(async {
            let call = client.call(lease());
            tokio::pin!(call);
            std::future::poll_fn(|cx| {
                assert!(call.as_mut().poll(cx).is_pending());
                std::task::Poll::Ready(())
            })
            .await
        });
        drop(gone);
        std::thread::sleep(SENDER_LOST_AFTER + Duration::from_millis(100));
        let started = std::time::Instant::now();
        let answer = home.block_on(client.call(lease()));
        assert!(
            matches!(answer, Err(MetaCallError::Net { .. })),
            "{answer:?} after {:?}",
            started.elapsed()
        );
    }
}
