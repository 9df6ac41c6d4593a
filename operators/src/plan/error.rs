//! Everything a definition can get wrong, each with the node and the field.

use thiserror::Error;

use crate::definition::ParseError;
use crate::duration::DurationError;
use crate::expr::ExprError;

/// A definition that cannot run, and why. Each variant is one kind of mistake, so that
/// callers (and tests) can tell them apart without reading messages.
#[derive(Debug, Error)]
pub enum PlanError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("{what} name `{name}` is invalid: use 1–128 letters, digits, `_`, `-` or `.`, starting with a letter or `_`")]
    InvalidName { what: &'static str, name: String },
    #[error("the definition has no inputs: add at least one entry under `inputs`")]
    NoInputs,
    #[error("the definition has {count} {what}; the limit is {limit}")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("id `{id}` is used by more than one input or node")]
    DuplicateId { id: String },
    #[error("topic `{name}` is declared more than once")]
    DuplicateTopic { name: String },
    #[error("output `{name}` is declared more than once")]
    DuplicateOutput { name: String },
    #[error("node `{node}`, field `{field}`: unknown node `{target}` (known: {known})")]
    UnknownNode {
        node: String,
        field: &'static str,
        target: String,
        known: String,
    },
    #[error("input `{node}`: topic `{topic}` does not exist and is not declared under `topics`")]
    UnknownTopic { node: String, topic: String },
    #[error("the graph has a cycle through {}", .nodes.join(" → "))]
    Cycle { nodes: Vec<String> },
    #[error("node `{node}`, field `{field}`: {error}")]
    Expression {
        node: String,
        field: String,
        error: ExprError,
    },
    #[error("node `{node}`, field `{field}`: expected {expected}, found {found}")]
    TypeMismatch {
        node: String,
        field: String,
        expected: String,
        found: String,
    },
    #[error("node `{node}`, field `{field}`: {error}")]
    BadDuration {
        node: String,
        field: &'static str,
        error: DurationError,
    },
    #[error("node `{node}`: field `{field}` is required {why}")]
    MissingField {
        node: String,
        field: &'static str,
        why: &'static str,
    },
    #[error("node `{node}`, field `{field}`: {message}")]
    InvalidParameter {
        node: String,
        field: &'static str,
        message: String,
    },
    #[error("window `{window}` feeds `{consumer}`, a {op}: a window must feed an `aggregate`")]
    WindowNotAggregated {
        window: String,
        consumer: String,
        op: String,
    },
    #[error("node `{node}`: {message}")]
    SchemaMismatch { node: String, message: String },
    #[error("topic `{topic}`, field `{field}`: {message}")]
    BadTopic {
        topic: String,
        field: String,
        message: String,
    },
    #[error("output `{output}`: emit `{wanted}` was asked but node `{node}` emits `{actual}`")]
    EmitMismatch {
        output: String,
        node: String,
        wanted: String,
        actual: String,
    },
}
