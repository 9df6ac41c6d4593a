//! Appending: the size limits, one atomic sled batch for the entries of every shard named
//! and their shard records, then the durability the mode promises (a flush in `Sync`, the
//! backpressure of the background flusher in `Batch`).
//!
//! Offsets are assigned under the shard records' write locks, taken in shard order, so
//! concurrent appends to overlapping shards neither interleave nor deadlock.

use std::ops::Range;
use std::sync::RwLockWriteGuard;
use std::time::{SystemTime, UNIX_EPOCH};

use super::encoding::{encode_entry, entry_key, meta_key, ShardMeta};
use super::{wlock, ShardHandle, SledLog};
use crate::log::EventLog;
use crate::StorageError;

impl SledLog {
    /// [`EventLog::append_shards`].
    pub(super) fn append_batches(
        &self,
        topic: &str,
        batches: &[(u32, Vec<&[u8]>)],
    ) -> Result<Vec<Range<u64>>, StorageError> {
        let o = &self.options;
        let entries: usize = batches.iter().map(|(_, p)| p.len()).sum();
        if entries > o.max_batch_entries {
            return Err(StorageError::TooLarge {
                what: "batch entries",
                size: entries as u64,
                limit: o.max_batch_entries as u64,
            });
        }
        let mut total = 0u64;
        for p in batches.iter().flat_map(|(_, p)| p) {
            if p.len() > o.max_payload_bytes {
                return Err(StorageError::TooLarge {
                    what: "payload bytes",
                    size: p.len() as u64,
                    limit: o.max_payload_bytes as u64,
                });
            }
            total += p.len() as u64;
        }
        if total > o.max_batch_bytes as u64 {
            return Err(StorageError::TooLarge {
                what: "batch bytes",
                size: total,
                limit: o.max_batch_bytes as u64,
            });
        }
        if entries == 0 {
            return batches
                .iter()
                .map(|(shard, _)| {
                    let next = self.next_offset(topic, *shard)?;
                    Ok(next..next)
                })
                .collect();
        }

        self.check_writable()?;
        let t = self.topic_or_create(topic)?;
        // Shard records are locked in shard order, so concurrent multi-shard appends cannot
        // deadlock; a shard named twice is locked once and its entries follow each other.
        let mut ids: Vec<u32> = batches.iter().map(|(s, _)| *s).collect();
        ids.sort_unstable();
        ids.dedup();
        let handles: Vec<ShardHandle> = ids.iter().map(|s| Self::shard_or_create(&t, *s)).collect();
        let mut guards: Vec<RwLockWriteGuard<'_, ShardMeta>> =
            handles.iter().map(|h| wlock(h)).collect();
        let mut new: Vec<ShardMeta> = guards.iter().map(|g| **g).collect();
        let time_ms = now_ms();
        let mut batch = sled::Batch::default();
        let mut ranges = Vec::with_capacity(batches.len());
        for (shard, payloads) in batches {
            let i = ids.binary_search(shard).unwrap_or(0);
            let meta = &mut new[i];
            let start = meta.next;
            for p in payloads {
                let key = entry_key(*shard, meta.next);
                batch.insert(&key[..], encode_entry(&key, time_ms, p));
                meta.next += 1;
                meta.bytes += p.len() as u64;
            }
            ranges.push(start..meta.next);
        }
        for (shard, meta) in ids.iter().zip(&new) {
            batch.insert(&meta_key(*shard)[..], &meta.encode()[..]);
        }
        t.tree.apply_batch(batch).map_err(|e| {
            StorageError::backend(format!("appending to topic {topic:?} shards {ids:?}"), e)
        })?;
        // The batch is visible from here on, so the records must follow even if the flush
        // fails.
        for (g, meta) in guards.iter_mut().zip(&new) {
            **g = *meta;
        }
        drop(guards);
        self.sync_if_required(|| format!("flushing append to topic {topic:?}"))?;
        if let Some(f) = &self.flusher {
            f.catch_up(&self.db).map_err(|reason| {
                self.fail(
                    format!("catching up with the disk after appending to {topic:?}"),
                    reason,
                )
            })?;
        }
        tracing::trace!(topic, shards = ids.len(), entries, "appended");
        Ok(ranges)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
