//! What a Nexmark run looks like: the seed, the event-time rate, the out-of-order grouping
//! and the shape of the auction market (proportions, hot ratios, active windows).

use super::NexmarkError;

/// The multiplier that permutes event numbers inside an out-of-order group, as in the
/// reference (`eventNumber * 953 % groupSize`). It is prime, so it permutes every group
/// whose size is not a multiple of it.
pub const OUT_OF_ORDER_MULTIPLIER: u64 = 953;

/// Everything that decides the events of a run. Two runs with equal configs produce equal
/// events, on every platform.
///
/// The defaults are the reference's (Apache Beam's / nexmark-flink's `NexmarkConfiguration`),
/// except that event time starts at a fixed [`base_time_ms`](Self::base_time_ms) instead of
/// the wall clock, so that runs are reproducible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NexmarkConfig {
    /// Seeds the random stream; a different seed gives different events.
    pub seed: u64,
    /// Events per second of event time (the reference's `firstEventRate`). Event `n` happens
    /// at `base_time_ms + n * 1000 / rate` (integer division).
    pub rate: u64,
    /// Events are emitted in groups of this many, their event numbers permuted within the
    /// group (the reference's `outOfOrderGroupSize`). 1 means in order.
    pub out_of_order_group: u64,
    /// Event time of event number 0, in milliseconds since the epoch.
    pub base_time_ms: u64,
    /// Persons per `total_proportion()` events (1 by default).
    pub person_proportion: u64,
    /// Auctions per `total_proportion()` events (3 by default).
    pub auction_proportion: u64,
    /// Bids per `total_proportion()` events (46 by default).
    pub bid_proportion: u64,
    /// A bid goes to the current hot auction with probability `1 - 1/hot_auction_ratio`.
    pub hot_auction_ratio: u64,
    /// An auction is sold by the current hot seller with probability `1 - 1/hot_sellers_ratio`.
    pub hot_sellers_ratio: u64,
    /// A bid comes from the current hot bidder with probability `1 - 1/hot_bidders_ratio`.
    pub hot_bidders_ratio: u64,
    /// Non-hot bids choose among this many most recent auctions (plus a small lead); it also
    /// sets the average auction length (the time in which this many auctions are created).
    pub num_in_flight_auctions: u64,
    /// Non-hot sellers and bidders are chosen among this many most recent persons (plus a
    /// small lead).
    pub num_active_people: u64,
    /// Average size of a person in bytes, reached by padding `extra`.
    pub avg_person_bytes: usize,
    /// Average size of an auction in bytes, reached by padding `extra`.
    pub avg_auction_bytes: usize,
    /// Average size of a bid in bytes, reached by padding `extra`.
    pub avg_bid_bytes: usize,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            seed: 0,
            rate: 10_000,
            out_of_order_group: 1,
            // 2023-11-14T22:13:20Z, a multiple of 10 s so that tumbling windows line up.
            base_time_ms: 1_700_000_000_000,
            person_proportion: 1,
            auction_proportion: 3,
            bid_proportion: 46,
            hot_auction_ratio: 2,
            hot_sellers_ratio: 4,
            hot_bidders_ratio: 4,
            num_in_flight_auctions: 100,
            num_active_people: 1000,
            avg_person_bytes: 200,
            avg_auction_bytes: 500,
            avg_bid_bytes: 100,
        }
    }
}

impl NexmarkConfig {
    /// Checks what the generator relies on; [`Generator`](super::Generator) calls it, so a
    /// bad config is refused before any event is made.
    pub fn validate(&self) -> Result<(), NexmarkError> {
        let bad = |m: &str| Err(NexmarkError::Config(m.to_string()));
        if self.rate == 0 {
            return bad("rate must be at least 1 event per second");
        }
        if self.out_of_order_group == 0 {
            return bad("out_of_order_group must be at least 1 (1 = in order)");
        }
        // `n * 953 % G` permutes a group only if 953 and G are coprime (953 is prime).
        let coprime = gcd(
            u128::from(self.out_of_order_group),
            u128::from(OUT_OF_ORDER_MULTIPLIER),
        ) == 1;
        if !coprime {
            return bad(
                "out_of_order_group must not be a multiple of 953: the permutation \
                 `n * 953 % group` would repeat event numbers; pick e.g. 1000 (1 = in order)",
            );
        }
        if self.person_proportion == 0 || self.auction_proportion == 0 || self.bid_proportion == 0 {
            return bad("person, auction and bid proportions must each be at least 1");
        }
        if self.hot_auction_ratio == 0 || self.hot_sellers_ratio == 0 || self.hot_bidders_ratio == 0
        {
            return bad("hot ratios must be at least 1 (1 = nothing is hot)");
        }
        if self.num_active_people == 0 {
            return bad("num_active_people must be at least 1");
        }
        Ok(())
    }

