//! The client door's requests: public operations only, each answered through the node's
//! [`Router`] (this node's engine alone, or the cluster). A node-to-node request sent here is
//! refused with `peer_only`: peers talk on the peer listener.

use rkyv::string::ArchivedString;
use rkyv::vec::ArchivedVec;

use starling_operators::plan::TopicSpec;
use starling_operators::schema::Field;
use starling_operators::{DataType, Value};

use super::server::{Handler, Outcome};
use super::wire::{self, codes, ArchivedRequest, ArchivedWireValue, Response};
use crate::durable::queries::VectorQuery;
use crate::router::Router;
use crate::{Engine, EngineError};

/// The client port's handler.
pub(crate) struct ClientDoor {
    pub router: Router,
}

impl Handler for ClientDoor {
    fn handle(&self, frame: &[u8]) -> (&'static str, Outcome) {
        handle(&self.router, frame)
    }
}

/// Handles one validated request; runs on a blocking thread.
fn handle(router: &Router, frame: &[u8]) -> (&'static str, Outcome) {
    let engine = router.engine();
    let req = match wire::access_request(frame) {
        Ok(r) => r,
        Err(e) => {
            return (
                "invalid",
                Outcome::Reply(Response::error(codes::BAD_REQUEST, e.to_string())),
            )
        }
    };
    let (op, result) = match req {
        ArchivedRequest::Peer(peer) => {
            let message = format!(
                "{} is a node-to-node request: peers send it to the peer listener (`--peer`), never to the client port",
                peer_request_name(peer)
            );
            return (
                "peer_only",
                Outcome::Reply(Response::error(codes::PEER_ONLY, message)),
            );
        }
        ArchivedRequest::Publish { topic, rows } => ("publish", publish(router, topic, rows)),
        ArchivedRequest::PublishJson { topic, ndjson } => {
            ("publish_json", publish_json(router, topic, ndjson))
        }
        ArchivedRequest::Submit { definition } => (
            "submit",
            router
                .install_text(definition.as_str())
                .map(|info| Response::Submitted { name: info.name }),
        ),
        ArchivedRequest::SubscribeOutput { dataflow, output } => {
            let outcome = match router.subscribe(dataflow.as_str(), output.as_str()) {
                Ok(s) => Outcome::Output(s),
                Err(e) => Outcome::Reply(engine_error(&e)),
            };
            return ("subscribe_output", outcome);
        }
        ArchivedRequest::SubscribeTopic { topic } => {
            let outcome = match router.subscribe_topic(topic.as_str()) {
                Ok(s) => Outcome::Topic(s),
                Err(e) => Outcome::Reply(engine_error(&e)),
            };
            return ("subscribe_topic", outcome);
        }
        ArchivedRequest::KvGet { view, key } => ("kv_get", kv_get(router, view, key)),
        ArchivedRequest::KvScan {
            view,
            prefix,
            after,
            limit,
        } => ("kv_scan", kv_scan(router, view, prefix, after, limit)),
        ArchivedRequest::SeriesRange {
            series,
            key,
            from,
            to,
            limit,
        } => (
            "series_range",
            series_range(
                router,
                series,
                key,
                (from.to_native(), to.to_native()),
                limit,
            ),
        ),
        ArchivedRequest::VectorSearch {
            collection,
            vector,
            k,
            filter_json,
        } => (
            "vector_search",
            vector_query(vector, None)
                .and_then(|q| vector_search(router, collection, q, k.to_native(), filter_json)),
        ),
        ArchivedRequest::ListTopics => ("list_topics", Ok(Response::Topics(list_topics(engine)))),
        ArchivedRequest::ListDataflows => (
            "list_dataflows",
            Ok(Response::Dataflows(list_dataflows(engine))),
        ),
    };
    (
        op,
        Outcome::Reply(result.unwrap_or_else(|e| engine_error(&e))),
    )
}

