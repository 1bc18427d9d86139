//! The order of repair work: the chunk closest to being lost first.

use std::cmp::Ordering;

use tessera_types::ChunkId;

use crate::health::ChunkCondition;

/// A chunk's place in the repair order; lower comes first: fewer spare
/// fragments, then chunks with lost fragments before chunks that only have
/// fragments to move, then chunk id (so that the order is deterministic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepairPriority {
    spare: i64,
    move_only: bool,
    chunk: ChunkId,
}

/// The repair priority of `chunk` in condition `c`.
pub fn priority(c: &ChunkCondition, chunk: ChunkId) -> RepairPriority {
    RepairPriority {
        spare: c.spare,
        move_only: c.lost == 0,
        chunk,
    }
}

/// The repairable chunks among `items`, most at risk first, at most `limit`
/// of them. `T` rides along (a chunk record, say). Memory stays within
/// about twice `limit` items however long `items` is.
pub fn plan<T>(
    items: impl IntoIterator<Item = (ChunkId, ChunkCondition, T)>,
    limit: usize,
) -> Vec<(ChunkId, ChunkCondition, T)> {
    if limit == 0 {
        return Vec::new();
    }
    let by_priority =
        |a: &(RepairPriority, _), b: &(RepairPriority, _)| -> Ordering { a.0.cmp(&b.0) };
    let high_water = limit.saturating_mul(2);
    let mut kept: Vec<(RepairPriority, (ChunkId, ChunkCondition, T))> = Vec::new();
    for (chunk, c, t) in items {
        if !c.repairable() {
            continue;
        }
        kept.push((priority(&c, chunk), (chunk, c, t)));
        if kept.len() >= high_water {
            // Linear selection, amortised over `limit` new items.
            kept.select_nth_unstable_by(limit - 1, by_priority);
            kept.truncate(limit);
        }
    }
    kept.sort_unstable_by(by_priority);
    kept.truncate(limit);
    kept.into_iter().map(|(_, item)| item).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::condition;
    use tessera_proto::FragmentState::{Down, Lost, Move, Ok};

    fn id(i: u32) -> ChunkId {
        let mut b = [0u8; 16];
        b[12..].copy_from_slice(&i.to_be_bytes());
        ChunkId(b)
    }

    #[test]
    fn most_at_risk_first() {
        let conditions = [
            condition(4, &[Ok, Ok, Ok, Ok, Ok, Move]), // spare 2, move only
            condition(4, &[Ok, Ok, Ok, Ok, Lost, Ok]), // spare 1
            condition(4, &[Ok, Ok, Ok, Down, Lost, Ok]), // spare 0
            condition(4, &[Ok, Ok, Ok, Ok, Ok, Ok]),   // healthy: not work
            condition(4, &[Ok, Ok, Down, Down, Lost, Ok]), // lost: not work
            condition(4, &[Ok, Ok, Ok, Ok, Move, Down]), // spare 1, move only
            condition(4, &[Ok, Ok, Ok, Ok, Ok, Lost]), // spare 1
        ];
        let items = conditions
            .iter()
            .enumerate()
            .map(|(i, c)| (id(i as u32), *c, i));
        let order: Vec<usize> = plan(items.clone(), 10).into_iter().map(|x| x.2).collect();
        assert_eq!(order, vec![2, 1, 6, 5, 0]);
        let order: Vec<usize> = plan(items, 2).into_iter().map(|x| x.2).collect();
        assert_eq!(order, vec![2, 1]);
    }

    #[test]
    fn small_limit_over_many_items_matches_a_full_sort() {
        let shapes = [
            [Ok, Ok, Ok, Lost],
            [Ok, Ok, Lost, Lost],
            [Ok, Ok, Ok, Move],
            [Ok, Lost, Move, Down],
            [Ok, Ok, Ok, Ok],
        ];
        // Chunk ids scrambled so that input order says nothing.
        let items = (0..10_000u32).map(|i| {
            let c = condition(2, &shapes[(i % 5) as usize]);
            (id(i.wrapping_mul(2_654_435_761)), c, i)
        });
        let mut all: Vec<_> = items.clone().filter(|x| x.1.repairable()).collect();
        all.sort_by_key(|x| priority(&x.1, x.0));
        for limit in [1, 7, 100, 5_000, 20_000] {
            let got: Vec<u32> = plan(items.clone(), limit)
                .into_iter()
                .map(|x| x.2)
                .collect();
            let want: Vec<u32> = all.iter().take(limit).map(|x| x.2).collect();
            assert_eq!(got, want, "limit {limit}");
        }
        assert!(plan(items, 0).is_empty());
    }
}
