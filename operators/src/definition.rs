//! The dataflow definition as the user writes it (YAML or JSON), and nothing else.
//!
//! This is a plain serde model: it says what the text may contain, rejects unknown fields,
//! and keeps every value as written (durations and expressions stay strings). Checking what
//! the text *means* is [`crate::plan`]'s job, so that both formats share one set of errors.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A whole definition: the topics it declares, its inputs, its operator graph, its outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// Unique among the definitions installed on a node; letters, digits, `_`, `-`, `.`.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Topics this definition reads or writes that may not exist yet. A topic that already
    /// exists must be declared identically.
    #[serde(default)]
    pub topics: Vec<TopicDef>,
    /// Where events enter: one per topic read, each with its own watermark policy.
    pub inputs: Vec<InputDef>,
    /// The operator graph. Order does not matter; references must form a DAG.
    #[serde(default)]
    pub nodes: Vec<NodeDef>,
    /// Named results that subscribers can read.
    #[serde(default)]
    pub outputs: Vec<OutputDef>,
    /// Where events later than `allowed_lateness` go (default `<name>.late`).
    #[serde(default)]
    pub late_topic: Option<String>,
    /// Where events whose expression failed go, with the error (default `<name>.dead`).
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

/// A topic declaration: a schema plus which fields are the key and the event time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicDef {
    pub name: String,
    /// The field that routes events (to a worker now, to a shard in a cluster). Omit for
    /// topics without a natural key: all events then share the null key.
    #[serde(default)]
    pub key: Option<String>,
    /// The field holding event time (`timestamp` or `int` milliseconds).
    pub time: String,
    pub fields: Vec<FieldDef>,
    /// When a publish is acknowledged in a cluster with replication: `all` (the default)
    /// after every in-sync replica of each shard copied it, `leader` as soon as the shard's
    /// owner logged it.
    #[serde(default, skip_serializing_if = "Acks::is_default")]
    pub acks: Acks,
    /// With `acks: all`, the fewest copies of a shard (its owner included) that must hold a
    /// publish before it is answered (Kafka's `min.insync.replicas`, default 1). With fewer
    /// in-sync copies the publish is refused before anything is logged, so that a cluster
    /// down to one copy does not quietly acknowledge what one more loss would lose.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub min_insync: u32,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// The most copies a cluster keeps of a shard (`starling node --replication`), so the
/// largest `min_insync` that can ever be met.
pub const MAX_COPIES: u32 = 7;

/// When a replicated publish is acknowledged (Kafka's `acks`, with its default since 3.0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Acks {
    /// Once the shard's owner logged the events: a crash of the owner before its replicas
    /// copied them loses them.
    Leader,
    /// Once every in-sync replica copied them as well: no single node's loss loses them.
    #[default]
    All,
}

impl Acks {
    /// Whether this is the default (`all`), which is left out when a declaration is written.
    pub fn is_default(&self) -> bool {
        *self == Acks::All
    }
}

/// A schema field as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    pub name: String,
    /// `bool`, `int`, `float`, `string`, `bytes`, `timestamp`, `list<T>`, `map<T>`,
    /// `vector<N>`, `any`.
    #[serde(rename = "type")]
    pub data_type: String,
    #[serde(default)]
    pub optional: bool,
    /// The value an absent optional field takes (JSON, checked against the type).
    #[serde(default)]
    pub default: Option<serde_json::Value>,
}

/// An input: a topic read by this definition, with its watermark policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputDef {
    /// The node id other nodes use to refer to this input.
    pub id: String,
    pub topic: String,
    #[serde(default)]
    pub watermark: WatermarkDef,
}

/// How far behind the newest event the watermark trails, and what counts as late.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkDef {
    /// Bounded out-of-orderness: the watermark is the newest event time seen minus this
    /// (default `0s`).
    #[serde(default)]
    pub max_delay: Option<String>,
    /// When no event arrives for this long (wall-clock), the watermark moves up to the newest
    /// event time seen, so windows close on a quiet stream (default `5s`; `0s` disables).
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// How long after the watermark passes a window a late event still corrects it
    /// (default `0s`). Later events go to the late topic.
    #[serde(default)]
    pub allowed_lateness: Option<String>,
}

