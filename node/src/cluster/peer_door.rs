//! The peer listener's requests: what nodes of one cluster ask of each other (forwards,
//! watermark marks, hand-off chunks, replication fetches, Raft, and reads of this node's own
//! part). They act on the cluster layer directly, never through the engine's front-door
//! calls, and only this door (its own port and ALPN) accepts them.

use std::sync::{Arc, OnceLock};

use rkyv::string::ArchivedString;
use rkyv::vec::ArchivedVec;

use super::Cluster;
use crate::quic::dispatch::{
    engine_error, kv_get, kv_scan, series_range, typed_row, vector_query, vector_search,
};
use crate::quic::server::{Handler, Outcome};
use crate::quic::wire::{self, codes, ArchivedPeerRequest, ArchivedWireValue, Response};
use crate::{Engine, EngineError};

/// The peer listener's handler. The cluster is set once it has started (the listener must
/// be bound first: its address is gossiped).
pub(crate) struct PeerDoor {
    pub engine: Arc<Engine>,
    pub cluster: Arc<OnceLock<Arc<Cluster>>>,
}

impl Handler for PeerDoor {
    fn handle(&self, frame: &[u8]) -> (&'static str, Outcome) {
        handle(&self.engine, self.cluster.get(), frame)
    }
}

/// Handles one validated peer request; runs on a blocking thread.
fn handle(
    engine: &Engine,
    cluster: Option<&Arc<Cluster>>,
    frame: &[u8],
) -> (&'static str, Outcome) {
    let req = match wire::access_peer_request(frame) {
        Ok(r) => r,
        Err(e) => {
            return (
                "invalid",
                Outcome::Reply(Response::error(codes::BAD_REQUEST, e.to_string())),
            )
        }
    };
    let (op, result) = match req {
        ArchivedPeerRequest::KvGetLocal { view, key } => {
            ("kv_get_local", kv_get(engine, view, key))
        }
        ArchivedPeerRequest::KvScanLocal {
            view,
            prefix,
            after,
            limit,
        } => ("kv_scan_local", kv_scan(engine, view, prefix, after, limit)),
        ArchivedPeerRequest::SeriesRangeLocal {
            series,
            key,
            from,
            to,
            limit,
        } => (
            "series_range_local",
            series_range(
                engine,
                series,
                key,
                (from.to_native(), to.to_native()),
                limit,
            ),
        ),
        ArchivedPeerRequest::VectorSearchLocal {
            collection,
            vector,
            text,
            k,
            filter_json,
        } => (
            "vector_search_local",
            vector_query(vector, text.as_ref().map(|t| t.as_str()))
                .and_then(|q| vector_search(engine, collection, q, k.to_native(), filter_json)),
        ),
        ArchivedPeerRequest::Forward {
            topic,
            epochs,
            rows,
            origin,
        } => (
            "forward",
            forward(
                engine,
                cluster,
                topic,
                epochs,
                rows,
                origin.as_ref().map(|o| (o.0.to_native(), o.1.to_native())),
            ),
        ),
        ArchivedPeerRequest::ForwardEvents {
            topic,
            epochs,
            events,
        } => (
            "forward_events",
            forward_events(cluster, topic, epochs, events),
        ),
        ArchivedPeerRequest::Mark { topic, node, time } => (
            "mark",
            match cluster {
                Some(d) => d
                    .shared()
                    .mark(topic.as_str(), node.to_native(), time.to_native())
                    .map(|()| Response::Ack { accepted: 0 }),
                None => Err(EngineError::BadRequest(
                    "this node is not part of a cluster".into(),
                )),
            },
        ),
        ArchivedPeerRequest::Handoff {
            shard,
            epoch,
            release,
            chunk,
            chunks,
            parts,
        } => (
            "handoff",
            handoff(
                cluster,
                (shard.to_native(), epoch.to_native(), release.to_native()),
                (chunk.to_native(), chunks.to_native()),
                parts,
            ),
        ),
        ArchivedPeerRequest::Fetch {
            replica,
            epochs,
            items,
            wait_ms,
            isr,
        } => (
            "fetch",
            fetch(
                cluster,
                replica.to_native(),
                (epochs, isr),
                items,
                wait_ms.to_native(),
            ),
        ),
        ArchivedPeerRequest::Raft { payload } => (
            "raft",
            match cluster {
                Some(d) => Ok(Response::Raft(d.shared().raft(payload.as_slice()))),
                None => Err(EngineError::BadRequest(
                    "this node is not part of a cluster".into(),
                )),
            },
        ),
        ArchivedPeerRequest::SubscribeOutputLocal { dataflow, output } => {
            let outcome = match engine.subscribe_local(dataflow.as_str(), output.as_str()) {
                Ok(s) => Outcome::Output(s),
                Err(e) => Outcome::Reply(engine_error(&e)),
            };
            return ("subscribe_output_local", outcome);
        }
        ArchivedPeerRequest::SubscribeTopicLocal { topic } => {
            let outcome = match engine.subscribe_topic(topic.as_str()) {
                Ok(s) => Outcome::Topic(s),
                Err(e) => Outcome::Reply(engine_error(&e)),
            };
            return ("subscribe_topic_local", outcome);
        }
    };
    (
        op,
        Outcome::Reply(result.unwrap_or_else(|e| engine_error(&e))),
    )
}

