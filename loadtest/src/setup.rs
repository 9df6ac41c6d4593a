//! Preparing the node for a run: a fresh topic, and the count dataflow over it.
//!
//! The count dataflow is two aggregates and a KV view:
//!
//! 1. per key and 1 s tumbling window of event time: `count` and `count_distinct(seq)`.
//!    A duplicate is the same event (same `seq`, same event time) appended twice, so it
//!    falls in the same window and makes the two differ. Window state is dropped once the
//!    window can no longer change, so memory stays bounded however long the run.
//! 2. per key, over the windows' results: the sums of both (an aggregate without a window
//!    keeps one entry per distinct window result, a few per key).
//! 3. `kv_put` into a view the check pages through at the end.
//!
//! The input's `max_delay` is the jitter, so jittered events do not move windows along
//! ahead of their stragglers; `allowed_lateness` covers events a slow connection delivers
//! behind the others. Anything later than that goes to the dataflow's late topic, and the
//! check reports the dataflow's `late_events` next to what is missing.

use anyhow::{bail, Context, Result};
use starling_client::http::{ClientError, HttpClient};

use crate::args::Config;
use crate::workload::topic_declaration;

/// Window of the first aggregate, in ms.
pub const WINDOW_MS: u64 = 1_000;

/// Names of what one run creates.
#[derive(Clone, Debug)]
pub struct Names {
    pub topic: String,
    pub dataflow: String,
    pub view: String,
}

impl Names {
    /// The given topic, or a generated one; the dataflow and view always carry the run's id
    /// so runs never share state.
    pub fn new(topic: Option<&str>) -> Names {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let run = format!("{ms}_{}", std::process::id());
        Names {
            topic: topic.map_or_else(|| format!("loadtest_{run}"), str::to_string),
            dataflow: format!("loadtest_count_{run}"),
            view: format!("loadtest_counts_{run}"),
        }
    }
}

/// The count dataflow's definition (see the module docs).
pub fn count_definition(names: &Names, jitter_ms: u64, lateness_ms: u64) -> String {
    format!(
        r#"name: {dataflow}
description: starling-loadtest exactly-once check over {topic}
inputs:
  - id: events
    topic: {topic}
    watermark: {{max_delay: {jitter_ms}ms, idle_timeout: 0s, allowed_lateness: {lateness_ms}ms}}
nodes:
  - {{id: windows, op: window, input: events, kind: tumbling, size: {WINDOW_MS}ms}}
  - id: per_window
    op: aggregate
    input: windows
    aggregates:
      - {{name: n, fn: count}}
      - {{name: seqs, fn: count_distinct, expr: seq}}
  - id: per_key
    op: aggregate
    input: per_window
    aggregates:
      - {{name: counted, fn: sum, expr: n}}
      - {{name: distinct, fn: sum, expr: seqs}}
  - {{id: view, op: kv_put, input: per_key, view: {view}}}
"#,
        dataflow = names.dataflow,
        topic = names.topic,
        view = names.view,
    )
}

/// Creates the topic (which must be new) and, for `--query count`, the count dataflow.
/// The first call to the node also tells whether it is reachable at all.
pub async fn prepare(node: &HttpClient, names: &Names, cfg: &Config) -> Result<()> {
    let topics = node.topics().await.map_err(|e| unreachable(node, e))?;
    let exists = topics
        .as_array()
        .is_some_and(|a| a.iter().any(|t| t["name"] == names.topic.as_str()));
    if exists {
        bail!(
            "topic `{}` already exists on {}: each run needs a fresh topic so that its count \
             is exact; omit --topic for a generated name or pick a new one",
            names.topic,
            node.base()
        );
    }
    node.create_topic(&topic_declaration(&names.topic))
        .await
        .with_context(|| format!("the node refused to create topic `{}`", names.topic))?;
    if cfg.query == crate::args::Query::Count {
        let def = count_definition(names, cfg.jitter_ms, cfg.lateness.as_millis() as u64);
        node.submit(&def).await.with_context(|| {
            format!(
                "the node refused the count dataflow `{}` (it needs KV views, which a node \
                 started with `--durability none` does not have; --query none skips the check)",
                names.dataflow
            )
        })?;
    }
    Ok(())
}

/// Drops the count dataflow; the topic stays (the API has no topic deletion).
pub async fn cleanup(node: &HttpClient, names: &Names) {
    if let Err(e) = node.drop_dataflow(&names.dataflow).await {
        tracing::warn!(dataflow = %names.dataflow, error = %e, "could not drop the count dataflow");
    }
}

/// A first-contact failure, said in terms of what to check.
fn unreachable(node: &HttpClient, e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Transport { .. } => anyhow::anyhow!(
            "{e}\nis a node running there? Pass its `http=` address as --node http://HOST:PORT"
        ),
        other => anyhow::anyhow!("the node at {} answered oddly: {other}", node.base()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_parses_and_names_are_unique_per_run() {
        let names = Names::new(None);
        // That it parses is checked where it matters, by a real node: every test in
        // tests/against_node.rs submits it (this crate compiles the client only).
        let def = count_definition(&names, 250, 10_000);
        assert!(def.contains(&names.view));
        assert!(names.topic.starts_with("loadtest_"));
        assert_ne!(names.dataflow, names.view);
        assert_eq!(Names::new(Some("t1")).topic, "t1");
    }
}
