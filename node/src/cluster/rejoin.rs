//! On every member, for the life of its process: a member the agreed state still marks
//! leaving, though this process never started to leave, was stopped before its shards could
//! move (every member stopped at once for maintenance, or the last one) and has been started
//! again. It proposes `Rejoin` until that commits, so placement gives it shards again rather
//! than draining it and removing it. Its own file because it is the one proposal a member
//! makes about itself after a restart, retried in the background: the majority it needs may
//! come back much later.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use starling_cluster::Command;

use super::leader::Backoff;
use super::{Shared, LEASE};

/// Watches the committed state; proposes `Rejoin` for this node when it is marked leaving
/// and this process is not, with a growing pause between failed attempts (250 ms to 5 s).
pub(super) async fn rejoin_loop(s: Arc<Shared>) {
    let mut state = s.state.clone();
    let mut pause = Duration::from_millis(250);
    let mut warnings = Backoff::default();
    loop {
        if s.leaving.load(Ordering::Relaxed) {
            return;
        }
        let marked = state
            .borrow_and_update()
            .members
            .get(&s.me)
            .is_some_and(|m| m.leaving);
        // Only a state caught up with the leader's says whether the mark is still there:
        // the lease holds once this node has applied the leader's log as it was recently.
        if !marked || !s.raft.lease_valid(LEASE) {
            pause = Duration::from_millis(250);
            let _ = tokio::time::timeout(Duration::from_millis(500), state.changed()).await;
            continue;
        }
        match s.propose(Command::Rejoin { node: s.me }).await {
            Ok(()) => warnings.succeeded("this node was marked leaving and is back: it stays"),
            Err(e) => {
                warnings.failed("could not clear this node's leaving mark yet", &e);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}
