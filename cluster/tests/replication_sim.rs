//! A deterministic simulation of shard replication: the pure decisions production runs
//! (`starling_cluster::replication`: truncation, acknowledgement and in-sync bookkeeping,
//! retry claims, promotion; the table, the fence and the controller) driven through
//! thousands of random steps. Logs are vectors of entries per (node, topic, shard); the
//! network loses, delays and duplicates fetches and their answers; links are cut; nodes die
//! (keeping nothing but their logs) and come back, or are cut off from everyone while they
//! go on running with a table that no longer changes (gossip calls them dead, the leader
//! promotes their replicas, their lease runs out); every node and every producer routes and
//! fences by its own copy of the table, which lags the committed one; Raft proposals arrive
//! late or never. No socket, clock or task: one seeded PRNG decides everything, so a failure
//! replays exactly with `STARLING_SIM_SEED=<seed>` (and `STARLING_SIM_STEPS`).
//!
//! The shell parts production keeps (the fetch loop, serving a fetch, a publish waiting for
//! its replicas) are modelled in `replication_sim/` the way `starling-node`'s
//! `cluster/replication/` does them, each decision taken by the same core call.
//!
//! Checked at every step:
//! - an `acks = all` publish is answered only when every copy the committed table lists in
//!   sync, or will list once a pending in-sync report is applied, holds its entries (the
//!   same entries, at the same offsets), and its entries are in the owner's log;
//! - every answered entry stays at its offset in the log of the shard's owner and of every
//!   in-sync replica, through deaths, demotions and promotions;
//! - once a replica has truncated what its owner never had, its log is a prefix of the
//!   owner's: a copy an owner accepts (answers without a cut) is checked entry by entry;
//! - a (producer, batch) is logged at most once per shard in every node's log, whatever the
//!   retries;
//! - a shard's epoch never goes back, and `promoted` names exactly the promotions applied.
//!
//! One known gap is left out by default: an owner that restarts before failure detection
//! forgets which replicas it made level, while an in-sync report made from its earlier
//! life's answer may still be on its way (see `Progress`'s module doc). Such reports are
//! dropped (counted as `restart_window`), as a fix would refuse them;
//! `STARLING_SIM_STRICT=1` applies them and shows the gap (with `STARLING_SIM_SEED=22`, an
//! answered entry is missing from an in-sync replica at step 7112).
//! `STARLING_SIM_TRACE=1` prints the run.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use rand_core::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use starling_cluster::replication::{
    needs_mark, AckWait, EpochMark, Lagging, Origin, Progress, Seen,
};
use starling_cluster::{ClusterState, Command, MemberInfo, NodeId, Outcome, ShardId, ShardTable};

// A test crate's root resolves modules beside it, not in a folder of its name.
#[path = "replication_sim/faults.rs"]
mod faults;
#[path = "replication_sim/owner.rs"]
mod owner;
#[path = "replication_sim/replica.rs"]
mod replica;

const NODES: u64 = 5;
const SHARDS: u32 = 4;
const TOPICS: [&str; 2] = ["a", "b"];
const FACTOR: u32 = 3;
const MIN_INSYNC: u32 = 2;
const PRODUCERS: u64 = 3;
/// Entries per (topic, shard) in one answer: small, so that copies take several fetches.
const FETCH_ENTRIES: u64 = 3;
/// Production's values (node `cluster/replication/` and `cluster/mod.rs`).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_millis(5200);
const REPORT_EVERY: Duration = Duration::from_secs(1);
const LEASE: Duration = Duration::from_millis(1500);
/// How long gossip takes to call a dead or unreachable node dead.
const DETECT: Duration = Duration::from_millis(1500);
/// What happens in a step, per mille: a publish (or a retry), a node dying, a dead node
/// restarting, a node cut off from its peers and Raft, a Raft leader election, a link cut
/// or slowed down.
const PUBLISH: u64 = 450;
const KILL: u64 = 10;
const RESTART: u64 = 20;
const ISOLATE: u64 = 3;
const STALL: u64 = 1;
const CUT: u64 = 4;
const SLOW: u64 = 2;
/// How long a producer retries a batch: production's retry memory holds the newest
/// `RECENT_ORIGINS` entries of a shard across a restart, on the grounds that a retry comes
/// soon after its first attempt; this keeps to it (a shard here takes under 256 entries in
/// a minute).
const RETRY_WINDOW: Duration = Duration::from_secs(60);
/// Entries per shard a restarted node reads back for their publishes.
const RECENT_ORIGINS: usize = 256;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    id: u64,
    origin: Origin,
}

