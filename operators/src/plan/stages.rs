//! Cutting a definition into stages for a cluster (ARCHITECTURE §5, "repartition").
//!
//! On one node every keyed operator sees every event of its key, because timely exchanges by
//! key between the workers. In a cluster each node runs a dataflow over the shards it owns, so
//! a record whose key changes (`key_by`: a join on another key, a global aggregate, top-k by
//! a new key) must travel to the node that owns its new key. The graph is therefore cut at
//! every `key_by`: the producing stage publishes the re-keyed records into an internal topic,
//! routed by key like any topic, and the next stage reads that topic on every node.
//!
//! The rule is on edges: a node's *stage* is the number of `key_by`s on the longest path from
//! an input to it (a `key_by` itself stays in its input's stage; its readers are one stage
//! later). Every edge from an earlier stage into a later one becomes an internal topic
//! `_rp.<dataflow>.<node>`, keyed by the key the records already carry, so that records that
//! must meet (the two sides of a join) meet on the owner of their common key.
//!
//! A later stage's inputs move only by explicit watermark marks (their `max_delay` is
//! effectively infinite and they never idle forward): the cluster layer advances them to the
//! smallest watermark every producing node reported, once the records before it arrived. That
//! keeps event-time results exact across nodes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::definition::{Definition, InputDef, NodeDef, OutputDef, PublishDef, WatermarkDef};

/// One stage of a cut definition.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// The stage's own definition, installed as a dataflow of this name.
    pub definition: Definition,
    /// Internal topics this stage reads (each is written by an earlier stage on every node).
    pub reads: Vec<String>,
    /// Internal topics this stage writes.
    pub writes: Vec<String>,
}

/// The max delay of a later stage's inputs: about 98 years, beyond any event time in ms since
/// 1970 until 2068, so only explicit
/// marks move their watermarks.
const EXPLICIT_ONLY_DELAY: &str = "36000d";

/// The name of stage `n` (> 0) of a dataflow.
pub fn stage_name(dataflow: &str, n: usize) -> String {
    if n == 0 {
        dataflow.to_string()
    } else {
        format!("{dataflow}.stage{n}")
    }
}

/// The internal topic carrying node `node`'s records of `dataflow` to a later stage.
pub fn internal_topic(dataflow: &str, node: &str) -> String {
    format!("_rp.{dataflow}.{node}")
}

/// Whether a topic name is an internal repartition topic.
pub fn is_internal_topic(name: &str) -> bool {
    name.starts_with("_rp.")
}

