//! Pacing for background traffic (repair, scrub): callers take bytes from a
//! `Pacer` before they move them, and wait when they run ahead of its rate.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How far ahead of the rate a caller may burst after a quiet spell.
const BURST: Duration = Duration::from_millis(500);

/// A byte rate shared by every task that clones the `Arc` holding it.
#[derive(Debug)]
pub struct Pacer {
    /// Bytes per second; 0 means unlimited.
    rate: u64,
    /// When the bytes taken so far would have been sent at `rate`.
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    pub fn new(bytes_per_second: u64) -> Self {
        Pacer {
            rate: bytes_per_second,
            next: Mutex::new(None),
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Waits until `bytes` more fit in the rate.
    pub async fn take(&self, bytes: u64) {
        if let Some(wait) = self.reserve(bytes) {
            tokio::time::sleep(wait).await;
        }
    }

    fn reserve(&self, bytes: u64) -> Option<Duration> {
        if self.rate == 0 || bytes == 0 {
            return None;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let floor = now.checked_sub(BURST).unwrap_or(now);
        let start = next.map_or(floor, |n| n.max(floor));
        let done = start + cost;
        *next = Some(done);
        let wait = done.saturating_duration_since(now + BURST);
        (!wait.is_zero()).then_some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_callers_to_the_rate() {
        let p = Pacer::new(1000);
        // The burst allowance goes free, then each 500 bytes cost 0.5 s.
        let waits: Vec<Duration> = (0..10)
            .map(|_| p.reserve(500).unwrap_or_default())
            .collect();
        assert!(waits[0].is_zero());
        let last = waits[9];
        assert!(last >= Duration::from_millis(3900), "{waits:?}");
        assert!(last <= Duration::from_millis(4100), "{waits:?}");
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
        assert!(Pacer::new(0).reserve(1 << 40).is_none());
    }
}