/// One operator of the graph. The `op` field selects the kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum NodeDef {
    Map(MapDef),
    /// Same as `map`; the name SQL users look for.
    Project(MapDef),
    Filter(FilterDef),
    KeyBy(KeyByDef),
    Window(WindowDef),
    Aggregate(AggregateDef),
    Join(JoinDef),
    Distinct(DistinctDef),
    Union(UnionDef),
    Publish(PublishDef),
    Trigger(TriggerDef),
    KvPut(KvPutDef),
    KvLookup(KvLookupDef),
    Series(SeriesDef),
    Embed(EmbedDef),
    VectorUpsert(VectorUpsertDef),
    VectorSearch(VectorSearchDef),
}

impl NodeDef {
    /// The node's id.
    pub fn id(&self) -> &str {
        match self {
            NodeDef::Map(d) | NodeDef::Project(d) => &d.id,
            NodeDef::Filter(d) => &d.id,
            NodeDef::KeyBy(d) => &d.id,
            NodeDef::Window(d) => &d.id,
            NodeDef::Aggregate(d) => &d.id,
            NodeDef::Join(d) => &d.id,
            NodeDef::Distinct(d) => &d.id,
            NodeDef::Union(d) => &d.id,
            NodeDef::Publish(d) => &d.id,
            NodeDef::Trigger(d) => &d.id,
            NodeDef::KvPut(d) => &d.id,
            NodeDef::KvLookup(d) => &d.id,
            NodeDef::Series(d) => &d.id,
            NodeDef::Embed(d) => &d.id,
            NodeDef::VectorUpsert(d) => &d.id,
            NodeDef::VectorSearch(d) => &d.id,
        }
    }

    /// The `op` name as written.
    pub fn op(&self) -> &'static str {
        match self {
            NodeDef::Map(_) => "map",
            NodeDef::Project(_) => "project",
            NodeDef::Filter(_) => "filter",
            NodeDef::KeyBy(_) => "key_by",
            NodeDef::Window(_) => "window",
            NodeDef::Aggregate(_) => "aggregate",
            NodeDef::Join(_) => "join",
            NodeDef::Distinct(_) => "distinct",
            NodeDef::Union(_) => "union",
            NodeDef::Publish(_) => "publish",
            NodeDef::Trigger(_) => "trigger",
            NodeDef::KvPut(_) => "kv_put",
            NodeDef::KvLookup(_) => "kv_lookup",
            NodeDef::Series(_) => "series",
            NodeDef::Embed(_) => "embed",
            NodeDef::VectorUpsert(_) => "vector_upsert",
            NodeDef::VectorSearch(_) => "vector_search",
        }
    }

    /// The ids this node reads from, with the field that names each.
    pub fn upstream(&self) -> Vec<(&'static str, &str)> {
        match self {
            NodeDef::Map(d) | NodeDef::Project(d) => vec![("input", &d.input)],
            NodeDef::Filter(d) => vec![("input", &d.input)],
            NodeDef::KeyBy(d) => vec![("input", &d.input)],
            NodeDef::Window(d) => vec![("input", &d.input)],
            NodeDef::Aggregate(d) => vec![("input", &d.input)],
            NodeDef::Join(d) => vec![("left", &d.left), ("right", &d.right)],
            NodeDef::Distinct(d) => vec![("input", &d.input)],
            NodeDef::Union(d) => d.inputs.iter().map(|i| ("inputs", i.as_str())).collect(),
            NodeDef::Publish(d) => vec![("input", &d.input)],
            NodeDef::Trigger(d) => vec![("input", &d.input)],
            NodeDef::KvPut(d) => vec![("input", &d.input)],
            NodeDef::KvLookup(d) => vec![("input", &d.input)],
            NodeDef::Series(d) => vec![("input", &d.input)],
            NodeDef::Embed(d) => vec![("input", &d.input)],
            NodeDef::VectorUpsert(d) => vec![("input", &d.input)],
            NodeDef::VectorSearch(d) => vec![("input", &d.input)],
        }
    }
}

