//! Merging the watermarks of one stream that arrives from several producer nodes (a
//! repartition crosses nodes, ARCHITECTURE §5).
//!
//! The consumer may only advance to the minimum of its producers' watermarks: one lagging
//! producer may still send older records. Producers come and go as shards move, and neither
//! may move the merged watermark backwards — downstream windows that already closed would be
//! reopened:
//!
//! - a producer that joins starts at the current merged watermark (it owns shards whose
//!   records the consumer already counted as complete up to there), never lower;
//! - a producer that leaves no longer holds the watermark back;
//! - each producer's own watermark only rises: a smaller report (a reordered message) is
//!   ignored.
//!
//! So the merged watermark, whenever it is known, never decreases.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::table::NodeId;

/// The merged watermark of one stream over its current producers. Pure: fed by the
/// engine with producer changes and watermark messages.
#[derive(Clone, Debug, Default)]
pub struct WatermarkMerge {
    /// Each producer's watermark; `None` until it reports (only for producers present before
    /// any watermark was known).
    producers: BTreeMap<NodeId, Option<u64>>,
    /// The highest merged watermark ever output: where a newcomer starts when none is known
    /// now (every producer left in between).
    floor: Option<u64>,
}

impl WatermarkMerge {
    /// A merge with no producer: [`WatermarkMerge::merged`] is `None` until producers are
    /// set and have all reported.
    pub fn new() -> WatermarkMerge {
        WatermarkMerge::default()
    }

    /// Replaces the set of producers. Newcomers start at the merged watermark (or the highest
    /// one ever known), so that they never pull it back; if none was ever known they must
    /// report before the merge advances, like the producers present from the start.
    pub fn set_producers(&mut self, producers: &BTreeSet<NodeId>) {
        let start = self.merged().or(self.floor);
        self.producers.retain(|n, _| producers.contains(n));
        for n in producers {
            self.producers.entry(*n).or_insert(start);
        }
        self.refresh();
    }

    /// Records `node`'s watermark. Ignored if `node` is not a producer or the time is not
    /// above what it reported before. Returns whether the merged watermark rose.
    pub fn update(&mut self, node: NodeId, time: u64) -> bool {
        let before = self.merged();
        match self.producers.get_mut(&node) {
            Some(w) if w.is_none_or(|w| time > w) => *w = Some(time),
            _ => return false,
        }
        self.refresh();
        self.merged() > before
    }

    /// The merged watermark: the minimum over the current producers; `None` when there is no
    /// producer or one of them has not reported yet.
    pub fn merged(&self) -> Option<u64> {
        if self.producers.is_empty() {
            return None;
        }
        // Min over `Option` treats `None` as smallest: one silent producer gives `None`.
        self.producers.values().copied().min().flatten()
    }

    /// The current producers with their watermarks, for metrics and debugging.
    pub fn producers(&self) -> impl Iterator<Item = (NodeId, Option<u64>)> + '_ {
        self.producers.iter().map(|(n, w)| (*n, *w))
    }

    fn refresh(&mut self) {
        self.floor = self.floor.max(self.merged());
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn the_merge_is_the_minimum_once_everyone_reported() {
        let mut w = WatermarkMerge::new();
        assert_eq!(w.merged(), None);
        w.set_producers(&set(&[1, 2]));
        assert!(!w.update(1, 10));
        assert_eq!(w.merged(), None, "node 2 has not reported");
        assert!(w.update(2, 5));
        assert_eq!(w.merged(), Some(5));
        assert!(!w.update(2, 3), "a smaller report is ignored");
        assert!(!w.update(9, 100), "not a producer");
        assert!(w.update(2, 20));
        assert_eq!(w.merged(), Some(10));
    }

    #[test]
    fn producers_that_come_and_go_never_pull_it_back() {
        let mut w = WatermarkMerge::new();
        w.set_producers(&set(&[1, 2]));
        w.update(1, 10);
        w.update(2, 30);
        w.set_producers(&set(&[1, 2, 3]));
        assert_eq!(w.merged(), Some(10), "3 starts at 10");
        assert!(!w.update(3, 4));
        w.set_producers(&set(&[2, 3]));
        assert_eq!(w.merged(), Some(10), "1 left; 3 still at 10");
        w.update(3, 50);
        assert_eq!(w.merged(), Some(30));
        w.set_producers(&BTreeSet::new());
        assert_eq!(w.merged(), None);
        w.set_producers(&set(&[4]));
        assert_eq!(w.merged(), Some(30), "a newcomer starts at the last merge");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Producers(Vec<NodeId>),
        Update(NodeId, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => proptest::collection::vec(0u64..5, 0..5).prop_map(Op::Producers),
            4 => (0u64..6, 0u64..100).prop_map(|(n, t)| Op::Update(n, t)),
        ]
    }

    proptest! {
        #[test]
        fn the_merged_watermark_never_decreases(ops in proptest::collection::vec(op(), 0..200)) {
            let mut w = WatermarkMerge::new();
            let mut last: Option<u64> = None;
            for op in ops {
                match op {
                    Op::Producers(p) => w.set_producers(&p.into_iter().collect()),
                    Op::Update(n, t) => { w.update(n, t); }
                }
                let now = w.merged();
                if let (Some(before), Some(now)) = (last, now) {
                    prop_assert!(now >= before, "merged went back from {} to {}", before, now);
                }
                // Never ahead of any producer's own watermark.
                if let Some(now) = now {
                    for (n, p) in w.producers() {
                        prop_assert!(p.is_some_and(|p| p >= now), "producer {} at {:?} < {}", n, p, now);
                    }
                }
                last = last.max(now);
            }
        }
    }
}
