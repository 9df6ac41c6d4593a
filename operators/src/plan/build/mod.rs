//! From a [`Definition`] to a [`Plan`].
//!
//! This file holds the entry point: the checks on the definition as a whole (names, ids,
//! references, order, topics, outputs). Each family of nodes is planned in a file of its own.

mod aggregates;
mod builder;
mod checks;
mod joins;
mod outputs;
mod rows;
mod stores;
mod topics;

use std::collections::{BTreeMap, HashMap};

use super::{
    InputPlan, NodeKind, NodePlan, OutputPlan, Plan, PlanError, TopicSpec, WatermarkPolicy,
};
use crate::definition::{Definition, EmitMode, NodeDef};
use crate::schema::Schema;
use crate::value::DataType;

use builder::Builder;
use checks::{check_name, duration};
use topics::{system_topic, topic_spec};

const MAX_NODES: usize = 1_000;
const DEFAULT_IDLE_TIMEOUT_MS: u64 = 5_000;

/// The fields of the late and dead-letter topics: which input, why, the event's time and key,
/// and the event itself as a JSON-like map.
pub const SYSTEM_TOPIC_FIELDS: [(&str, DataType); 5] = [
    ("input", DataType::String),
    ("reason", DataType::String),
    ("time", DataType::Timestamp),
    ("key", DataType::Any),
    ("event", DataType::Any),
];