/// `map` / `project`: computes a new row, one expression per output field, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapDef {
    pub id: String,
    pub input: String,
    /// Output fields in order: `[{name: expr}, ...]` (each entry a one-key map).
    pub fields: Vec<indexmap_like::NamedExpr>,
}

/// `filter`: keeps the events for which `where` is true (null counts as false).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterDef {
    pub id: String,
    pub input: String,
    #[serde(rename = "where")]
    pub predicate: String,
}

/// `key_by`: re-keys events by an expression; keyed operators downstream group by it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyByDef {
    pub id: String,
    pub input: String,
    pub key: String,
}

/// `window`: assigns event-time windows; must feed an `aggregate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowDef {
    pub id: String,
    pub input: String,
    pub kind: WindowKind,
    /// Window length (tumbling, sliding).
    #[serde(default)]
    pub size: Option<String>,
    /// Distance between window starts (sliding).
    #[serde(default)]
    pub slide: Option<String>,
    /// Inactivity that closes a session (session).
    #[serde(default)]
    pub gap: Option<String>,
}

/// The window shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    Tumbling,
    Sliding,
    Session,
}

/// `aggregate`: per key (and per window if its input is a `window`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateDef {
    pub id: String,
    pub input: String,
    pub aggregates: Vec<AggDef>,
    /// `final` (windowed default: once per window, corrections as retraction + new value) or
    /// `updates` (every change as −old/+new; the only mode without a window).
    #[serde(default)]
    pub emit: Option<EmitMode>,
}

/// One aggregate column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggDef {
    /// Output field name.
    pub name: String,
    #[serde(rename = "fn")]
    pub function: AggFn,
    /// The aggregated expression; not used by `count`.
    #[serde(default)]
    pub expr: Option<String>,
    /// How many entries `top_k` keeps.
    #[serde(default)]
    pub k: Option<usize>,
}

/// Aggregate functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggFn {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    CountDistinct,
    TopK,
}

/// When results of a windowed aggregate are emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmitMode {
    Final,
    Updates,
}

/// `join`: `interval` (stream–stream, on equal keys, event times at most `within` apart) or
/// `table` (each left event meets the latest right value for its key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinDef {
    pub id: String,
    pub left: String,
    pub right: String,
    pub kind: JoinKind,
    /// Interval joins: the largest distance between the two event times.
    #[serde(default)]
    pub within: Option<String>,
}

/// Join kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinKind {
    Interval,
    Table,
}

/// `distinct`: passes the first occurrence of each (key, row) and forgets it after `ttl` of
/// event time, so state stays bounded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistinctDef {
    pub id: String,
    pub input: String,
    pub ttl: String,
}

/// `union`: merges inputs with identical schemas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnionDef {
    pub id: String,
    pub inputs: Vec<String>,
}

/// `publish`: writes the node's insertions to a topic (created with the node's schema if it
/// does not exist), so other definitions and subscribers can read them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishDef {
    pub id: String,
    pub input: String,
    pub topic: String,
}

/// `trigger`: when an aggregate's result satisfies `when`, publishes it to `topic` once
/// (a correction that still satisfies it does not fire again).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerDef {
    pub id: String,
    pub input: String,
    pub when: String,
    pub topic: String,
}

/// A named result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputDef {
    pub name: String,
    pub from: String,
    /// If given, must match the node's emission mode (a check on the reader's expectation).
    #[serde(default)]
    pub emit: Option<EmitMode>,
}

/// Ordered `name: expr` entries.
pub mod indexmap_like {
    use serde::de::{Error as _, MapAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// One `name: expression` entry of a `map`.
    #[derive(Clone, Debug, PartialEq)]
    pub struct NamedExpr {
        pub name: String,
        pub expr: String,
    }

    impl Serialize for NamedExpr {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry(&self.name, &self.expr)?;
            m.end()
        }
    }

