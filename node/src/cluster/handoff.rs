//! The node's shell around the hand-off core (`starling_cluster::handoff`, where the
//! protocol is described and every decision is taken): it cuts a moving shard's operator
//! state out of the engine ([`Engine::release_shards`]) and merges it in
//! ([`Engine::adopt_shards`]), carries chunks to the receiver over the peer listener,
//! proposes `CompleteMove`, and runs one step every 50 ms. The simulation drives the same
//! core types, so what it checks is what runs here.
//!
//! The event log is not copied: the old owner keeps the shard's past events (a restart
//! replays them; see the note in docs/design.md), and the new owner's log holds its events
//! from the move on.
//!
//! [`Engine::release_shards`]: crate::Engine::release_shards
//! [`Engine::adopt_shards`]: crate::Engine::adopt_shards

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use starling_cluster::handoff::{
    self, chunks_of, straggler_route, Ended, Inbox, Outbox, Receive, Refused, StragglerRoute,
};
use starling_cluster::{controller, NodeId};

use super::released::Released;
use super::Shared;
use crate::quic::wire::{WireShardPart, MAX_FRAME};
use crate::runtime::ShardPart;
use crate::EngineError;

/// How long the old owner lets writes it accepted before a move reach its workers before it
/// cuts the shard's state out.
pub(super) const HANDOFF_DRAIN: Duration = Duration::from_millis(100);

/// Bytes of parts per message, well under the frame limit.
const CHUNK_BYTES: usize = MAX_FRAME / 4;

/// Hand-offs of one node, both directions: the core's state, behind the locks the shell's
/// tasks share.
#[derive(Default)]
pub(super) struct Handoffs {
    /// Shards moving away from this node: released state until the move ends.
    outbox: Mutex<Outbox<ShardPart>>,
    /// Records diverted after a release, waiting for their shard's owner, each with the id
    /// of its batch (the receiver merges a batch once, however often it is sent).
    stragglers: Mutex<Vec<(u64, ShardPart)>>,
    /// Per shard moving here: the release whose chunks were merged, and which chunks.
    inbox: Mutex<Inbox>,
    /// Shards whose keys this node's dataflows no longer count, kept on disk.
    released: Mutex<Released>,
    /// Checkpoints that make merged state durable before moves complete, shared by the moves
    /// completing at the same time.
    durable: GroupCheckpoint,
}

/// Group commit for checkpoints: a caller needs a checkpoint that *starts* after its call
/// (it then holds what the caller merged). Callers that arrive while one runs share the next,
/// so the many shards of a join cost a few checkpoints, not one each.
#[derive(Default)]
struct GroupCheckpoint {
    /// (checkpoints started, checkpoints finished, whether one is running).
    gens: Mutex<(u64, u64, bool)>,
    done: std::sync::Condvar,
}

impl GroupCheckpoint {
    /// Returns once a checkpoint that started after this call has finished.
    fn after_now(&self, engine: &crate::Engine) {
        let mut g = lock(&self.gens);
        let want = g.0 + 1;
        loop {
            if g.1 >= want {
                return;
            }
            if g.2 {
                g = self.done.wait(g).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            g.0 += 1;
            g.2 = true;
            let mine = g.0;
            drop(g);
            checkpoint_all(engine);
            g = lock(&self.gens);
            g.1 = mine;
            g.2 = false;
            self.done.notify_all();
        }
    }
}

impl Handoffs {
    /// Queues diverted records for their owners, each under a new batch id.
    fn divert(&self, me: NodeId, parts: impl IntoIterator<Item = ShardPart>) {
        lock(&self.stragglers).extend(parts.into_iter().map(|p| (new_release(me), p)));
    }

