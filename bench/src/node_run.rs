//! Running a Nexmark query in a `starling node` child process, fed over QUIC (typed rows in
//! rkyv frames) or HTTP (NDJSON): what a client on the same machine gets, front door and
//! event log included. Reports throughput from the first publish until the dataflow has
//! emitted every result, and publish→ack latency per batch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value as Json};
use starling_dataflows::nexmark::Query;
use starling_engine::operators::json::value_to_json;
use starling_node::client::http::{ClientError, HttpClient};
use starling_node::client::{QuicClient, Trust};
use starling_node::quic::wire::{row_to_wire, WireValue};

use crate::publish::NodeProcess;
use crate::queries::{topics, TopicBatch, SETTLE_MS};

/// Which front door carries the events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    Quic,
    Http,
}

/// What an in-node run measured.
#[derive(Clone, Debug)]
pub struct NodeRun {
    pub events: u64,
    /// First publish until the dataflow's frontier passed the end of input.
    pub elapsed: Duration,
    /// Publish→ack per batch, microseconds.
    pub ack_p50_us: u64,
    pub ack_p99_us: u64,
    pub ack_max_us: u64,
}

impl NodeRun {
    /// Throughput over all published events.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

enum Body {
    Wire(Vec<Vec<WireValue>>),
    Ndjson(Vec<u8>),
}

/// Encodes the batches for `door` before the clock starts, so the run measures the node.
fn encode(batches: Vec<TopicBatch>, door: Door) -> Result<Vec<(&'static str, usize, Body)>> {
    let defs = topics()?;
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let n = b.rows.len();
        let body = match door {
            Door::Quic => Body::Wire(b.rows.iter().map(|r| row_to_wire(r)).collect()),
            Door::Http => {
                let def = defs
                    .iter()
                    .find(|t| t.name == b.topic)
                    .ok_or_else(|| anyhow!("no topic {}", b.topic))?;
                let mut text = Vec::with_capacity(n * 160);
                for row in &b.rows {
                    let obj: Map<String, Json> = def
                        .fields
                        .iter()
                        .zip(row)
                        .map(|(f, v)| (f.name.clone(), value_to_json(v)))
                        .collect();
                    serde_json::to_writer(&mut text, &Json::Object(obj))?;
                    text.push(b'\n');
                }
                Body::Ndjson(text)
            }
        };
        out.push((b.topic, n, body));
    }
    Ok(out)
}

/// Starts a node, installs `query`, publishes `batches` through `door` with `lanes`
/// operations in flight (in batch order), ends the inputs and waits for the last result.
/// Fails if any event was refused, judged late or sent to the dead-letter topic: a run
/// that lost events would flatter the figure.
pub async fn run(
    query: &Query,
    batches: Vec<TopicBatch>,
    door: Door,
    lanes: usize,
    workers: usize,
    durability: Option<&str>,
) -> Result<NodeRun> {
    let extra: Vec<&str> = durability.map_or(vec![], |d| vec!["--durability", d]);
    let node = NodeProcess::start_with(workers, &extra)?;
    let http = HttpClient::new(&node.http);
    for t in topics()? {
        http.create_topic(&serde_json::to_value(&t)?)
            .await
            .with_context(|| format!("creating topic {}", t.name))?;
    }
    http.submit(query.definition)
        .await
        .with_context(|| format!("submitting {}", query.name))?;
    let end = batches.iter().map(|b| b.max_time).max().unwrap_or(0) + SETTLE_MS;
    let events: u64 = batches.iter().map(|b| b.rows.len() as u64).sum();
    let bodies = Arc::new(encode(batches, door)?);
    let quic = match door {
        Door::Quic => Some(
            QuicClient::connect(node.quic, Trust::Fingerprint(node.fingerprint.clone())).await?,
        ),
        Door::Http => None,
    };
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..lanes.max(1) {
        let (next, bodies, http, quic) = (
            Arc::clone(&next),
            Arc::clone(&bodies),
            http.clone(),
            quic.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).map_err(|e| anyhow!("{e}"))?;
            let mut acked = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((topic, n, body)) = bodies.get(i) else {
                    break;
                };
                let t = Instant::now();
                let got = publish(&http, quic.as_ref(), topic, body).await?;
                hist.record(t.elapsed().as_micros() as u64)
                    .map_err(|e| anyhow!("{e}"))?;
                if got != *n as u64 {
                    bail!("{got} of {n} events acknowledged");
                }
                acked += got;
            }
            Ok::<_, anyhow::Error>((acked, hist))
        }));
    }
    let mut hist = Histogram::<u64>::new(3).map_err(|e| anyhow!("{e}"))?;
    let mut acked = 0;
    for t in tasks {
        let (n, h) = t.await??;
        acked += n;
        hist.add(h).map_err(|e| anyhow!("{e}"))?;
    }
    if acked != events {
        bail!("{acked} of {events} events acknowledged");
    }
    for t in ["person", "auction", "bid"] {
        http.advance_watermark(t, end).await?;
    }
    let dataflow = query.dataflow();
    let info = loop {
        let info = http.dataflow(&dataflow).await?;
        if info["frontier"].as_u64().unwrap_or(0) >= end {
            break info;
        }
        if start.elapsed() > Duration::from_secs(1800) {
            bail!("{dataflow} did not finish within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let elapsed = start.elapsed();
    if let Some(q) = quic {
        q.close().await;
    }
    let (late, dead) = (
        info["late_events"].as_u64().unwrap_or(0),
        info["dead_letters"].as_u64().unwrap_or(0),
    );
    if late + dead > 0 {
        bail!("{late} events were late and {dead} went to dead letters: the run is invalid (publish with fewer lanes or smaller batches)");
    }
    Ok(NodeRun {
        events,
        elapsed,
        ack_p50_us: hist.value_at_quantile(0.5),
        ack_p99_us: hist.value_at_quantile(0.99),
        ack_max_us: hist.max(),
    })
}

/// One batch through one front door; `429 busy` is retried, anything else is an error.
async fn publish(
    http: &HttpClient,
    quic: Option<&QuicClient>,
    topic: &str,
    body: &Body,
) -> Result<u64> {
    let mut tries = 0;
    loop {
        let r = match (body, quic) {
            (Body::Wire(rows), Some(q)) => return Ok(q.publish(topic, rows.clone()).await?),
            (Body::Ndjson(text), _) => http.publish_ndjson(topic, text.clone()).await,
            (Body::Wire(_), None) => bail!("QUIC rows without a QUIC connection"),
        };
        match r {
            Ok(n) => return Ok(n),
            Err(ClientError::Api { status: 429, .. }) if tries < 10_000 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(anyhow!(e)),
        }
    }
}

/// The JSON line an in-node run prints with `--json`.
pub fn report_json(query: &str, door: Door, workers: usize, r: &NodeRun) -> Json {
    json!({
        "engine": "starling-node",
        "query": query,
        "via": match door { Door::Quic => "quic", Door::Http => "http" },
        "events": r.events,
        "seconds": r.elapsed.as_secs_f64(),
        "events_per_sec": r.events_per_sec(),
        "ack_p50_us": r.ack_p50_us,
        "ack_p99_us": r.ack_p99_us,
        "ack_max_us": r.ack_max_us,
        "workers": workers,
    })
}
