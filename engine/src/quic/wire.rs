//! The wire format of the QUIC front door.
//!
//! One bidirectional stream per operation. Each message is a frame: a `u32` little-endian
//! length, then that many bytes of an rkyv archive of a [`Request`] (client → server) or a
//! [`Response`] (server → client). The client sends one request frame and finishes its side;
//! the server answers with one frame (or, for subscriptions, a frame per batch) and finishes.
//!
//! Values travel flat: a row is a `Vec<WireValue>` in which a nested value is written in
//! pre-order, `List(n)` followed by its `n` elements and `Map(n)` followed by `n` pairs of
//! (`Str` key, value). Flat rows keep the archive non-recursive, so validating hostile bytes
//! can never recurse deeply; nesting is limited to [`MAX_DEPTH`] when decoding.
//!
//! Network bytes are always validated (`rkyv::access` with bytecheck) before use.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

pub use starling_operators::flat::{
    push_value, row_from_wire, row_to_wire, take_value, value_from_wire, ArchivedWireValue, Cell,
    FlatCell, WireValue, MAX_DEPTH,
};
use starling_operators::render::Update;
use starling_operators::Event;

/// The largest frame either side accepts (16 MiB). A bigger length prefix is answered with a
/// `too_large` error frame and the stream is closed; the claimed size is never allocated.
pub const MAX_FRAME: usize = 16 << 20;

/// Stable error codes of [`Response::Error`], the same words the HTTP front door uses.
pub mod codes {
    /// The request is malformed or refers to data that does not fit (the message says which).
    pub const BAD_REQUEST: &str = "bad_request";
    /// The topic, dataflow or output does not exist.
    pub const NOT_FOUND: &str = "not_found";
    /// A dataflow or topic of that name exists already with another declaration.
    pub const CONFLICT: &str = "conflict";
    /// The frame or batch is over a documented limit.
    pub const TOO_LARGE: &str = "too_large";
    /// A per-connection limit is reached; retry later.
    pub const BUSY: &str = "busy";
    /// The engine is shutting down.
    pub const UNAVAILABLE: &str = "unavailable";
    /// The node's storage refused the write (disk full, unwritable data directory): nothing
    /// of the batch was acknowledged; retry later or elsewhere.
    pub const STORAGE_UNAVAILABLE: &str = "storage_unavailable";
    /// A fault on the server side.
    pub const INTERNAL: &str = "internal";
    /// A subscription was cut off for reading too slowly.
    pub const CUT_OFF: &str = "cut_off";
    /// A subscription ended because its dataflow or topic went away.
    pub const ENDED: &str = "ended";
    /// A forwarded write carried an older epoch than the receiver knows, or went to a node
    /// that does not own the shard: nothing was applied; re-route by the current table.
    pub const STALE_EPOCH: &str = "stale_epoch";
}

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

/// One shard's part of one window operator's state, handed from a shard's old owner to its
/// new one (see [`crate::runtime::ShardPart`]).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WireShardPart {
    /// The dataflow (or stage) holding the operator.
    pub dataflow: String,
    /// The operator's node id.
    pub node: String,
    /// The shard.
    pub shard: u32,
    /// The state, an archive the receiver validates.
    pub bytes: Vec<u8>,
}

/// One (topic, shard) log a replica copies, and how far its copy goes.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FetchItem {
    /// The topic.
    pub topic: String,
    /// The shard.
    pub shard: u32,
    /// The replica's log end: the offset it wants next.
    pub next: u64,
    /// The epoch of the newest owner whose entries the replica holds (0: none).
    pub last_epoch: u64,
}

