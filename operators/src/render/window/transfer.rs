//! Window state leaving and arriving: keys handed over when their shard moves to another
//! node, and panes and sessions restored from a checkpoint. Its own file because it is the
//! one place that turns live window state into snapshots and back.

use std::collections::{BTreeMap, BTreeSet};

use timely::dataflow::operators::Capability;

use super::panes::Pane;
use super::sessions::Session;
use super::{result_event, HashMap, HashSet};
use crate::render::accumulate::Acc;
use crate::render::handoff::Handoff;
use crate::render::snapshot::{self, AccSnap, GroupSnap, MovedSnap, PaneSnap, WindowSnap};
use crate::render::{DataflowStats, Time, Update};
use crate::value::Value;

pub(super) fn group_snap(k: &Value, accs: &[Acc]) -> GroupSnap {
    GroupSnap {
        key: crate::flat::row_to_wire(std::slice::from_ref(k)),
        accs: accs.iter().map(AccSnap::of).collect(),
    }
}

/// Takes the released keys' groups out of every pane, into the hand-off.
pub(super) fn take_released_panes(
    h: &Handoff,
    node: &str,
    panes: &mut BTreeMap<Time, Pane>,
    stats: &DataflowStats,
) {
    for (&end, pane) in panes.iter_mut() {
        let taken: Vec<(Value, Vec<Acc>)> = pane
            .groups
            .extract_if(|k, _| h.released_shard(k).is_some())
            .collect();
        if !pane.closed {
            stats.add_window_state(-(taken.len() as i64));
        }
        for (key, accs) in taken {
            let Some(shard) = h.released_shard(&key) else {
                continue;
            };
            let emitted = pane.emitted || pane.done.remove(&key);
            let group = group_snap(&key, &accs);
            let start = pane.start;
            h.part(node, shard, |m| {
                match m
                    .panes
                    .iter_mut()
                    .find(|p| p.end == end && p.emitted == emitted)
                {
                    Some(p) => p.groups.push(group),
                    None => m.panes.push(PaneSnap {
                        start,
                        end,
                        emitted,
                        groups: vec![group],
                    }),
                }
            });
        }
    }
}

/// Merges the panes handed over from a shard's old owner (the keys this worker owns).
/// Returns the results to emit at once: windows this node had already emitted for its own
/// keys, or whose end its frontier has passed, while the old owner had not.
pub(super) fn adopt_panes(
    part: &MovedSnap,
    spare: &Capability<Time>,
    panes: &mut BTreeMap<Time, Pane>,
    updates: bool,
    h: &Handoff,
    stats: &DataflowStats,
) -> Result<Vec<Update>, String> {
    let now = *spare.time();
    let mut emit = Vec::new();
    for p in &part.panes {
        for g in &p.groups {
            let (key, accs) = snapshot::restore_group(g)?;
            if !h.owns_here(&key) {
                continue;
            }
            let pane = panes.entry(p.end).or_insert_with(|| Pane {
                start: p.start,
                groups: HashMap::default(),
                emitted: updates,
                cap: None,
                closed: false,
                done: HashSet::default(),
            });
            if p.emitted || updates {
                // The old owner emitted it; later corrections continue from there. The pane
                // still needs a capability for this node's own keys that may join it.
                if !pane.emitted {
                    pane.done.insert(key.clone());
                    if pane.cap.is_none() {
                        pane.cap = Some(spare.delayed(&p.end.max(now)));
                    }
                }
            } else if pane.emitted {
                emit.push((result_event(&key, p.start, p.end, &accs), now, 1));
            } else if pane.cap.is_none() {
                // Ends where the frontier is or later: emitted when the frontier passes.
                pane.cap = Some(spare.delayed(&p.end.max(now)));
            }
            if !pane.closed {
                stats.add_window_state(1);
            }
            match pane.groups.entry(key) {
                hashbrown::hash_map::Entry::Occupied(mut o) => {
                    for (a, b) in o.get_mut().iter_mut().zip(accs) {
                        a.merge(b);
                    }
                }
                hashbrown::hash_map::Entry::Vacant(v) => {
                    v.insert(accs);
                }
            }
        }
    }
    Ok(emit)
}

/// A session operator's state, borrowed for an adoption.
pub(super) struct SessionState<'a> {
    pub(super) by_key: &'a mut HashMap<Value, Vec<Session>>,
    pub(super) index: &'a mut BTreeSet<(Time, Value)>,
    pub(super) caps: &'a mut BTreeMap<Time, Capability<Time>>,
}

/// Merges the sessions handed over from a shard's old owner (the keys this worker owns);
/// returns the results to emit at once (sessions the frontier here has already closed).
pub(super) fn adopt_sessions(
    part: &MovedSnap,
    spare: &Capability<Time>,
    st: &mut SessionState<'_>,
    updates: bool,
    h: &Handoff,
    stats: &DataflowStats,
) -> Result<Vec<Update>, String> {
    let now = *spare.time();
    let mut emit = Vec::new();
    for s in &part.sessions {
        let key = crate::flat::value_from_wire(&s.key)?;
        if !h.owns_here(&key) {
            continue;
        }
        let accs: Vec<Acc> = s
            .accs
            .iter()
            .map(AccSnap::restore)
            .collect::<Result<_, _>>()?;
        let mut emitted = s.emitted || updates;
        if !emitted {
            if s.end <= now {
                emit.push((result_event(&key, s.start, s.end, &accs), now, 1));
                emitted = true;
            } else {
                st.caps
                    .entry(s.end)
                    .or_insert_with(|| spare.delayed(&s.end));
            }
        }
        st.index.insert((s.end, key.clone()));
        stats.add_window_state(1);
        st.by_key.entry(key).or_default().push(Session {
            start: s.start,
            end: s.end,
            accs,
            emitted,
            closed: false,
        });
    }
    Ok(emit)
}

/// Panes back from a snapshot, with a capability at the end of each pane not yet emitted.
pub(super) fn restore_panes(
    bytes: &[u8],
    initial: &Capability<Time>,
) -> Result<BTreeMap<Time, Pane>, String> {
    let WindowSnap::Panes(list) = snapshot::decode(bytes)? else {
        return Err("the checkpoint holds sessions, the operator has panes".into());
    };
    let mut panes = BTreeMap::new();
    for p in list {
        let mut groups = HashMap::default();
        for g in &p.groups {
            let (k, accs) = snapshot::restore_group(g)?;
            groups.insert(k, accs);
        }
        panes.insert(
            p.end,
            Pane {
                start: p.start,
                groups,
                emitted: p.emitted,
                cap: (!p.emitted).then(|| initial.delayed(&p.end)),
                closed: false,
                done: HashSet::default(),
            },
        );
    }
    Ok(panes)
}

/// Sessions back from a snapshot.
pub(super) fn restore_sessions(bytes: &[u8]) -> Result<Vec<(Value, Session)>, String> {
    let WindowSnap::Sessions(list) = snapshot::decode(bytes)? else {
        return Err("the checkpoint holds panes, the operator has sessions".into());
    };
    list.iter()
        .map(|s| {
            let key = crate::flat::value_from_wire(&s.key)?;
            let accs = s
                .accs
                .iter()
                .map(AccSnap::restore)
                .collect::<Result<_, _>>()?;
            Ok((
                key,
                Session {
                    start: s.start,
                    end: s.end,
                    accs,
                    emitted: s.emitted,
                    closed: false,
                },
            ))
        })
        .collect()
}
