//! A deterministic simulation of shard placement, routing and hand-off that drives the code
//! the nodes run: the controller, the fence, `route` (the publish path's split by owner) and
//! the hand-off core (`Outbox` at the old owner, `Inbox` at the new one, `reconcile`,
//! `straggler_route`), through thousands of random joins, graceful leaves, deaths, partitions,
//! lagging table views, and lost, repeated and reordered hand-off messages. Operator state is
//! modelled as the event ids each node's dataflows count per shard. No sockets, no clock, no
//! tasks: one seeded PRNG decides everything, so a failure replays exactly with
//! `STARLING_SIM_SEED=<seed>` (and `STARLING_SIM_STEPS`); `STARLING_SIM_EVENT=<id>` prints
//! where one event is whenever that changes.
//!
//! What it found in the node's code, fixed with it: a leaving node stopped as soon as it
//! owned no shard, taking records diverted after a release (stragglers) with it; and a
//! straggler batch sent again after a lost acknowledgement was merged twice (batches now
//! carry an id the receiver remembers).
//!
//! Checked after every step:
//! - every (shard, epoch) has had one owner only, and a shard's epoch never goes back;
//! - a write is accepted only by the committed owner, at an epoch since which it has owned the
//!   shard throughout (its table may lag behind an abort);
//! - no refused event is anywhere, and no accepted event is counted twice, except by a
//!   receiver of an aborted move that has not swept it yet (its copy is about to be dropped;
//!   counted in `abort_overlap`);
//! - no accepted event of a live node is lost: it is counted, released in an outbox, or a
//!   straggler on its way.
//!
//! After quiescence (no more membership changes; the controller, the hand-off steps and the
//! network run until nothing moves): the table equals `targets()`, every node is within ±10 %
//! of S/N, nothing is pending, and every accepted event that no dead node took with it is
//! counted exactly once, by its shard's owner.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand_core::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use starling_cluster::handoff::{
    chunks_of, reconcile, straggler_route, Ended, Inbox, Outbox, Receive, Send, StragglerRoute,
};
use starling_cluster::{
    check_write, complete, eligible, next_commands, route, shard_of_hash, targets, ClusterState,
    Command, Epoch, Fence, MemberInfo, NodeId, Outcome, ShardId, ShardTable,
};

const SHARDS: u32 = 64;
const MAX_NODES: usize = 6;
const ROUTERS: usize = 3;
/// Steps a publish may wait for its shard (moving, unowned) before it is answered
/// "unavailable" and never applied (the node's `PLACE_TIMEOUT`).
const DEADLINE: usize = 400;
/// Event ids per hand-off chunk.
const CHUNK: usize = 16;
/// Simulated time per step.
const TICK: Duration = Duration::from_millis(20);
const DRAIN: Duration = Duration::from_millis(40);
const RESEND: Duration = Duration::from_millis(2_000);

/// A node: its view of the table and the hand-off core's state.
struct Node {
    view: ShardTable,
    outbox: Outbox<u64>,
    inbox: Inbox,
    released: BTreeSet<ShardId>,
    /// Diverted records: (shard, event, batch id).
    stragglers: Vec<(ShardId, u64, u64)>,
    /// Cut off from the network and from the table's updates (a partition).
    cut: bool,
    /// Removed from the cluster after a graceful leave: the process runs on until it has
    /// delivered what it still holds (its `leave` waits for that), then stops.
    removed: bool,
}

/// A message on the network between nodes.
#[derive(Clone, Debug)]
enum Msg {
    Chunk {
        from: NodeId,
        send: Send<u64>,
    },
    Ack {
        to: NodeId,
        shard: ShardId,
        release: u64,
        chunk: u32,
    },
}

/// A front door: routes by its own (possibly stale) copy of the table; what cannot be placed
/// yet waits in `pending` (the node's publish retries it until its deadline).
struct Router {
    view: ShardTable,
    pending: Vec<(ShardId, u64, usize)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Pending,
    Accepted,
    Refused,
    /// Accepted, then lost with a node that died (R = 1: its state went with it).
    Lost,
}

