//! The Nexmark event generator: persons, auctions and bids of an online auction site, as
//! the Nexmark benchmark defines them (nexmark-flink's `generator/`, which descends from
//! Apache Beam's Nexmark), re-implemented to be deterministic from a seed.
//!
//! * [`Generator`] yields [`NexmarkEvent`]s for a [`NexmarkConfig`]: 1 person, 3 auctions and
//!   46 bids in every 50 events, event time advancing by `1000 / rate` ms per event, with
//!   optional out-of-order groups.
//! * [`NexmarkEvent::to_row`] / [`NexmarkEvent::to_json`] give the forms Starling ingests;
//!   [`TOPICS_YAML`] declares the matching topics for dataflow definitions.
//! * [`write_ndjson`] writes a run to one NDJSON file per topic.
//!
//! What the reference guarantees, and so do we (all "newest" as of the event's number, which
//! with `out_of_order_group = 1` means among the events already generated):
//!
//! * ids are consecutive from 1000 per kind, each used once;
//! * a bid names an auction at most [`AUCTION_ID_LEAD`] beyond the newest auction and at
//!   most `max(num_in_flight_auctions, HOT_BATCH - 1)` behind it;
//! * sellers and bidders are at most [`PERSON_ID_LEAD`] beyond the newest person and among
//!   the `num_active_people` newest (or the current hot batch).
//!
//! So an event may name a person or auction created a few events later (about 5 % of bids
//! by default); consumers must tolerate that, as they must on the real benchmark.
//!
//! Deliberate differences from nexmark-flink: event numbers and ids start at 0 (Beam's
//! default; Flink's source starts at 1, so its first events are auctions); a bid's bidder is
//! offset by [`FIRST_PERSON_ID`] once (Flink adds it twice, a bug: its bidders are 1000
//! beyond every person); event time starts at a fixed base instead of the wall clock; the
//! fixed tables (channel urls, padding text) come from a fixed seed instead of an unseeded
//! one; bounded random integers are unbiased for every range.

mod config;
mod generator;
mod model;
mod ndjson;

use std::path::PathBuf;

pub use config::{NexmarkConfig, OUT_OF_ORDER_MULTIPLIER};
pub use generator::{
    Generator, AUCTION_ID_LEAD, FIRST_AUCTION_ID, FIRST_CATEGORY_ID, FIRST_PERSON_ID, HOT_BATCH,
    NUM_CATEGORIES, NUM_CHANNELS, PERSON_ID_LEAD,
};
pub use model::{Auction, Bid, NexmarkEvent, Person};
pub use ndjson::{write_ndjson, NdjsonCounts};

/// What can go wrong generating or writing Nexmark events.
#[derive(Debug, thiserror::Error)]
pub enum NexmarkError {
    /// The config cannot be generated from; the message says which setting to change.
    #[error("invalid Nexmark config: {0}")]
    Config(String),
    /// A file or directory could not be created or written.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An event could not be encoded as JSON (not expected for these plain types).
    #[error("cannot encode a Nexmark event as JSON: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The `topics:` block declaring `person`, `auction` and `bid` exactly as
/// [`NexmarkEvent::to_row`] fills them, for dataflow definitions over Nexmark (and for
/// checking that a definition's own declarations agree).
pub const TOPICS_YAML: &str = "\
topics:
  - name: person
    key: id
    time: date_time
    fields:
      - {name: id, type: int}
      - {name: name, type: string}
      - {name: email_address, type: string}
      - {name: credit_card, type: string}
      - {name: city, type: string}
      - {name: state, type: string}
      - {name: date_time, type: timestamp}
      - {name: extra, type: string}
  - name: auction
    key: id
    time: date_time
    fields:
      - {name: id, type: int}
      - {name: item_name, type: string}
      - {name: description, type: string}
      - {name: initial_bid, type: int}
      - {name: reserve, type: int}
      - {name: date_time, type: timestamp}
      - {name: expires, type: timestamp}
      - {name: seller, type: int}
      - {name: category, type: int}
      - {name: extra, type: string}
  - name: bid
    key: auction
    time: date_time
    fields:
      - {name: auction, type: int}
      - {name: bidder, type: int}
      - {name: price, type: int}
      - {name: channel, type: string}
      - {name: url, type: string}
      - {name: date_time, type: timestamp}
      - {name: extra, type: string}
";
