//! The publish path and the owner's side of replication (production: `Shared::publish` and
//! the forward path in node `cluster/mod.rs`, `await_replicas` and `serve_fetch` in
//! `cluster/replication/owner.rs` and `serve.rs`), each decision taken by the core.

use std::collections::BTreeMap;

use starling_cluster::replication::{
    caught_up, check_min_insync, marks_within, truncate_to, AckError, AckVerdict, AckWait,
};
use starling_cluster::{check_write, Command, Epoch, NodeId, ShardId};

use super::{
    ms, Attempt, Entry, FetchView, Fetched, Item, Log, Msg, Publish, Sim, Waiting, ACK_TIMEOUT,
    FETCH_ENTRIES, MIN_INSYNC, PRODUCERS, RETRY_WINDOW, SHARDS, TOPICS,
};

impl Sim {
    /// A producer publishes a new batch to one or two shards, or retries an earlier one
    /// (answered or not, mostly a recent one, now and then any from the last
    /// [`RETRY_WINDOW`]): each shard's part goes to the owner the producer's table names,
    /// stamped with its epoch there.
    pub(super) fn publish(&mut self) {
        let p = self.below(PRODUCERS);
        let firsts = &self.batches[p as usize];
        let known = firsts.len() as u64;
        let oldest = firsts.partition_point(|t| *t + RETRY_WINDOW < self.now) as u64;
        let b = if known > oldest && self.chance(350) {
            self.stats.retries += 1;
            let back = if self.chance(100) { known } else { 12 };
            known - 1 - self.below((known - oldest).min(back))
        } else {
            let now = self.now;
            self.batches[p as usize].push(now);
            self.stats.publishes += 1;
            let topic = self.below(TOPICS.len() as u64) as usize;
            let mut ids = BTreeMap::new();
            for _ in 0..1 + self.below(2) {
                let shard = self.below(u64::from(SHARDS)) as ShardId;
                self.next_id += 1;
                ids.entry(shard).or_insert(self.next_id);
            }
            self.publishes.insert((p, known), Publish { topic, ids });
            known
        };
        let origin = (p, b);
        let pb = &self.publishes[&origin];
        let topic = pb.topic;
        let mut by_owner: BTreeMap<NodeId, Vec<(ShardId, u64)>> = BTreeMap::new();
        for shard in pb.ids.keys() {
            if let Ok(e) = self.routes.get(*shard) {
                if let Some(owner) = e.owner {
                    by_owner.entry(owner).or_default().push((*shard, e.epoch.0));
                }
            }
        }
        // A node cut off from its peers may still be reached by producers.
        for (owner, epochs) in by_owner {
            if self.nodes[&owner].up {
                self.attempt(owner, origin, topic, epochs);
            }
        }
    }

    /// An owner receives its part of a publish: refused by the fence, without a lease or
    /// enough in-sync copies, or while another attempt of it is being logged; otherwise the
    /// shards it holds already are skipped and the others logged a little later.
    fn attempt(
        &mut self,
        id: NodeId,
        origin: super::Origin,
        topic: usize,
        epochs: Vec<(ShardId, u64)>,
    ) {
        self.stats.attempts += 1;
        let shards: Vec<ShardId> = epochs.iter().map(|(s, _)| *s).collect();
        let view = &self.nodes[&id].view;
        let fenced = epochs.iter().any(|(s, epoch)| {
            check_write(&view.table, id, *s, Epoch(*epoch)).map_or(true, |f| !f.is_accept())
        });
        if fenced {
            self.stats.fenced += 1;
            return;
        }
        if !self.lease(id) {
            self.stats.no_lease += 1;
            return;
        }
        if check_min_insync(view, TOPICS[topic], &shards, MIN_INSYNC).is_err() {
            self.stats.refused_min_insync += 1;
            return;
        }
        let due = self.now + ms(self.below(400));
        let Some(c) = self.node(id).seen.try_claim(origin, &shards) else {
            self.stats.busy += 1;
            return;
        };
        if c.claimed.is_empty() {
            self.trace(|| format!("{id} holds {origin:?} for {shards:?} already"));
            self.stats.answered_logged_before += 1;
            self.wait_for_replicas(id, origin, topic, shards);
            return;
        }
        self.node(id).logging.push(Attempt {
            origin,
            topic,
            shards,
            claimed: c.claimed,
            epochs,
            due,
        });
    }

