//! `starling-loadtest`: drives a running node over HTTP or QUIC at a fixed or maximum rate,
//! then checks through a count dataflow that every acknowledged event was counted exactly
//! once, and prints throughput and latency percentiles (text, and JSON with `--json`).
//!
//! `main` only wires: arguments ([`args`]), node setup ([`setup`]), the load ([`drive`]),
//! the check ([`check`]) and the report ([`report`]). See loadtest/README.md.

mod args;
mod check;
mod drive;
mod report;
mod setup;
mod workload;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use starling_client::http::HttpClient;

use args::{Args, Config, Query};

/// How a run ended, as the exit status says it.
enum Outcome {
    /// Completed; the check passed or was skipped.
    Passed,
    /// The check found lost, duplicated or unexpected events.
    CheckFailed,
    /// Publishing stopped before the schedule ended (the report says why).
    Incomplete,
}

fn main() -> ExitCode {
    // clap prints its own usage errors and exits with 2.
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = Config::from_args(args).and_then(|cfg| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(run(cfg))
    });
    match result {
        Ok(Outcome::Passed) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(1),
        Ok(Outcome::Incomplete) => {
            eprintln!("starling-loadtest: error: publishing stopped before the run's end");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("starling-loadtest: error: {}", describe(&e));
            ExitCode::from(2)
        }
    }
}

async fn run(cfg: Config) -> Result<Outcome> {
    let node = HttpClient::new(&cfg.node);
    let names = setup::Names::new(cfg.topic.as_deref());
    setup::prepare(&node, &names, &cfg).await?;
    let keys = Arc::new(workload::KeyNames::new(cfg.keys));
    let driven = drive::drive(&cfg, &names.topic, Arc::clone(&keys)).await;
    let verdict = match (&driven, cfg.query) {
        (Ok(d), Query::Count) => Some(
            check::run(
                &node,
                &names,
                &keys,
                d,
                cfg.lateness.as_millis() as u64,
                cfg.jitter_ms,
                cfg.settle_timeout,
            )
            .await,
        ),
        _ => None,
    };
    if cfg.query == Query::Count && !cfg.keep {
        setup::cleanup(&node, &names).await;
    }
    let driven = driven?;
    let (check, check_error) = match verdict {
        None => (report::CheckOutcome::Skipped, None),
        Some(Ok(v)) => (report::CheckOutcome::Done(v), None),
        Some(Err(e)) => (report::CheckOutcome::Error(describe(&e)), Some(e)),
    };
    let text = report::to_text(&cfg, &names, &driven, &check);
    let json = report::to_json(&cfg, &names, &driven, &check);
    match &cfg.json {
        Some(path) if path.as_os_str() == "-" => {
            eprint!("{text}");
            let mut out = std::io::stdout().lock();
            writeln!(out, "{json}").context("cannot write the JSON report")?;
        }
        Some(path) => {
            print!("{text}");
            std::fs::write(path, format!("{json:#}\n"))
                .with_context(|| format!("cannot write the JSON report to {}", path.display()))?;
        }
        None => print!("{text}"),
    }
    if let Some(e) = check_error {
        return Err(e.context("the exactly-once check could not be made"));
    }
    Ok(match check {
        report::CheckOutcome::Done(v) if !v.ok() => Outcome::CheckFailed,
        _ if driven.stopped_early.is_some() => Outcome::Incomplete,
        _ => Outcome::Passed,
    })
}

/// An error and its causes on one line, leaving out a cause whose text the line already
/// holds (the client's errors repeat their source in their own message).
fn describe(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line += ": ";
        }
        line += &text;
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_already_said_are_not_repeated() {
        let e = anyhow::anyhow!("cannot reach x: refused")
            .context("cannot reach x: refused")
            .context("could not advance");
        assert_eq!(
            super::describe(&e),
            "could not advance: cannot reach x: refused"
        );
    }
}
