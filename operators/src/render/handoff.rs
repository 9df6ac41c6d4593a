//! Moving keyed window state between nodes when a shard changes owner (ARCHITECTURE §5).
//!
//! A window's state is keyed, and a key's shard is fixed, so one shard's part of it can be
//! cut out on the old owner and merged into the same operator on the new owner while both
//! keep running. [`Handoff`] is where one worker's window operators and the engine meet for
//! that, in the way [`super::snapshot::Checkpoints`] is for checkpoints:
//!
//! * **Release** (old owner): the engine marks shards released and wakes the operators. Each
//!   takes the released keys' panes or sessions, and the records of those keys still waiting
//!   in its time-order stage, out of its state. Records of a released key that reach a window
//!   later (they were in a channel) are diverted the same way instead of being counted.
//! * **Adopt** (new owner): the engine hands the parts in; each operator merges the keys that
//!   its worker owns (the same exchange the records take) into its state, with capabilities
//!   held from a spare one that follows the input frontier.
//!
//! The operator that owned a key emits its results, once: a window the old owner had
//! emitted comes over marked so, and one it had not is emitted by the new owner.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use timely::scheduling::Activator;

use super::snapshot::{MovedSnap, RecordSnap};
use super::Update;
use crate::plan::{NodeKind, Plan};
use crate::value::Value;

/// The nodes of `plan` whose state stays on a node when a shard leaves it, with why: the
/// cluster warns when it moves a shard of such a dataflow. Windows and interval joins move
/// their keyed state; unwindowed aggregates and `distinct` move their ledger (see
/// `ledger.rs`); a `kv_put` moves its view's entries; a table join's arrangements, series
/// and vector collections stay.
pub fn state_that_stays(plan: &Plan) -> Vec<(String, &'static str)> {
    plan.nodes
        .iter()
        .filter_map(|n| {
            let why = match n.kind {
                NodeKind::TableJoin { .. } => "a table join",
                NodeKind::Series { .. } => "a series (written on the node that computed it)",
                NodeKind::VectorUpsert { .. } => "a vector collection (kept per node)",
                _ => return None,
            };
            Some((n.id.clone(), why))
        })
        .collect()
}

/// One worker's meeting point for shard hand-offs of one dataflow.
pub struct Handoff {
    shards: u32,
    worker: usize,
    peers: usize,
    /// Per shard: whether its keys now belong to another node.
    released: RefCell<Vec<bool>>,
    any_released: Cell<bool>,
    /// Raised by every release; an operator that has not served it yet takes its part.
    generation: Cell<u64>,
    served: RefCell<HashMap<String, u64>>,
    /// Parts taken out, by (operator, shard), waiting for the engine.
    out: RefCell<HashMap<(String, u32), MovedSnap>>,
    /// Parts handed in, by operator, waiting for the operator.
    incoming: RefCell<HashMap<String, Vec<MovedSnap>>>,
    activators: RefCell<Vec<Activator>>,
    /// Records diverted after a release, counted across the node so the engine knows to
    /// send them on.
    stragglers: Arc<AtomicUsize>,
    /// This worker's share of `stragglers`.
    diverted: Cell<usize>,
}

impl Handoff {
    /// For worker `worker` of `peers`, with keys spread over `shards` shards (0: no shards,
    /// nothing is ever released). `stragglers` counts diverted records node-wide.
    pub fn new(shards: u32, worker: usize, peers: usize, stragglers: Arc<AtomicUsize>) -> Self {
        Handoff {
            shards,
            worker,
            peers: peers.max(1),
            released: RefCell::new(vec![false; shards as usize]),
            any_released: Cell::new(false),
            generation: Cell::new(0),
            served: RefCell::new(HashMap::new()),
            out: RefCell::new(HashMap::new()),
            incoming: RefCell::new(HashMap::new()),
            activators: RefCell::new(Vec::new()),
            stragglers,
            diverted: Cell::new(0),
        }
    }

    /// Called by an operator at build.
    pub fn register(&self, node: &str, activator: Activator) {
        self.served
            .borrow_mut()
            .insert(node.to_string(), self.generation.get());
        self.activators.borrow_mut().push(activator);
    }

