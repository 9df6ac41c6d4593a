//! Running a shipped Nexmark query in-process: the engine's own speed on the query, and the
//! consolidated results that the reference check compares with DuckDB's.
//!
//! Every event is published to its topic (`person`, `auction`, `bid`), whichever topics the
//! query reads, as Flink's benchmark feeds every generated event to the source: the
//! throughput counts all events. Batches are built before the clock starts, so the figure is
//! the engine's alone. At the end every topic's watermark is moved past the last event (an
//! end-of-input mark) and the run waits until the dataflow has emitted everything.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value as Json;
use starling_dataflows::nexmark::{Query, QUERIES};
use starling_engine::operators::definition::{Definition, TopicDef};
use starling_engine::operators::json::value_to_json;
use starling_engine::operators::json_fast::try_row_from_json_str;
use starling_engine::operators::render::Update;
use starling_engine::operators::Row;
use starling_engine::{Engine, EngineConfig};

/// How far past the newest event the inputs are ended: longer than any window, session gap
/// or join bound of the shipped queries, so every result is final.
pub const SETTLE_MS: u64 = 2 * 3_600_000;

/// Events for one topic, published as one batch.
#[derive(Clone, Debug)]
pub struct TopicBatch {
    pub topic: &'static str,
    pub rows: Vec<Row>,
    /// The newest event time in `rows`.
    pub max_time: u64,
}

/// Cuts a stream of `(topic, event time, row)` into publishable batches: every `batch`
/// events, one batch per topic, each topic's events in stream order.
pub fn batches(
    events: impl IntoIterator<Item = (&'static str, u64, Row)>,
    batch: usize,
) -> Vec<TopicBatch> {
    let mut out = Vec::new();
    let mut open: Vec<TopicBatch> = Vec::new();
    let mut in_chunk = 0usize;
    for (topic, time, row) in events {
        match open.iter_mut().find(|b| b.topic == topic) {
            Some(b) => {
                b.rows.push(row);
                b.max_time = b.max_time.max(time);
            }
            None => open.push(TopicBatch {
                topic,
                rows: vec![row],
                max_time: time,
            }),
        }
        in_chunk += 1;
        if in_chunk >= batch.max(1) {
            out.append(&mut open);
            in_chunk = 0;
        }
    }
    out.append(&mut open);
    out
}

/// The three Nexmark topics, as the shipped definitions declare them (each topic is taken
/// from the first query that reads it), so that every event has somewhere to go.
pub fn topics() -> Result<Vec<TopicDef>> {
    let mut seen: BTreeMap<String, TopicDef> = BTreeMap::new();
    for q in QUERIES {
        let def = Definition::parse(q.definition)
            .map_err(|e| anyhow!("shipped query {} does not parse: {e}", q.name))?;
        for t in def.topics {
            seen.entry(t.name.clone()).or_insert(t);
        }
    }
    for name in ["person", "auction", "bid"] {
        if !seen.contains_key(name) {
            bail!("no shipped query declares the topic `{name}`");
        }
    }
    Ok(seen.into_values().collect())
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct QueryRun {
    /// Events published (all topics).
    pub events: u64,
    /// From the first publish until the last result was out.
    pub elapsed: Duration,
    /// Result updates delivered (rows × |diff|), a measure of output volume.
    pub updates: u64,
    /// The consolidated output (compact JSON row → multiplicity), if it was collected.
    pub output: Option<BTreeMap<String, isize>>,
    /// Share of the run the workers were busy (CPU time / (elapsed × workers)): far below 1
    /// means they waited (on the publisher, or on progress), not computed.
    pub busy: f64,
}

impl QueryRun {
    /// Throughput over all published events.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub workers: usize,
    /// Keep the consolidated output (costs time and memory on big runs).
    pub collect: bool,
    /// How long the dataflow may take to finish after the last publish.
    pub timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: 2,
            collect: true,
            timeout: Duration::from_secs(600),
        }
    }
}

/// A row as compact JSON, the form in which results are compared.
pub fn row_text(row: &[starling_engine::operators::Value]) -> String {
    Json::Array(row.iter().map(value_to_json).collect()).to_string()
}

/// Installs `query` on a fresh engine, publishes `batches` (consumed), ends the inputs and
/// returns the figures and, if asked, the consolidated output.
pub fn run(query: &Query, batches: Vec<TopicBatch>, opts: &RunOptions) -> Result<QueryRun> {
    run_text(query.definition, batches, opts).with_context(|| format!("query {}", query.name))
}

