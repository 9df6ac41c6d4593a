//! The command line: what the user typed ([`Args`]), checked once and turned into a
//! [`Config`] the rest of the tool trusts. Every refusal says what to write instead, because
//! a load test that silently "fixes" its parameters measures something else than asked.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};

/// Most keys a run may use: the client keeps two counters per key, and the check reads the
/// whole view back at the end.
pub const MAX_KEYS: u64 = 1_000_000;

#[derive(Parser, Debug)]
#[command(
    name = "starling-loadtest",
    version,
    about = "Drives a running Starling node over HTTP or QUIC, then checks through a count \
             dataflow that every acknowledged event was counted exactly once.",
    after_help = "Exit status: 0 when the run completed and the check passed (or was skipped \
                  with --query none); 1 when the check found lost, duplicated or unexpected \
                  events; 2 when the run could not be made (bad arguments, node unreachable, \
                  setup refused, publishing gave up)."
)]
pub struct Args {
    /// The node's HTTP base URL. Setup, the watermark and the check always use it.
    #[arg(long, env = "STARLING_NODE", default_value = "http://127.0.0.1:7070")]
    pub node: String,

    /// The node's QUIC address HOST:PORT (`quic=` in the node's start line); needed with
    /// `--protocol quic`.
    #[arg(long)]
    pub quic: Option<String>,

    /// Trust the node's QUIC certificate by its SHA-256 (`quic_fingerprint=` in its start
    /// line).
    #[arg(long, conflicts_with = "cert")]
    pub fingerprint: Option<String>,

    /// Trust the node's QUIC certificate by a copy of its file (`DATA_DIR/tls/cert.der`).
    #[arg(long)]
    pub cert: Option<PathBuf>,

    /// How events are published.
    #[arg(long, value_enum, default_value_t = Protocol::Http)]
    pub protocol: Protocol,

    /// Events per second over all connections, or `max` (each connection sends its next
    /// batch as soon as the previous one is acknowledged).
    #[arg(long, default_value = "max", value_parser = parse_rate, allow_hyphen_values = true)]
    pub rate: Rate,

    /// How long to publish (`30s`, `2m`, `500ms`). The default is 10s unless `--events` is
    /// given.
    #[arg(long, value_parser = parse_run_duration, conflicts_with = "events")]
    pub duration: Option<Duration>,

    /// Publish exactly this many events instead of running for a duration.
    #[arg(long, value_parser = parse_count, allow_hyphen_values = true)]
    pub events: Option<u64>,

    /// Concurrent publishers, each with its own connection and one batch in flight.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,

    /// Events per publish request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,

    /// Distinct keys events are spread over.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=MAX_KEYS))]
    pub keys: u64,

    /// How keys are drawn: `uniform`, or `zipf:S` (rank-frequency exponent S > 0, e.g.
    /// `zipf:1.1`; `zipf` alone means `zipf:1.1`).
    #[arg(long, default_value = "uniform", value_parser = parse_distribution)]
    pub distribution: KeyDistribution,

    /// Event times are the send time minus a random 0..=J ms, so input arrives out of order.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub jitter_ms: u64,

    /// Allowed lateness of the count dataflow's input, on top of the jitter: how far behind
    /// the newest event time an event may arrive (e.g. from a slow connection) and still be
    /// counted rather than sent to the late topic.
    #[arg(long, default_value = "10s", value_parser = parse_any_duration)]
    pub lateness: Duration,

    /// Bytes of filler text in each event (besides key, seq and ts).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(0..=65_536))]
    pub payload_bytes: u32,

    /// The topic to create and publish to; it must not exist yet (a fresh topic keeps the
    /// count exact). Default: a generated `loadtest_<time>_<pid>`.
    #[arg(long)]
    pub topic: Option<String>,

    /// The dataflow installed next to the load: `count` (the exactly-once check) or `none`
    /// (publish only, no check).
    #[arg(long, value_enum, default_value_t = Query::Count)]
    pub query: Query,

    /// Also write the results as one JSON object to FILE (`-`: standard output, and the
    /// text report goes to standard error).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Seed of the key and jitter generators (default: from the clock), for repeatable runs.
    #[arg(long)]
    pub seed: Option<u64>,

    /// How long one request (or connection attempt) may take before its outcome counts as
    /// unknown.
    #[arg(long, default_value = "30s", value_parser = parse_run_duration)]
    pub request_timeout: Duration,

    /// How long to wait after publishing for the count dataflow to catch up.
    #[arg(long, default_value = "60s", value_parser = parse_run_duration)]
    pub settle_timeout: Duration,

    /// Leave the count dataflow installed after the run (to inspect its view).
    #[arg(long)]
    pub keep: bool,

