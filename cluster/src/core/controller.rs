//! What the Raft leader proposes next to bring the shard table towards its target.
//!
//! A pure function of the committed state and the set of nodes gossip reports live, so that
//! any leader (a new one after a failover included) proposes the same thing, and a simulation
//! can drive it through thousands of membership changes. The leader calls
//! [`next_commands`] whenever the state or the live set changes, proposes the commands in
//! order, and calls it again once they are applied; an empty answer means the table is at its
//! target (convergence).
//!
//! Moves are throttled (`max_moves_in_flight`) because each one holds back the shard's writes
//! and copies its state: a join should trickle shards over, not stall the whole key space.
//! Unowned shards (a new cluster, an owner that died) are assigned at once: there is nothing
//! to hand over, and waiting only keeps them unavailable.

use std::collections::BTreeSet;

use crate::core::placement::{targets, weight};
use crate::core::state::{ClusterState, Command};
use crate::core::table::{NodeId, ShardId};

/// The nodes that may receive shards: members that gossip reports live and that have not
/// asked to leave. Public so the leader can report why a node gets nothing.
pub fn eligible(state: &ClusterState, live: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    state
        .members
        .iter()
        .filter(|(id, m)| !m.leaving && live.contains(id))
        .map(|(id, _)| *id)
        .collect()
}

/// The commands the leader should propose next, in order. Pure: the same state and live set
/// always give the same commands.
///
/// - a shard with no owner, or whose owner is not a live member, is `Assign`ed to its target
///   (this also cancels a move it was in);
/// - a move whose receiver is no longer eligible is aborted (`AbortMove`), so the owner keeps
///   serving at a new epoch;
/// - a shard whose owner differs from its target starts moving (`BeginMove`, the owner keeps
///   serving until the receiver completes the move), at most `max_moves_in_flight` moves in
///   flight in total, counting the ones already in progress; shards leaving a leaving node go
///   first, so that a graceful leave finishes soon;
/// - with replication (R > 1): a dead owner's shard is `Promote`d to an in-sync replica
///   (the target if it is one), or waits when every in-sync replica is gone; replicas that
///   died are removed; the R − 1 wanted replicas (see `replicas_of`) are added, and a shard
///   moves only to a node that is already an in-sync replica;
/// - a leaving member that owns, receives and replicates no shard is removed
///   (`RemoveMember`).
///
/// `CompleteMove` is never proposed here: only the receiver knows when it has the data (see
/// [`complete`]). A move in progress to an eligible node is left to finish even if the target
/// has changed since; the next call moves the shard on.
pub fn next_commands(
    state: &ClusterState,
    live: &BTreeSet<NodeId>,
    max_moves_in_flight: usize,
) -> Vec<Command> {
    let eligible = eligible(state, live);
    let target = targets(state.table.len(), &eligible);
    let serving = |n: NodeId| state.members.contains_key(&n) && live.contains(&n);
    let leaving = |n: NodeId| state.members.get(&n).is_some_and(|m| m.leaving);
    let r = state.replication_factor() as usize;

    let mut out = Vec::new();
    let mut in_flight = 0usize;
    // (owner is not leaving, shard, to): leaving owners sort first.
    let mut wanted: Vec<(bool, ShardId, NodeId)> = Vec::new();
    for (shard, entry) in state.table.iter() {
        // Replicas that died or left the cluster are dropped at once while the owner serves
        // (it waits for every in-sync replica before it acknowledges with `acks = all`);
        // while the owner is gone they stay listed, since only they may take over.
        if entry.owner.is_some_and(serving) {
            for n in entry.replicas.iter().chain(&entry.joining) {
                if !serving(*n) {
                    out.push(Command::RemoveReplica { shard, node: *n });
                }
            }
        }
        let Some(goal) = target.get(shard as usize).copied().flatten() else {
            // No eligible node: nothing can be placed, but a move to an ineligible receiver
            // is still given up.
            if let Some(to) = entry.moving_to {
                out.push(Command::AbortMove { shard, to });
            }
            continue;
        };
        let owner = match entry.owner {
            Some(owner) if serving(owner) => owner,
            // Unowned: nothing to hand over.
            None => {
                out.push(Command::Assign { shard, node: goal });
                continue;
            }
            // The owner is gone: an in-sync replica holds every acknowledged event, so it
            // takes over. Without a live one, an unreplicated cluster (R = 1) starts the
            // shard afresh; a replicated one waits for the owner or an in-sync replica to
            // come back (Kafka's clean leader election) rather than lose what they
            // acknowledged, even when the owner had acknowledged alone.
            Some(_) => {
                let alive: Vec<NodeId> = entry
                    .replicas
                    .iter()
                    .copied()
                    .filter(|n| serving(*n))
                    .collect();
                if let Some(best) = alive
                    .iter()
                    .copied()
                    .max_by_key(|n| (*n == goal, eligible.contains(n), weight(*n, shard)))
                {
                    out.push(Command::Promote { shard, node: best });
                } else if r == 1 {
                    out.push(Command::Assign { shard, node: goal });
                }
                continue;
            }
        };
        replicas_of(
            state,
            shard,
            (owner, goal),
            &eligible,
            &serving,
            r,
            &mut out,
        );
        if let Some(to) = entry.moving_to {
            if eligible.contains(&to) {
                in_flight += 1;
            } else {
                out.push(Command::AbortMove { shard, to });
                if owner != goal && (r == 1 || entry.replicas.contains(&goal)) {
                    wanted.push((!leaving(owner), shard, goal));
                }
            }
        } else if owner != goal && (r == 1 || entry.replicas.contains(&goal)) {
            // With replication the new owner first copies the log as a replica, so a move
            // hands over only the operator state and the log stays one sequence of offsets.
            wanted.push((!leaving(owner), shard, goal));
        }
    }
    wanted.sort_unstable();
    let room = max_moves_in_flight.saturating_sub(in_flight);
    out.extend(
        wanted
            .into_iter()
            .take(room)
            .map(|(_, shard, to)| Command::BeginMove { shard, to }),
    );
    for (node, info) in &state.members {
        // An in-sync replica stays until the replicas that replace it are in sync.
        let busy = state.table.iter().any(|(_, e)| {
            e.owner == Some(*node) || e.moving_to == Some(*node) || e.replicas.contains(node)
        });
        if info.leaving && !busy {
            out.push(Command::RemoveMember { node: *node });
        }
    }
    out
}