#[derive(Default, Debug)]
struct Stats {
    published: u64,
    accepted: u64,
    refused: u64,
    retried: u64,
    stale: u64,
    not_owner: u64,
    held_by_owner: u64,
    ahead: u64,
    joins: u64,
    leaves: u64,
    deaths: u64,
    partitions: u64,
    begun: u64,
    completed: u64,
    aborted: u64,
    chunks_sent: u64,
    chunks_lost: u64,
    chunks_repeated: u64,
    duplicates_ignored: u64,
    releases_replaced: u64,
    stragglers: u64,
    gave_back: u64,
    abort_overlap: u64,
}

struct Sim {
    seed: u64,
    step: usize,
    rng: Pcg64,
    max_moves: usize,
    start: Instant,
    state: ClusterState,
    live: BTreeSet<NodeId>,
    nodes: BTreeMap<NodeId, Node>,
    routers: Vec<Router>,
    /// What each node's dataflows count, per shard.
    counted: BTreeMap<(NodeId, ShardId), Vec<u64>>,
    net: Vec<Msg>,
    /// Per event id: its shard, and what became of it.
    events: Vec<(ShardId, Fate)>,
    history: BTreeMap<(ShardId, Epoch), Option<NodeId>>,
    last_epoch: Vec<Epoch>,
    next_release: u64,
    ids_used: BTreeSet<NodeId>,
    stats: Stats,
    /// `STARLING_SIM_EVENT`: an event whose whereabouts are printed whenever they change.
    traced: Option<(u64, String)>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Pcg64::seed_from_u64(seed);
        let max_moves = 1 + (rng.next_u64() % 4) as usize;
        let state = ClusterState::new("sim", SHARDS).expect("shards > 0");
        let routers = (0..ROUTERS)
            .map(|_| Router {
                view: state.table.clone(),
                pending: Vec::new(),
            })
            .collect();
        Sim {
            seed,
            step: 0,
            rng,
            max_moves,
            start: Instant::now(),
            last_epoch: vec![Epoch(0); SHARDS as usize],
            state,
            live: BTreeSet::new(),
            nodes: BTreeMap::new(),
            routers,
            counted: BTreeMap::new(),
            net: Vec::new(),
            events: Vec::new(),
            history: BTreeMap::new(),
            next_release: 1,
            ids_used: BTreeSet::new(),
            stats: Stats::default(),
            traced: env("STARLING_SIM_EVENT").map(|id| (id, String::new())),
        }
    }

    fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n.max(1) as u64) as usize
    }

    fn now(&self) -> Instant {
        self.start + TICK * self.step as u32
    }

    fn at(&self) -> String {
        format!(
            "seed {} step {} (replay: STARLING_SIM_SEED={} STARLING_SIM_STEPS={})",
            self.seed,
            self.step,
            self.seed,
            self.step + 1
        )
    }

    fn apply(&mut self, c: &Command) -> Outcome {
        let o = self.state.apply(c);
        if matches!(o, Outcome::Refused(_)) {
            return o;
        }
        match c {
            Command::RemoveMember { node } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.removed = true;
                }
                self.live.remove(node);
                self.stop_if_done(*node);
            }
            Command::BeginMove { .. } => self.stats.begun += 1,
            Command::CompleteMove { .. } => self.stats.completed += 1,
            Command::AbortMove { .. } => self.stats.aborted += 1,
            _ => {}
        }
        o
    }

    /// A removed node's process stops once it holds nothing to deliver.
    fn stop_if_done(&mut self, n: NodeId) {
        let done = self.nodes.get(&n).is_some_and(|node| {
            node.removed && node.stragglers.is_empty() && node.outbox.shards().next().is_none()
        });
        if done {
            // The process is gone, with whatever it still counted: `check` finds any event
            // that existed nowhere else.
            self.nodes.remove(&n);
            self.counted.retain(|(m, _), _| *m != n);
        }
    }

    /// A node catches up with the committed table (unless it is cut off).
    fn refresh(&mut self, n: NodeId) {
        let table = self.state.table.clone();
        if let Some(node) = self.nodes.get_mut(&n) {
            if !node.cut {
                node.view = table;
            }
        }
    }

    // ---- membership ----

    fn join(&mut self) {
        let id = loop {
            let id = self.rng.next_u64();
            if self.ids_used.insert(id) {
                break id;
            }
        };
        self.apply(&Command::AddMember {
            node: id,
            info: MemberInfo {
                name: format!("n{id:x}"),
                ..MemberInfo::default()
            },
        });
        self.live.insert(id);
        // A new node's dataflows count nothing; `reconcile` releases what it does not own.
        self.nodes.insert(
            id,
            Node {
                view: self.state.table.clone(),
                outbox: Outbox::default(),
                inbox: Inbox::default(),
                released: BTreeSet::new(),
                stragglers: Vec::new(),
                cut: false,
                removed: false,
            },
        );
        self.stats.joins += 1;
    }

    fn leave(&mut self) {
        let staying: Vec<NodeId> = eligible(&self.state, &self.live).into_iter().collect();
        if staying.len() < 2 {
            return;
        }
        let node = staying[self.below(staying.len())];
        self.apply(&Command::SetLeaving { node });
        self.stats.leaves += 1;
    }

    /// A node dies: gossip stops reporting it, and its state (R = 1) goes with it.
    fn die(&mut self) {
        let alive: Vec<NodeId> = self.nodes.keys().copied().collect();
        if alive.len() < 2 {
            return;
        }
        let n = alive[self.below(alive.len())];
        self.live.remove(&n);
        if let Some(node) = self.nodes.remove(&n) {
            let mut lost: Vec<u64> = node.stragglers.iter().map(|(_, id, _)| *id).collect();
            // Released parts in its outbox die with it too.
            lost.extend(node.outbox.parts().map(|(_, id)| *id));
            for id in lost {
                self.events[id as usize].1 = Fate::Lost;
            }
        }
        let keys: Vec<(NodeId, ShardId)> = self
            .counted
            .keys()
            .filter(|(m, _)| *m == n)
            .copied()
            .collect();
        for k in keys {
            for id in self.counted.remove(&k).unwrap_or_default() {
                self.events[id as usize].1 = Fate::Lost;
            }
        }
        // Its messages in flight: chunks it sent may still arrive (a receiver merging them
        // is fine), acks to it are dropped on delivery.
        self.stats.deaths += 1;
    }

    fn partition(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        if ids.is_empty() {
            return;
        }
        let n = ids[self.below(ids.len())];
        if let Some(node) = self.nodes.get_mut(&n) {
            node.cut = !node.cut;
            if node.cut {
                self.stats.partitions += 1;
            }
        }
    }

    // ---- the leader ----

    fn controller(&mut self) {
        let cmds = next_commands(&self.state, &self.live, self.max_moves);
        let n = 1 + self.below(8);
        for c in cmds.into_iter().take(n) {
            self.apply(&c);
        }
    }

    // ---- a node's hand-off step (the shell's `step`, over the core) ----

    fn node_step(&mut self, n: NodeId) {
        let now = self.now();
        let at = self.at();
        let Some(node) = self.nodes.get_mut(&n) else {
            return;
        };
        let view = node.view.clone();
        for end in node.outbox.ended(&view, n) {
            if let Ended::Aborted { shard, parts } = end {
                self.stats.gave_back += 1;
                node.released.remove(&shard);
                self.counted.entry((n, shard)).or_default().extend(parts);
            }
        }
        let sending: BTreeSet<ShardId> = node.outbox.shards().collect();
        let (stale, taken) = reconcile(&view, n, &node.released, &sending);
        for s in taken {
            node.released.remove(&s);
        }
        for s in stale {
            // Counted here for a shard owned elsewhere (a fresh node's empty state, or the
            // chunks an aborted move's receiver merged): dropped, its owner has the state.
            self.counted.remove(&(n, s));
            node.released.insert(s);
        }
        for s in node.inbox.sweep(&view, n) {
            // An aborted move's merged chunks: cut out and dropped.
            self.counted.remove(&(n, s));
            node.released.insert(s);
        }
        for (shard, epoch, to) in node.outbox.ready(&view, n, now, DRAIN) {
            let parts = self.counted.remove(&(n, shard)).unwrap_or_default();
            node.released.insert(shard);
            let release = self.next_release;
            self.next_release += 1;
            node.outbox
                .start(shard, (epoch, to), release, chunks_of(parts, |_| 1, CHUNK));
        }
        if !node.cut {
            for send in node.outbox.pending(now, RESEND) {
                self.stats.chunks_sent += 1;
                self.net.push(Msg::Chunk { from: n, send });
            }
        }
        let stragglers = std::mem::take(&mut node.stragglers);
        let mut keep = Vec::new();
        for (shard, id, batch) in stragglers {
            match straggler_route(&view, n, shard) {
                StragglerRoute::Here => self.counted.entry((n, shard)).or_default().push(id),
                StragglerRoute::To { owner, epoch } if !node.cut => {
                    self.stats.stragglers += 1;
                    self.net.push(Msg::Chunk {
                        from: n,
                        send: Send {
                            shard,
                            epoch,
                            release: batch,
                            to: owner,
                            chunk: 0,
                            chunks: 0,
                            parts: vec![id],
                        },
                    });
                }
                StragglerRoute::To { .. } | StragglerRoute::Wait => keep.push((shard, id, batch)),
                StragglerRoute::Drop => panic!("{at}: shard {shard} left the table"),
            }
        }
        node.stragglers.extend(keep);
        self.stop_if_done(n);
    }

    // ---- the network ----

    /// Delivers (or loses, or repeats) one message in flight.
    fn deliver(&mut self) {
        if self.net.is_empty() {
            return;
        }
        let i = self.below(self.net.len());
        let roll = self.below(100);
        let msg = if roll < 10 {
            self.stats.chunks_repeated += 1;
            self.net[i].clone()
        } else {
            self.net.swap_remove(i)
        };
        if (10..18).contains(&roll) {
            // Lost; a chunk is sent again by its sender, a straggler goes back to it.
            self.stats.chunks_lost += 1;
            if let Msg::Chunk { from, send } = msg {
                if send.chunks == 0 {
                    self.bounce(from, &send);
                }
            }
            return;
        }
        match msg {
            Msg::Ack {
                to,
                shard,
                release,
                chunk,
            } => {
                let now = self.now();
                if let Some(node) = self.nodes.get_mut(&to).filter(|n| !n.cut) {
                    node.outbox.acked(shard, release, chunk, now);
                }
            }
            Msg::Chunk { from, send } => self.receive(from, send),
        }
    }

    /// A straggler that could not be delivered goes back to its sender (or is lost with it).
    fn bounce(&mut self, from: NodeId, send: &Send<u64>) {
        match self.nodes.get_mut(&from) {
            Some(node) => node
                .stragglers
                .extend(send.parts.iter().map(|id| (send.shard, *id, send.release))),
            None => {
                for id in &send.parts {
                    self.events[*id as usize].1 = Fate::Lost;
                }
            }
        }
    }

    /// The receiver's side (the shell's `receive`, over the core).
    fn receive(&mut self, from: NodeId, send: Send<u64>) {
        let r = send.to;
        let Some(node) = self.nodes.get_mut(&r).filter(|n| !n.cut) else {
            if send.chunks == 0 {
                self.bounce(from, &send);
            }
            return;
        };
        let view = node.view.clone();
        let decision = node.inbox.receive(
            &view,
            r,
            (send.shard, send.epoch, send.release),
            (send.chunk, send.chunks),
        );
        if let Some((t, _)) = &self.traced {
            if send.parts.contains(t) {
                eprintln!(
                    "step {}: event {t} reaches {r:x} from {from:x} ({}/{} rel {} ep {}): {decision:?}; its view {:?}",
                    self.step, send.chunk, send.chunks, send.release, send.epoch, view.get(send.shard)
                );
            }
        }
        let ack = match decision {
            Err(_) => {
                if send.chunks == 0 {
                    self.bounce(from, &send);
                }
                false
            }
            Ok(Receive::Straggler) => {
                if node.released.contains(&send.shard) {
                    // Released again meanwhile: diverted once more, as a new batch.
                    let batch = self.next_release;
                    self.next_release += 1;
                    node.stragglers
                        .extend(send.parts.iter().map(|id| (send.shard, *id, batch)));
                } else {
                    self.counted
                        .entry((r, send.shard))
                        .or_default()
                        .extend(send.parts.iter().copied());
                }
                false
            }
            Ok(Receive::AlreadyDone) => true,
            Ok(Receive::Chunk {
                replace_earlier,
                duplicate,
            }) => {
                if replace_earlier {
                    self.stats.releases_replaced += 1;
                    self.counted.remove(&(r, send.shard));
                }
                node.released.remove(&send.shard);
                if duplicate {
                    self.stats.duplicates_ignored += 1;
                } else {
                    self.counted
                        .entry((r, send.shard))
                        .or_default()
                        .extend(send.parts.iter().copied());
                }
                if node.inbox.merged(send.shard, send.chunk, send.chunks) {
                    // The receiver proposes by its own view; Raft applies it to the committed
                    // state, which may refuse it (the move ended meanwhile).
                    if let Some(c) = complete(&self.state, send.shard, r) {
                        self.apply(&c);
                    }
                }
                true
            }
        };
        if ack {
            self.net.push(Msg::Ack {
                to: from,
                shard: send.shard,
                release: send.release,
                chunk: send.chunk,
            });
        }
    }

    // ---- routing (the publish path's `place`, over `route`) ----

    fn publish(&mut self, r: usize) {
        let id = self.events.len() as u64;
        let key = self.rng.next_u64();
        let moving: Vec<ShardId> = self
            .state
            .table
            .iter()
            .filter(|(_, e)| e.moving_to.is_some())
            .map(|(s, _)| s)
            .collect();
        // A third of the traffic goes to moving shards, so that holding is exercised.
        let shard = if !moving.is_empty() && key.is_multiple_of(3) {
            moving[(key / 3) as usize % moving.len()]
        } else {
            shard_of_hash(key, SHARDS)
        };
        self.events.push((shard, Fate::Pending));
        self.stats.published += 1;
        self.routers[r]
            .pending
            .push((shard, id, self.step + DEADLINE));
        self.place(r);
    }

    /// One pass of placing router `r`'s pending events by its view.
    fn place(&mut self, r: usize) {
        let pending = std::mem::take(&mut self.routers[r].pending);
        let routed = route(
            &self.routers[r].view,
            pending.into_iter().map(|(s, id, d)| (s, (id, d))),
        );
        let mut left: Vec<(ShardId, u64, usize)> = routed
            .held
            .into_iter()
            .map(|(s, (id, d))| (s, id, d))
            .collect();
        let mut resync = false;
        for (owner, items) in routed.by_owner {
            for (shard, (id, deadline)) in items {
                let routed_at = self.routers[r]
                    .view
                    .get(shard)
                    .map(|e| e.epoch)
                    .unwrap_or(Epoch(0));
                if self.write(owner, shard, id, routed_at) {
                    self.events[id as usize].1 = Fate::Accepted;
                    self.stats.accepted += 1;
                } else {
                    resync = true;
                    left.push((shard, id, deadline));
                }
            }
        }
        if resync {
            self.routers[r].view = self.state.table.clone();
        }
        let step = self.step;
        let mut keep = Vec::new();
        for (shard, id, deadline) in left {
            if step >= deadline {
                self.events[id as usize].1 = Fate::Refused;
                self.stats.refused += 1;
            } else {
                self.stats.retried += 1;
                keep.push((shard, id, deadline));
            }
        }
        self.routers[r].pending = keep;
    }

    /// A forward of one event to `owner`, at the epoch the router's view gives its shard,
    /// fenced by the owner's own view.
    fn write(&mut self, owner: NodeId, shard: ShardId, id: u64, routed_at: Epoch) -> bool {
        let Some(node) = self.nodes.get(&owner) else {
            return false;
        };
        if node.cut {
            return false;
        }
        match check_write(&node.view, owner, shard, routed_at).expect("shard") {
            Fence::Accept => {
                let c = self.state.table.get(shard).expect("shard");
                let owners: BTreeSet<Option<NodeId>> = self
                    .history
                    .range((shard, routed_at)..=(shard, c.epoch))
                    .map(|(_, o)| *o)
                    .chain([c.owner])
                    .collect();
                assert!(
                    routed_at <= c.epoch && owners == BTreeSet::from([Some(owner)]),
                    "{}: node {owner} accepted event {id} for shard {shard} at epoch \
                     {routed_at}; the shard is at epoch {} and had owners {owners:?} since",
                    self.at(),
                    c.epoch
                );
                // A shard this node released (moving away) diverts the record: a straggler.
                let released = node.released.contains(&shard);
                if released {
                    let batch = self.next_release;
                    self.next_release += 1;
                    if let Some(node) = self.nodes.get_mut(&owner) {
                        node.stragglers.push((shard, id, batch));
                    }
                } else {
                    self.counted.entry((owner, shard)).or_default().push(id);
                }
                true
            }
            Fence::Stale { .. } => {
                self.stats.stale += 1;
                false
            }
            Fence::NotOwner { .. } => {
                self.stats.not_owner += 1;
                false
            }
            Fence::Held { .. } => {
                self.stats.held_by_owner += 1;
                false
            }
            Fence::Ahead { .. } => {
                self.stats.ahead += 1;
                self.refresh(owner);
                false
            }
        }
    }

    // ---- checks ----

    fn check(&mut self) {
        for (s, e) in self.state.table.iter() {
            let last = self.last_epoch[s as usize];
            assert!(
                e.epoch >= last,
                "{}: shard {s} went back from epoch {last} to {}",
                self.at(),
                e.epoch
            );
            self.last_epoch[s as usize] = e.epoch;
            let seen = *self.history.entry((s, e.epoch)).or_insert(e.owner);
            assert_eq!(
                seen,
                e.owner,
                "{}: shard {s} at epoch {} had owner {seen:?}, now {:?}",
                self.at(),
                e.epoch,
                e.owner
            );
        }
        // Where each event is: counted by a node, released in an outbox, a straggler at a
        // node or on the wire, or pending at a router.
        let mut counted_by: Vec<Vec<NodeId>> = vec![Vec::new(); self.events.len()];
        for ((n, s), ids) in &self.counted {
            for id in ids {
                assert_eq!(self.events[*id as usize].0, *s, "{}", self.at());
                counted_by[*id as usize].push(*n);
            }
        }
        let mut elsewhere = vec![0u32; self.events.len()];
        for node in self.nodes.values() {
            for (_, id) in node.outbox.parts() {
                elsewhere[*id as usize] += 1;
            }
            for (_, id, _) in &node.stragglers {
                elsewhere[*id as usize] += 1;
            }
        }
        for m in &self.net {
            if let Msg::Chunk { send, .. } = m {
                if send.chunks == 0 {
                    elsewhere[send.parts[0] as usize] += 1;
                }
            }
        }
        for r in &self.routers {
            for (_, id, _) in &r.pending {
                elsewhere[*id as usize] += 1;
            }
        }
        if let Some((t, last)) = self.traced.clone() {
            if let Some((shard, fate)) = self.events.get(t as usize) {
                let mut wh = format!("{fate:?} counted by {:x?}", counted_by[t as usize]);
                for (n, node) in &self.nodes {
                    if node.outbox.parts().any(|(_, id)| *id == t) {
                        wh += &format!(" outbox@{n:x}");
                    }
                    if node.stragglers.iter().any(|(_, id, _)| *id == t) {
                        wh += &format!(" straggler@{n:x}");
                    }
                }
                if wh != last {
                    eprintln!(
                        "step {}: event {t} (shard {shard}): {wh}; table {:?}",
                        self.step,
                        self.state.table.get(*shard)
                    );
                    self.traced = Some((t, wh));
                }
            }
        }
        for (id, (shard, fate)) in self.events.iter().enumerate() {
            let by = &counted_by[id];
            match fate {
                Fate::Refused => assert!(
                    by.is_empty() && elsewhere[id] == 0,
                    "{}: refused event {id} is somewhere",
                    self.at()
                ),
                Fate::Pending => {
                    assert!(by.is_empty(), "{}: pending event {id} counted", self.at())
                }
                Fate::Lost => {}
                Fate::Accepted => {
                    if by.len() > 1 {
                        // Allowed only while a receiver of an aborted move still holds the
                        // chunks it merged, before its sweep drops them.
                        let dropping: Vec<NodeId> = by
                            .iter()
                            .copied()
                            .filter(|n| {
                                self.nodes.get(n).is_some_and(|node| {
                                    node.inbox
                                        .clone()
                                        .sweep(&self.state.table, *n)
                                        .contains(shard)
                                })
                            })
                            .collect();
                        assert!(
                            by.len() - dropping.len() <= 1,
                            "{}: event {id} of shard {shard} is counted by {by:?}",
                            self.at()
                        );
                        self.stats.abort_overlap += 1;
                    }
                    assert!(
                        !by.is_empty() || elsewhere[id] > 0,
                        "{}: accepted event {id} of shard {shard} is nowhere",
                        self.at()
                    );
                }
            }
        }
    }

    // ---- the run ----

    fn random_step(&mut self) {
        let roll = self.below(100);
        let members = eligible(&self.state, &self.live).len();
        match roll {
            0..=3 if members < MAX_NODES => self.join(),
            4..=5 => self.leave(),
            6 => self.die(),
            7..=8 => self.partition(),
            9..=24 => self.controller(),
            25..=44 => {
                let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                if !ids.is_empty() {
                    let n = ids[self.below(ids.len())];
                    self.node_step(n);
                }
            }
            45..=64 => {
                for _ in 0..1 + self.below(4) {
                    self.deliver();
                }
            }
            65..=84 => {
                let r = self.below(ROUTERS);
                for _ in 0..1 + self.below(6) {
                    self.publish(r);
                }
            }
            85..=92 => {
                let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                if !ids.is_empty() {
                    let n = ids[self.below(ids.len())];
                    self.refresh(n);
                }
            }
            _ => {
                let r = self.below(ROUTERS);
                self.routers[r].view = self.state.table.clone();
                self.place(r);
            }
        }
    }

    /// No more membership changes, partitions healed: run the leader, every node's step, the
    /// network and the routers until nothing moves, then check the end state.
    fn quiesce(&mut self) {
        for node in self.nodes.values_mut() {
            node.cut = false;
        }
        if eligible(&self.state, &self.live).is_empty() {
            self.join();
        }
        for round in 0.. {
            assert!(round < 20_000, "{}: no convergence", self.at());
            self.step += 1;
            let cmds = next_commands(&self.state, &self.live, self.max_moves);
            for c in &cmds {
                let o = self.apply(c);
                assert!(
                    !matches!(o, Outcome::Refused(_)),
                    "{}: {c:?} → {o:?}",
                    self.at()
                );
            }
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for n in &ids {
                self.refresh(*n);
                self.node_step(*n);
            }
            while !self.net.is_empty() {
                let msg = self.net.swap_remove(0);
                match msg {
                    Msg::Ack {
                        to,
                        shard,
                        release,
                        chunk,
                    } => {
                        let now = self.now();
                        if let Some(node) = self.nodes.get_mut(&to) {
                            node.outbox.acked(shard, release, chunk, now);
                        }
                    }
                    Msg::Chunk { from, send } => self.receive(from, send),
                }
            }
            for r in 0..ROUTERS {
                self.routers[r].view = self.state.table.clone();
                self.place(r);
            }
            self.check();
            let moving = self.state.table.iter().any(|(_, e)| e.moving_to.is_some());
            let busy = self
                .nodes
                .values()
                .any(|n| n.outbox.shards().next().is_some() || !n.stragglers.is_empty())
                || self.routers.iter().any(|r| !r.pending.is_empty());
            if cmds.is_empty() && !moving && !busy {
                break;
            }
        }
        for _ in 0..200 {
            let r = self.below(ROUTERS);
            self.publish(r);
        }
        self.check();
        self.check_final();
    }

    fn check_final(&self) {
        let nodes = eligible(&self.state, &self.live);
        let want = targets(SHARDS, &nodes);
        for (s, e) in self.state.table.iter() {
            assert_eq!(
                e.owner,
                want[s as usize],
                "{}: shard {s} off target",
                self.at()
            );
            assert_eq!(e.moving_to, None, "{}", self.at());
        }
        let mean = f64::from(SHARDS) / nodes.len() as f64;
        for n in &nodes {
            let owned = self.state.table.owned_by(*n).len() as f64;
            assert!(
                (owned - mean).abs() <= 0.10 * mean + 1.0,
                "{}: node {n} owns {owned} shards, mean {mean:.1}",
                self.at()
            );
        }
        for r in &self.routers {
            assert!(r.pending.is_empty(), "{}: events still pending", self.at());
        }
        // Exactly once, by the owner.
        let mut count = vec![0u32; self.events.len()];
        for ((n, s), ids) in &self.counted {
            for id in ids {
                assert_eq!(
                    self.state.table.owner(*s),
                    Some(*n),
                    "{}: node {n} counts event {id} of shard {s} it does not own",
                    self.at()
                );
                count[*id as usize] += 1;
            }
        }
        for (id, (shard, fate)) in self.events.iter().enumerate() {
            let want = match fate {
                Fate::Accepted => 1,
                Fate::Refused => 0,
                Fate::Lost => continue,
                Fate::Pending => panic!("{}: event {id} still pending", self.at()),
            };
            assert_eq!(
                count[id],
                want,
                "{}: event {id} (shard {shard}, {fate:?}) is counted {} times",
                self.at(),
                count[id]
            );
        }
    }
}

