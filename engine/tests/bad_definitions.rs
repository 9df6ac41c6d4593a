//! Bad definitions: each kind of mistake is refused with its own `PlanError` variant, a
//! message naming the node (or topic, or output) and the field, and leaves nothing behind
//! (no topic, no dataflow). A property test throws random mutations of a valid definition at
//! `install_text`: errors are fine, panics are not.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use starling_engine::operators::definition::ParseError;
use starling_engine::operators::duration::DurationError;
use starling_engine::operators::plan::PlanError;
use starling_engine::{Engine, EngineError};

/// The clicks topic and one input `c` reading it; tests append `nodes:` and `outputs:`.
const HEAD: &str = r#"
name: bad
topics:
  - name: clicks
    key: user
    time: ts
    fields:
      - {name: user, type: string}
      - {name: page, type: string}
      - {name: ts, type: timestamp}
      - {name: amount, type: int, optional: true, default: 1}
inputs:
  - {id: c, topic: clicks}
"#;

/// A valid definition using most operators (the base of the mutation test).
const VALID: &str = r#"
name: good
topics:
  - name: clicks
    key: user
    time: ts
    fields:
      - {name: user, type: string}
      - {name: page, type: string}
      - {name: ts, type: timestamp}
      - {name: amount, type: int, optional: true, default: 1}
  - name: profiles
    key: user
    time: ts
    fields:
      - {name: user, type: string}
      - {name: ts, type: timestamp}
      - {name: country, type: string}
inputs:
  - id: c
    topic: clicks
    watermark: {max_delay: 1s, idle_timeout: 0s, allowed_lateness: 10s}
  - {id: p, topic: profiles}
nodes:
  - {id: f, op: filter, input: c, where: "amount > 0"}
  - {id: m, op: map, input: f, fields: [{user: user}, {page: page}, {ts: ts}, {amount: amount * 2}]}
  - {id: w, op: window, input: m, kind: sliding, size: 10s, slide: 5s}
  - id: a
    op: aggregate
    input: w
    aggregates:
      - {name: n, fn: count}
      - {name: total, fn: sum, expr: amount}
      - {name: top, fn: top_k, expr: page, k: 3}
  - {id: t, op: trigger, input: a, when: "n > 10", topic: alerts}
  - {id: j, op: join, kind: table, left: c, right: p}
  - {id: d, op: distinct, input: m, ttl: 1m}
  - {id: pub, op: publish, input: j, topic: enriched}
outputs:
  - {name: counts, from: a, emit: final}
  - {name: firsts, from: d}
"#;

fn with(body: &str) -> String {
    format!("{HEAD}{body}")
}

/// What the engine holds: topic names and dataflow names.
fn snapshot(e: &Engine) -> (Vec<String>, Vec<String>) {
    (
        e.topics().into_iter().map(|t| t.spec.name).collect(),
        e.dataflows().into_iter().map(|d| d.name).collect(),
    )
}

/// Installs `text` on a fresh engine, expects a plan error, checks that nothing was left
/// behind and that the message contains every one of `mentions`.
fn refuse(text: &str, mentions: &[&str]) -> PlanError {
    let e = engine(1);
    refuse_on(&e, text, mentions)
}

fn refuse_on(e: &Engine, text: &str, mentions: &[&str]) -> PlanError {
    let before = snapshot(e);
    let err = match e.install_text(text) {
        Ok(info) => panic!("definition `{}` was accepted:\n{text}", info.name),
        Err(EngineError::Plan(p)) => p,
        Err(other) => panic!("expected a plan error, got {other:?}"),
    };
    let msg = err.to_string();
    for m in mentions {
        assert!(msg.contains(m), "message `{msg}` does not mention `{m}`");
    }
    assert_eq!(
        snapshot(e),
        before,
        "a refused install left something behind ({msg})"
    );
    err
}

#[test]
fn unknown_operator() {
    let err = refuse(
        &with("nodes:\n  - {id: f, op: flter, input: c, where: 'true'}\n"),
        &["nodes", "flter"],
    );
    assert!(
        matches!(err, PlanError::Parse(ParseError::Yaml(_))),
        "{err:?}"
    );
}

#[test]
fn unknown_field_in_a_node() {
    let err = refuse(
        &with("nodes:\n  - {id: f, op: filter, input: c, wher: 'amount > 1'}\n"),
        &["nodes", "wher"],
    );
    assert!(
        matches!(err, PlanError::Parse(ParseError::Yaml(_))),
        "{err:?}"
    );
}

