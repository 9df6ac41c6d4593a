//! From a [`Definition`] to a [`Plan`].

use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::definition::{
    AggDef, Definition, EmitMode, FieldDef, JoinKind, NodeDef, TopicDef, WindowDef, WindowKind,
    MAX_COPIES,
};
use crate::duration::parse_duration_ms;
use crate::json::value_from_json;
use crate::schema::Field;
use crate::value::Value;

const MAX_NODES: usize = 1_000;
const MAX_FIELDS: usize = 1_000;
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

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    !s.is_empty()
        && s.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// View and series names end up in URLs and storage keys: the same rule as topic names.
fn check_store_name(node: &str, field: &'static str, name: &str) -> Result<(), PlanError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(PlanError::InvalidParameter {
            node: node.to_string(),
            field,
            message: format!(
                "`{}` is not a valid name (letters, digits, `_`, `-`, `.`; at most 128 bytes)",
                name.chars().take(200).collect::<String>()
            ),
        })
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), PlanError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(PlanError::InvalidName {
            what,
            name: name.chars().take(200).collect(),
        })
    }
}

fn duration(node: &str, field: &'static str, text: &str) -> Result<u64, PlanError> {
    parse_duration_ms(text).map_err(|error| PlanError::BadDuration {
        node: node.to_string(),
        field,
        error,
    })
}

fn positive_duration(
    node: &str,
    field: &'static str,
    text: Option<&String>,
) -> Result<u64, PlanError> {
    let Some(text) = text else {
        return Err(PlanError::MissingField {
            node: node.to_string(),
            field,
            why: "for this kind of node",
        });
    };
    let ms = duration(node, field, text)?;
    if ms == 0 {
        return Err(PlanError::InvalidParameter {
            node: node.to_string(),
            field,
            message: "must be greater than zero".into(),
        });
    }
    Ok(ms)
}

/// One declared field: its type parsed and its default checked against it.
fn field_from_def(fd: &FieldDef) -> Result<Field, String> {
    let FieldDef {
        name,
        data_type,
        optional,
        default,
    } = fd;
    let ty = DataType::parse(data_type).ok_or_else(|| {
        format!("unknown type `{data_type}`; use bool, int, float, string, bytes, timestamp, list<T>, map<T>, vector<N> or any")
    })?;
    let default = match default {
        None => Value::Null,
        Some(_) if !optional => {
            return Err("a default is only allowed on an optional field".into());
        }
        Some(j) => value_from_json(name, &ty, j).map_err(|e| format!("bad default: {e}"))?,
    };
    Ok(Field {
        name: name.clone(),
        data_type: ty,
        optional: *optional,
        default,
    })
}

/// Builds the schema of a declared topic.
fn topic_spec(def: &TopicDef) -> Result<TopicSpec, PlanError> {
    check_name("topic", &def.name)?;
    let bad = |field: &str, message: String| PlanError::BadTopic {
        topic: def.name.clone(),
        field: field.to_string(),
        message,
    };
    if def.fields.is_empty() {
        return Err(bad("fields", "a topic needs at least one field".into()));
    }
    if def.fields.len() > MAX_FIELDS {
        return Err(PlanError::TooMany {
            what: "fields",
            count: def.fields.len(),
            limit: MAX_FIELDS,
        });
    }
    let mut fields = Vec::with_capacity(def.fields.len());
    for fd in &def.fields {
        check_name("field", &fd.name)?;
        if fields.iter().any(|f: &Field| f.name == fd.name) {
            return Err(bad(&fd.name, "declared more than once".into()));
        }
        fields.push(field_from_def(fd).map_err(|m| bad(&fd.name, m))?);
    }
    let schema = Schema::new(fields);
    let time = schema.index_of(&def.time).ok_or_else(|| {
        bad(
            "time",
            format!("`{}` is not a field of the topic", def.time),
        )
    })?;
    let tf = schema.field(time);
    if !matches!(tf.data_type, DataType::Timestamp | DataType::Int) || tf.optional {
        return Err(bad(
            "time",
            format!(
                "event-time field `{}` must be a required timestamp or int, not {}{}",
                tf.name,
                if tf.optional { "optional " } else { "" },
                tf.data_type
            ),
        ));
    }
    if !(1..=MAX_COPIES).contains(&def.min_insync) {
        return Err(bad(
            "min_insync",
            format!(
                "must be between 1 and {MAX_COPIES} (the most copies a cluster keeps of a \
                 shard), not {}",
                def.min_insync
            ),
        ));
    }
    let key = match &def.key {
        None => None,
        Some(k) => Some(
            schema
                .index_of(k)
                .ok_or_else(|| bad("key", format!("`{k}` is not a field of the topic")))?,
        ),
    };
    Ok(TopicSpec {
        name: def.name.clone(),
        schema,
        key,
        time: Some(time),
        acks: def.acks,
        min_insync: def.min_insync,
    })
}

