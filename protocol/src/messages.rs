//! The messages of the client protocol: one [`Request`] per stream, answered by one
//! [`Response`] frame (or, for subscriptions, a frame per batch).
//!
//! Values travel flat ([`crate::value`]), so validating hostile bytes never recurses deeply.

use rkyv::{Archive, Deserialize, Serialize};

use crate::peer::{Fetched, PeerRequest};
use crate::value::WireValue;

/// One update of a dataflow output.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WireUpdate {
    /// The key, one flat value.
    pub key: Vec<WireValue>,
    /// The event time of the result.
    pub event_time: u64,
    /// The result row, flat.
    pub row: Vec<WireValue>,
    /// The dataflow time of the update.
    pub time: u64,
    /// +1 for an insertion, -1 for a retraction.
    pub diff: i64,
}

/// One event appended to a topic.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WireEvent {
    /// The key, one flat value.
    pub key: Vec<WireValue>,
    /// Event time, milliseconds since the Unix epoch.
    pub time: u64,
    /// The event's row, flat.
    pub row: Vec<WireValue>,
}

/// A topic in a listing.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WireTopic {
    /// The topic's name.
    pub name: String,
    /// (field name, type name) in row order.
    pub fields: Vec<(String, String)>,
    /// The key field, if any.
    pub key: Option<String>,
    /// The event-time field (none for topics only dataflows write).
    pub time: Option<String>,
    /// Events accepted so far.
    pub published: u64,
    /// Newest event time seen.
    pub max_event_time: Option<u64>,
    /// Live subscribers.
    pub subscribers: u64,
}

/// An installed dataflow in a listing.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WireDataflow {
    /// The dataflow's name.
    pub name: String,
    /// (input id, topic).
    pub inputs: Vec<(String, String)>,
    /// Output names.
    pub outputs: Vec<String>,
    /// Every result up to here is out.
    pub frontier: u64,
    /// Events that arrived after their window closed.
    pub late_events: u64,
    /// Events sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Updates emitted on all outputs.
    pub output_updates: u64,
}

/// What a client asks for; one per stream.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Request {
    /// Typed rows in the topic's field order (the fast path). Answered with `Ack`.
    Publish {
        /// The topic to append to.
        topic: String,
        /// One flat row per event.
        rows: Vec<Vec<WireValue>>,
    },
    /// Newline-delimited JSON objects. Answered with `Ack`.
    PublishJson {
        /// The topic to append to.
        topic: String,
        /// One JSON object per line; blank lines are skipped.
        ndjson: Vec<u8>,
    },
    /// A definition as YAML or JSON. Answered with `Submitted`.
    Submit {
        /// The definition text.
        definition: String,
    },
    /// Streams `Updates` frames until the client stops the stream.
    SubscribeOutput {
        /// The dataflow's name.
        dataflow: String,
        /// The output's name.
        output: String,
    },
    /// Streams `Events` frames until the client stops the stream.
    SubscribeTopic {
        /// The topic's name.
        topic: String,
    },
    /// The live value of a key in a KV view. Answered with `KvValue`.
    KvGet {
        /// The view.
        view: String,
        /// The key (a string key as is, others as JSON text).
        key: String,
    },
    /// A page of a KV view. Answered with `KvPage`.
    KvScan {
        /// The view.
        view: String,
        /// Only keys starting with this.
        prefix: String,
        /// Start after this key (the previous page's `next`).
        after: Option<String>,
        /// Page size, 1 to 10 000.
        limit: u32,
    },
    /// Points of a time series. Answered with `Points`.
    SeriesRange {
        /// The series.
        series: String,
        /// The key.
        key: String,
        /// Window starts from (inclusive), ms.
        from: u64,
        /// Window starts to (exclusive), ms.
        to: u64,
        /// At most this many, 1 to 10 000.
        limit: u32,
    },
    /// Nearest points of a vector collection. Answered with `Hits`.
    VectorSearch {
        /// The collection.
        collection: String,
        /// The query vector (the collection's dimension).
        vector: Vec<f32>,
        /// How many, 1 to 1000.
        k: u32,
        /// Only points whose metadata has these fields, as a JSON object (empty: all).
        filter_json: String,
    },
    /// Answered with `Topics`.
    ListTopics,
    /// Answered with `Dataflows`.
    ListDataflows,
    /// A node-to-node request (see [`crate::peer`]). Every request frame carries one tag
    /// space, as Kafka's API keys do, so a listener can tell any request it must not serve
    /// from a malformed one: the client port refuses this variant (`peer_only`), the peer
    /// listener accepts nothing else. Last, so the public variants keep their tags.
    Peer(PeerRequest),
}

/// What the server answers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Response {
    /// The whole batch was accepted.
    Ack {
        /// Events accepted (the whole batch).
        accepted: u64,
    },
    /// The request was refused (nothing of it applied) or a subscription ended.
    Error {
        /// One of [`codes`].
        code: String,
        /// What went wrong and what to fix, for people.
        message: String,
    },
    /// A batch of output updates (the first frame of a subscription is an empty batch).
    Updates(Vec<WireUpdate>),
    /// A batch of topic events (the first frame of a subscription is an empty batch).
    Events(Vec<WireEvent>),
    /// The definition is installed.
    Submitted {
        /// The dataflow's name.
        name: String,
    },
    /// Every topic.
    Topics(Vec<WireTopic>),
    /// Every installed dataflow.
    Dataflows(Vec<WireDataflow>),
    /// A KV value as JSON text, or `None` when absent or expired.
    KvValue(Option<String>),
    /// A page of `(key, JSON value)`; `next` is the cursor when more may follow.
    KvPage {
        /// Entries in key order.
        items: Vec<(String, String)>,
        /// Pass as `after` for the next page.
        next: Option<String>,
    },
    /// Series points as `(time, JSON value)`.
    Points(Vec<(u64, String)>),
    /// Vector hits as `(key, distance, JSON metadata)`, nearest first.
    Hits(Vec<(String, f32, String)>),
    /// The answer to a `Raft` request (serialised by the cluster crate).
    Raft(Vec<u8>),
    /// The answer to a `Fetch`.
    Fetched(Vec<Fetched>),
}

impl Response {
    /// An error response.
    pub fn error(code: &str, message: impl Into<String>) -> Response {
        Response::Error {
            code: code.into(),
            message: message.into(),
        }
    }
}
