//! Operator-state checkpoints: one file per `(name, id)`, written atomically.
//!
//! # Files
//!
//! A checkpoint of `name` with id `id` is the file `<encoded name>.<id, 20 digits>.ckpt` in
//! the store's directory. The name is encoded byte-wise: ASCII letters, digits, `-` and `_`
//! stay, every other byte becomes `%XX`. So a hostile name (`../x`, `a/b`, `.`) can never leave
//! the directory or collide with another name, and the first `.` always ends the name part.
//! Zero-padded ids make a directory listing sort in id order.
//!
//! # Format (all integers big-endian)
//!
//! ```text
//! magic "STRLCKPT" | format version u32 (1) | id u64 | name len u32 | name
//! | part count u32 | (part name len u32 | part name | data len u64 | data)*
//! | crc32 u32 over everything before it
//! ```
//!
//! The id and name inside the file must match its file name, so a renamed or misplaced file
//! is not loaded as something it is not.
//!
//! # Atomicity
//!
//! `save` writes a temporary file (`….ckpt.tmp-<pid>-<n>`), fsyncs it, renames it over the
//! final name and fsyncs the directory. A crash leaves either the old set of files or the new
//! one, plus at worst a stray temporary file, which loading ignores and the next `open`
//! removes. Only the newest [`CHECKPOINT_KEEP`] checkpoints of a name are kept, so one damaged
//! newest file still leaves an intact one to fall back to.
//!
//! One `CheckpointStore` per directory: unlike the sled stores this one takes no lock on its
//! directory.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::sled_dir::{be_u32, be_u64, check_name};
use crate::StorageError;

/// How many checkpoints per name `save` keeps (the newest by id).
pub const CHECKPOINT_KEEP: usize = 2;
/// Longest checkpoint name, in bytes: the encoded name (up to 3 bytes per byte), the id and
/// the suffixes must fit in a 255-byte file name.
pub const CHECKPOINT_MAX_NAME_BYTES: usize = 64;

const MAGIC: &[u8; 8] = b"STRLCKPT";
const FORMAT_VERSION: u32 = 1;
const SUFFIX: &str = ".ckpt";
const TMP_MARK: &str = ".tmp-";

/// A loaded checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The id it was saved with (e.g. a watermark or a sequence number).
    pub id: u64,
    /// The named blobs, in the order they were saved.
    pub parts: Vec<(String, Vec<u8>)>,
}

impl Checkpoint {
    /// The data of the first part called `name`.
    pub fn part(&self, name: &str) -> Option<&[u8]> {
        self.parts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| &d[..])
    }
}

/// A directory of checkpoint files; see the module docs for names, format and atomicity.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    /// Serializes saves and removals, so that pruning never races a save of the same name.
    write: Mutex<()>,
    /// Makes temporary file names unique within the process.
    seq: AtomicU64,
}

/// The file-name form of a checkpoint name (see the module docs).
fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The id of a final checkpoint file of the encoded name, or `None` for any other file.
fn parse_file_name(encoded: &str, file: &str) -> Option<u64> {
    let rest = file.strip_prefix(encoded)?.strip_prefix('.')?;
    let digits = rest.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn encode(name: &str, id: u64, parts: &[(&str, &[u8])]) -> Result<Vec<u8>, StorageError> {
    let too_large = |what, size: usize, limit: u64| StorageError::TooLarge {
        what,
        size: size as u64,
        limit,
    };
    let count = u32::try_from(parts.len())
        .map_err(|_| too_large("checkpoint parts", parts.len(), u32::MAX.into()))?;
    let size: usize = parts.iter().map(|(n, d)| 12 + n.len() + d.len()).sum();
    let mut out = Vec::with_capacity(32 + name.len() + size);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    for (part, data) in parts {
        let len = u32::try_from(part.len())
            .map_err(|_| too_large("checkpoint part name bytes", part.len(), u32::MAX.into()))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part.as_bytes());
        out.extend_from_slice(&(data.len() as u64).to_be_bytes());
        out.extend_from_slice(data);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Checks and parses a checkpoint file's bytes; the error says which check failed.
fn decode(name: &str, id: u64, bytes: &[u8]) -> Result<Checkpoint, String> {
    if bytes.len() < MAGIC.len() + 4 {
        return Err(format!(
            "file is {} bytes, too short for a checkpoint",
            bytes.len()
        ));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    if !body.starts_with(MAGIC) {
        return Err("not a checkpoint file (bad magic)".to_string());
    }
    let stored = be_u32(tail, 0).unwrap_or(0);
    let actual = crc32fast::hash(body);
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {actual:#010x}); the file is \
             truncated or damaged"
        ));
    }
    let mut r = Reader {
        b: body,
        at: MAGIC.len(),
    };
    let version = r.u32()?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        ));
    }
    let stored_id = r.u64()?;
    let name_len = r.u32()? as usize;
    let stored_name = r.bytes(name_len)?;
    if stored_id != id || stored_name != name.as_bytes() {
        return Err(format!(
            "file holds checkpoint {:?} id {stored_id}, not {name:?} id {id}",
            String::from_utf8_lossy(stored_name)
        ));
    }
    let count = r.u32()?;
    let mut parts = Vec::new();
    for i in 0..count {
        let len = r.u32()? as usize;
        let part = std::str::from_utf8(r.bytes(len)?)
            .map_err(|_| format!("part {i} has a name that is not UTF-8"))?
            .to_string();
        let len = usize::try_from(r.u64()?).map_err(|_| format!("part {i} is too large"))?;
        parts.push((part, r.bytes(len)?.to_vec()));
    }
    if r.at != body.len() {
        return Err(format!(
            "{} unexpected bytes after the last part",
            body.len() - r.at
        ));
    }
    Ok(Checkpoint { id, parts })
}

