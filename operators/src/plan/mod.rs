//! The checked plan of a definition: names resolved to positions, expressions compiled,
//! durations in milliseconds, the graph in topological order.
//!
//! Everything a definition can get wrong is found here, before anything runs, and reported
//! with the node and the field (see [`PlanError`]). Rendering trusts a plan completely.

mod build;
mod error;
pub mod stages;

pub use build::{plan, SYSTEM_TOPIC_FIELDS};
pub use error::PlanError;

use crate::definition::{AggFn, EmitMode};
use crate::expr::Expr;
use crate::schema::Schema;
use crate::value::DataType;

/// A topic as the engine knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicSpec {
    pub name: String,
    pub schema: Schema,
    /// Position of the key field; `None` means every event has the null key.
    pub key: Option<usize>,
    /// Position of the event-time field; `None` for topics only dataflows write (their
    /// events carry key and time already).
    pub time: Option<usize>,
    /// When a publish is acknowledged in a replicated cluster.
    pub acks: crate::definition::Acks,
    /// With `acks = all`, the fewest in-sync copies a shard needs to take a publish.
    pub min_insync: u32,
}

/// A checked definition, ready to render on every worker.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    /// Topics the engine must create before installing (declared ones that do not exist yet,
    /// the targets of `publish`/`trigger`, the late and dead-letter topics).
    pub new_topics: Vec<TopicSpec>,
    pub inputs: Vec<InputPlan>,
    /// In topological order: a node only reads nodes before it.
    pub nodes: Vec<NodePlan>,
    pub outputs: Vec<OutputPlan>,
    pub late_topic: String,
    pub dead_letter_topic: String,
}

/// One input and its watermark policy.
#[derive(Clone, Debug)]
pub struct InputPlan {
    pub id: String,
    pub topic: String,
    pub schema: Schema,
    pub watermark: WatermarkPolicy,
}

/// Watermark policy of an input, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatermarkPolicy {
    pub max_delay: u64,
    /// Zero disables idleness.
    pub idle_timeout: u64,
    pub allowed_lateness: u64,
}

/// One node of the plan.
#[derive(Clone, Debug)]
pub struct NodePlan {
    pub id: String,
    /// Schema of the rows this node emits.
    pub schema: Schema,
    /// Type of the key of the events this node emits.
    pub key_type: DataType,
    /// Whether the node only ever emits insertions (+1). Retracting inputs need costlier state.
    pub append_only: bool,
    /// The largest allowed lateness of the inputs upstream; bounds how long state is kept.
    pub lateness: u64,
    pub kind: NodeKind,
}

/// What a node does; inputs are indices into [`Plan::nodes`].
#[derive(Clone, Debug)]
pub enum NodeKind {
    Input {
        input: usize,
    },
    Map {
        input: usize,
        exprs: Vec<Expr>,
    },
    Filter {
        input: usize,
        predicate: Expr,
    },
    KeyBy {
        input: usize,
        key: Expr,
    },
    WindowAggregate {
        input: usize,
        window: WindowSpec,
        aggs: Vec<AggPlan>,
        emit: EmitMode,
    },
    Aggregate {
        input: usize,
        aggs: Vec<AggPlan>,
    },
    IntervalJoin {
        left: usize,
        right: usize,
        within: u64,
    },
    TableJoin {
        left: usize,
        right: usize,
    },
    Distinct {
        input: usize,
        ttl: u64,
    },
    Union {
        inputs: Vec<usize>,
    },
    Publish {
        input: usize,
        topic: String,
    },
    Trigger {
        input: usize,
        when: Expr,
        topic: String,
    },
    /// Latest row per key into a KV view.
    KvPut {
        input: usize,
        view: String,
        ttl_ms: Option<u64>,
    },
    /// Adds `fields` read from a KV view under `key` (the event key when `None`).
    KvLookup {
        input: usize,
        view: String,
        key: Option<Expr>,
        fields: Vec<crate::schema::Field>,
    },
    /// A windowed aggregate's results per key and window start into a time series.
    Series {
        input: usize,
        name: String,
    },
    /// Adds a vector computed from a text expression.
    Embed {
        input: usize,
        text: Expr,
        dim: usize,
    },
    /// Latest vector per key into a collection.
    VectorUpsert {
        input: usize,
        collection: String,
        vector: Expr,
        dim: usize,
        metric: starling_storage::Metric,
    },
    /// `k` nearest entries per event.
    VectorSearch {
        input: usize,
        collection: String,
        vector: Expr,
        k: usize,
        filter: Vec<(String, serde_json::Value)>,
    },
}

impl NodeKind {
    /// The nodes this one reads.
    pub fn inputs(&self) -> Vec<usize> {
        match self {
            NodeKind::Input { .. } => vec![],
            NodeKind::Map { input, .. }
            | NodeKind::Filter { input, .. }
            | NodeKind::KeyBy { input, .. }
            | NodeKind::WindowAggregate { input, .. }
            | NodeKind::Aggregate { input, .. }
            | NodeKind::Distinct { input, .. }
            | NodeKind::Publish { input, .. }
            | NodeKind::Trigger { input, .. }
            | NodeKind::KvPut { input, .. }
            | NodeKind::KvLookup { input, .. }
            | NodeKind::Series { input, .. }
            | NodeKind::Embed { input, .. }
            | NodeKind::VectorUpsert { input, .. }
            | NodeKind::VectorSearch { input, .. } => vec![*input],
            NodeKind::IntervalJoin { left, right, .. } | NodeKind::TableJoin { left, right } => {
                vec![*left, *right]
            }
            NodeKind::Union { inputs } => inputs.clone(),
        }
    }
}

/// Event-time window shapes, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowSpec {
    Tumbling { size: u64 },
    Sliding { size: u64, slide: u64 },
    Session { gap: u64 },
}

/// One aggregate column.
#[derive(Clone, Debug)]
pub struct AggPlan {
    pub name: String,
    pub func: AggFn,
    /// `None` only for `count`.
    pub expr: Option<Expr>,
    /// For `top_k`.
    pub k: usize,
    pub data_type: DataType,
}

/// A named result.
#[derive(Clone, Debug)]
pub struct OutputPlan {
    pub name: String,
    pub node: usize,
    pub schema: Schema,
    pub emit: EmitMode,
}

impl Plan {
    /// Whether the plan reads or writes a node's state stores (KV views, series), which a
    /// node without storage cannot run.
    pub fn uses_stores(&self) -> bool {
        self.nodes.iter().any(|n| {
            matches!(
                n.kind,
                NodeKind::KvPut { .. }
                    | NodeKind::KvLookup { .. }
                    | NodeKind::Series { .. }
                    | NodeKind::VectorUpsert { .. }
                    | NodeKind::VectorSearch { .. }
            )
        })
    }

    /// Finds a node by id.
    pub fn node_index(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }
}
