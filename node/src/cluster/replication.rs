//! Shard replication (ARCHITECTURE §6): every shard's log is copied to R − 1 replicas, so
//! that losing its owner loses no acknowledged event.
//!
//! The protocol and every decision in it (truncation, acknowledgement against the in-sync
//! replicas, the in-sync set, retry claims, promotion) are pure code in
//! [`starling_cluster::replication`], where its module doc explains them and a seeded
//! simulation drives them. This is the shell around them: it reads and writes the log,
//! carries fetches to the owners, proposes the commands through Raft, and waits (for
//! progress, for a claim, for appends) on tokio.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) use starling_cluster::replication::promoted;
use starling_cluster::replication::{
    caught_up, copied_by_owner, marks_within, needs_mark, truncate_to, AckVerdict, AckWait,
    Lagging, Levels, Origin, Progress, Seen, Truncation, REPLICA_LAG_MAX,
};
use starling_cluster::{ClusterState, Command, Epoch, NodeId};
use starling_storage::EventLog;
use tokio::sync::Notify;

use super::Shared;
use crate::quic::wire::{self, FetchItem, Fetched};
use crate::EngineError;

/// How long an owner holds a fetch that finds nothing new.
const FETCH_WAIT_MS: u32 = 200;
/// Entries per (topic, shard) in one answer.
const FETCH_ENTRIES: usize = 1024;
/// Payload bytes in one answer, well under the frame limit.
const FETCH_BYTES: usize = wire::MAX_FRAME / 4;
/// How long a publish to an `acks = all` topic waits for its replicas.
pub(super) const ACK_TIMEOUT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One node's replication state, both as an owner and as a replica.
#[derive(Default)]
pub(super) struct Replication {
    /// As owner: what each replica reported and which joining replicas are level, which
    /// every publish waiting for its replicas consults (and which demotions are being
    /// proposed).
    progress: Mutex<Progress>,
    /// Woken when a replica reports progress.
    progressed: Notify,
    /// Woken when this node appends to a shard it owns, for fetches waiting for entries.
    appended: Notify,
    /// As a promoted owner: shards whose log is still being replayed into this node's
    /// dataflows. Writes for them wait, so that replayed history reaches the dataflows
    /// before anything new (new events first would make the replayed ones late).
    recovering: Mutex<BTreeSet<u32>>,
    /// The table the state watcher last looked at for promotions: a write for a shard whose
    /// epoch it has not seen yet waits too, so none slips in before `recovering` is set.
    watched: Mutex<Option<Arc<ClusterState>>>,
    /// As owner: (topic, shard) → the newest epoch marked in the log, so that a write reads
    /// the marks only at the first write of an epoch.
    marked: Mutex<HashMap<(String, u32), u64>>,
    /// As replica: shard → when this node last reported itself in sync (a report is
    /// repeated, at most every second, while the table still lists it as joining).
    reported: Mutex<HashMap<u32, Instant>>,
    /// As replica: owners a fetch task runs for.
    fetching: Mutex<BTreeSet<NodeId>>,
    /// Publishes whose events for a shard are in this node's log, as owner or replica, and
    /// those being logged right now. Replica appends take it too (see `fetch_once`).
    seen: Mutex<Seen>,
    /// Signalled when an attempt to log a publish ends (see [`Replication::claim`]).
    settled: std::sync::Condvar,
}

/// Entries per shard read back at start for their publishes (see `replica_loop`).
const RECENT_ORIGINS: u64 = 256;

/// How long a retried forward waits for an earlier attempt of the same publish that is
/// still being logged (a sender that gave up on a slow owner and tried again).
const CLAIM_WAIT: Duration = Duration::from_secs(15);

/// The shards of one publish an attempt logs (see [`Replication::claim`]); released, and
/// the waiting attempts woken, when dropped.
pub(super) struct Claim<'r> {
    replication: &'r Replication,
    origin: Origin,
    claimed: Vec<u32>,
    /// Shards whose events of this publish the log holds already.
    pub(super) logged: Vec<u32>,
}

