//! The QUIC publish load (streams per connection, optional pacing, retries, latency split
//! into steady and moving); shared by the throughput and hand-off parts, so it is its own file.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use starling_node::client::{QuicClient, Trust};

use super::member::Member;
use super::TOPIC;

/// What a publisher saw.
#[derive(Debug)]
pub struct LoadResult {
    pub events: u64,
    pub elapsed: Duration,
    /// Publish→ack per batch (µs), outside and during membership changes.
    pub steady: Histogram<u64>,
    pub moving: Histogram<u64>,
    /// Publishes answered `busy`, `unavailable` or `stale_epoch` and sent again.
    pub retries: u64,
    /// Publishes that failed otherwise (with `keep_going`; otherwise the run fails).
    pub failures: u64,
    pub first_failure: Option<String>,
}

impl LoadResult {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A publish load: `clients` (one QUIC connection each), `streams` operations in flight per
/// connection, batches of `batch`, until `limit` batches or `stop`, paced to `rate` events/s
/// if given. `phase` set to 1 records latencies as "moving".
pub(super) struct Load {
    pub(super) clients: Vec<QuicClient>,
    pub(super) streams: usize,
    pub(super) batch: usize,
    pub(super) limit: Option<u64>,
    pub(super) rate: Option<u64>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) phase: Arc<AtomicU8>,
    pub(super) keep_going: bool,
}

fn is_retryable(e: &starling_node::client::quic::ClientError) -> bool {
    matches!(e.code(), Some("busy" | "unavailable" | "stale_epoch"))
}

pub(super) async fn run_load(load: Load) -> Result<LoadResult> {
    let rows = starling_bench::publish::wire_batches(load.batch, 16);
    let next = Arc::new(AtomicU64::new(0));
    let per_batch = load
        .rate
        .map(|r| Duration::from_secs_f64(load.batch as f64 / r.max(1) as f64));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in &load.clients {
        for _ in 0..load.streams.max(1) {
            let (client, rows, next) = (client.clone(), Arc::clone(&rows), Arc::clone(&next));
            let (stop, phase) = (Arc::clone(&load.stop), Arc::clone(&load.phase));
            let (limit, keep_going) = (load.limit, load.keep_going);
            tasks.push(tokio::spawn(async move {
                let mut steady = Histogram::<u64>::new(3).map_err(|e| anyhow!("{e}"))?;
                let mut moving = steady.clone();
                let (mut acked, mut retries, mut failures) = (0u64, 0u64, 0u64);
                let mut first_failure = None;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if limit.is_some_and(|l| i >= l) {
                        break;
                    }
                    if let Some(p) = per_batch {
                        tokio::time::sleep_until((start + p.mul_f64(i as f64)).into()).await;
                    }
                    let during_move = phase.load(Ordering::Relaxed) == 1;
                    let batch = &rows[(i % rows.len() as u64) as usize];
                    let t = Instant::now();
                    let mut tries = 0;
                    let outcome = loop {
                        match client.publish(TOPIC, batch.clone()).await {
                            Err(e) if is_retryable(&e) && tries < 5_000 => {
                                tries += 1;
                                retries += 1;
                                tokio::time::sleep(Duration::from_millis(2)).await;
                            }
                            other => break other,
                        }
                    };
                    match outcome {
                        Ok(n) => {
                            if n != batch.len() as u64 {
                                bail!("{n} of {} events acknowledged", batch.len());
                            }
                            acked += n;
                            let us = t.elapsed().as_micros() as u64;
                            let h = if during_move || phase.load(Ordering::Relaxed) == 1 {
                                &mut moving
                            } else {
                                &mut steady
                            };
                            h.record(us.max(1)).map_err(|e| anyhow!("{e}"))?;
                        }
                        Err(e) if keep_going => {
                            failures += 1;
                            first_failure.get_or_insert_with(|| e.to_string());
                        }
                        Err(e) => return Err(anyhow!(e).context("publishing")),
                    }
                }
                Ok::<_, anyhow::Error>((acked, steady, moving, retries, failures, first_failure))
            }));
        }
    }
    let mut steady = Histogram::<u64>::new(3).map_err(|e| anyhow!("{e}"))?;
    let mut moving = steady.clone();
    let (mut events, mut retries, mut failures) = (0, 0, 0);
    let mut first_failure = None;
    for t in tasks {
        let (n, s, m, r, f, ff) = t.await??;
        events += n;
        steady.add(s).map_err(|e| anyhow!("{e}"))?;
        moving.add(m).map_err(|e| anyhow!("{e}"))?;
        retries += r;
        failures += f;
        if first_failure.is_none() {
            first_failure = ff;
        }
    }
    let elapsed = start.elapsed();
    if let Some(l) = load.limit {
        let expected = l * load.batch as u64;
        if failures == 0 && events != expected {
            bail!("{events} events acknowledged of {expected}");
        }
    }
    Ok(LoadResult {
        events,
        elapsed,
        steady,
        moving,
        retries,
        failures,
        first_failure,
    })
}

/// QUIC connections spread over `targets` (connection i to target i mod n).
pub(super) async fn connect(targets: &[&Member], connections: usize) -> Result<Vec<QuicClient>> {
    let mut out = Vec::new();
    for i in 0..connections.max(1) {
        let m = targets[i % targets.len()];
        let c = QuicClient::connect(m.quic, Trust::Fingerprint(m.fingerprint.clone()))
            .await
            .with_context(|| format!("QUIC connection to {}", m.name))?;
        out.push(c);
    }
    Ok(out)
}
