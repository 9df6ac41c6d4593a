//! Moving a shard's operator state with the shard (ARCHITECTURE §5, scale-out).
//!
//! When the leader begins moving shard `s` from `O` to `N`, every router holds `s`'s new
//! events and `O` refuses them (fencing). Then:
//!
//! 1. `O` waits [`HANDOFF_DRAIN`] for the writes it accepted before the move to reach its
//!    workers, and releases `s`: its window operators cut `s`'s keys (open panes and
//!    sessions, and records still waiting for the frontier) out of their state
//!    ([`Engine::release_shards`]). From then on `O` counts nothing of `s`.
//! 2. `O` sends the parts to `N` in chunks under the QUIC frame limit, retrying until `N`
//!    acknowledges each. A move the leader aborts meanwhile gives the parts back to `O`.
//! 3. `N` merges each chunk into its own running dataflows (once per chunk, so a retried
//!    chunk is not counted twice) and, with every chunk in, proposes `CompleteMove`; the
//!    routers then release `s`'s events to `N` at the next epoch.
//! 4. A record of `s` still in a channel inside `O` when it released `s` is diverted when it
//!    reaches a window, and sent to `s`'s owner on the next tick (`chunks = 0`).
//!
//! So each key's windows are counted by one node at a time, and the results equal those of
//! a cluster that never changed (the new owner emits a window the old one had not).
//!
//! The event log is not copied: `O` keeps `s`'s past events (a restart of `O` replays them;
//! see the note in docs/design.md), and `N`'s log holds `s`'s events from the move on.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use starling_cluster::{controller, NodeId};

use super::Shared;
use crate::quic::wire::{WireShardPart, MAX_FRAME};
use crate::runtime::ShardPart;
use crate::EngineError;

/// How long the old owner lets writes it accepted before a move reach its workers before it
/// cuts the shard's state out.
pub(super) const HANDOFF_DRAIN: Duration = Duration::from_millis(100);

/// Bytes of parts per message, well under the frame limit.
const CHUNK_BYTES: usize = MAX_FRAME / 4;

/// Hand-offs of one node, both directions.
#[derive(Default)]
pub(super) struct Handoffs {
    /// Shards moving away from this node: when each was first seen moving.
    first_seen: Mutex<HashMap<u32, Instant>>,
    /// State cut out and not yet acknowledged by the receiver, by shard.
    outbox: Mutex<HashMap<u32, Outgoing>>,
    /// Records diverted after a release, waiting for their shard's owner.
    stragglers: Mutex<Vec<ShardPart>>,
    /// Per shard moving here: the release whose chunks were merged, and which chunks.
    adopted: Mutex<HashMap<u32, Adopted>>,
    /// Shards whose keys this node's dataflows no longer count.
    released: Mutex<BTreeSet<u32>>,
    /// Set when a move to this node completed: once no more are arriving, the dataflows are
    /// checkpointed, so that a restart restores the state that came over (it is in no log
    /// of this node) instead of rebuilding only the part logged here.
    checkpoint_due: std::sync::atomic::AtomicBool,
}

struct Outgoing {
    to: NodeId,
    epoch: u64,
    /// This release's id (see `Request::Handoff`).
    release: u64,
    chunks: Vec<Vec<ShardPart>>,
    acked: Vec<bool>,
    /// When the last chunk was acknowledged: a receiver that has not completed the move
    /// long after (it restarted and lost what it had merged) gets every chunk again.
    all_acked: Option<Instant>,
}

/// (shard, epoch, release) of one release of a moving shard.
type MoveId = (u32, u64, u64);