impl Claim<'_> {
    /// The claimed shards' events are in the log now.
    pub(super) fn done(&self) {
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
    pub(super) fn claim(&self, origin: Origin, shards: &[u32]) -> Result<Claim<'_>, EngineError> {
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
    pub(super) fn note(&self, origin: Origin, shards: &[u32]) {
        lock(&self.seen).note(origin, shards);
    }

    /// Wakes fetches waiting for entries.
    pub(super) fn appended(&self) {
        self.appended.notify_waiters();
    }
}

/// The topic's `min_insync` when its publishes are `acks = all`; `None` with `acks = leader`
/// (or an unknown topic), which waits for no copy but the owner's.
fn all_acks(s: &Shared, topic: &str) -> Option<u32> {
    s.engine()
        .ok()?
        .read_topic_spec(topic, |t| {
            (t.acks == starling_operators::definition::Acks::All).then_some(t.min_insync)
        })
        .ok()?
}

/// As owner, before appending to `shards` of `topic`: refuses the write while a shard has
/// fewer in-sync copies than the topic's `min_insync` (see
/// [`starling_cluster::replication::check_min_insync`]).
pub(super) fn check_min_insync(s: &Shared, topic: &str, shards: &[u32]) -> Result<(), EngineError> {
    let Some(min) = all_acks(s, topic) else {
        return Ok(());
    };
    starling_cluster::replication::check_min_insync(&s.current(), topic, shards, min)
        .map_err(|e| EngineError::Unavailable(e.to_string()))
}

/// As owner, before appending to `shards` of `topic`: records where the current epoch of
/// each starts in the log, the first time this node writes at that epoch.
pub(super) fn mark_epochs(s: &Shared, topic: &str, shards: &[u32]) -> Result<(), EngineError> {
    let engine = s.engine()?;
    let Some(store) = engine.store() else {
        return Ok(());
    };
    let log = store.log();
    let state = s.current();
    for &shard in shards {
        let Ok(entry) = state.table.get(shard) else {
            continue;
        };
        if entry.owner != Some(s.me) {
            return Err(EngineError::StaleEpoch(format!(
                "shard {shard} is no longer owned by this node"
            )));
        }
        let epoch = entry.epoch.0;
        let key = (topic.to_string(), shard);
        if lock(&s.replication.marked).get(&key) == Some(&epoch) {
            continue;
        }
        if needs_mark(&log.epoch_marks(topic, shard)?, epoch) {
            log.mark_epoch(topic, shard, epoch, log.next_offset(topic, shard)?)?;
        }
        lock(&s.replication.marked).insert(key, epoch);
    }
    Ok(())
}

/// As owner, after appending to `shards` of an `acks = all` topic: waits until every
/// in-sync replica of each shard holds the log up to its current end, as
/// [`Progress::check`] decides, taking out the replicas it finds lagging.
pub(super) async fn await_replicas(
    s: &Shared,
    topic: &str,
    shards: &[u32],
) -> Result<(), EngineError> {
    // Only `acks = all` publishes in a replicated cluster wait.
    let Some(min) = all_acks(s, topic) else {
        return Ok(());
    };
    if shards.is_empty() || s.current().replication_factor() <= 1 {
        return Ok(());
    }
    let engine = s.engine()?;
    let Some(store) = engine.store() else {
        return Ok(());
    };
    let log = store.log();
    let mut ends = Vec::with_capacity(shards.len());
    for &shard in shards {
        ends.push((shard, log.next_offset(topic, shard)?));
    }
    // The publish's clock for the lag limit starts here, like its timeout.
    let started = Instant::now();
    let deadline = started + ACK_TIMEOUT;
    let mut wait = AckWait::new(topic, ends, min);
    let mut state = s.state.clone();
    loop {
        let notified = s.replication.progressed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let table = s.current();
        let verdict = lock(&s.replication.progress)
            .check(&table.table, s.me, &mut wait, started.elapsed())
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let (missing, lagging) = match verdict {
            // A write that waited (for its replicas, or a paused process) may have outlived
            // this node's lease; by then the shard may have another owner.
            AckVerdict::Answer => return s.check_lease(),
            AckVerdict::Wait { missing, lagging } => (missing, lagging),
        };
        for l in lagging {
            demote(s, topic, l).await;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let missing: Vec<String> = missing
                .iter()
                .map(|(shard, r)| format!("{r:016x} (shard {shard})"))
                .collect();
            return Err(EngineError::Unavailable(format!(
                "the events were logged by their shard's owner but in-sync replicas {} did not \
                 confirm them within {ACK_TIMEOUT:?}; they may or may not be kept, retry",
                missing.join(", ")
            )));
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = state.changed() => {}
            _ = tokio::time::sleep(left.min(Duration::from_millis(100))) => {}
        }
    }
}

