//! What is sent: the topic's schema, key names, how keys are drawn, and batches of events
//! in the form each protocol wants. Every event carries a sequence number unique in the run
//! (`seq`), so the count dataflow can tell a duplicate from two events.

use std::fmt::Write as _;

use anyhow::{anyhow, Result};
use rand::rngs::SmallRng;
use rand::RngExt;
use rand_distr::{Distribution, Zipf};
use serde_json::{json, Value as Json};
use starling_client::protocol::WireValue;

use crate::args::KeyDistribution;

/// The topic declaration every run creates: `key` routes and groups, `ts` is event time.
pub fn topic_declaration(name: &str) -> Json {
    json!({
        "name": name,
        "key": "key",
        "time": "ts",
        "fields": [
            {"name": "key", "type": "string"},
            {"name": "seq", "type": "int"},
            {"name": "ts", "type": "timestamp"},
            {"name": "payload", "type": "string"},
        ]
    })
}

/// Draws key indexes in `0..keys`.
#[derive(Clone, Debug)]
pub enum KeySampler {
    Uniform(u64),
    /// rand_distr's Zipf over ranks `1..=keys`; rank 1 is key 0, the hottest.
    Zipf(Zipf<f64>, u64),
}

impl KeySampler {
    /// A sampler for `keys` keys.
    pub fn new(keys: u64, distribution: KeyDistribution) -> Result<KeySampler> {
        Ok(match distribution {
            KeyDistribution::Uniform => KeySampler::Uniform(keys),
            KeyDistribution::Zipf(s) => KeySampler::Zipf(
                Zipf::new(keys as f64, s).map_err(|e| anyhow!("zipf:{s} over {keys} keys: {e}"))?,
                keys,
            ),
        })
    }

    /// The next key index.
    pub fn sample(&self, rng: &mut SmallRng) -> u32 {
        match self {
            KeySampler::Uniform(n) => rng.random_range(0..*n) as u32,
            KeySampler::Zipf(z, n) => {
                let rank = z.sample(rng) as u64;
                (rank.clamp(1, *n) - 1) as u32
            }
        }
    }
}

/// Key index → key text. Zero-padded so the view, which pages in byte order, lists keys in
/// index order.
#[derive(Debug)]
pub struct KeyNames {
    names: Vec<String>,
}

impl KeyNames {
    /// Names for `keys` keys.
    pub fn new(keys: u64) -> KeyNames {
        let width = keys.saturating_sub(1).max(1).to_string().len();
        KeyNames {
            names: (0..keys).map(|i| format!("k{i:0width$}")).collect(),
        }
    }

    /// The name of key `i`.
    pub fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }

    /// The index of a key name, if it is one of this run's.
    pub fn index(&self, name: &str) -> Option<u32> {
        let i: usize = name.strip_prefix('k')?.parse().ok()?;
        (self.names.get(i).map(String::as_str) == Some(name)).then_some(i as u32)
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.names.len()
    }
}

/// The body of one publish request.
pub enum Body {
    /// NDJSON for HTTP.
    Ndjson(Vec<u8>),
    /// Typed rows in the topic's field order, for QUIC.
    Rows(Vec<Vec<WireValue>>),
}

/// One batch: what is sent, and what it stands for when acknowledged.
pub struct Batch {
    pub body: Body,
    /// Events in `body` (a duplicated event twice).
    pub rows: u64,
    /// Key index of every event sent.
    pub sent_keys: Vec<u32>,
    /// Key index of every event withheld by the fault option: acknowledged without being sent.
    pub skipped_keys: Vec<u32>,
    /// Newest event time in the batch (ms since the epoch).
    pub max_ts: u64,
}

/// Builds batches; shared by the connections (each brings its own generator).
pub struct Generator {
    pub names: std::sync::Arc<KeyNames>,
    pub sampler: KeySampler,
    pub jitter_ms: u64,
    pub payload: String,
    pub quic: bool,
    /// Events with a sequence number below this are withheld (see `--fault-skip-events`).
    pub fault_skip: u64,
    /// Events with a sequence number below this are sent twice (see
    /// `--fault-duplicate-events`).
    pub fault_duplicate: u64,
}