/// Events forwarded by another node: typed like a publish, then fenced by the cluster layer.
fn forward(
    engine: &Engine,
    cluster: Option<&Arc<Cluster>>,
    topic: &ArchivedString,
    epochs: &ArchivedVec<rkyv::tuple::ArchivedTuple2<rkyv::rend::u32_le, rkyv::rend::u64_le>>,
    rows: &ArchivedVec<ArchivedVec<ArchivedWireValue>>,
    origin: Option<(u64, u64)>,
) -> Result<Response, EngineError> {
    let Some(d) = cluster.map(|c| c.shared()) else {
        return Err(EngineError::BadRequest(
            "this node is not part of a cluster".into(),
        ));
    };
    let spec = engine.topic_spec(topic.as_str())?;
    let mut out = Vec::with_capacity(rows.len());
    for (index, cells) in rows.iter().enumerate() {
        let row = typed_row(&spec, cells.as_slice())
            .map_err(|message| EngineError::BadEventShape { index, message })?;
        out.push(row);
    }
    let epochs: Vec<(u32, u64)> = epochs
        .iter()
        .map(|t| (t.0.to_native(), t.1.to_native()))
        .collect();
    let n = d.forwarded(topic.as_str(), &epochs, out, origin)?;
    Ok(Response::Ack { accepted: n as u64 })
}

/// Records of another node's dataflow stage, fenced by the cluster layer.
fn forward_events(
    cluster: Option<&Arc<Cluster>>,
    topic: &ArchivedString,
    epochs: &ArchivedVec<rkyv::tuple::ArchivedTuple2<rkyv::rend::u32_le, rkyv::rend::u64_le>>,
    events: &ArchivedVec<wire::ArchivedWireEvent>,
) -> Result<Response, EngineError> {
    let Some(d) = cluster.map(|c| c.shared()) else {
        return Err(EngineError::BadRequest(
            "this node is not part of a cluster".into(),
        ));
    };
    let mut out = Vec::with_capacity(events.len());
    for (index, e) in events.iter().enumerate() {
        let e: wire::WireEvent = rkyv::deserialize::<wire::WireEvent, rkyv::rancor::Error>(e)
            .map_err(|err| EngineError::BadEventShape {
                index,
                message: err.to_string(),
            })?;
        let event = wire::event_from_wire(&e)
            .map_err(|message| EngineError::BadEventShape { index, message })?;
        out.push(event);
    }
    let epochs: Vec<(u32, u64)> = epochs
        .iter()
        .map(|t| (t.0.to_native(), t.1.to_native()))
        .collect();
    let n = d.forwarded_events(topic.as_str(), &epochs, out)?;
    Ok(Response::Ack { accepted: n as u64 })
}

/// A replica copying shard logs this node owns.
fn fetch(
    cluster: Option<&Arc<Cluster>>,
    replica: u64,
    (epochs, isr): (&ArchivedPairs, &ArchivedPairs),
    items: &ArchivedVec<wire::ArchivedFetchItem>,
    wait_ms: u32,
) -> Result<Response, EngineError> {
    let Some(d) = cluster.map(|c| c.shared()) else {
        return Err(EngineError::BadRequest(
            "this node is not part of a cluster".into(),
        ));
    };
    let pairs = |v: &ArchivedPairs| -> Vec<(u32, u64)> {
        v.iter()
            .map(|t| (t.0.to_native(), t.1.to_native()))
            .collect()
    };
    let (epochs, isr) = (pairs(epochs), pairs(isr));
    let items: Vec<wire::FetchItem> = items
        .iter()
        .map(|i| wire::FetchItem {
            topic: i.topic.as_str().to_string(),
            shard: i.shard.to_native(),
            next: i.next.to_native(),
            last_epoch: i.last_epoch.to_native(),
        })
        .collect();
    let view = crate::cluster::FetchView {
        epochs: &epochs,
        isr: &isr,
    };
    Ok(Response::Fetched(d.fetch(replica, view, items, wait_ms)?))
}

/// An archived list of (shard, number) pairs, as fetches carry them.
type ArchivedPairs =
    ArchivedVec<rkyv::tuple::ArchivedTuple2<rkyv::rend::u32_le, rkyv::rend::u64_le>>;

fn handoff(
    cluster: Option<&Arc<Cluster>>,
    (shard, epoch, release): (u32, u64, u64),
    (chunk, chunks): (u32, u32),
    parts: &ArchivedVec<wire::ArchivedWireShardPart>,
) -> Result<Response, EngineError> {
    let Some(d) = cluster.map(|c| c.shared()) else {
        return Err(EngineError::BadRequest(
            "this node is not part of a cluster".into(),
        ));
    };
    let parts: Vec<crate::runtime::ShardPart> = parts
        .iter()
        .map(|p| crate::runtime::ShardPart {
            dataflow: p.dataflow.as_str().to_string(),
            node: p.node.as_str().to_string(),
            shard: p.shard.to_native(),
            bytes: p.bytes.as_slice().to_vec(),
        })
        .collect();
    d.handoff(shard, epoch, release, (chunk, chunks), parts)?;
    Ok(Response::Ack { accepted: 0 })
}
