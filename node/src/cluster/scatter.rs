//! Reads that span every node (ARCHITECTURE §5): a KV view, a series or a vector collection
//! is written on the node that processes each key, so after shards were spread (or moved)
//! the answer is in pieces on several nodes. The node a client asked reads its own store,
//! asks every peer over QUIC with the `*Local` requests (a peer never scatters again), and
//! merges:
//! - get: the first value present wins, asking first the node that owns the key's shard;
//! - scan: pages merged in key order, cut at `limit`, with a `next` that loses nothing;
//! - series: points united by window start;
//! - vector search: hits merged by distance, the nearest `k` kept.
//!
//! An answer that would be incomplete (a peer unreachable) is refused as `unavailable`
//! rather than returned short, except a get that found its value anyway, and except a peer
//! that left the cluster (or is leaving it): its shards' state moved to their new owners.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value as Json};
use starling_cluster::NodeId;
use starling_operators::Value;
use starling_storage::{Hit, KvPage};

use super::Shared;
use starling_client::ClientError;

use super::peer_client::PeerClient;
use crate::durable::queries::{check_limit, VectorQuery};
use crate::quic::wire::codes;
use crate::EngineError;

/// How long a peer may take to answer its part of a read.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a view read waits for moves under way to end before it answers anyway.
const MOVE_WAIT: Duration = Duration::from_secs(10);

/// How often it looks again.
const MOVE_POLL: Duration = Duration::from_millis(20);

/// A peer's refusal or failure as the caller's error: its own refusal of the caller's input
/// stays a bad request; anything else means the merged answer cannot be complete.
fn refused(node: NodeId, e: ClientError) -> EngineError {
    match e {
        ClientError::Server { code, message } if code == codes::BAD_REQUEST => {
            EngineError::BadRequest(format!("node {node:016x}: {message}"))
        }
        e => EngineError::Unavailable(format!(
            "node {node:016x} could not answer its part of the read: {e}; retry once it is \
             back or has left the cluster"
        )),
    }
}

/// Whether a local refusal means "this node has no such collection".
fn is_not_found(e: &EngineError) -> bool {
    matches!(
        crate::quic::dispatch::engine_error(e),
        crate::quic::wire::Response::Error { code, .. } if code == codes::NOT_FOUND
    )
}

impl Shared {
    /// Every member but this node, in id order (so merges that prefer one copy are
    /// deterministic).
    fn other_members(&self) -> Vec<NodeId> {
        self.current()
            .members
            .keys()
            .copied()
            .filter(|n| *n != self.me)
            .collect()
    }

