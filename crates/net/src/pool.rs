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
}

impl ConnectionPool {
    pub fn new(endpoint: Endpoint) -> Self {
        ConnectionPool {
            endpoint,
            slots: Default::default(),
            failed: Default::default(),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub async fn get(&self, addr: SocketAddr) -> Result<Connection, NetError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(addr).or_default().clone()
        };
        let mut conn = slot.lock().await;
        if let Some(c) = conn.as_ref()
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        if self.recently_failed(addr) {
            return Err(NetError::Unreachable { addr });
        }
        match self.endpoint.connect(addr).await {
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
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, Instant::now());
    }

    fn recently_failed(&self, addr: SocketAddr) -> bool {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        match failed.get(&addr) {
            Some(at) if at.elapsed() < RETRY_AFTER => true,
            Some(_) => {
                failed.remove(&addr);
                false
            }
            None => false,
        }
    }
}