    /// Whether this node has nothing left to deliver: no released state being sent and no
    /// diverted records waiting for their owner. A leaving node waits for this before it
    /// stops, or those records would leave with it (the simulation found that).
    pub(super) fn idle(&self) -> bool {
        lock(&self.outbox).shards().next().is_none() && lock(&self.stragglers).is_empty()
    }
}

/// How long a sender waits for a receiver that acknowledged every chunk to complete the move
/// before it sends them all again.
const RESEND_AFTER: Duration = Duration::from_secs(10);

/// A release id unique to this process and node, without coordination.
fn new_release(me: NodeId) -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (t ^ me.rotate_left(17) ^ n.rotate_left(40)).max(1)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn to_wire(parts: &[ShardPart]) -> Vec<WireShardPart> {
    parts
        .iter()
        .map(|p| WireShardPart {
            dataflow: p.dataflow.clone(),
            node: p.node.clone(),
            shard: p.shard,
            bytes: p.bytes.clone(),
        })
        .collect()
}

/// The old owner's side: releases shards moving away, sends their state, gives aborted
/// moves' state back, and sends stragglers on.
pub(super) async fn hand_off_loop(s: Arc<Shared>) {
    let mut state = s.state.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            r = state.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
        if s.engine().is_err() {
            return;
        }
        if let Err(e) = step(&s).await {
            tracing::debug!(error = %e, "hand-off step");
        }
    }
}

async fn step(s: &Arc<Shared>) -> Result<(), EngineError> {
    let st = s.current();
    let engine = s.engine()?;
    // Moves that ended: an abort gives the state back to this node's dataflows.
    let ended = lock(&s.handoffs.outbox).ended(&st.table, s.me);
    for end in ended {
        match end {
            Ended::Aborted { shard, parts } => {
                tracing::info!(shard, "move aborted: the shard's state stays here");
                engine.adopt_shards(&[shard], parts)?;
                lock(&s.handoffs.released).remove(&shard);
            }
            Ended::Completed {
                shard,
                undelivered: true,
            } => tracing::warn!(shard, "a move completed before its state was delivered"),
            Ended::Completed { .. } => {}
        }
    }
    reconcile(s, &st, &engine).await?;

    // On the receiving side: a move that completed needs no record of its chunks any more;
    // one that was aborted after some chunks were merged here leaves state this node must not
    // count (the old owner takes its copy back), so it is cut out again and dropped.
    // The table as of now, not as of this step's start: a chunk merged meanwhile was merged
    // against a table at least this new.
    let dropped = lock(&s.handoffs.inbox).sweep(&s.current().table, s.me);
    if !dropped.is_empty() {
        let e2 = Arc::clone(&engine);
        let d2 = dropped.clone();
        let parts = tokio::task::spawn_blocking(move || e2.release_shards(&d2))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        tracing::warn!(shards = ?dropped, "moves to this node were aborted after state arrived; dropped it");
        lock(&s.handoffs.released).extend(dropped.iter().copied());
        s.handoffs.divert(
            s.me,
            parts.into_iter().filter(|p| !dropped.contains(&p.shard)),
        );
    }

    // Moves past the drain that have not been released yet.
    let ready = lock(&s.handoffs.outbox).ready(&st.table, s.me, Instant::now(), HANDOFF_DRAIN);
    if !ready.is_empty() {
        let shards: Vec<u32> = ready.iter().map(|(shard, _, _)| *shard).collect();
        let e2 = Arc::clone(&engine);
        let parts = tokio::task::spawn_blocking(move || e2.release_shards(&shards))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        let mut by_shard: HashMap<u32, Vec<ShardPart>> = HashMap::new();
        for p in parts {
            by_shard.entry(p.shard).or_default().push(p);
        }
        lock(&s.handoffs.released).extend(ready.iter().map(|(shard, _, _)| *shard));
        let mut outbox = lock(&s.handoffs.outbox);
        for (shard, epoch, to) in ready {
            let parts = by_shard.remove(&shard).unwrap_or_default();
            tracing::info!(
                shard,
                epoch,
                to = %format!("{to:016x}"),
                parts = parts.len(),
                bytes = parts.iter().map(|p| p.bytes.len()).sum::<usize>(),
                "released a moving shard's state"
            );
            let chunks = chunks_of(parts, |p| p.bytes.len(), CHUNK_BYTES);
            outbox.start(shard, (epoch, to), new_release(s.me), chunks);
        }
        // Parts of shards not asked for are diverted records: they go to their owners.
        s.handoffs.divert(s.me, by_shard.into_values().flatten());
    }

    // Send what is not acknowledged yet, every shard at once.
    let pending = lock(&s.handoffs.outbox).pending(Instant::now(), RESEND_AFTER);
    let sends = pending.into_iter().map(|send| {
        let s = Arc::clone(s);
        async move {
            let id = (send.shard, send.epoch, send.release);
            let r = match s.peers.client(send.to).await {
                Ok(c) => {
                    c.handoff(id, (send.chunk, send.chunks), to_wire(&send.parts))
                        .await
                }
                Err(e) => Err(e),
            };
            (id, send.chunk, r)
        }
    });
    for ((shard, _, release), chunk, r) in futures_util::future::join_all(sends).await {
        match r {
            Ok(()) => lock(&s.handoffs.outbox).acked(shard, release, chunk, Instant::now()),
            Err(e) => tracing::debug!(shard, chunk, error = %e, "hand-off chunk not delivered yet"),
        }
    }

    // Records diverted after a release: to whoever owns their shard now.
    if engine.stragglers() > 0 {
        let e2 = Arc::clone(&engine);
        let parts = tokio::task::spawn_blocking(move || e2.release_shards(&[]))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        let n = parts.len();
        s.handoffs.divert(s.me, parts);
        tracing::warn!(
            parts = n,
            "records reached a window after their shard was handed off; sending them on"
        );
    }
    send_stragglers(s, &st, &engine).await
}

