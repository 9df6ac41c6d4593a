//! What goes wrong, and the Raft leader that reacts: nodes dying, restarting and cut off
//! from their peers, the committed state reaching the nodes (or not), and the controller's
//! commands with the check that `promoted` names exactly the promotions applied.

use std::collections::BTreeSet;

use starling_cluster::replication::{promoted, Progress, Seen};
use starling_cluster::{next_commands, Command, NodeId, Outcome, ShardId};

use super::{ms, Sim, DETECT, NODES, RECENT_ORIGINS};

impl Sim {
    /// The committed state reaches the nodes in touch with the majority, each now and then,
    /// and the producers' table too.
    pub(super) fn spread(&mut self) {
        for id in 1..=NODES {
            // No leader during a stall: no contact, the leases run out.
            let stalled = self.now < self.stalled_until;
            if self.nodes[&id].up && !self.isolated(id) && !stalled && self.chance(600) {
                let (state, now) = (self.state.clone(), self.now);
                let n = self.node(id);
                n.view = state;
                n.contact = now;
            }
        }
        if self.chance(300) {
            self.routes = self.state.table.clone();
        }
    }

    /// Kills a node, never leaving fewer than three up (R = 3 keeps a copy).
    pub(super) fn kill(&mut self) {
        let up: Vec<NodeId> = (1..=NODES).filter(|n| self.nodes[n].up).collect();
        if up.len() + 2 <= NODES as usize {
            return;
        }
        let id = up[self.below(up.len() as u64) as usize];
        let now = self.now;
        let n = self.node(id);
        n.up = false;
        n.life += 1;
        n.gone_since = n.gone_since.or(Some(now));
        n.progress = Progress::default();
        n.seen = Seen::default();
        n.fetching.clear();
        n.reported.clear();
        n.logging.clear();
        n.waiting.clear();
        self.stats.deaths += 1;
        self.trace(|| format!("{id} dies"));
    }

    /// Restarts a dead node: its logs are as it left them; it reads their newest entries'
    /// publishes back, as production's `replica_loop` does.
    pub(super) fn restart(&mut self) {
        let down: Vec<NodeId> = (1..=NODES).filter(|n| !self.nodes[n].up).collect();
        if down.is_empty() {
            return;
        }
        let id = down[self.below(down.len() as u64) as usize];
        let n = self.node(id);
        n.up = true;
        let mut recent = Vec::new();
        for ((_, shard), log) in &n.logs {
            let from = log.entries.len().saturating_sub(RECENT_ORIGINS);
            for e in &log.entries[from..] {
                recent.push((e.origin.0, e.origin.1, *shard));
            }
        }
        for k in recent {
            n.seen.insert(k);
        }
        self.stats.restarts += 1;
        self.trace(|| format!("{id} restarts"));
    }

    /// Cuts a live node off from everyone for a while: it goes on running on the table it
    /// has, until its lease runs out.
    pub(super) fn isolate(&mut self) {
        let others_gone = (1..=NODES)
            .filter(|n| self.nodes[n].gone_since.is_some())
            .count();
        if others_gone >= 2 {
            return;
        }
        let id = 1 + self.below(NODES);
        let until = self.now + ms(2000 + self.below(8000));
        let now = self.now;
        let n = self.node(id);
        if !n.up {
            return;
        }
        n.isolated_until = until;
        n.gone_since = n.gone_since.or(Some(now));
        self.stats.isolations += 1;
        self.trace(|| format!("{id} is cut off until {until:?}"));
    }

    /// The Raft leader: the controller's next commands, by what gossip reports live (a node
    /// gone for less than `DETECT` still is), moves excluded (the hand-off's business).
    pub(super) fn lead(&mut self) {
        let live: BTreeSet<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.gone_since.is_none_or(|t| self.now < t + DETECT))
            .map(|(id, _)| *id)
            .collect();
        let prev = self.state.clone();
        let mut promotions = BTreeSet::new();
        for c in next_commands(&self.state, &live, 0) {
            let applied = !matches!(self.apply(&c), Outcome::Refused(_));
            if let (true, Command::Promote { shard, node }) = (applied, &c) {
                promotions.insert((*shard, *node));
            }
        }
        let found: BTreeSet<(ShardId, NodeId)> = (1..=NODES)
            .flat_map(|id| {
                promoted(&prev, &self.state, id)
                    .into_iter()
                    .map(move |s| (s, id))
            })
            .collect();
        assert_eq!(found, promotions, "{}", self.at());
    }
}