impl Generator {
    /// The events with sequence numbers `seqs`, stamped `now_ms` minus a random jitter.
    pub fn batch(&self, seqs: std::ops::Range<u64>, now_ms: u64, rng: &mut SmallRng) -> Batch {
        let n = (seqs.end - seqs.start) as usize;
        let mut sent_keys = Vec::with_capacity(n);
        let mut skipped_keys = Vec::new();
        let mut ndjson = Vec::new();
        let mut rows = Vec::new();
        if self.quic {
            rows.reserve(n);
        } else {
            ndjson.reserve(n * (60 + self.payload.len()));
        }
        let mut line = String::new();
        let mut max_ts = 0;
        let mut body_rows = 0;
        for seq in seqs {
            let k = self.sampler.sample(rng);
            let jitter = if self.jitter_ms > 0 {
                rng.random_range(0..=self.jitter_ms)
            } else {
                0
            };
            let ts = now_ms.saturating_sub(jitter);
            max_ts = max_ts.max(ts);
            if seq < self.fault_skip {
                skipped_keys.push(k);
                continue;
            }
            sent_keys.push(k);
            let key = self.names.name(k);
            let copies = if seq < self.fault_duplicate { 2 } else { 1 };
            for _ in 0..copies {
                body_rows += 1;
                if self.quic {
                    rows.push(vec![
                        WireValue::Str(key.to_string()),
                        WireValue::Int(seq as i64),
                        WireValue::Timestamp(ts as i64),
                        WireValue::Str(self.payload.clone()),
                    ]);
                } else {
                    // Keys and payload are plain ASCII letters and digits: nothing to escape.
                    line.clear();
                    let _ = writeln!(
                        line,
                        r#"{{"key":"{key}","seq":{seq},"ts":{ts},"payload":"{}"}}"#,
                        self.payload
                    );
                    ndjson.extend_from_slice(line.as_bytes());
                }
            }
        }
        Batch {
            body: if self.quic {
                Body::Rows(rows)
            } else {
                Body::Ndjson(ndjson)
            },
            rows: body_rows,
            sent_keys,
            skipped_keys,
            max_ts,
        }
    }
}

/// `len` bytes of filler text.
pub fn payload(len: u32) -> String {
    "abcdefghijklmnopqrstuvwxyz0123456789"
        .chars()
        .cycle()
        .take(len as usize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn generator(quic: bool, fault_skip: u64) -> Generator {
        Generator {
            names: std::sync::Arc::new(KeyNames::new(100)),
            sampler: KeySampler::new(100, KeyDistribution::Uniform).unwrap(),
            jitter_ms: 50,
            payload: payload(8),
            quic,
            fault_skip,
            fault_duplicate: 0,
        }
    }

    #[test]
    fn key_names_round_trip_and_sort_in_index_order() {
        let names = KeyNames::new(1000);
        assert_eq!(names.name(7), "k007");
        assert_eq!(names.index("k007"), Some(7));
        assert_eq!(names.index("k7"), None);
        assert_eq!(names.index("k1000"), None);
        assert_eq!(names.index("other"), None);
        assert!(names.name(99) < names.name(100));
        assert_eq!(KeyNames::new(1).name(0), "k0");
    }

    #[test]
    fn ndjson_batches_are_valid_events_with_jittered_times() {
        let mut rng = SmallRng::seed_from_u64(1);
        let b = generator(false, 0).batch(10..20, 1_000_000, &mut rng);
        let Body::Ndjson(bytes) = &b.body else {
            panic!("http batch")
        };
        let lines: Vec<Json> = bytes
            .split(|c| *c == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 10);
        assert_eq!(b.rows, 10);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l["seq"], 10 + i as u64);
            let ts = l["ts"].as_u64().unwrap();
            assert!((1_000_000 - 50..=1_000_000).contains(&ts));
            assert_eq!(l["key"], generator(false, 0).names.name(b.sent_keys[i]));
        }
    }

    #[test]
    fn withheld_events_are_not_sent() {
        let mut rng = SmallRng::seed_from_u64(1);
        let b = generator(true, 13).batch(10..20, 1_000, &mut rng);
        assert_eq!(b.rows, 7);
        let Body::Rows(rows) = &b.body else {
            panic!("quic batch")
        };
        assert_eq!(rows.len(), 7);
        assert_eq!(rows[0][1], WireValue::Int(13));
        assert_eq!(b.skipped_keys.len(), 3);
    }

    #[test]
    fn duplicated_events_are_sent_twice_and_expected_once() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut g = generator(false, 0);
        g.fault_duplicate = 3;
        let b = g.batch(0..10, 1_000, &mut rng);
        assert_eq!(b.rows, 13);
        assert_eq!(b.sent_keys.len(), 10);
        let Body::Ndjson(bytes) = &b.body else {
            panic!("http batch")
        };
        let text = String::from_utf8_lossy(bytes);
        assert_eq!(text.matches(r#""seq":2,"#).count(), 2);
        assert_eq!(text.matches(r#""seq":3,"#).count(), 1);
    }

    #[test]
    fn zipf_prefers_low_ranks() {
        let s = KeySampler::new(1000, KeyDistribution::Zipf(1.1)).unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut hits = vec![0u32; 1000];
        for _ in 0..20_000 {
            hits[s.sample(&mut rng) as usize] += 1;
        }
        assert!(hits[0] > hits[10] && hits[10] > hits[500]);
        assert!(hits[0] > 1000);
    }
}