/// The replica changes one served shard needs: the nodes it should have are the R − 1
/// eligible nodes of highest rendezvous weight besides its target owner, plus the target
/// itself while the shard still has to move there. Missing ones are added (joining);
/// unwanted ones are removed, an in-sync one only while enough wanted replicas are in sync
/// to keep R copies.
fn replicas_of(
    state: &ClusterState,
    shard: ShardId,
    (owner, goal): (NodeId, NodeId),
    eligible: &BTreeSet<NodeId>,
    serving: &dyn Fn(NodeId) -> bool,
    r: usize,
    out: &mut Vec<Command>,
) {
    let Ok(entry) = state.table.get(shard) else {
        return;
    };
    let mut ranked: Vec<NodeId> = eligible.iter().copied().filter(|n| *n != goal).collect();
    ranked.sort_unstable_by_key(|n| std::cmp::Reverse((weight(*n, shard), *n)));
    let mut want: BTreeSet<NodeId> = ranked.into_iter().take(r - 1).collect();
    if goal != owner && r > 1 {
        want.insert(goal);
    }
    want.remove(&owner);
    // Replicas that are not serving were removed by the caller already.
    let live = |n: &NodeId| serving(*n);
    for n in &want {
        if !entry.replicas.contains(n) && !entry.joining.contains(n) {
            out.push(Command::AddReplica { shard, node: *n });
        }
    }
    let in_sync_wanted = entry.replicas.iter().filter(|n| want.contains(n)).count();
    for n in &entry.joining {
        if !want.contains(n) && live(n) {
            out.push(Command::RemoveReplica { shard, node: *n });
        }
    }
    if in_sync_wanted >= (r - 1).min(want.len()) {
        for n in &entry.replicas {
            if !want.contains(n) && live(n) {
                out.push(Command::RemoveReplica { shard, node: *n });
            }
        }
    }
}