    /// Logs the claimed parts that are due, if this node still owns their shards at the
    /// epochs they were stamped with (production fences again after the claim and
    /// `mark_epochs` checks the owner), marking a new epoch before its first entry.
    pub(super) fn log_attempts(&mut self, id: NodeId) {
        let now = self.now;
        let (due, later): (Vec<Attempt>, Vec<Attempt>) = std::mem::take(&mut self.node(id).logging)
            .into_iter()
            .partition(|a| a.due <= now);
        self.node(id).logging = later;
        for a in due {
            let view = &self.nodes[&id].view;
            let owned = self.lease(id)
                && a.epochs.iter().all(|(s, epoch)| {
                    check_write(&view.table, id, *s, Epoch(*epoch)).is_ok_and(|f| f.is_accept())
                });
            let ids = self.publishes[&a.origin].ids.clone();
            let at = self.at();
            let (tracing, step) = (self.tracing, self.step);
            let n = self.node(id);
            if owned {
                for shard in &a.claimed {
                    let epoch = a.epochs.iter().find(|(s, _)| s == shard).map_or(0, |e| e.1);
                    let log = n.logs.entry((a.topic, *shard)).or_default();
                    log.mark(epoch, log.next());
                    let entry = Entry {
                        id: ids[shard],
                        origin: a.origin,
                    };
                    if tracing {
                        eprintln!(
                            "[{step}] {id} logs {:?} to {}/{shard} at {}",
                            a.origin,
                            a.topic,
                            log.next()
                        );
                    }
                    if let Err(e) = log.append(entry) {
                        panic!("{at}: node {id} logged a publish again: {e}");
                    }
                }
                n.seen.note(a.origin, &a.claimed);
            }
            n.seen.release(a.origin, &a.claimed);
            if owned {
                self.wait_for_replicas(id, a.origin, a.topic, a.shards);
            }
        }
    }

    fn wait_for_replicas(
        &mut self,
        id: NodeId,
        origin: super::Origin,
        topic: usize,
        shards: Vec<ShardId>,
    ) {
        let now = self.now;
        let n = self.node(id);
        let ends = shards
            .iter()
            .map(|s| (*s, n.logs.get(&(topic, *s)).map_or(0, Log::next)))
            .collect();
        n.waiting.push(Waiting {
            origin,
            topic,
            shards,
            wait: AckWait::new(TOPICS[topic], ends, MIN_INSYNC),
            started: now,
        });
    }

    /// Every waiting publish of `id` asks `Progress::check` by its owner's table: answered
    /// (if the lease holds), refused, timed out, or still waiting, demoting the replicas it
    /// found lagging.
    pub(super) fn answer_publishes(&mut self, id: NodeId) {
        let waiting = std::mem::take(&mut self.node(id).waiting);
        let mut kept = Vec::new();
        for mut w in waiting {
            let waited = self.now.saturating_sub(w.started);
            let n = &self.nodes[&id];
            match n.progress.check(&n.view.table, id, &mut w.wait, waited) {
                Ok(AckVerdict::Answer) if self.lease(id) => {
                    self.trace(|| format!("{id} answers {:?} {:?}", w.origin, w.wait.ends()));
                    self.answered(id, &w)
                }
                Ok(AckVerdict::Answer) => self.stats.no_lease += 1,
                Err(AckError::Moved { .. }) => self.stats.moved += 1,
                Err(AckError::TooFewCopies { .. }) => self.stats.too_few += 1,
                Ok(AckVerdict::Wait { lagging, .. }) => {
                    for l in lagging {
                        if self.node(id).progress.begin_demote(l) {
                            self.trace(|| format!("{id} demotes {l:?}"));
                            self.stats.demotions_proposed += 1;
                            self.propose(id, l.command(), Some(l), None);
                        }
                    }
                    if waited >= ACK_TIMEOUT {
                        self.stats.timed_out += 1;
                    } else {
                        kept.push(w);
                    }
                }
            }
        }
        self.node(id).waiting.extend(kept);
    }

    /// A publish's part is answered: every copy the committed table lists in sync must hold
    /// its entries, which are remembered as answered from now on.
    fn answered(&mut self, id: NodeId, w: &Waiting) {
        let at = self.at();
        for &(shard, end) in w.wait.ends() {
            let e = self.state.table.get(shard).expect("a shard of the table");
            // Replicas whose in-sync report, proposed and not yet applied, would be
            // accepted: the cluster may count them in sync any moment.
            let mut pending = Vec::new();
            for p in &self.raft {
                let Some(Command::ReplicaInSync {
                    shard: s,
                    node,
                    epoch,
                    isr,
                }) = p.command
                else {
                    continue;
                };
                if s != shard || epoch != e.epoch || isr != e.isr {
                    continue;
                }
                // One made from an answer of this owner's earlier life is dropped unless
                // strict (see `Sim::strict`).
                if !self.made_before_restart(p) || self.strict {
                    pending.push(node);
                }
            }
            let owner = &self.nodes[&id];
            let mine = &owner.logs[&(w.topic, shard)].entries[..end as usize];
            for &r in e.owner.iter().chain(&e.replicas).chain(&pending) {
                let theirs = self.nodes[&r].logs.get(&(w.topic, shard));
                let theirs = theirs.map_or(&[][..], |l| &l.entries[..]);
                assert!(
                    theirs.len() >= mine.len() && theirs[..mine.len()] == *mine,
                    "{at}: node {id} answered a publish to {}/{shard} up to {end} while {r}, \
                     in sync or about to be, holds {} entries, not all the same ({e:?}, its \
                     own view {:?}): {:?} vs {:?}",
                    TOPICS[w.topic],
                    theirs.len(),
                    owner.view.table.get(shard),
                    mine.iter().map(|e| e.origin).collect::<Vec<_>>(),
                    theirs.iter().map(|e| e.origin).collect::<Vec<_>>(),
                );
            }
        }
        for &shard in &w.shards {
            let log = &self.nodes[&id].logs[&(w.topic, shard)];
            let Some(&offset) = log.origins.get(&w.origin) else {
                panic!(
                    "{at}: node {id} answered {:?} for {}/{shard}, which is not in its log",
                    w.origin, TOPICS[w.topic]
                );
            };
            let entry = log.entries[offset as usize];
            assert_eq!(entry.id, self.publishes[&w.origin].ids[&shard], "{at}");
            self.acked
                .entry((w.topic, shard))
                .or_default()
                .insert(offset, entry);
        }
        self.stats.answered += 1;
    }

