//! Getting appends to disk: the background flusher of
//! [`Durability::Batch`](crate::Durability::Batch) with its backpressure, and a flush bounded
//! in time.
//!
//! Apart from the operations because it is the one part that runs threads and waits on the
//! disk, and because the promise it keeps (what a crash can lose) is stated once, in
//! `storage/README.md`, and must be read against this code alone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::log::FLUSH_TIMEOUT;
use crate::StorageError;

/// How far the disk is behind, shared by appenders and the background flusher
/// ([`Durability::Batch`](crate::Durability::Batch) only).
///
/// sled's own `flush_every_ms` flusher is not used: it applies no backpressure, so a fast
/// appender can run seconds ahead of the disk (measured: 7 s of unflushed single-entry appends
/// after a 2 s burst). Instead our flusher records the start time of its last completed flush
/// (`durable_us`, microseconds since `epoch`), and an append that finds the disk more than
/// `max_lag` behind flushes itself before returning. That makes the promised loss window real.
pub(super) struct FlushClock {
    pub(super) epoch: Instant,
    pub(super) durable_us: AtomicU64,
    pub(super) stop: AtomicBool,
}

impl FlushClock {
    pub(super) fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Flushes and records that everything appended before the call is on disk.
    pub(super) fn flush(&self, db: &sled::Db) -> sled::Result<()> {
        let started = self.now_us();
        db.flush()?;
        self.durable_us.fetch_max(started, Ordering::AcqRel);
        Ok(())
    }
}

/// The background flusher of [`Durability::Batch`](crate::Durability::Batch); stopped and
/// joined on drop.
pub(super) struct Flusher {
    pub(super) clock: Arc<FlushClock>,
    pub(super) max_lag_us: u64,
    pub(super) thread: Option<JoinHandle<()>>,
}

impl Flusher {
    pub(super) fn start(db: sled::Db, interval_ms: u64) -> Result<Flusher, StorageError> {
        let clock = Arc::new(FlushClock {
            epoch: Instant::now(),
            durable_us: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let interval = Duration::from_millis(interval_ms);
        let c = clock.clone();
        let thread = std::thread::Builder::new()
            .name("starling-log-flush".to_string())
            .spawn(move || {
                while !c.stop.load(Ordering::Acquire) {
                    let started = Instant::now();
                    if let Err(e) = c.flush(&db) {
                        tracing::error!(error = %e, "background flush of the event log failed");
                    }
                    if let Some(rest) = interval.checked_sub(started.elapsed()) {
                        std::thread::park_timeout(rest);
                    }
                }
            })
            .map_err(|e| StorageError::backend("starting the event log flusher", e))?;
        Ok(Flusher {
            clock,
            max_lag_us: 2 * interval_ms * 1000,
            thread: Some(thread),
        })
    }

    /// Backpressure: flush in the caller when the disk is more than `max_lag` behind.
    pub(super) fn catch_up(&self, db: &sled::Db) -> Result<(), String> {
        let c = &self.clock;
        if c.now_us()
            .saturating_sub(c.durable_us.load(Ordering::Acquire))
            > self.max_lag_us
        {
            let started = c.now_us();
            bounded_flush(db)?;
            c.durable_us.fetch_max(started, Ordering::AcqRel);
        }
        Ok(())
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.clock.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Flushes on a helper thread and waits at most [`FLUSH_TIMEOUT`]: after an I/O error sled's
/// flush can block forever (seen with a full disk), and a writer must get an error instead.
/// A flush that times out keeps its thread; the log is then marked failed and used no more.
pub(super) fn bounded_flush(db: &sled::Db) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let db = db.clone();
    std::thread::Builder::new()
        .name("starling-log-sync".to_string())
        .spawn(move || {
            let _ = tx.send(db.flush().map(|_| ()));
        })
        .map_err(|e| format!("cannot start a flush: {e}"))?;
    match rx.recv_timeout(FLUSH_TIMEOUT) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "a flush did not finish within {} s",
            FLUSH_TIMEOUT.as_secs()
        )),
    }
}
