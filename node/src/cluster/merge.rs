//! Merged subscriptions: one output's results from every member, merged into one stream,
//! with members that join later added and members that leave or die ended quietly. Its own
//! file because it runs its own tasks and its own member-gone rules.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use starling_cluster::{ClusterState, NodeId};
use starling_operators::render::Update;
use starling_operators::Event;

use super::follow::stage_of_output;
use super::peer_link::{PeerItem, PeerSubscription};
use super::Shared;
use crate::quic::wire::PeerRequest;
use crate::runtime::feed;
use crate::{EngineError, Subscription};

/// Which stream a merged subscription follows on every member.
#[derive(Clone)]
enum Source {
    /// A dataflow stage's output.
    Output { dataflow: String, output: String },
    /// A topic's events, from each shard's owner.
    Topic(String),
}

impl Source {
    /// The peer request that opens this node's own part of the stream.
    fn request(&self) -> PeerRequest {
        match self {
            Source::Output { dataflow, output } => PeerRequest::SubscribeOutputLocal {
                dataflow: dataflow.clone(),
                output: output.clone(),
            },
            Source::Topic(topic) => PeerRequest::SubscribeTopicLocal {
                topic: topic.clone(),
            },
        }
    }
}

/// Opens `source` on peer `p` (its own part only).
async fn open_on<T: PeerItem>(
    peers: &super::peers::Peers,
    p: NodeId,
    source: &Source,
) -> Result<PeerSubscription<T>, starling_client::ClientError> {
    peers.client(p).await?.stream(source.request()).await
}

impl Shared {
    /// Results of every node for one output, merged into one subscription; members that
    /// join later are merged in as they start the dataflow.
    pub(crate) fn subscribe(
        &self,
        dataflow: &str,
        output: &str,
    ) -> Result<Subscription<Arc<[Update]>>, EngineError> {
        let engine = self.engine()?;
        let stage = stage_of_output(&self.current(), dataflow, output)
            .unwrap_or_else(|| dataflow.to_string());
        let local = engine.subscribe_local(&stage, output)?;
        let source = Source::Output {
            dataflow: stage,
            output: output.to_string(),
        };
        self.merged(local, source)
    }

    /// The events of a topic appended anywhere in the cluster, merged into one
    /// subscription: each event comes once, from the owner that logged it, in the order of
    /// its shard; members that join later are merged in as they create the topic.
    pub(crate) fn subscribe_topic(
        &self,
        topic: &str,
    ) -> Result<Subscription<Arc<[Event]>>, EngineError> {
        let local = self.engine()?.subscribe_topic(topic)?;
        self.merged(local, Source::Topic(topic.to_string()))
    }