/// Makes what this node's dataflows count match the table, for what no hand-off covered:
/// after a restart the log replay rebuilds state for every shard this node ever owned, so
/// shards owned elsewhere now are released and their replayed state dropped (their owner
/// has the real state); a shard given to this node by a plain assignment (no hand-off) is
/// taken back. Waits until this node has caught up with the committed table.
async fn reconcile(
    s: &Arc<Shared>,
    st: &starling_cluster::ClusterState,
    engine: &Arc<crate::Engine>,
) -> Result<(), EngineError> {
    if !(s.started.elapsed() > Duration::from_secs(2) || s.raft.is_leader()) {
        return Ok(());
    }
    let (stale, taken) = {
        let released = lock(&s.handoffs.released);
        let sending: BTreeSet<u32> = lock(&s.handoffs.outbox).shards().collect();
        handoff::reconcile(&st.table, s.me, released.set(), &sending)
    };
    if !taken.is_empty() {
        engine.adopt_shards(&taken, Vec::new())?;
        let mut released = lock(&s.handoffs.released);
        for shard in &taken {
            released.remove(shard);
        }
    }
    if !stale.is_empty() {
        let e2 = Arc::clone(engine);
        let s2 = stale.clone();
        let parts = tokio::task::spawn_blocking(move || e2.release_shards(&s2))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        let (dropped, others): (Vec<ShardPart>, Vec<ShardPart>) =
            parts.into_iter().partition(|p| stale.contains(&p.shard));
        if !dropped.is_empty() {
            tracing::info!(
                shards = stale.len(),
                parts = dropped.len(),
                "dropped state this node rebuilt for shards other nodes own"
            );
        }
        s.handoffs.divert(s.me, others);
        lock(&s.handoffs.released).extend(stale);
    }
    Ok(())
}

