//! Operator-state checkpoints (ARCHITECTURE §6): window state written as rkyv archives at a
//! watermark-aligned time, so that a restart loads it and replays only the log written after
//! that point.
//!
//! **Alignment.** The engine asks a dataflow for a checkpoint by holding every input's
//! watermark where it is (events keep entering, at that watermark); the timely frontier then
//! settles at `F`, the smallest of them. A window operator whose input frontier is exactly
//! `F` holds the effect of every event that entered before `F` and of none that entered at or
//! after it (those wait in the time-order stage), so its state *is* the state at `F`. The
//! engine records, per input, the first log record that entered at `F` or later: a restart
//! loads the state and replays from there.
//!
//! Keys and values are written flat ([`crate::flat`]), so archives never nest.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use rkyv::rancor;
use rkyv::{Archive, Deserialize, Serialize};
use timely::scheduling::Activator;

use super::accumulate::Acc;
use crate::flat::{row_from_wire, row_to_wire, value_from_wire, WireValue};
use crate::value::Value;

/// One accumulator.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum AccSnap {
    Count(i64),
    Sum {
        sum: i128,
        float: f64,
        n: i64,
        is_float: bool,
    },
    Avg {
        sum: f64,
        n: i64,
    },
    Extreme {
        value: Option<Vec<WireValue>>,
        max: bool,
    },
    Multiset {
        values: Vec<(Vec<WireValue>, i64)>,
        max: bool,
    },
    CountDistinct(Vec<(Vec<WireValue>, i64)>),
    TopK {
        counts: Vec<(Vec<WireValue>, i64)>,
        k: u64,
    },
}

fn flat(v: &Value) -> Vec<WireValue> {
    row_to_wire(std::slice::from_ref(v))
}

fn unflat(cells: &[WireValue]) -> Result<Value, String> {
    value_from_wire(cells)
}

impl AccSnap {
    /// The snapshot of an accumulator.
    pub fn of(acc: &Acc) -> AccSnap {
        match acc {
            Acc::Count(n) => AccSnap::Count(*n),
            Acc::Sum {
                sum,
                float,
                n,
                is_float,
            } => AccSnap::Sum {
                sum: *sum,
                float: *float,
                n: *n,
                is_float: *is_float,
            },
            Acc::Avg { sum, n } => AccSnap::Avg { sum: *sum, n: *n },
            Acc::Extreme { value, max } => AccSnap::Extreme {
                value: value.as_ref().map(flat),
                max: *max,
            },
            Acc::ExtremeMultiset { values, max } => AccSnap::Multiset {
                values: values.iter().map(|(v, n)| (flat(v), *n)).collect(),
                max: *max,
            },
            Acc::CountDistinct(m) => {
                AccSnap::CountDistinct(m.iter().map(|(v, n)| (flat(v), *n)).collect())
            }
            Acc::TopK { counts, k } => AccSnap::TopK {
                counts: counts.iter().map(|(v, n)| (flat(v), *n)).collect(),
                k: *k as u64,
            },
        }
    }

    /// The accumulator back.
    pub fn restore(&self) -> Result<Acc, String> {
        let pairs = |v: &[(Vec<WireValue>, i64)]| -> Result<Vec<(Value, i64)>, String> {
            v.iter().map(|(c, n)| Ok((unflat(c)?, *n))).collect()
        };
        Ok(match self {
            AccSnap::Count(n) => Acc::Count(*n),
            AccSnap::Sum {
                sum,
                float,
                n,
                is_float,
            } => Acc::Sum {
                sum: *sum,
                float: *float,
                n: *n,
                is_float: *is_float,
            },
            AccSnap::Avg { sum, n } => Acc::Avg { sum: *sum, n: *n },
            AccSnap::Extreme { value, max } => Acc::Extreme {
                value: value.as_deref().map(unflat).transpose()?,
                max: *max,
            },
            AccSnap::Multiset { values, max } => Acc::ExtremeMultiset {
                values: pairs(values)?.into_iter().collect::<BTreeMap<_, _>>(),
                max: *max,
            },
            AccSnap::CountDistinct(v) => Acc::CountDistinct(pairs(v)?.into_iter().collect()),
            AccSnap::TopK { counts, k } => Acc::TopK {
                counts: pairs(counts)?.into_iter().collect(),
                k: *k as usize,
            },
        })
    }
}