/// Checks `def` against the topics that already exist (`existing`) and builds its plan.
pub fn plan(def: &Definition, existing: &HashMap<String, TopicSpec>) -> Result<Plan, PlanError> {
    check_name("definition", &def.name)?;
    if def.inputs.is_empty() {
        return Err(PlanError::NoInputs);
    }
    let total = def.inputs.len() + def.nodes.len();
    if total > MAX_NODES {
        return Err(PlanError::TooMany {
            what: "inputs and nodes",
            count: total,
            limit: MAX_NODES,
        });
    }

    // Topics: the ones that exist, plus the declared ones (which must match if both).
    let mut topics: BTreeMap<String, TopicSpec> = BTreeMap::new();
    let mut new_topics = Vec::new();
    for t in &def.topics {
        let spec = topic_spec(t)?;
        if topics.contains_key(&spec.name) {
            return Err(PlanError::DuplicateTopic { name: spec.name });
        }
        if let Some(old) = existing.get(&spec.name) {
            if old.schema != spec.schema || old.key != spec.key || old.time != spec.time {
                return Err(PlanError::BadTopic {
                    topic: spec.name.clone(),
                    field: "fields".into(),
                    message: "already exists with a different declaration; declare it exactly as it is (see `topics` on the node) or use a new name".into(),
                });
            }
        } else {
            new_topics.push(spec.clone());
        }
        topics.insert(spec.name.clone(), spec);
    }
    let find_topic = |name: &str| topics.get(name).or_else(|| existing.get(name)).cloned();

    // Ids are unique across inputs and nodes.
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let all_ids = def
        .inputs
        .iter()
        .map(|i| i.id.as_str())
        .chain(def.nodes.iter().map(NodeDef::id));
    for (pos, id) in all_ids.enumerate() {
        check_name("node", id)?;
        if ids.insert(id, pos).is_some() {
            return Err(PlanError::DuplicateId { id: id.to_string() });
        }
    }
    let known = || {
        let mut k: Vec<&str> = ids.keys().copied().collect();
        k.sort_unstable();
        k.join(", ")
    };

    // References exist.
    for node in &def.nodes {
        for (field, target) in node.upstream() {
            if !ids.contains_key(target) {
                return Err(PlanError::UnknownNode {
                    node: node.id().to_string(),
                    field,
                    target: target.to_string(),
                    known: known(),
                });
            }
        }
        if let NodeDef::Union(u) = node {
            if u.inputs.len() < 2 {
                return Err(PlanError::InvalidParameter {
                    node: u.id.clone(),
                    field: "inputs",
                    message: "a union needs at least two inputs".into(),
                });
            }
        }
    }

    // Topological order (Kahn), reporting a cycle with its members.
    let n_inputs = def.inputs.len();
    let order = topo_order(def, &ids, n_inputs)?;

    // Windows may only feed aggregates.
    for node in &def.nodes {
        for (_, target) in node.upstream() {
            let pos = ids[target];
            if pos >= n_inputs {
                if let NodeDef::Window(w) = &def.nodes[pos - n_inputs] {
                    if !matches!(node, NodeDef::Aggregate(_)) {
                        return Err(PlanError::WindowNotAggregated {
                            window: w.id.clone(),
                            consumer: node.id().to_string(),
                            op: node.op().to_string(),
                        });
                    }
                }
            }
        }
    }

    let mut b = Builder {
        nodes: Vec::new(),
        index: HashMap::new(),
        windows: HashMap::new(),
    };

    let mut inputs = Vec::new();
    for (i, input) in def.inputs.iter().enumerate() {
        let topic = find_topic(&input.topic).ok_or_else(|| PlanError::UnknownTopic {
            node: input.id.clone(),
            topic: input.topic.clone(),
        })?;
        let w = &input.watermark;
        let opt = |field: &'static str, v: &Option<String>, default: u64| match v {
            Some(t) => duration(&input.id, field, t),
            None => Ok(default),
        };
        let watermark = WatermarkPolicy {
            max_delay: opt("watermark.max_delay", &w.max_delay, 0)?,
            idle_timeout: opt(
                "watermark.idle_timeout",
                &w.idle_timeout,
                DEFAULT_IDLE_TIMEOUT_MS,
            )?,
            allowed_lateness: opt("watermark.allowed_lateness", &w.allowed_lateness, 0)?,
        };
        let key_type = topic
            .key
            .map(|k| topic.schema.field(k).data_type.clone())
            .unwrap_or(DataType::Null);
        b.push(NodePlan {
            id: input.id.clone(),
            schema: topic.schema.clone(),
            key_type,
            append_only: true,
            lateness: watermark.allowed_lateness,
            kind: NodeKind::Input { input: i },
        });
        inputs.push(InputPlan {
            id: input.id.clone(),
            topic: topic.name.clone(),
            schema: topic.schema,
            watermark,
        });
    }

    let mut output_topics: Vec<TopicSpec> = Vec::new();
    for pos in order {
        if pos < n_inputs {
            continue;
        }
        let node = &def.nodes[pos - n_inputs];
        b.plan_node(node)?;
        if let NodeDef::Publish(p) = node {
            output_topics.push(b.derived_topic(&p.id, &p.topic)?);
        }
        if let NodeDef::Trigger(t) = node {
            output_topics.push(b.derived_topic(&t.id, &t.topic)?);
        }
    }
    for spec in output_topics {
        check_name("topic", &spec.name)?;
        let node = spec.name.clone();
        match find_topic(&spec.name)
            .or_else(|| new_topics.iter().find(|t| t.name == spec.name).cloned())
        {
            Some(t)
                if t.schema.fields.len() != spec.schema.fields.len()
                    || t.schema
                        .fields
                        .iter()
                        .zip(&spec.schema.fields)
                        .any(|(a, b)| a.name != b.name || !a.data_type.accepts(&b.data_type)) =>
            {
                return Err(PlanError::SchemaMismatch {
                    node,
                    message: format!(
                        "topic `{}` has fields ({}) but the node writes ({})",
                        t.name,
                        describe_schema(&t.schema),
                        describe_schema(&spec.schema)
                    ),
                })
            }
            Some(_) => {}
            None => new_topics.push(spec),
        }
    }

    let late_topic = def
        .late_topic
        .clone()
        .unwrap_or_else(|| format!("{}.late", def.name));
    let dead_letter_topic = def
        .dead_letter_topic
        .clone()
        .unwrap_or_else(|| format!("{}.dead", def.name));
    for t in [&late_topic, &dead_letter_topic] {
        check_name("topic", t)?;
        let spec = system_topic(t);
        // A topic this definition creates (a publish or trigger target) counts too: late
        // records must not be written into a topic of another schema.
        let known = find_topic(t).or_else(|| new_topics.iter().find(|n| &n.name == t).cloned());
        match known {
            Some(existing) if existing.schema != spec.schema => {
                return Err(PlanError::BadTopic {
                    topic: t.clone(),
                    field: "fields".into(),
                    message: "exists but is not a late/dead-letter topic".into(),
                })
            }
            Some(_) => {}
            None => new_topics.push(spec),
        }
    }

    // A dataflow must not write into a topic it reads: every event would come back to it,
    // forever (late and dead-letter records keep their old times, so they would loop too).
    let reads = |topic: &str| def.inputs.iter().find(|i| i.topic == topic);
    for node in &def.nodes {
        let target = match node {
            NodeDef::Publish(p) => Some(&p.topic),
            NodeDef::Trigger(t) => Some(&t.topic),
            _ => None,
        };
        if let Some(input) = target.and_then(|t| reads(t)) {
            return Err(PlanError::InvalidParameter {
                node: node.id().to_string(),
                field: "topic",
                message: format!(
                    "topic `{}` is read by input `{}` of this dataflow: writing into it would feed the dataflow its own output forever",
                    input.topic, input.id
                ),
            });
        }
    }
    for t in [&late_topic, &dead_letter_topic] {
        if let Some(input) = reads(t) {
            return Err(PlanError::BadTopic {
                topic: t.clone(),
                field: "inputs".into(),
                message: format!(
                    "is read by input `{}` of the same dataflow: its late or failed events would come back to it forever",
                    input.id
                ),
            });
        }
    }

    let mut outputs: Vec<OutputPlan> = Vec::new();
    for out in &def.outputs {
        check_name("output", &out.name)?;
        if outputs.iter().any(|o| o.name == out.name) {
            return Err(PlanError::DuplicateOutput {
                name: out.name.clone(),
            });
        }
        let node = b.resolve(&out.from).ok_or_else(|| PlanError::UnknownNode {
            node: format!("output {}", out.name),
            field: "from",
            target: out.from.clone(),
            known: known(),
        })?;
        let actual = match &b.nodes[node].kind {
            NodeKind::WindowAggregate { emit, .. } => *emit,
            _ => EmitMode::Updates,
        };
        if let Some(wanted) = out.emit {
            if wanted != actual {
                return Err(PlanError::EmitMismatch {
                    output: out.name.clone(),
                    node: out.from.clone(),
                    wanted: format!("{wanted:?}").to_lowercase(),
                    actual: format!("{actual:?}").to_lowercase(),
                });
            }
        }
        outputs.push(OutputPlan {
            name: out.name.clone(),
            node,
            schema: b.nodes[node].schema.clone(),
            emit: actual,
        });
    }

    Ok(Plan {
        name: def.name.clone(),
        new_topics,
        inputs,
        nodes: b.nodes,
        outputs,
        late_topic,
        dead_letter_topic,
    })
}