    /// Testing the checker: count the first N events (by sequence number) as acknowledged
    /// without sending them, so the check must report exactly N missing and fail.
    #[arg(long, default_value_t = 0, hide = true)]
    pub fault_skip_events: u64,

    /// Testing the checker: send the first N events (by sequence number) twice while
    /// expecting them once, so the check must report exactly N duplicated and fail.
    #[arg(long, default_value_t = 0, hide = true)]
    pub fault_duplicate_events: u64,
}

/// The front door events are published through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// NDJSON over `POST /v1/topics/{topic}/events`.
    Http,
    /// Typed rows over the QUIC protocol (docs/protocol.md).
    Quic,
}

/// The dataflow that runs next to the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Query {
    /// Count per key and window, summed per key into a KV view: the exactly-once check.
    Count,
    /// No dataflow: raw publish throughput, nothing checked.
    None,
}

/// Target events per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    /// As fast as acknowledgements come back.
    Max,
    /// This many events per second over all connections.
    Fixed(u64),
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Max => f.write_str("max"),
            Rate::Fixed(n) => write!(f, "{n}/s"),
        }
    }
}

/// How event keys are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyDistribution {
    Uniform,
    /// Zipf with this exponent: key rank r is drawn with weight 1/r^s.
    Zipf(f64),
}

impl std::fmt::Display for KeyDistribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyDistribution::Uniform => f.write_str("uniform"),
            KeyDistribution::Zipf(s) => write!(f, "zipf:{s}"),
        }
    }
}

/// When publishing stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    After(Duration),
    Events(u64),
}

/// How the QUIC connections trust the node.
#[derive(Clone, Debug)]
pub struct QuicTarget {
    pub addr: String,
    pub trust: starling_client::Trust,
}

/// A checked run description.
#[derive(Clone, Debug)]
pub struct Config {
    pub node: String,
    pub protocol: Protocol,
    pub quic: Option<QuicTarget>,
    pub rate: Rate,
    pub stop: Stop,
    pub connections: u32,
    /// Events per request, after [`Config::from_args`] fitted it to a low rate.
    pub batch: u32,
    pub keys: u64,
    pub distribution: KeyDistribution,
    pub jitter_ms: u64,
    pub lateness: Duration,
    pub payload_bytes: u32,
    pub topic: Option<String>,
    pub query: Query,
    pub json: Option<PathBuf>,
    pub seed: u64,
    pub request_timeout: Duration,
    pub settle_timeout: Duration,
    pub keep: bool,
    pub fault_skip_events: u64,
    pub fault_duplicate_events: u64,
}

impl Config {
    /// Checks what clap cannot check alone (combinations) and fills in defaults.
    pub fn from_args(a: Args) -> Result<Config> {
        if !(a.node.starts_with("http://") || a.node.starts_with("https://")) {
            bail!(
                "--node `{}` is not an HTTP URL: write it as http://HOST:PORT (the node's \
                 `http=` address)",
                a.node
            );
        }
        let quic = match a.protocol {
            Protocol::Http => None,
            Protocol::Quic => {
                let Some(addr) = a.quic.clone() else {
                    bail!(
                        "--protocol quic needs --quic HOST:PORT (the `quic=` address the node \
                         printed on start)"
                    );
                };
                let trust = match (&a.fingerprint, &a.cert) {
                    (Some(f), _) => starling_client::Trust::Fingerprint(f.clone()),
                    (None, Some(c)) => starling_client::Trust::CertFile(c.clone()),
                    (None, None) => bail!(
                        "--protocol quic needs --fingerprint HEX (the node's \
                         `quic_fingerprint=`) or --cert DATA_DIR/tls/cert.der"
                    ),
                };
                Some(QuicTarget { addr, trust })
            }
        };
        let stop = match (a.events, a.duration) {
            (Some(n), _) => Stop::Events(n),
            (None, Some(d)) => Stop::After(d),
            (None, None) => Stop::After(Duration::from_secs(10)),
        };
        // At a low rate a full batch would leave seconds between requests (and a 5 s run
        // might send one batch): keep batches at most one second apart.
        let batch = match a.rate {
            Rate::Fixed(r) if r < u64::from(a.batch) => {
                tracing::info!(
                    batch = a.batch,
                    rate = r,
                    "batch lowered to the rate, so batches go out at least once a second"
                );
                r as u32
            }
            _ => a.batch,
        };
        let seed = a.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Ok(Config {
            node: a.node,
            protocol: a.protocol,
            quic,
            rate: a.rate,
            stop,
            connections: a.connections,
            batch,
            keys: a.keys,
            distribution: a.distribution,
            jitter_ms: a.jitter_ms,
            lateness: a.lateness,
            payload_bytes: a.payload_bytes,
            topic: a.topic,
            query: a.query,
            json: a.json,
            seed,
            request_timeout: a.request_timeout,
            settle_timeout: a.settle_timeout,
            keep: a.keep,
            fault_skip_events: a.fault_skip_events,
            fault_duplicate_events: a.fault_duplicate_events,
        })
    }
}

