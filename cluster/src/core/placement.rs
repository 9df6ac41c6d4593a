//! Where each shard should live: balanced rendezvous hashing over the eligible nodes.
//!
//! # Why rendezvous, and why bounded
//!
//! Plain rendezvous (highest-random-weight) hashing gives each shard to the node with the
//! highest [`weight`] for it. It needs no coordination and moves the minimum when the node set
//! changes (a joining node takes only the shards it now wins, about S/(N+1); a leaving node's
//! shards spread over the others), but with S = 256 shards and a handful of nodes its load is
//! binomial: one node in eight routinely owns 40 shards where the mean is 32. ARCHITECTURE §5
//! asks for every node within ±10 % of S/N.
//!
//! So [`targets`] uses *bounded-load* rendezvous: every node has a capacity of ⌈S/N⌉ shards,
//! and all (shard, node) pairs are visited in descending weight order (ties by shard, then
//! node); a pair places the shard on the node when the shard is still unplaced and the node is
//! under capacity. Each shard thus goes to the highest-weight node that still has room.
//!
//! - **Balance**: no node gets more than ⌈S/N⌉, hence none gets fewer than S − (N−1)·⌈S/N⌉;
//!   for S = 256 and N ≤ 8 that is always within ±10 % of S/N (the worst, N = 3, is 84..86
//!   against 85.3).
//! - **Determinism**: the result depends only on the shard count and the node set, so every
//!   Raft leader computes the same table, on every platform and release.
//! - **Movement cost**: a join moves the shards the newcomer now wins (≈ S/(N+1), the
//!   minimum) plus a few more where the lowered capacity pushes a shard on to its next
//!   choice. The test `a_join_moves_close_to_the_minimum` measures it over 200 random node
//!   sets with S = 256: on average 1.00 × S/(N+1) for the 2nd node rising to 1.26 × for the
//!   8th, the worst single join about 1.5 ×. A leave is symmetric. (Plain rendezvous would
//!   be exactly 1 ×, but unbalanced; the extra quarter is the price of ±10 %.)
//!
//! Cost: sorting S·N pairs, 2 048 for 256 shards on 8 nodes, done only when membership
//! changes.

use std::collections::BTreeSet;

use crate::core::table::{NodeId, ShardId};

/// SplitMix64's finaliser: a fixed, well-mixing bijection on `u64`. Written out here (not
/// taken from a hashing crate) so that its output can never change under us.
const fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The rendezvous score of `node` for `shard`: the higher, the more the shard wants to live
/// there. A fixed mixing function of the two ids (no process seed, no platform dependence),
/// because every node and every release must agree on the placement the leader committed.
pub fn weight(node: NodeId, shard: ShardId) -> u64 {
    splitmix64(splitmix64(node) ^ u64::from(shard))
}