/// As owner: takes a replica that a publish waited on for [`REPLICA_LAG_MAX`] out of what
/// publishes wait on, by proposing `ReplicaOutOfSync`, which raises the version of the
/// shard's replica lists. Publishes go on waiting on it until this node's table shows the
/// raise (see [`Progress`] for why not before).
async fn demote(s: &Shared, topic: &str, l: Lagging) {
    if !lock(&s.replication.progress).begin_demote(l) {
        return;
    }
    let Lagging { shard, replica, .. } = l;
    tracing::warn!(shard, topic, replica = %format!("{replica:016x}"), waited = ?REPLICA_LAG_MAX, "a replica did not confirm in time; it no longer counts as in sync");
    match tokio::time::timeout(Duration::from_secs(2), s.propose(l.command())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(shard, error = %e, "could not take a replica out of the in-sync set")
        }
        Err(_) => tracing::debug!(shard, "taking a replica out of the in-sync set timed out"),
    }
    lock(&s.replication.progress).end_demote(&l);
}

/// Refuses a write for `shards` while it must wait on this node (see
/// `Replication::recovering`), saying why.
pub(super) fn check_ready(s: &Shared, shards: &[u32]) -> Result<(), EngineError> {
    let table = s.current();
    let watched = lock(&s.replication.watched).clone();
    let recovering = lock(&s.replication.recovering);
    for &shard in shards {
        if recovering.contains(&shard) {
            return Err(EngineError::Unavailable(format!(
                "shard {shard} is being rebuilt from its log on its new owner; retry"
            )));
        }
        let now = table.table.get(shard).map(|e| e.epoch).ok();
        let seen = watched
            .as_ref()
            .and_then(|w| w.table.get(shard).ok().map(|e| e.epoch));
        if seen < now {
            return Err(EngineError::Unavailable(format!(
                "shard {shard} changed owner a moment ago; retry"
            )));
        }
    }
    Ok(())
}

/// The state watcher looked at `st`: `promoted` are recovering until [`recovered`].
pub(super) fn watching(s: &Shared, st: &Arc<ClusterState>, promoted: &[u32]) {
    lock(&s.replication.recovering).extend(promoted.iter().copied());
    *lock(&s.replication.watched) = Some(Arc::clone(st));
}

/// Writes for `shards` may go ahead: their history is in the dataflows.
pub(super) fn recovered(s: &Shared, shards: &[u32]) {
    let mut recovering = lock(&s.replication.recovering);
    for shard in shards {
        recovering.remove(shard);
    }
}

/// As owner: answers a replica's fetch.
pub(super) fn serve_fetch(
    s: &Shared,
    replica: NodeId,
    view: crate::cluster::FetchView<'_>,
    items: Vec<FetchItem>,
    wait_ms: u32,
) -> Result<Vec<Fetched>, EngineError> {
    let engine = s.engine()?;
    let store = engine
        .store()
        .ok_or_else(|| EngineError::BadRequest("this node keeps no log".into()))?;
    let log = store.log();
    let epochs = view.epochs;
    let table = s.current();
    for &(shard, epoch) in epochs {
        let e = table
            .table
            .get(shard)
            .map_err(|e| EngineError::BadRequest(e.to_string()))?;
        if e.owner != Some(s.me) || e.epoch != Epoch(epoch) {
            return Err(EngineError::StaleEpoch(format!(
                "shard {shard}: this node does not own it at epoch {epoch} (the table says {:?} \
                 at epoch {})",
                e.owner.map(|o| format!("{o:016x}")),
                e.epoch
            )));
        }
    }
    for item in &items {
        if !epochs.iter().any(|(sh, _)| *sh == item.shard) {
            return Err(EngineError::BadRequest(format!(
                "shard {} is fetched without its epoch",
                item.shard
            )));
        }
    }
    let wait = Duration::from_millis(u64::from(wait_ms.min(1000)));
    let deadline = Instant::now() + wait;
    loop {
        let notified = s.replication.appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let answer = read_for(s, log.as_ref(), replica, view, &items)?;
        let left = deadline.saturating_duration_since(Instant::now());
        let news = answer
            .iter()
            .any(|f| f.truncate_to.is_some() || !f.payloads.is_empty());
        if news || left.is_zero() {
            return Ok(answer);
        }
        s.block(async {
            let _ = tokio::time::timeout(left, notified).await;
        });
    }
}