/// One key's accumulators in a pane or session.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct GroupSnap {
    pub key: Vec<WireValue>,
    pub accs: Vec<AccSnap>,
}

/// A tumbling or sliding window's state.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PaneSnap {
    pub start: u64,
    pub end: u64,
    pub emitted: bool,
    pub groups: Vec<GroupSnap>,
}

/// One session.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SessionSnap {
    pub key: Vec<WireValue>,
    pub start: u64,
    pub end: u64,
    pub emitted: bool,
    pub accs: Vec<AccSnap>,
}

/// A window operator's whole state on one worker.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum WindowSnap {
    Panes(Vec<PaneSnap>),
    Sessions(Vec<SessionSnap>),
    /// A ledger's records (the consolidated input of an unwindowed aggregate); last, so
    /// that checkpoints written before it existed still read.
    Records(Vec<RecordSnap>),
}

/// One update on its way through a window's time-order stage, in wire form: a record that
/// waited for the frontier (or arrived after its shard had left) when the shard moved.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RecordSnap {
    pub key: Vec<WireValue>,
    pub time: u64,
    pub row: Vec<WireValue>,
    /// The timely time it entered at on the old owner.
    pub at: u64,
    pub diff: i64,
}

impl RecordSnap {
    /// The wire form of an update.
    pub fn of(u: &crate::render::Update) -> RecordSnap {
        RecordSnap {
            key: flat(&u.0.key),
            time: u.0.time,
            row: row_to_wire(&u.0.row),
            at: u.1,
            diff: u.2 as i64,
        }
    }

    /// The update back.
    pub fn restore(&self) -> Result<crate::render::Update, String> {
        let event = crate::event::Event {
            key: unflat(&self.key)?,
            time: self.time,
            row: row_from_wire(&self.row)?,
        };
        Ok((event, self.at, self.diff as isize))
    }
}

/// One shard's part of one window operator's state, handed to the shard's new owner when
/// the shard moves (ARCHITECTURE §5): open panes or sessions of the shard's keys, and the
/// records of those keys that had not reached the window yet.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct MovedSnap {
    pub panes: Vec<PaneSnap>,
    pub sessions: Vec<SessionSnap>,
    pub records: Vec<RecordSnap>,
    /// Entries of a KV view written by a `kv_put`, as stored (key bytes, value bytes).
    pub kv: Vec<(Vec<u8>, Vec<u8>)>,
}

impl MovedSnap {
    /// Whether there is nothing to hand over.
    pub fn is_empty(&self) -> bool {
        self.panes.is_empty()
            && self.sessions.is_empty()
            && self.records.is_empty()
            && self.kv.is_empty()
    }
}

/// Encodes a moved part.
pub fn encode_moved(s: &MovedSnap) -> Result<Vec<u8>, String> {
    rkyv::to_bytes::<rancor::Error>(s)
        .map(|b| b.to_vec())
        .map_err(|e| e.to_string())
}

/// Decodes (and validates) a moved part: it comes from another node.
pub fn decode_moved(bytes: &[u8]) -> Result<MovedSnap, String> {
    rkyv::from_bytes::<MovedSnap, rancor::Error>(&aligned(bytes)).map_err(|e| e.to_string())
}

/// Encodes a snapshot.
pub fn encode(s: &WindowSnap) -> Result<Vec<u8>, String> {
    rkyv::to_bytes::<rancor::Error>(s)
        .map(|b| b.to_vec())
        .map_err(|e| e.to_string())
}

