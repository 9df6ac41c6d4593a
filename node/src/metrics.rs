//! Prometheus metrics of a node.
//!
//! Request-path metrics (latency per route, rejected events) are updated as requests run.
//! Everything the engine already counts (events per topic, late events, watermarks, worker
//! busy time, subscriptions) is read from the engine when `/metrics` is scraped, so the hot
//! paths pay nothing for it.

use std::sync::{Arc, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::Engine;

/// The metrics of one node.
pub struct Metrics {
    registry: Registry,
    /// Request latency per route template, method and status.
    pub requests: HistogramVec,
    /// Events refused, by reason (bad_event, too_large, busy, unknown_topic, ...).
    pub rejected: IntCounterVec,
}

impl Metrics {
    /// Registers every metric; `engine` is read at scrape time.
    pub fn new(engine: &Arc<Engine>) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = HistogramVec::new(
            HistogramOpts::new(
                "starling_request_duration_seconds",
                "Request latency by route, method and status.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ]),
            &["route", "method", "status"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "starling_rejected_events_total",
                "Events refused, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(EngineCollector::new(Arc::downgrade(engine))?))?;
        Ok(Metrics {
            registry,
            requests,
            rejected,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# error encoding metrics: {e}\n"))
    }
}

/// Reads the engine's own counters at scrape time.
struct EngineCollector {
    engine: Weak<Engine>,
    descs: Vec<Desc>,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, prometheus::Error> {
    IntGaugeVec::new(Opts::new(name, help), labels)
}

struct Families {
    events_in: IntCounterVec,
    output_updates: IntCounterVec,
    late: IntCounterVec,
    dead: IntCounterVec,
    watermark_lag: IntGaugeVec,
    window_state: IntGaugeVec,
    subscriptions: IntGauge,
    cut_off: IntCounterVec,
    busy: CounterVec,
    dataflows: IntGauge,
}

impl Families {
    fn new() -> Result<Families, prometheus::Error> {
        Ok(Families {
            events_in: counter(
                "starling_events_in_total",
                "Events accepted into a topic.",
                &["topic"],
            )?,
            output_updates: counter(
                "starling_events_out_total",
                "Updates delivered by a dataflow's outputs.",
                &["dataflow"],
            )?,
            late: counter(
                "starling_late_events_total",
                "Events later than allowed lateness, sent to the late topic.",
                &["dataflow"],
            )?,
            dead: counter(
                "starling_dead_letters_total",
                "Events whose expression failed, sent to the dead-letter topic.",
                &["dataflow"],
            )?,
            watermark_lag: gauge(
                "starling_watermark_lag_ms",
                "Newest event time on the input's topic minus the input's watermark.",
                &["dataflow", "input"],
            )?,
            window_state: gauge(
                "starling_window_state_entries",
                "Open (key, window) entries.",
                &["dataflow"],
            )?,
            subscriptions: IntGauge::new("starling_active_subscriptions", "Live subscriptions.")?,
            cut_off: counter(
                "starling_subscriptions_cut_off_total",
                "Subscriptions cut off for reading too slowly.",
                &[],
            )?,
            busy: CounterVec::new(
                Opts::new(
                    "starling_worker_busy_seconds_total",
                    "Time each timely worker spent working (not parked).",
                ),
                &["worker"],
            )?,
            dataflows: IntGauge::new("starling_dataflows", "Installed dataflows.")?,
        })
    }

    fn collectors(&self) -> Vec<&dyn Collector> {
        vec![
            &self.events_in,
            &self.output_updates,
            &self.late,
            &self.dead,
            &self.watermark_lag,
            &self.window_state,
            &self.subscriptions,
            &self.cut_off,
            &self.busy,
            &self.dataflows,
        ]
    }
}

impl EngineCollector {
    fn new(engine: Weak<Engine>) -> Result<EngineCollector, prometheus::Error> {
        let f = Families::new()?;
        let descs = f
            .collectors()
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        Ok(EngineCollector { engine, descs })
    }
}

impl Collector for EngineCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (Some(engine), Ok(f)) = (self.engine.upgrade(), Families::new()) else {
            return Vec::new();
        };
        let topics = engine.topics();
        for t in &topics {
            f.events_in
                .with_label_values(&[&t.spec.name])
                .inc_by(t.published);
        }
        let dataflows = engine.dataflows();
        f.dataflows.set(dataflows.len() as i64);
        for d in &dataflows {
            let name = d.name.as_str();
            f.output_updates
                .with_label_values(&[name])
                .inc_by(d.output_updates);
            f.late.with_label_values(&[name]).inc_by(d.late_events);
            f.dead.with_label_values(&[name]).inc_by(d.dead_letters);
            f.window_state
                .with_label_values(&[name])
                .set(d.window_state);
            for ((input, topic), wm) in d.inputs.iter().zip(&d.watermarks) {
                let newest = topics
                    .iter()
                    .find(|t| &t.spec.name == topic)
                    .and_then(|t| t.max_event_time)
                    .unwrap_or(0);
                f.watermark_lag
                    .with_label_values(&[name, input])
                    .set(newest.saturating_sub(*wm).min(i64::MAX as u64) as i64);
            }
        }
        let (live, cut) = engine.subscriptions();
        f.subscriptions.set(live as i64);
        f.cut_off.with_label_values::<&str>(&[]).inc_by(cut);
        for (i, ns) in engine.worker_busy_nanos().iter().enumerate() {
            f.busy
                .with_label_values(&[&i.to_string()])
                .inc_by(*ns as f64 / 1e9);
        }
        f.collectors().iter().flat_map(|c| c.collect()).collect()
    }
}
