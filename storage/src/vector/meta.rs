//! The `collection.meta` format (version, spec, generation, index length and CRC, key table,
//! trailing CRC32): encoding and bounds-checked decoding, so a format change touches one file.

use std::path::Path;

use super::collection::State;
use super::error::corrupt;
use super::{CollectionSpec, Metric, VectorCollection, MAX_DIM};
use crate::StorageError;

pub(super) const META_FILE: &str = "collection.meta";
const META_MAGIC: &[u8; 8] = b"STVCMETA";
const FORMAT_VERSION: u32 = 1;

impl VectorCollection {
    pub(super) fn encode_meta(
        &self,
        state: &State,
        generation: u64,
        index_len: u64,
        index_crc: u32,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + state.by_id.len() * 48);
        out.extend_from_slice(META_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        put_bytes(&mut out, self.name.as_bytes());
        out.extend_from_slice(&(self.spec.dim as u32).to_le_bytes());
        out.push(self.spec.metric.code());
        out.extend_from_slice(&(self.index.connectivity() as u32).to_le_bytes());
        out.extend_from_slice(&generation.to_le_bytes());
        out.extend_from_slice(&state.version.to_le_bytes());
        out.extend_from_slice(&state.next_id.to_le_bytes());
        out.extend_from_slice(&index_len.to_le_bytes());
        out.extend_from_slice(&index_crc.to_le_bytes());
        out.extend_from_slice(&(state.by_id.len() as u64).to_le_bytes());
        let mut ids: Vec<_> = state.by_id.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(entry) = state.by_id.get(&id) {
                out.extend_from_slice(&id.to_le_bytes());
                put_bytes(&mut out, entry.key.as_bytes());
                put_bytes(&mut out, &entry.metadata);
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The decoded meta file.
pub(super) struct Meta {
    pub(super) name: String,
    pub(super) spec: CollectionSpec,
    pub(super) connectivity: usize,
    pub(super) generation: u64,
    pub(super) version: u64,
    pub(super) next_id: u64,
    pub(super) index_len: u64,
    pub(super) index_crc: u32,
    pub(super) entries: Vec<(u64, String, Vec<u8>)>,
}

/// Bounds-checked reader over a meta file; every short read is a `Corrupt` error.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], StorageError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(corrupt(
                self.path,
                format!("truncated while reading {what}"),
            ));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, StorageError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, StorageError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(a))
    }

    fn u64(&mut self, what: &str) -> Result<u64, StorageError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(a))
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], StorageError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    fn string(&mut self, what: &str) -> Result<String, StorageError> {
        let bytes = self.bytes(what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| corrupt(self.path, format!("{what} is not UTF-8")))
    }
}

impl Meta {
    pub(super) fn decode(bytes: &[u8], path: &Path) -> Result<Meta, StorageError> {
        if bytes.len() < META_MAGIC.len() + 4 + 4 || &bytes[..META_MAGIC.len()] != META_MAGIC {
            return Err(corrupt(
                path,
                "not a vector collection meta file (bad header)",
            ));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let mut stored = [0u8; 4];
        stored.copy_from_slice(crc);
        let stored = u32::from_le_bytes(stored);
        let actual = crc32fast::hash(body);
        if stored != actual {
            return Err(corrupt(
                path,
                format!("CRC32 mismatch (stored {stored:08x}, computed {actual:08x}): truncated or damaged"),
            ));
        }
        let mut r = Reader {
            bytes: body,
            pos: META_MAGIC.len(),
            path,
        };
        let version = r.u32("the format version")?;
        if version != FORMAT_VERSION {
            return Err(corrupt(
                path,
                format!("format version {version}, this build reads {FORMAT_VERSION}"),
            ));
        }
        let name = r.string("the name")?;
        let dim = r.u32("the dimension")? as usize;
        let metric_code = r.u8("the metric")?;
        let Some(metric) = Metric::from_code(metric_code) else {
            return Err(corrupt(path, format!("unknown metric code {metric_code}")));
        };
        let spec = CollectionSpec { dim, metric };
        if dim == 0 || dim > MAX_DIM {
            return Err(corrupt(path, format!("invalid dimension {dim}")));
        }
        let connectivity = r.u32("the connectivity")? as usize;
        let generation = r.u64("the generation")?;
        let data_version = r.u64("the data version")?;
        let next_id = r.u64("the next id")?;
        let index_len = r.u64("the index length")?;
        let index_crc = r.u32("the index CRC")?;
        let count = r.u64("the entry count")?;
        // Each entry takes at least 16 bytes, which bounds the allocation below.
        if count > (body.len() / 16) as u64 {
            return Err(corrupt(
                path,
                format!("entry count {count} exceeds the file size"),
            ));
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let id = r.u64("an entry id")?;
            let key = r.string("an entry key")?;
            let metadata = r.bytes("entry metadata")?.to_vec();
            entries.push((id, key, metadata));
        }
        if r.pos != body.len() {
            return Err(corrupt(path, "trailing bytes after the last entry"));
        }
        Ok(Meta {
            name,
            spec,
            connectivity,
            generation,
            version: data_version,
            next_id,
            index_len,
            index_crc,
            entries,
        })
    }
}