/// One pass of a fetch: what each item's replica is missing, and its reported progress.
fn read_for(
    s: &Shared,
    log: &dyn EventLog,
    replica: NodeId,
    crate::cluster::FetchView { epochs, isr }: crate::cluster::FetchView<'_>,
    items: &[FetchItem],
) -> Result<Vec<Fetched>, EngineError> {
    let mut out = Vec::with_capacity(items.len());
    // Topics this node logs in a fetched shard that the replica did not ask for (its
    // catalog lags behind): an empty answer carrying this node's end keeps the replica
    // from counting itself level, and this node from counting it so.
    let mut unasked: BTreeSet<u32> = BTreeSet::new();
    let engine = s.engine()?;
    let asked: std::collections::HashSet<(&str, u32)> =
        items.iter().map(|i| (i.topic.as_str(), i.shard)).collect();
    for topic in log.topics()? {
        if !engine
            .read_topic_spec(&topic, |t| t.time.is_some())
            .unwrap_or(false)
        {
            continue;
        }
        for &(shard, _) in epochs {
            if asked.contains(&(topic.as_str(), shard)) {
                continue;
            }
            let owner_next = log.next_offset(&topic, shard)?;
            if owner_next > 0 {
                unasked.insert(shard);
                out.push(Fetched {
                    topic: topic.clone(),
                    shard,
                    owner_next,
                    truncate_to: None,
                    first: 0,
                    payloads: Vec::new(),
                    marks: Vec::new(),
                });
            }
        }
    }
    let mut budget = FETCH_BYTES;
    let mut reported = Vec::new();
    // (topic, shard, epoch, version seen) of the items that leave the replica level.
    let mut level = Vec::new();
    for item in items {
        let owner_next = log.next_offset(&item.topic, item.shard)?;
        let marks = log.epoch_marks(&item.topic, item.shard)?;
        let mut f = Fetched {
            topic: item.topic.clone(),
            shard: item.shard,
            owner_next,
            truncate_to: None,
            first: item.next,
            payloads: Vec::new(),
            marks: Vec::new(),
        };
        if let Some(t) = truncate_to(&marks, owner_next, item.next, item.last_epoch) {
            // The mark tells the replica which of its epochs this node has (see
            // `Truncation::cut`).
            f.truncate_to = Some(t.to);
            f.marks = t.marks();
            out.push(f);
            continue;
        }
        let epoch = epochs
            .iter()
            .find(|(sh, _)| *sh == item.shard)
            .map_or(0, |(_, e)| *e);
        reported.push((item.topic.as_str(), item.shard, epoch, item.next));
        if budget > 0 && item.next < owner_next {
            let entries = log.read(&item.topic, item.shard, item.next, FETCH_ENTRIES)?;
            // Retention may have removed the start: the copy then cannot continue (an append
            // must follow the replica's end), which its fetch loop reports, rather than store
            // entries at the wrong offsets.
            if let Some((o, _)) = entries.first() {
                f.first = *o;
            }
            for (_, p) in entries {
                budget = budget.saturating_sub(p.len());
                f.payloads.push(p);
                if budget == 0 {
                    break;
                }
            }
            let end = item.next + f.payloads.len() as u64;
            f.marks = marks_within(&marks, item.next, end);
        }
        if caught_up(item.next, f.payloads.len() as u64, owner_next)
            && !unasked.contains(&item.shard)
        {
            // A fetch without the version counts as sent before any (0).
            let seen = isr
                .iter()
                .find(|(sh, _)| *sh == item.shard)
                .map_or(0, |(_, v)| *v);
            level.push((item.topic.as_str(), item.shard, epoch, seen));
        }
        out.push(f);
    }
    if !reported.is_empty() || !level.is_empty() {
        let mut progress = lock(&s.replication.progress);
        for (topic, shard, epoch, seen) in level {
            progress.level(topic, shard, replica, epoch, seen);
        }
        for (topic, shard, epoch, next) in reported {
            progress.report(topic, shard, replica, epoch, next);
        }
        drop(progress);
        s.replication.progressed.notify_waiters();
    }
    Ok(out)
}

