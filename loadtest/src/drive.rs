//! Publishing: `connections` publishers, each with one batch in flight, paced by one shared
//! schedule, recording what the node acknowledged.
//!
//! **Pacing.** Batch `i` (counted over all connections) is due at `start + i · batch / rate`;
//! a publisher claims the next index, sleeps until it is due and sends. One schedule rather
//! than an interval per connection keeps the total rate exact whatever the number of
//! connections, and a publisher that falls behind sends its overdue batches at once (the
//! run then shows a lower achieved rate and the queueing in its latencies). With `max`
//! nothing waits.
//!
//! **Outcomes.** A batch is all or nothing on the node, so each one ends in exactly one of:
//! * *acknowledged*: every event in it is expected in the count, exactly once;
//! * *refused*: the node said it applied nothing (`busy` is retried with back-off until the
//!   request timeout, then counted here; so are `shutting_down`, `unavailable`, a storage
//!   refusal, and a connection that could not be opened);
//! * *unknown*: the request may have been applied (timeout, connection lost mid-request, a
//!   server fault, "written but not confirmed durable"). These events are neither expected
//!   nor forbidden: the check accepts between 0 and all of them per key, counts how many
//!   were applied, and reports both. They are never resent, since resending an applied
//!   batch would be a duplicate of the client's making.
//!
//! A refusal that retrying cannot fix (a bad event, a batch over the node's limit, an
//! unknown topic) stops the run: it is a setup mistake, not a measurement. A publisher that
//! fails [`MAX_CONSECUTIVE_FAILURES`] times in a row stops too (the node is gone).

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use starling_client::http::{ClientError as HttpError, HttpClient};
use starling_client::{ClientError as QuicError, QuicClient};

use crate::args::{Config, Protocol, QuicTarget, Rate, Stop};
use crate::workload::{payload, Batch, Body, Generator, KeyNames, KeySampler};

/// A publisher gives up after this many failed batches in a row.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 10;

/// What the run sent and what came back.
pub struct DriveResult {
    /// Per key index: events acknowledged (including any withheld by the fault option).
    pub acked: Vec<u64>,
    /// Per key index: events in batches whose outcome is unknown.
    pub unknown: Vec<u64>,
    /// Events acknowledged (`acked` summed).
    pub acked_events: u64,
    /// Of those, withheld by `--fault-skip-events` (counted as acknowledged, never sent).
    pub withheld_events: u64,
    /// Of those, sent twice by `--fault-duplicate-events` (counted as acknowledged once).
    pub doubled_events: u64,
    pub refused_events: u64,
    pub unknown_events: u64,
    /// `busy` answers that were retried.
    pub busy_retries: u64,
    /// Publish → acknowledgement per acknowledged batch, in µs.
    pub latency_us: Histogram<u64>,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// Newest event time sent (ms), for the final watermark.
    pub max_ts: u64,
    /// Why publishing stopped early, if it did (the last publisher error).
    pub stopped_early: Option<String>,
}

/// One connection to the node.
#[derive(Clone)]
enum Conn {
    Http(HttpClient),
    Quic(QuicClient),
}

/// How one request ended.
enum Failure {
    /// Applied nothing; retry later.
    Busy(String),
    /// Applied nothing.
    Refused(String),
    /// May have been applied.
    Unknown(String),
    /// A mistake retrying cannot fix.
    Fatal(String),
}

/// The shared schedule of batch indexes.
struct Schedule {
    start: Instant,
    next: AtomicU64,
    batch: u64,
    rate: Rate,
    stop: Stop,
    abort: AtomicBool,
}

