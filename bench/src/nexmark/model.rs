//! The three Nexmark event types, and their two external forms: a Starling row (field order
//! = [`TOPICS_YAML`](super::TOPICS_YAML)) and a JSON object (what `person.ndjson` & co. hold).
//!
//! Strings are `Arc<str>` so that a row shares them instead of copying, and so that values
//! drawn from fixed lists (cities, channels, urls) cost no allocation per event.

use std::sync::Arc;

use serde::Serialize;
use starling_operators::value::Value;

/// A new user of the auction site. Row/JSON fields in declaration order; key `id`, time
/// `date_time`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Person {
    /// Unique, consecutive from [`FIRST_PERSON_ID`](super::FIRST_PERSON_ID).
    pub id: i64,
    /// "First Last" from two short lists, so that queries grouping by name find matches.
    pub name: Arc<str>,
    /// Random `xxxxx@yyy.com`.
    pub email_address: Arc<str>,
    /// Four groups of four digits separated by spaces.
    pub credit_card: Arc<str>,
    /// One of 10 US cities.
    pub city: Arc<str>,
    /// One of 6 US states (`AZ CA ID OR WA WY`).
    pub state: Arc<str>,
    /// Event time, milliseconds since the epoch.
    pub date_time: u64,
    /// Padding toward the configured average person size.
    pub extra: Arc<str>,
}

/// An item put up for sale. Key `id`, time `date_time`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Auction {
    /// Unique, consecutive from [`FIRST_AUCTION_ID`](super::FIRST_AUCTION_ID).
    pub id: i64,
    /// Random lowercase words, at most 19 characters.
    pub item_name: Arc<str>,
    /// Random lowercase words, at most 99 characters.
    pub description: Arc<str>,
    /// Log-uniform in `[100, 10^8]` (cents).
    pub initial_bid: i64,
    /// `initial_bid` plus another log-uniform price.
    pub reserve: i64,
    /// Event time, milliseconds since the epoch.
    pub date_time: u64,
    /// When the auction closes: `date_time` + at most
    /// [`NexmarkConfig::max_auction_length_ms`](super::NexmarkConfig::max_auction_length_ms).
    pub expires: u64,
    /// A person id (often the current hot seller).
    pub seller: i64,
    /// [`FIRST_CATEGORY_ID`](super::FIRST_CATEGORY_ID) ..= +4.
    pub category: i64,
    /// Padding toward the configured average auction size.
    pub extra: Arc<str>,
}

/// An offer on an auction. Key `auction`, time `date_time`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bid {
    /// An auction id (often the current hot auction).
    pub auction: i64,
    /// A person id (often the current hot bidder).
    pub bidder: i64,
    /// Log-uniform in `[100, 10^8]` (cents).
    pub price: i64,
    /// One of 4 hot channels (half the bids) or `channel-0` .. `channel-9999`.
    pub channel: Arc<str>,
    /// The channel's url (fixed per channel).
    pub url: Arc<str>,
    /// Event time, milliseconds since the epoch.
    pub date_time: u64,
    /// Padding toward the configured average bid size.
    pub extra: Arc<str>,
}

/// One generated event: the generator interleaves the three kinds in one stream, in the
/// configured proportions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NexmarkEvent {
    /// A new person.
    Person(Person),
    /// A new auction.
    Auction(Auction),
    /// A bid.
    Bid(Bid),
}

fn ts(ms: u64) -> Value {
    Value::Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
}

fn s(v: &Arc<str>) -> Value {
    Value::Str(Arc::clone(v))
}

impl NexmarkEvent {
    /// The topic the event belongs to: `"person"`, `"auction"` or `"bid"` (as declared in
    /// [`TOPICS_YAML`](super::TOPICS_YAML)).
    pub fn topic(&self) -> &'static str {
        match self {
            NexmarkEvent::Person(_) => "person",
            NexmarkEvent::Auction(_) => "auction",
            NexmarkEvent::Bid(_) => "bid",
        }
    }

    /// The event time in milliseconds since the epoch (the topic's `time` field).
    pub fn date_time(&self) -> u64 {
        match self {
            NexmarkEvent::Person(p) => p.date_time,
            NexmarkEvent::Auction(a) => a.date_time,
            NexmarkEvent::Bid(b) => b.date_time,
        }
    }

    /// The event as a row of its topic's schema, fields in [`TOPICS_YAML`](super::TOPICS_YAML)
    /// order; times are `Value::Timestamp`. Strings are shared, not copied.
    pub fn to_row(&self) -> Vec<Value> {
        match self {
            NexmarkEvent::Person(p) => vec![
                Value::Int(p.id),
                s(&p.name),
                s(&p.email_address),
                s(&p.credit_card),
                s(&p.city),
                s(&p.state),
                ts(p.date_time),
                s(&p.extra),
            ],
            NexmarkEvent::Auction(a) => vec![
                Value::Int(a.id),
                s(&a.item_name),
                s(&a.description),
                Value::Int(a.initial_bid),
                Value::Int(a.reserve),
                ts(a.date_time),
                ts(a.expires),
                Value::Int(a.seller),
                Value::Int(a.category),
                s(&a.extra),
            ],
            NexmarkEvent::Bid(b) => vec![
                Value::Int(b.auction),
                Value::Int(b.bidder),
                Value::Int(b.price),
                s(&b.channel),
                s(&b.url),
                ts(b.date_time),
                s(&b.extra),
            ],
        }
    }

    /// The event as a JSON object with the schema's field names; times are plain integers
    /// (milliseconds). This is what one NDJSON line holds.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            NexmarkEvent::Person(p) => json!({
                "id": p.id,
                "name": &*p.name,
                "email_address": &*p.email_address,
                "credit_card": &*p.credit_card,
                "city": &*p.city,
                "state": &*p.state,
                "date_time": p.date_time,
                "extra": &*p.extra,
            }),
            NexmarkEvent::Auction(a) => json!({
                "id": a.id,
                "item_name": &*a.item_name,
                "description": &*a.description,
                "initial_bid": a.initial_bid,
                "reserve": a.reserve,
                "date_time": a.date_time,
                "expires": a.expires,
                "seller": a.seller,
                "category": a.category,
                "extra": &*a.extra,
            }),
            NexmarkEvent::Bid(b) => json!({
                "auction": b.auction,
                "bidder": b.bidder,
                "price": b.price,
                "channel": &*b.channel,
                "url": &*b.url,
                "date_time": b.date_time,
                "extra": &*b.extra,
            }),
        }
    }
}
