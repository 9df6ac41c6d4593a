//! The messages peers send each other on the peer listener (its own port and ALPN, so the
//! client port answers public operations only and the security layer can put mutual TLS
//! on this door alone). Answers are [`crate::Response`]s, like the client protocol's.

use rkyv::{Archive, Deserialize, Serialize};

use crate::messages::WireEvent;
use crate::value::WireValue;

/// What one node asks of another; one per stream.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum PeerRequest {
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
        /// an older release instead of adding to it. With `chunks` 0 (stragglers): the
        /// batch's id, so a batch sent again is merged once (0: no id, merged every time).
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
    /// Node to node: like `SubscribeTopic`, but only the events this node appends as the
    /// owner of their shards (the node a client subscribed to merges every owner's). Last in
    /// the enum so that the tags of the others stay what they were.
    SubscribeTopicLocal {
        /// The topic.
        topic: String,
    },
}

/// One shard's part of one window operator's state, handed from a shard's old owner to its
/// new one (the engine's `ShardPart`).
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
