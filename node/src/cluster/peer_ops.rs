//! What peers ask of this node on the peer listener (forwarded writes, marks, Raft, fetches,
//! hand-offs): the cluster protocol, not the engine's public operations. Its own file so the
//! peer door's entry points, and their fencing, are read in one place.

use starling_operators::{Event, Row};

use super::placement::distinct_shards;
use super::{handoff, repartition, replication, Shared};
use crate::quic::wire;
use crate::EngineError;

/// What a replica's fetch says of its view of the shards it copies.
#[derive(Clone, Copy, Debug)]
pub struct FetchView<'a> {
    /// (shard, epoch) the replica copies at.
    pub epochs: &'a [(u32, u64)],
    /// (shard, version of its replica lists) the replica saw when it asked.
    pub isr: &'a [(u32, u64)],
}

/// The shards a forward lists, sorted, to check each event against in O(log n).
fn listed_shards(epochs: &[(u32, u64)]) -> Vec<u32> {
    let mut v: Vec<u32> = epochs.iter().map(|(s, _)| *s).collect();
    v.sort_unstable();
    v
}

/// What peers ask of this node on the peer listener: the cluster protocol, not the engine's
/// public operations.
impl Shared {
    pub(crate) fn forwarded(
        &self,
        topic: &str,
        epochs: &[(u32, u64)],
        rows: Vec<Row>,
        origin: Option<(u64, u64)>,
    ) -> Result<usize, EngineError> {
        let engine = self.engine()?;
        let key = engine.read_topic_spec(topic, |t| t.key)?;
        let listed = listed_shards(epochs);
        for row in &rows {
            let shard = key.map_or(0, |k| row.get(k).map_or(0, |v| self.shard_of(v)));
            if listed.binary_search(&shard).is_err() {
                return Err(EngineError::BadRequest(format!(
                    "an event of shard {shard} came without that shard's epoch"
                )));
            }
        }
        self.fence(epochs)?;
        let total = rows.len();
        let shard_of_row = |r: &Row| key.map_or(0, |k| r.get(k).map_or(0, |v| self.shard_of(v)));
        // A retry of a publish whose events for a shard this node logged already (as the
        // owner that answered too late, or as the replica of one that died before it
        // answered) is acknowledged without logging them again.
        let row_shards = distinct_shards(rows.iter().map(shard_of_row));
        let claim = origin
            .map(|o| self.replication.claim(o, &row_shards))
            .transpose()?;
        // The claim may have waited for an earlier attempt: check ownership again.
        self.fence(epochs)?;
        let rows: Vec<Row> = match &claim {
            Some(c) if !c.logged.is_empty() => rows
                .into_iter()
                .filter(|r| !c.logged.contains(&shard_of_row(r)))
                .collect(),
            _ => rows,
        };
        if rows.is_empty() {
            drop(claim);
            self.block(replication::await_replicas(self, topic, &row_shards))?;
            return Ok(total);
        }
        let shards = distinct_shards(rows.iter().map(shard_of_row));
        self.may_append(topic, &shards)?;
        replication::mark_epochs(self, topic, &shards)?;
        match origin {
            Some(o) => {
                engine.publish_local_tagged(topic, rows, true, o)?;
                if let Some(c) = &claim {
                    c.done();
                }
            }
            None => {
                engine.publish_local(topic, rows, true)?;
            }
        }
        drop(claim);
        self.replication.appended();
        self.block(replication::await_replicas(self, topic, &row_shards))?;
        Ok(total)
    }

    pub(crate) fn fetch(
        &self,
        replica: u64,
        view: FetchView<'_>,
        items: Vec<wire::FetchItem>,
        wait_ms: u32,
    ) -> Result<Vec<wire::Fetched>, EngineError> {
        replication::serve_fetch(self, replica, view, items, wait_ms)
    }

    pub(crate) fn forwarded_events(
        &self,
        topic: &str,
        epochs: &[(u32, u64)],
        events: Vec<Event>,
    ) -> Result<usize, EngineError> {
        let engine = self.engine()?;
        let listed = listed_shards(epochs);
        for e in &events {
            let shard = self.shard_of(&e.key);
            if listed.binary_search(&shard).is_err() {
                return Err(EngineError::BadRequest(format!(
                    "a record of shard {shard} came without that shard's epoch"
                )));
            }
        }
        self.fence(epochs)?;
        engine.publish_internal_local(topic, events)
    }

    pub(crate) fn handoff(
        &self,
        shard: u32,
        epoch: u64,
        release: u64,
        (chunk, chunks): (u32, u32),
        parts: Vec<crate::runtime::ShardPart>,
    ) -> Result<(), EngineError> {
        handoff::receive(self, (shard, epoch, release), (chunk, chunks), parts)
    }

    pub(crate) fn mark(&self, topic: &str, node: u64, time: u64) -> Result<(), EngineError> {
        repartition::apply_mark(self, topic, node, time)
    }

    pub(crate) fn raft(&self, payload: &[u8]) -> Vec<u8> {
        self.block(self.raft.handle_rpc(payload))
    }
}
