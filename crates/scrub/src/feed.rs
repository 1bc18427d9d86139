//! Which chunk of repair work starts next, and when to ask meta for more:
//! the bookkeeping that keeps a pass's chunks flowing (a fixed number in
//! flight, the next list asked for before the last one runs dry) instead
//! of rounds that each wait for their slowest chunk. Plain data only; the
//! repairer does the I/O and tells the feed what happened.

use std::collections::{HashSet, VecDeque};

use tessera_proto::RepairItem;
use tessera_types::ChunkId;

/// The chunks of one pass of repair work: those waiting to start, and
/// every chunk taken so far. Meta's work list names a chunk until its
/// repair is committed, so a list asked for while chunks are in flight
/// names them again; the feed starts each chunk at most once per pass
/// (a chunk that could not be helped is left for the next pass).
#[derive(Debug, Default)]
pub struct WorkFeed {
    waiting: VecDeque<RepairItem>,
    taken: HashSet<ChunkId>,
    /// A list has been asked for this pass.
    asked: bool,
    /// A repair was committed since the last list was asked for: meta's
    /// answer has changed (a chunk that could not be helped changes
    /// nothing there).
    changed: bool,
    /// No more lists are asked for (meta failed): the pass ends once the
    /// chunks in flight are done.
    closed: bool,
}

impl WorkFeed {
    /// Adds the chunks of a work list (most at risk first) that this pass
    /// has not taken yet, in the list's order; returns how many.
    pub fn offer(&mut self, work: Vec<RepairItem>) -> usize {
        self.asked = true;
        let before = self.waiting.len();
        for item in work {
            if self.taken.insert(item.record.id) {
                self.waiting.push_back(item);
            }
        }
        self.waiting.len() - before
    }

    /// Notes that a list is being asked for: repairs committed from now on
    /// may be in its answer or not, so they count as a change.
    pub fn asking(&mut self) {
        self.changed = false;
    }

    /// The next chunk to start, the most at risk first.
    pub fn next_item(&mut self) -> Option<RepairItem> {
        self.waiting.pop_front()
    }

    /// A repair of this pass was committed.
    pub fn committed(&mut self) {
        self.changed = true;
    }

    /// Asks for no more lists; what is waiting is still handed out.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Whether to ask meta for the next list now: at the start of a pass,
    /// and whenever fewer than `parallel` chunks wait (so the next chunks
    /// are at hand when slots free) if a repair was committed since the last
    /// list was asked for (an unchanged meta would give the same answer).
    pub fn wants_list(&self, parallel: usize) -> bool {
        !self.closed && (!self.asked || (self.changed && self.waiting.len() < parallel))
    }

    /// Whether the pass is over, given that nothing is in flight (no
    /// chunk, commit or list): nothing waits and no list is due.
    pub fn exhausted(&self) -> bool {
        self.waiting.is_empty() && (self.closed || (self.asked && !self.changed))
    }

    /// Chunks taken this pass.
    pub fn taken(&self) -> usize {
        self.taken.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::{ChunkRecord, FragmentState};
    use tessera_types::Policy;

    fn item(n: u8) -> RepairItem {
        RepairItem {
            record: ChunkRecord {
                id: ChunkId([n; 16]),
                policy: Policy::default(),
                len: 0,
                fragment_len: 0,
                hash: [0; 32],
                fragments: Vec::new(),
            },
            states: vec![FragmentState::Lost],
        }
    }

    fn ids(feed: &mut WorkFeed) -> Vec<u8> {
        std::iter::from_fn(|| feed.next_item())
            .map(|i| i.record.id.0[0])
            .collect()
    }

    #[test]
    fn a_pass_starts_by_asking_and_ends_when_an_unchanged_list_adds_nothing() {
        let mut feed = WorkFeed::default();
        assert!(feed.wants_list(8));
        assert!(!feed.exhausted());
        feed.asking();
        assert_eq!(feed.offer(vec![item(1), item(2)]), 2);
        // Two wait, fewer than eight, but nothing committed: the same answer.
        assert!(!feed.wants_list(8));
        assert_eq!(ids(&mut feed), [1, 2]);
        feed.committed();
        assert!(feed.wants_list(8));
        feed.asking();
        feed.committed();
        // Chunk 2 is still listed (its commit is pending): not taken again.
        assert_eq!(feed.offer(vec![item(2)]), 0);
        // Chunk 2 was committed while that list was being made: ask once more.
        assert!(!feed.exhausted());
        assert!(feed.wants_list(8));
        feed.asking();
        assert_eq!(feed.offer(vec![]), 0);
        assert!(feed.exhausted());
        assert_eq!(feed.taken(), 2);
    }

    #[test]
    fn the_next_list_is_asked_for_before_the_last_runs_dry() {
        let mut feed = WorkFeed::default();
        feed.asking();
        feed.offer((1..=10).map(item).collect());
        for _ in 0..6 {
            feed.next_item();
            feed.committed();
        }
        // Four wait: more than two, so no list yet with two in flight.
        assert!(!feed.wants_list(2));
        assert!(feed.wants_list(8));
        feed.asking();
        // The answer repeats chunks already taken and adds new ones after
        // those waiting, in the list's order.
        assert_eq!(feed.offer((5..=14).rev().map(item).collect()), 4);
        assert_eq!(ids(&mut feed), [7, 8, 9, 10, 14, 13, 12, 11]);
    }

    #[test]
    fn a_closed_feed_hands_out_what_waits_and_asks_no_more() {
        let mut feed = WorkFeed::default();
        feed.asking();
        feed.offer(vec![item(1)]);
        feed.committed();
        feed.close();
        assert!(!feed.wants_list(8));
        assert!(!feed.exhausted());
        assert_eq!(ids(&mut feed), [1]);
        assert!(feed.exhausted());
    }
}