    impl<'de> Deserialize<'de> for NamedExpr {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = NamedExpr;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    write!(f, "a one-entry map `name: expression`")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<NamedExpr, A::Error> {
                    let Some((name, expr)) = m.next_entry::<String, ExprText>()? else {
                        return Err(A::Error::custom("empty entry: expected `name: expression`"));
                    };
                    if m.next_entry::<String, ExprText>()?.is_some() {
                        return Err(A::Error::custom(
                            "an entry has more than one key: write one `name: expression` per list item",
                        ));
                    }
                    Ok(NamedExpr { name, expr: expr.0 })
                }
            }
            d.deserialize_map(V)
        }
    }

    /// Accepts an expression written as a string, a number or a boolean (YAML turns `x: 1`
    /// into a number).
    struct ExprText(String);
    impl<'de> Deserialize<'de> for ExprText {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            match serde_json::Value::deserialize(d)? {
                serde_json::Value::String(s) => Ok(ExprText(s)),
                serde_json::Value::Number(n) => Ok(ExprText(n.to_string())),
                serde_json::Value::Bool(b) => Ok(ExprText(b.to_string())),
                other => Err(D::Error::custom(format!(
                    "expected an expression string, found {other}"
                ))),
            }
        }
    }
}

/// Why a definition's text could not be read.
#[derive(Debug, Error)]
pub enum ParseError {
    #[error("definition is not valid YAML for a Starling definition: {0}")]
    Yaml(String),
    #[error("definition is not valid JSON for a Starling definition: {0}")]
    Json(String),
    #[error("definition is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
}

/// The largest definition text accepted, so that a hostile submission cannot exhaust memory.
pub const MAX_DEFINITION_BYTES: usize = 1 << 20;

impl Definition {
    /// Reads a definition from YAML (JSON is also YAML, but use [`Definition::from_json`] for
    /// JSON bodies to get JSON's error positions).
    pub fn from_yaml(text: &str) -> Result<Definition, ParseError> {
        check_size(text)?;
        check_flow_depth(text)?;
        serde_yaml_ng::from_str(text).map_err(|e| ParseError::Yaml(e.to_string()))
    }

    /// Reads a definition from JSON.
    pub fn from_json(text: &str) -> Result<Definition, ParseError> {
        check_size(text)?;
        serde_json::from_str(text).map_err(|e| ParseError::Json(e.to_string()))
    }

    /// Reads JSON if the text starts with `{`, YAML otherwise.
    pub fn parse(text: &str) -> Result<Definition, ParseError> {
        if text.trim_start().starts_with('{') {
            Definition::from_json(text)
        } else {
            Definition::from_yaml(text)
        }
    }
}

/// Deepest `[`/`{` nesting accepted in YAML. The YAML parser refuses more than 128 levels
/// anyway, but only after a scan that is quadratic in the depth (100 000 brackets, 200 KB,
/// took ~50 s), so deeper texts are refused before parsing.
const MAX_FLOW_DEPTH: usize = 128;

/// Refuses YAML whose flow collections nest deeper than [`MAX_FLOW_DEPTH`]. Brackets inside
/// quoted strings and comments do not count; unquoted ones in plain scalars do, which can
/// only over-count (a definition nesting that deep could not be parsed anyway).
fn check_flow_depth(text: &str) -> Result<(), ParseError> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let (mut comment, mut escaped, mut prev) = (false, false, '\n');
    for c in text.chars() {
        if comment {
            comment = c != '\n';
        } else if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if q == '"' && c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
        } else {
            // Quoted scalars and comments only start at the beginning of a token.
            let token_start = prev.is_whitespace() || matches!(prev, '[' | '{' | ',' | ':');
            match c {
                '\'' | '"' if token_start => quote = Some(c),
                '#' if prev.is_whitespace() => comment = true,
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err(ParseError::Yaml(format!(
                            "collections are nested more than {MAX_FLOW_DEPTH} levels deep"
                        )));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        prev = c;
    }
    Ok(())
}

