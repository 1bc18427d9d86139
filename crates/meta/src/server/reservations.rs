//! Write reservations (soft state): a writer reserves each chunk id before
//! it writes the chunk's fragments and renews every grace/4, so the
//! collector (`UnknownFragments`) never names a reserved chunk. A commit
//! whose reservation lapsed (the writer idle for a whole grace period, or
//! meta restarted) is refused with `Conflict`: its fragments may already
//! be collected.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tessera_types::ChunkId;

pub(super) struct Reservations {
    grace: Duration,
    writes: Mutex<HashMap<u64, Reservation>>,
}

struct Reservation {
    renewed: Instant,
    chunks: HashSet<ChunkId>,
}

/// The reservations, locked: the committer holds this across a batch, so a
/// collector's question is answered wholly before or after a commit.
pub(super) struct Held<'a> {
    grace: Duration,
    writes: MutexGuard<'a, HashMap<u64, Reservation>>,
}

impl Reservations {
    pub fn new(grace: Duration) -> Self {
        Reservations {
            grace,
            writes: Mutex::new(HashMap::new()),
        }
    }

    pub fn lock(&self) -> Held<'_> {
        Held {
            grace: self.grace,
            writes: self.writes.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Renews write `write` at `now`, adding `chunks`; drops lapsed writes.
    pub fn reserve(&self, write: u64, chunks: Vec<ChunkId>, now: Instant) {
        let mut held = self.lock();
        let grace = held.grace;
        held.writes
            .retain(|_, r| now.saturating_duration_since(r.renewed) < grace);
        let r = held.writes.entry(write).or_insert_with(|| Reservation {
            renewed: now,
            chunks: HashSet::new(),
        });
        r.renewed = now;
        r.chunks.extend(chunks);
    }
}

impl Held<'_> {
    /// Whether write `write` was renewed within the grace period.
    pub fn fresh(&self, write: u64, now: Instant) -> bool {
        self.writes
            .get(&write)
            .is_some_and(|r| now.saturating_duration_since(r.renewed) < self.grace)
    }

    /// Whether a fresh write reserved `chunk`.
    pub fn reserved(&self, chunk: &ChunkId, now: Instant) -> bool {
        self.writes.values().any(|r| {
            now.saturating_duration_since(r.renewed) < self.grace && r.chunks.contains(chunk)
        })
    }

    /// A committed write needs no protection any more.
    pub fn release(&mut self, write: u64) {
        self.writes.remove(&write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_protect_until_they_lapse() {
        let r = Reservations::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let c = ChunkId([1; 16]);
        r.reserve(7, vec![c], t0);
        let held = r.lock();
        assert!(held.fresh(7, t0 + Duration::from_secs(9)));
        assert!(held.reserved(&c, t0 + Duration::from_secs(9)));
        assert!(!held.fresh(7, t0 + Duration::from_secs(10)));
        assert!(!held.reserved(&c, t0 + Duration::from_secs(11)));
        assert!(!held.fresh(8, t0));
        drop(held);
        // Renewing keeps it; releasing ends it.
        r.reserve(7, vec![], t0 + Duration::from_secs(9));
        let mut held = r.lock();
        assert!(held.reserved(&c, t0 + Duration::from_secs(18)));
        held.release(7);
        assert!(!held.reserved(&c, t0 + Duration::from_secs(18)));
    }
}