/// The owner's answer for one [`FetchItem`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Fetched {
    /// The topic.
    pub topic: String,
    /// The shard.
    pub shard: u32,
    /// The owner's log end.
    pub owner_next: u64,
    /// Set when the replica's copy diverged from the owner's: it must remove its entries
    /// from this offset on, then fetch again.
    pub truncate_to: Option<u64>,
    /// The offset of the first payload.
    pub first: u64,
    /// Log entries as the owner stored them.
    pub payloads: Vec<Vec<u8>>,
    /// The owner's epoch marks `(epoch, start)` that start within the payloads.
    pub marks: Vec<(u64, u64)>,
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
    /// Node to node: events of shards the receiver owns, with the epoch the sender's table
    /// gives for each of those shards. Answered with `Ack`, or `stale_epoch` when any epoch
    /// or owner does not match the receiver's table (then nothing is applied).
    Forward {
        /// The topic to append to.
        topic: String,
        /// (shard, epoch) for every shard the rows fall in.
        epochs: Vec<(u32, u64)>,
        /// One flat row per event.
        rows: Vec<Vec<WireValue>>,
        /// (producing node, publish batch): a retry of the same publish to a shard that
        /// already logged it is acknowledged without being logged again.
        origin: Option<(u64, u64)>,
    },
    /// Node to node: records a dataflow stage produced for another stage (keys and event
    /// times as produced, not read from fields), for shards the receiver owns at `epochs`.
    /// Answered with `Ack`, or `stale_epoch`.
    ForwardEvents {
        /// The internal (or dataflow-written) topic.
        topic: String,
        /// (shard, epoch) for every shard the events fall in.
        epochs: Vec<(u32, u64)>,
        /// The events.
        events: Vec<WireEvent>,
    },
    /// Node to node: the sending node's stage has emitted everything before `time` into
    /// `topic` (and it has all been delivered). Answered with `Ack`.
    Mark {
        /// The internal topic.
        topic: String,
        /// The producing node.
        node: u64,
        /// Its watermark for the topic.
        time: u64,
    },
    /// Node to node: window state of a shard moving from the sender to the receiver (or,
    /// with `chunks` 0, records of a shard the receiver owns that reached the sender after
    /// it handed the shard off). The receiver merges the parts and, once it has every
    /// chunk, completes the move. Answered with `Ack`, or `stale_epoch` when the shard is
    /// not moving to the receiver at `epoch` (then nothing is merged).
    Handoff {
        /// The shard.
        shard: u32,
        /// Its epoch in the sender's table.
        epoch: u64,
        /// Which release of the shard's state this is (a move aborted and begun again, or
        /// an old owner that restarted, releases anew): the receiver replaces the state of
        /// an older release instead of adding to it.
        release: u64,
        /// This message's index, below `chunks`.
        chunk: u32,
        /// Messages the shard's state was cut into (0: stragglers, not a move).
        chunks: u32,
        /// The parts.
        parts: Vec<WireShardPart>,
    },
    /// Node to node: a replica copies the logs of shards the receiver owns. The receiver
    /// answers with `Fetched` (waiting up to `wait_ms` when it has nothing new), or
    /// `stale_epoch` when it does not own a shard at the epoch given.
    Fetch {
        /// The replica asking.
        replica: u64,
        /// (shard, epoch) for every shard of `items`.
        epochs: Vec<(u32, u64)>,
        /// The logs, with how far the replica's copy goes.
        items: Vec<FetchItem>,
        /// How long to wait for new entries, at most 1 000 ms.
        wait_ms: u32,
        /// (shard, version of its replica lists) as the replica saw them when it asked: an
        /// answer that leaves it level counts for it from that version on only.
        isr: Vec<(u32, u64)>,
    },
    /// Node to node: one Raft message (serialised by the cluster crate). Answered with
    /// `Raft`.
    Raft {
        /// The serialised message.
        payload: Vec<u8>,
    },
    /// Node to node: like `SubscribeOutput`, but only this node's own results (the node a
    /// client subscribed to merges them).
    SubscribeOutputLocal {
        /// The dataflow's name.
        dataflow: String,
        /// The output's name.
        output: String,
    },
    /// Answered with `Topics`.
    ListTopics,
    /// Answered with `Dataflows`.
    ListDataflows,
    /// Node to node: like `KvGet`, but only this node's own store (the node a client asked
    /// scatters to its peers with this, so a peer never scatters again). Answered with
    /// `KvValue`.
    KvGetLocal {
        /// The view.
        view: String,
        /// The key (a string key as is, others as JSON text).
        key: String,
    },
    /// Node to node: like `KvScan`, but only this node's own store. Answered with `KvPage`.
    KvScanLocal {
        /// The view.
        view: String,
        /// Only keys starting with this.
        prefix: String,
        /// Start after this key.
        after: Option<String>,
        /// Page size, 1 to 10 000.
        limit: u32,
    },
    /// Node to node: like `SeriesRange`, but only this node's own store. Answered with
    /// `Points`.
    SeriesRangeLocal {
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
    /// Node to node: like `VectorSearch`, but only this node's own collection; the query is
    /// a vector or a text (each node embeds a text itself, at its collection's dimension).
    /// Answered with `Hits`.
    VectorSearchLocal {
        /// The collection.
        collection: String,
        /// The query vector (empty when `text` is given).
        vector: Vec<f32>,
        /// The query text, instead of a vector.
        text: Option<String>,
        /// How many, 1 to 1000.
        k: u32,
        /// Only points whose metadata has these fields, as a JSON object (empty: all).
        filter_json: String,
    },
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

/// Serialises a message into a frame: length prefix followed by the archive.
pub fn encode<T>(value: &T) -> Result<Vec<u8>, FrameError>
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    let body =
        rkyv::to_bytes::<rancor::Error>(value).map_err(|e| FrameError::Encode(e.to_string()))?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix (or an encoded message) is over [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// The peer finished the stream in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The stream was reset or the connection lost while reading.
    #[error("stream: {0}")]
    Read(#[from] quinn::ReadError),
    /// The stream was stopped or the connection lost while writing.
    #[error("stream: {0}")]
    Write(#[from] quinn::WriteError),
    /// rkyv could not serialise the message.
    #[error("could not encode: {0}")]
    Encode(String),
    /// The bytes are not a valid archive of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Reads one frame. `Ok(None)` means the peer finished the stream cleanly before a frame
/// began. The buffer grows as bytes arrive, so a lying length prefix costs nothing.
pub async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Option<AlignedVec>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match recv.read(&mut len[got..]).await? {
            Some(n) => got += n,
            None if got == 0 => return Ok(None),
            None => return Err(FrameError::Truncated),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = AlignedVec::with_capacity(len.min(64 << 10));
    while buf.len() < len {
        match recv.read_chunk(len - buf.len(), true).await? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None => return Err(FrameError::Truncated),
        }
    }
    Ok(Some(buf))
}

/// Validates and reads a request archive (bytecheck; never unchecked on network input).
pub fn access_request(bytes: &[u8]) -> Result<&ArchivedRequest, FrameError> {
    rkyv::access::<ArchivedRequest, rancor::Error>(bytes)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Validates and deserialises a response.
pub fn decode_response(bytes: &[u8]) -> Result<Response, FrameError> {
    rkyv::from_bytes::<Response, rancor::Error>(bytes)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Validates and deserialises a request body (for tests and tools; the server reads archives
/// in place with [`access_request`]). Copies the bytes first, so any alignment is fine.
pub fn decode_request(bytes: &[u8]) -> Result<Request, FrameError> {
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<Request, rancor::Error>(&aligned)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// An output update for the wire.
pub fn update_to_wire((e, time, diff): &Update) -> WireUpdate {
    let mut key = Vec::with_capacity(1);
    push_value(&e.key, &mut key);
    WireUpdate {
        key,
        event_time: e.time,
        row: row_to_wire(&e.row),
        time: *time,
        diff: *diff as i64,
    }
}

/// A topic event for the wire.
pub fn event_to_wire(e: &Event) -> WireEvent {
    let mut key = Vec::with_capacity(1);
    push_value(&e.key, &mut key);
    WireEvent {
        key,
        time: e.time,
        row: row_to_wire(&e.row),
    }
}

/// An update read back from the wire.
pub fn update_from_wire(u: &WireUpdate) -> Result<Update, String> {
    let event = Event::new(
        value_from_wire(&u.key)?,
        u.event_time,
        row_from_wire(&u.row)?,
    );
    Ok((event, u.time, u.diff as isize))
}

/// An event read back from the wire.
pub fn event_from_wire(e: &WireEvent) -> Result<Event, String> {
    Ok(Event::new(
        value_from_wire(&e.key)?,
        e.time,
        row_from_wire(&e.row)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_operators::Value;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    #[test]
    fn nested_values_round_trip() {
        let mut m = BTreeMap::new();
        m.insert(
            "a".to_string(),
            Value::List(vec![Value::Int(1), Value::str("x")].into()),
        );
        let row = vec![
            Value::Map(Arc::new(m)),
            Value::Null,
            Value::Vector(vec![1.0f32, 2.0].into()),
            Value::Timestamp(5),
        ];
        let wire = row_to_wire(&row);
        assert_eq!(row_from_wire(&wire).unwrap(), row);
        let frame = encode(&Request::Publish {
            topic: "t".into(),
            rows: vec![wire],
        })
        .unwrap();
        let mut body = AlignedVec::<16>::new();
        body.extend_from_slice(&frame[4..]);
        let ArchivedRequest::Publish { rows, .. } = access_request(&body).unwrap() else {
            panic!("wrong variant")
        };
        assert_eq!(row_from_wire(rows[0].as_slice()).unwrap(), row);
    }

    #[test]
    fn lying_counts_and_depth_are_refused() {
        assert!(row_from_wire(&[WireValue::List(3), WireValue::Int(1)]).is_err());
        assert!(row_from_wire(&[WireValue::Map(1), WireValue::Int(1), WireValue::Int(2)]).is_err());
        let deep: Vec<WireValue> = (0..100)
            .map(|_| WireValue::List(1))
            .chain([WireValue::Null])
            .collect();
        assert!(row_from_wire(&deep).is_err());
    }
}
