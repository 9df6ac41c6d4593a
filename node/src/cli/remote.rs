//! Subcommands that talk to a running node over HTTP: submit, publish, subscribe, topics,
//! dataflows, status.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value as Json;

use starling_client::http::{ClientError, HttpClient};

/// Events per publish request when streaming a file.
const CHUNK_LINES: usize = 1_000;
const CHUNK_BYTES: usize = 4 << 20;

/// `starling submit FILE`.
pub async fn submit(node: &HttpClient, file: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let info = node.submit(&text).await?;
    Ok(format!(
        "submitted dataflow `{}` (inputs: {}; outputs: {})\n",
        info["name"].as_str().unwrap_or("?"),
        info["inputs"]
            .as_array()
            .map(|a| a
                .iter()
                .map(|i| format!(
                    "{}←{}",
                    i["id"].as_str().unwrap_or("?"),
                    i["topic"].as_str().unwrap_or("?")
                ))
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        info["outputs"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|o| o.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
    ))
}

/// `starling publish TOPIC [FILE|-]`: NDJSON, sent in chunks; a progress bar for files.
pub async fn publish(node: &HttpClient, topic: &str, file: Option<&Path>) -> Result<u64> {
    let (reader, size): (Box<dyn Read + Send>, Option<u64>) = match file {
        None => (Box::new(std::io::stdin()), None),
        Some(p) if p.as_os_str() == "-" => (Box::new(std::io::stdin()), None),
        Some(p) => {
            let f =
                std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
            let len = f.metadata().map(|m| m.len()).ok();
            (Box::new(f), len)
        }
    };
    let bar = size.map(|len| {
        let b = indicatif::ProgressBar::new(len);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut reader = BufReader::new(reader);
    let mut accepted = 0u64;
    let mut sent_events = 0u64;
    let mut chunk: Vec<u8> = Vec::new();
    let mut lines = 0usize;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .context("reading events")?;
        if n > 0 && !line.trim_ascii().is_empty() {
            chunk.extend_from_slice(&line);
            if !line.ends_with(b"\n") {
                chunk.push(b'\n');
            }
            lines += 1;
        }
        if (n == 0 && !chunk.is_empty()) || lines >= CHUNK_LINES || chunk.len() >= CHUNK_BYTES {
            let bytes = chunk.len() as u64;
            match node.publish_ndjson(topic, std::mem::take(&mut chunk)).await {
                Ok(a) => accepted += a,
                Err(ClientError::Api {
                    code,
                    message,
                    details,
                    ..
                }) => {
                    let at = details["index"].as_u64().map(|i| sent_events + i);
                    if let Some(b) = &bar {
                        b.abandon();
                    }
                    match at {
                        Some(i) => bail!("{code}: {message} (event {i} of the input; {accepted} events before it were accepted)"),
                        None => bail!("{code}: {message} ({accepted} events were accepted before this)"),
                    }
                }
                Err(e) => return Err(e.into()),
            }
            sent_events += lines as u64;
            lines = 0;
            if let Some(b) = &bar {
                b.inc(bytes);
                b.set_message(format!("{accepted} events"));
            }
        }
        if n == 0 {
            break;
        }
    }
    if let Some(b) = &bar {
        b.finish_with_message(format!("{accepted} events"));
    }
    Ok(accepted)
}

/// `starling subscribe TOPIC | DATAFLOW/OUTPUT`: prints NDJSON until the stream ends.
pub async fn subscribe(node: &HttpClient, target: &str) -> Result<()> {
    let mut out = std::io::stdout();
    node.subscribe(target, |line| {
        writeln!(out, "{line}").and_then(|_| out.flush()).is_ok()
    })
    .await?;
    Ok(())
}

fn table(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(v, w)| format!("{v:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
                + "\n"
        })
        .collect()
}

fn s(j: &Json) -> String {
    match j {
        Json::String(s) => s.clone(),
        Json::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `starling topics`.
pub async fn topics(node: &HttpClient) -> Result<String> {
    let mut rows = vec![vec![
        "TOPIC".into(),
        "KEY".into(),
        "TIME".into(),
        "FIELDS".into(),
        "PUBLISHED".into(),
    ]];
    for t in node.topics().await?.as_array().into_iter().flatten() {
        rows.push(vec![
            s(&t["name"]),
            s(&t["key"]),
            s(&t["time"]),
            t["fields"].as_array().map_or(0, Vec::len).to_string(),
            s(&t["published"]),
        ]);
    }
    Ok(table(rows))
}

/// `starling dataflows`.
pub async fn dataflows(node: &HttpClient) -> Result<String> {
    let mut rows = vec![vec![
        "DATAFLOW".into(),
        "INPUTS".into(),
        "OUTPUTS".into(),
        "LATE".into(),
        "DEAD".into(),
        "WINDOW STATE".into(),
    ]];
    for d in node.dataflows().await?.as_array().into_iter().flatten() {
        rows.push(vec![
            s(&d["name"]),
            d["inputs"].as_array().map_or(0, Vec::len).to_string(),
            d["outputs"].as_array().map_or(0, Vec::len).to_string(),
            s(&d["counters"]["late_events"]),
            s(&d["counters"]["dead_letters"]),
            s(&d["counters"]["window_state"]),
        ]);
    }
    Ok(table(rows))
}

/// `starling status`: health, topics and dataflows at a glance, and the cluster when the
/// node is a member of one.
pub async fn status(node: &HttpClient) -> Result<String> {
    let mut out = node_status(node).await?;
    if let Some(view) = node.cluster().await? {
        out.push_str(&cluster_status(&view));
    }
    Ok(out)
}

/// The cluster part of `starling status`: who leads, each member and its shards, what moves.
fn cluster_status(view: &Json) -> String {
    let leader = view["leader"].as_str();
    let members = view["members"].as_array().cloned().unwrap_or_default();
    let leader_name = leader
        .and_then(|l| members.iter().find(|m| m["id"] == l))
        .map(|m| format!("{} ({})", s(&m["name"]), s(&m["id"])))
        .unwrap_or_else(|| leader.map_or("none (an election is under way)".into(), String::from));
    let mut rows = vec![vec![
        "NAME".into(),
        "ID".into(),
        "STATE".into(),
        "VOTER".into(),
        "SHARDS".into(),
        "HTTP".into(),
    ]];
    for m in &members {
        let mut state = s(&m["state"]);
        if m["leaving"] == true && state != "leaving" {
            state.push_str(" (leaving)");
        }
        rows.push(vec![
            s(&m["name"]),
            s(&m["id"]),
            state,
            if m["voter"] == true { "yes" } else { "no" }.into(),
            s(&m["shards"]),
            s(&m["http"]),
        ]);
    }
    let members_table: String = table(rows).lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "cluster: {} ({} shards; this node is {})\nleader: {}\nmembers: {}\n{}shards moving: {}{}\n",
        s(&view["cluster_id"]),
        s(&view["shard_count"]),
        s(&view["node"]["name"]),
        leader_name,
        members.len(),
        members_table,
        view["moving"].as_u64().unwrap_or(0),
        if view["settled"] == true {
            " (settled)"
        } else {
            " (placement not settled yet)"
        },
    )
}

/// `starling leave`: hands the node's shards to the other members. The node keeps running
/// (stop it afterwards); a node that runs alone has nothing to hand over and is refused.
pub async fn leave(node: &HttpClient) -> Result<String> {
    let Some(before) = node.cluster().await? else {
        bail!(
            "the node at {} is not part of a cluster, so it has no shards to hand over \
             (only a node started with --gossip/--seed/--cluster-id can leave one)",
            node.base()
        );
    };
    let shards_of = |view: &Json| {
        let me = &view["node"]["id"];
        view["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["id"] == *me)
            .and_then(|m| m["shards"].as_u64())
            .unwrap_or(0)
    };
    let owned = shards_of(&before);
    let name = s(&before["node"]["name"]);
    node.leave_cluster().await.with_context(|| {
        format!("node {name} could not hand its shards over; run `starling status` to see where they are")
    })?;
    let now = match node.cluster().await? {
        Some(after) => shards_of(&after),
        None => 0,
    };
    if now != 0 {
        bail!("node {name} still owns {now} shards after leaving; run `starling status`");
    }
    Ok(format!(
        "node {name} owned {owned} shards before leaving and owns none now; stop it when you like\n"
    ))
}

/// Health, topics and dataflows of one node.
async fn node_status(node: &HttpClient) -> Result<String> {
    let topics = node.topics().await?;
    let dataflows = node.dataflows().await?;
    let published: u64 = topics
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["published"].as_u64())
        .sum();
    Ok(format!(
        "node: up\ntopics: {} ({} events accepted)\ndataflows: {}\n",
        topics.as_array().map_or(0, Vec::len),
        published,
        dataflows.as_array().map_or(0, Vec::len)
    ))
}
