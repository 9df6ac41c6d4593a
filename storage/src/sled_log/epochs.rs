//! What replication needs of a log beyond appends: the epoch marks (where each owner epoch
//! starts in a shard) and cutting a suffix (Kafka's leader-epoch truncation, for a replica
//! holding entries its owner never had).
//!
//! Apart from retention because a suffix cut moves the end back, which the recorded flushed
//! ends ([`super::marks`]) and the epoch marks must follow, under the marks lock.

use std::sync::PoisonError;

use super::encoding::{decode_u64, entry_key, epoch_key, meta_key, payload_len, ShardMeta};
use super::flush::bounded_flush;
use super::marks::{durable_marks, write_marks};
use super::{rlock, wlock, SledLog, TRUNCATE_CHUNK};
use crate::log::EventLog;
use crate::StorageError;

impl SledLog {
    /// [`EventLog::truncate_from`].
    pub(super) fn truncate_suffix(
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
        self.check_writable()?;
        let _held = self
            .marks_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if offset >= rlock(&handle).next {
            return Ok(0);
        }
        let backend = |e| StorageError::backend(format!("truncating {topic:?} shard {shard}"), e);
        // The recorded end goes down first: a crash part-way must not leave a recorded end
        // above what the log holds. (Taken before the shard's lock, which it reads.)
        let mut marks = durable_marks(&self.topics);
        let mut meta = wlock(&handle);
        for m in &mut marks {
            if m.0 == topic && m.1 == shard {
                m.2 = m.2.min(offset);
            }
        }
        write_marks(&self.dir, &marks).map_err(|e| {
            StorageError::backend(format!("recording the end of {topic:?} shard {shard}"), e)
        })?;
        let removed = meta.next - offset.max(meta.first);
        // From the end backwards, in atomic chunks that each leave a consistent record.
        while meta.next > offset && meta.next > meta.first {
            let low = meta
                .next
                .saturating_sub(TRUNCATE_CHUNK as u64)
                .max(offset)
                .max(meta.first);
            let mut batch = sled::Batch::default();
            let mut next = *meta;
            for item in t
                .tree
                .range(entry_key(shard, low)..entry_key(shard, meta.next))
            {
                let (k, v) = item.map_err(backend)?;
                next.bytes = next.bytes.saturating_sub(payload_len(&v));
                batch.remove(k);
            }
            next.next = low;
            batch.insert(&meta_key(shard)[..], &next.encode()[..]);
            t.tree.apply_batch(batch).map_err(backend)?;
            *meta = next;
        }
        if offset < meta.first {
            let next = ShardMeta {
                next: offset,
                first: offset,
                bytes: 0,
            };
            t.tree
                .insert(&meta_key(shard)[..], &next.encode()[..])
                .map_err(backend)?;
            *meta = next;
        }
        for item in t.tree.scan_prefix(&epoch_key(shard, 0)[..5]) {
            let (k, v) = item.map_err(backend)?;
            if decode_u64(&v).is_some_and(|start| start >= offset) {
                t.tree.remove(k).map_err(backend)?;
            }
        }
        bounded_flush(&self.db).map_err(|reason| {
            self.fail(
                format!("flushing truncation of {topic:?} shard {shard}"),
                reason,
            )
        })?;
        tracing::info!(
            topic,
            shard,
            from = offset,
            removed,
            "event log suffix removed"
        );
        Ok(removed)
    }

    /// [`EventLog::epoch_marks`].
    pub(super) fn read_epoch_marks(
        &self,
        topic: &str,
        shard: u32,
    ) -> Result<Vec<(u64, u64)>, StorageError> {
        let Some(t) = self.topic(topic) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in t.tree.scan_prefix(&epoch_key(shard, 0)[..5]) {
            let (k, v) = item.map_err(|e| {
                StorageError::backend(format!("reading epochs of {topic:?} shard {shard}"), e)
            })?;
            if let (Some(epoch), Some(start)) = (k.get(5..).and_then(decode_u64), decode_u64(&v)) {
                out.push((epoch, start));
            }
        }
        Ok(out)
    }

    /// [`EventLog::mark_epoch`].
    pub(super) fn add_epoch_mark(
        &self,
        topic: &str,
        shard: u32,
        epoch: u64,
        start: u64,
    ) -> Result<(), StorageError> {
        if self
            .epoch_marks(topic, shard)?
            .last()
            .is_some_and(|(e, _)| *e >= epoch)
        {
            return Ok(());
        }
        self.check_writable()?;
        let t = self.topic_or_create(topic)?;
        t.tree
            .insert(&epoch_key(shard, epoch)[..], &start.to_be_bytes()[..])
            .map_err(|e| {
                StorageError::backend(
                    format!("marking epoch {epoch} of {topic:?} shard {shard}"),
                    e,
                )
            })?;
        self.sync_if_required(|| format!("flushing an epoch mark of {topic:?}"))
    }
}