/// `max`, or a whole number of events per second of at least 1.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match parse_count(t) {
        Ok(n) => Ok(Rate::Fixed(n)),
        Err(why) => Err(format!(
            "{why}; a rate is events per second (e.g. 5000) or `max`"
        )),
    }
}

/// A whole number of at least 1.
pub fn parse_count(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!("`{text}` is negative; it must be at least 1"));
    }
    match t.parse::<u64>() {
        Ok(0) => Err(format!("`{text}` is zero; it must be at least 1")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

/// `uniform`, `zipf` or `zipf:S` with a finite S > 0.
pub fn parse_distribution(text: &str) -> Result<KeyDistribution, String> {
    let t = text.trim().to_ascii_lowercase();
    let usage = "use `uniform` or `zipf:S` with S > 0 (e.g. `zipf:1.1`)";
    match t.as_str() {
        "uniform" => Ok(KeyDistribution::Uniform),
        "zipf" => Ok(KeyDistribution::Zipf(1.1)),
        _ => match t.strip_prefix("zipf:") {
            Some(s) => match s.parse::<f64>() {
                Ok(s) if s.is_finite() && s > 0.0 => Ok(KeyDistribution::Zipf(s)),
                _ => Err(format!(
                    "`{text}`: the Zipf exponent must be a number above 0; {usage}"
                )),
            },
            None => Err(format!("unknown distribution `{text}`; {usage}")),
        },
    }
}

/// A duration as definitions write them (`500ms`, `30s`, `2m`), above zero.
fn parse_run_duration(text: &str) -> Result<Duration, String> {
    let d = parse_any_duration(text)?;
    if d.is_zero() {
        return Err(format!(
            "`{text}` is zero; give a duration above 0 (e.g. `30s`)"
        ));
    }
    Ok(d)
}

/// A duration as definitions write them, zero allowed (humantime reads the same units:
/// `ms`, `s`, `m`, `h`, combined as in `1m30s`; a bare number has no unit and is refused).
fn parse_any_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write it as definitions do, e.g. `500ms`, `30s`, `2m`")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("MAX"), Ok(Rate::Max));
        assert_eq!(parse_rate("2500"), Ok(Rate::Fixed(2500)));
        assert!(parse_rate("0").unwrap_err().contains("zero"));
        assert!(parse_rate("-5").unwrap_err().contains("negative"));
        assert!(parse_rate("fast")
            .unwrap_err()
            .contains("not a whole number"));
        assert!(parse_rate("1.5").is_err());
    }

    #[test]
    fn distributions() {
        assert_eq!(parse_distribution("uniform"), Ok(KeyDistribution::Uniform));
        assert_eq!(parse_distribution("zipf"), Ok(KeyDistribution::Zipf(1.1)));
        assert_eq!(
            parse_distribution("zipf:0.8"),
            Ok(KeyDistribution::Zipf(0.8))
        );
        assert!(parse_distribution("zipf:0").is_err());
        assert!(parse_distribution("zipf:-1").is_err());
        assert!(parse_distribution("zipf:nan").is_err());
        assert!(parse_distribution("normal")
            .unwrap_err()
            .contains("unknown distribution"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_run_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_run_duration("0s").is_err());
        assert!(parse_run_duration("10").is_err());
        assert_eq!(parse_any_duration("0s"), Ok(Duration::ZERO));
    }

    fn args(extra: &[&str]) -> Result<Config> {
        let mut argv = vec!["starling-loadtest"];
        argv.extend_from_slice(extra);
        Config::from_args(Args::try_parse_from(argv)?)
    }

    #[test]
    fn combinations() {
        let c = args(&[]).unwrap();
        assert_eq!(c.stop, Stop::After(Duration::from_secs(10)));
        assert_eq!(c.rate, Rate::Max);
        assert!(args(&["--protocol", "quic"])
            .unwrap_err()
            .to_string()
            .contains("--quic"));
        assert!(args(&["--protocol", "quic", "--quic", "127.0.0.1:1"])
            .unwrap_err()
            .to_string()
            .contains("--fingerprint"));
        assert!(args(&["--events", "10", "--duration", "1s"]).is_err());
        assert!(args(&["--node", "127.0.0.1:7070"]).is_err());
        assert!(args(&["--protocol", "carrier-pigeon"]).is_err());
        assert!(args(&["--query", "sum"]).is_err());
        assert_eq!(args(&["--rate", "10", "--batch", "100"]).unwrap().batch, 10);
        assert!(args(&["--rate", "-3"]).is_err());
    }
}