    /// This node's stream `local` and every live peer's stream of `source`, merged.
    fn merged<T: PeerItem>(
        &self,
        local: Subscription<Arc<[T]>>,
        source: Source,
    ) -> Result<Subscription<Arc<[T]>>, EngineError> {
        let engine = self.engine()?;
        let (tx, sub) = feed::<Arc<[T]>>(engine.subscriber_queue());
        let peers: Vec<NodeId> = self
            .live_members()
            .into_iter()
            .filter(|n| *n != self.me)
            .collect();
        // Each peer's subscription is registered before this returns, so everything
        // published afterwards is seen, as on one node.
        let opened = self.block(async {
            let mut opened = Vec::new();
            for p in peers {
                let s = open_on::<T>(&self.peers, p, &source)
                    .await
                    .map_err(|e| EngineError::Unavailable(format!("node {p:016x}: {e}")))?;
                opened.push((p, s));
            }
            Ok::<_, EngineError>(opened)
        })?;
        let mut members: BTreeSet<NodeId> = opened.iter().map(|(p, _)| *p).collect();
        members.insert(self.me);
        let subscribed = Arc::new(Mutex::new(members));
        let watch = Watch {
            state: self.state.clone(),
            dead: Arc::clone(&self.dead),
            subscribed: Arc::clone(&subscribed),
        };
        for (p, s) in opened {
            tokio::spawn(forward_results(p, s, tx.clone(), watch.clone()));
        }
        // Members that join later are added as soon as they run the dataflow (or have the
        // topic), which is before the leader gives them a shard (that waits for the
        // controller's next round and the hand-off drain), so their part is merged too.
        {
            let mut state = self.state.clone();
            let peers = Arc::clone(&self.peers);
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        r = state.changed() => if r.is_err() { return },
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                    if tx.is_ended() {
                        return;
                    }
                    let new: Vec<NodeId> = {
                        let subscribed = subscribed.lock().unwrap_or_else(|p| p.into_inner());
                        let dead = watch.dead.lock().unwrap_or_else(|p| p.into_inner());
                        state
                            .borrow()
                            .members
                            .keys()
                            .filter(|m| !subscribed.contains(m) && !dead.contains(m))
                            .copied()
                            .collect()
                    };
                    for p in new {
                        // Not yet (the dataflow or topic is still being installed there):
                        // next round.
                        if let Ok(s) = open_on::<T>(&peers, p, &source).await {
                            subscribed
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(p);
                            tokio::spawn(forward_results(p, s, tx.clone(), watch.clone()));
                        }
                    }
                }
            });
        }
        std::thread::Builder::new()
            .name("starling-merge".into())
            .spawn(move || loop {
                match local.recv_timeout(Duration::from_millis(200)) {
                    Ok(Some(b)) => {
                        if !tx.send(b) {
                            return;
                        }
                    }
                    Ok(None) => {
                        if tx.is_ended() {
                            return;
                        }
                    }
                    Err(e) => {
                        tx.end(e.to_string());
                        return;
                    }
                }
            })
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        Ok(sub)
    }
}

/// What a merged subscription's member streams consult when one of them fails.
#[derive(Clone)]
struct Watch {
    state: watch::Receiver<Arc<ClusterState>>,
    dead: Arc<Mutex<BTreeSet<NodeId>>>,
    /// Members whose results are being merged; one that ends quietly is taken out, so it is
    /// merged again if it comes back.
    subscribed: Arc<Mutex<BTreeSet<NodeId>>>,
}

impl Watch {
    /// Whether `p` left, is leaving, or is dead: its shards, and their results, are on the
    /// other members now.
    fn gone(&self, p: NodeId) -> bool {
        self.state
            .borrow()
            .members
            .get(&p)
            .is_none_or(|m| m.leaving)
            || self
                .dead
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&p)
    }
}

/// How long a member whose result stream failed may take to be reported dead before the
/// merged subscription ends with its error.
const MEMBER_GONE_WAIT: Duration = Duration::from_secs(10);

/// Copies one peer's results into a merged subscription until either side ends. A peer that
/// left the cluster, is leaving or died ends its part quietly: its shards, and their
/// results, are on the other members now (a dead owner's shards are rebuilt from their logs
/// by the replicas promoted in its place).
async fn forward_results<T: PeerItem>(
    p: NodeId,
    mut s: PeerSubscription<T>,
    tx: crate::runtime::Feed<Arc<[T]>>,
    watch: Watch,
) {
    // The stream is read by its own task (reading a frame is not cancel-safe), so this one
    // can also notice a reader that went away while the peer is quiet.
    let (btx, mut brx) = tokio::sync::mpsc::channel(4);
    let reader = tokio::spawn(async move {
        loop {
            let r = s.next().await;
            let more = matches!(r, Ok(Some(_)));
            if btx.send(r).await.is_err() || !more {
                return;
            }
        }
    });
    let mut check = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            r = brx.recv() => match r {
                Some(Ok(Some(batch))) => {
                    if !batch.is_empty() && !tx.send(Arc::from(batch)) {
                        break;
                    }
                }
                Some(Ok(None)) | None => break,
                Some(Err(e)) => {
                    let since = Instant::now();
                    while !watch.gone(p) && since.elapsed() < MEMBER_GONE_WAIT {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    if !watch.gone(p) {
                        tx.end(format!("node {p:016x}: {e}"));
                    }
                    break;
                }
            },
            _ = check.tick() => {
                if tx.is_ended() {
                    break;
                }
            }
        }
    }
    reader.abort();
    watch
        .subscribed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&p);
}
