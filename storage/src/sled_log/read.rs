//! Reading a shard: one range scan bounded by the in-memory shard record (so a reader never
//! sees a half-applied batch), with every entry checked against its key.

use super::encoding::{decode_entry, decode_entry_key, entry_key};
use super::{rlock, SledLog};
use crate::StorageError;

impl SledLog {
    /// [`EventLog::read`](crate::EventLog::read).
    pub(super) fn read_entries(
        &self,
        topic: &str,
        shard: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let Some(t) = self.topic(topic) else {
            return Ok(Vec::new());
        };
        let Some(handle) = Self::shard(&t, shard) else {
            return Ok(Vec::new());
        };
        let meta = rlock(&handle);
        let start = from.max(meta.first);
        if start >= meta.next || max == 0 {
            return Ok(Vec::new());
        }
        let end = meta.next.min(start.saturating_add(max as u64));
        let corrupt = |offset, reason: String| {
            tracing::warn!(topic, shard, offset, %reason, "corrupt event log entry");
            StorageError::Corrupt {
                topic: topic.to_string(),
                shard,
                offset,
                reason,
            }
        };
        let mut out = Vec::with_capacity((end - start).min(4096) as usize);
        let mut expected = start;
        for item in t.tree.range(entry_key(shard, start)..entry_key(shard, end)) {
            let (k, v) = item.map_err(|e| {
                StorageError::backend(format!("reading topic {topic:?} shard {shard}"), e)
            })?;
            if decode_entry_key(&k) != Some((shard, expected)) {
                return Err(corrupt(expected, "entry missing".to_string()));
            }
            let (_, payload) = decode_entry(&k, &v).map_err(|r| corrupt(expected, r))?;
            out.push((expected, payload.to_vec()));
            expected += 1;
        }
        if expected != end {
            return Err(corrupt(expected, "entry missing".to_string()));
        }
        Ok(out)
    }
}
