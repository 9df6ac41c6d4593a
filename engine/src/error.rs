//! What the engine refuses, and why.

use thiserror::Error;

use starling_operators::json::DecodeError;
use starling_operators::plan::PlanError;

/// An engine operation that could not be done. Nothing of a refused request is applied.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    #[error("topic `{name}` already exists with a different declaration")]
    TopicConflict { name: String },
    #[error("dataflow `{0}` does not exist")]
    UnknownDataflow(String),
    #[error("dataflow `{0}` is already installed; drop it first or use another name")]
    DataflowExists(String),
    #[error("dataflow `{dataflow}` has no output `{output}` (outputs: {known})")]
    UnknownOutput {
        dataflow: String,
        output: String,
        known: String,
    },
    #[error("event {index} of the batch: {error}")]
    BadEvent { index: usize, error: DecodeError },
    #[error("event {index} of the batch: {message}")]
    BadEventShape { index: usize, message: String },
    #[error("topic `{0}` is written only by dataflows (it has no event-time field)")]
    WriteOnlyTopic(String),
    #[error("batch of {size} events is over the limit of {limit}")]
    BatchTooLarge { size: usize, limit: usize },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("every worker's queue is full; retry shortly")]
    Busy,
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("could not start the timely workers: {0}")]
    Startup(String),
    /// The event log refused or failed the write: nothing of the batch was acknowledged.
    #[error("storage: {0}")]
    Storage(#[from] starling_storage::StorageError),
    #[error(transparent)]
    Catalog(#[from] crate::durable::CatalogError),
    /// The definition writes or reads KV views or series, and this engine has no storage.
    #[error("dataflow `{0}` uses KV views or series, but this node runs without storage (durability `none`)")]
    NoStorage(String),
    /// A request that does not make sense (bad limit, bad range, ...); the message says why.
    #[error("{0}")]
    BadRequest(String),
    /// A fault inside the engine (a bug, not the caller's input).
    #[error("internal error: {0}")]
    Internal(String),
    /// The cluster could not serve the request now (no Raft leader, an owner unreachable, a
    /// shard hand-off that did not finish in time): nothing, or the part the message names,
    /// was applied; retry.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// A forwarded write was fenced: its epoch or owner does not match this node's table.
    #[error("{0}")]
    StaleEpoch(String),
    /// The log or catalog could not be replayed; the node must not run with partial state.
    #[error("recovery failed: {0}")]
    Recovery(String),
}
