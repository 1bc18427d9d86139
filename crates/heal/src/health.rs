//! What each fragment is worth, and how close each chunk is to being lost.

use tessera_proto::{ChunkHealth, FragmentState, NodeAdmin, NodeState};

/// The state of one fragment from its node's liveness and admin state and
/// whether a reader or deep scrub reported it damaged (rotten or missing).
///
/// A damaged fragment, or one on an out or removed node, is `Lost` (to
/// rebuild); on a down node it is `Down` (expected back, not rebuilt); on a
/// draining node that is up it is `Move` (readable, to copy elsewhere).
pub fn fragment_state(node_state: NodeState, admin: NodeAdmin, damaged: bool) -> FragmentState {
    match (node_state, admin) {
        _ if damaged => FragmentState::Lost,
        (NodeState::Out, _) | (_, NodeAdmin::Removed) => FragmentState::Lost,
        (NodeState::Down, _) => FragmentState::Down,
        (NodeState::Up, NodeAdmin::Active) => FragmentState::Ok,
        (NodeState::Up, NodeAdmin::Draining) => FragmentState::Move,
    }
}

/// A chunk's redundancy, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// Fewer fragments than needed to read it are available.
    Lost,
    /// Exactly as many available as needed: one more loss loses it.
    AtRisk,
    /// Fragments lost or down, but more than needed remain.
    Degraded,
    /// Every fragment available; some are on draining nodes.
    Misplaced,
    /// Every fragment available where it should be.
    Healthy,
}

/// A chunk's fragments counted by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkCondition {
    pub lost: usize,
    pub down: usize,
    pub moving: usize,
    /// Available fragments (neither lost nor down) beyond those needed to
    /// read the chunk; negative when it cannot be read now.
    pub spare: i64,
    pub health: Health,
}

impl ChunkCondition {
    /// Whether a repairer can do something now: fragments to rebuild or
    /// move, and enough available to read the chunk.
    pub fn repairable(&self) -> bool {
        self.spare >= 0 && self.lost + self.moving > 0
    }
}

/// The condition of a chunk that needs `required` fragments to be read (K
/// for `ec:K+M`, 1 for `rep:N`), from the state of each of its fragments.
pub fn condition(required: usize, states: &[FragmentState]) -> ChunkCondition {
    let count = |s: FragmentState| states.iter().filter(|&&x| x == s).count();
    let (lost, down, moving) = (
        count(FragmentState::Lost),
        count(FragmentState::Down),
        count(FragmentState::Move),
    );
    let available = states.len() - lost - down;
    let spare = available as i64 - required as i64;
    let health = match (lost + down, moving) {
        (0, 0) => Health::Healthy,
        (0, _) => Health::Misplaced,
        _ if spare < 0 => Health::Lost,
        _ if spare == 0 => Health::AtRisk,
        _ => Health::Degraded,
    };
    ChunkCondition {
        lost,
        down,
        moving,
        spare,
        health,
    }
}

/// Counts chunk conditions into the figures status shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthTally {
    counts: ChunkHealth,
}

impl HealthTally {
    pub fn new() -> Self {
        HealthTally::default()
    }

    /// Counts one chunk. Misplaced chunks count as healthy too.
    pub fn add(&mut self, c: &ChunkCondition) {
        let h = &mut self.counts;
        h.total += 1;
        match c.health {
            Health::Healthy => h.healthy += 1,
            Health::Misplaced => {
                h.healthy += 1;
                h.misplaced += 1;
            }
            Health::Degraded => h.degraded += 1,
            Health::AtRisk => h.at_risk += 1,
            Health::Lost => h.lost += 1,
        }
    }

    /// The figures when every live chunk was counted.
    pub fn health(&self) -> ChunkHealth {
        self.counts
    }

    /// The figures when only the chunks that could be unhealthy were counted
    /// (those touched by a node that is not up and active, or a damage
    /// report) out of `total` live chunks: the others are healthy.
    pub fn health_of(&self, total: u64) -> ChunkHealth {
        let c = self.counts;
        let total = total.max(c.total);
        ChunkHealth {
            total,
            healthy: total - (c.degraded + c.at_risk + c.lost),
            ..c
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FragmentState::{Down, Lost, Move, Ok};

    #[test]
    fn fragment_states() {
        use NodeAdmin::*;
        use NodeState::{Down as D, Out, Up};
        assert_eq!(fragment_state(Up, Active, false), Ok);
        assert_eq!(fragment_state(Up, Draining, false), Move);
        assert_eq!(fragment_state(D, Active, false), Down);
        assert_eq!(fragment_state(D, Draining, false), Down);
        assert_eq!(fragment_state(Out, Active, false), Lost);
        assert_eq!(fragment_state(Up, Removed, false), Lost);
        assert_eq!(fragment_state(D, Removed, false), Lost);
        for s in [Up, D, Out] {
            for a in [Active, Draining, Removed] {
                assert_eq!(fragment_state(s, a, true), Lost);
            }
        }
    }

    #[test]
    fn conditions() {
        let c = condition(4, &[Ok; 6]);
        assert_eq!(
            (c.spare, c.health, c.repairable()),
            (2, Health::Healthy, false)
        );
        let c = condition(4, &[Ok, Ok, Ok, Ok, Move, Ok]);
        assert_eq!(
            (c.spare, c.health, c.repairable()),
            (2, Health::Misplaced, true)
        );
        let c = condition(4, &[Ok, Lost, Ok, Ok, Move, Ok]);
        assert_eq!(
            (c.spare, c.health, c.lost, c.moving),
            (1, Health::Degraded, 1, 1)
        );
        assert!(c.repairable());
        // Down only: degraded, but nothing to do until it is out.
        let c = condition(4, &[Ok, Down, Ok, Ok, Ok, Ok]);
        assert_eq!(
            (c.spare, c.health, c.repairable()),
            (1, Health::Degraded, false)
        );
        let c = condition(4, &[Ok, Down, Lost, Ok, Ok, Ok]);
        assert_eq!(
            (c.spare, c.health, c.repairable()),
            (0, Health::AtRisk, true)
        );
        let c = condition(4, &[Ok, Down, Lost, Lost, Ok, Ok]);
        assert_eq!(
            (c.spare, c.health, c.repairable()),
            (-1, Health::Lost, false)
        );
        // rep:3 needs one copy.
        let c = condition(1, &[Lost, Lost, Ok]);
        assert_eq!((c.spare, c.health), (0, Health::AtRisk));
        assert_eq!(condition(1, &[]).health, Health::Healthy);
    }

    #[test]
    fn tally() {
        let mut t = HealthTally::new();
        for states in [
            &[Ok, Ok, Ok][..],
            &[Ok, Move, Ok],
            &[Ok, Lost, Ok],
            &[Lost, Down, Ok],
            &[Lost, Down, Lost],
        ] {
            t.add(&condition(1, states));
        }
        let want = ChunkHealth {
            total: 5,
            healthy: 2,
            degraded: 1,
            at_risk: 1,
            lost: 1,
            misplaced: 1,
        };
        assert_eq!(t.health(), want);
        let h = t.health_of(100);
        assert_eq!((h.total, h.healthy, h.misplaced), (100, 97, 1));
        assert_eq!(h.healthy + h.degraded + h.at_risk + h.lost, h.total);
        // A total lower than what was counted (stale counter) still adds up.
        let h = t.health_of(1);
        assert_eq!(h.healthy + h.degraded + h.at_risk + h.lost, h.total);
    }
}