/// The owner every shard should have when `nodes` are the eligible nodes: bounded-load
/// rendezvous (see the module doc for why). `None` for every shard when there is no node.
/// The controller moves the table towards this, a few shards at a time.
pub fn targets(shards: u32, nodes: &BTreeSet<NodeId>) -> Vec<Option<NodeId>> {
    let mut out = vec![None; shards as usize];
    if nodes.is_empty() || shards == 0 {
        return out;
    }
    let ids: Vec<NodeId> = nodes.iter().copied().collect();
    let cap = (shards as usize).div_ceil(ids.len());
    // (weight, shard, node index), highest weight first, ties by shard then node.
    let mut pairs: Vec<(u64, ShardId, usize)> = Vec::with_capacity(shards as usize * ids.len());
    for shard in 0..shards {
        for (i, node) in ids.iter().enumerate() {
            pairs.push((weight(*node, shard), shard, i));
        }
    }
    pairs.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut load = vec![0usize; ids.len()];
    let mut left = shards as usize;
    for (_, shard, i) in pairs {
        let slot = &mut out[shard as usize];
        if slot.is_none() && load[i] < cap {
            *slot = Some(ids[i]);
            load[i] += 1;
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn load(t: &[Option<NodeId>]) -> BTreeMap<NodeId, usize> {
        let mut m = BTreeMap::new();
        for n in t.iter().flatten() {
            *m.entry(*n).or_insert(0) += 1;
        }
        m
    }

    fn assert_balanced(shards: u32, nodes: &BTreeSet<NodeId>) {
        let t = targets(shards, nodes);
        assert!(t.iter().all(Option::is_some), "every shard placed");
        let l = load(&t);
        assert_eq!(l.len(), nodes.len(), "every node gets shards: {l:?}");
        let mean = f64::from(shards) / nodes.len() as f64;
        for (n, c) in &l {
            let dev = (*c as f64 - mean).abs() / mean;
            assert!(dev <= 0.10, "node {n} owns {c}, mean {mean:.1}: {l:?}");
        }
    }

    /// A deterministic stream of node ids, so the "random" sets are the same every run.
    fn ids(seed: u64, n: usize) -> BTreeSet<NodeId> {
        let mut s = BTreeSet::new();
        let mut x = seed;
        while s.len() < n {
            x = splitmix64(x);
            s.insert(x);
        }
        s
    }

    #[test]
    fn weights_are_pinned() {
        // These values are part of the on-disk/over-the-wire contract: changing them moves
        // shards on upgrade. Do not update them to make a change pass.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(weight(0, 0), 0xA706_DD2F_4D19_7E6F);
        assert_eq!(weight(1, 0), 0x5E41_AB08_7439_611E);
        assert_eq!(weight(1, 255), 0xBEDC_D771_C5D6_0296);
        assert_eq!(weight(u64::MAX, 7), 0x19F2_0A9B_B461_50B6);
    }

    #[test]
    fn no_node_means_no_owner() {
        assert_eq!(targets(4, &BTreeSet::new()), vec![None; 4]);
    }

    #[test]
    fn small_ids_and_random_ids_are_balanced() {
        for n in 1..=8u64 {
            assert_balanced(256, &(1..=n).collect());
            for seed in 0..10 {
                assert_balanced(256, &ids(seed * 100 + n, n as usize));
            }
        }
    }

    #[test]
    fn targets_are_deterministic() {
        let nodes = ids(42, 5);
        assert_eq!(targets(256, &nodes), targets(256, &nodes));
    }

    /// Movement on a join, as a multiple of the minimum S/(N+1), over 200 random node sets
    /// grown one node at a time to 8. Measured: mean 1.00 (N=2) rising to 1.26 (N=8); the
    /// worst single join 1.56 (N=8). Plain rendezvous would be 1.0 but unbalanced.
    #[test]
    fn a_join_moves_close_to_the_minimum() {
        let mut sum = [0.0f64; 9];
        let mut worst = [0.0f64; 9];
        let seeds = 200;
        for seed in 0..seeds {
            let mut nodes = BTreeSet::new();
            let mut before = targets(256, &nodes);
            for node in ids(1000 + seed, 8) {
                nodes.insert(node);
                let after = targets(256, &nodes);
                let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
                // Every moved shard went to the newcomer or was pushed on by the cap; none
                // went unplaced.
                assert!(after.iter().all(Option::is_some));
                let n = nodes.len();
                let ratio = moved as f64 / (256.0 / n as f64);
                sum[n] += ratio;
                worst[n] = worst[n].max(ratio);
                before = after;
            }
        }
        for n in 2..=8 {
            let mean = sum[n] / seeds as f64;
            eprintln!(
                "join to N={n}: moved mean {mean:.2}, worst {:.2} x S/N",
                worst[n]
            );
            assert!(
                mean <= 1.3,
                "N={n}: a join moves {mean:.2} x the minimum on average"
            );
            assert!(
                worst[n] <= 1.75,
                "N={n}: a join moved {:.2} x the minimum",
                worst[n]
            );
        }
    }

    #[test]
    fn a_leave_moves_close_to_the_minimum() {
        for seed in 0..20 {
            let mut nodes = ids(2000 + seed, 8);
            while nodes.len() > 1 {
                let before = targets(256, &nodes);
                let gone = *nodes.iter().next().unwrap_or(&0);
                nodes.remove(&gone);
                let after = targets(256, &nodes);
                let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
                let minimum = 256.0 / (nodes.len() + 1) as f64;
                assert!(
                    moved as f64 <= 1.5 * minimum,
                    "seed {seed}: a leave from {} nodes moved {moved} (minimum {minimum:.1})",
                    nodes.len() + 1
                );
            }
        }
    }
}