/// The topic spec of a late or dead-letter topic.
pub(crate) fn system_topic(name: &str) -> TopicSpec {
    TopicSpec {
        name: name.to_string(),
        schema: Schema::new(
            SYSTEM_TOPIC_FIELDS
                .iter()
                .map(|(n, t)| Field::required(n, t.clone()))
                .collect(),
        ),
        key: None,
        time: Some(2),
        acks: Default::default(),
        min_insync: 1,
    }
}

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

struct Builder {
    nodes: Vec<NodePlan>,
    index: HashMap<String, usize>,
    /// Window nodes are not rendered on their own; their aggregate fuses them.
    windows: HashMap<String, (WindowDef, usize)>,
}

impl Builder {
    fn push(&mut self, node: NodePlan) -> usize {
        let i = self.nodes.len();
        self.index.insert(node.id.clone(), i);
        self.nodes.push(node);
        i
    }

    fn resolve(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    fn upstream(&self, id: &str) -> usize {
        // Topological order and the reference check guarantee presence.
        self.index.get(id).copied().unwrap_or(0)
    }

    fn expr(&self, node: &str, field: &str, text: &str, input: usize) -> Result<Expr, PlanError> {
        Expr::compile(text, &self.nodes[input].schema).map_err(|error| PlanError::Expression {
            node: node.to_string(),
            field: field.to_string(),
            error,
        })
    }

    fn derived_topic(&self, node: &str, topic: &str) -> Result<TopicSpec, PlanError> {
        let n = &self.nodes[self.upstream(node)];
        Ok(TopicSpec {
            name: topic.to_string(),
            schema: n.schema.clone(),
            key: n.schema.index_of("key"),
            time: None,
            acks: Default::default(),
            min_insync: 1,
        })
    }

    fn plan_node(&mut self, node: &NodeDef) -> Result<(), PlanError> {
        let id = node.id().to_string();
        match node {
            NodeDef::Map(m) | NodeDef::Project(m) => {
                let input = self.upstream(&m.input);
                if m.fields.is_empty() {
                    return Err(PlanError::MissingField {
                        node: id,
                        field: "fields",
                        why: "and must list at least one `name: expression`",
                    });
                }
                let mut fields = Vec::new();
                let mut exprs = Vec::new();
                for f in &m.fields {
                    check_name("field", &f.name)?;
                    if fields.iter().any(|x: &Field| x.name == f.name) {
                        return Err(PlanError::InvalidParameter {
                            node: id,
                            field: "fields",
                            message: format!("output field `{}` is listed twice", f.name),
                        });
                    }
                    let e = self.expr(&id, &format!("fields.{}", f.name), &f.expr, input)?;
                    fields.push(Field::required(&f.name, e.data_type().clone()));
                    exprs.push(e);
                }
                let up = &self.nodes[input];
                let plan = NodePlan {
                    id,
                    schema: Schema::new(fields),
                    key_type: up.key_type.clone(),
                    append_only: up.append_only,
                    lateness: up.lateness,
                    kind: NodeKind::Map { input, exprs },
                };
                self.push(plan);
            }
            NodeDef::Filter(f) => {
                let input = self.upstream(&f.input);
                let predicate = self.expr(&id, "where", &f.predicate, input)?;
                expect_bool(&id, "where", &predicate)?;
                let up = self.nodes[input].clone_shape();
                self.push(NodePlan {
                    id,
                    kind: NodeKind::Filter { input, predicate },
                    ..up
                });
            }
            NodeDef::KeyBy(k) => {
                let input = self.upstream(&k.input);
                let key = self.expr(&id, "key", &k.key, input)?;
                let up = self.nodes[input].clone_shape();
                self.push(NodePlan {
                    id,
                    key_type: key.data_type().clone(),
                    kind: NodeKind::KeyBy { input, key },
                    ..up
                });
            }
            NodeDef::Window(w) => {
                // Checked now, planned into the aggregate that consumes it.
                window_spec(w)?;
                let input = self.upstream(&w.input);
                self.windows.insert(w.id.clone(), (w.clone(), input));
            }
            NodeDef::Aggregate(a) => {
                let windowed = self.windows.get(&a.input).cloned();
                let input = match &windowed {
                    Some((_, input)) => *input,
                    None => self.upstream(&a.input),
                };
                if a.aggregates.is_empty() {
                    return Err(PlanError::MissingField {
                        node: id,
                        field: "aggregates",
                        why: "and must list at least one aggregate",
                    });
                }
                let aggs = a
                    .aggregates
                    .iter()
                    .map(|d| self.agg(&id, d, input))
                    .collect::<Result<Vec<_>, _>>()?;
                let up = &self.nodes[input];
                let mut fields = vec![Field::required("key", up.key_type.clone())];
                if windowed.is_some() {
                    fields.push(Field::required("window_start", DataType::Timestamp));
                    fields.push(Field::required("window_end", DataType::Timestamp));
                }
                for agg in &aggs {
                    if fields.iter().any(|f| f.name == agg.name) {
                        return Err(PlanError::InvalidParameter {
                            node: id,
                            field: "aggregates",
                            message: format!("output field `{}` is used twice (key, window_start and window_end are taken)", agg.name),
                        });
                    }
                    fields.push(Field::required(&agg.name, agg.data_type.clone()));
                }
                let (kind, append_only) = match windowed {
                    Some((w, _)) => {
                        let emit = a.emit.unwrap_or(EmitMode::Final);
                        // Final results with no allowed lateness are emitted once and never
                        // corrected (an event behind a closed window is late and goes to the
                        // late topic), so downstream they are an insert-only stream: interval
                        // joins may consume them (Nexmark q5, q7, q8 join window results).
                        let insert_only =
                            emit == EmitMode::Final && up.lateness == 0 && up.append_only;
                        (
                            NodeKind::WindowAggregate {
                                input,
                                window: window_spec(&w)?,
                                aggs,
                                emit,
                            },
                            insert_only,
                        )
                    }
                    None => {
                        if a.emit == Some(EmitMode::Final) {
                            return Err(PlanError::InvalidParameter {
                                node: id,
                                field: "emit",
                                message: "`final` needs a window: an aggregate over a whole stream never ends; put a `window` before it or use `updates`".into(),
                            });
                        }
                        (NodeKind::Aggregate { input, aggs }, false)
                    }
                };
                let plan = NodePlan {
                    id,
                    schema: Schema::new(fields),
                    key_type: up.key_type.clone(),
                    append_only,
                    lateness: up.lateness,
                    kind,
                };
                self.push(plan);
            }
            NodeDef::Join(j) => {
                let left = self.upstream(&j.left);
                let right = self.upstream(&j.right);
                let (l, r) = (&self.nodes[left], &self.nodes[right]);
                if l.key_type != r.key_type
                    && l.key_type != DataType::Any
                    && r.key_type != DataType::Any
                {
                    return Err(PlanError::TypeMismatch {
                        node: id,
                        field: "right".into(),
                        expected: format!("a key of type {} (the left key)", l.key_type),
                        found: format!("{} (use key_by to align the keys)", r.key_type),
                    });
                }
                let mut fields = l.schema.fields.clone();
                for f in &r.schema.fields {
                    let mut f = f.clone();
                    if fields.iter().any(|x| x.name == f.name) {
                        f.name = format!("{}_{}", j.right, f.name);
                    }
                    fields.push(f);
                }
                let kind = match j.kind {
                    JoinKind::Interval => {
                        let within = match &j.within {
                            Some(w) => duration(&id, "within", w)?,
                            None => {
                                return Err(PlanError::MissingField {
                                    node: id,
                                    field: "within",
                                    why: "for an interval join (how far apart the two event times may be)",
                                })
                            }
                        };
                        if !l.append_only || !r.append_only {
                            return Err(PlanError::InvalidParameter {
                                node: id,
                                field: "left",
                                message: "an interval join needs insert-only inputs (not an aggregate or distinct)".into(),
                            });
                        }
                        NodeKind::IntervalJoin {
                            left,
                            right,
                            within,
                        }
                    }
                    JoinKind::Table => {
                        if j.within.is_some() {
                            return Err(PlanError::InvalidParameter {
                                node: id,
                                field: "within",
                                message: "only interval joins take `within`".into(),
                            });
                        }
                        NodeKind::TableJoin { left, right }
                    }
                };
                let plan = NodePlan {
                    id,
                    schema: Schema::new(fields),
                    key_type: l.key_type.clone(),
                    append_only: true,
                    lateness: l.lateness.max(r.lateness),
                    kind,
                };
                self.push(plan);
            }
            NodeDef::Distinct(d) => {
                let input = self.upstream(&d.input);
                let ttl = positive_duration(&id, "ttl", Some(&d.ttl))?;
                let up = self.nodes[input].clone_shape();
                self.push(NodePlan {
                    id,
                    append_only: false,
                    kind: NodeKind::Distinct { input, ttl },
                    ..up
                });
            }
            NodeDef::Union(u) => {
                let inputs: Vec<usize> = u.inputs.iter().map(|i| self.upstream(i)).collect();
                let first = &self.nodes[inputs[0]];
                for (name, &i) in u.inputs.iter().zip(&inputs).skip(1) {
                    let other = &self.nodes[i];
                    let same = other.schema.fields.len() == first.schema.fields.len()
                        && other
                            .schema
                            .fields
                            .iter()
                            .zip(&first.schema.fields)
                            .all(|(a, b)| a.name == b.name && a.data_type == b.data_type)
                        && other.key_type == first.key_type;
                    if !same {
                        return Err(PlanError::SchemaMismatch {
                            node: id,
                            message: format!(
                                "inputs `{}` ({}; key {}) and `{name}` ({}; key {}) differ; a union needs identical fields and key types (use map to align them)",
                                u.inputs[0],
                                describe_schema(&first.schema),
                                first.key_type,
                                describe_schema(&other.schema),
                                other.key_type
                            ),
                        });
                    }
                }
                let mut shape = first.clone_shape();
                shape.append_only = inputs.iter().all(|&i| self.nodes[i].append_only);
                shape.lateness = inputs
                    .iter()
                    .map(|&i| self.nodes[i].lateness)
                    .max()
                    .unwrap_or(0);
                self.push(NodePlan {
                    id,
                    kind: NodeKind::Union { inputs },
                    ..shape
                });
            }
            NodeDef::Publish(p) => {
                let input = self.upstream(&p.input);
                let shape = self.nodes[input].clone_shape();
                self.push(NodePlan {
                    id,
                    kind: NodeKind::Publish {
                        input,
                        topic: p.topic.clone(),
                    },
                    ..shape
                });
            }
            NodeDef::KvPut(k) => {
                let input = self.upstream(&k.input);
                check_store_name(&id, "view", &k.view)?;
                let ttl_ms = match &k.ttl {
                    None => None,
                    Some(t) => Some(positive_duration(&id, "ttl", Some(t))?),
                };
                let shape = self.nodes[input].clone_shape();
                self.push(NodePlan {
                    id,
                    kind: NodeKind::KvPut {
                        input,
                        view: k.view.clone(),
                        ttl_ms,
                    },
                    ..shape
                });
            }
            NodeDef::KvLookup(k) => {
                let input = self.upstream(&k.input);
                check_store_name(&id, "view", &k.view)?;
                let key = match &k.key {
                    Some(text) => Some(self.expr(&id, "key", text, input)?),
                    None => None,
                };
                if k.fields.is_empty() {
                    return Err(PlanError::MissingField {
                        node: id,
                        field: "fields",
                        why: "and must list the fields read from the view",
                    });
                }
                let mut shape = self.nodes[input].clone_shape();
                let mut all = shape.schema.fields.clone();
                let mut added = Vec::new();
                for fd in &k.fields {
                    check_name("field", &fd.name)?;
                    if all.iter().any(|f| f.name == fd.name) {
                        return Err(PlanError::InvalidParameter {
                            node: id,
                            field: "fields",
                            message: format!(
                                "`{}` is already a field of the input (or listed twice); rename it with a map first",
                                fd.name
                            ),
                        });
                    }
                    let mut f =
                        field_from_def(fd).map_err(|message| PlanError::InvalidParameter {
                            node: id.clone(),
                            field: "fields",
                            message: format!("`{}`: {message}", fd.name),
                        })?;
                    // An absent key or field reads as the default: every looked-up field is
                    // optional.
                    f.optional = true;
                    all.push(f.clone());
                    added.push(f);
                }
                shape.schema = Schema::new(all);
                self.push(NodePlan {
                    id,
                    kind: NodeKind::KvLookup {
                        input,
                        view: k.view.clone(),
                        key,
                        fields: added,
                    },
                    ..shape
                });
            }
            NodeDef::Series(x) => {
                let input = self.upstream(&x.input);
                check_store_name(&id, "name", &x.name)?;
                if !matches!(self.nodes[input].kind, NodeKind::WindowAggregate { .. }) {
                    return Err(PlanError::InvalidParameter {
                        node: id,
                        field: "input",
                        message: format!(
                            "a series stores windowed results per window start, but `{}` is not a windowed aggregate",
                            x.input
                        ),
                    });
                }
                let shape = self.nodes[input].clone_shape();
                self.push(NodePlan {
                    id,
                    kind: NodeKind::Series {
                        input,
                        name: x.name.clone(),
                    },
                    ..shape
                });
            }
            NodeDef::Embed(e) => {
                let input = self.upstream(&e.input);
                let text = self.expr(&id, "text", &e.text, input)?;
                if !matches!(
                    text.data_type(),
                    DataType::String | DataType::Null | DataType::Any
                ) {
                    return Err(PlanError::InvalidParameter {
                        node: id,
                        field: "text",
                        message: format!("must be a string expression, found {}", text.data_type()),
                    });
                }
                let dim = e.dim.unwrap_or(256);
                if dim == 0 || dim > 4096 {
                    return Err(PlanError::InvalidParameter {
                        node: id,
                        field: "dim",
                        message: format!("must be between 1 and 4096, found {dim}"),
                    });
                }
                let name = e.field.clone().unwrap_or_else(|| "embedding".to_string());
                check_name("field", &name)?;
                let mut shape = self.nodes[input].clone_shape();
                if shape.schema.index_of(&name).is_some() {
                    return Err(PlanError::InvalidParameter {
                        node: id,
                        field: "field",
                        message: format!("`{name}` is already a field of the input"),
                    });
                }
                let mut all = shape.schema.fields.clone();
                all.push(Field::required(&name, DataType::Vector(dim)));
                shape.schema = Schema::new(all);
                self.push(NodePlan {
                    id,
                    kind: NodeKind::Embed { input, text, dim },
                    ..shape
                });
            }
            NodeDef::VectorUpsert(v) => {
                let input = self.upstream(&v.input);
                check_store_name(&id, "collection", &v.collection)?;
                let vector = self.expr(&id, "vector", &v.vector, input)?;
                let DataType::Vector(dim) = vector.data_type().clone() else {
                    return Err(PlanError::InvalidParameter {
                        node: id,
                        field: "vector",
                        message: format!(
                            "must be a vector<N> expression (e.g. a field added by `embed`), found {}",
                            vector.data_type()
                        ),
                    });
                };
                let metric = match &v.metric {
                    None => starling_storage::Metric::Cosine,
                    Some(m) => m.parse().map_err(|e: starling_storage::VectorError| {
                        PlanError::InvalidParameter {
                            node: id.clone(),
                            field: "metric",
                            message: e.to_string(),
                        }
                    })?,
                };
                let shape = self.nodes[input].clone_shape();
                self.push(NodePlan {
                    id,
                    kind: NodeKind::VectorUpsert {
                        input,
                        collection: v.collection.clone(),
                        vector,
                        dim,
                        metric,
                    },
                    ..shape
                });
            }
            NodeDef::VectorSearch(v) => {
                let input = self.upstream(&v.input);
                check_store_name(&id, "collection", &v.collection)?;
                let vector = self.expr(&id, "vector", &v.vector, input)?;
                if !matches!(vector.data_type(), DataType::Vector(_)) {
                    return Err(PlanError::InvalidParameter {
                        node: id,
                        field: "vector",
                        message: format!(
                            "must be a vector<N> expression, found {}",
                            vector.data_type()
                        ),
                    });
                }
                let k = v.k.unwrap_or(5);
                if k == 0 || k > 1000 {
                    return Err(PlanError::InvalidParameter {
                        node: id,
                        field: "k",
                        message: format!("must be between 1 and 1000, found {k}"),
                    });
                }
                let mut shape = self.nodes[input].clone_shape();
                let mut all = shape.schema.fields.clone();
                for (name, ty) in [
                    ("match_key", DataType::String),
                    ("match_distance", DataType::Float),
                    ("match_rank", DataType::Int),
                    ("match", DataType::Any),
                ] {
                    if all.iter().any(|f| f.name == name) {
                        return Err(PlanError::InvalidParameter {
                            node: id,
                            field: "input",
                            message: format!("the input already has a field `{name}`, which vector_search adds; rename it with a map first"),
                        });
                    }
                    all.push(Field::required(name, ty));
                }
                shape.schema = Schema::new(all);
                shape.append_only = true;
                self.push(NodePlan {
                    id,
                    kind: NodeKind::VectorSearch {
                        input,
                        collection: v.collection.clone(),
                        vector,
                        k,
                        filter: v.filter.clone().unwrap_or_default().into_iter().collect(),
                    },
                    ..shape
                });
            }
            NodeDef::Trigger(t) => {
                let input = self.upstream(&t.input);
                if !matches!(
                    self.nodes[input].kind,
                    NodeKind::WindowAggregate { .. } | NodeKind::Aggregate { .. }
                ) {
                    return Err(PlanError::InvalidParameter {
                        node: id,
                        field: "input",
                        message: format!(
                            "a trigger fires on an aggregate's results, but `{}` is not an aggregate",
                            t.input
                        ),
                    });
                }
                let when = self.expr(&id, "when", &t.when, input)?;
                expect_bool(&id, "when", &when)?;
                let mut shape = self.nodes[input].clone_shape();
                shape.append_only = true;
                self.push(NodePlan {
                    id,
                    kind: NodeKind::Trigger {
                        input,
                        when,
                        topic: t.topic.clone(),
                    },
                    ..shape
                });
            }
        }
        Ok(())
    }

    fn agg(&self, node: &str, d: &AggDef, input: usize) -> Result<AggPlan, PlanError> {
        use crate::definition::AggFn::*;
        check_name("field", &d.name)?;
        let field = format!("aggregates.{}", d.name);
        let expr = match (&d.expr, d.function) {
            (None, Count) => None,
            (Some(text), _) => Some(self.expr(node, &field, text, input)?),
            (None, _) => {
                return Err(PlanError::MissingField {
                    node: node.to_string(),
                    field: "expr",
                    why: "for every aggregate but count",
                })
            }
        };
        if d.k.is_some() && d.function != TopK {
            return Err(PlanError::InvalidParameter {
                node: node.to_string(),
                field: "k",
                message: "only top_k takes `k`".into(),
            });
        }
        let ty = expr
            .as_ref()
            .map(|e| e.data_type().clone())
            .unwrap_or(DataType::Int);
        let numeric = || {
            if ty.is_numeric() || ty == DataType::Any || ty == DataType::Null {
                Ok(())
            } else {
                Err(PlanError::TypeMismatch {
                    node: node.to_string(),
                    field: field.clone(),
                    expected: "a numeric expression".into(),
                    found: ty.to_string(),
                })
            }
        };
        let data_type = match d.function {
            Count | CountDistinct => DataType::Int,
            Sum => {
                numeric()?;
                if ty == DataType::Int {
                    DataType::Int
                } else {
                    DataType::Float
                }
            }
            Avg => {
                numeric()?;
                DataType::Float
            }
            Min | Max => ty.clone(),
            TopK => DataType::List(Box::new(ty.clone())),
        };
        let k = match (d.function, d.k) {
            (TopK, None) => {
                return Err(PlanError::MissingField {
                    node: node.to_string(),
                    field: "k",
                    why: "for top_k",
                })
            }
            (TopK, Some(k)) if k == 0 || k > 10_000 => {
                return Err(PlanError::InvalidParameter {
                    node: node.to_string(),
                    field: "k",
                    message: format!("k must be between 1 and 10000, got {k}"),
                })
            }
            (_, k) => k.unwrap_or(0),
        };
        Ok(AggPlan {
            name: d.name.clone(),
            func: d.function,
            expr,
            k,
            data_type,
        })
    }
}

impl NodePlan {
    /// A copy of the shape (schema, key, flags) with a placeholder kind, for `..` updates.
    fn clone_shape(&self) -> NodePlan {
        NodePlan {
            id: self.id.clone(),
            schema: self.schema.clone(),
            key_type: self.key_type.clone(),
            append_only: self.append_only,
            lateness: self.lateness,
            kind: NodeKind::Union { inputs: vec![] },
        }
    }
}

fn expect_bool(node: &str, field: &str, e: &Expr) -> Result<(), PlanError> {
    match e.data_type() {
        DataType::Bool | DataType::Null | DataType::Any => Ok(()),
        other => Err(PlanError::TypeMismatch {
            node: node.to_string(),
            field: field.to_string(),
            expected: "a boolean expression".into(),
            found: format!("{other} (`{}`)", e.source()),
        }),
    }
}

fn window_spec(w: &WindowDef) -> Result<WindowSpec, PlanError> {
    let id = &w.id;
    let reject = |field: &'static str, present: bool| {
        if present {
            Err(PlanError::InvalidParameter {
                node: id.clone(),
                field,
                message: format!("a {:?} window does not take `{field}`", w.kind).to_lowercase(),
            })
        } else {
            Ok(())
        }
    };
    Ok(match w.kind {
        WindowKind::Tumbling => {
            reject("slide", w.slide.is_some())?;
            reject("gap", w.gap.is_some())?;
            WindowSpec::Tumbling {
                size: positive_duration(id, "size", w.size.as_ref())?,
            }
        }
        WindowKind::Sliding => {
            reject("gap", w.gap.is_some())?;
            let size = positive_duration(id, "size", w.size.as_ref())?;
            let slide = positive_duration(id, "slide", w.slide.as_ref())?;
            if slide > size || size % slide != 0 {
                return Err(PlanError::InvalidParameter {
                    node: id.clone(),
                    field: "slide",
                    message: format!("slide ({slide} ms) must divide size ({size} ms)"),
                });
            }
            if size / slide > 1_000 {
                return Err(PlanError::InvalidParameter {
                    node: id.clone(),
                    field: "slide",
                    message: "size / slide is over 1000: each event would land in too many windows"
                        .into(),
                });
            }
            WindowSpec::Sliding { size, slide }
        }
        WindowKind::Session => {
            reject("size", w.size.is_some())?;
            reject("slide", w.slide.is_some())?;
            WindowSpec::Session {
                gap: positive_duration(id, "gap", w.gap.as_ref())?,
            }
        }
    })
}
