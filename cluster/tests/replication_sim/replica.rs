//! The replica's side of replication (production: `replica_loop`, `fetch_from` and
//! `fetch_once` in node `cluster/replication/fetch.rs`), each decision taken by the core and by
//! the replica's own copy of the table.

use std::collections::BTreeSet;

use starling_cluster::replication::{copied_by_owner, Levels, Truncation};
use starling_cluster::{Command, Epoch, NodeId};

use super::{Fetched, Item, Log, Msg, Outstanding, Sim, FETCH_TIMEOUT, REPORT_EVERY, TOPICS};

impl Sim {
    /// Sends a fetch to every owner `id` copies from and is not waiting on already.
    pub(super) fn fetch(&mut self, id: NodeId) {
        let now = self.now;
        let view = self.nodes[&id].view.clone();
        for (owner, shards) in copied_by_owner(&view, id) {
            if self.nodes[&id]
                .fetching
                .get(&owner)
                .is_some_and(|o| now < o.sent + FETCH_TIMEOUT)
            {
                continue;
            }
            self.stats.fetches += 1;
            let mut isr = Vec::new();
            let mut joining = BTreeSet::new();
            for (s, epoch) in &shards {
                let e = view.table.get(*s).expect("a shard of the table");
                isr.push((*s, e.isr));
                if e.joining.contains(&id) && e.epoch.0 == *epoch {
                    joining.insert(*s);
                }
            }
            self.seq += 1;
            let fetch = self.seq;
            let n = self.node(id);
            let mut items = Vec::new();
            for (shard, _) in &shards {
                for topic in 0..TOPICS.len() {
                    let log = n.logs.get(&(topic, *shard));
                    items.push(Item {
                        topic,
                        shard: *shard,
                        next: log.map_or(0, Log::next),
                        last_epoch: log.and_then(|l| l.marks.last()).map_or(0, |m| m.0),
                    });
                }
            }
            let msg = Msg::Fetch {
                id: fetch,
                epochs: shards.clone(),
                isr: isr.clone(),
                items,
            };
            n.fetching.insert(
                owner,
                Outstanding {
                    id: fetch,
                    sent: now,
                    shards,
                    isr,
                    joining,
                },
            );
            self.send(id, owner, msg);
        }
    }

    /// Applies an owner's answer to the fetch `id` waits for: truncations, then appends at
    /// the owner's offsets with their marks, for the shards still copied from that owner at
    /// the same epoch; then reports in sync the joining shards it left level.
    pub(super) fn apply_answer(
        &mut self,
        id: NodeId,
        (owner, owner_life): (NodeId, u64),
        fetch: u64,
        fetched: &Option<Vec<Fetched>>,
    ) {
        let at = self.at();
        let now = self.now;
        let n = self.node(id);
        if n.fetching.get(&owner).is_none_or(|o| o.id != fetch) {
            self.stats.late_answers += 1;
            return;
        }
        let Some(out) = n.fetching.remove(&owner) else {
            return;
        };
        let Some(fetched) = fetched else {
            return;
        };
        let view = self.nodes[&id].view.clone();
        let still = copied_by_owner(&view, id)
            .remove(&owner)
            .unwrap_or_default();
        let mut levels = Levels::new(out.shards.iter().map(|(s, _)| *s));
        for f in fetched {
            let epoch = out
                .shards
                .iter()
                .find(|(s, _)| *s == f.shard)
                .map_or(0, |e| e.1);
            if !still.contains(&(f.shard, epoch)) {
                continue;
            }
            let n = self.nodes.get_mut(&id).expect("nodes are never removed");
            let log = n.logs.entry((f.topic, f.shard)).or_default();
            if let Some(to) = f.truncate_to {
                let cut = Truncation::from_answer(to, &f.marks).cut(&log.marks, log.next());
                self.stats.truncated_entries += log.next().saturating_sub(cut);
                self.stats.truncations += 1;
                if self.tracing {
                    let gone: Vec<_> = log.entries[(cut as usize).min(log.entries.len())..]
                        .iter()
                        .map(|e| e.origin)
                        .collect();
                    eprintln!(
                        "[{}] {id} truncates {}/{} to {cut}: {gone:?}",
                        self.step, f.topic, f.shard
                    );
                }
                for e in &log.entries[(cut as usize).min(log.entries.len())..] {
                    n.seen.forget((e.origin.0, e.origin.1, f.shard));
                }
                log.truncate(cut);
                levels.truncated(f.shard);
                continue;
            }
            if !f.entries.is_empty() {
                if f.first != log.next() {
                    // Production's append refuses it and the fetch fails as a whole.
                    self.stats.append_gaps += 1;
                    return;
                }
                if self.tracing {
                    let o: Vec<_> = f.entries.iter().map(|e| e.origin).collect();
                    eprintln!(
                        "[{}] {id} copies {}/{} at {}: {o:?} marks {:?} from {owner}",
                        self.step, f.topic, f.shard, f.first, f.marks
                    );
                }
                for e in &f.entries {
                    if let Err(why) = log.append(*e) {
                        panic!("{at}: node {id} copied a retry twice: {why}");
                    }
                    n.seen.insert((e.origin.0, e.origin.1, f.shard));
                }
                for (epoch, start) in &f.marks {
                    log.mark(*epoch, *start);
                }
            }
            levels.copied(f.shard, f.first, f.entries.len() as u64, f.owner_next);
        }
        for (shard, epoch) in &out.shards {
            let joining = out.joining.contains(shard)
                && view
                    .table
                    .get(*shard)
                    .is_ok_and(|e| e.joining.contains(&id) && e.epoch.0 == *epoch);
            if !joining || !levels.level(*shard) {
                continue;
            }
            let n = self.node(id);
            if n.reported
                .get(shard)
                .is_some_and(|t| now < *t + REPORT_EVERY)
            {
                continue;
            }
            n.reported.insert(*shard, now);
            let isr = out.isr.iter().find(|(s, _)| s == shard).map_or(0, |v| v.1);
            let command = Command::ReplicaInSync {
                shard: *shard,
                node: id,
                epoch: Epoch(*epoch),
                isr,
            };
            self.trace(|| format!("{id} proposes {command:?}"));
            self.propose(id, command, None, Some((owner, owner_life)));
        }
    }
}
