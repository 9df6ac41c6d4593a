//! The engine's side of shard replication: appending entries copied from a shard's owner to
//! this node's log, and feeding a shard's logged events to the dataflows when this node
//! takes the shard over from an owner that died (the node's cluster shell runs the protocol).

use super::Engine;
use crate::durable::record::{self, Entry};
use crate::EngineError;

/// Entries read at a time when a promoted shard is replayed.
const REPLAY_CHUNK: usize = 256;

impl Engine {
    /// Appends entries copied from a shard's owner at exactly the offsets the owner gave
    /// them, so that both logs stay one sequence. The entries are not given to the
    /// dataflows: the owner processes the shard. Each gets this node's next sequence number,
    /// which orders a restart's replay of this node's log. Returns the publishes (producer,
    /// batch) the entries came from, where tagged.
    pub fn append_replicated(
        &self,
        topic: &str,
        shard: u32,
        first: u64,
        mut payloads: Vec<Vec<u8>>,
    ) -> Result<Vec<(u64, u64)>, EngineError> {
        let store = self.store().ok_or_else(|| {
            EngineError::BadRequest("replication needs a node with a data directory".into())
        })?;
        let log = store.log();
        let mut next_seq = self.inner.lock_ingest();
        let have = log.next_offset(topic, shard)?;
        if have != first {
            return Err(EngineError::Internal(format!(
                "a copy of topic `{topic}` shard {shard} from offset {first} does not follow \
                 this node's copy, which ends at {have}"
            )));
        }
        let mut origins = Vec::new();
        for p in &mut payloads {
            let (_, _, origin) = record::decode_tagged(p).map_err(|e| {
                EngineError::BadRequest(format!("a copied entry of `{topic}` is damaged: {e}"))
            })?;
            origins.extend(origin);
            record::stamp(p, *next_seq);
            *next_seq += 1;
        }
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        log.append(topic, shard, &refs)?;
        Ok(origins)
    }

    /// The publishes (producer, batch) of the newest `per_shard` entries of every shard in
    /// this node's log, with their shard: after a restart they tell which retried forwards
    /// this node holds already.
    pub fn recent_origins(&self, per_shard: u64) -> Result<Vec<(u64, u64, u32)>, EngineError> {
        let Some(store) = self.store() else {
            return Ok(Vec::new());
        };
        let log = store.log();
        let mut out = Vec::new();
        for topic in log.topics()? {
            for shard in log.shards(&topic)? {
                let next = log.next_offset(&topic, shard)?;
                let from = next.saturating_sub(per_shard);
                for (_, bytes) in log.read(&topic, shard, from, per_shard as usize)? {
                    if let Ok((_, _, Some((producer, batch)))) = record::decode_tagged(&bytes) {
                        out.push((producer, batch, shard));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Feeds the events of `shard` logged in `topic` below `end` to the dataflows, as when
    /// they were first published: this node has just taken the shard over from an owner that
    /// died, and its log holds the shard's whole history (it was an in-sync replica).
    /// Returns the number of events.
    pub fn replay_shard(&self, topic: &str, shard: u32, end: u64) -> Result<u64, EngineError> {
        let Some(store) = self.store() else {
            return Ok(0);
        };
        let log = store.log();
        let t = self.inner.topic(topic)?;
        let mut from = log.first_offset(topic, shard)?;
        let mut events = 0u64;
        while from < end {
            let chunk = log.read(topic, shard, from, REPLAY_CHUNK.min((end - from) as usize))?;
            let Some(last) = chunk.last().map(|(o, _)| *o) else {
                break;
            };
            let mut batch = Vec::new();
            for (offset, bytes) in chunk {
                match record::decode(&bytes) {
                    Ok((_, Entry::Events(evs))) => batch.extend(evs.into_iter().map(|e| (e, 0, 1))),
                    Ok((_, Entry::Watermark(_))) => {}
                    Err(reason) => {
                        return Err(EngineError::Recovery(format!(
                            "topic `{topic}` shard {shard} offset {offset}: {reason}"
                        )))
                    }
                }
            }
            events += batch.len() as u64;
            self.inner.wait_for_room();
            let pos = *self.inner.lock_ingest();
            self.inner.push(&t, batch, pos)?;
            from = last + 1;
        }
        Ok(events)
    }
}