    /// Events per cycle of persons, auctions and bids (50 by default).
    pub fn total_proportion(&self) -> u64 {
        self.person_proportion + self.auction_proportion + self.bid_proportion
    }

    /// The event time of event number `n` (not of the `n`-th emitted event: see
    /// [`adjusted_event_number`](Self::adjusted_event_number)). Exact integer arithmetic:
    /// `base_time_ms + floor(n * 1000 / rate)`; the reference computes the same through a
    /// `double` inter-event delay in microseconds.
    #[inline]
    pub fn event_time_ms(&self, n: u64) -> u64 {
        // The common case in 64 bits: 128-bit division is several times slower.
        if let Some(scaled) = n.checked_mul(1000) {
            return self.base_time_ms.saturating_add(scaled / self.rate.max(1));
        }
        let offset = u128::from(n) * 1000 / u128::from(self.rate.max(1));
        self.base_time_ms
            .saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
    }

    /// The event number the `emitted`-th event (counting from 0) carries: its position with
    /// the positions inside each out-of-order group permuted. It decides the event's kind,
    /// its ids and its time.
    #[inline]
    pub fn adjusted_event_number(&self, emitted: u64) -> u64 {
        let g = self.out_of_order_group.max(1);
        if g == 1 {
            return emitted;
        }
        let base = emitted / g * g;
        let offset = u128::from(emitted % g) * u128::from(OUT_OF_ORDER_MULTIPLIER) % u128::from(g);
        // `offset < g`, so it fits in u64.
        base + offset as u64
    }

    /// How many events it takes to create `num_in_flight_auctions` auctions (1666 by
    /// default). An auction lasts on average as long as these events take in event time, so
    /// that about `num_in_flight_auctions` auctions are open at any time (see
    /// [`max_auction_length_ms`](Self::max_auction_length_ms)).
    pub fn events_per_in_flight_auctions(&self) -> u64 {
        let a = u128::from(self.auction_proportion.max(1));
        let e = u128::from(self.num_in_flight_auctions) * u128::from(self.total_proportion()) / a;
        u64::try_from(e).unwrap_or(u64::MAX)
    }

    /// The largest `expires - date_time` of any auction this config can generate.
    ///
    /// From the reference's auction length: with `k` =
    /// [`events_per_in_flight_auctions`](Self::events_per_in_flight_auctions) and the
    /// auction's event number `n`, the horizon is `h(n) = time(n + k) - time(n)` and the
    /// length is `1 + uniform[0, max(2h, 1))`, so at most `max(2h, 1)`. With
    /// `time(n) = base + floor(n * 1000 / rate)`, `h(n) = floor((x + k * 1000) / rate)` where
    /// `x = n * 1000 mod rate` runs over the multiples of `gcd(1000, rate)` below `rate`, so
    /// the largest horizon is `floor((rate - gcd(1000, rate) + k * 1000) / rate)`.
    /// Default: `k = 1666`, largest horizon 167 ms, bound 334 ms.
    pub fn max_auction_length_ms(&self) -> u64 {
        let rate = u128::from(self.rate.max(1));
        let k = u128::from(self.events_per_in_flight_auctions());
        let h = (rate - gcd(1000, rate) + k * 1000) / rate;
        let h = u64::try_from(h).unwrap_or(u64::MAX / 2);
        h.saturating_mul(2).max(1)
    }

    /// The largest amount an event's time can be behind the newest event time generated
    /// before it. Groups follow each other in time, so an event is only ever behind events
    /// of its own group, and by at most the group's span `time(bG + G - 1) - time(bG)`. As
    /// for [`max_auction_length_ms`](Self::max_auction_length_ms), the longest span over all
    /// groups is `floor((rate - gcd(G * 1000, rate) + (G - 1) * 1000) / rate)`; 0 when
    /// `G = 1` or when whole groups fit in one millisecond. A watermark `max_delay` of at
    /// least this loses no event.
    ///
    /// This bounds the permutation's effect rather than simulating it; the permutation
    /// comes close to the bound for large groups, but for `G` dividing 952 it is the
    /// identity (`953 = 1 mod G`, as in the reference) and nothing is reordered at all.
    pub fn max_displacement_ms(&self) -> u64 {
        let rate = u128::from(self.rate.max(1));
        let g = u128::from(self.out_of_order_group.max(1));
        let span = (rate - gcd(g * 1000, rate) + (g - 1) * 1000) / rate;
        u64::try_from(span).unwrap_or(u64::MAX)
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
