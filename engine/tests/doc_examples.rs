//! Every example of `docs/definitions.md` runs here, on a real engine with 1 and 2 workers,
//! and must produce exactly the output the document shows.
//!
//! Convention (also described in the document, section "How to read the examples"):
//!
//! * ` ```yaml title=NAME ` — a complete definition; `NAME` is unique in the document.
//!   An optional `settle=MS` gives the final watermark (default 3600000, one hour).
//! * ` ```json input=NAME topic=T ` — events for example `NAME`, one JSON object per line,
//!   published to topic `T` as one batch. Input blocks are published in document order.
//! * ` ```json expect=NAME output=O ` — the consolidated contents of output `O` after the
//!   example settled: one row (a JSON array) per line, each with multiplicity 1, or
//!   `{"row": [...], "diff": N}` for another multiplicity. An empty block means "nothing".
//! * ` ```json expect=NAME topic=T ` — the events appended to topic `T` (rows, as above).
//!
//! After the last input, the watermark of every input topic is advanced to the settle time
//! and the test waits until the dataflow has emitted everything before it. Rows compare as
//! compact JSON, so floats must be written as the engine prints them (`3.0`, not `3`).
//!
//! Set `DOC_EXAMPLES_PRINT=1` to print the actual outputs (to update the document after a
//! deliberate change of semantics).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value as Json;
use starling_engine::operators::definition::Definition;
use starling_engine::operators::Event;
use starling_engine::Subscription;

const DOC: &str = include_str!("../../docs/definitions.md");
const DEFAULT_SETTLE: u64 = 3_600_000;

/// A fenced block with its info-string attributes.
struct Block {
    lang: String,
    attrs: BTreeMap<String, String>,
    body: String,
    line: usize,
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = doc.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut words = info.split_whitespace();
        let lang = words.next().unwrap_or("").to_string();
        let attrs = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut body = String::new();
        for (_, l) in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        out.push(Block {
            lang,
            attrs,
            body,
            line: n + 1,
        });
    }
    out
}

enum Expect {
    Output(String),
    Topic(String),
}

struct Example {
    name: String,
    definition: String,
    settle: u64,
    /// (topic, events) in document order.
    inputs: Vec<(String, Vec<Json>)>,
    expected: Vec<(Expect, BTreeMap<String, isize>, usize)>,
}

fn ndjson(b: &Block) -> Vec<Json> {
    b.body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("line {} of the doc: bad JSON `{l}`: {e}", b.line))
        })
        .collect()
}

fn expected_rows(b: &Block) -> BTreeMap<String, isize> {
    let mut m = BTreeMap::new();
    for v in ndjson(b) {
        let (row, diff) = match &v {
            Json::Array(_) => (v.to_string(), 1),
            Json::Object(o) => (
                o.get("row").expect("`row`").to_string(),
                o.get("diff").and_then(Json::as_i64).expect("`diff`") as isize,
            ),
            other => panic!("line {}: expected a row, found {other}", b.line),
        };
        *m.entry(row).or_insert(0) += diff;
    }
    m
}

fn examples() -> Vec<Example> {
    let mut examples: Vec<Example> = Vec::new();
    for b in blocks(DOC) {
        if let Some(name) = b.attrs.get("title") {
            assert_eq!(b.lang, "yaml", "line {}: examples are yaml", b.line);
            assert!(
                examples.iter().all(|e| &e.name != name),
                "line {}: example `{name}` is defined twice",
                b.line
            );
            let settle = b
                .attrs
                .get("settle")
                .map(|s| s.parse().expect("settle is milliseconds"))
                .unwrap_or(DEFAULT_SETTLE);
            examples.push(Example {
                name: name.clone(),
                definition: b.body.clone(),
                settle,
                inputs: vec![],
                expected: vec![],
            });
            continue;
        }
        let find = |examples: &mut Vec<Example>, name: &str| -> usize {
            examples
                .iter()
                .position(|e| e.name == name)
                .unwrap_or_else(|| panic!("line {}: no example `{name}` above", b.line))
        };
        if let Some(name) = b.attrs.get("input") {
            let topic = b
                .attrs
                .get("topic")
                .expect("input blocks name a topic")
                .clone();
            let i = find(&mut examples, name);
            examples[i].inputs.push((topic, ndjson(&b)));
        } else if let Some(name) = b.attrs.get("expect") {
            let expect = match (b.attrs.get("output"), b.attrs.get("topic")) {
                (Some(o), None) => Expect::Output(o.clone()),
                (None, Some(t)) => Expect::Topic(t.clone()),
                _ => panic!(
                    "line {}: an expect block names one output=O or topic=T",
                    b.line
                ),
            };
            let i = find(&mut examples, name);
            examples[i]
                .expected
                .push((expect, expected_rows(&b), b.line));
        }
    }
    examples
}