    /// Asks every peer at once; each answer comes back with the peer's id.
    async fn ask_peers<T, F, Fut>(&self, call: F) -> Vec<(NodeId, Result<T, ClientError>)>
    where
        F: Fn(Arc<PeerClient>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let call = &call;
        let asks = self.other_members().into_iter().map(|p| async move {
            let r = tokio::time::timeout(PEER_TIMEOUT, async {
                let c = self.peers.client(p).await?;
                call(c).await
            })
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Protocol(format!(
                    "no answer within {PEER_TIMEOUT:?}"
                )))
            });
            if let Err(e) = &r {
                if e.code().is_none() {
                    self.peers.reset(p).await;
                }
            }
            (p, r)
        });
        let mut answers = futures_util::future::join_all(asks).await;
        // A member that left (or is leaving) and can no longer be reached has handed its
        // shards on: what moved is answered by their new owners, so its silence is not a
        // hole in the answer (it was the reason reads failed for a while after a leave).
        answers
            .retain(|(p, r)| !(r.as_ref().is_err_and(|e| e.code().is_none()) && self.departed(*p)));
        answers
    }

    /// Whether `p` left the cluster or is leaving it (a planned departure, not a crash).
    fn departed(&self, p: NodeId) -> bool {
        self.current().members.get(&p).is_none_or(|m| m.leaving)
    }

    /// The nodes most likely to hold the current value of a view key: the owner (and the
    /// receiver of a move) of its shard, reading the key as a string and, when it is JSON
    /// text of another value, as that value.
    fn likely_writers(&self, key: &str) -> Vec<NodeId> {
        let state = self.current();
        let mut out = Vec::new();
        for shard in self.key_shard_ids(key) {
            if let Ok(e) = state.table.get(shard) {
                for n in [e.moving_to, e.owner].into_iter().flatten() {
                    if !out.contains(&n) {
                        out.push(n);
                    }
                }
            }
        }
        out
    }

    /// Where the shards that may hold `key` stand: (epoch, owner, receiver of a move).
    fn key_shards(&self, key: &str) -> Vec<(u64, Option<NodeId>, Option<NodeId>)> {
        let state = self.current();
        self.key_shard_ids(key)
            .into_iter()
            .filter_map(|shard| state.table.get(shard).ok())
            .map(|e| (e.epoch.0, e.owner, e.moving_to))
            .collect()
    }

    /// The shards a view key may live in: read as a string and, when it is the text of an
    /// integer, as that integer (a view's key keeps the type its dataflow gave it).
    fn key_shard_ids(&self, key: &str) -> Vec<u32> {
        let mut candidates = vec![Value::str(key)];
        if let Ok(n) = key.parse::<i64>() {
            candidates.push(Value::Int(n));
        }
        candidates.iter().map(|v| self.shard_of(v)).collect()
    }

    /// Every shard's (epoch, receiver of a move): equal before and after a read, with no
    /// move under way, means no shard's state was in flight while the nodes answered.
    fn moves(&self) -> Vec<(u64, Option<NodeId>)> {
        self.current()
            .table
            .iter()
            .map(|(_, e)| (e.epoch.0, e.moving_to))
            .collect()
    }

    /// The live value of a KV key (see [`Shared::kv_get_once`]). A miss while the key's
    /// shard moves is not an answer: between the old owner's release and the receiver's
    /// merge the key's entry is on the wire, in neither store. The read is then asked again
    /// until the move has ended (up to [`MOVE_WAIT`]), so it never answers from a
    /// half-moved shard.
    pub(crate) fn scatter_kv_get(
        &self,
        view: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        let deadline = Instant::now() + MOVE_WAIT;
        loop {
            let before = self.key_shards(key);
            let got = self.kv_get_once(view, key)?;
            if got.is_some() {
                return Ok(got);
            }
            let after = self.key_shards(key);
            let still = before == after && after.iter().all(|(_, _, to)| to.is_none());
            if still || Instant::now() > deadline {
                return Ok(got);
            }
            std::thread::sleep(MOVE_POLL);
        }
    }

    /// One round of a KV get: a view is written on the node that processes the key, so this
    /// node's store and every peer's are asked; the first value present wins.
    fn kv_get_once(&self, view: &str, key: &str) -> Result<Option<Vec<u8>>, EngineError> {
        let engine = self.engine()?;
        let local = engine.kv_get_local(view, key)?;
        let preferred = self.likely_writers(key);
        if local.is_some() && preferred.first().is_none_or(|n| *n == self.me) {
            return Ok(local);
        }
        let answers =
            self.block(self.ask_peers(|c| async move { c.kv_get_local(view, key).await }));
        let mut found: HashMap<NodeId, Vec<u8>> = HashMap::new();
        if let Some(v) = local {
            found.insert(self.me, v);
        }
        let mut failed = None;
        for (p, r) in answers {
            match r {
                Ok(Some(v)) => {
                    found.insert(p, v.into_bytes());
                }
                Ok(None) => {}
                Err(e) => failed = failed.or(Some(refused(p, e))),
            }
        }
        let mut order = preferred;
        order.push(self.me);
        order.extend(self.other_members());
        if let Some(v) = order.iter().find_map(|n| found.remove(n)) {
            return Ok(Some(v));
        }
        // Absent everywhere that answered: only a complete "absent" is an answer.
        match failed {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// A page of a KV view merged from every node (see [`Shared::kv_scan_once`]), taken
    /// again while any shard moves (up to [`MOVE_WAIT`]): a moving shard's entries are in
    /// neither store while they are on the wire, and a page cannot tell which keys it lacks.
    pub(crate) fn scatter_kv_scan(
        &self,
        view: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KvPage, EngineError> {
        let deadline = Instant::now() + MOVE_WAIT;
        loop {
            let before = self.moves();
            let page = self.kv_scan_once(view, prefix, after, limit)?;
            let now = self.moves();
            let still = before == now && now.iter().all(|(_, to)| to.is_none());
            if still || Instant::now() > deadline {
                return Ok(page);
            }
            std::thread::sleep(MOVE_POLL);
        }
    }

    /// One round of a KV scan: a page merged from every node in key order, honouring
    /// `after` and `limit`; `next` is set when any node may hold more.
    fn kv_scan_once(
        &self,
        view: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KvPage, EngineError> {
        let engine = self.engine()?;
        let limit = check_limit(limit)?;
        let local = engine.kv_scan_local(view, prefix, after, limit)?;
        let wire_limit = limit as u32;
        let answers =
            self.block(self.ask_peers(|c| async move {
                c.kv_scan_local(view, prefix, after, wire_limit).await
            }));
        let mut more = local.next.is_some();
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = local.items.into_iter().collect();
        for (p, r) in answers {
            let (items, next) = r.map_err(|e| refused(p, e))?;
            more |= next.is_some();
            for (k, v) in items {
                merged
                    .entry(k.into_bytes())
                    .or_insert_with(|| v.into_bytes());
            }
        }
        // Each node gave its first `limit` keys after `after`; the first `limit` of the
        // union are therefore the first of the whole view, and every key past the last one
        // kept is still ahead of the cursor on its node.
        let total = merged.len();
        let items: Vec<(Vec<u8>, Vec<u8>)> = merged.into_iter().take(limit).collect();
        let next = if total > limit || more {
            items.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        Ok(KvPage { items, next })
    }

    /// Points of a series key from every node, united by window start.
    pub(crate) fn scatter_series_range(
        &self,
        series: &str,
        key: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, EngineError> {
        let engine = self.engine()?;
        let limit = check_limit(limit)?;
        let local = engine.series_range_local(series, key, from, to, limit)?;
        let wire_limit = limit as u32;
        let answers = self.block(self.ask_peers(|c| async move {
            c.series_range_local(series, key, from, to, wire_limit)
                .await
        }));
        let mut merged: BTreeMap<u64, Vec<u8>> = local.into_iter().collect();
        for (p, r) in answers {
            for (t, v) in r.map_err(|e| refused(p, e))? {
                merged.entry(t).or_insert_with(|| v.into_bytes());
            }
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    /// The `k` nearest points over every node's part of a collection.
    pub(crate) fn scatter_vector_search(
        &self,
        collection: &str,
        query: VectorQuery,
        k: usize,
        filter: &Map<String, Json>,
    ) -> Result<Vec<Hit>, EngineError> {
        let engine = self.engine()?;
        // A collection may exist on some nodes only (points upserted over HTTP stay on the
        // node that took them): "not found" here is an answer only if it is so everywhere.
        let (mut hits, mut missing) =
            match engine.vector_search_local(collection, query.clone(), k, filter) {
                Ok(h) => (h, None),
                Err(e) if is_not_found(&e) => (Vec::new(), Some(e)),
                Err(e) => return Err(e),
            };
        let (vector, text) = match query {
            VectorQuery::Vector(v) => (v, None),
            VectorQuery::Text(t) => (Vec::new(), Some(t)),
        };
        let filter_json = if filter.is_empty() {
            String::new()
        } else {
            Json::Object(filter.clone()).to_string()
        };
        let (vector, text, filter_json) = (&vector, &text, filter_json.as_str());
        let wire_k = u32::try_from(k).unwrap_or(u32::MAX);
        let answers = self.block(self.ask_peers(|c| async move {
            c.vector_search_local(
                collection,
                vector.clone(),
                text.clone(),
                wire_k,
                filter_json,
            )
            .await
        }));
        for (p, r) in answers {
            match r {
                Ok(found) => {
                    missing = None;
                    hits.extend(found.into_iter().map(|(key, distance, meta)| Hit {
                        key,
                        distance,
                        metadata: meta.into_bytes(),
                    }));
                }
                Err(e) if e.code() == Some(codes::NOT_FOUND) => {}
                Err(e) => return Err(refused(p, e)),
            }
        }
        if let Some(e) = missing {
            return Err(e);
        }
        hits.sort_by(|a, b| {
            a.distance
                .total_cmp(&b.distance)
                .then_with(|| a.key.cmp(&b.key))
        });
        let mut seen = std::collections::HashSet::new();
        hits.retain(|h| seen.insert(h.key.clone()));
        hits.truncate(k);
        Ok(hits)
    }
}