/// The `CompleteMove` the receiver `to` proposes once it has copied `shard`, or `None` if that
/// move is not in progress in `state` (it was aborted, or already completed): proposing it
/// anyway would be refused when applied, and the receiver should drop what it copied.
pub fn complete(state: &ClusterState, shard: ShardId, to: NodeId) -> Option<Command> {
    let entry = state.table.get(shard).ok()?;
    (entry.moving_to == Some(to)).then_some(Command::CompleteMove { shard, to })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::{MemberInfo, Outcome};

    fn join(s: &mut ClusterState, node: NodeId) {
        s.apply(&Command::AddMember {
            node,
            info: MemberInfo::default(),
        });
    }

    fn apply_all(s: &mut ClusterState, cmds: &[Command]) {
        for c in cmds {
            let o = s.apply(c);
            assert!(!matches!(o, Outcome::Refused(_)), "{c:?}: {o:?}");
        }
    }

    /// Runs the controller, completing every move it starts, until it has nothing to say.
    fn converge(s: &mut ClusterState, live: &BTreeSet<NodeId>, max: usize) -> usize {
        let mut rounds = 0;
        loop {
            let cmds = next_commands(s, live, max);
            if cmds.is_empty() {
                return rounds;
            }
            rounds += 1;
            assert!(rounds < 10_000, "no convergence");
            apply_all(s, &cmds);
            let moving: Vec<_> = s
                .table
                .iter()
                .filter_map(|(sh, e)| e.moving_to.map(|to| (sh, to)))
                .collect();
            for (sh, to) in moving {
                let c = complete(s, sh, to).expect("in progress");
                apply_all(s, &[c]);
            }
        }
    }

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_new_cluster_assigns_every_shard_at_once() {
        let mut s = ClusterState::new("c", 16).unwrap();
        assert!(next_commands(&s, &set(&[1]), 2).is_empty(), "no member yet");
        join(&mut s, 1);
        let cmds = next_commands(&s, &set(&[1]), 2);
        assert_eq!(cmds.len(), 16);
        assert!(cmds
            .iter()
            .all(|c| matches!(c, Command::Assign { node: 1, .. })));
        apply_all(&mut s, &cmds);
        assert!(next_commands(&s, &set(&[1]), 2).is_empty());
    }

    #[test]
    fn a_join_moves_shards_a_few_at_a_time_and_converges() {
        let mut s = ClusterState::new("c", 64).unwrap();
        join(&mut s, 1);
        let live = set(&[1, 2]);
        converge(&mut s, &live, 3);
        join(&mut s, 2);
        let cmds = next_commands(&s, &live, 3);
        assert_eq!(cmds.len(), 3);
        assert!(cmds
            .iter()
            .all(|c| matches!(c, Command::BeginMove { to: 2, .. })));
        apply_all(&mut s, &cmds);
        // Three in flight already: nothing more until one completes.
        assert!(next_commands(&s, &live, 3).is_empty());
        let Command::BeginMove { shard, to } = cmds[0] else {
            unreachable!()
        };
        let c = complete(&s, shard, to).unwrap();
        apply_all(&mut s, &[c]);
        assert_eq!(next_commands(&s, &live, 3).len(), 1);
        assert_eq!(complete(&s, shard, to), None, "already completed");
        converge(&mut s, &live, 3);
        let t = targets(64, &live);
        for (sh, e) in s.table.iter() {
            assert_eq!(e.owner, t[sh as usize]);
        }
        assert_eq!(s.table.owned_by(2).len(), 32);
    }

    #[test]
    fn a_leaving_member_hands_everything_over_then_is_removed() {
        let mut s = ClusterState::new("c", 32).unwrap();
        join(&mut s, 1);
        join(&mut s, 2);
        let live = set(&[1, 2]);
        converge(&mut s, &live, 4);
        s.apply(&Command::SetLeaving { node: 1 });
        converge(&mut s, &live, 4);
        assert!(!s.members.contains_key(&1));
        assert_eq!(s.table.owned_by(2).len(), 32);
    }

    #[test]
    fn a_move_to_a_node_that_leaves_is_aborted() {
        let mut s = ClusterState::new("c", 8).unwrap();
        join(&mut s, 1);
        let live = set(&[1, 2]);
        converge(&mut s, &live, 8);
        join(&mut s, 2);
        let cmds = next_commands(&s, &live, 1);
        apply_all(&mut s, &cmds);
        let Command::BeginMove { shard, to: 2 } = cmds[0] else {
            panic!("{cmds:?}")
        };
        s.apply(&Command::SetLeaving { node: 2 });
        let cmds = next_commands(&s, &live, 1);
        assert_eq!(cmds, vec![Command::AbortMove { shard, to: 2 }]);
        apply_all(&mut s, &cmds);
        assert_eq!(s.table.owner(shard), Some(1));
        assert_eq!(
            next_commands(&s, &live, 1),
            vec![Command::RemoveMember { node: 2 }]
        );
    }

    #[test]
    fn shards_of_a_dead_owner_are_assigned_at_once() {
        let mut s = ClusterState::new("c", 8).unwrap();
        join(&mut s, 1);
        join(&mut s, 2);
        converge(&mut s, &set(&[1, 2]), 8);
        let of_1 = s.table.owned_by(1);
        let cmds = next_commands(&s, &set(&[2]), 1);
        assert_eq!(cmds.len(), of_1.len(), "not throttled: {cmds:?}");
        for (c, sh) in cmds.iter().zip(&of_1) {
            assert_eq!(
                *c,
                Command::Assign {
                    shard: *sh,
                    node: 2
                }
            );
        }
    }

    #[test]
    fn moves_in_progress_count_against_the_limit() {
        let mut s = ClusterState::new("c", 64).unwrap();
        join(&mut s, 1);
        let live = set(&[1, 2, 3]);
        converge(&mut s, &live, 64);
        join(&mut s, 2);
        let cmds = next_commands(&s, &live, 2);
        apply_all(&mut s, &cmds);
        join(&mut s, 3);
        // Two moves to node 2 are still in flight.
        assert!(next_commands(&s, &live, 2).is_empty());
        assert_eq!(next_commands(&s, &live, 5).len(), 3);
    }

    /// Like `converge`, but joining replicas also report in sync (as their fetch loops do),
    /// at the shard's current epoch.
    fn converge_replicated(s: &mut ClusterState, live: &BTreeSet<NodeId>) {
        for _ in 0..1000 {
            let cmds = next_commands(s, live, 8);
            let joining: Vec<(ShardId, NodeId)> = s
                .table
                .iter()
                .flat_map(|(sh, e)| e.joining.iter().map(move |n| (sh, *n)))
                .collect();
            if cmds.is_empty() && joining.is_empty() {
                return;
            }
            apply_all(s, &cmds);
            // Each report names the lists' version as the replica sees it when it reports.
            for (shard, node) in joining {
                let Ok(e) = s.table.get(shard) else { continue };
                if e.joining.contains(&node) {
                    let (epoch, isr) = (e.epoch, e.isr);
                    apply_all(
                        s,
                        &[Command::ReplicaInSync {
                            shard,
                            node,
                            epoch,
                            isr,
                        }],
                    );
                }
            }
            let moving: Vec<_> = s
                .table
                .iter()
                .filter_map(|(sh, e)| e.moving_to.map(|to| (sh, to)))
                .collect();
            for (sh, to) in moving {
                let c = complete(s, sh, to).expect("in progress");
                apply_all(s, &[c]);
            }
        }
        panic!("no convergence");
    }

    fn replicated(nodes: &[NodeId], r: u32) -> ClusterState {
        let mut s = ClusterState::new("c", 32).unwrap();
        s.apply(&Command::SetReplication { factor: r });
        for n in nodes {
            join(&mut s, *n);
        }
        converge_replicated(&mut s, &set(nodes));
        s
    }

    #[test]
    fn every_shard_gets_r_copies_on_distinct_nodes() {
        for r in 1..=3u32 {
            let s = replicated(&[1, 2, 3, 4], r);
            for (sh, e) in s.table.iter() {
                let owner = e.owner.expect("owned");
                assert_eq!(e.replicas.len(), r as usize - 1, "shard {sh}: {e:?}");
                assert!(e.joining.is_empty());
                assert!(!e.replicas.contains(&owner));
            }
        }
        assert!(matches!(
            ClusterState::new("c", 1)
                .unwrap()
                .apply(&Command::SetReplication { factor: 0 }),
            Outcome::Refused(_)
        ));
    }

    #[test]
    fn a_dead_owner_is_replaced_by_an_in_sync_replica_and_copies_are_restored() {
        let mut s = replicated(&[1, 2, 3], 2);
        let before = s.clone();
        let live = set(&[2, 3]);
        let cmds = next_commands(&s, &live, 8);
        for (sh, e) in before.table.iter() {
            if e.owner == Some(1) {
                let promoted = e.replicas[0];
                assert!(
                    cmds.contains(&Command::Promote {
                        shard: sh,
                        node: promoted
                    }),
                    "shard {sh}: {cmds:?}"
                );
            }
            if e.replicas.contains(&1) {
                assert!(cmds.contains(&Command::RemoveReplica { shard: sh, node: 1 }));
            }
        }
        assert!(!cmds.iter().any(|c| matches!(c, Command::Assign { .. })));
        converge_replicated(&mut s, &live);
        for (sh, e) in s.table.iter() {
            assert!(matches!(e.owner, Some(2) | Some(3)), "shard {sh}: {e:?}");
            assert_eq!(e.replicas.len(), 1);
            assert!(before.table.get(sh).unwrap().epoch <= e.epoch);
        }
    }

    #[test]
    fn a_shard_whose_copies_are_all_gone_waits_instead_of_starting_empty() {
        let s = replicated(&[1, 2, 3], 2);
        let (sh, e) = s
            .table
            .iter()
            .find(|(_, e)| e.owner == Some(1) && e.replicas == vec![2])
            .expect("a shard on 1 copied to 2");
        let _ = e;
        let cmds = next_commands(&s, &set(&[3]), 8);
        // Nothing takes the shard over, and its copies stay listed: they alone may.
        assert!(
            !cmds.iter().any(|c| matches!(c,
                Command::Assign { shard, .. } | Command::Promote { shard, .. }
                | Command::RemoveReplica { shard, .. } if *shard == sh)),
            "{cmds:?}"
        );
        // A joining replica is never promoted: it may miss acknowledged events.
        let mut t = s.clone();
        t.table.get_mut(sh).unwrap().joining.push(3);
        assert!(matches!(
            t.apply(&Command::Promote { shard: sh, node: 3 }),
            Outcome::Refused(_)
        ));
    }

    #[test]
    fn with_replication_a_join_moves_shards_only_to_in_sync_replicas() {
        let mut s = replicated(&[1, 2], 2);
        join(&mut s, 3);
        let live = set(&[1, 2, 3]);
        let cmds = next_commands(&s, &live, 8);
        // Moves go only to in-sync replicas (the cap may push a shard between 1 and 2).
        for c in &cmds {
            if let Command::BeginMove { shard, to } = c {
                assert!(s.table.get(*shard).unwrap().replicas.contains(to), "{c:?}");
            }
        }
        assert!(cmds
            .iter()
            .any(|c| matches!(c, Command::AddReplica { node: 3, .. })));
        apply_all(&mut s, &cmds);
        // Not in sync yet: still no move, and an epoch other than the shard's is refused.
        assert!(!next_commands(&s, &live, 8)
            .iter()
            .any(|c| matches!(c, Command::BeginMove { to: 3, .. })));
        let (sh, e) = s
            .table
            .iter()
            .find(|(_, e)| e.joining.contains(&3))
            .map(|(sh, e)| (sh, e.clone()))
            .unwrap();
        assert!(matches!(
            s.apply(&Command::ReplicaInSync {
                shard: sh,
                node: 3,
                epoch: e.epoch.next(),
                isr: e.isr,
            }),
            Outcome::Refused(_)
        ));
        converge_replicated(&mut s, &live);
        let t = targets(32, &live);
        for (sh, e) in s.table.iter() {
            assert_eq!(e.owner, t[sh as usize]);
            assert_eq!(e.replicas.len(), 1, "{e:?}");
        }
    }
}