fn topic_rows(sub: &Subscription<Arc<[Event]>>) -> Vec<(String, isize)> {
    sub.drain()
        .iter()
        .flat_map(|b| b.iter().map(|e| (row_text(&e.row), 1)).collect::<Vec<_>>())
        .collect()
}

fn run(example: &Example, workers: usize) -> Vec<String> {
    let e = engine(workers);
    let def = Definition::parse(&example.definition)
        .unwrap_or_else(|err| panic!("example `{}` does not parse: {err}", example.name));
    e.install_text(&example.definition)
        .unwrap_or_else(|err| panic!("example `{}` does not install: {err}", example.name));
    let mut subs = Vec::new();
    for (expect, _, _) in &example.expected {
        subs.push(match expect {
            Expect::Output(o) => Ok(e.subscribe_local(&def.name, o).expect("output exists")),
            Expect::Topic(t) => Err(e.subscribe_topic(t).expect("topic exists")),
        });
    }
    for (topic, events) in &example.inputs {
        e.publish_json(topic, events)
            .unwrap_or_else(|err| panic!("example `{}`: input refused: {err}", example.name));
    }
    let mut topics: Vec<&str> = def.inputs.iter().map(|i| i.topic.as_str()).collect();
    topics.dedup();
    for t in topics {
        e.advance_watermark_local(t, example.settle).expect("topic");
    }
    assert!(
        e.wait_until(&def.name, example.settle - 1, Duration::from_secs(30))
            .expect("dataflow"),
        "example `{}` did not settle",
        example.name
    );
    let mut failures = Vec::new();
    for ((expect, want, line), sub) in example.expected.iter().zip(&subs) {
        let got = match sub {
            Ok(s) => consolidate(&drain(s)),
            Err(s) => consolidate(&topic_rows(s)),
        };
        let what = match expect {
            Expect::Output(o) => format!("output={o}"),
            Expect::Topic(t) => format!("topic={t}"),
        };
        if std::env::var_os("DOC_EXAMPLES_PRINT").is_some() {
            println!("--- {} {what} (workers={workers})", example.name);
            for (r, d) in &got {
                if *d == 1 {
                    println!("{r}");
                } else {
                    println!("{{\"row\": {r}, \"diff\": {d}}}");
                }
            }
        }
        if &got != want {
            failures.push(format!(
                "example `{}` {what} (doc line {line}, workers={workers}):\n  expected {want:?}\n  got      {got:?}",
                example.name
            ));
        }
    }
    failures
}

#[test]
fn every_documented_example_produces_its_documented_output() {
    let examples = examples();
    assert!(
        examples.len() >= 20,
        "found only {} examples",
        examples.len()
    );
    let mut failures = Vec::new();
    for ex in &examples {
        assert!(!ex.inputs.is_empty(), "example `{}` has no input", ex.name);
        assert!(
            !ex.expected.is_empty(),
            "example `{}` has no expected output",
            ex.name
        );
        for workers in [1, 2] {
            failures.extend(run(ex, workers));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_operator_and_function_has_an_example() {
    let examples = examples();
    let all: String = examples.iter().map(|e| e.definition.as_str()).collect();
    for op in [
        "op: map",
        "op: project",
        "op: filter",
        "op: key_by",
        "kind: tumbling",
        "kind: sliding",
        "kind: session",
        "fn: count",
        "fn: sum",
        "fn: min",
        "fn: max",
        "fn: avg",
        "fn: count_distinct",
        "fn: top_k",
        "kind: interval",
        "kind: table",
        "op: distinct",
        "op: union",
        "op: publish",
        "op: trigger",
        "emit: updates",
    ] {
        assert!(all.contains(op), "no documented example uses `{op}`");
    }
}

#[test]
fn the_convention_parser_reads_attributes() {
    let doc = "```json expect=x output=y\n[1]\n{\"row\": [2], \"diff\": -1}\n```\n";
    let b = &blocks(doc)[0];
    assert_eq!(b.attrs.get("expect").map(String::as_str), Some("x"));
    assert_eq!(b.attrs.get("output").map(String::as_str), Some("y"));
    assert_eq!(expected_rows(b).get("[2]"), Some(&-1));
    assert_eq!(expected_rows(b).get("[1]"), Some(&1));
}