/// Decodes (and validates) a snapshot.
pub fn decode(bytes: &[u8]) -> Result<WindowSnap, String> {
    rkyv::from_bytes::<WindowSnap, rancor::Error>(&aligned(bytes)).map_err(|e| e.to_string())
}

/// A copy of `bytes` aligned for rkyv's validation (bytes from a file or a frame may start
/// anywhere).
fn aligned(bytes: &[u8]) -> rkyv::util::AlignedVec<16> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    aligned
}

/// A key and its accumulators back from a snapshot.
pub fn restore_group(g: &GroupSnap) -> Result<(Value, Vec<Acc>), String> {
    let key = row_from_wire(&g.key)?.pop().unwrap_or(Value::Null);
    let accs = g
        .accs
        .iter()
        .map(AccSnap::restore)
        .collect::<Result<_, _>>()?;
    Ok((key, accs))
}

/// What a checkpoint asks of this worker's operators.
#[derive(Debug)]
pub struct Request {
    /// The aligned time: operators snapshot once their input frontier is exactly here.
    pub time: u64,
    /// Parts written so far: (node id, bytes).
    pub parts: Vec<(String, Vec<u8>)>,
    /// Errors met (a part that could not be encoded fails the checkpoint).
    pub errors: Vec<String>,
}

/// The meeting point of one dataflow's snapshot-capable operators and its worker: state to
/// restore at build, the current request, and the activators that wake the operators.
#[derive(Default)]
pub struct Checkpoints {
    restore: RefCell<HashMap<String, Vec<u8>>>,
    request: RefCell<Option<Request>>,
    activators: RefCell<Vec<Activator>>,
    participants: Cell<usize>,
}

impl Checkpoints {
    /// With this worker's restored parts (node id → bytes).
    pub fn restoring(parts: HashMap<String, Vec<u8>>) -> Rc<Checkpoints> {
        Rc::new(Checkpoints {
            restore: RefCell::new(parts),
            ..Checkpoints::default()
        })
    }

    /// Called by an operator at build: counts it and keeps its activator.
    pub fn register(&self, activator: Activator) {
        self.participants.set(self.participants.get() + 1);
        self.activators.borrow_mut().push(activator);
    }

    /// The restored part of `node`, if any (taken once).
    pub fn take_restore(&self, node: &str) -> Option<Vec<u8>> {
        self.restore.borrow_mut().remove(node)
    }

    /// Starts a request at `time` and wakes every operator.
    pub fn request(&self, time: u64) {
        *self.request.borrow_mut() = Some(Request {
            time,
            parts: Vec::new(),
            errors: Vec::new(),
        });
        for a in self.activators.borrow().iter() {
            a.activate();
        }
    }

    /// Called by an operator after its work: if a request waits and `frontier` is exactly
    /// its time (or the input is complete), writes the operator's part.
    pub fn offer(&self, node: &str, frontier: &[u64], snap: impl FnOnce(u64) -> WindowSnap) {
        let mut req = self.request.borrow_mut();
        let Some(r) = req.as_mut() else { return };
        if r.parts.iter().any(|(n, _)| n == node) {
            return;
        }
        let aligned = frontier.is_empty() || frontier == [r.time];
        if !aligned {
            return;
        }
        match encode(&snap(r.time)) {
            Ok(bytes) => r.parts.push((node.to_string(), bytes)),
            Err(e) => r.errors.push(format!("node `{node}`: {e}")),
        }
    }

    /// The finished request, once every registered operator has offered its part.
    pub fn take_finished(&self) -> Option<Request> {
        let mut req = self.request.borrow_mut();
        let done = req
            .as_ref()
            .is_some_and(|r| r.parts.len() + r.errors.len() >= self.participants.get());
        if done {
            req.take()
        } else {
            None
        }
    }

    /// Drops the request under way (the engine gave up on it).
    pub fn cancel(&self) {
        self.request.borrow_mut().take();
    }

    /// Whether a request is under way.
    pub fn pending(&self) -> bool {
        self.request.borrow().is_some()
    }
}
