//! The results, as text for people and as one JSON object for scripts: the same figures in
//! both, so a CI job can diff what a person reads.

use serde_json::{json, Value as Json};

use crate::args::{Config, Query, Stop};
use crate::check::Verdict;

/// How the check ended.
pub enum CheckOutcome {
    /// `--query none`.
    Skipped,
    /// The comparison ran.
    Done(Verdict),
    /// The check could not be made (the node stopped answering); the message says why.
    Error(String),
}
use crate::drive::DriveResult;
use crate::setup::Names;

/// Latency percentiles, in µs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Percentiles {
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        Percentiles {
            count: h.len(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: if h.is_empty() { 0 } else { h.max() },
        }
    }
}

/// Acknowledged events per second of the publishing phase.
pub fn events_per_sec(d: &DriveResult) -> f64 {
    let secs = d.elapsed.as_secs_f64();
    if secs > 0.0 {
        d.acked_events as f64 / secs
    } else {
        0.0
    }
}

/// The JSON object `--json` writes.
pub fn to_json(cfg: &Config, names: &Names, d: &DriveResult, check: &CheckOutcome) -> Json {
    let p = Percentiles::of(&d.latency_us);
    let (duration_s, events) = match cfg.stop {
        Stop::After(t) => (Some(t.as_secs_f64()), None),
        Stop::Events(n) => (None, Some(n)),
    };
    let check = match check {
        CheckOutcome::Skipped => json!({"status": "skipped"}),
        CheckOutcome::Error(why) => json!({"status": "error", "message": why}),
        CheckOutcome::Done(v) => json!({
            "status": if v.ok() { "ok" } else { "failed" },
            "acknowledged": v.acknowledged,
            "counted": v.counted,
            "missing": v.missing,
            "duplicated": v.duplicated,
            "unexpected": v.unexpected,
            "unknown_applied": v.unknown_applied,
            "late_events": v.late_events,
            "keys_differing": v.keys_differing,
            "not_caught_up": v.not_caught_up,
            "differences": v.differences.iter().map(|x| json!({
                "key": x.key,
                "acknowledged": x.acknowledged,
                "unknown": x.unknown,
                "counted": x.counted,
                "distinct": x.distinct,
            })).collect::<Vec<_>>(),
        }),
    };
    json!({
        "node": cfg.node,
        "protocol": format!("{:?}", cfg.protocol).to_lowercase(),
        "topic": names.topic,
        "dataflow": match cfg.query { Query::Count => Json::from(names.dataflow.clone()), Query::None => Json::Null },
        "rate": cfg.rate.to_string(),
        "duration_s": duration_s,
        "events": events,
        "connections": cfg.connections,
        "batch": cfg.batch,
        "keys": cfg.keys,
        "distribution": cfg.distribution.to_string(),
        "jitter_ms": cfg.jitter_ms,
        "payload_bytes": cfg.payload_bytes,
        "seed": cfg.seed,
        "elapsed_s": d.elapsed.as_secs_f64(),
        "events_acknowledged": d.acked_events,
        "events_per_sec": events_per_sec(d),
        "events_withheld": d.withheld_events,
        "events_doubled": d.doubled_events,
        "events_refused": d.refused_events,
        "events_unknown": d.unknown_events,
        "busy_retries": d.busy_retries,
        "stopped_early": d.stopped_early,
        "latency_us": {
            "batches": p.count,
            "p50": p.p50,
            "p90": p.p90,
            "p99": p.p99,
            "p99_9": p.p999,
            "max": p.max,
        },
        "check": check,
    })
}

/// The text report.
pub fn to_text(cfg: &Config, names: &Names, d: &DriveResult, check: &CheckOutcome) -> String {
    let p = Percentiles::of(&d.latency_us);
    let run = match cfg.stop {
        Stop::After(t) => format!("for {t:?}"),
        Stop::Events(n) => format!("{n} events"),
    };
    let protocol = format!("{:?}", cfg.protocol).to_lowercase();
    let mut out = format!(
        "starling-loadtest: {protocol} to {node}, topic {topic}, {run} at rate {rate}, \
         {conns} connections, batch {batch}, {keys} keys {dist}, jitter {jitter} ms\n",
        node = cfg.node,
        topic = names.topic,
        rate = cfg.rate,
        conns = cfg.connections,
        batch = cfg.batch,
        keys = cfg.keys,
        dist = cfg.distribution,
        jitter = cfg.jitter_ms,
    );
    out += &format!(
        "throughput: {} events acknowledged in {:.2} s = {:.0} events/s\n",
        d.acked_events,
        d.elapsed.as_secs_f64(),
        events_per_sec(d)
    );
    out += &format!(
        "latency publish→ack per batch ({} batches): p50 {} µs, p90 {} µs, p99 {} µs, \
         p99.9 {} µs, max {} µs\n",
        p.count, p.p50, p.p90, p.p99, p.p999, p.max
    );
    if d.refused_events + d.unknown_events + d.busy_retries > 0 {
        out += &format!(
            "errors: {} events refused (not applied), {} events of unknown outcome, {} busy \
             retries\n",
            d.refused_events, d.unknown_events, d.busy_retries
        );
    }
    if d.withheld_events > 0 {
        out += &format!(
            "fault injection: {} events counted as acknowledged but never sent\n",
            d.withheld_events
        );
    }
    if d.doubled_events > 0 {
        out += &format!(
            "fault injection: {} events sent twice but counted as acknowledged once\n",
            d.doubled_events
        );
    }
    if let Some(why) = &d.stopped_early {
        out += &format!("publishing stopped early: {why}\n");
    }
    match check {
        CheckOutcome::Skipped => out += "check: skipped (--query none)\n",
        CheckOutcome::Error(why) => out += &format!("check: could not be made: {why}\n"),
        CheckOutcome::Done(v) if v.ok() => {
            out += &format!(
                "check OK: {} acknowledged, {} counted exactly once",
                v.acknowledged, v.acknowledged
            );
            if v.unknown_applied > 0 {
                out += &format!(
                    " (plus {} of {} events of unknown outcome, which the node applied)",
                    v.unknown_applied, d.unknown_events
                );
            }
            out += "\n";
        }
        CheckOutcome::Done(v) => {
            out += &format!(
                "check FAILED: {} acknowledged, {} counted: {} missing, {} duplicated, {} \
                 unexpected\n",
                v.acknowledged, v.counted, v.missing, v.duplicated, v.unexpected
            );
            if let Some(why) = &v.not_caught_up {
                out += &format!("  {why}\n");
            }
            if v.late_events > 0 {
                out += &format!(
                    "  the count dataflow sent {} events to its late topic `{}.late` (raise \
                     --lateness if connections lag further behind)\n",
                    v.late_events, names.dataflow
                );
            }
            for x in &v.differences {
                out += &format!(
                    "  key {}: acknowledged {}, unknown outcome {}, counted {} ({} distinct)\n",
                    x.key, x.acknowledged, x.unknown, x.counted, x.distinct
                );
            }
            if v.keys_differing > v.differences.len() as u64 {
                out += &format!(
                    "  … and {} more keys\n",
                    v.keys_differing - v.differences.len() as u64
                );
            }
        }
    }
    out
}
