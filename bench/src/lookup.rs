//! `kv_lookup` enrichment: a stream of events, each enriched with the row a view holds for
//! its key (a stream–table join against sled), against the same stream through a plain
//! `map` in the same invocation, so the cost of the lookup is a ratio.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use starling_engine::durable::KvWrite;
use starling_engine::durable::{Store, StoreOptions};
use starling_engine::operators::{Row, Value};
use starling_engine::{Engine, EngineConfig};

/// What to run.
#[derive(Clone, Debug)]
pub struct LookupBench {
    /// Events streamed through the dataflow.
    pub events: u64,
    /// Distinct keys (all present in the view).
    pub keys: u64,
    /// Events per publish call.
    pub batch: usize,
    /// Worker threads.
    pub workers: usize,
}

/// Events per second with the lookup and through the plain map.
#[derive(Clone, Debug)]
pub struct LookupResult {
    pub lookup_per_sec: f64,
    pub map_per_sec: f64,
}

const TOPIC: &str = "topics:\n  - {name: asks, key: user, time: ts, fields: [{name: user, type: string}, {name: ts, type: timestamp}]}\ninputs: [{id: a, topic: asks, watermark: {idle_timeout: 0s}}]\n";

fn definition(lookup: bool) -> String {
    let node = if lookup {
        "  - {id: x, op: kv_lookup, input: a, view: profiles, fields: [{name: plan, type: string}, {name: score, type: int}]}"
    } else {
        "  - {id: x, op: map, input: a, fields: [{user: user}, {ts: ts}, {plan: \"'gold'\"}, {score: 1}]}"
    };
    format!("name: enrich\n{TOPIC}nodes:\n{node}\noutputs: [{{name: out, from: x}}]\n")
}

fn one(p: &LookupBench, lookup: bool) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(
        dir.path(),
        StoreOptions {
            durability: starling_engine::durable::Durability::Batch { interval_ms: 10 },
            shards: 16,
            ..StoreOptions::default()
        },
    )?;
    let engine = Engine::start(EngineConfig {
        workers: p.workers,
        subscriber_queue: 1 << 20,
        store: Some(Arc::new(store)),
        ..EngineConfig::default()
    })?;
    if let Some(kv) = engine.store().and_then(|s| s.kv()) {
        for chunk in (0..p.keys).collect::<Vec<_>>().chunks(1_000) {
            let writes: Vec<KvWrite> = chunk
                .iter()
                .map(|k| KvWrite::Put {
                    key: format!("u{k}").into_bytes(),
                    value: format!(r#"{{"key":"u{k}","plan":"gold","score":{k}}}"#).into_bytes(),
                    expires_at_ms: None,
                })
                .collect();
            kv.put_batch("profiles", &writes)?;
        }
    }
    engine.install_text(&definition(lookup))?;
    let sub = engine.subscribe_local("enrich", "out")?;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let batches: Vec<Vec<Row>> = (0..p.events.div_ceil(p.batch as u64))
        .map(|b| {
            (0..p.batch as u64)
                .map(|i| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    vec![
                        Value::str(&format!("u{}", rng % p.keys)),
                        Value::Timestamp((b * p.batch as u64 + i) as i64),
                    ]
                })
                .collect()
        })
        .collect();
    let total = batches.iter().map(Vec::len).sum::<usize>() as u64;
    let start = Instant::now();
    let mut seen = 0u64;
    let mut enriched_ok = true;
    for rows in batches {
        engine.publish_local("asks", rows, true)?;
        for b in sub.drain() {
            seen += b.len() as u64;
            enriched_ok &= b
                .iter()
                .all(|(e, _, _)| e.row.get(2) == Some(&Value::str("gold")));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < total {
        for b in sub.drain() {
            seen += b.len() as u64;
            enriched_ok &= b
                .iter()
                .all(|(e, _, _)| e.row.get(2) == Some(&Value::str("gold")));
        }
        if Instant::now() > deadline {
            bail!("only {seen} of {total} events came out");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed();
    engine.shutdown();
    if !enriched_ok {
        bail!("an event came out without its view fields");
    }
    Ok(total as f64 / elapsed.as_secs_f64())
}

/// Runs the plain map, then the lookup, in one invocation.
pub fn run(p: &LookupBench) -> Result<LookupResult> {
    let map_per_sec = one(p, false)?;
    let lookup_per_sec = one(p, true)?;
    Ok(LookupResult {
        lookup_per_sec,
        map_per_sec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_run_enriches_every_event() {
        let r = run(&LookupBench {
            events: 20_000,
            keys: 1_000,
            batch: 1_000,
            workers: 2,
        })
        .unwrap();
        assert!(r.lookup_per_sec > 0.0 && r.map_per_sec > 0.0);
    }
}