/// One (topic, shard) log of a node: durable, like its marks.
#[derive(Clone, Debug, Default)]
struct Log {
    entries: Vec<Entry>,
    marks: Vec<EpochMark>,
    /// Origin → offset, to find a publish and to catch one logged twice.
    origins: BTreeMap<Origin, u64>,
}

impl Log {
    fn next(&self) -> u64 {
        self.entries.len() as u64
    }

    fn append(&mut self, e: Entry) -> Result<(), String> {
        if let Some(at) = self.origins.insert(e.origin, self.next()) {
            return Err(format!(
                "{:?} twice (at {at} and {})",
                e.origin,
                self.next()
            ));
        }
        self.entries.push(e);
        Ok(())
    }

    /// Like the storage's `truncate_from`: entries and marks from `to` on go (nothing at
    /// all when `to` is at or past the end).
    fn truncate(&mut self, to: u64) {
        if to >= self.next() {
            return;
        }
        for e in self.entries.drain(to as usize..) {
            self.origins.remove(&e.origin);
        }
        self.marks.retain(|(_, start)| *start < to);
    }

    /// Like the storage's `mark_epoch`: a mark at or below the newest is ignored.
    fn mark(&mut self, epoch: u64, start: u64) {
        if needs_mark(&self.marks, epoch) {
            self.marks.push((epoch, start));
        }
    }
}

/// A fetch a replica waits for the answer of (production's fetch loop sends one at a time
/// per owner and drops an answer that comes after its timeout).
struct Outstanding {
    id: u64,
    sent: Duration,
    shards: Vec<(ShardId, u64)>,
    isr: Vec<(ShardId, u64)>,
    joining: BTreeSet<ShardId>,
}

/// A publish's part for one owner, claimed and being logged.
struct Attempt {
    origin: Origin,
    topic: usize,
    shards: Vec<ShardId>,
    claimed: Vec<ShardId>,
    epochs: Vec<(ShardId, u64)>,
    due: Duration,
}

/// A logged publish waiting for its replicas.
struct Waiting {
    origin: Origin,
    topic: usize,
    shards: Vec<ShardId>,
    wait: AckWait,
    started: Duration,
}

struct Node {
    up: bool,
    /// Raised at every death, so that nothing sent to an earlier life is applied.
    life: u64,
    /// Until when it is cut off from every node and from Raft.
    isolated_until: Duration,
    /// Since when gossip has not heard from it (dead or cut off).
    gone_since: Option<Duration>,
    /// Its copy of the committed state, and when it last heard from the Raft majority.
    view: ClusterState,
    contact: Duration,
    logs: BTreeMap<(usize, ShardId), Log>,
    progress: Progress,
    seen: Seen,
    fetching: BTreeMap<NodeId, Outstanding>,
    reported: BTreeMap<ShardId, Duration>,
    logging: Vec<Attempt>,
    waiting: Vec<Waiting>,
}

/// What a fetch says of the replica's view of the shards it copies (production's
/// `FetchView`): (shard, epoch) it copies at, and (shard, version of the replica lists) it
/// saw when it asked.
struct FetchView<'a> {
    epochs: &'a [(ShardId, u64)],
    isr: &'a [(ShardId, u64)],
}

struct Item {
    topic: usize,
    shard: ShardId,
    next: u64,
    last_epoch: u64,
}

