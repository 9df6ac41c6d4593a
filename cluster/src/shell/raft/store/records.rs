//! The on-disk record format of the Raft directory, and the small files built from it.
//!
//! Kept apart from the log and the snapshot because both are made of the same records, and
//! because telling a torn tail (a crash during an append, dropped) from damage (reported,
//! never guessed around) is the subtle part: it is tested here on its own.
//!
//! A record is `len: u32 LE | !len: u32 LE | crc32(payload): u32 LE | payload`. The
//! one-record files (`identity`, `vote`, `purged`, `committed`) are replaced atomically:
//! write `*.tmp`, fsync, rename, fsync the directory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StoreError;

/// The largest record accepted when reading back a file: far above any real entry or
/// snapshot, low enough that a damaged length cannot make the node allocate gigabytes.
pub(super) const MAX_RECORD: usize = 256 << 20;
const HEADER: usize = 12;

pub(super) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Appends one framed record to `out`.
pub(super) fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

pub(super) enum Decoded<'a> {
    /// A complete record and the offset just past it.
    Record(&'a [u8], usize),
    /// The bytes from `at` on are a record cut short (a crash during an append).
    Torn,
    End,
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Reads the record at `at`; `Err` is the reason it is damaged.
pub(super) fn decode_record(buf: &[u8], at: usize) -> Result<Decoded<'_>, String> {
    let rest = buf.len() - at;
    if rest == 0 {
        return Ok(Decoded::End);
    }
    if rest < HEADER {
        return Ok(Decoded::Torn);
    }
    let len = u32_at(buf, at);
    if !len != u32_at(buf, at + 4) {
        return Err("the record length does not match its check".into());
    }
    let len = len as usize;
    if len > MAX_RECORD {
        return Err(format!("a record claims {len} bytes"));
    }
    if rest - HEADER < len {
        return Ok(Decoded::Torn);
    }
    let payload = &buf[at + HEADER..at + HEADER + len];
    if crc32fast::hash(payload) != u32_at(buf, at + 8) {
        return Err("checksum mismatch".into());
    }
    Ok(Decoded::Record(payload, at + HEADER + len))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

/// Replaces `dir/name` with the given records; durable on return if `sync`.
pub(super) fn write_records(
    dir: &Path,
    name: &str,
    payloads: &[&[u8]],
    sync: bool,
) -> Result<(), StoreError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut buf = Vec::with_capacity(payloads.iter().map(|p| p.len() + HEADER).sum());
    for p in payloads {
        encode_record(p, &mut buf);
    }
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(&buf).map_err(io_err("write", &tmp))?;
    if sync {
        f.sync_all().map_err(io_err("sync", &tmp))?;
    }
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

pub(super) fn encode_json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Io {
        action: "encode",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })
}

/// Replaces `dir/name` with one JSON record holding `value`.
pub(super) fn write_atomic<T: Serialize>(
    dir: &Path,
    name: &str,
    value: &T,
    sync: bool,
) -> Result<(), StoreError> {
    let json = encode_json(&dir.join(name), value)?;
    write_records(dir, name, &[&json], sync)
}

/// Records read back from a file, each with the offset of its payload.
type Records = Vec<(usize, Vec<u8>)>;

/// Reads a file written by [`write_records`] that must hold exactly `count` records:
/// each with its offset. `None` if the file does not exist.
pub(super) fn read_records(
    dir: &Path,
    name: &str,
    count: usize,
) -> Result<Option<Records>, StoreError> {
    let path = dir.join(name);
    let buf = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    let mut out = Vec::with_capacity(count);
    let mut at = 0;
    while out.len() < count {
        match decode_record(&buf, at).map_err(|reason| damaged(&path, at, reason))? {
            Decoded::Record(payload, next) => {
                out.push((at + HEADER, payload.to_vec()));
                at = next;
            }
            Decoded::Torn | Decoded::End => {
                return Err(damaged(&path, at, "the file is cut short".into()))
            }
        }
    }
    if at != buf.len() {
        return Err(damaged(
            &path,
            at,
            "unexpected bytes after the last record".into(),
        ));
    }
    Ok(Some(out))
}

pub(super) fn damaged(path: &Path, offset: usize, reason: String) -> StoreError {
    StoreError::Damaged {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    }
}

/// Reads a file written by [`write_atomic`]; `None` if it does not exist.
pub(super) fn read_atomic<T: DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<Option<T>, StoreError> {
    let Some(records) = read_records(dir, name, 1)? else {
        return Ok(None);
    };
    let (offset, payload) = &records[0];
    serde_json::from_slice(payload)
        .map(Some)
        .map_err(|e| damaged(&dir.join(name), *offset, format!("unreadable content: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_told_from_a_torn_tail() {
        let mut buf = Vec::new();
        encode_record(b"hello", &mut buf);
        encode_record(b"world!", &mut buf);
        let Ok(Decoded::Record(p, next)) = decode_record(&buf, 0) else {
            panic!("first record")
        };
        assert_eq!(p, b"hello");
        assert!(matches!(
            decode_record(&buf, next),
            Ok(Decoded::Record(b"world!", _))
        ));
        // Cut short: torn.
        assert!(matches!(
            decode_record(&buf[..buf.len() - 2], next),
            Ok(Decoded::Torn)
        ));
        // A flipped payload byte: damaged.
        let mut bad = buf.clone();
        bad[HEADER] ^= 1;
        assert!(decode_record(&bad, 0).is_err());
        // A flipped length byte: damaged, not mistaken for a torn tail.
        let mut bad = buf.clone();
        bad[0] ^= 0x40;
        assert!(decode_record(&bad, 0).is_err());
    }
}