impl Schedule {
    /// The next batch: its sequence numbers and when it is due (`None`: now).
    fn claim(&self) -> Option<(Range<u64>, Option<Instant>)> {
        if self.abort.load(Ordering::Relaxed) {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let first = i.checked_mul(self.batch)?;
        let due = match self.rate {
            Rate::Max => None,
            Rate::Fixed(r) => {
                let ns = u128::from(first) * 1_000_000_000 / u128::from(r);
                Some(self.start + Duration::from_nanos(u64::try_from(ns).ok()?))
            }
        };
        let seqs = match self.stop {
            Stop::Events(n) => {
                if first >= n {
                    return None;
                }
                first..(first + self.batch).min(n)
            }
            Stop::After(d) => {
                let end = self.start + d;
                if due.unwrap_or_else(Instant::now) >= end {
                    return None;
                }
                first..first + self.batch
            }
        };
        Some((seqs, due))
    }
}

/// What one publisher tallied.
struct Lane {
    latency_us: Histogram<u64>,
    withheld: u64,
    doubled: u64,
    refused: u64,
    unknown: u64,
    busy_retries: u64,
    max_ts: u64,
    last_answer: Option<Instant>,
}

/// Per-key counters shared by the publishers.
struct Tally {
    acked: Vec<AtomicU64>,
    unknown: Vec<AtomicU64>,
}

/// Opens the connections and publishes until the schedule ends.
pub async fn drive(cfg: &Config, topic: &str, names: Arc<KeyNames>) -> Result<DriveResult> {
    let conns = connect(cfg).await?;
    let gen = Arc::new(Generator {
        names,
        sampler: KeySampler::new(cfg.keys, cfg.distribution)?,
        jitter_ms: cfg.jitter_ms,
        payload: payload(cfg.payload_bytes),
        quic: cfg.protocol == Protocol::Quic,
        fault_skip: cfg.fault_skip_events,
        fault_duplicate: cfg.fault_duplicate_events,
    });
    let tally = Arc::new(Tally {
        acked: (0..cfg.keys).map(|_| AtomicU64::new(0)).collect(),
        unknown: (0..cfg.keys).map(|_| AtomicU64::new(0)).collect(),
    });
    let start = Instant::now();
    let schedule = Arc::new(Schedule {
        start,
        next: AtomicU64::new(0),
        batch: u64::from(cfg.batch),
        rate: cfg.rate,
        stop: cfg.stop,
        abort: AtomicBool::new(false),
    });
    let stopped = Arc::new(Mutex::new(None::<String>));
    let mut tasks = Vec::new();
    for (i, conn) in conns.iter().cloned().enumerate() {
        let (gen, tally, schedule, stopped) = (
            Arc::clone(&gen),
            Arc::clone(&tally),
            Arc::clone(&schedule),
            Arc::clone(&stopped),
        );
        let topic = topic.to_string();
        let rng = SmallRng::seed_from_u64(cfg.seed.wrapping_add(i as u64));
        let timeout = cfg.request_timeout;
        tasks.push(tokio::spawn(async move {
            publisher(conn, topic, gen, tally, schedule, stopped, rng, timeout).await
        }));
    }
    let mut latency_us = new_histogram()?;
    let (mut withheld, mut doubled, mut refused, mut unknown) = (0, 0, 0, 0);
    let (mut busy, mut max_ts) = (0, 0);
    let mut last = start;
    let mut fatal = None;
    for t in tasks {
        match t.await.context("a publisher task failed")? {
            Ok(lane) => {
                latency_us
                    .add(&lane.latency_us)
                    .map_err(|e| anyhow!("latency histogram: {e}"))?;
                withheld += lane.withheld;
                doubled += lane.doubled;
                refused += lane.refused;
                unknown += lane.unknown;
                busy += lane.busy_retries;
                max_ts = max_ts.max(lane.max_ts);
                last = last.max(lane.last_answer.unwrap_or(start));
            }
            Err(e) => fatal = Some(e),
        }
    }
    for c in &conns {
        if let Conn::Quic(q) = c {
            // Bounded: a node that went away never confirms the close.
            let _ = tokio::time::timeout(Duration::from_secs(2), q.close()).await;
        }
    }
    if let Some(e) = fatal {
        return Err(e);
    }
    let acked: Vec<u64> = tally
        .acked
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    let unknown_per_key = tally
        .unknown
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    let stopped_early = stopped.lock().ok().and_then(|s| s.clone());
    Ok(DriveResult {
        acked_events: acked.iter().sum(),
        acked,
        unknown: unknown_per_key,
        withheld_events: withheld,
        doubled_events: doubled,
        refused_events: refused,
        unknown_events: unknown,
        busy_retries: busy,
        latency_us,
        elapsed: last - start,
        max_ts,
        stopped_early,
    })
}

/// Highest latency the histogram tells apart (µs); longer ones are recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// One histogram of µs, 1 µs to an hour, with 3 significant digits.
fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| anyhow!("latency histogram: {e}"))
}