fn run(seed: u64, steps: usize) -> Stats {
    let mut sim = Sim::new(seed);
    sim.join();
    sim.join();
    for step in 0..steps {
        sim.step = step;
        sim.random_step();
        sim.check();
    }
    sim.quiesce();
    let nodes = eligible(&sim.state, &sim.live).len();
    eprintln!(
        "seed {seed}: {steps} steps, max {} moves in flight, {nodes} nodes at the end: {:?}",
        sim.max_moves, sim.stats
    );
    sim.stats
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn placement_routing_and_handoff_survive_random_membership_changes() {
    let steps = env("STARLING_SIM_STEPS").map_or(3_000, |s| s as usize);
    let seeds: Vec<u64> = match env("STARLING_SIM_SEED") {
        Some(s) => vec![s],
        None => vec![1, 3, 4, 0x5eed],
    };
    let mut all = Stats::default();
    for seed in seeds {
        let st = run(seed, steps);
        assert!(st.accepted > 0, "seed {seed}: nothing was accepted");
        all.completed += st.completed;
        all.aborted += st.aborted;
        all.retried += st.retried;
        all.chunks_lost += st.chunks_lost;
        all.duplicates_ignored += st.duplicates_ignored;
        all.deaths += st.deaths;
        all.partitions += st.partitions;
        all.stragglers += st.stragglers;
        all.gave_back += st.gave_back;
        all.accepted += st.accepted;
    }
    // The runs together must have exercised what the test claims to test (one seed given
    // by hand may not).
    if env("STARLING_SIM_SEED").is_none() {
        assert!(all.completed > 0 && all.aborted > 0, "{all:?}");
        assert!(all.retried > 0, "nothing was held back: {all:?}");
        assert!(all.chunks_lost > 0 && all.duplicates_ignored > 0, "{all:?}");
        assert!(all.deaths > 0 && all.partitions > 0, "{all:?}");
        assert!(all.stragglers > 0 && all.gave_back > 0, "{all:?}");
        assert!(all.accepted > 4000, "few writes: {all:?}");
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = format!("{:?}", run(7, 300));
    let b = format!("{:?}", run(7, 300));
    assert_eq!(a, b);
}
