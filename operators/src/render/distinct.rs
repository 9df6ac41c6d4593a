//! `distinct`: the first occurrence of each (key, row), forgotten `ttl` of event time later.
//!
//! Built on differential's `distinct`: every copy is inserted when it arrives and retracted
//! at `time + ttl`; the output is `+1` when a (key, row) is first seen and `-1` when its
//! last copy expires, so state is bounded by what arrived within one `ttl`. A ledger in
//! front of `distinct` keeps the copies, so that a key's state moves with its shard (expiries
//! still pending on the old owner follow them as diverted records).

use std::rc::Rc;

use differential_dataflow::collection::AsCollection;

use super::handoff::Handoff;
use super::join::with_expiry;
use super::ledger::ledger;
use super::Updates;
use crate::event::Event;

/// Renders a distinct with a time-to-live.
pub fn distinct<'s>(s: Updates<'s>, name: &str, ttl: u64, handoff: Rc<Handoff>) -> Updates<'s> {
    use timely::dataflow::operators::core::Map;
    let expiring = with_expiry(s, "Expire distinct", move |e, _| e.time.saturating_add(ttl));
    ledger(expiring, name, handoff, None)
        .as_collection()
        .map(|e: Event| (e.key, e.row))
        .distinct()
        .inner
        .map(|((key, row), t, d)| (Event { key, time: t, row }, t, d))
}