#[test]
fn unknown_field_in_json() {
    let text = r#"{"name": "j", "inputs": [{"id": "c", "topic": "clicks", "watermak": {}}]}"#;
    let err = refuse(text, &["watermak"]);
    assert!(
        matches!(err, PlanError::Parse(ParseError::Json(_))),
        "{err:?}"
    );
}

#[test]
fn missing_input_reference() {
    let err = refuse(
        &with("nodes:\n  - {id: f, op: filter, input: nope, where: 'true'}\n"),
        &["`f`", "`input`", "`nope`"],
    );
    assert!(
        matches!(&err, PlanError::UnknownNode { node, field: "input", target, .. } if node == "f" && target == "nope"),
        "{err:?}"
    );
}

#[test]
fn missing_join_side() {
    let err = refuse(
        &with("nodes:\n  - {id: j, op: join, kind: table, left: c, right: ghost}\n"),
        &["`j`", "`right`", "`ghost`"],
    );
    assert!(
        matches!(&err, PlanError::UnknownNode { field: "right", .. }),
        "{err:?}"
    );
}

#[test]
fn unknown_topic() {
    let err = refuse(
        "name: x\ninputs:\n  - {id: c, topic: nope}\n",
        &["`c`", "`nope`"],
    );
    assert!(
        matches!(&err, PlanError::UnknownTopic { node, topic } if node == "c" && topic == "nope"),
        "{err:?}"
    );
}

