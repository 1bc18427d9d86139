//! Decoded chunks, shared by every open file of the mount. Chunk ids are
//! never reused and chunks never change, so an entry is never stale; the
//! cache only bounds memory. Concurrent readers of one chunk share one fetch.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tessera_proto::ChunkRecord;
use tessera_sdk::{Client, SdkError};
use tessera_types::ChunkId;
use tokio::sync::OnceCell;

type Slot = Arc<OnceCell<Arc<Vec<u8>>>>;

pub struct ChunkCache {
    client: Client,
    capacity: usize,
    inner: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    slots: HashMap<ChunkId, Slot>,
    order: VecDeque<ChunkId>,
}

impl ChunkCache {
    /// Keeps up to `capacity` chunks.
    pub fn new(client: Client, capacity: usize) -> Self {
        ChunkCache {
            client,
            capacity: capacity.max(2),
            inner: Mutex::new(Lru::default()),
        }
    }

    fn slot(&self, id: ChunkId) -> Slot {
        let mut lru = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = lru.slots.get(&id) {
            let s = s.clone();
            if let Some(pos) = lru.order.iter().position(|c| *c == id) {
                lru.order.remove(pos);
            }
            lru.order.push_back(id);
            return s;
        }
        let s: Slot = Arc::default();
        lru.slots.insert(id, s.clone());
        lru.order.push_back(id);
        while lru.order.len() > self.capacity {
            if let Some(old) = lru.order.pop_front() {
                lru.slots.remove(&old);
            }
        }
        s
    }

    /// The chunk's bytes, fetched and checked by the SDK on a miss. A
    /// failed fetch is not remembered: the next read tries again.
    pub async fn get(&self, record: &ChunkRecord) -> Result<Arc<Vec<u8>>, SdkError> {
        let slot = self.slot(record.id);
        let bytes = slot
            .get_or_try_init(|| async { self.client.read_chunk(record).await.map(Arc::new) })
            .await?;
        Ok(bytes.clone())
    }

    /// Fetches a chunk in the background so that a sequential reader finds
    /// it ready.
    pub fn prefetch(self: &Arc<Self>, record: ChunkRecord) {
        let cache = self.clone();
        tokio::spawn(async move {
            if let Err(e) = cache.get(&record).await {
                tracing::debug!(chunk = %record.id, error = %e, "read-ahead failed");
            }
        });
    }
}