fn check_size(text: &str) -> Result<(), ParseError> {
    if text.len() > MAX_DEFINITION_BYTES {
        return Err(ParseError::TooLarge {
            size: text.len(),
            limit: MAX_DEFINITION_BYTES,
        });
    }
    Ok(())
}

/// `kv_put`: keeps the latest row per key in a named key-value view that agents read back
/// (`GET /v1/kv/{view}/{key}`) and other definitions enrich with (`kv_lookup`). Fed by an
/// aggregate, the view holds each key's current result (a retraction without a new value
/// deletes the key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvPutDef {
    pub id: String,
    pub input: String,
    pub view: String,
    /// Entries expire this long after they were written (wall clock, like Redis `EX`);
    /// omitted: never.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// `kv_lookup`: enriches each event with the fields of the view entry under its key (a
/// stream–table join against a view). `fields` declares what is read and its types; absent
/// keys or fields give the field's default (null unless declared).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvLookupDef {
    pub id: String,
    pub input: String,
    pub view: String,
    /// The lookup key; defaults to the event's key.
    #[serde(default)]
    pub key: Option<String>,
    pub fields: Vec<FieldDef>,
}

/// `series`: stores a windowed aggregate's results per key and window start in a named time
/// series, served by range queries (`GET /v1/series/{name}/{key}?from=&to=`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesDef {
    pub id: String,
    pub input: String,
    pub name: String,
}

/// `embed`: adds a vector field computed from a text expression by the built-in embedder
/// (signed feature hashing of words, word pairs and character trigrams; see
/// `docs/definitions.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedDef {
    pub id: String,
    pub input: String,
    /// A string expression: the text to embed.
    pub text: String,
    /// Name of the added field (default `embedding`).
    #[serde(default)]
    pub field: Option<String>,
    /// Dimension of the vector (default 256).
    #[serde(default)]
    pub dim: Option<usize>,
}

/// `vector_upsert`: keeps the latest vector per key in a vector collection (created with
/// `metric` and the vector's dimension if it does not exist), with the row as metadata; a
/// retraction with no new value deletes the key. Searched by `vector_search` and
/// `POST /v1/vectors/{collection}/search`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorUpsertDef {
    pub id: String,
    pub input: String,
    pub collection: String,
    /// A `vector<N>` expression (often a field added by `embed`).
    pub vector: String,
    /// `cosine` (default), `l2` or `inner_product`.
    #[serde(default)]
    pub metric: Option<String>,
}

/// `vector_search`: for each event, the `k` nearest entries of a collection to a vector
/// expression, one output row per match (the event's fields, then `match_key`,
/// `match_distance`, `match_rank` from 1, and `match` — the stored row).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorSearchDef {
    pub id: String,
    pub input: String,
    pub collection: String,
    pub vector: String,
    /// How many matches per event (default 5, at most 1000).
    #[serde(default)]
    pub k: Option<usize>,
    /// Only entries whose stored row has these field values (JSON equality).
    #[serde(default)]
    pub filter: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_default_to_all_and_a_wrong_value_is_refused() {
        let t: TopicDef =
            serde_json::from_str(r#"{"name":"t","time":"ts","fields":[]}"#).expect("parses");
        assert_eq!(t.acks, Acks::All);
        let t: TopicDef =
            serde_json::from_str(r#"{"name":"t","time":"ts","fields":[],"acks":"leader"}"#)
                .expect("parses");
        assert_eq!(t.acks, Acks::Leader);
        // The default is left out when written, so existing declarations read back the same.
        assert!(!serde_json::to_string(&TopicDef {
            acks: Acks::All,
            ..t.clone()
        })
        .unwrap()
        .contains("acks"));
        assert_eq!(t.min_insync, 1);
        assert!(!serde_json::to_string(&t).unwrap().contains("min_insync"));
        let e = serde_json::from_str::<TopicDef>(
            r#"{"name":"t","time":"ts","fields":[],"acks":"most"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("leader"), "{e}");
    }
}