    /// As owner: answers a fetch (production's `serve_fetch` and `read_for`, less the long
    /// poll), refusing one for a shard it does not own at the fetched epoch.
    pub(super) fn serve(
        &mut self,
        replica: NodeId,
        id: NodeId,
        fetch: u64,
        FetchView { epochs, isr }: FetchView<'_>,
        items: &[Item],
    ) {
        let view = &self.nodes[&id].view;
        let owns = epochs.iter().all(|(s, epoch)| {
            view.table
                .get(*s)
                .is_ok_and(|e| e.owner == Some(id) && e.epoch.0 == *epoch)
        });
        if !owns {
            self.stats.stale_fetches += 1;
            let msg = Msg::Answer {
                id: fetch,
                fetched: None,
                life: self.nodes[&id].life,
            };
            self.send(id, replica, msg);
            return;
        }
        let empty = Log::default();
        let mut out = Vec::new();
        // (topic, shard, epoch, next, level) of the copies this owner accepts.
        let mut accepted = Vec::new();
        for it in items {
            let log = self.nodes[&id].logs.get(&(it.topic, it.shard));
            let log = log.unwrap_or(&empty);
            let owner_next = log.next();
            let mut f = Fetched {
                topic: it.topic,
                shard: it.shard,
                owner_next,
                truncate_to: None,
                first: it.next,
                entries: Vec::new(),
                marks: Vec::new(),
            };
            if let Some(t) = truncate_to(&log.marks, owner_next, it.next, it.last_epoch) {
                f.truncate_to = Some(t.to);
                f.marks = t.marks();
                out.push(f);
                continue;
            }
            // The owner accepts the copy up to `next`: it must be the owner's log.
            let copy = self.nodes[&replica].logs.get(&(it.topic, it.shard));
            let copy = copy.map_or(&[][..], |l| &l.entries[..]);
            let n = copy.len().min(it.next as usize);
            assert!(
                copy[..n] == log.entries[..n],
                "{}: {id} accepts {replica}'s copy of {}/{} up to {}, which differs from its \
                 log: {:?} vs {:?}",
                self.at(),
                TOPICS[it.topic],
                it.shard,
                it.next,
                copy.iter().map(|e| e.origin).collect::<Vec<_>>(),
                log.entries.iter().map(|e| e.origin).collect::<Vec<_>>()
            );
            let epoch = epochs
                .iter()
                .find(|(s, _)| *s == it.shard)
                .map_or(0, |e| e.1);
            let end = (it.next + FETCH_ENTRIES).min(owner_next);
            f.entries = log.entries[it.next as usize..end as usize].to_vec();
            f.marks = marks_within(&log.marks, it.next, end);
            let level = caught_up(it.next, end - it.next, owner_next);
            self.trace(|| {
                let (t, sh) = (it.topic, it.shard);
                format!(
                    "{id} serves {replica} {t}/{sh} from {} to {end} level {level}",
                    it.next
                )
            });
            accepted.push((it.topic, it.shard, epoch, it.next, level));
            out.push(f);
        }
        let n = self.node(id);
        for (topic, shard, epoch, next, level) in accepted {
            n.progress
                .report(TOPICS[topic], shard, replica, epoch, next);
            if level {
                // A fetch without the version counts as sent before any (0).
                let seen = isr.iter().find(|(s, _)| *s == shard).map_or(0, |v| v.1);
                n.progress.level(TOPICS[topic], shard, replica, epoch, seen);
            }
        }
        let msg = Msg::Answer {
            id: fetch,
            fetched: Some(out),
            life: self.nodes[&id].life,
        };
        self.send(id, replica, msg);
    }
}
