//! Publish placement: a batch is cut by shard, this node's part goes to its engine and the
//! rest is forwarded to the owners with their epochs, retried until every part is placed.
//! Its own file because it is the one write path that spans the cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use starling_cluster::ClusterState;
use starling_operators::Row;

use super::{replication, Shared};
use crate::quic::wire;
use crate::{Engine, EngineError};

/// How long a publish keeps trying to place events (owners unreachable, shards moving)
/// before it answers `unavailable`.
const PLACE_TIMEOUT: Duration = Duration::from_secs(15);

/// Publishing across the cluster, called by the node's router (never by the engine); it
/// blocks until every owner acknowledged its part.
impl Shared {
    /// Publishes a batch across the cluster: this node's part into its engine, the rest
    /// forwarded to the owners; returns once every owner acknowledged its part. `wait` false
    /// asks for [`EngineError::Busy`] instead of waiting for room.
    pub(crate) fn publish(
        &self,
        topic: &str,
        rows: Vec<Row>,
        wait: bool,
    ) -> Result<usize, EngineError> {
        let engine = self.engine()?;
        engine.check_rows(topic, &rows)?;
        let key = engine.read_topic_spec(topic, |t| t.key)?;
        let total = rows.len();
        let mut pending: Vec<(u32, Row)> = rows
            .into_iter()
            .map(|r| {
                let shard = key.map_or(0, |k| self.shard_of(&r[k]));
                (shard, r)
            })
            .collect();
        // Names this publish in every forward and log entry, so that a retry is not logged
        // twice by a shard that has it already.
        let origin = (
            self.me,
            self.batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        self.block(async {
            let deadline = Instant::now() + PLACE_TIMEOUT;
            let mut accepted = 0;
            let mut state = self.state.clone();
            loop {
                state.borrow_and_update();
                let Placed {
                    accepted: n,
                    left,
                    why,
                    busy,
                } = self.place(&engine, topic, pending, wait, origin).await?;
                accepted += n;
                if left.is_empty() {
                    return Ok(accepted);
                }
                if busy && !wait && accepted == 0 {
                    // Nothing was applied anywhere: the caller may back off and resend all.
                    return Err(EngineError::Busy);
                }
                if Instant::now() > deadline {
                    return Err(EngineError::Unavailable(format!(
                        "{accepted} of {total} events were acknowledged; {} could not be placed \
                         within {PLACE_TIMEOUT:?} ({}); retry them",
                        left.len(),
                        why.unwrap_or_default()
                    )));
                }
                pending = left;
                let _ = tokio::time::timeout(Duration::from_millis(50), state.changed()).await;
            }
        })
    }

    /// One pass of placing `pending` rows: this node's part into the engine, the rest
    /// forwarded. Returns the rows still to place and the last reason one could not be.
    async fn place(
        &self,
        engine: &Arc<Engine>,
        topic: &str,
        pending: Vec<(u32, Row)>,
        wait: bool,
        origin: (u64, u64),
    ) -> Result<Placed, EngineError> {
        let state = self.current();
        let starling_cluster::Routed {
            mut by_owner,
            held: mut left,
            mut why,
        } = starling_cluster::route(&state.table, pending);
        let mut accepted = 0;
        // This node's part is written while the other owners' parts travel: the ack waits for
        // the slowest write, not for the sum of them.
        let mut local_rows = by_owner.remove(&self.me);
        if let Some(rows) = &local_rows {
            let shards = distinct_shards(rows.iter().map(|(s, _)| *s));
            if let Err(e) = self.may_append(topic, &shards) {
                why = Some(e.to_string());
                left.extend(local_rows.take().unwrap_or_default());
            }
        }
        let local = async {
            let Some(rows) = local_rows else {
                return Ok((0, Vec::new()));
            };
            // This publish may have reached this node's log already: through a forward to the
            // shard's previous owner that this node copied as its replica before taking over.
            let all_shards = distinct_shards(rows.iter().map(|(s, _)| *s));
            let claim = self.replication.claim(origin, &all_shards)?;
            let mut rows = rows;
            let before = rows.len();
            rows.retain(|(s, _)| !claim.logged.contains(s));
            let done = before - rows.len();
            if rows.is_empty() {
                // Logged already (as a replica before this node took the shard over): its
                // own replicas must have it too before it is acknowledged.
                drop(claim);
                replication::await_replicas(self, topic, &all_shards).await?;
                return Ok((done, Vec::new()));
            }
            let rows_shards: Vec<u32> = rows.iter().map(|(s, _)| *s).collect();
            // Kept for a retry only when the engine may answer busy (`wait` false); a waiting
            // publish takes the rows as they are.
            let (plain, keep): (Vec<Row>, Vec<(u32, Row)>) = if wait {
                (rows.into_iter().map(|(_, r)| r).collect(), Vec::new())
            } else {
                (rows.iter().map(|(_, r)| r.clone()).collect(), rows)
            };
            let shards = distinct_shards(rows_shards.iter().copied());
            replication::mark_epochs(self, topic, &shards)?;
            let e = Arc::clone(engine);
            let t = topic.to_string();
            let r = tokio::task::spawn_blocking(move || {
                e.publish_local_tagged(&t, plain, wait, origin)
            })
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?;
            if r.is_ok() {
                claim.done();
            }
            drop(claim);
            if r.is_ok() {
                self.replication.appended();
                replication::await_replicas(self, topic, &all_shards).await?;
            }
            match r {
                Ok(n) => Ok((n + done, Vec::new())),
                // Other owners may already have their part: keep this one for the next round
                // rather than answer `busy` for a batch partly applied.
                Err(EngineError::Busy) => Ok((done, keep)),
                Err(e) => Err(e),
            }
        };
        let mut sends = Vec::new();
        for (owner, rows) in by_owner {
            let epochs = epochs_of(&state, &rows);
            sends.push(async move {
                let wire_rows: Vec<_> = rows.iter().map(|(_, r)| wire::row_to_wire(r)).collect();
                let r = match self.peers.client(owner).await {
                    Ok(c) => c.forward(topic, epochs, wire_rows, Some(origin)).await,
                    Err(e) => Err(e),
                };
                (owner, rows, r)
            });
        }
        let (local, remote) = tokio::join!(local, futures_util::future::join_all(sends));
        let (n, busy_rows) = local?;
        accepted += n;
        let mut busy = false;
        if !busy_rows.is_empty() {
            why = Some("this node's workers are busy".into());
            busy = true;
            left.extend(busy_rows);
        }
        for (owner, rows, r) in remote {
            match r {
                Ok(n) => accepted += n as usize,
                Err(e) => {
                    let code = e.code().map(str::to_string);
                    match code.as_deref() {
                        // Refused whole by the owner for the caller's own input: report it.
                        Some(wire::codes::BAD_REQUEST)
                        | Some(wire::codes::NOT_FOUND)
                        | Some(wire::codes::TOO_LARGE) => {
                            return Err(EngineError::BadRequest(format!(
                                "node {owner:016x} refused the batch: {e}"
                            )))
                        }
                        Some(wire::codes::BUSY) => busy = true,
                        Some(wire::codes::STALE_EPOCH) => {}
                        _ => self.peers.reset(owner).await,
                    }
                    why = Some(format!("node {owner:016x}: {e}"));
                    left.extend(rows);
                }
            }
        }
        Ok(Placed {
            accepted,
            left,
            why,
            busy,
        })
    }
}

/// What one pass of placing a publish did.
struct Placed {
    /// Events acknowledged in this pass.
    accepted: usize,
    /// Events still to place.
    left: Vec<(u32, Row)>,
    /// Why some could not be placed (the last reason seen).
    why: Option<String>,
    /// Whether an owner (this node or a peer) refused its part for lack of room.
    busy: bool,
}

/// Each shard once, sorted.
pub(super) fn distinct_shards(shards: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut v: Vec<u32> = shards.collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// (shard, epoch) for every shard the rows fall in, from one table.
fn epochs_of(state: &ClusterState, rows: &[(u32, Row)]) -> Vec<(u32, u64)> {
    starling_cluster::epochs_for(&state.table, rows.iter().map(|(s, _)| *s))
}