/// Cuts `def` at its `key_by` nodes. One stage (the definition unchanged) when it has none.
/// References are assumed valid (the definition was planned before).
pub fn split(def: &Definition) -> Vec<Stage> {
    let inputs: BTreeSet<&str> = def.inputs.iter().map(|i| i.id.as_str()).collect();
    let nodes: HashMap<&str, &NodeDef> = def.nodes.iter().map(|n| (n.id(), n)).collect();
    // Stage of every node, by fixed point (the graph is a DAG, so this ends).
    let mut stage: HashMap<&str, usize> = inputs.iter().map(|i| (*i, 0)).collect();
    loop {
        let mut changed = false;
        for n in &def.nodes {
            let s = n
                .upstream()
                .iter()
                .map(|(_, u)| {
                    let su = stage.get(u).copied().unwrap_or(0);
                    let cut = matches!(nodes.get(u), Some(NodeDef::KeyBy(_)));
                    su + usize::from(cut)
                })
                .max()
                .unwrap_or(0);
            if stage.get(n.id()) != Some(&s) {
                stage.insert(n.id(), s);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let last = stage.values().copied().max().unwrap_or(0);
    if last == 0 {
        return vec![Stage {
            definition: def.clone(),
            reads: vec![],
            writes: vec![],
        }];
    }
    // Edges that cross stages, by producing node.
    let mut crossing: BTreeMap<&str, ()> = BTreeMap::new();
    for n in &def.nodes {
        let sn = stage[n.id()];
        for (_, u) in n.upstream() {
            if stage.get(u).copied().unwrap_or(0) < sn {
                crossing.insert(u, ());
            }
        }
    }
    let mut out = Vec::with_capacity(last + 1);
    for s in 0..=last {
        let mut d = Definition {
            name: stage_name(&def.name, s),
            description: def.description.clone(),
            topics: if s == 0 { def.topics.clone() } else { vec![] },
            inputs: vec![],
            nodes: vec![],
            outputs: vec![],
            late_topic: def.late_topic.clone(),
            dead_letter_topic: def.dead_letter_topic.clone(),
        };
        let mut reads = Vec::new();
        let mut writes = Vec::new();
        if s == 0 {
            d.inputs = def.inputs.clone();
        }
        for n in &def.nodes {
            if stage[n.id()] != s {
                continue;
            }
            let mut n = n.clone();
            rename_upstream(&mut n, |u| {
                if stage.get(u).copied().unwrap_or(0) < s {
                    Some(format!("_in.{u}"))
                } else {
                    None
                }
            });
            d.nodes.push(n);
        }
        // Inputs of this stage: every crossing producer that one of its nodes reads.
        let mut read_from: BTreeSet<&str> = BTreeSet::new();
        for n in &def.nodes {
            if stage[n.id()] != s {
                continue;
            }
            for (_, u) in n.upstream() {
                if stage.get(u).copied().unwrap_or(0) < s {
                    read_from.insert(u);
                }
            }
        }
        let lateness = def
            .inputs
            .iter()
            .filter_map(|i| i.watermark.allowed_lateness.clone())
            .next();
        for u in read_from {
            let topic = internal_topic(&def.name, u);
            d.inputs.push(InputDef {
                id: format!("_in.{u}"),
                topic: topic.clone(),
                watermark: WatermarkDef {
                    max_delay: Some(EXPLICIT_ONLY_DELAY.into()),
                    idle_timeout: Some("0s".into()),
                    allowed_lateness: lateness.clone(),
                },
            });
            reads.push(topic);
        }
        // Publishes for this stage's records that later stages read.
        for u in crossing.keys() {
            if stage.get(u).copied().unwrap_or(0) == s {
                let topic = internal_topic(&def.name, u);
                d.nodes.push(NodeDef::Publish(PublishDef {
                    id: format!("_pub.{u}"),
                    input: (*u).to_string(),
                    topic: topic.clone(),
                }));
                writes.push(topic);
            }
        }
        d.outputs = def
            .outputs
            .iter()
            .filter(|o| stage.get(o.from.as_str()).copied().unwrap_or(0) == s)
            .cloned()
            .collect::<Vec<OutputDef>>();
        out.push(Stage {
            definition: d,
            reads,
            writes,
        });
    }
    out
}

/// The ids of the nodes whose records cross into a later stage (the producers of internal
/// topics), from the stages [`split`] made. A cut carries insertions only, so a caller refuses a split where one of these can
/// retract.
pub fn crossing(stages: &[Stage]) -> Vec<String> {
    stages
        .iter()
        .flat_map(|s| s.definition.nodes.iter())
        .filter_map(|n| match n {
            NodeDef::Publish(p) if p.id.starts_with("_pub.") => Some(p.input.clone()),
            _ => None,
        })
        .collect()
}

/// Rewrites the ids a node reads from.
fn rename_upstream(node: &mut NodeDef, f: impl Fn(&str) -> Option<String>) {
    let fix = |s: &mut String| {
        if let Some(n) = f(s) {
            *s = n;
        }
    };
    match node {
        NodeDef::Map(d) | NodeDef::Project(d) => fix(&mut d.input),
        NodeDef::Filter(d) => fix(&mut d.input),
        NodeDef::KeyBy(d) => fix(&mut d.input),
        NodeDef::Window(d) => fix(&mut d.input),
        NodeDef::Aggregate(d) => fix(&mut d.input),
        NodeDef::Join(d) => {
            fix(&mut d.left);
            fix(&mut d.right);
        }
        NodeDef::Distinct(d) => fix(&mut d.input),
        NodeDef::Union(d) => d.inputs.iter_mut().for_each(fix),
        NodeDef::Publish(d) => fix(&mut d.input),
        NodeDef::Trigger(d) => fix(&mut d.input),
        NodeDef::KvPut(d) => fix(&mut d.input),
        NodeDef::KvLookup(d) => fix(&mut d.input),
        NodeDef::Series(d) => fix(&mut d.input),
        NodeDef::Embed(d) => fix(&mut d.input),
        NodeDef::VectorUpsert(d) => fix(&mut d.input),
        NodeDef::VectorSearch(d) => fix(&mut d.input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(text: &str) -> Definition {
        Definition::parse(text).unwrap()
    }

    #[test]
    fn a_definition_without_key_by_is_one_stage() {
        let d = def(
            "name: w\ninputs: [{id: c, topic: t}]\nnodes:\n  - {id: w, op: window, input: c, kind: tumbling, size: 10s}\n  - {id: a, op: aggregate, input: w, aggregates: [{name: n, fn: count}]}\noutputs: [{name: out, from: a}]\n",
        );
        let s = split(&d);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].definition, d);
    }

    #[test]
    fn key_by_cuts_and_both_join_sides_meet_in_the_later_stage() {
        let d = def("name: j
inputs: [{id: l, topic: a, watermark: {allowed_lateness: 1s}}, {id: r, topic: b}]
nodes:
  - {id: lk, op: key_by, input: l, key: x}
  - {id: f, op: filter, input: r, where: 'y > 0'}
  - {id: rk, op: key_by, input: f, key: x}
  - {id: j, op: join, left: lk, right: rk, kind: interval, within: 1s}
  - {id: g, op: key_by, input: j, key: \"'all'\"}
  - {id: top, op: aggregate, input: g, aggregates: [{name: n, fn: count}]}
outputs: [{name: pairs, from: j}, {name: total, from: top}, {name: raw, from: f}]
");
        let s = split(&d);
        assert_eq!(s.len(), 3);
        let names: Vec<&str> = s.iter().map(|s| s.definition.name.as_str()).collect();
        assert_eq!(names, ["j", "j.stage1", "j.stage2"]);
        // Stage 0: the inputs, the filter and both key_bys, publishing both keyed streams.
        let s0 = &s[0];
        assert_eq!(s0.writes, ["_rp.j.lk", "_rp.j.rk"]);
        assert_eq!(s0.definition.outputs.len(), 1);
        assert_eq!(s0.definition.outputs[0].name, "raw");
        // Stage 1: reads both, joins, re-keys globally and publishes that.
        let s1 = &s[1];
        assert_eq!(s1.reads, ["_rp.j.lk", "_rp.j.rk"]);
        assert_eq!(s1.writes, ["_rp.j.g"]);
        let join = s1
            .definition
            .nodes
            .iter()
            .find_map(|n| match n {
                NodeDef::Join(j) => Some(j),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            (join.left.as_str(), join.right.as_str()),
            ("_in.lk", "_in.rk")
        );
        let inp = &s1.definition.inputs[0];
        assert_eq!(inp.watermark.idle_timeout.as_deref(), Some("0s"));
        assert_eq!(inp.watermark.allowed_lateness.as_deref(), Some("1s"));
        assert_eq!(s1.definition.outputs[0].name, "pairs");
        // Stage 2: the global count.
        assert_eq!(s[2].reads, ["_rp.j.g"]);
        assert_eq!(crossing(&s), ["lk", "rk", "g"]);
        assert_eq!(s[2].definition.outputs[0].name, "total");
    }

    #[test]
    fn a_join_of_a_keyed_and_an_unkeyed_side_sends_both_through_topics() {
        let d = def("name: m
inputs: [{id: l, topic: a}, {id: r, topic: b}]
nodes:
  - {id: rk, op: key_by, input: r, key: x}
  - {id: j, op: join, left: l, right: rk, kind: table}
outputs: [{name: o, from: j}]
");
        let s = split(&d);
        assert_eq!(s.len(), 2);
        // `l` keeps its key, but must meet `rk` on the same node: it crosses too.
        assert_eq!(s[0].writes, ["_rp.m.l", "_rp.m.rk"]);
        assert_eq!(s[1].reads, ["_rp.m.l", "_rp.m.rk"]);
    }
}