/// The name of a peer request, for the refusal.
fn peer_request_name(r: &wire::ArchivedPeerRequest) -> &'static str {
    use wire::ArchivedPeerRequest as P;
    match r {
        P::Forward { .. } => "Forward",
        P::ForwardEvents { .. } => "ForwardEvents",
        P::Mark { .. } => "Mark",
        P::Handoff { .. } => "Handoff",
        P::Fetch { .. } => "Fetch",
        P::Raft { .. } => "Raft",
        P::SubscribeOutputLocal { .. } => "SubscribeOutputLocal",
        P::KvGetLocal { .. } => "KvGetLocal",
        P::KvScanLocal { .. } => "KvScanLocal",
        P::SeriesRangeLocal { .. } => "SeriesRangeLocal",
        P::VectorSearchLocal { .. } => "VectorSearchLocal",
        P::SubscribeTopicLocal { .. } => "SubscribeTopicLocal",
    }
}

/// Who answers a read: the [`Router`] for a client (across the cluster), this node's
/// [`Engine`] for a peer (its own part only, which the asking node merges). Both doors then
/// answer in the same form.
pub(crate) trait Reads {
    fn kv_get(&self, view: &str, key: &str) -> Result<Option<Vec<u8>>, EngineError>;
    fn kv_scan(
        &self,
        view: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<starling_storage::KvPage, EngineError>;
    fn series_range(
        &self,
        series: &str,
        key: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, EngineError>;
    fn vector_search(
        &self,
        collection: &str,
        query: VectorQuery,
        k: usize,
        filter: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<starling_storage::Hit>, EngineError>;
}

impl Reads for Router {
    fn kv_get(&self, view: &str, key: &str) -> Result<Option<Vec<u8>>, EngineError> {
        Router::kv_get(self, view, key)
    }

    fn kv_scan(
        &self,
        view: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<starling_storage::KvPage, EngineError> {
        Router::kv_scan(self, view, prefix, after, limit)
    }

    fn series_range(
        &self,
        series: &str,
        key: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, EngineError> {
        Router::series_range(self, series, key, from, to, limit)
    }

    fn vector_search(
        &self,
        collection: &str,
        query: VectorQuery,
        k: usize,
        filter: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<starling_storage::Hit>, EngineError> {
        Router::vector_search(self, collection, query, k, filter)
    }
}

impl Reads for Engine {
    fn kv_get(&self, view: &str, key: &str) -> Result<Option<Vec<u8>>, EngineError> {
        self.kv_get_local(view, key)
    }

    fn kv_scan(
        &self,
        view: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<starling_storage::KvPage, EngineError> {
        self.kv_scan_local(view, prefix, after, limit)
    }

    fn series_range(
        &self,
        series: &str,
        key: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, EngineError> {
        self.series_range_local(series, key, from, to, limit)
    }

    fn vector_search(
        &self,
        collection: &str,
        query: VectorQuery,
        k: usize,
        filter: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<starling_storage::Hit>, EngineError> {
        self.vector_search_local(collection, query, k, filter)
    }
}

/// A KV read, by whoever `at` is (see [`Reads`]).
pub(crate) fn kv_get(
    at: &impl Reads,
    view: &ArchivedString,
    key: &ArchivedString,
) -> Result<Response, EngineError> {
    let found = at.kv_get(view.as_str(), key.as_str())?;
    Ok(Response::KvValue(
        found.map(|b| String::from_utf8_lossy(&b).into_owned()),
    ))
}

/// A page of a KV view.
pub(crate) fn kv_scan(
    at: &impl Reads,
    view: &ArchivedString,
    prefix: &ArchivedString,
    after: &rkyv::option::ArchivedOption<ArchivedString>,
    limit: &rkyv::rend::u32_le,
) -> Result<Response, EngineError> {
    let after = after.as_ref().map(|a| a.as_str());
    let limit = limit.to_native() as usize;
    let page = at.kv_scan(view.as_str(), prefix.as_str(), after, limit)?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(Response::KvPage {
        items: page.items.iter().map(|(k, v)| (text(k), text(v))).collect(),
        next: page.next.as_deref().map(text),
    })
}

/// Series points in `[from, to)`.
pub(crate) fn series_range(
    at: &impl Reads,
    series: &ArchivedString,
    key: &ArchivedString,
    (from, to): (u64, u64),
    limit: &rkyv::rend::u32_le,
) -> Result<Response, EngineError> {
    let limit = limit.to_native() as usize;
    let points = at.series_range(series.as_str(), key.as_str(), from, to, limit)?;
    Ok(Response::Points(
        points
            .into_iter()
            .map(|(t, v)| (t, String::from_utf8_lossy(&v).into_owned()))
            .collect(),
    ))
}

/// The query of a vector search: the text when given, else the vector.
pub(crate) fn vector_query(
    vector: &ArchivedVec<rkyv::rend::f32_le>,
    text: Option<&str>,
) -> Result<VectorQuery, EngineError> {
    Ok(match text {
        Some(t) => VectorQuery::Text(t.to_string()),
        None => VectorQuery::Vector(vector.iter().map(|x| x.to_native()).collect()),
    })
}

/// The `k` nearest points of a collection, among those matching `filter_json`.
pub(crate) fn vector_search(
    at: &impl Reads,
    collection: &ArchivedString,
    query: VectorQuery,
    k: u32,
    filter_json: &ArchivedString,
) -> Result<Response, EngineError> {
    let filter: serde_json::Map<String, serde_json::Value> = if filter_json.is_empty() {
        serde_json::Map::new()
    } else {
        serde_json::from_str(filter_json.as_str())
            .map_err(|e| EngineError::BadRequest(format!("filter must be a JSON object: {e}")))?
    };
    let hits = at.vector_search(collection.as_str(), query, k as usize, &filter)?;
    Ok(Response::Hits(
        hits.into_iter()
            .map(|h| {
                (
                    h.key,
                    h.distance,
                    String::from_utf8_lossy(&h.metadata).into_owned(),
                )
            })
            .collect(),
    ))
}

/// Maps an engine refusal to its stable code.
pub fn engine_error(e: &EngineError) -> Response {
    let code = match e {
        EngineError::UnknownTopic(_)
        | EngineError::UnknownDataflow(_)
        | EngineError::UnknownOutput { .. } => codes::NOT_FOUND,
        EngineError::TopicConflict { .. } | EngineError::DataflowExists(_) => codes::CONFLICT,
        EngineError::BatchTooLarge { .. } => codes::TOO_LARGE,
        EngineError::ShuttingDown | EngineError::Unavailable(_) => codes::UNAVAILABLE,
        EngineError::StaleEpoch(_) => codes::STALE_EPOCH,
        EngineError::Busy => codes::BUSY,
        EngineError::Storage(starling_storage::StorageError::TooLarge { .. }) => codes::TOO_LARGE,
        EngineError::Storage(starling_storage::StorageError::InvalidInput { .. }) => {
            codes::BAD_REQUEST
        }
        EngineError::Storage(starling_storage::StorageError::Vector(v)) => {
            use starling_storage::VectorError as V;
            match **v {
                V::UnknownCollection { .. } | V::Dropped { .. } => codes::NOT_FOUND,
                V::SpecConflict { .. } => codes::CONFLICT,
                V::Corrupt { .. } | V::Io { .. } | V::Index { .. } => codes::STORAGE_UNAVAILABLE,
                _ => codes::BAD_REQUEST,
            }
        }
        EngineError::Storage(_) | EngineError::Catalog(_) => codes::STORAGE_UNAVAILABLE,
        EngineError::Startup(_) | EngineError::Internal(_) | EngineError::Recovery(_) => {
            codes::INTERNAL
        }
        EngineError::BadEvent { .. }
        | EngineError::BadEventShape { .. }
        | EngineError::WriteOnlyTopic(_)
        | EngineError::Plan(_)
        | EngineError::NoStorage(_)
        | EngineError::BadRequest(_) => codes::BAD_REQUEST,
    };
    Response::error(code, e.to_string())
}

/// The fast path: typed rows, checked against the schema, then published whole.
fn publish(
    router: &Router,
    topic: &ArchivedString,
    rows: &ArchivedVec<ArchivedVec<ArchivedWireValue>>,
) -> Result<Response, EngineError> {
    let spec = router.engine().topic_spec(topic.as_str())?;
    let mut out = Vec::with_capacity(rows.len());
    for (index, cells) in rows.iter().enumerate() {
        let row = typed_row(&spec, cells.as_slice())
            .map_err(|message| EngineError::BadEventShape { index, message })?;
        out.push(row);
    }
    let n = router.publish(topic.as_str(), out, true)?;
    Ok(Response::Ack { accepted: n as u64 })
}

pub(crate) fn typed_row(
    spec: &TopicSpec,
    cells: &[ArchivedWireValue],
) -> Result<Vec<Value>, String> {
    let fields = &spec.schema.fields;
    let mut it = cells.iter();
    let mut row = Vec::with_capacity(fields.len());
    while it.len() > 0 {
        let v = wire::take_value(&mut it, 0)?;
        let Some(field) = fields.get(row.len()) else {
            return Err(format!(
                "row has more than {} values; topic `{}` has {} fields",
                fields.len(),
                spec.name,
                fields.len()
            ));
        };
        row.push(conform(field, v)?);
    }
    if row.len() != fields.len() {
        return Err(format!(
            "row has {} values; topic `{}` has {} fields",
            row.len(),
            spec.name,
            fields.len()
        ));
    }
    Ok(row)
}

/// Checks a value against its field, widening `int` to `float` or `timestamp`.
fn conform(field: &Field, v: Value) -> Result<Value, String> {
    match (&field.data_type, v) {
        (_, Value::Null) if field.optional => Ok(field.default.clone()),
        (_, Value::Null) => Err(format!(
            "field `{}` is not optional; found null",
            field.name
        )),
        (DataType::Float, Value::Int(i)) => Ok(Value::Float(i as f64)),
        (DataType::Timestamp, Value::Int(i)) => Ok(Value::Timestamp(i)),
        (t, v) if fits(t, &v) => Ok(v),
        (t, v) => Err(format!(
            "field `{}` expects {t}, found {}",
            field.name,
            v.data_type()
        )),
    }
}

fn fits(t: &DataType, v: &Value) -> bool {
    match (t, v) {
        (DataType::Any, _) | (_, Value::Null) => true,
        (DataType::Bool, Value::Bool(_))
        | (DataType::Int, Value::Int(_))
        | (DataType::Float, Value::Float(_) | Value::Int(_))
        | (DataType::String, Value::Str(_))
        | (DataType::Bytes, Value::Bytes(_))
        | (DataType::Timestamp, Value::Timestamp(_)) => true,
        (DataType::List(e), Value::List(l)) => l.iter().all(|x| fits(e, x)),
        (DataType::Map(e), Value::Map(m)) => m.values().all(|x| fits(e, x)),
        (DataType::Vector(n), Value::Vector(x)) => x.len() == *n,
        _ => false,
    }
}

fn publish_json(
    router: &Router,
    topic: &ArchivedString,
    ndjson: &ArchivedVec<u8>,
) -> Result<Response, EngineError> {
    let mut docs = Vec::new();
    for line in ndjson.as_slice().split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let doc = serde_json::from_slice(line).map_err(|e| EngineError::BadEventShape {
            index: docs.len(),
            message: format!("invalid JSON: {e}"),
        })?;
        docs.push(doc);
    }
    let n = router.publish_json(topic.as_str(), &docs)?;
    Ok(Response::Ack { accepted: n as u64 })
}

fn list_topics(engine: &Engine) -> Vec<wire::WireTopic> {
    engine
        .topics()
        .into_iter()
        .map(|t| {
            let fields = &t.spec.schema.fields;
            let name_of = |i: Option<usize>| i.and_then(|i| fields.get(i)).map(|f| f.name.clone());
            wire::WireTopic {
                fields: fields
                    .iter()
                    .map(|f| (f.name.clone(), f.data_type.to_string()))
                    .collect(),
                key: name_of(t.spec.key),
                time: name_of(t.spec.time),
                name: t.spec.name,
                published: t.published,
                max_event_time: t.max_event_time,
                subscribers: t.subscribers as u64,
            }
        })
        .collect()
}

fn list_dataflows(engine: &Engine) -> Vec<wire::WireDataflow> {
    engine
        .dataflows()
        .into_iter()
        .map(|d| wire::WireDataflow {
            name: d.name,
            inputs: d.inputs,
            outputs: d.outputs,
            frontier: d.frontier,
            late_events: d.late_events,
            dead_letters: d.dead_letters,
            output_updates: d.output_updates,
        })
        .collect()
}