struct Fetched {
    topic: usize,
    shard: ShardId,
    owner_next: u64,
    truncate_to: Option<u64>,
    first: u64,
    entries: Vec<Entry>,
    /// The marks of the entries, or with a truncation the owner's epoch (`Truncation`).
    marks: Vec<EpochMark>,
}

enum Msg {
    Fetch {
        id: u64,
        epochs: Vec<(ShardId, u64)>,
        isr: Vec<(ShardId, u64)>,
        items: Vec<Item>,
    },
    /// `None`: the owner does not own a fetched shard at its epoch.
    Answer {
        id: u64,
        fetched: Option<Vec<Fetched>>,
        /// The owner's life when it answered.
        life: u64,
    },
}

struct Envelope {
    at: Duration,
    seq: u64,
    from: NodeId,
    to: NodeId,
    /// The receiver's life when sent.
    life: u64,
    msg: Rc<Msg>,
}

struct Proposal {
    at: Duration,
    seq: u64,
    from: NodeId,
    life: u64,
    /// `None`: lost (the proposer only learns that it timed out).
    command: Option<Command>,
    demote: Option<Lagging>,
    /// For an in-sync report: the owner, and its life, whose answer made the replica level.
    level_from: Option<(NodeId, u64)>,
}

/// A publish as its producer sees it: the same event ids on every retry.
struct Publish {
    topic: usize,
    ids: BTreeMap<ShardId, u64>,
}

#[derive(Default, Debug)]
struct Stats {
    publishes: u64,
    retries: u64,
    attempts: u64,
    answered: u64,
    answered_logged_before: u64,
    fenced: u64,
    no_lease: u64,
    refused_min_insync: u64,
    busy: u64,
    moved: u64,
    too_few: u64,
    timed_out: u64,
    fetches: u64,
    stale_fetches: u64,
    lost: u64,
    duplicated: u64,
    late_answers: u64,
    append_gaps: u64,
    truncations: u64,
    truncated_entries: u64,
    demotions_proposed: u64,
    demotions_applied: u64,
    in_sync_applied: u64,
    in_sync_refused: u64,
    promotions: u64,
    deaths: u64,
    restarts: u64,
    isolations: u64,
    cuts: u64,
    raft_stalls: u64,
    slow_links: u64,
    /// In-sync reports made from an answer of the owner's earlier life, dropped (see
    /// `strict`).
    restart_window: u64,
}

