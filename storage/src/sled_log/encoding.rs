//! The bytes of the log: tree names, keys, entry values and the shard record, as laid out
//! in the [module docs](super).
//!
//! Kept in one place because every operation (append, read, truncation, retention, opening)
//! must agree on them, and because they are the on-disk format: a change here is a change
//! of every existing log. Each value carries a CRC32, and an entry's covers its own key, so
//! a value stored under the wrong offset is caught too.

const TREE_PREFIX: &[u8] = b"starling.log/";
pub(super) const META_TAG: u8 = 0;
const ENTRY_TAG: u8 = 1;
const EPOCH_TAG: u8 = 2;
pub(super) const ENTRY_HEADER: usize = 12;
const META_LEN: usize = 28;

/// The sled tree name of a topic (length-prefixed, see the module docs).
pub(super) fn tree_name(topic: &str) -> Vec<u8> {
    let mut name = Vec::with_capacity(TREE_PREFIX.len() + 4 + topic.len());
    name.extend_from_slice(TREE_PREFIX);
    name.extend_from_slice(&(topic.len() as u32).to_be_bytes());
    name.extend_from_slice(topic.as_bytes());
    name
}

/// The topic of a tree name, or `None` for trees that are not event logs.
pub(super) fn decode_tree_name(name: &[u8]) -> Option<String> {
    let rest = name.strip_prefix(TREE_PREFIX)?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let topic = rest.get(4..)?;
    if topic.len() != len {
        return None;
    }
    String::from_utf8(topic.to_vec()).ok()
}

pub(super) fn meta_key(shard: u32) -> [u8; 5] {
    let mut k = [META_TAG; 5];
    k[1..].copy_from_slice(&shard.to_be_bytes());
    k
}

pub(super) fn entry_key(shard: u32, offset: u64) -> [u8; 13] {
    let mut k = [ENTRY_TAG; 13];
    k[1..5].copy_from_slice(&shard.to_be_bytes());
    k[5..].copy_from_slice(&offset.to_be_bytes());
    k
}

pub(super) fn epoch_key(shard: u32, epoch: u64) -> [u8; 13] {
    let mut k = [EPOCH_TAG; 13];
    k[1..5].copy_from_slice(&shard.to_be_bytes());
    k[5..].copy_from_slice(&epoch.to_be_bytes());
    k
}

/// `(shard, offset)` of an entry key.
pub(super) fn decode_entry_key(key: &[u8]) -> Option<(u32, u64)> {
    if key.len() != 13 || key[0] != ENTRY_TAG {
        return None;
    }
    let shard = u32::from_be_bytes(key[1..5].try_into().ok()?);
    let offset = u64::from_be_bytes(key[5..].try_into().ok()?);
    Some((shard, offset))
}

fn entry_crc(key: &[u8], time_ms: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(&time_ms.to_be_bytes());
    h.update(payload);
    h.finalize()
}

pub(super) fn encode_entry(key: &[u8], time_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ENTRY_HEADER + payload.len());
    v.extend_from_slice(&entry_crc(key, time_ms, payload).to_be_bytes());
    v.extend_from_slice(&time_ms.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Checks an entry value against its key; returns `(append time, payload)`.
pub(super) fn decode_entry<'v>(key: &[u8], value: &'v [u8]) -> Result<(u64, &'v [u8]), String> {
    if value.len() < ENTRY_HEADER {
        return Err(format!(
            "value is {} bytes, shorter than the {ENTRY_HEADER}-byte header",
            value.len()
        ));
    }
    let (header, payload) = value.split_at(ENTRY_HEADER);
    let stored = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let mut t = [0u8; 8];
    t.copy_from_slice(&header[4..12]);
    let time_ms = u64::from_be_bytes(t);
    let actual = entry_crc(key, time_ms, payload);
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    Ok((time_ms, payload))
}

/// Payload bytes of an entry value without checking it (used when deleting).
pub(super) fn payload_len(value: &[u8]) -> u64 {
    value.len().saturating_sub(ENTRY_HEADER) as u64
}

/// A big-endian `u64` of exactly eight bytes.
pub(super) fn decode_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// The per-shard record: offsets and size. Kept in memory and persisted with every change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ShardMeta {
    pub(super) next: u64,
    pub(super) first: u64,
    pub(super) bytes: u64,
}

impl ShardMeta {
    pub(super) fn encode(&self) -> [u8; META_LEN] {
        let mut v = [0u8; META_LEN];
        v[..8].copy_from_slice(&self.next.to_be_bytes());
        v[8..16].copy_from_slice(&self.first.to_be_bytes());
        v[16..24].copy_from_slice(&self.bytes.to_be_bytes());
        let crc = crc32fast::hash(&v[..24]);
        v[24..].copy_from_slice(&crc.to_be_bytes());
        v
    }

    pub(super) fn decode(v: &[u8]) -> Result<Self, String> {
        if v.len() != META_LEN {
            return Err(format!("record is {} bytes, expected {META_LEN}", v.len()));
        }
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let stored = u32::from_be_bytes([v[24], v[25], v[26], v[27]]);
        if stored != crc32fast::hash(&v[..24]) {
            return Err("checksum mismatch".to_string());
        }
        let meta = ShardMeta {
            next: word(0),
            first: word(8),
            bytes: word(16),
        };
        if meta.first > meta.next {
            return Err(format!(
                "first offset {} is past next offset {}",
                meta.first, meta.next
            ));
        }
        Ok(meta)
    }
}
