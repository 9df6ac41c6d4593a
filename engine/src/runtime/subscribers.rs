//! Bounded fan-out to subscribers.
//!
//! Each subscriber has a bounded queue. A subscriber whose queue is full is cut off (with the
//! reason recorded for it to read) rather than allowed to stall the workers or grow memory:
//! publishing and other subscribers never wait for a slow reader.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use thiserror::Error;

/// Why a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubscriptionClosed {
    #[error("subscription cut off: {0}")]
    CutOff(String),
    #[error("the dataflow or topic was dropped, or the engine shut down")]
    Ended,
}

struct Sub<T> {
    tx: Sender<T>,
    reason: Arc<Mutex<Option<String>>>,
}

/// The subscribers of one topic or output.
pub struct Subscribers<T> {
    list: Mutex<Vec<Sub<T>>>,
    capacity: usize,
    /// Subscribers cut off for reading too slowly.
    pub cut_off: AtomicU64,
}

impl<T: Clone> Subscribers<T> {
    /// Subscribers with queues of `capacity` batches each.
    pub fn new(capacity: usize) -> Subscribers<T> {
        Subscribers {
            list: Mutex::new(Vec::new()),
            capacity: capacity.max(1),
            cut_off: AtomicU64::new(0),
        }
    }

    /// Adds a subscriber.
    pub fn subscribe(&self) -> Subscription<T> {
        let (tx, rx) = crossbeam_channel::bounded(self.capacity);
        let reason = Arc::new(Mutex::new(None));
        self.lock().push(Sub {
            tx,
            reason: Arc::clone(&reason),
        });
        Subscription { rx, reason }
    }

    /// Whether anyone listens (lets callers skip building a batch).
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Number of live subscribers.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Offers `item` to every subscriber; never blocks.
    pub fn send(&self, item: &T) {
        let capacity = self.capacity;
        let mut cut = 0;
        self.lock().retain(|s| match s.tx.try_send(item.clone()) {
            Ok(()) => true,
            Err(TrySendError::Disconnected(_)) => false,
            Err(TrySendError::Full(_)) => {
                if let Ok(mut r) = s.reason.lock() {
                    *r = Some(format!(
                        "reading too slowly: {capacity} batches were waiting unread"
                    ));
                }
                cut += 1;
                false
            }
        });
        if cut > 0 {
            tracing::warn!(cut, "slow subscribers cut off");
            self.cut_off.fetch_add(cut, Ordering::Relaxed);
        }
    }

    /// Ends every subscription (their readers see [`SubscriptionClosed::Ended`]).
    pub fn close_all(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Sub<T>>> {
        // A panic while holding this lock cannot leave the list inconsistent.
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A subscription whose batches come from several places (a node's own results and its
/// peers' in a cluster). Cloned once per source; the reader sees the end when every clone is
/// dropped, or the reason of the first source that ended it.
pub struct Feed<T> {
    tx: Sender<T>,
    reason: Arc<Mutex<Option<String>>>,
}

impl<T> Clone for Feed<T> {
    fn clone(&self) -> Self {
        Feed {
            tx: self.tx.clone(),
            reason: Arc::clone(&self.reason),
        }
    }
}

impl<T> Feed<T> {
    /// Offers a batch without waiting; false once the reader is gone or the subscription was
    /// ended (the source should stop).
    pub fn send(&self, item: T) -> bool {
        if self.is_ended() {
            return false;
        }
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Disconnected(_)) => false,
            Err(TrySendError::Full(_)) => {
                self.end("reading too slowly: the merged queue was full".into());
                false
            }
        }
    }

    /// Ends the subscription for every source with a reason the reader will see.
    pub fn end(&self, reason: String) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason);
        }
    }

    /// Whether the subscription was ended by some source.
    pub fn is_ended(&self) -> bool {
        self.reason.lock().map(|r| r.is_some()).unwrap_or(true)
    }
}

/// A subscription fed by hand: the writing end (clone it per source) and the reading end.
pub fn feed<T>(capacity: usize) -> (Feed<T>, Subscription<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let reason = Arc::new(Mutex::new(None));
    (
        Feed {
            tx,
            reason: Arc::clone(&reason),
        },
        Subscription { rx, reason },
    )
}

/// A dropped reader ends a fed subscription for every source (they stop at their next
/// check instead of holding a thread and remote streams open).
impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert_with(|| "the reader went away".to_string());
        }
    }
}

/// The reading end of a subscription.
pub struct Subscription<T> {
    rx: Receiver<T>,
    reason: Arc<Mutex<Option<String>>>,
}

impl<T> Subscription<T> {
    /// Waits up to `timeout` for the next batch. `Ok(None)` means nothing arrived in time.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<T>, SubscriptionClosed> {
        match self.rx.recv_timeout(timeout) {
            Ok(v) => Ok(Some(v)),
            // A merged subscription may be ended by one source while others still hold it.
            Err(RecvTimeoutError::Timeout) if self.reason.lock().is_ok_and(|r| r.is_some()) => {
                Err(self.closed())
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(self.closed()),
        }
    }

    /// Takes every batch already queued, without waiting.
    pub fn drain(&self) -> Vec<T> {
        self.rx.try_iter().collect()
    }

    fn closed(&self) -> SubscriptionClosed {
        match self.reason.lock().ok().and_then(|r| r.clone()) {
            Some(r) => SubscriptionClosed::CutOff(r),
            None => SubscriptionClosed::Ended,
        }
    }
}