struct Sim {
    seed: u64,
    step: usize,
    rng: Pcg64,
    now: Duration,
    seq: u64,
    /// The committed (Raft-agreed) state.
    state: ClusterState,
    nodes: BTreeMap<NodeId, Node>,
    /// The producers' copy of the table they route by.
    routes: ShardTable,
    net: Vec<Envelope>,
    raft: Vec<Proposal>,
    /// Cut links (lower id, higher id) → until when.
    cuts: BTreeMap<(NodeId, NodeId), Duration>,
    /// Slow links (congested: every message takes seconds) → until when.
    slow: BTreeMap<(NodeId, NodeId), Duration>,
    /// Until when Raft commits nothing (a leader election): proposals wait, the leader is
    /// silent.
    stalled_until: Duration,
    publishes: BTreeMap<Origin, Publish>,
    /// Per producer, when each of its batches was first sent.
    batches: Vec<Vec<Duration>>,
    next_id: u64,
    /// Answered entries: (topic, shard) → offset → entry.
    acked: BTreeMap<(usize, ShardId), BTreeMap<u64, Entry>>,
    epochs: BTreeMap<ShardId, u64>,
    stats: Stats,
    tracing: bool,
    /// Whether an in-sync report made from an answer of its owner's earlier life is applied
    /// like any other, which shows the open issue in `Progress`'s module doc (an owner that
    /// restarted forgot which replicas it made level). Off by default: such reports are
    /// dropped, as a fix would refuse them, so that the run checks everything else.
    strict: bool,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut state = ClusterState::new("sim", SHARDS).expect("shards > 0");
        for id in 1..=NODES {
            state.apply(&Command::AddMember {
                node: id,
                info: MemberInfo::default(),
            });
        }
        state.apply(&Command::SetReplication { factor: FACTOR });
        let nodes = (1..=NODES)
            .map(|id| {
                let node = Node {
                    up: true,
                    life: 0,
                    isolated_until: Duration::ZERO,
                    gone_since: None,
                    view: state.clone(),
                    contact: Duration::ZERO,
                    logs: BTreeMap::new(),
                    progress: Progress::default(),
                    seen: Seen::default(),
                    fetching: BTreeMap::new(),
                    reported: BTreeMap::new(),
                    logging: Vec::new(),
                    waiting: Vec::new(),
                };
                (id, node)
            })
            .collect();
        Sim {
            seed,
            step: 0,
            rng: Pcg64::seed_from_u64(seed),
            now: Duration::ZERO,
            seq: 0,
            routes: state.table.clone(),
            state,
            nodes,
            net: Vec::new(),
            raft: Vec::new(),
            cuts: BTreeMap::new(),
            slow: BTreeMap::new(),
            stalled_until: Duration::ZERO,
            publishes: BTreeMap::new(),
            batches: vec![Vec::new(); PRODUCERS as usize],
            next_id: 0,
            acked: BTreeMap::new(),
            epochs: BTreeMap::new(),
            stats: Stats::default(),
            tracing: std::env::var("STARLING_SIM_TRACE").is_ok_and(|v| v == "1"),
            strict: std::env::var("STARLING_SIM_STRICT").is_ok_and(|v| v == "1"),
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    /// True with probability `p` per mille.
    fn chance(&mut self, p: u64) -> bool {
        self.below(1000) < p
    }

    /// Where a failure happened, for every assertion message.
    fn at(&self) -> String {
        format!(
            "seed {} step {} (replay: STARLING_SIM_SEED={} STARLING_SIM_STEPS={})",
            self.seed,
            self.step,
            self.seed,
            self.step + 1
        )
    }

    fn node(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).expect("nodes are never removed")
    }

    fn isolated(&self, id: NodeId) -> bool {
        self.now < self.nodes[&id].isolated_until
    }

    /// Whether `id` may write as an owner: it heard from the Raft majority within the lease.
    fn lease(&self, id: NodeId) -> bool {
        self.now < self.nodes[&id].contact + LEASE
    }

    /// Puts a message on the network: lost, delayed or duplicated at random.
    fn send(&mut self, from: NodeId, to: NodeId, msg: Msg) {
        let msg = Rc::new(msg);
        let copies = if self.chance(30) { 2 } else { 1 };
        self.stats.duplicated += copies - 1;
        for _ in 0..copies {
            let cut = self.cuts.contains_key(&(from.min(to), from.max(to)));
            if cut || self.isolated(from) || self.isolated(to) || self.chance(40) {
                self.stats.lost += 1;
                continue;
            }
            let slow = self.slow.contains_key(&(from.min(to), from.max(to)));
            let delay = if slow {
                ms(2000 + self.below(4000))
            } else if self.chance(50) {
                ms(self.below(6000))
            } else {
                ms(self.below(150))
            };
            self.seq += 1;
            let life = self.nodes[&to].life;
            self.net.push(Envelope {
                at: self.now + delay,
                seq: self.seq,
                from,
                to,
                life,
                msg: Rc::clone(&msg),
            });
        }
    }

    /// Proposes through Raft: applied a little (now and then a lot) later, or lost.
    fn propose(
        &mut self,
        from: NodeId,
        command: Command,
        demote: Option<Lagging>,
        level_from: Option<(NodeId, u64)>,
    ) {
        let lost = self.isolated(from) || self.chance(30);
        let delay = if self.chance(20) {
            self.below(6000)
        } else {
            self.below(800)
        };
        self.seq += 1;
        let p = Proposal {
            at: (self.now + ms(delay)).max(self.stalled_until),
            seq: self.seq,
            from,
            life: self.nodes[&from].life,
            command: (!lost).then_some(command),
            demote,
            level_from,
        };
        self.raft.push(p);
    }

