//! Writes a run to `person.ndjson`, `auction.ndjson` and `bid.ndjson`, one JSON object per
//! line in generation order, so that other systems (or `starling publish`) replay exactly
//! the same events.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Generator, NexmarkConfig, NexmarkError, NexmarkEvent};

/// What [`write_ndjson`] wrote: how many events per topic and the event-time range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NdjsonCounts {
    /// Lines in `person.ndjson`.
    pub persons: u64,
    /// Lines in `auction.ndjson`.
    pub auctions: u64,
    /// Lines in `bid.ndjson`.
    pub bids: u64,
    /// Smallest and largest `date_time` written (ms); `None` for zero events.
    pub time_range: Option<(u64, u64)>,
}

impl NdjsonCounts {
    /// All events written.
    pub fn total(&self) -> u64 {
        self.persons + self.auctions + self.bids
    }
}

const WRITE_BUFFER: usize = 1 << 20;

struct Sink {
    path: PathBuf,
    out: BufWriter<File>,
}

impl Sink {
    fn create(dir: &Path, topic: &str) -> Result<Sink, NexmarkError> {
        let path = dir.join(format!("{topic}.ndjson"));
        let file = File::create(&path).map_err(|source| NexmarkError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Sink {
            path,
            out: BufWriter::with_capacity(WRITE_BUFFER, file),
        })
    }

    /// Writes one line; `line` is a scratch buffer reused across events.
    fn write<T: Serialize>(&mut self, line: &mut Vec<u8>, event: &T) -> Result<(), NexmarkError> {
        line.clear();
        serde_json::to_writer(&mut *line, event)?;
        line.push(b'\n');
        self.out.write_all(line).map_err(|source| NexmarkError::Io {
            path: self.path.clone(),
            source,
        })
    }

    fn finish(mut self) -> Result<(), NexmarkError> {
        self.out.flush().map_err(|source| NexmarkError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Generates `events` events of `cfg` into `dir` (created if missing), one file per topic.
/// Field names and order are the topic schemas of [`TOPICS_YAML`](super::TOPICS_YAML); times
/// are integer milliseconds.
pub fn write_ndjson(
    dir: &Path,
    cfg: &NexmarkConfig,
    events: u64,
) -> Result<NdjsonCounts, NexmarkError> {
    let generator = Generator::new(cfg, events)?;
    std::fs::create_dir_all(dir).map_err(|source| NexmarkError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut persons = Sink::create(dir, "person")?;
    let mut auctions = Sink::create(dir, "auction")?;
    let mut bids = Sink::create(dir, "bid")?;
    let mut line = Vec::with_capacity(1024);
    let mut counts = NdjsonCounts::default();
    for event in generator {
        let t = event.date_time();
        counts.time_range = Some(match counts.time_range {
            None => (t, t),
            Some((lo, hi)) => (lo.min(t), hi.max(t)),
        });
        match &event {
            NexmarkEvent::Person(p) => {
                persons.write(&mut line, p)?;
                counts.persons += 1;
            }
            NexmarkEvent::Auction(a) => {
                auctions.write(&mut line, a)?;
                counts.auctions += 1;
            }
            NexmarkEvent::Bid(b) => {
                bids.write(&mut line, b)?;
                counts.bids += 1;
            }
        }
    }
    persons.finish()?;
    auctions.finish()?;
    bids.finish()?;
    Ok(counts)
}