/// Sends diverted records to their shard's owner (merging them here if it is this node).
async fn send_stragglers(
    s: &Arc<Shared>,
    st: &starling_cluster::ClusterState,
    engine: &crate::Engine,
) -> Result<(), EngineError> {
    let parts = std::mem::take(&mut *lock(&s.handoffs.stragglers));
    let mut keep = Vec::new();
    for (id, p) in parts {
        match straggler_route(&st.table, s.me, p.shard) {
            StragglerRoute::Here => engine.adopt_shards(&[], vec![p])?,
            StragglerRoute::To { owner, epoch } => {
                let r = match s.peers.client(owner).await {
                    Ok(c) => {
                        c.handoff(
                            (p.shard, epoch, id),
                            (0, 0),
                            to_wire(std::slice::from_ref(&p)),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(err) = r {
                    tracing::debug!(shard = p.shard, error = %err, "stragglers not delivered yet");
                    keep.push((id, p));
                }
            }
            // Moving again: wait until it has an owner.
            StragglerRoute::Wait => keep.push((id, p)),
            StragglerRoute::Drop => {}
        }
    }
    lock(&s.handoffs.stragglers).extend(keep);
    Ok(())
}

/// The new owner's side: merges one chunk handed over, completing the move once every chunk
/// of it is in.
pub(super) fn receive(
    s: &Shared,
    (shard, epoch, release): (u32, u64, u64),
    (chunk, chunks): (u32, u32),
    parts: Vec<ShardPart>,
) -> Result<(), EngineError> {
    let engine = s.engine()?;
    if let Some(p) = parts.iter().find(|p| p.shard != shard) {
        return Err(EngineError::BadRequest(format!(
            "a part of shard {} came with the state of shard {shard}",
            p.shard
        )));
    }
    let st = s.current();
    // Parts of a dataflow the cluster no longer runs (dropped during the move) are left
    // out; a dataflow agreed but not installed here yet makes the chunk wait (`not_found`).
    let agreed: BTreeSet<String> = super::follow::catalog_stages(&st)
        .into_iter()
        .map(|stage| stage.definition.name)
        .collect();
    let (parts, gone): (Vec<ShardPart>, Vec<ShardPart>) = parts
        .into_iter()
        .partition(|p| agreed.contains(&p.dataflow));
    if !gone.is_empty() {
        tracing::warn!(
            shard,
            parts = gone.len(),
            "state of dataflows the cluster dropped was left out"
        );
    }
    // Held while merging, so two deliveries of one chunk are never both merged.
    let mut inbox = lock(&s.handoffs.inbox);
    let decision = inbox
        .receive(&st.table, s.me, (shard, epoch, release), (chunk, chunks))
        .map_err(|r| match r {
            Refused::NotSettled(_) | Refused::NotMoving { .. } => {
                EngineError::StaleEpoch(r.to_string())
            }
            Refused::BadIndex { .. } | Refused::NoShard(_) => {
                EngineError::BadRequest(r.to_string())
            }
        })?;
    let (replace_earlier, duplicate) = match decision {
        Receive::Straggler => return engine.adopt_shards(&[], parts),
        Receive::AlreadyDone => return Ok(()),
        Receive::Chunk {
            replace_earlier,
            duplicate,
        } => (replace_earlier, duplicate),
    };
    if replace_earlier {
        // An earlier release of this shard (a move aborted and begun again, or an old owner
        // that restarted) was merged here: its state is cut out and dropped before the new
        // release, which holds everything, is merged.
        let old = engine.release_shards(&[shard])?;
        let (_, others): (Vec<ShardPart>, Vec<ShardPart>) =
            old.into_iter().partition(|p| p.shard == shard);
        s.handoffs.divert(s.me, others);
        tracing::warn!(
            shard,
            "replaced the state of an earlier release of this shard"
        );
    }
    lock(&s.handoffs.released).remove(&shard);
    if !duplicate {
        tracing::info!(
            shard,
            epoch,
            chunk,
            chunks,
            parts = parts.len(),
            bytes = parts.iter().map(|p| p.bytes.len()).sum::<usize>(),
            "merging a moving shard's state"
        );
        engine.adopt_shards(&[shard], parts)?;
    }
    let complete = inbox.merged(shard, chunk, chunks);
    drop(inbox);
    if complete {
        // The moved state exists nowhere else once the move completes (the old owner has
        // dropped it, and no log holds it): it is made durable here first, or a restart of
        // this node would come back without it.
        s.handoffs.durable.after_now(&engine);
        if let Some(command) = controller::complete(&st, shard, s.me) {
            s.block(s.propose(command))?;
        }
    }
    Ok(())
}

/// Checkpoints every dataflow that can be, retrying one that is busy (a periodic checkpoint
/// under way, inputs not aligned yet) for a little while.
pub(super) fn checkpoint_all(engine: &crate::Engine) {
    for d in engine.dataflows() {
        let mut tries = 0;
        loop {
            match engine.checkpoint(&d.name) {
                Ok(_) => break,
                // Its state cannot be checkpointed (yet): a restart replays its log.
                Err(EngineError::BadRequest(_) | EngineError::NoStorage(_)) => break,
                Err(e) if tries >= CHECKPOINT_TRIES => {
                    tracing::warn!(dataflow = %d.name, error = %e, "not checkpointed after a change of this node's shards: state that came with a move is lost if this node restarts before the next checkpoint");
                    break;
                }
                Err(_) => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// How often a busy checkpoint is tried again after a move.
const CHECKPOINT_TRIES: u32 = 20;

/// On a node that has handed every shard away: checkpoints its dataflows, which now hold no
/// shard's state, so that when it starts again it restores nothing and replays nothing of
/// the shards it gave away. Without it, the restart would rebuild their state from its old
/// log and checkpoint, and a shard handed back to it would be merged on top of that copy,
/// counting those events twice. Before the drain, whose end-of-time watermarks must never
/// be saved.
pub(super) async fn checkpoint_released(s: &Shared) {
    let Ok(engine) = s.engine() else { return };
    if let Err(e) = tokio::task::spawn_blocking(move || checkpoint_all(&engine)).await {
        tracing::warn!(error = %e, "the dataflows could not be checkpointed before leaving");
    }
}

/// How long a leaving node waits for its dataflows to emit what the hand-offs left behind.
const DRAIN: Duration = Duration::from_secs(5);

/// On a node that has handed every shard away and is about to leave: lets its dataflows emit
/// what they still hold back (the retractions of results whose state moved, which wait for a
/// watermark this node will never see again), so that the members merging its outputs get
/// them before its streams end.
pub(super) async fn drain_outputs(s: &Shared) {
    let Ok(engine) = s.engine() else { return };
    match tokio::task::spawn_blocking(move || engine.drain_before_leaving(DRAIN)).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            tracing::warn!(waited = ?DRAIN, "some dataflow results were still on their way out when this node left")
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the dataflows could not be drained before leaving")
        }
        Err(e) => tracing::warn!(error = %e, "draining the dataflows failed"),
    }
}

/// At start, before any peer can send state: takes the record of the shards this node had
/// handed away (see [`Released`]) and drops what the log replay rebuilt for them.
pub(super) async fn restore_released(s: &Shared, data_dir: &std::path::Path) {
    let released = Released::open(data_dir);
    let shards: Vec<u32> = released.set().iter().copied().collect();
    *lock(&s.handoffs.released) = released;
    if shards.is_empty() {
        return;
    }
    let Ok(engine) = s.engine() else { return };
    let n = shards.len();
    match tokio::task::spawn_blocking(move || engine.release_shards(&shards)).await {
        Ok(Ok(parts)) => tracing::info!(
            shards = n,
            parts = parts.len(),
            "dropped the state this node's restart rebuilt for shards it had handed away"
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not drop the rebuilt state of shards handed away")
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not drop the rebuilt state of shards handed away")
        }
    }
}

/// Makes this node's dataflows count `shards` again (a promotion): they were released when
/// another node owned them.
pub(super) fn readopt(
    s: &Shared,
    engine: &crate::Engine,
    shards: &[u32],
) -> Result<(), EngineError> {
    let mut released = lock(&s.handoffs.released);
    let back: Vec<u32> = shards
        .iter()
        .copied()
        .filter(|sh| released.contains(sh))
        .collect();
    if !back.is_empty() {
        engine.adopt_shards(&back, Vec::new())?;
        for sh in &back {
            released.remove(sh);
        }
    }
    Ok(())
}

/// Whether a shard moving to this node should complete without state: its old owner is no
/// longer a live member (it crashed or was removed), so nobody will send any.
pub(super) fn owner_gone(s: &Shared, owner: Option<NodeId>) -> bool {
    owner.is_none_or(|o| !s.live_members().contains(&o))
}