#[test]
fn two_node_cycle() {
    let err = refuse(
        &with(
            "nodes:\n  - {id: a, op: filter, input: b, where: 'true'}\n  - {id: b, op: filter, input: a, where: 'true'}\n",
        ),
        &["cycle", "a", "b"],
    );
    match err {
        PlanError::Cycle { nodes } => {
            assert!(nodes.contains(&"a".to_string()) && nodes.contains(&"b".to_string()))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn three_node_cycle() {
    let err = refuse(
        &with(
            "nodes:\n  - {id: x, op: filter, input: z, where: 'true'}\n  - {id: y, op: filter, input: x, where: 'true'}\n  - {id: z, op: filter, input: y, where: 'true'}\n  - {id: ok, op: filter, input: c, where: 'true'}\n",
        ),
        &["x", "y", "z"],
    );
    match err {
        PlanError::Cycle { nodes } => {
            for n in ["x", "y", "z"] {
                assert!(nodes.contains(&n.to_string()), "{nodes:?}");
            }
            assert!(!nodes.contains(&"ok".to_string()), "{nodes:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn self_loop() {
    let err = refuse(
        &with("nodes:\n  - {id: s, op: filter, input: s, where: 'true'}\n"),
        &["s"],
    );
    assert!(matches!(err, PlanError::Cycle { .. }), "{err:?}");
}

#[test]
fn duplicate_node_id() {
    let err = refuse(
        &with(
            "nodes:\n  - {id: f, op: filter, input: c, where: 'true'}\n  - {id: f, op: filter, input: c, where: 'false'}\n",
        ),
        &["`f`"],
    );
    assert!(
        matches!(&err, PlanError::DuplicateId { id } if id == "f"),
        "{err:?}"
    );
    // A node may not reuse an input's id either.
    let err = refuse(
        &with("nodes:\n  - {id: c, op: filter, input: c, where: 'true'}\n"),
        &["`c`"],
    );
    assert!(
        matches!(&err, PlanError::DuplicateId { id } if id == "c"),
        "{err:?}"
    );
}

#[test]
fn duplicate_output() {
    let err = refuse(
        &with("outputs:\n  - {name: out, from: c}\n  - {name: out, from: c}\n"),
        &["`out`"],
    );
    assert!(
        matches!(&err, PlanError::DuplicateOutput { name } if name == "out"),
        "{err:?}"
    );
}

#[test]
fn duplicate_topic() {
    let text = HEAD.replace(
        "inputs:",
        "  - name: clicks\n    time: ts\n    fields: [{name: ts, type: int}]\ninputs:",
    );
    let err = refuse(&text, &["`clicks`"]);
    assert!(
        matches!(&err, PlanError::DuplicateTopic { name } if name == "clicks"),
        "{err:?}"
    );
}

fn window(extra: &str) -> String {
    with(&format!(
        "nodes:\n  - {{id: w, op: window, input: c, {extra}}}\n  - {{id: a, op: aggregate, input: w, aggregates: [{{name: n, fn: count}}]}}\n"
    ))
}

#[test]
fn negative_duration() {
    let err = refuse(
        &window("kind: tumbling, size: -5s"),
        &["`w`", "`size`", "-5s"],
    );
    assert!(
        matches!(&err, PlanError::BadDuration { node, field: "size", error: DurationError::Negative(_) } if node == "w"),
        "{err:?}"
    );
}

#[test]
fn malformed_duration() {
    for bad in ["10", "1.5s", "10 parsecs", "s10", "5x"] {
        let err = refuse(
            &window(&format!("kind: session, gap: '{bad}'")),
            &["`w`", "`gap`", bad],
        );
        assert!(
            matches!(
                &err,
                PlanError::BadDuration {
                    field: "gap",
                    error: DurationError::Malformed(_),
                    ..
                }
            ),
            "{bad}: {err:?}"
        );
    }
    // Watermark durations name the input and the watermark field.
    let text = HEAD.replace(
        "  - {id: c, topic: clicks}",
        "  - {id: c, topic: clicks, watermark: {max_delay: soon}}",
    );
    let err = refuse(&text, &["`c`", "watermark.max_delay", "soon"]);
    assert!(
        matches!(&err, PlanError::BadDuration { node, field: "watermark.max_delay", .. } if node == "c"),
        "{err:?}"
    );
}

#[test]
fn empty_and_huge_durations() {
    let err = refuse(&window("kind: tumbling, size: ''"), &["`size`"]);
    assert!(
        matches!(
            &err,
            PlanError::BadDuration {
                error: DurationError::Empty(_),
                ..
            }
        ),
        "{err:?}"
    );
    let err = refuse(&window("kind: tumbling, size: 99999999999d"), &["`size`"]);
    assert!(
        matches!(
            &err,
            PlanError::BadDuration {
                error: DurationError::TooLarge(_),
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn zero_window_size() {
    let err = refuse(
        &window("kind: tumbling, size: 0s"),
        &["`w`", "`size`", "zero"],
    );
    assert!(
        matches!(&err, PlanError::InvalidParameter { node, field: "size", .. } if node == "w"),
        "{err:?}"
    );
    let err = refuse(&window("kind: session, gap: 0ms"), &["`gap`"]);
    assert!(
        matches!(&err, PlanError::InvalidParameter { field: "gap", .. }),
        "{err:?}"
    );
}

#[test]
fn sliding_slide_not_dividing_size() {
    let err = refuse(
        &window("kind: sliding, size: 10s, slide: 3s"),
        &["`w`", "`slide`", "divide"],
    );
    assert!(
        matches!(&err, PlanError::InvalidParameter { field: "slide", .. }),
        "{err:?}"
    );
    let err = refuse(
        &window("kind: sliding, size: 10s, slide: 20s"),
        &["`slide`"],
    );
    assert!(
        matches!(&err, PlanError::InvalidParameter { field: "slide", .. }),
        "{err:?}"
    );
    let err = refuse(&window("kind: sliding, size: 1h, slide: 1ms"), &["`slide`"]);
    assert!(
        matches!(&err, PlanError::InvalidParameter { field: "slide", .. }),
        "{err:?}"
    );
}

#[test]
fn window_fields_of_another_kind() {
    let err = refuse(
        &window("kind: tumbling, size: 10s, gap: 1s"),
        &["`w`", "`gap`"],
    );
    assert!(
        matches!(&err, PlanError::InvalidParameter { field: "gap", .. }),
        "{err:?}"
    );
    let err = refuse(&window("kind: sliding, size: 10s"), &["`w`", "`slide`"]);
    assert!(
        matches!(&err, PlanError::MissingField { field: "slide", .. }),
        "{err:?}"
    );
}

#[test]
fn window_feeding_a_filter() {
    let err = refuse(
        &with(
            "nodes:\n  - {id: w, op: window, input: c, kind: tumbling, size: 10s}\n  - {id: f, op: filter, input: w, where: 'true'}\n",
        ),
        &["`w`", "`f`", "filter"],
    );
    assert!(
        matches!(&err, PlanError::WindowNotAggregated { window, consumer, op } if window == "w" && consumer == "f" && op == "filter"),
        "{err:?}"
    );
}

#[test]
fn non_boolean_filter() {
    let err = refuse(
        &with("nodes:\n  - {id: f, op: filter, input: c, where: 'amount + 1'}\n"),
        &["`f`", "`where`", "boolean", "int"],
    );
    assert!(
        matches!(&err, PlanError::TypeMismatch { node, field, .. } if node == "f" && field == "where"),
        "{err:?}"
    );
}

#[test]
fn unknown_field_in_an_expression() {
    let err = refuse(
        &with("nodes:\n  - {id: f, op: filter, input: c, where: \"usr = 'ann'\"}\n"),
        &["`f`", "`where`", "usr"],
    );
    assert!(
        matches!(&err, PlanError::Expression { node, field, .. } if node == "f" && field == "where"),
        "{err:?}"
    );
    let err = refuse(
        &with("nodes:\n  - {id: m, op: map, input: c, fields: [{x: 'nope * 2'}]}\n"),
        &["`m`", "fields.x", "nope"],
    );
    assert!(
        matches!(&err, PlanError::Expression { field, .. } if field == "fields.x"),
        "{err:?}"
    );
}

#[test]
fn expression_syntax_error() {
    let err = refuse(
        &with("nodes:\n  - {id: k, op: key_by, input: c, key: 'user +'}\n"),
        &["`k`", "`key`"],
    );
    assert!(
        matches!(&err, PlanError::Expression { field, .. } if field == "key"),
        "{err:?}"
    );
}

fn aggregate(aggs: &str) -> String {
    with(&format!(
        "nodes:\n  - {{id: w, op: window, input: c, kind: tumbling, size: 10s}}\n  - {{id: a, op: aggregate, input: w, aggregates: [{aggs}]}}\n"
    ))
}

#[test]
fn sum_over_a_string() {
    let err = refuse(
        &aggregate("{name: total, fn: sum, expr: page}"),
        &["`a`", "aggregates.total", "numeric", "string"],
    );
    assert!(
        matches!(&err, PlanError::TypeMismatch { node, field, .. } if node == "a" && field == "aggregates.total"),
        "{err:?}"
    );
    let err = refuse(
        &aggregate("{name: mean, fn: avg, expr: user}"),
        &["aggregates.mean"],
    );
    assert!(matches!(&err, PlanError::TypeMismatch { .. }), "{err:?}");
}

#[test]
fn top_k_without_k() {
    let err = refuse(
        &aggregate("{name: top, fn: top_k, expr: page}"),
        &["`a`", "`k`", "top_k"],
    );
    assert!(
        matches!(&err, PlanError::MissingField { node, field: "k", .. } if node == "a"),
        "{err:?}"
    );
    let err = refuse(
        &aggregate("{name: top, fn: top_k, expr: page, k: 0}"),
        &["`k`"],
    );
    assert!(
        matches!(&err, PlanError::InvalidParameter { field: "k", .. }),
        "{err:?}"
    );
    let err = refuse(&aggregate("{name: n, fn: count, k: 3}"), &["`k`"]);
    assert!(
        matches!(&err, PlanError::InvalidParameter { field: "k", .. }),
        "{err:?}"
    );
}

#[test]
fn aggregate_without_expr_or_with_a_taken_name() {
    let err = refuse(&aggregate("{name: s, fn: sum}"), &["`a`", "`expr`"]);
    assert!(
        matches!(&err, PlanError::MissingField { field: "expr", .. }),
        "{err:?}"
    );
    let err = refuse(
        &aggregate("{name: window_end, fn: count}"),
        &["`a`", "window_end"],
    );
    assert!(
        matches!(
            &err,
            PlanError::InvalidParameter {
                field: "aggregates",
                ..
            }
        ),
        "{err:?}"
    );
    let err = refuse(&aggregate(""), &["`a`", "`aggregates`"]);
    assert!(
        matches!(
            &err,
            PlanError::MissingField {
                field: "aggregates",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn trigger_on_a_non_aggregate() {
    let err = refuse(
        &with(
            "nodes:\n  - {id: f, op: filter, input: c, where: 'true'}\n  - {id: t, op: trigger, input: f, when: 'amount > 1', topic: alerts}\n",
        ),
        &["`t`", "`input`", "`f`"],
    );
    assert!(
        matches!(&err, PlanError::InvalidParameter { node, field: "input", .. } if node == "t"),
        "{err:?}"
    );
}

#[test]
fn union_with_different_schemas() {
    let err = refuse(
        &with(
            "nodes:\n  - {id: m, op: map, input: c, fields: [{user: user}]}\n  - {id: u, op: union, inputs: [c, m]}\n",
        ),
        &["`u`", "`c`", "`m`"],
    );
    assert!(
        matches!(&err, PlanError::SchemaMismatch { node, .. } if node == "u"),
        "{err:?}"
    );
    let err = refuse(
        &with("nodes:\n  - {id: u, op: union, inputs: [c]}\n"),
        &["`u`", "`inputs`"],
    );
    assert!(
        matches!(
            &err,
            PlanError::InvalidParameter {
                field: "inputs",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn join_with_different_key_types() {
    let err = refuse(
        &with(
            "nodes:\n  - {id: k, op: key_by, input: c, key: amount}\n  - {id: j, op: join, kind: interval, left: c, right: k, within: 5s}\n",
        ),
        &["`j`", "`right`", "string", "int"],
    );
    assert!(
        matches!(&err, PlanError::TypeMismatch { node, field, .. } if node == "j" && field == "right"),
        "{err:?}"
    );
}

#[test]
fn interval_join_without_within_or_on_an_aggregate() {
    let err = refuse(
        &with("nodes:\n  - {id: j, op: join, kind: interval, left: c, right: c}\n"),
        &["`j`", "`within`"],
    );
    assert!(
        matches!(
            &err,
            PlanError::MissingField {
                field: "within",
                ..
            }
        ),
        "{err:?}"
    );
    let err = refuse(
        &with(
            "nodes:\n  - {id: a, op: aggregate, input: c, aggregates: [{name: n, fn: count}]}\n  - {id: j, op: join, kind: interval, left: c, right: a, within: 1s}\n",
        ),
        &["`j`"],
    );
    assert!(
        matches!(&err, PlanError::InvalidParameter { .. }),
        "{err:?}"
    );
    let err = refuse(
        &with("nodes:\n  - {id: j, op: join, kind: table, left: c, right: c, within: 1s}\n"),
        &["`j`", "`within`"],
    );
    assert!(
        matches!(
            &err,
            PlanError::InvalidParameter {
                field: "within",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn emit_final_without_a_window() {
    let err = refuse(
        &with(
            "nodes:\n  - {id: a, op: aggregate, input: c, emit: final, aggregates: [{name: n, fn: count}]}\n",
        ),
        &["`a`", "`emit`", "window"],
    );
    assert!(
        matches!(&err, PlanError::InvalidParameter { node, field: "emit", .. } if node == "a"),
        "{err:?}"
    );
}

#[test]
fn output_emit_mismatch() {
    let err = refuse(
        &with(
            "nodes:\n  - {id: a, op: aggregate, input: c, aggregates: [{name: n, fn: count}]}\noutputs:\n  - {name: out, from: a, emit: final}\n",
        ),
        &["`out`", "`a`", "final", "updates"],
    );
    assert!(
        matches!(&err, PlanError::EmitMismatch { output, node, .. } if output == "out" && node == "a"),
        "{err:?}"
    );
}

fn topic_with(field_lines: &str, time: &str) -> String {
    format!(
        "name: t\ntopics:\n  - name: events\n    time: {time}\n    fields:\n{field_lines}inputs:\n  - {{id: i, topic: events}}\n"
    )
}

#[test]
fn bad_topic_type_name() {
    let err = refuse(
        &topic_with(
            "      - {name: ts, type: timestamp}\n      - {name: amount, type: integr}\n",
            "ts",
        ),
        &["`events`", "`amount`", "integr"],
    );
    assert!(
        matches!(&err, PlanError::BadTopic { topic, field, .. } if topic == "events" && field == "amount"),
        "{err:?}"
    );
}

#[test]
fn time_field_of_wrong_type() {
    let err = refuse(
        &topic_with("      - {name: ts, type: string}\n", "ts"),
        &["`events`", "`time`", "string"],
    );
    assert!(
        matches!(&err, PlanError::BadTopic { field, .. } if field == "time"),
        "{err:?}"
    );
    let err = refuse(
        &topic_with(
            "      - {name: ts, type: timestamp, optional: true}\n",
            "ts",
        ),
        &["`time`", "optional"],
    );
    assert!(
        matches!(&err, PlanError::BadTopic { field, .. } if field == "time"),
        "{err:?}"
    );
    let err = refuse(
        &topic_with("      - {name: ts, type: timestamp}\n", "when"),
        &["`time`", "`when`"],
    );
    assert!(
        matches!(&err, PlanError::BadTopic { field, .. } if field == "time"),
        "{err:?}"
    );
}

#[test]
fn default_on_a_required_field() {
    let err = refuse(
        &topic_with(
            "      - {name: ts, type: timestamp}\n      - {name: n, type: int, default: 3}\n",
            "ts",
        ),
        &["`events`", "`n`", "optional"],
    );
    assert!(
        matches!(&err, PlanError::BadTopic { field, .. } if field == "n"),
        "{err:?}"
    );
    let err = refuse(
        &topic_with(
            "      - {name: ts, type: timestamp}\n      - {name: n, type: int, optional: true, default: three}\n",
            "ts",
        ),
        &["`n`", "default"],
    );
    assert!(
        matches!(&err, PlanError::BadTopic { field, .. } if field == "n"),
        "{err:?}"
    );
}

#[test]
fn key_not_a_field_and_no_fields() {
    let text = topic_with("      - {name: ts, type: timestamp}\n", "ts")
        .replace("    time: ts", "    key: user\n    time: ts");
    let err = refuse(&text, &["`events`", "`key`", "user"]);
    assert!(
        matches!(&err, PlanError::BadTopic { field, .. } if field == "key"),
        "{err:?}"
    );
    let err = refuse(&topic_with("      []\n", "ts"), &["`events`", "`fields`"]);
    assert!(
        matches!(&err, PlanError::BadTopic { field, .. } if field == "fields"),
        "{err:?}"
    );
}

#[test]
fn redeclaring_an_existing_topic_differently() {
    let e = engine(1);
    e.install_text(&with("outputs:\n  - {name: out, from: c}\n"))
        .expect("valid");
    let text = "name: other\ntopics:\n  - name: clicks\n    time: ts\n    fields: [{name: ts, type: int}]\n  - name: fresh\n    time: ts\n    fields: [{name: ts, type: int}]\ninputs:\n  - {id: c, topic: clicks}\n";
    let err = refuse_on(&e, text, &["`clicks`"]);
    assert!(
        matches!(&err, PlanError::BadTopic { topic, .. } if topic == "clicks"),
        "{err:?}"
    );
    assert!(e.topics().iter().all(|t| t.spec.name != "fresh"));
}

#[test]
fn output_from_unknown_node() {
    let err = refuse(
        &with("outputs:\n  - {name: out, from: ghost}\n"),
        &["output out", "`from`", "`ghost`"],
    );
    assert!(
        matches!(&err, PlanError::UnknownNode { field: "from", target, .. } if target == "ghost"),
        "{err:?}"
    );
}

#[test]
fn invalid_names() {
    let cases: [(String, &str, &str); 6] = [
        (
            HEAD.replace("name: bad", "name: '1abc'"),
            "definition",
            "1abc",
        ),
        (HEAD.replace("name: bad", "name: ''"), "definition", ""),
        (
            with("nodes:\n  - {id: 'bad id', op: filter, input: c, where: 'true'}\n"),
            "node",
            "bad id",
        ),
        (
            with("outputs:\n  - {name: 'out/1', from: c}\n"),
            "output",
            "out/1",
        ),
        (
            HEAD.replace("- name: clicks", "- name: 'cl icks'")
                .replace("topic: clicks", "topic: 'cl icks'"),
            "topic",
            "cl icks",
        ),
        (
            with(&format!(
                "nodes:\n  - {{id: {}, op: filter, input: c, where: 'true'}}\n",
                "n".repeat(129)
            )),
            "node",
            "",
        ),
    ];
    for (text, what_want, name_want) in cases {
        let err = refuse(&text, &[what_want]);
        match &err {
            PlanError::InvalidName { what, name } => {
                assert_eq!(*what, what_want);
                assert!(name.starts_with(name_want), "{name}");
            }
            other => panic!("{what_want} `{name_want}`: {other:?}"),
        }
    }
    // Map output fields and late topics follow the same rule.
    let err = refuse(
        &with("nodes:\n  - {id: m, op: map, input: c, fields: [{'a b': user}]}\n"),
        &["field", "a b"],
    );
    assert!(
        matches!(&err, PlanError::InvalidName { what: "field", .. }),
        "{err:?}"
    );
    let err = refuse(
        &format!("{HEAD}late_topic: 'late topic'\n"),
        &["late topic"],
    );
    assert!(
        matches!(&err, PlanError::InvalidName { what: "topic", .. }),
        "{err:?}"
    );
}

#[test]
fn empty_inputs() {
    let err = refuse("name: x\ninputs: []\n", &["inputs"]);
    assert!(matches!(err, PlanError::NoInputs), "{err:?}");
    // Missing `inputs` entirely is a parse error naming the field.
    let err = refuse("name: x\n", &["inputs"]);
    assert!(matches!(err, PlanError::Parse(_)), "{err:?}");
}

#[test]
fn too_many_nodes() {
    let mut text = with("nodes:\n");
    for i in 0..1000 {
        text.push_str(&format!(
            "  - {{id: f{i}, op: filter, input: c, where: 'true'}}\n"
        ));
    }
    let err = refuse(&text, &["1001", "1000"]);
    assert!(
        matches!(
            err,
            PlanError::TooMany {
                count: 1001,
                limit: 1000,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn huge_definition_over_one_mib() {
    let text = format!("{HEAD}description: '{}'\n", "x".repeat(1 << 20));
    let err = refuse(&text, &["bytes", "limit"]);
    assert!(
        matches!(
            err,
            PlanError::Parse(ParseError::TooLarge {
                limit: 1_048_576,
                ..
            })
        ),
        "{err:?}"
    );
    let json = format!("{{\"name\": \"{}\"}}", "y".repeat(1 << 20));
    let err = refuse(&json, &["limit"]);
    assert!(
        matches!(err, PlanError::Parse(ParseError::TooLarge { .. })),
        "{err:?}"
    );
}

#[test]
fn deeply_nested_yaml_and_json() {
    let depth = 100_000;
    let yaml = format!(
        "{HEAD}description: {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let err = refuse(&yaml, &[]);
    assert!(
        matches!(err, PlanError::Parse(ParseError::Yaml(_))),
        "{err:?}"
    );
    let json = format!("{{\"name\": {}{}}}", "[".repeat(depth), "]".repeat(depth));
    let err = refuse(&json, &[]);
    assert!(
        matches!(err, PlanError::Parse(ParseError::Json(_))),
        "{err:?}"
    );
    let block = format!(
        "{HEAD}description:\n{}",
        (0..2000)
            .map(|i| format!("{}- \n", "  ".repeat(i + 1)))
            .collect::<String>()
    );
    let err = refuse(&block, &[]);
    assert!(matches!(err, PlanError::Parse(_)), "{err:?}");
}

#[test]
fn garbage_and_binary_bytes() {
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for text in [
        String::from_utf8_lossy(&bytes).into_owned(),
        "\u{0}\u{1}\u{2}\u{feff}".into(),
        "{".into(),
        "}".into(),
        "".into(),
        "---\n...\n".into(),
        "- just\n- a list\n".into(),
        "name: [unterminated".into(),
        "&a [*a]".into(),
        "a: &x 1\nb: *y\n".into(),
    ] {
        let err = refuse(&text, &[]);
        assert!(matches!(err, PlanError::Parse(_)), "{text:?}: {err:?}");
    }
}

#[test]
fn yaml_alias_bombs_are_refused() {
    // Billion laughs: aliases expanding exponentially must not exhaust memory.
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let err = refuse(&text, &[]);
    assert!(matches!(err, PlanError::Parse(_)), "{err:?}");
}

/// Bug found while writing these tests: a late (or dead-letter) topic that is also the
/// target of a `publish`/`trigger` in the same definition was accepted, so late records were
/// written into a topic with the publish schema. It must be refused like an existing topic
/// with the wrong schema is.
#[test]
fn late_topic_that_is_also_a_publish_target() {
    let err = refuse(
        &format!(
            "{HEAD}nodes:\n  - {{id: p, op: publish, input: c, topic: out}}\nlate_topic: out\n"
        ),
        &["`out`"],
    );
    assert!(
        matches!(&err, PlanError::BadTopic { topic, .. } if topic == "out"),
        "{err:?}"
    );
    let err = refuse(
        &format!(
            "{HEAD}nodes:\n  - {{id: p, op: publish, input: c, topic: out}}\ndead_letter_topic: out\n"
        ),
        &["`out`"],
    );
    assert!(
        matches!(&err, PlanError::BadTopic { topic, .. } if topic == "out"),
        "{err:?}"
    );
}

#[test]
fn publish_to_an_existing_topic_with_other_fields() {
    let err = refuse(
        &with("nodes:\n  - {id: m, op: map, input: c, fields: [{x: 1}]}\n  - {id: p, op: publish, input: m, topic: clicks}\n"),
        &["clicks"],
    );
    assert!(matches!(&err, PlanError::SchemaMismatch { .. }), "{err:?}");
}

#[test]
fn the_valid_base_installs_and_a_second_install_is_refused() {
    let e = engine(1);
    e.install_text(VALID).expect("the base definition is valid");
    let before = snapshot(&e);
    match e.install_text(VALID) {
        Err(EngineError::DataflowExists(n)) => assert_eq!(n, "good"),
        other => panic!("{other:?}"),
    }
    assert_eq!(snapshot(&e), before);
}

/// One random edit of a definition's text.
#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    DropLine(usize),
    DuplicateLine(usize),
    SwapWord(usize, &'static str),
}

fn edit() -> impl Strategy<Value = Edit> {
    let word = prop::sample::select(vec![
        "c",
        "w",
        "a",
        "m",
        "-1s",
        "0s",
        "[",
        "{",
        "}",
        ":",
        "- ",
        "'",
        "\"",
        "op: window",
        "kind: session",
        "null",
        "~",
        "&x",
        "*x",
        "\t",
        "\u{0}",
        "é",
        "input: a",
        "9999999999999999999",
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Flip(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Insert(p, b)),
        (any::<usize>(), 1usize..40).prop_map(|(p, n)| Edit::Delete(p, n)),
        any::<usize>().prop_map(Edit::DropLine),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), word).prop_map(|(p, w)| Edit::SwapWord(p, w)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for e in edits {
        let len = bytes.len().max(1);
        match e {
            Edit::Flip(p, b) => {
                if !bytes.is_empty() {
                    let i = p % bytes.len();
                    bytes[i] ^= b | 1;
                }
            }
            Edit::Insert(p, b) => bytes.insert(p % (bytes.len() + 1), *b),
            Edit::Delete(p, n) => {
                let i = p % len;
                let end = (i + n).min(bytes.len());
                if i < end {
                    bytes.drain(i..end);
                }
            }
            Edit::DropLine(p) | Edit::DuplicateLine(p) => {
                let s = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let i = p % lines.len();
                    if matches!(e, Edit::DropLine(_)) {
                        lines.remove(i);
                    } else {
                        lines.insert(i, lines[i]);
                    }
                }
                bytes = lines.join("\n").into_bytes();
            }
            Edit::SwapWord(p, w) => {
                let i = p % len;
                let i = i.min(bytes.len());
                let end = bytes[i..]
                    .iter()
                    .position(|b| !b.is_ascii_alphanumeric() && *b != b'_')
                    .map_or(bytes.len(), |k| i + k);
                bytes.splice(i..end, w.bytes());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn random_mutations_never_panic_and_failures_leave_nothing() {
    let e = engine(2);
    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    let accepted = std::cell::Cell::new(0usize);
    let refused = std::cell::Cell::new(0usize);
    runner
        .run(&prop::collection::vec(edit(), 1..5), |edits| {
            let text = apply(VALID, &edits);
            let before = snapshot(&e);
            match e.install_text(&text) {
                Ok(info) => {
                    accepted.set(accepted.get() + 1);
                    e.drop_dataflow_local(&info.name)
                        .expect("drop what was installed");
                }
                Err(err) => {
                    refused.set(refused.get() + 1);
                    // Every refusal has a message.
                    prop_assert!(!err.to_string().is_empty());
                    prop_assert_eq!(
                        snapshot(&e),
                        before,
                        "refused install left something: {}",
                        err
                    );
                }
            }
            Ok(())
        })
        .expect("no mutation panics or leaks");
    let (accepted, refused) = (accepted.get(), refused.get());
    assert!(
        refused > 0 && accepted + refused == 512,
        "{accepted} accepted, {refused} refused"
    );
}

/// A dataflow that writes into a topic it reads would loop forever: refused at submit.
#[test]
fn writing_into_an_own_input_topic_is_refused() {
    use starling_engine::operators::plan::PlanError;
    use starling_engine::{Engine, EngineConfig, EngineError};
    let e = Engine::start(EngineConfig {
        workers: 1,
        ..EngineConfig::default()
    })
    .unwrap();
    let base = r#"
name: loop
topics:
  - name: t
    key: k
    time: ts
    fields:
      - {name: k, type: string}
      - {name: ts, type: timestamp}
inputs:
  - {id: i, topic: t}
"#;
    let publish = format!("{base}nodes:\n  - {{id: back, op: publish, input: i, topic: t}}\n");
    match e.install_text(&publish) {
        Err(EngineError::Plan(PlanError::InvalidParameter {
            node,
            field,
            message,
        })) => {
            assert_eq!((node.as_str(), field), ("back", "topic"));
            assert!(message.contains("read by input `i`"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let late = format!("{base}late_topic: t\n");
    match e.install_text(&late) {
        Err(EngineError::Plan(PlanError::BadTopic { topic, .. })) => assert_eq!(topic, "t"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(e.topics().is_empty() && e.dataflows().is_empty());
}