fn describe_schema(s: &Schema) -> String {
    s.fields
        .iter()
        .map(|f| format!("{} {}", f.name, f.data_type))
        .collect::<Vec<_>>()
        .join(", ")
}

fn topo_order(
    def: &Definition,
    ids: &HashMap<&str, usize>,
    n_inputs: usize,
) -> Result<Vec<usize>, PlanError> {
    let total = n_inputs + def.nodes.len();
    let mut indegree = vec![0usize; total];
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); total];
    for (i, node) in def.nodes.iter().enumerate() {
        for (_, target) in node.upstream() {
            let from = ids[target];
            downstream[from].push(n_inputs + i);
            indegree[n_inputs + i] += 1;
        }
    }
    let mut ready: Vec<usize> = (0..total).filter(|&i| indegree[i] == 0).collect();
    ready.reverse();
    let mut order = Vec::with_capacity(total);
    while let Some(i) = ready.pop() {
        order.push(i);
        for &d in &downstream[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push(d);
            }
        }
    }
    if order.len() < total {
        // Walk back from any node left over to name one cycle.
        let left: Vec<usize> = (0..total).filter(|&i| indegree[i] > 0).collect();
        let name = |i: usize| def.nodes[i - n_inputs].id().to_string();
        let mut cycle = vec![left[0]];
        loop {
            let cur = *cycle.last().unwrap_or(&left[0]);
            let next = def.nodes[cur - n_inputs]
                .upstream()
                .iter()
                .map(|(_, t)| ids[t])
                .find(|p| indegree[*p] > 0);
            match next {
                Some(p) if cycle.contains(&p) => {
                    let start = cycle.iter().position(|c| *c == p).unwrap_or(0);
                    let mut nodes: Vec<String> =
                        cycle[start..].iter().rev().map(|&i| name(i)).collect();
                    nodes.push(name(p));
                    return Err(PlanError::Cycle { nodes });
                }
                Some(p) => cycle.push(p),
                None => {
                    return Err(PlanError::Cycle {
                        nodes: left.iter().map(|&i| name(i)).collect(),
                    })
                }
            }
        }
    }
    Ok(order)
}
