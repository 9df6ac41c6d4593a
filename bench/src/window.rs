//! The windowed-aggregation benchmark: a tumbling 10 s count and sum per key, in-process,
//! through the engine's general path (a YAML definition, positional rows, compiled
//! expressions, watermarks), with a share of events out of order within `max_delay`.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use starling_engine::operators::{Row, Value};
use starling_engine::{Engine, EngineConfig};
use starling_testkit::rng::Rng;

/// Parameters of one run.
#[derive(Clone, Debug)]
pub struct WindowBench {
    pub events: u64,
    pub keys: u64,
    pub workers: usize,
    /// Share of events displaced back in time (within `max_delay`).
    pub out_of_order: f64,
    pub batch: usize,
    /// Events per second of event time (how dense the stream is; sets results per window).
    pub rate: u64,
    /// Generate every row before the clock starts, so the figure is the engine's alone
    /// (otherwise the generator shares the cores with the workers).
    pub pregenerate: bool,
}

impl Default for WindowBench {
    fn default() -> Self {
        WindowBench {
            events: 10_000_000,
            keys: 10_000,
            workers: 2,
            out_of_order: 0.05,
            batch: 10_000,
            rate: 100_000,
            pregenerate: true,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct WindowResult {
    pub events: u64,
    pub elapsed: Duration,
    /// Window results delivered (one per key per window).
    pub results: u64,
    /// Sum of all counts in the results: must equal `events`.
    pub counted: i64,
}

impl WindowResult {
    /// Throughput.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

const MAX_DELAY_MS: u64 = 2_000;

fn definition() -> &'static str {
    r#"
name: bench_window
topics:
  - name: events
    key: k
    time: ts
    fields:
      - {name: k, type: int}
      - {name: ts, type: timestamp}
      - {name: v, type: int}
inputs:
  - id: in
    topic: events
    watermark: {max_delay: 2s, idle_timeout: 0s}
nodes:
  - {id: w, op: window, input: in, kind: tumbling, size: 10s}
  - id: agg
    op: aggregate
    input: w
    aggregates:
      - {name: n, fn: count}
      - {name: total, fn: sum, expr: v}
outputs:
  - {name: out, from: agg}
"#
}

/// Runs the benchmark once and checks that every event was counted exactly once.
pub fn run(p: &WindowBench) -> Result<WindowResult> {
    let engine = Engine::start(EngineConfig {
        workers: p.workers,
        subscriber_queue: 1 << 20,
        ..EngineConfig::default()
    })?;
    engine.install_text(definition())?;
    let sub = engine.subscribe_local("bench_window", "out")?;
    // Seeded, so runs are reproducible.
    let mut rng = Rng::seeded(0x9e37_79b9_7f4a_7c15);
    let ooo_threshold = (p.out_of_order * u64::MAX as f64) as u64;
    let mut next_id = 0u64;
    let mut generate = |n: u64| -> Vec<Row> {
        let mut rows: Vec<Row> = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let r = rng.next_u64();
            let mut ts = MAX_DELAY_MS + next_id * 1_000 / p.rate.max(1);
            if r < ooo_threshold {
                ts -= rng.next_u64() % MAX_DELAY_MS;
            }
            rows.push(vec![
                Value::Int((r % p.keys) as i64),
                Value::Timestamp(ts as i64),
                Value::Int((r >> 40) as i64 & 0xff),
            ]);
            next_id += 1;
        }
        rows
    };
    let sizes: Vec<u64> = (0..p.events.div_ceil(p.batch as u64))
        .map(|b| (p.events - b * p.batch as u64).min(p.batch as u64))
        .collect();
    let mut ready: Vec<Vec<Row>> = if p.pregenerate {
        sizes.iter().map(|&n| generate(n)).collect()
    } else {
        Vec::new()
    };
    ready.reverse();
    let mut results = 0u64;
    let mut counted = 0i64;
    let drain = |results: &mut u64, counted: &mut i64| {
        for batch in sub.drain() {
            for (e, _, d) in batch.iter() {
                *results += 1;
                if let Some(Value::Int(n)) = e.row.get(3) {
                    *counted += n * *d as i64;
                }
            }
        }
    };
    let start = Instant::now();
    for &n in &sizes {
        let rows = match ready.pop() {
            Some(rows) => rows,
            None => generate(n),
        };
        engine.publish_local("events", rows, true)?;
        drain(&mut results, &mut counted);
    }
    let end = MAX_DELAY_MS + p.events * 1_000 / p.rate.max(1) + 20_000;
    engine.advance_watermark_local("events", end)?;
    if !engine.wait_until("bench_window", end - 1, Duration::from_secs(600))? {
        bail!("the dataflow did not finish within 10 minutes");
    }
    let elapsed = start.elapsed();
    drain(&mut results, &mut counted);
    let info = engine.dataflow("bench_window")?;
    engine.shutdown();
    if counted != p.events as i64 {
        bail!("counted {counted} events but published {}", p.events);
    }
    if info.window_state != 0 {
        bail!(
            "{} window state entries left after the last window closed",
            info.window_state
        );
    }
    Ok(WindowResult {
        events: p.events,
        elapsed,
        results,
        counted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_run_counts_every_event_once() {
        for workers in [1, 2] {
            let r = run(&WindowBench {
                events: 50_000,
                keys: 100,
                workers,
                batch: 1_000,
                rate: 333,
                ..WindowBench::default()
            })
            .unwrap();
            assert_eq!(r.counted, 50_000);
            // 150 s of event time in 10 s windows, 100 keys: about 16 windows x 100 keys.
            assert!(r.results >= 1_500, "{} results", r.results);
        }
    }
}