    /// Prints what happens with `STARLING_SIM_TRACE=1`, to follow a failing seed.
    fn trace(&self, what: impl FnOnce() -> String) {
        if self.tracing {
            eprintln!("[{} {:?}] {}", self.step, self.now, what());
        }
    }

    fn apply(&mut self, c: &Command) -> Outcome {
        let o = self.state.apply(c);
        self.trace(|| format!("applied {c:?}: {o:?}"));
        let done = !matches!(o, Outcome::Refused(_));
        match c {
            Command::ReplicaInSync { .. } if done => self.stats.in_sync_applied += 1,
            Command::ReplicaInSync { .. } => self.stats.in_sync_refused += 1,
            Command::ReplicaOutOfSync { .. } if done => self.stats.demotions_applied += 1,
            Command::Promote { .. } if done => self.stats.promotions += 1,
            _ => {}
        }
        o
    }

    fn random_step(&mut self) {
        let tick = ms(self.below(120));
        self.now += tick;
        // One event a step at most, by these chances per mille.
        let mut roll = self.below(1000);
        let mut next = |per_mille: u64| {
            let hit = roll < per_mille;
            roll = roll.wrapping_sub(per_mille);
            hit
        };
        if next(PUBLISH) {
            self.publish();
        } else if next(KILL) {
            self.kill();
        } else if next(RESTART) {
            self.restart();
        } else if next(ISOLATE) {
            self.isolate();
        } else if next(STALL) {
            self.stalled_until = self.now + ms(2000 + self.below(6000));
            self.stats.raft_stalls += 1;
        } else if next(CUT + SLOW) {
            let a = 1 + self.below(NODES);
            let b = 1 + self.below(NODES);
            let until = self.now + ms(1000 + self.below(9000));
            if a == b {
            } else if self.below(CUT + SLOW) < CUT {
                self.cuts.insert((a.min(b), a.max(b)), until);
                self.stats.cuts += 1;
            } else {
                self.slow.insert((a.min(b), a.max(b)), until);
                self.stats.slow_links += 1;
            }
        }
        let now = self.now;
        self.cuts.retain(|_, until| *until > now);
        self.slow.retain(|_, until| *until > now);
        for id in 1..=NODES {
            let n = self.node(id);
            if n.up && now >= n.isolated_until && n.gone_since.is_some() {
                n.gone_since = None;
            }
        }
        if self.now >= self.stalled_until && self.chance(500) {
            self.lead();
        }
        self.deliver_proposals();
        self.spread();
        self.deliver_messages();
        for id in 1..=NODES {
            if self.nodes[&id].up {
                self.log_attempts(id);
                self.answer_publishes(id);
                self.fetch(id);
            }
        }
    }

    /// Whether `p` is an in-sync report made from an answer of its owner's earlier life.
    fn made_before_restart(&self, p: &Proposal) -> bool {
        p.level_from
            .is_some_and(|(owner, life)| self.nodes[&owner].life != life)
    }

    fn deliver_proposals(&mut self) {
        let now = self.now;
        let (mut due, later): (Vec<Proposal>, Vec<Proposal>) = std::mem::take(&mut self.raft)
            .into_iter()
            .partition(|p| p.at <= now);
        self.raft = later;
        due.sort_by_key(|p| (p.at, p.seq));
        for p in due {
            if self.made_before_restart(&p) && !self.strict {
                // Fenced, as the open issue's fix would (see `strict`).
                self.stats.restart_window += 1;
                self.trace(|| format!("fenced {:?}", p.command));
            } else if let Some(c) = &p.command {
                self.apply(c);
            }
            if let Some(l) = p.demote {
                let n = self.node(p.from);
                if n.life == p.life {
                    n.progress.end_demote(&l);
                }
            }
        }
    }