/// On every node: runs one fetch task per owner this node copies shards from.
pub(super) async fn replica_loop(s: Arc<Shared>) {
    // After a restart: the publishes of the newest entries, so that a forward retried
    // across the restart is still recognised.
    if let Ok(engine) = s.engine() {
        let found = tokio::task::spawn_blocking(move || engine.recent_origins(RECENT_ORIGINS))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let mut seen = lock(&s.replication.seen);
        for key in found {
            seen.insert(key);
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let owners: Vec<NodeId> = copied_by_owner(&s.current(), s.me).into_keys().collect();
        for owner in owners {
            if lock(&s.replication.fetching).insert(owner) {
                tokio::spawn(fetch_from(Arc::clone(&s), owner));
            }
        }
    }
}

/// Copies every shard this node replicates from `owner`, until it replicates none.
async fn fetch_from(s: Arc<Shared>, owner: NodeId) {
    loop {
        let st = s.current();
        let Some(shards) = copied_by_owner(&st, s.me).remove(&owner) else {
            break;
        };
        match fetch_once(&s, owner, &shards).await {
            Ok(true) => {}
            Ok(false) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => {
                tracing::debug!(owner = %format!("{owner:016x}"), error = %e, "replica fetch failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    lock(&s.replication.fetching).remove(&owner);
}

/// One fetch from `owner` for `shards`; true when it brought anything.
async fn fetch_once(s: &Arc<Shared>, owner: NodeId, shards: &[(u32, u64)]) -> Result<bool, String> {
    let engine = s.engine().map_err(|e| e.to_string())?;
    let store = engine.store().ok_or("this node keeps no log")?;
    let log = Arc::clone(store.log());
    let topics: Vec<String> = engine
        .topics()
        .into_iter()
        .filter(|t| t.spec.time.is_some())
        .map(|t| t.spec.name)
        .collect();
    let mut items = Vec::with_capacity(topics.len() * shards.len());
    for (shard, _) in shards {
        for topic in &topics {
            let last_epoch = log
                .epoch_marks(topic, *shard)
                .map_err(|e| e.to_string())?
                .last()
                .map_or(0, |(e, _)| *e);
            items.push(FetchItem {
                topic: topic.clone(),
                shard: *shard,
                next: log.next_offset(topic, *shard).map_err(|e| e.to_string())?,
                last_epoch,
            });
        }
    }
    // The version of each shard's replica lists as this node sees them before it asks, sent
    // along, and named when a level answer makes it report itself in sync (see `demote`);
    // and the shards it saw itself joining.
    let (isr, joining_before): (Vec<(u32, u64)>, BTreeSet<u32>) = {
        let st = s.current();
        let mut isr = Vec::with_capacity(shards.len());
        let mut joining = BTreeSet::new();
        for (sh, ep) in shards {
            if let Ok(e) = st.table.get(*sh) {
                isr.push((*sh, e.isr));
                if e.joining.contains(&s.me) && e.epoch.0 == *ep {
                    joining.insert(*sh);
                }
            }
        }
        (isr, joining)
    };
    let client = s.peers.replica(owner).await.map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(
        Duration::from_millis(u64::from(FETCH_WAIT_MS)) + Duration::from_secs(5),
        client.fetch(s.me, shards.to_vec(), items, FETCH_WAIT_MS, isr.clone()),
    )
    .await
    .map_err(|_| "the owner did not answer in time".to_string())?
    .map_err(|e| e.to_string())?;
    // Still copying from this owner at these epochs? A table that changed meanwhile may have
    // promoted this node, whose log must then not take the old owner's entries.
    let now = s.current();
    let still = copied_by_owner(&now, s.me)
        .remove(&owner)
        .unwrap_or_default();
    let mut brought = false;
    let mut level = Levels::new(shards.iter().map(|(sh, _)| *sh));
    for f in answer {
        let (topic, shard) = (f.topic.clone(), f.shard);
        let epoch_now = shards
            .iter()
            .find(|(sh, _)| *sh == shard)
            .map_or(u64::MAX, |(_, e)| *e);
        if !still.contains(&(shard, epoch_now)) {
            continue;
        }
        if let Some(to) = f.truncate_to {
            let truncation = Truncation::from_answer(to, &f.marks);
            let s2 = Arc::clone(s);
            let l2 = Arc::clone(&log);
            let t2 = topic.clone();
            // Like an append (below): only while this node still copies the shard, so a
            // truncation never removes what it wrote after taking the shard over. The
            // publishes of the removed entries are forgotten under the same lock: a retry
            // must log them again, not find them logged (see `Seen::forget`).
            let cut = tokio::task::spawn_blocking(move || -> Result<Option<u64>, String> {
                let mut seen = lock(&s2.replication.seen);
                if !copied_by_owner(&s2.current(), s2.me)
                    .remove(&owner)
                    .unwrap_or_default()
                    .contains(&(shard, epoch_now))
                {
                    return Ok(None);
                }
                let marks = l2.epoch_marks(&t2, shard).map_err(|e| e.to_string())?;
                let next = l2.next_offset(&t2, shard).map_err(|e| e.to_string())?;
                let cut = truncation.cut(&marks, next);
                let removed = origins_from(l2.as_ref(), &t2, shard, cut)?;
                l2.truncate_from(&t2, shard, cut)
                    .map_err(|e| e.to_string())?;
                for (producer, batch) in removed {
                    seen.forget((producer, batch, shard));
                }
                Ok(Some(cut))
            })
            .await
            .map_err(|e| e.to_string())??;
            let Some(from) = cut else {
                continue;
            };
            tracing::warn!(topic = %topic, shard, from, owner = %format!("{owner:016x}"), "removed entries the shard's owner never had (written by an owner that lost the shard)");
            level.truncated(shard);
            brought = true;
            continue;
        }
        let n = f.payloads.len() as u64;
        if n > 0 {
            let e2 = Arc::clone(&engine);
            let s2 = Arc::clone(s);
            let t2 = topic.clone();
            let (first, payloads, marks) = (f.first, f.payloads, f.marks);
            // Under the lock a forward's claim takes: the check that this node still copies
            // the shard (once it owns it, its log takes only its own writes), the append and
            // the note of the copied publishes are one step for a retried forward, which so
            // either finds the publish noted or finds this node the owner first.
            let appended = tokio::task::spawn_blocking(move || -> Result<bool, String> {
                let mut seen = lock(&s2.replication.seen);
                let still = copied_by_owner(&s2.current(), s2.me)
                    .remove(&owner)
                    .unwrap_or_default()
                    .contains(&(shard, epoch_now));
                if !still {
                    return Ok(false);
                }
                let origins = e2
                    .append_replicated(&t2, shard, first, payloads)
                    .map_err(|e| e.to_string())?;
                for (p, b) in origins {
                    seen.insert((p, b, shard));
                }
                drop(seen);
                let Some(store) = e2.store() else {
                    return Ok(true);
                };
                for (epoch, start) in marks {
                    store
                        .log()
                        .mark_epoch(&t2, shard, epoch, start)
                        .map_err(|e| e.to_string())?;
                }
                Ok(true)
            })
            .await
            .map_err(|e| e.to_string())??;
            if !appended {
                continue;
            }
            brought = true;
        }
        level.copied(shard, f.first, n, f.owner_next);
    }
    // Level with the owner on every topic: a joining replica is in sync from here on.
    for (shard, epoch) in shards {
        let joining = joining_before.contains(shard)
            && now
                .table
                .get(*shard)
                .is_ok_and(|e| e.joining.contains(&s.me) && e.epoch.0 == *epoch);
        if !joining || !level.level(*shard) {
            continue;
        }
        if lock(&s.replication.reported)
            .get(shard)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            continue;
        }
        lock(&s.replication.reported).insert(*shard, Instant::now());
        let command = Command::ReplicaInSync {
            shard: *shard,
            node: s.me,
            epoch: Epoch(*epoch),
            isr: isr
                .iter()
                .find(|(sh, _)| sh == shard)
                .map_or(0, |(_, v)| *v),
        };
        // Proposed on the side: a Raft majority out of reach must not stop the copying.
        let s2 = Arc::clone(s);
        let shard = *shard;
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(5), s2.propose(command)).await {
                Ok(Ok(())) => {
                    tracing::info!(shard, owner = %format!("{owner:016x}"), "replica in sync");
                }
                Ok(Err(e)) => {
                    tracing::debug!(shard, error = %e, "could not report a replica in sync")
                }
                Err(_) => tracing::debug!(shard, "reporting a replica in sync timed out"),
            }
        });
    }
    Ok(brought)
}

/// The publishes of the entries of `topic`/`shard` from offset `from` on, which a
/// truncation is about to remove. An entry that does not decode names none (the truncation
/// removes it all the same).
fn origins_from(
    log: &dyn EventLog,
    topic: &str,
    shard: u32,
    from: u64,
) -> Result<Vec<(u64, u64)>, String> {
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let chunk = log
            .read(topic, shard, at, FETCH_ENTRIES)
            .map_err(|e| e.to_string())?;
        let Some(last) = chunk.last().map(|(o, _)| *o) else {
            return Ok(out);
        };
        for (_, bytes) in &chunk {
            if let Ok((_, _, Some(origin))) = crate::durable::record::decode_tagged(bytes) {
                out.push(origin);
            }
        }
        at = last + 1;
    }
}

