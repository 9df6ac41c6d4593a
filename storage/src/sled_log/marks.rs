//! The recorded flushed ends (`durable.marks`): sled recovers a damaged file by silently
//! going back to an earlier consistent point, and comparing the shards' ends with these
//! marks on open turns that into an error ([`StorageError::Lost`]).
//!
//! Apart from the log's operations because it is a second file beside sled's, with its own
//! format and its own recorder thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{rlock, TopicState};
use crate::StorageError;

/// File in the log directory with the end offset of every shard at the last recorded
/// flush. sled recovers a damaged file by silently going back to an earlier consistent
/// point; comparing with these marks on open turns that into an error. Written at most every
/// [`RECORD_EVERY`], so damage confined to the writes of the last interval is not detected.
pub(super) const MARKS_FILE: &str = "durable.marks";
const MARKS_MAGIC: &[u8; 8] = b"STRLMRK1";
/// How often the flushed ends are recorded.
const RECORD_EVERY: Duration = Duration::from_millis(200);

type Marks = Vec<(String, u32, u64)>;

pub(super) fn durable_marks(topics: &RwLock<HashMap<String, Arc<TopicState>>>) -> Marks {
    let mut out = Vec::new();
    for (name, t) in rlock(topics).iter() {
        for (shard, meta) in rlock(&t.shards).iter() {
            out.push((name.clone(), *shard, rlock(meta).next));
        }
    }
    out.sort();
    out
}

pub(super) fn write_marks(dir: &Path, marks: &Marks) -> std::io::Result<()> {
    use std::io::Write;
    let mut body = Vec::with_capacity(16 + marks.len() * 24);
    body.extend_from_slice(MARKS_MAGIC);
    body.extend_from_slice(&(marks.len() as u32).to_be_bytes());
    for (topic, shard, next) in marks {
        body.extend_from_slice(&(topic.len() as u32).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&shard.to_be_bytes());
        body.extend_from_slice(&next.to_be_bytes());
    }
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    let tmp = dir.join(format!("{MARKS_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(MARKS_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

fn read_marks(dir: &Path) -> Result<Option<Marks>, String> {
    let bytes = match std::fs::read(dir.join(MARKS_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let bad = |why: &str| format!("{MARKS_FILE} is damaged ({why})");
    if bytes.len() < 16 || &bytes[..8] != MARKS_MAGIC {
        return Err(bad("no header"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(bad("checksum mismatch"));
    }
    let mut at = 8;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = body.get(at..at + n).ok_or_else(|| bad("truncated"))?;
        at += n;
        Ok(s)
    };
    let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let count = word(take(4)?) as usize;
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let len = word(take(4)?) as usize;
        let topic = String::from_utf8(take(len)?.to_vec()).map_err(|_| bad("topic not UTF-8"))?;
        let shard = word(take(4)?);
        let mut n = [0u8; 8];
        n.copy_from_slice(take(8)?);
        out.push((topic, shard, u64::from_be_bytes(n)));
    }
    Ok(Some(out))
}

/// Refuses to open a log that ends before its recorded flushed ends.
pub(super) fn check_durable_marks(
    dir: &Path,
    topics: &HashMap<String, Arc<TopicState>>,
) -> Result<(), StorageError> {
    let marks = read_marks(dir).map_err(|reason| StorageError::CorruptMeta {
        topic: String::new(),
        shard: u32::MAX,
        reason,
    })?;
    for (topic, shard, durable) in marks.unwrap_or_default() {
        let have = topics
            .get(&topic)
            .and_then(|t| rlock(&t.shards).get(&shard).map(|m| rlock(m).next))
            .unwrap_or(0);
        if have < durable {
            return Err(StorageError::Lost {
                topic,
                shard,
                have,
                durable,
            });
        }
    }
    Ok(())
}

/// Records the flushed ends every [`RECORD_EVERY`]: takes the ends, flushes, then writes
/// them (everything below them is on disk by then). Stopped and joined on drop.
pub(super) struct Recorder {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) thread: Option<JoinHandle<()>>,
}

impl Recorder {
    pub(super) fn start(
        db: sled::Db,
        dir: PathBuf,
        topics: Arc<RwLock<HashMap<String, Arc<TopicState>>>>,
        lock: Arc<Mutex<()>>,
    ) -> Result<Recorder, StorageError> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("starling-log-marks".to_string())
            .spawn(move || {
                let mut last: Option<Marks> = None;
                while !s.load(Ordering::Acquire) {
                    std::thread::park_timeout(RECORD_EVERY);
                    let _held = lock.lock().unwrap_or_else(PoisonError::into_inner);
                    let marks = durable_marks(&topics);
                    if last.as_ref() == Some(&marks) {
                        continue;
                    }
                    if db.flush().is_err() {
                        continue;
                    }
                    match write_marks(&dir, &marks) {
                        Ok(()) => last = Some(marks),
                        Err(e) => tracing::warn!(error = %e, "recording the event log's flushed ends failed"),
                    }
                }
            })
            .map_err(|e| StorageError::backend("starting the event log recorder", e))?;
        Ok(Recorder {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