    fn wake(&self) {
        for a in self.activators.borrow().iter() {
            a.activate();
        }
    }

    /// Marks `shards` as another node's and asks every operator for their part.
    pub fn release(&self, shards: &[u32]) {
        let mut released = self.released.borrow_mut();
        for &s in shards {
            if let Some(r) = released.get_mut(s as usize) {
                *r = true;
                self.any_released.set(true);
            }
        }
        self.generation.set(self.generation.get() + 1);
        drop(released);
        self.wake();
    }

    /// Takes `shards` back (this node owns them again) and queues the parts handed over.
    pub fn adopt(&self, shards: &[u32], parts: Vec<(String, MovedSnap)>) {
        let mut released = self.released.borrow_mut();
        for &s in shards {
            if let Some(r) = released.get_mut(s as usize) {
                *r = false;
            }
        }
        self.any_released.set(released.iter().any(|r| *r));
        drop(released);
        let served = self.served.borrow();
        let mut incoming = self.incoming.borrow_mut();
        for (node, part) in parts {
            if served.contains_key(&node) {
                incoming.entry(node).or_default().push(part);
            } else {
                tracing::warn!(node = %node, "state handed over for an operator that keeps none; skipped");
            }
        }
        drop(served);
        drop(incoming);
        self.wake();
    }

    /// Whether any shard is released (records then need checking).
    pub fn any_released(&self) -> bool {
        self.any_released.get()
    }

    /// The shard of `key` if it has been released (the cheap answer when none has).
    pub fn released_shard(&self, key: &Value) -> Option<u32> {
        if !self.any_released.get() {
            return None;
        }
        let shard = (key.stable_hash() % u64::from(self.shards.max(1))) as u32;
        self.released
            .borrow()
            .get(shard as usize)
            .copied()
            .unwrap_or(false)
            .then_some(shard)
    }

    /// Whether records of `key` are exchanged to this worker. Mirrors timely's exchange
    /// (a mask for a power-of-two number of workers, a modulo otherwise), which is what
    /// routes `key`'s records here.
    pub fn owns_here(&self, key: &Value) -> bool {
        let h = key.stable_hash();
        let p = self.peers as u64;
        let index = if p.is_power_of_two() {
            h & (p - 1)
        } else {
            h % p
        };
        index == self.worker as u64
    }

    /// Whether `node` owes its part of a release; marks it served.
    pub fn take_due(&self, node: &str) -> bool {
        let generation = self.generation.get();
        let mut served = self.served.borrow_mut();
        match served.get_mut(node) {
            Some(g) if *g < generation => {
                *g = generation;
                true
            }
            _ => false,
        }
    }

    /// The part `node` cut out for `shard`, to add to.
    pub fn part(&self, node: &str, shard: u32, fill: impl FnOnce(&mut MovedSnap)) {
        let mut out = self.out.borrow_mut();
        fill(out.entry((node.to_string(), shard)).or_default());
    }

    /// A record of a released key that reached `node` after the release: kept for the
    /// shard's new owner instead of being counted here.
    pub fn divert(&self, node: &str, shard: u32, u: &Update) {
        self.stragglers.fetch_add(1, Ordering::Relaxed);
        self.diverted.set(self.diverted.get() + 1);
        self.part(node, shard, |m| m.records.push(RecordSnap::of(u)));
    }

    /// The parts handed in for `node`.
    pub fn take_adopted(&self, node: &str) -> Vec<MovedSnap> {
        self.incoming.borrow_mut().remove(node).unwrap_or_default()
    }

    /// Whether every operator has served the latest release.
    pub fn finished(&self) -> bool {
        let generation = self.generation.get();
        self.served.borrow().values().all(|g| *g >= generation)
    }

    /// Everything taken out so far, by (operator, shard).
    pub fn take_out(&self) -> Vec<(String, u32, MovedSnap)> {
        let diverted = self.diverted.replace(0);
        self.stragglers.fetch_sub(diverted, Ordering::Relaxed);
        self.out
            .borrow_mut()
            .drain()
            .map(|((node, shard), m)| (node, shard, m))
            .collect()
    }
}