/// One connection per publisher. Over HTTP each gets its own client (its own pool), so
/// `connections` really is the number of TCP connections in use.
async fn connect(cfg: &Config) -> Result<Vec<Conn>> {
    let n = cfg.connections as usize;
    match (&cfg.protocol, &cfg.quic) {
        (Protocol::Http, _) => Ok((0..n)
            .map(|_| Conn::Http(HttpClient::new(&cfg.node)))
            .collect()),
        (Protocol::Quic, Some(target)) => {
            let addr = resolve(&target.addr).await?;
            let mut conns = Vec::with_capacity(n);
            for _ in 0..n {
                conns.push(Conn::Quic(
                    quic_connect(addr, target, cfg.request_timeout).await?,
                ));
            }
            Ok(conns)
        }
        (Protocol::Quic, None) => Err(anyhow!("--protocol quic needs --quic HOST:PORT")),
    }
}

async fn resolve(addr: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("--quic `{addr}` is not a HOST:PORT address"))?
        .next()
        .ok_or_else(|| anyhow!("--quic `{addr}` resolves to no address"))
}

/// A QUIC connection within `timeout` (a handshake to a port nobody answers on would
/// otherwise wait for QUIC's idle timeout with no word).
async fn quic_connect(
    addr: SocketAddr,
    target: &QuicTarget,
    timeout: Duration,
) -> Result<QuicClient> {
    match tokio::time::timeout(timeout, QuicClient::connect(addr, target.trust.clone())).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(anyhow!(
            "cannot connect to the node's QUIC port {addr}: {e}\ncheck --quic (the node's \
             `quic=`) and --fingerprint (its `quic_fingerprint=`)"
        )),
        Err(_) => Err(anyhow!(
            "no QUIC handshake with {addr} within {timeout:?}: is --quic the node's `quic=` \
             address, and is UDP reachable?"
        )),
    }
}

/// One publisher's loop.
#[allow(clippy::too_many_arguments)]
async fn publisher(
    conn: Conn,
    topic: String,
    gen: Arc<Generator>,
    tally: Arc<Tally>,
    schedule: Arc<Schedule>,
    stopped: Arc<Mutex<Option<String>>>,
    mut rng: SmallRng,
    timeout: Duration,
) -> Result<Lane> {
    let mut lane = Lane {
        latency_us: new_histogram()?,
        withheld: 0,
        doubled: 0,
        refused: 0,
        unknown: 0,
        busy_retries: 0,
        max_ts: 0,
        last_answer: None,
    };
    let mut failures_in_a_row = 0;
    while let Some((seqs, due)) = schedule.claim() {
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
        let batch = gen.batch(seqs, now_ms(), &mut rng);
        lane.max_ts = lane.max_ts.max(batch.max_ts);
        let outcome = if batch.rows == 0 {
            Ok(())
        } else {
            let t0 = Instant::now();
            let r = publish(&conn, &topic, &batch, timeout, &mut lane.busy_retries).await;
            if r.is_ok() {
                let us = t0.elapsed().as_micros() as u64;
                lane.latency_us.saturating_record(us.max(1));
            }
            lane.last_answer = Some(Instant::now());
            r
        };
        match outcome {
            Ok(()) => {
                failures_in_a_row = 0;
                for k in batch.sent_keys.iter().chain(&batch.skipped_keys) {
                    tally.acked[*k as usize].fetch_add(1, Ordering::Relaxed);
                }
                lane.withheld += batch.skipped_keys.len() as u64;
                lane.doubled += batch.rows - batch.sent_keys.len() as u64;
            }
            Err(Failure::Fatal(why)) => {
                schedule.abort.store(true, Ordering::Relaxed);
                return Err(anyhow!("the node refused a batch, so the run stops: {why}"));
            }
            Err(Failure::Busy(why) | Failure::Refused(why)) => {
                let events = batch.sent_keys.len() as u64;
                log_failure(failures_in_a_row, "batch refused", &why, events);
                lane.refused += events;
                failures_in_a_row += 1;
                note_failure(&stopped, &why, failures_in_a_row, &schedule);
            }
            Err(Failure::Unknown(why)) => {
                let events = batch.sent_keys.len() as u64;
                log_failure(failures_in_a_row, "batch outcome unknown", &why, events);
                lane.unknown += events;
                for k in &batch.sent_keys {
                    tally.unknown[*k as usize].fetch_add(1, Ordering::Relaxed);
                }
                failures_in_a_row += 1;
                note_failure(&stopped, &why, failures_in_a_row, &schedule);
            }
        }
        if failures_in_a_row >= MAX_CONSECUTIVE_FAILURES {
            break;
        }
    }
    Ok(lane)
}

