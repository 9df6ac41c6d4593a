//! Property test: random appends, truncations, reads and reopens keep the sled log equal to
//! a plain in-memory model.

use std::collections::BTreeMap;

use proptest::prelude::*;
use starling_storage::{Durability, EventLog, LogOptions, SledLog};

const TOPICS: [&str; 2] = ["p", "p/q"];
const SHARDS: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    Append(usize, u32, Vec<Vec<u8>>),
    Truncate(usize, u32, u64),
    Read(usize, u32, u64, usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..TOPICS.len(), 0..SHARDS, prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 0..5))
            .prop_map(|(t, s, p)| Op::Append(t, s, p)),
        2 => (0..TOPICS.len(), 0..SHARDS, 0..40u64).prop_map(|(t, s, o)| Op::Truncate(t, s, o)),
        2 => (0..TOPICS.len(), 0..SHARDS, 0..40u64, 0..8usize).prop_map(|(t, s, f, m)| Op::Read(t, s, f, m)),
        1 => Just(Op::Reopen),
    ]
}

/// What one shard should hold.
#[derive(Default)]
struct ModelShard {
    next: u64,
    entries: BTreeMap<u64, Vec<u8>>,
}

impl ModelShard {
    fn first(&self) -> u64 {
        self.entries.keys().next().copied().unwrap_or(self.next)
    }
}

fn check(log: &SledLog, model: &BTreeMap<(usize, u32), ModelShard>) -> Result<(), TestCaseError> {
    for (t, topic) in TOPICS.iter().enumerate() {
        for s in 0..SHARDS {
            let m = model.get(&(t, s));
            let next = m.map_or(0, |m| m.next);
            let first = m.map_or(0, |m| m.first());
            prop_assert_eq!(log.next_offset(topic, s).unwrap(), next);
            prop_assert_eq!(log.first_offset(topic, s).unwrap(), first);
            let stored = log.read(topic, s, 0, usize::MAX).unwrap();
            let expected: Vec<(u64, Vec<u8>)> = m
                .map(|m| m.entries.iter().map(|(o, p)| (*o, p.clone())).collect())
                .unwrap_or_default();
            prop_assert_eq!(stored, expected);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_in_memory_model(ops in prop::collection::vec(op(), 1..40), sync in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            durability: if sync { Durability::Sync } else { Durability::default() },
            ..LogOptions::default()
        };
        let mut log = SledLog::open(dir.path(), options).unwrap();
        let mut model: BTreeMap<(usize, u32), ModelShard> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Append(t, s, payloads) => {
                    let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
                    let r = log.append(TOPICS[t], s, &refs).unwrap();
                    let m = model.entry((t, s)).or_default();
                    prop_assert_eq!(r.clone(), m.next..m.next + payloads.len() as u64);
                    m.next += refs.len() as u64;
                    for (o, p) in r.zip(payloads.iter()) {
                        m.entries.insert(o, p.clone());
                    }
                }
                Op::Truncate(t, s, offset) => {
                    let removed = log.truncate_before(TOPICS[t], s, offset).unwrap();
                    let expected = model.get_mut(&(t, s)).map_or(0, |m| {
                        let keep = m.entries.split_off(&offset);
                        let n = m.entries.len() as u64;
                        m.entries = keep;
                        n
                    });
                    prop_assert_eq!(removed, expected);
                }
                Op::Read(t, s, from, max) => {
                    let got = log.read(TOPICS[t], s, from, max).unwrap();
                    let expected: Vec<(u64, Vec<u8>)> = model.get(&(t, s)).map(|m| {
                        m.entries.range(from..).take(max).map(|(o, p)| (*o, p.clone())).collect()
                    }).unwrap_or_default();
                    prop_assert_eq!(got, expected);
                }
                Op::Reopen => {
                    drop(log);
                    log = SledLog::open(dir.path(), options).unwrap();
                }
            }
            check(&log, &model)?;
        }
    }
}