/// What a receiver merged of one shard's release.
struct Adopted {
    epoch: u64,
    release: u64,
    chunks: BTreeSet<u32>,
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

/// Cuts parts into messages of at most [`CHUNK_BYTES`] (a part larger than that goes alone).
fn chunks_of(parts: Vec<ShardPart>) -> Vec<Vec<ShardPart>> {
    let mut out: Vec<Vec<ShardPart>> = vec![Vec::new()];
    let mut size = 0;
    for p in parts {
        if size + p.bytes.len() > CHUNK_BYTES && out.last().is_some_and(|c| !c.is_empty()) {
            out.push(Vec::new());
            size = 0;
        }
        size += p.bytes.len();
        if let Some(c) = out.last_mut() {
            c.push(p);
        }
    }
    out
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
    let back: Vec<(u32, Vec<ShardPart>)> = {
        let mut outbox = lock(&s.handoffs.outbox);
        let ended: Vec<u32> = outbox
            .iter()
            .filter(|(shard, o)| {
                st.table
                    .get(**shard)
                    .map_or(true, |e| e.moving_to != Some(o.to) || e.epoch.0 != o.epoch)
            })
            .map(|(shard, _)| *shard)
            .collect();
        ended
            .into_iter()
            .filter_map(|shard| {
                let o = outbox.remove(&shard)?;
                // Still ours (aborted, or aborted and moving elsewhere now): the state goes
                // back into this node's dataflows, and a new move releases it again.
                let aborted = st.table.get(shard).is_ok_and(|e| e.owner == Some(s.me));
                if aborted {
                    Some((shard, o.chunks.into_iter().flatten().collect()))
                } else {
                    if o.acked.iter().any(|a| !a) {
                        tracing::warn!(shard, "a move completed before its state was delivered");
                    }
                    None
                }
            })
            .collect()
    };
    for (shard, parts) in back {
        tracing::info!(shard, "move aborted: the shard's state stays here");
        engine.adopt_shards(&[shard], parts)?;
        lock(&s.handoffs.released).remove(&shard);
    }
    reconcile(s, &st, &engine).await?;
    let arriving = st.table.iter().any(|(_, e)| e.moving_to == Some(s.me));
    if !arriving
        && s.handoffs
            .checkpoint_due
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    {
        let e2 = Arc::clone(&engine);
        tokio::task::spawn_blocking(move || {
            for d in e2.dataflows() {
                if let Err(e) = e2.checkpoint(&d.name) {
                    tracing::debug!(dataflow = %d.name, error = %e, "no checkpoint after a hand-off");
                }
            }
        });
    }

    // On the receiving side: a move that completed needs no record of its chunks any more;
    // one that was aborted after some chunks were merged here leaves state this node must not
    // count (the old owner takes its copy back), so it is cut out again and dropped.
    let dropped: Vec<u32> = {
        let mut adopted = lock(&s.handoffs.adopted);
        // The table as of now, not as of this step's start: a chunk merged meanwhile was
        // merged against a table at least this new.
        let now = s.current();
        let mut dropped = Vec::new();
        adopted.retain(|shard, _| match now.table.get(*shard) {
            Ok(e) if e.moving_to == Some(s.me) => true,
            Ok(e) if e.owner == Some(s.me) => false,
            _ => {
                dropped.push(*shard);
                false
            }
        });
        dropped
    };
    if !dropped.is_empty() {
        let e2 = Arc::clone(&engine);
        let d2 = dropped.clone();
        let parts = tokio::task::spawn_blocking(move || e2.release_shards(&d2))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        tracing::warn!(shards = ?dropped, "moves to this node were aborted after state arrived; dropped it");
        lock(&s.handoffs.released).extend(dropped.iter().copied());
        lock(&s.handoffs.stragglers)
            .extend(parts.into_iter().filter(|p| !dropped.contains(&p.shard)));
    }

    // Moves past the drain that have not been released yet.
    let outgoing: Vec<(u32, u64, NodeId)> = st
        .table
        .iter()
        .filter(|(_, e)| e.owner == Some(s.me))
        .filter_map(|(shard, e)| match e.moving_to {
            Some(to) if to != s.me => Some((shard, e.epoch.0, to)),
            _ => None,
        })
        .collect();
    let ready: Vec<(u32, u64, NodeId)> = {
        let mut seen = lock(&s.handoffs.first_seen);
        seen.retain(|shard, _| outgoing.iter().any(|(s2, _, _)| s2 == shard));
        let outbox = lock(&s.handoffs.outbox);
        let now = Instant::now();
        outgoing
            .iter()
            .filter(|(shard, _, _)| !outbox.contains_key(shard))
            .filter(|(shard, _, _)| {
                now.duration_since(*seen.entry(*shard).or_insert(now)) >= HANDOFF_DRAIN
            })
            .copied()
            .collect()
    };
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
            let chunks = chunks_of(parts);
            let acked = vec![false; chunks.len()];
            outbox.insert(
                shard,
                Outgoing {
                    to,
                    epoch,
                    release: new_release(s.me),
                    chunks,
                    acked,
                    all_acked: None,
                },
            );
        }
        // Parts of shards not asked for are diverted records: they go to their owners.
        lock(&s.handoffs.stragglers).extend(by_shard.into_values().flatten());
    }

    // Send what is not acknowledged yet, every shard at once.
    let pending: Vec<(MoveId, NodeId, u32, u32, Vec<WireShardPart>)> = {
        let mut outbox = lock(&s.handoffs.outbox);
        for o in outbox.values_mut() {
            if o.all_acked.is_some_and(|t| t.elapsed() > RESEND_AFTER) {
                o.acked.iter_mut().for_each(|a| *a = false);
                o.all_acked = None;
            }
        }
        outbox
            .iter()
            .flat_map(|(shard, o)| {
                o.chunks
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !o.acked[*i])
                    .map(|(i, c)| {
                        (
                            (*shard, o.epoch, o.release),
                            o.to,
                            i as u32,
                            o.chunks.len() as u32,
                            to_wire(c),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let sends = pending.into_iter().map(|(id, to, chunk, chunks, parts)| {
        let s = Arc::clone(s);
        async move {
            let r = match s.peers.client(to).await {
                Ok(c) => c.handoff(id, (chunk, chunks), parts).await,
                Err(e) => Err(e),
            };
            (id, chunk, r)
        }
    });
    for ((shard, _, release), chunk, r) in futures_util::future::join_all(sends).await {
        match r {
            Ok(()) => {
                if let Some(o) = lock(&s.handoffs.outbox).get_mut(&shard) {
                    if o.release == release {
                        if let Some(a) = o.acked.get_mut(chunk as usize) {
                            *a = true;
                        }
                        if o.all_acked.is_none() && o.acked.iter().all(|a| *a) {
                            o.all_acked = Some(Instant::now());
                        }
                    }
                }
            }
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
        lock(&s.handoffs.stragglers).extend(parts);
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
    let (stale, taken): (Vec<u32>, Vec<u32>) = {
        let released = lock(&s.handoffs.released);
        let outbox = lock(&s.handoffs.outbox);
        let stale = st
            .table
            .iter()
            .filter(|(shard, e)| {
                e.owner.is_some_and(|o| o != s.me)
                    && e.moving_to != Some(s.me)
                    && !released.contains(shard)
            })
            .map(|(shard, _)| shard)
            .collect();
        let taken = st
            .table
            .iter()
            .filter(|(shard, e)| {
                e.owner == Some(s.me)
                    && e.moving_to.is_none()
                    && released.contains(shard)
                    && !outbox.contains_key(shard)
            })
            .map(|(shard, _)| shard)
            .collect();
        (stale, taken)
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
        lock(&s.handoffs.stragglers).extend(others);
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
    for p in parts {
        let Ok(e) = st.table.get(p.shard) else {
            continue;
        };
        match (e.owner, e.moving_to) {
            (Some(o), None) if o == s.me => engine.adopt_shards(&[], vec![p])?,
            (Some(o), None) => {
                let r = match s.peers.client(o).await {
                    Ok(c) => {
                        c.handoff(
                            (p.shard, e.epoch.0, 0),
                            (0, 0),
                            to_wire(std::slice::from_ref(&p)),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(err) = r {
                    tracing::debug!(shard = p.shard, error = %err, "stragglers not delivered yet");
                    keep.push(p);
                }
            }
            // Moving again: wait until it has an owner.
            _ => keep.push(p),
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
    let entry = st
        .table
        .get(shard)
        .map_err(|e| EngineError::BadRequest(e.to_string()))?;
    // Parts of a dataflow the cluster no longer runs (dropped during the move) are left
    // out; a dataflow agreed but not installed here yet makes the chunk wait (`not_found`).
    let agreed: BTreeSet<String> = super::catalog_stages(&st)
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
    if chunks == 0 {
        if entry.owner != Some(s.me) || entry.moving_to.is_some() {
            return Err(EngineError::StaleEpoch(format!(
                "shard {shard} is not settled on this node"
            )));
        }
        return engine.adopt_shards(&[], parts);
    }
    if chunk >= chunks {
        return Err(EngineError::BadRequest(format!(
            "chunk {chunk} of {chunks}: the index must be below the count"
        )));
    }
    if entry.moving_to != Some(s.me) || entry.epoch.0 != epoch {
        // A retry of a move this node has already completed.
        if entry.owner == Some(s.me) && entry.epoch.0 > epoch && entry.moving_to.is_none() {
            return Ok(());
        }
        return Err(EngineError::StaleEpoch(format!(
            "shard {shard} is not moving to this node at epoch {epoch}"
        )));
    }
    let mut adopted = lock(&s.handoffs.adopted);
    if adopted
        .get(&shard)
        .is_some_and(|a| (a.epoch, a.release) != (epoch, release))
    {
        // An earlier release of this shard (a move aborted and begun again, or an old owner
        // that restarted) was merged here: its state is cut out and dropped before the new
        // release, which holds everything, is merged.
        adopted.remove(&shard);
        let old = engine.release_shards(&[shard])?;
        let (_, others): (Vec<ShardPart>, Vec<ShardPart>) =
            old.into_iter().partition(|p| p.shard == shard);
        lock(&s.handoffs.stragglers).extend(others);
        tracing::warn!(
            shard,
            "replaced the state of an earlier release of this shard"
        );
    }
    let got = adopted.entry(shard).or_insert_with(|| Adopted {
        epoch,
        release,
        chunks: BTreeSet::new(),
    });
    lock(&s.handoffs.released).remove(&shard);
    if !got.chunks.contains(&chunk) {
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
        got.chunks.insert(chunk);
    }
    let complete = got.chunks.len() as u32 >= chunks;
    drop(adopted);
    if complete {
        if let Some(command) = controller::complete(&st, shard, s.me) {
            s.block(s.propose(command))?;
        }
        s.handoffs
            .checkpoint_due
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
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