    fn deliver_messages(&mut self) {
        let now = self.now;
        let (mut due, later): (Vec<Envelope>, Vec<Envelope>) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|e| e.at <= now);
        self.net = later;
        due.sort_by_key(|e| (e.at, e.seq));
        for e in due {
            let to = &self.nodes[&e.to];
            if !to.up || to.life != e.life || self.isolated(e.to) {
                self.stats.lost += 1;
                continue;
            }
            match &*e.msg {
                Msg::Fetch {
                    id,
                    epochs,
                    isr,
                    items,
                } => {
                    let view = FetchView { epochs, isr };
                    self.serve(e.from, e.to, *id, view, items)
                }
                Msg::Answer { id, fetched, life } => {
                    self.apply_answer(e.to, (e.from, *life), *id, fetched)
                }
            }
        }
    }

    /// Checked after every step: epochs only rise, and every answered entry is at its
    /// offset in the logs of its shard's owner and in-sync replicas.
    fn check(&mut self) {
        for (shard, e) in self.state.table.iter() {
            let last = self.epochs.entry(shard).or_insert(0);
            assert!(
                e.epoch.0 >= *last,
                "{}: shard {shard} epoch went back",
                self.at()
            );
            *last = e.epoch.0;
        }
        for ((topic, shard), entries) in &self.acked {
            let Ok(e) = self.state.table.get(*shard) else {
                continue;
            };
            for holder in e.owner.iter().chain(&e.replicas) {
                let log = self.nodes[holder].logs.get(&(*topic, *shard));
                for (offset, entry) in entries {
                    let have = log.and_then(|l| l.entries.get(*offset as usize));
                    assert_eq!(
                        have,
                        Some(entry),
                        "{}: answered entry at {offset} of {}/{shard} is not in the log of \
                         {holder} ({e:?})",
                        self.at(),
                        TOPICS[*topic],
                    );
                }
            }
        }
    }
}

fn run(seed: u64, steps: usize) -> Stats {
    let mut sim = Sim::new(seed);
    for step in 0..steps {
        sim.step = step;
        sim.random_step();
        sim.check();
    }
    eprintln!("seed {seed}: {steps} steps: {:?}", sim.stats);
    sim.stats
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn replication_keeps_every_answered_publish_through_random_faults() {
    let steps = env("STARLING_SIM_STEPS").map_or(10_000, |s| s as usize);
    let seeds: Vec<u64> = match env("STARLING_SIM_SEED") {
        Some(s) => vec![s],
        // Each of the bugs this simulation found (see `Progress`, `Seen::forget` and
        // `Truncation::cut`) shows under at least one of these when brought back: 13, 16
        // and 22 the level marks dropped on demotion, 1, 2, 10 and 22 a truncated publish
        // still remembered, 1 and 10 a copy of an epoch its owner never had kept.
        None => vec![1, 2, 3, 10, 13, 16, 22, 0x5eed],
    };
    for seed in seeds {
        let s = run(seed, steps);
        if steps < 10_000 {
            continue;
        }
        // The run must have exercised what it claims to test.
        assert!(s.answered > 1000, "seed {seed}: few answers: {s:?}");
        assert!(s.truncations > 0, "seed {seed}: no truncation: {s:?}");
        assert!(s.demotions_applied > 0, "seed {seed}: no ISR shrink: {s:?}");
        assert!(s.in_sync_applied > 0, "seed {seed}: no ISR join: {s:?}");
        assert!(
            s.in_sync_refused > 0,
            "seed {seed}: no stale join refused: {s:?}"
        );
        assert!(s.promotions > 0, "seed {seed}: no promotion: {s:?}");
        assert!(
            s.answered_logged_before > 0,
            "seed {seed}: no retry found logged: {s:?}"
        );
        assert!(
            s.busy > 0,
            "seed {seed}: no retry met its first attempt: {s:?}"
        );
        assert!(
            s.moved > 0,
            "seed {seed}: no owner lost a waiting publish: {s:?}"
        );
        assert!(s.no_lease > 0, "seed {seed}: no lease ran out: {s:?}");
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = format!("{:?}", run(7, 600));
    let b = format!("{:?}", run(7, 600));
    assert_eq!(a, b);
}
