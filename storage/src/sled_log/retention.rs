//! Removing a prefix of a shard: an explicit cut
//! ([`EventLog::truncate_before`](crate::EventLog::truncate_before), e.g. after a checkpoint)
//! and age/size retention. Both go through one loop that removes the oldest
//! entries in atomic chunks, each with its updated shard record, so a crash part-way leaves
//! a consistent shorter shard.

use std::sync::Arc;

use super::encoding::{
    decode_entry, decode_entry_key, entry_key, meta_key, payload_len, ShardMeta,
};
use super::{rlock, wlock, ShardHandle, SledLog, TopicState, TRUNCATE_CHUNK};
use crate::log::RetentionReport;
use crate::StorageError;

impl SledLog {
    /// Removes the oldest entries of a shard while `remove(offset, key, value)` says so, in
    /// atomic chunks that also update the shard record. Returns `(entries, bytes)` removed.
    fn remove_front(
        &self,
        t: &TopicState,
        topic: &str,
        shard: u32,
        meta: &mut ShardMeta,
        mut remove: impl FnMut(u64, &[u8], &[u8]) -> Result<bool, StorageError>,
    ) -> Result<(u64, u64), StorageError> {
        let (mut entries, mut bytes) = (0u64, 0u64);
        loop {
            let mut batch = sled::Batch::default();
            let mut next = *meta;
            let mut stop = false;
            let mut n = 0usize;
            let range = entry_key(shard, meta.first)..entry_key(shard, meta.next);
            for item in t.tree.range(range) {
                let (k, v) = item.map_err(|e| {
                    StorageError::backend(
                        format!("scanning topic {topic:?} shard {shard} for truncation"),
                        e,
                    )
                })?;
                if decode_entry_key(&k) != Some((shard, next.first)) {
                    return Err(StorageError::Corrupt {
                        topic: topic.to_string(),
                        shard,
                        offset: next.first,
                        reason: "entry missing from the stored range".to_string(),
                    });
                }
                if !remove(next.first, &k, &v)? {
                    stop = true;
                    break;
                }
                batch.remove(k);
                next.first += 1;
                next.bytes = next.bytes.saturating_sub(payload_len(&v));
                n += 1;
                if n == TRUNCATE_CHUNK {
                    break;
                }
            }
            if n == 0 {
                break;
            }
            batch.insert(&meta_key(shard)[..], &next.encode()[..]);
            t.tree.apply_batch(batch).map_err(|e| {
                StorageError::backend(format!("truncating topic {topic:?} shard {shard}"), e)
            })?;
            entries += next.first - meta.first;
            bytes += meta.bytes - next.bytes;
            *meta = next;
            if stop || n < TRUNCATE_CHUNK {
                break;
            }
        }
        if entries > 0 {
            self.sync_if_required(|| format!("flushing truncation of {topic:?} shard {shard}"))?;
        }
        Ok((entries, bytes))
    }

    /// [`EventLog::truncate_before`](crate::EventLog::truncate_before).
    pub(super) fn truncate_prefix(
        &self,
        topic: &str,
        shard: u32,
        offset: u64,
    ) -> Result<u64, StorageError> {
        let Some(t) = self.topic(topic) else {
            return Ok(0);
        };
        let Some(handle) = Self::shard(&t, shard) else {
            return Ok(0);
        };
        let mut meta = wlock(&handle);
        let cut = offset.min(meta.next);
        if cut <= meta.first {
            return Ok(0);
        }
        let (entries, _) = self.remove_front(&t, topic, shard, &mut meta, |o, _, _| Ok(o < cut))?;
        tracing::debug!(topic, shard, cut, entries, "event log truncated");
        Ok(entries)
    }

    /// [`EventLog::apply_retention`](crate::EventLog::apply_retention).
    pub(super) fn retain(&self, now_ms: u64) -> Result<RetentionReport, StorageError> {
        let retention = self.options.retention;
        let mut report = RetentionReport::default();
        if retention.max_age_ms.is_none() && retention.max_bytes_per_shard.is_none() {
            return Ok(report);
        }
        let topics: Vec<(String, Arc<TopicState>)> = rlock(&self.topics)
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        for (topic, t) in topics {
            let shards: Vec<(u32, ShardHandle)> = rlock(&t.shards)
                .iter()
                .map(|(id, s)| (*id, s.clone()))
                .collect();
            for (shard, handle) in shards {
                report.shards_visited += 1;
                let mut meta = wlock(&handle);
                let mut remaining = meta.bytes;
                let (entries, bytes) =
                    self.remove_front(&t, &topic, shard, &mut meta, |offset, k, v| {
                        let over = retention.max_bytes_per_shard.is_some_and(|m| remaining > m);
                        let expired = match retention.max_age_ms {
                            None => false,
                            Some(age) => {
                                let (time_ms, _) =
                                    decode_entry(k, v).map_err(|reason| StorageError::Corrupt {
                                        topic: topic.clone(),
                                        shard,
                                        offset,
                                        reason,
                                    })?;
                                now_ms.saturating_sub(time_ms) > age
                            }
                        };
                        if over || expired {
                            remaining = remaining.saturating_sub(payload_len(v));
                            Ok(true)
                        } else {
                            Ok(false)
                        }
                    })?;
                if entries > 0 {
                    tracing::debug!(topic = %topic, shard, entries, bytes, "retention applied");
                }
                report.entries_removed += entries;
                report.bytes_removed += bytes;
            }
        }
        Ok(report)
    }
}
