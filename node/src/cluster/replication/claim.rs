//! Logging a publish once per shard across retries: a sender that gave up on a slow owner
//! and forwards again must neither log the events twice nor see them acknowledged before
//! they are logged. The bookkeeping ([`Seen`](starling_cluster::Seen)) is the core's; this
//! is the waiting on it, with a deadline.

use std::time::{Duration, Instant};

use starling_cluster::replication::Origin;

use super::{lock, Replication};
use crate::EngineError;

/// How long a retried forward waits for an earlier attempt of the same publish that is
/// still being logged (a sender that gave up on a slow owner and tried again).
const CLAIM_WAIT: Duration = Duration::from_secs(15);

/// The shards of one publish an attempt logs (see [`Replication::claim`]); released, and
/// the waiting attempts woken, when dropped.
pub(in crate::cluster) struct Claim<'r> {
    replication: &'r Replication,
    origin: Origin,
    claimed: Vec<u32>,
    /// Shards whose events of this publish the log holds already.
    pub(in crate::cluster) logged: Vec<u32>,
}

impl Claim<'_> {
    /// The claimed shards' events are in the log now.
    pub(in crate::cluster) fn done(&self) {
        self.replication.note(self.origin, &self.claimed);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(&self.replication.seen).release(self.origin, &self.claimed);
        self.replication.settled.notify_all();
    }
}

impl Replication {
    /// Claims `shards` of publish `origin` for one attempt to log them (see
    /// [`Seen::try_claim`]). While another attempt of the same publish is logging any of
    /// them this waits for it (up to [`CLAIM_WAIT`]), so a retry that overtakes a slow first
    /// attempt neither logs the events twice nor acknowledges them before they are logged.
    pub(in crate::cluster) fn claim(
        &self,
        origin: Origin,
        shards: &[u32],
    ) -> Result<Claim<'_>, EngineError> {
        let deadline = Instant::now() + CLAIM_WAIT;
        let mut seen = lock(&self.seen);
        let claimed = loop {
            if let Some(c) = seen.try_claim(origin, shards) {
                break c;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(EngineError::Unavailable(format!(
                    "an earlier attempt of this publish is still being logged after \
                     {CLAIM_WAIT:?}; retry"
                )));
            }
            seen = self
                .settled
                .wait_timeout(seen, left.min(Duration::from_millis(100)))
                .map_or_else(|p| p.into_inner().0, |(g, _)| g);
        };
        Ok(Claim {
            replication: self,
            origin,
            claimed: claimed.claimed,
            logged: claimed.logged,
        })
    }

    /// Records that this node's log holds the events of publish `origin` for `shards`.
    pub(in crate::cluster) fn note(&self, origin: Origin, shards: &[u32]) {
        lock(&self.seen).note(origin, shards);
    }
}