/// As a newly promoted owner: feeds each shard's logged events, up to where this node's own
/// epoch starts (what it appended since is in its dataflows already), to the dataflows, then
/// checkpoints them so a restart does not depend on the replay.
pub(super) async fn take_over(s: &Arc<Shared>, shards: Vec<u32>) -> Result<(), EngineError> {
    let engine = s.engine()?;
    let st = s.current();
    let e2 = Arc::clone(&engine);
    let s2 = Arc::clone(s);
    let started = Instant::now();
    let events = tokio::task::spawn_blocking(move || -> Result<u64, EngineError> {
        super::handoff::readopt(&s2, &e2, &shards)?;
        let Some(store) = e2.store() else {
            return Ok(0);
        };
        let log = store.log();
        let topics = log.topics()?;
        let mut events = 0;
        for shard in &shards {
            let epoch = st.table.get(*shard).map_or(0, |e| e.epoch.0);
            for topic in &topics {
                if e2.topic_spec(topic).is_err() {
                    continue;
                }
                // The end first, then the mark: an append in between is after both.
                let next = log.next_offset(topic, *shard)?;
                let mine = log
                    .epoch_marks(topic, *shard)?
                    .into_iter()
                    .find(|(e, _)| *e >= epoch)
                    .map(|(_, start)| start);
                let end = mine.map_or(next, |m| m.min(next));
                events += e2.replay_shard(topic, *shard, end)?;
            }
        }
        for d in e2.dataflows() {
            if let Err(e) = e2.checkpoint(&d.name) {
                tracing::debug!(dataflow = %d.name, error = %e, "no checkpoint after a promotion");
            }
        }
        Ok(events)
    })
    .await
    .map_err(|e| EngineError::Internal(e.to_string()))??;
    tracing::info!(
        events,
        millis = started.elapsed().as_millis() as u64,
        "took over shards of a node that died: their logged events are replayed"
    );
    Ok(())
}