/// Logs the first failure of a series as a warning and the rest at debug level: the
/// report has the totals, and a dead node would otherwise fill the terminal.
fn log_failure(before_in_a_row: u32, what: &str, why: &str, events: u64) {
    if before_in_a_row == 0 {
        tracing::warn!(error = %why, events, "{what}");
    } else {
        tracing::debug!(error = %why, events, "{what}");
    }
}

/// Remembers a publisher giving up (and stops the others: the node is most likely gone).
fn note_failure(stopped: &Mutex<Option<String>>, why: &str, in_a_row: u32, schedule: &Schedule) {
    if in_a_row >= MAX_CONSECUTIVE_FAILURES {
        schedule.abort.store(true, Ordering::Relaxed);
        if let Ok(mut s) = stopped.lock() {
            *s = Some(format!(
                "a publisher gave up after {in_a_row} failed batches in a row; the last: {why}"
            ));
        }
    }
}

/// Wall-clock ms since the epoch: the events' time base.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sends one batch, retrying `busy` with back-off until `timeout` has passed.
async fn publish(
    conn: &Conn,
    topic: &str,
    batch: &Batch,
    timeout: Duration,
    busy_retries: &mut u64,
) -> Result<(), Failure> {
    let give_up = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        let left = give_up.saturating_duration_since(Instant::now());
        let answer = match tokio::time::timeout(left, send(conn, topic, &batch.body)).await {
            Ok(a) => a,
            Err(_) => Err(Failure::Unknown(format!("no answer within {timeout:?}"))),
        };
        match answer {
            Ok(n) if n == batch.rows => return Ok(()),
            Ok(n) => {
                return Err(Failure::Unknown(format!(
                    "the node acknowledged {n} events of a batch of {}",
                    batch.rows
                )))
            }
            Err(Failure::Busy(why)) => {
                if Instant::now() + pause >= give_up {
                    return Err(Failure::Refused(format!(
                        "still busy after {timeout:?}: {why}"
                    )));
                }
                *busy_retries += 1;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(other) => return Err(other),
        }
    }
}

/// One request, its error classified.
async fn send(conn: &Conn, topic: &str, body: &Body) -> Result<u64, Failure> {
    match (conn, body) {
        (Conn::Http(c), Body::Ndjson(b)) => c
            .publish_ndjson(topic, b.clone())
            .await
            .map_err(classify_http),
        (Conn::Quic(c), Body::Rows(r)) => c.publish(topic, r.clone()).await.map_err(classify_quic),
        _ => Err(Failure::Fatal(
            "a batch was built for the other protocol".into(),
        )),
    }
}

/// Whether a storage refusal says the batch may have been written after all.
fn maybe_written(message: &str) -> bool {
    message.contains("not confirmed durable")
}