/// Like [`run`], for any definition over the Nexmark topics whose results are in the output
/// `out` (a variant of a shipped query, or a new one).
pub fn run_text(definition: &str, batches: Vec<TopicBatch>, opts: &RunOptions) -> Result<QueryRun> {
    let engine = Engine::start(EngineConfig {
        workers: opts.workers,
        subscriber_queue: 1 << 22,
        ..EngineConfig::default()
    })?;
    for t in topics()? {
        engine
            .create_topic_local(&t)
            .with_context(|| format!("creating topic {}", t.name))?;
    }
    let dataflow = engine.install_text(definition).context("installing")?.name;
    let sub = engine.subscribe_local(&dataflow, "out")?;
    let events: u64 = batches.iter().map(|b| b.rows.len() as u64).sum();
    let end = batches.iter().map(|b| b.max_time).max().unwrap_or(0) + SETTLE_MS;
    let mut updates = 0u64;
    let mut output: HashMap<String, isize> = HashMap::new();
    let mut take = |batches: Vec<std::sync::Arc<[Update]>>| {
        for b in batches {
            for (e, _, d) in b.iter() {
                updates += d.unsigned_abs() as u64;
                if opts.collect {
                    *output.entry(row_text(&e.row)).or_default() += d;
                }
            }
        }
    };
    let busy_before: u64 = engine.worker_busy_nanos().iter().sum();
    let start = Instant::now();
    for b in batches {
        engine.publish_local(b.topic, b.rows, true)?;
        take(sub.drain());
    }
    for t in ["person", "auction", "bid"] {
        engine.advance_watermark_local(t, end)?;
    }
    if !engine.wait_until(&dataflow, end - 1, opts.timeout)? {
        bail!(
            "{dataflow} did not finish within {:?} after the last event",
            opts.timeout
        );
    }
    let elapsed = start.elapsed();
    let busy_after: u64 = engine.worker_busy_nanos().iter().sum();
    let busy = busy_after.saturating_sub(busy_before) as f64
        / (elapsed.as_nanos() as f64 * opts.workers as f64).max(1.0);
    take(sub.drain());
    engine.shutdown();
    let output = opts.collect.then(|| {
        output
            .into_iter()
            .filter(|(_, d)| *d != 0)
            .collect::<BTreeMap<_, _>>()
    });
    Ok(QueryRun {
        events,
        elapsed,
        updates,
        output,
        busy,
    })
}

/// Reads `person.ndjson`, `auction.ndjson` and `bid.ndjson` from `dir` (as
/// `starling-bench nexmark-generate` writes them; a missing file counts as empty) through the
/// engine's JSON decoding, and cuts them into batches. The three files are merged by event
/// time, each file's order kept, which restores the interleaving of generation. Returns
/// the batches and how long reading and decoding took (part of a fair comparison with
/// engines that read the same files).
pub fn read_ndjson(dir: &std::path::Path, batch: usize) -> Result<(Vec<TopicBatch>, Duration)> {
    if !dir.is_dir() {
        bail!(
            "{} is not a directory of Nexmark NDJSON files",
            dir.display()
        );
    }
    let start = Instant::now();
    let decoder = Engine::start(EngineConfig {
        workers: 1,
        ..EngineConfig::default()
    })?;
    let defs = topics()?;
    for t in &defs {
        decoder.create_topic_local(t)?;
    }
    let mut per_topic: Vec<std::vec::IntoIter<(u64, Row)>> = Vec::new();
    let mut names = Vec::new();
    for topic in ["person", "auction", "bid"] {
        let path = dir.join(format!("{topic}.ndjson"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        // Decoded straight into rows on every core, in chunks of lines, the order kept: one
        // thread, or a `serde_json::Value` per line, made reading the file most of a run.
        let spec = decoder.topic_spec(topic)?;
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = lines.len().div_ceil(threads).max(1);
        let decoded: Vec<Result<Vec<Row>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = lines
                .chunks(chunk)
                .map(|part| {
                    let (decoder, path, spec) = (&decoder, &path, &spec);
                    scope.spawn(move || -> Result<Vec<Row>> {
                        // A few thousand documents at a time: the parsed JSON is freed and
                        // its memory reused, instead of fresh pages for the whole file.
                        let mut rows = Vec::with_capacity(part.len());
                        for (i, l) in part {
                            if let Some(row) = try_row_from_json_str(&spec.schema, l) {
                                rows.push(row);
                                continue;
                            }
                            // Not a clean row: the general decoder says why.
                            let doc = serde_json::from_str::<Json>(l).with_context(|| {
                                format!("{}:{}: not a JSON object", path.display(), i + 1)
                            })?;
                            rows.extend(decoder.decode_json(topic, &[doc]).with_context(|| {
                                format!(
                                    "{}:{}: the event does not fit the topic",
                                    path.display(),
                                    i + 1
                                )
                            })?);
                        }
                        Ok(rows)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("a decoding thread panicked")))
                })
                .collect()
        });
        let mut rows = Vec::with_capacity(lines.len());
        for part in decoded {
            rows.extend(part?);
        }
        let time_pos = defs
            .iter()
            .find(|t| t.name == topic)
            .and_then(|t| t.fields.iter().position(|f| f.name == t.time))
            .ok_or_else(|| anyhow!("topic {topic} has no time field"))?;
        let timed: Vec<(u64, Row)> = rows
            .into_iter()
            .map(|r| {
                let t = match r.get(time_pos) {
                    Some(starling_engine::operators::Value::Timestamp(ms)) => *ms as u64,
                    Some(starling_engine::operators::Value::Int(ms)) => *ms as u64,
                    _ => 0,
                };
                (t, r)
            })
            .collect();
        per_topic.push(timed.into_iter());
        names.push(topic);
    }
    decoder.shutdown();
    let mut heads: Vec<Option<(u64, Row)>> = per_topic.iter_mut().map(|i| i.next()).collect();
    let merged = std::iter::from_fn(|| {
        let i = (0..heads.len())
            .filter(|&i| heads[i].is_some())
            .min_by_key(|&i| heads[i].as_ref().map(|h| h.0))?;
        let (t, row) = heads[i].take()?;
        heads[i] = per_topic[i].next();
        Some((names[i], t, row))
    });
    let out = batches(merged, batch);
    if out.is_empty() {
        bail!(
            "{} holds no events (expected person.ndjson, auction.ndjson, bid.ndjson)",
            dir.display()
        );
    }
    Ok((out, start.elapsed()))
}
