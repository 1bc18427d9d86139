use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::Connection;

use crate::{Endpoint, NetError};

/// After a failed attempt, a peer is not tried again for this long, so that a
/// dead node costs one connect timeout rather than one per request.
const RETRY_AFTER: Duration = Duration::from_secs(10);

type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

/// Reuses one connection per peer; concurrent callers for the same peer wait
/// on a single connection attempt.
#[derive(Clone)]
pub struct ConnectionPool {
    endpoint: Endpoint,
    slots: Arc<Mutex<HashMap<SocketAddr, Slot>>>,
    failed: Arc<Mutex<HashMap<SocketAddr, Instant>>>,
    /// Connection attempts under way, and since when.
    connecting: Arc<Mutex<HashMap<SocketAddr, Instant>>>,
    hold_off: Duration,
}

/// A connection attempt that has not answered in this long is suspect: a
/// live peer on a working network answers far sooner.
const SUSPECT_AFTER: Duration = Duration::from_millis(250);

impl ConnectionPool {
    pub fn new(endpoint: Endpoint) -> Self {
        Self::with_hold_off(endpoint, RETRY_AFTER)
    }

    /// A pool that waits `hold_off` after a failure before it tries a peer
    /// again: short for the one peer a process cannot do without (a node's
    /// meta), so that it is back as soon as that peer is.
    pub fn with_hold_off(endpoint: Endpoint, hold_off: Duration) -> Self {
        ConnectionPool {
            endpoint,
            slots: Default::default(),
            failed: Default::default(),
            connecting: Default::default(),
            hold_off,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A connection to `addr`, reusing the open one. The attempt runs in its
    /// own task: a caller that gives up (a read that went to parity instead)
    /// does not cancel it, so a dead peer's failure is always recorded and
    /// later callers skip it at once.
    pub async fn get(&self, addr: SocketAddr) -> Result<Connection, NetError> {
        // Fast path, once per fragment request: an open connection, no task.
        if let Some(c) = self.open_connection(addr) {
            return Ok(c);
        }
        let pool = self.clone();
        tokio::spawn(async move { pool.get_or_connect(addr).await })
            .await
            .map_err(|e| NetError::Connect {
                addr,
                reason: format!("connection task: {e}"),
            })?
    }

    fn slot(&self, addr: SocketAddr) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(addr).or_default().clone()
    }

    /// The open connection to `addr`, if there is one and nobody is
    /// connecting right now (then the slow path waits for that attempt).
    fn open_connection(&self, addr: SocketAddr) -> Option<Connection> {
        let slot = self.slot(addr);
        let conn = slot.try_lock().ok()?;
        still_open(&conn)
    }

    async fn get_or_connect(&self, addr: SocketAddr) -> Result<Connection, NetError> {
        let slot = self.slot(addr);
        let mut conn = slot.lock().await;
        if let Some(c) = still_open(&conn) {
            return Ok(c);
        }
        if self.recently_failed(addr) {
            return Err(NetError::Unreachable { addr });
        }
        let attempt = {
            let _connecting = Connecting::start(&self.connecting, addr);
            self.endpoint.connect(addr).await
        };
        match attempt {
            Ok(c) => {
                *conn = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                *conn = None;
                self.failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(addr, Instant::now());
                Err(e)
            }
        }
    }

    /// Forgets the connection to `addr` after a failure on it, and holds off
    /// new attempts for a while.
    pub fn mark_failed(&self, addr: SocketAddr) {
        if let Some(slot) = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&addr)
            && let Ok(mut c) = slot.try_lock()
            && let Some(c) = c.take()
        {
            c.close(quinn::VarInt::from_u32(1), b"peer failed");
        }
        // A failure seen while already holding off (callers reporting the
        // pool's own refusal) must not push the next attempt further out.
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed
            .get(&addr)
            .is_none_or(|at| at.elapsed() >= self.hold_off)
        {
            failed.insert(addr, Instant::now());
        }
    }

    /// True when `addr` failed recently or has been connecting for a while:
    /// callers with a choice should ask other peers first.
    pub fn is_suspect(&self, addr: SocketAddr) -> bool {
        let slow = self
            .connecting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
            .is_some_and(|since| since.elapsed() > SUSPECT_AFTER);
        slow || self.recently_failed(addr)
    }

    fn recently_failed(&self, addr: SocketAddr) -> bool {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        match failed.get(&addr) {
            Some(at) if at.elapsed() < self.hold_off => true,
            Some(_) => {
                failed.remove(&addr);
                false
            }
            None => false,
        }
    }
}

fn still_open(conn: &Option<Connection>) -> Option<Connection> {
    conn.as_ref()
        .filter(|c| c.close_reason().is_none())
        .cloned()
}

/// Records a connection attempt for as long as it runs, however it ends
/// (a caller may drop the future mid-attempt).
struct Connecting<'a> {
    map: &'a Mutex<HashMap<SocketAddr, Instant>>,
    addr: SocketAddr,
}

impl<'a> Connecting<'a> {
    fn start(map: &'a Mutex<HashMap<SocketAddr, Instant>>, addr: SocketAddr) -> Self {
        map.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, Instant::now());
        Connecting { map, addr }
    }
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.addr);
    }
}
