//! Write reservations (soft state): a writer reserves each chunk id before
//! it writes the chunk's fragments and renews every grace/4, so the
//! collector (`UnknownFragments`) never names a reserved chunk. A commit
//! whose reservation lapsed (the writer idle for a whole grace period, or
//! meta restarted) is refused with `Conflict`: its fragments may already
//! be collected. A reservation is pinned while its commit is in flight, so
//! it cannot lapse between the check and the commit being applied.
//!
//! Reservations live on the leader only. A newly elected leader (or a
//! restarted meta) knows none of the writes in progress, so for one grace
//! period after it began leading it names no fragment unknown and takes a
//! commit whose reservation it has not seen as fresh (the writer's
//! renewals reach it within a quarter of the period): writes in flight
//! across a failover commit as if nothing had happened. The one case this
//! admits that the old leader would have refused is a writer idle for a
//! whole grace period (6 hours by default) right before the failover.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tessera_types::ChunkId;

pub(super) struct Reservations {
    grace: Duration,
    writes: Mutex<HashMap<u64, Reservation>>,
    /// When this replica began leading (or the process started).
    leading_since: Mutex<Instant>,
}

struct Reservation {
    renewed: Instant,
    chunks: HashSet<ChunkId>,
    /// Its commit is in flight: it does not lapse.
    pinned: bool,
}

/// The reservations, locked: the committer holds this across a batch, so a
/// collector's question is answered wholly before or after a commit.
pub(super) struct Held<'a> {
    grace: Duration,
    writes: MutexGuard<'a, HashMap<u64, Reservation>>,
    leading_since: Instant,
}

impl Reservations {
    pub fn new(grace: Duration) -> Self {
        Reservations {
            grace,
            writes: Mutex::new(HashMap::new()),
            leading_since: Mutex::new(Instant::now()),
        }
    }

    pub fn lock(&self) -> Held<'_> {
        let leading_since = *self.leading_since.lock().unwrap_or_else(|p| p.into_inner());
        Held {
            grace: self.grace,
            writes: self.writes.lock().unwrap_or_else(|p| p.into_inner()),
            leading_since,
        }
    }

    /// This replica became the leader at `now`: whatever it knew is stale
    /// (another leader took renewals meanwhile), and writes it does not
    /// know may be in progress.
    pub fn lead_from(&self, now: Instant) {
        *self.leading_since.lock().unwrap_or_else(|p| p.into_inner()) = now;
        self.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Renews write `write` at `now`, adding `chunks`; drops lapsed writes.
    pub fn reserve(&self, write: u64, chunks: Vec<ChunkId>, now: Instant) {
        let mut held = self.lock();
        let grace = held.grace;
        held.writes
            .retain(|_, r| r.pinned || now.saturating_duration_since(r.renewed) < grace);
        let r = held.writes.entry(write).or_insert_with(|| Reservation {
            renewed: now,
            chunks: HashSet::new(),
            pinned: false,
        });
        r.renewed = now;
        r.chunks.extend(chunks);
    }
}

impl Held<'_> {
    /// Within the first grace period of this replica's leadership.
    fn new_leader(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.leading_since) < self.grace
    }

    /// Whether write `write` was renewed within the grace period (or its
    /// commit is in flight; or this leader is too new to know).
    pub fn fresh(&self, write: u64, now: Instant) -> bool {
        match self.writes.get(&write) {
            Some(r) => r.pinned || now.saturating_duration_since(r.renewed) < self.grace,
            None => self.new_leader(now),
        }
    }

    /// Whether `chunk` may belong to a write in progress: reserved by a
    /// fresh write, or this leader is too new to know.
    pub fn reserved(&self, chunk: &ChunkId, now: Instant) -> bool {
        self.new_leader(now)
            || self.writes.values().any(|r| {
                (r.pinned || now.saturating_duration_since(r.renewed) < self.grace)
                    && r.chunks.contains(chunk)
            })
    }

    /// If write `write` is fresh, pins it (its commit is going to be
    /// proposed) and says so.
    pub fn pin(&mut self, write: u64, now: Instant) -> bool {
        if !self.fresh(write, now) {
            return false;
        }
        let r = self.writes.entry(write).or_insert_with(|| Reservation {
            renewed: now,
            chunks: HashSet::new(),
            pinned: false,
        });
        r.pinned = true;
        true
    }

    /// The commit was refused or failed: the write may try again, and
    /// lapses as usual.
    pub fn unpin(&mut self, write: u64) {
        if let Some(r) = self.writes.get_mut(&write) {
            r.pinned = false;
        }
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
        // Leading long enough to know every write in progress.
        r.lead_from(t0 - Duration::from_secs(20));
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

    #[test]
    fn a_pinned_write_does_not_lapse() {
        let r = Reservations::new(Duration::from_secs(10));
        let t0 = Instant::now();
        r.lead_from(t0 - Duration::from_secs(20));
        let c = ChunkId([2; 16]);
        r.reserve(7, vec![c], t0);
        let mut held = r.lock();
        assert!(held.pin(7, t0 + Duration::from_secs(9)));
        assert!(held.fresh(7, t0 + Duration::from_secs(60)));
        assert!(held.reserved(&c, t0 + Duration::from_secs(60)));
        held.unpin(7);
        assert!(!held.fresh(7, t0 + Duration::from_secs(60)));
        assert!(!held.pin(7, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn a_new_leader_protects_writes_it_has_not_seen() {
        let r = Reservations::new(Duration::from_secs(10));
        let t0 = Instant::now();
        r.lead_from(t0);
        let c = ChunkId([3; 16]);
        let held = r.lock();
        // Unknown writes and chunks count as in progress for one period...
        assert!(held.fresh(9, t0 + Duration::from_secs(9)));
        assert!(held.reserved(&c, t0 + Duration::from_secs(9)));
        // ... and no longer after it.
        assert!(!held.fresh(9, t0 + Duration::from_secs(10)));
        assert!(!held.reserved(&c, t0 + Duration::from_secs(10)));
    }
}