fn classify_http(e: HttpError) -> Failure {
    let text = e.to_string();
    match &e {
        HttpError::Api {
            status,
            code,
            message,
            ..
        } => match (*status, code.as_str()) {
            (429, _) | (_, "busy") => Failure::Busy(text),
            (_, "storage_unavailable") if maybe_written(message) => Failure::Unknown(text),
            (503, _) => Failure::Refused(text),
            (s, _) if s >= 500 => Failure::Unknown(text),
            _ => Failure::Fatal(text),
        },
        // Connection refused: nothing was sent.
        HttpError::Transport { source, .. } if source.is_connect() => Failure::Refused(text),
        HttpError::Transport { .. } | HttpError::BadAnswer(_) => Failure::Unknown(text),
    }
}

fn classify_quic(e: QuicError) -> Failure {
    let text = e.to_string();
    match &e {
        QuicError::Server { code, message } => match code.as_str() {
            "busy" => Failure::Busy(text),
            "storage_unavailable" if maybe_written(message) => Failure::Unknown(text),
            "storage_unavailable" | "unavailable" => Failure::Refused(text),
            "internal" => Failure::Unknown(text),
            _ => Failure::Fatal(text),
        },
        QuicError::Trust(_) | QuicError::FingerprintMismatch { .. } | QuicError::Tls(_) => {
            Failure::Fatal(text)
        }
        QuicError::Connect(_) => Failure::Refused(text),
        _ => Failure::Unknown(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(rate: Rate, stop: Stop) -> Schedule {
        Schedule {
            start: Instant::now(),
            next: AtomicU64::new(0),
            batch: 10,
            rate,
            stop,
            abort: AtomicBool::new(false),
        }
    }

    #[test]
    fn event_counts_end_with_a_short_batch() {
        let s = schedule(Rate::Max, Stop::Events(25));
        let got: Vec<_> = std::iter::from_fn(|| s.claim().map(|(r, _)| r)).collect();
        assert_eq!(got, vec![0..10, 10..20, 20..25]);
    }

    #[test]
    fn fixed_rates_space_batches_evenly() {
        let s = schedule(Rate::Fixed(100), Stop::After(Duration::from_millis(350)));
        let dues: Vec<_> =
            std::iter::from_fn(|| s.claim().map(|(_, d)| d.unwrap() - s.start)).collect();
        assert_eq!(
            dues,
            vec![
                Duration::ZERO,
                Duration::from_millis(100),
                Duration::from_millis(200),
                Duration::from_millis(300)
            ]
        );
    }

    #[test]
    fn abort_stops_claims() {
        let s = schedule(Rate::Max, Stop::Events(1000));
        assert!(s.claim().is_some());
        s.abort.store(true, Ordering::Relaxed);
        assert!(s.claim().is_none());
    }

    #[test]
    fn storage_refusals_that_may_have_written_are_unknown() {
        let api = |status, code: &str, message: &str| HttpError::Api {
            status,
            code: code.into(),
            message: message.into(),
            details: serde_json::Value::Null,
        };
        assert!(matches!(
            classify_http(api(429, "busy", "")),
            Failure::Busy(_)
        ));
        assert!(matches!(
            classify_http(api(503, "storage_unavailable", "disk full")),
            Failure::Refused(_)
        ));
        assert!(matches!(
            classify_http(api(
                503,
                "storage_unavailable",
                "written but not confirmed durable"
            )),
            Failure::Unknown(_)
        ));
        assert!(matches!(
            classify_http(api(500, "internal", "")),
            Failure::Unknown(_)
        ));
        assert!(matches!(
            classify_http(api(400, "bad_event", "")),
            Failure::Fatal(_)
        ));
        let server = |code: &str| QuicError::Server {
            code: code.into(),
            message: String::new(),
        };
        assert!(matches!(classify_quic(server("busy")), Failure::Busy(_)));
        assert!(matches!(
            classify_quic(server("not_found")),
            Failure::Fatal(_)
        ));
        assert!(matches!(
            classify_quic(server("internal")),
            Failure::Unknown(_)
        ));
    }
}