/// A bounds-checked cursor, so damaged lengths become errors, never panics or huge allocations.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("a length of {n} at byte {} runs past the end", self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        be_u32(b, 0).ok_or_else(|| "short read".to_string())
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.bytes(8)?;
        be_u64(b, 0).ok_or_else(|| "short read".to_string())
    }
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> StorageError {
    move |e| StorageError::backend(context, e)
}

impl CheckpointStore {
    /// Opens (or creates) the checkpoint directory `dir` and removes temporary files left by
    /// an interrupted save.
    ///
    /// Fails with [`StorageError::Unwritable`] when `dir` cannot be created or written.
    pub fn open(dir: &Path) -> Result<CheckpointStore, StorageError> {
        let unwritable = |source| StorageError::Unwritable {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(unwritable)?;
        let probe = dir.join(".starling-write-probe");
        fs::write(&probe, b"probe").map_err(unwritable)?;
        let _ = fs::remove_file(&probe);
        let store = CheckpointStore {
            dir: dir.to_path_buf(),
            write: Mutex::new(()),
            seq: AtomicU64::new(0),
        };
        for file in store.file_names()? {
            if file.contains(&format!("{SUFFIX}{TMP_MARK}")) {
                let path = dir.join(&file);
                match fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "removed a temporary checkpoint file left by an interrupted save")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove a stray temporary checkpoint file")
                    }
                }
            }
        }
        Ok(store)
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Saves checkpoint `id` of `name` with the named `parts`, atomically (see the module
    /// docs), then deletes all but the newest [`CHECKPOINT_KEEP`] checkpoints of `name` by id.
    /// Saving an existing id replaces it. `name` must be non-empty, at most
    /// [`CHECKPOINT_MAX_NAME_BYTES`] bytes, without control characters; any other character
    /// (also `/` and `..`) is safe.
    pub fn save(&self, name: &str, id: u64, parts: &[(&str, &[u8])]) -> Result<(), StorageError> {
        check_name("checkpoint name", name, CHECKPOINT_MAX_NAME_BYTES)?;
        let bytes = encode(name, id, parts)?;
        let _write = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let path = self.path(name, id);
        let tmp = PathBuf::from(format!(
            "{}{TMP_MARK}{}-{}",
            path.display(),
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut f = File::create(&tmp).map_err(io_err(format!(
                "creating checkpoint file {}",
                tmp.display()
            )))?;
            f.write_all(&bytes)
                .map_err(io_err(format!("writing checkpoint file {}", tmp.display())))?;
            f.sync_all()
                .map_err(io_err(format!("syncing checkpoint file {}", tmp.display())))?;
            fs::rename(&tmp, &path).map_err(io_err(format!(
                "renaming {} to {}",
                tmp.display(),
                path.display()
            )))
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.sync_dir()?;
        tracing::debug!(name, id, bytes = bytes.len(), "checkpoint saved");

        let ids = self.list(name)?;
        let old = ids.len().saturating_sub(CHECKPOINT_KEEP);
        for &old_id in &ids[..old] {
            let p = self.path(name, old_id);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StorageError::backend(
                        format!("removing old checkpoint {}", p.display()),
                        e,
                    ))
                }
            }
        }
        if old > 0 {
            self.sync_dir()?;
            if ids[..old].contains(&id) {
                tracing::warn!(
                    name,
                    id,
                    "saved a checkpoint older than the newest kept ones; it was pruned at once"
                );
            }
        }
        Ok(())
    }

    /// The newest intact checkpoint of `name`, or `None` when there is none.
    ///
    /// A damaged or truncated newer file is skipped with a warning and the previous one is
    /// loaded. When every file is damaged this fails with [`StorageError::CorruptCheckpoint`]
    /// naming them: damaged data is never returned.
    pub fn load_latest(&self, name: &str) -> Result<Option<Checkpoint>, StorageError> {
        check_name("checkpoint name", name, CHECKPOINT_MAX_NAME_BYTES)?;
        let mut damaged: Vec<(PathBuf, String)> = Vec::new();
        for id in self.list(name)?.into_iter().rev() {
            let path = self.path(name, id);
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                // Pruned by a concurrent save: a newer one exists and was already tried.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(StorageError::backend(
                        format!("reading checkpoint {}", path.display()),
                        e,
                    ))
                }
            };
            match decode(name, id, &bytes) {
                Ok(c) => {
                    for (p, reason) in &damaged {
                        tracing::warn!(name, file = %p.display(), %reason, fallback_id = id, "damaged checkpoint skipped; loading an older one");
                    }
                    return Ok(Some(c));
                }
                Err(reason) => damaged.push((path, reason)),
            }
        }
        if damaged.is_empty() {
            return Ok(None);
        }
        let reason = damaged
            .iter()
            .map(|(p, r)| format!("{}: {r}", p.display()))
            .collect::<Vec<_>>()
            .join("; ");
        tracing::error!(name, %reason, "no intact checkpoint");
        Err(StorageError::CorruptCheckpoint {
            name: name.to_string(),
            files: damaged.into_iter().map(|(p, _)| p).collect(),
            reason,
        })
    }

    /// The ids of the stored checkpoints of `name` (intact or not), ascending.
    pub fn list(&self, name: &str) -> Result<Vec<u64>, StorageError> {
        check_name("checkpoint name", name, CHECKPOINT_MAX_NAME_BYTES)?;
        let encoded = encode_name(name);
        let mut ids: Vec<u64> = self
            .file_names()?
            .iter()
            .filter_map(|f| parse_file_name(&encoded, f))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Deletes every checkpoint of `name` (and its temporary files).
    pub fn remove(&self, name: &str) -> Result<(), StorageError> {
        check_name("checkpoint name", name, CHECKPOINT_MAX_NAME_BYTES)?;
        let _write = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let encoded = encode_name(name);
        let mut any = false;
        for file in self.file_names()? {
            let ours = parse_file_name(&encoded, &file).is_some()
                || file
                    .split_once(TMP_MARK)
                    .is_some_and(|(base, _)| parse_file_name(&encoded, base).is_some());
            if !ours {
                continue;
            }
            let p = self.dir.join(&file);
            match fs::remove_file(&p) {
                Ok(()) => any = true,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StorageError::backend(
                        format!("removing checkpoint {}", p.display()),
                        e,
                    ))
                }
            }
        }
        if any {
            self.sync_dir()?;
            tracing::info!(name, "checkpoints removed");
        }
        Ok(())
    }

    fn path(&self, name: &str, id: u64) -> PathBuf {
        self.dir
            .join(format!("{}.{id:020}{SUFFIX}", encode_name(name)))
    }

    /// The UTF-8 file names in the directory (ours are always ASCII).
    fn file_names(&self) -> Result<Vec<String>, StorageError> {
        let context = || format!("listing checkpoint directory {}", self.dir.display());
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(context()))? {
            let entry = entry.map_err(io_err(context()))?;
            if let Ok(n) = entry.file_name().into_string() {
                names.push(n);
            }
        }
        Ok(names)
    }

    /// Makes renames and removals in the directory durable.
    fn sync_dir(&self) -> Result<(), StorageError> {
        let context = || format!("syncing checkpoint directory {}", self.dir.display());
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(context()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_stay_in_the_directory_and_apart() {
        for name in ["..", "../x", "a/b", "a\\b", ".", "a.b", "%2E"] {
            let e = encode_name(name);
            assert!(
                !e.contains('/') && !e.contains('\\') && !e.contains('.'),
                "{e}"
            );
        }
        assert_ne!(encode_name("a.b"), encode_name("a%2Eb"));
        assert_eq!(encode_name("flow-1_x"), "flow-1_x");
    }

    #[test]
    fn file_names_parse_only_for_their_own_name() {
        let f = format!("{}.{:020}{SUFFIX}", encode_name("a"), 42);
        assert_eq!(parse_file_name("a", &f), Some(42));
        assert_eq!(parse_file_name("ab", &f), None);
        assert_eq!(parse_file_name("a", &format!("{f}{TMP_MARK}1-0")), None);
        assert_eq!(parse_file_name("a", "a.42.ckpt"), None);
    }

    #[test]
    fn the_format_round_trips_and_checks_everything() {
        let bytes = encode("flow", 7, &[("w0", b"abc"), ("", b"")]).unwrap();
        let c = decode("flow", 7, &bytes).unwrap();
        assert_eq!(
            c.parts,
            vec![("w0".to_string(), b"abc".to_vec()), (String::new(), vec![])]
        );
        assert!(decode("flow", 8, &bytes).is_err());
        assert!(decode("other", 7, &bytes).is_err());
        for cut in 0..bytes.len() {
            assert!(decode("flow", 7, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(decode("flow", 7, &flipped).is_err());
    }
}
