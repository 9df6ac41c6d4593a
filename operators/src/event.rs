//! Events and rows.

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// A positional row: one value per schema field.
pub type Row = Vec<Value>;

/// An event in a topic: `(key, event time, row)`.
///
/// The key and the event time are copies of fields named in the topic's declaration, kept
/// beside the row so that routing and windowing never look into the row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    pub key: Value,
    /// Event time, milliseconds since the Unix epoch.
    pub time: u64,
    pub row: Row,
}

impl Event {
    /// Builds an event.
    pub fn new(key: Value, time: u64, row: Row) -> Event {
        Event { key, time, row }
    }
}
