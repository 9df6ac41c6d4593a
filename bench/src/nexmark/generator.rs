//! The event stream: which event number comes next, what kind it is, and its fields.
//!
//! Follows the reference generator (nexmark-flink's `generator/`, from Apache Beam's
//! Nexmark): event number `n` decides the kind (`n % 50`: 1 person, 3 auctions, 46 bids),
//! the ids (the person and auction counts up to `n`) and the time; only the field values
//! come from the random stream. Out-of-order groups permute `n` inside groups of `G`.
//!
//! Randomness is one `Pcg64Mcg` stream (`rand_pcg`, whose output is fixed by the PCG
//! specification) seeded from [`NexmarkConfig::seed`]; bounded integers, floats and prices
//! are derived here with integer arithmetic and IEEE `+`/`×` only (no `rand` distributions,
//! no libm), so a seed gives the same events on every platform and with every release of
//! the `rand` family.

use std::sync::{Arc, OnceLock};

use rand_core::Rng;
use rand_pcg::Pcg64Mcg;

use super::config::NexmarkConfig;
use super::model::{Auction, Bid, NexmarkEvent, Person};
use super::NexmarkError;

/// Id of the first person: ids start high so that small runs already look like a live site.
pub const FIRST_PERSON_ID: i64 = 1000;
/// Id of the first auction (same reason as [`FIRST_PERSON_ID`]).
pub const FIRST_AUCTION_ID: i64 = 1000;
/// Smallest auction category; categories are `10..=14`.
pub const FIRST_CATEGORY_ID: i64 = 10;
/// Number of categories: few, so that per-category queries find results on small runs.
pub const NUM_CATEGORIES: u64 = 5;
/// A random seller or bidder may be up to this many persons beyond the newest one (the
/// reference's `PERSON_ID_LEAD`): it makes a person appear to arrive after their first
/// auction or bid.
pub const PERSON_ID_LEAD: u64 = 10;
/// A random (non-hot) bid may name up to this many auctions beyond the newest one (the
/// reference's `AUCTION_ID_LEAD`).
pub const AUCTION_ID_LEAD: u64 = 10;
/// Hot auctions and persons change every this many auctions / persons: the hot one is the
/// first of the current batch (bidders: the second, so hot sellers and bidders differ).
pub const HOT_BATCH: u64 = 100;
/// Number of non-hot bid channels (`channel-0` .. `channel-9999`).
pub const NUM_CHANNELS: u64 = 10_000;

const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// Length of the shared random text that `extra` fields are cut from: small enough to stay
/// in a core's L2 cache (the reference's 1 MiB made every `extra` a cache miss), large
/// enough that padding of the default sizes (at most ~480 bytes) starts at 64 Ki offsets.
const EXTRA_POOL_LEN: usize = 1 << 16;
/// Seed of the fixed tables (extra pool, channel urls): they are the same for every run,
/// like the reference's static tables.
const TABLE_SEED: u64 = 0x4e45_584d_4152_4b21;
/// Shortest random word before trimming (the reference's `MIN_STRING_LENGTH`).
const MIN_WORD_LEN: u64 = 3;

/// The random stream: PCG-64 (MCG variant) plus the few derived draws the generator needs.
struct Rand(Pcg64Mcg);

impl Rand {
    /// Expands the seed with SplitMix64 into the 128-bit PCG state, so that nearby seeds
    /// give unrelated streams.
    fn new(seed: u64) -> Rand {
        let mut s = seed;
        let hi = splitmix64(&mut s);
        let lo = splitmix64(&mut s);
        Rand(Pcg64Mcg::new((u128::from(hi) << 64) | u128::from(lo)))
    }

    #[inline]
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, n)` for `n >= 1`, without bias (Lemire's multiply-and-reject).
    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let mut m = u128::from(self.next()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// Uniform index into a slice of `len >= 1` items.
    #[inline]
    fn index(&mut self, len: usize) -> usize {
        // usize -> u64 is lossless on supported targets and the result is < len.
        self.below(len as u64) as usize
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    #[inline]
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A price in cents, log-uniform in `[100, 10^8]`: `round(100 * 10^(6u))`, as in the
    /// reference's `PriceGenerator`.
    #[inline]
    fn price(&mut self) -> i64 {
        let p = (100.0 * exp10(6.0 * self.unit())).round();
        p as i64
    }

    /// Appends a random word of `MIN_WORD_LEN..max_len` letters where each character is
    /// `special` with probability 1/13, then trims spaces from the appended part (the
    /// reference's `nextString`).
    fn push_word(&mut self, out: &mut String, max_len: u64, special: char) {
        let start = out.len();
        let len = MIN_WORD_LEN + self.below(max_len - MIN_WORD_LEN);
        for _ in 0..len {
            // One draw decides both: 26 of 338 values (1/13) give `special`, the other 312
            // are 12 copies of the alphabet.
            let v = self.below(13 * 26);
            if v < 26 {
                out.push(special);
            } else {
                out.push(char::from(b'a' + (v % 26) as u8));
            }
        }
        let trimmed_end = start + out[start..].trim_end_matches(' ').len();
        out.truncate(trimmed_end);
        let lead = out[start..].len() - out[start..].trim_start_matches(' ').len();
        out.drain(start..start + lead);
    }

    /// Appends `len` uniformly random lowercase letters.
    fn push_letters(&mut self, out: &mut String, len: usize) {
        out.reserve(len);
        let mut left = 0;
        let mut bits = 0u64;
        for _ in 0..len {
            if left == 0 {
                bits = self.next();
                // 26^13 < 2^64: thirteen letters per draw (the top one very slightly biased,
                // which does not matter for padding text).
                left = 13;
            }
            out.push(char::from(b'a' + (bits % 26) as u8));
            bits /= 26;
            left -= 1;
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `1/k` for the Taylor terms of [`exp10`] (constants, so multiplying replaces dividing).
const INV: [f64; 10] = [
    1.0,
    1.0 / 2.0,
    1.0 / 3.0,
    1.0 / 4.0,
    1.0 / 5.0,
    1.0 / 6.0,
    1.0 / 7.0,
    1.0 / 8.0,
    1.0 / 9.0,
    1.0 / 10.0,
];

/// `10^x` for `x` in `[0, 6)` with `+` and `×` only, so that it rounds the same on every
/// IEEE-754 platform (`f64::powf` calls the platform's libm, which may differ in the last
/// bit). `10^x = 10^i × (e^(f·ln10/16))^16` with `i`, `f` the integer and fractional parts
/// of `x`; the inner power by its Taylor series (10 terms: error below 1e-16).
fn exp10(x: f64) -> f64 {
    const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];
    let i = (x as usize).min(6);
    let y = (x - i as f64) * (std::f64::consts::LN_10 / 16.0);
    let mut t = 1.0;
    for inv in INV.iter().rev() {
        t = 1.0 + y * t * inv;
    }
    for _ in 0..4 {
        t *= t;
    }
    t * POW10[i]
}

/// Shared read-only tables, built once per process from [`TABLE_SEED`].
struct Tables {
    /// Random lowercase text; `extra` fields are slices of it.
    extra_pool: String,
    /// All "First Last" combinations, first-name major.
    names: Vec<Arc<str>>,
    cities: Vec<Arc<str>>,
    states: Vec<Arc<str>>,
    /// `(channel, url)` of the hot channels.
    hot_channels: Vec<(Arc<str>, Arc<str>)>,
    /// The random middle (`xxx/yyy/zzz/`) of each non-hot channel's url, concatenated, and
    /// where each ends, with the top bit set when the url carries a `channel_id`. Non-hot
    /// urls are rebuilt per bid from this compact form: a table of 10 000 shared `Arc`s is
    /// larger than L2, and the cache misses on it cost more than building the two strings.
    channel_paths: String,
    channel_path_ends: Vec<u32>,
    empty: Arc<str>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut rng = Rand::new(TABLE_SEED);
        let mut extra_pool = String::with_capacity(EXTRA_POOL_LEN);
        rng.push_letters(&mut extra_pool, EXTRA_POOL_LEN);
        let names = FIRST_NAMES
            .iter()
            .flat_map(|f| {
                LAST_NAMES
                    .iter()
                    .map(move |l| Arc::from(format!("{f} {l}")))
            })
            .collect();
        let url_path = |rng: &mut Rand, out: &mut String| {
            for _ in 0..3 {
                rng.push_word(out, 5, '_');
                out.push('/');
            }
        };
        let hot_channels = HOT_CHANNELS
            .iter()
            .map(|c| {
                let mut url = String::from(URL_PREFIX);
                url_path(&mut rng, &mut url);
                url.push_str(URL_SUFFIX);
                (Arc::from(*c), Arc::from(url))
            })
            .collect();
        let mut channel_paths = String::new();
        let mut channel_path_ends = Vec::with_capacity(NUM_CHANNELS as usize);
        for _ in 0..NUM_CHANNELS {
            url_path(&mut rng, &mut channel_paths);
            // Nine in ten channel urls carry an id, as in the reference.
            let with_id = if rng.below(10) > 0 { WITH_ID } else { 0 };
            // At most 10 000 paths of at most 15 bytes: far below the flag bit.
            channel_path_ends.push(channel_paths.len() as u32 | with_id);
        }
        Tables {
            extra_pool,
            names,
            cities: US_CITIES.iter().map(|c| Arc::from(*c)).collect(),
            states: US_STATES.iter().map(|s| Arc::from(*s)).collect(),
            hot_channels,
            channel_paths,
            channel_path_ends,
            empty: Arc::from(""),
        }
    })
}

impl Tables {
    /// Appends `channel-<i>`, the name of non-hot channel `i`.
    fn push_channel_name(&self, i: u32, out: &mut String) {
        out.push_str("channel-");
        push_decimal(out, i);
    }

    /// Appends the url of non-hot channel `i`: fixed random path, and for nine in ten
    /// channels a `channel_id` (`i` bit-reversed, as in the reference).
    fn push_channel_url(&self, i: u32, out: &mut String) {
        let at = i as usize;
        let start = match at {
            0 => 0,
            _ => (self.channel_path_ends[at - 1] & !WITH_ID) as usize,
        };
        let end = self.channel_path_ends[at];
        out.push_str(URL_PREFIX);
        out.push_str(&self.channel_paths[start..(end & !WITH_ID) as usize]);
        out.push_str(URL_SUFFIX);
        if end & WITH_ID != 0 {
            out.push_str("&channel_id=");
            push_decimal(out, i.reverse_bits());
        }
    }
}

const URL_PREFIX: &str = "https://www.nexmark.com/";
const URL_SUFFIX: &str = "item.htm?query=1";
const WITH_ID: u32 = 1 << 31;

/// Appends `v` in decimal without going through `fmt`.
fn push_decimal(out: &mut String, mut v: u32) {
    let mut digits = [0u8; 10];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &d in digits[..n].iter().rev() {
        out.push(char::from(d));
    }
}

fn to_i64(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

/// Generates Nexmark events for a config: an iterator over a fixed number of events or an
/// endless one. Cheap to create (the shared tables are built once per process).
pub struct Generator {
    cfg: NexmarkConfig,
    rng: Rand,
    tables: &'static Tables,
    emitted: u64,
    limit: u64,
    /// Reused to build strings before they become `Arc<str>`.
    buf: String,
}

impl Generator {
    /// A generator of exactly `events` events.
    pub fn new(cfg: &NexmarkConfig, events: u64) -> Result<Generator, NexmarkError> {
        cfg.validate()?;
        Ok(Generator {
            cfg: cfg.clone(),
            rng: Rand::new(cfg.seed),
            tables: tables(),
            emitted: 0,
            limit: events,
            buf: String::with_capacity(256),
        })
    }

    /// A generator that never ends (for load that runs until stopped).
    pub fn endless(cfg: &NexmarkConfig) -> Result<Generator, NexmarkError> {
        Generator::new(cfg, u64::MAX)
    }

    /// The config the events follow.
    pub fn config(&self) -> &NexmarkConfig {
        &self.cfg
    }

    /// How many events have been returned so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// A lower bound on the time of the next event and of every later one (the reference's
    /// watermark): the time of the first event number of the current out-of-order group.
    pub fn watermark_ms(&self) -> u64 {
        let g = self.cfg.out_of_order_group;
        self.cfg.event_time_ms(self.emitted / g * g)
    }

    /// The newest person id (base 0) as of event number `n`; the id of the person event `n`
    /// creates if it is one.
    fn last_person(&self, n: u64) -> u64 {
        let total = self.cfg.total_proportion();
        let p = self.cfg.person_proportion;
        (n / total) * p + (n % total).min(p - 1)
    }

    /// The newest auction id (base 0) as of event number `n`, which must not be a person
    /// event; the id of the auction event `n` creates if it is one.
    fn last_auction(&self, n: u64) -> u64 {
        let total = self.cfg.total_proportion();
        let (p, a) = (self.cfg.person_proportion, self.cfg.auction_proportion);
        let offset = (n % total).saturating_sub(p).min(a - 1);
        (n / total) * a + offset
    }

    /// A random recent person (base 0): one of the `num_active_people` newest, or up to
    /// [`PERSON_ID_LEAD`] beyond the newest.
    fn random_person(&mut self, n: u64) -> u64 {
        let people = self.last_person(n) + 1;
        let active = people.min(self.cfg.num_active_people);
        people - active + self.rng.below(active + PERSON_ID_LEAD)
    }

    /// A random auction (base 0) among the `num_in_flight_auctions` newest, or up to
    /// [`AUCTION_ID_LEAD`] beyond the newest.
    fn random_auction(&mut self, n: u64) -> u64 {
        let last = self.last_auction(n);
        let min = last.saturating_sub(self.cfg.num_in_flight_auctions);
        min + self.rng.below(last - min + 1 + AUCTION_ID_LEAD)
    }

    /// Padding so that `current + extra.len()` averages `average`: a length uniform within
    /// ±20 % of `average - current`, cut from the shared random text.
    fn extra(&mut self, current: usize, average: usize) -> Arc<str> {
        if current > average {
            return Arc::clone(&self.tables.empty);
        }
        let desired = average - current;
        // round(desired * 0.2): desired / 5 never ends in exactly .5.
        let delta = (desired + 2) / 5;
        let len = desired - delta
            + if delta == 0 {
                0
            } else {
                self.rng.index(2 * delta)
            };
        let pool = &self.tables.extra_pool;
        if len < pool.len() / 2 {
            let start = self.rng.index(pool.len() - len);
            Arc::from(&pool[start..start + len])
        } else {
            self.buf.clear();
            self.rng.push_letters(&mut self.buf, len);
            Arc::from(self.buf.as_str())
        }
    }

    fn word(&mut self, max_len: u64) -> Arc<str> {
        self.buf.clear();
        self.rng.push_word(&mut self.buf, max_len, ' ');
        Arc::from(self.buf.as_str())
    }

    fn person(&mut self, n: u64, time: u64) -> Person {
        let id = to_i64(self.last_person(n)) + FIRST_PERSON_ID;
        let first = self.rng.index(FIRST_NAMES.len());
        let last = self.rng.index(LAST_NAMES.len());
        let name = Arc::clone(&self.tables.names[first * LAST_NAMES.len() + last]);

        self.buf.clear();
        self.rng.push_word(&mut self.buf, 7, ' ');
        self.buf.push('@');
        self.rng.push_word(&mut self.buf, 5, ' ');
        self.buf.push_str(".com");
        let email_address: Arc<str> = Arc::from(self.buf.as_str());

        self.buf.clear();
        for i in 0..4 {
            if i > 0 {
                self.buf.push(' ');
            }
            let group = self.rng.below(10_000);
            for d in [1000, 100, 10, 1] {
                self.buf.push(char::from(b'0' + (group / d % 10) as u8));
            }
        }
        let credit_card: Arc<str> = Arc::from(self.buf.as_str());

        let city = Arc::clone(&self.tables.cities[self.rng.index(US_CITIES.len())]);
        let state = Arc::clone(&self.tables.states[self.rng.index(US_STATES.len())]);
        let current =
            8 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len();
        let extra = self.extra(current, self.cfg.avg_person_bytes);
        Person {
            id,
            name,
            email_address,
            credit_card,
            city,
            state,
            date_time: time,
            extra,
        }
    }

    fn auction(&mut self, n: u64, time: u64) -> Auction {
        let id = to_i64(self.last_auction(n)) + FIRST_AUCTION_ID;
        // P(hot seller) = 1 - 1/hot_sellers_ratio.
        let seller = if self.rng.below(self.cfg.hot_sellers_ratio) > 0 {
            self.last_person(n) / HOT_BATCH * HOT_BATCH
        } else {
            self.random_person(n)
        };
        let category = FIRST_CATEGORY_ID + to_i64(self.rng.below(NUM_CATEGORIES));
        let initial_bid = self.rng.price();
        // The auction lasts on average as long as it takes to create the next
        // `num_in_flight_auctions` auctions.
        let horizon = self
            .cfg
            .event_time_ms(n.saturating_add(self.cfg.events_per_in_flight_auctions()))
            - time;
        let length = 1 + self.rng.below(horizon.saturating_mul(2).max(1));
        let item_name = self.word(20);
        let description = self.word(100);
        let reserve = initial_bid + self.rng.price();
        let current = 8 + item_name.len() + description.len() + 5 * 8;
        let extra = self.extra(current, self.cfg.avg_auction_bytes);
        Auction {
            id,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time: time,
            expires: time.saturating_add(length),
            seller: to_i64(seller) + FIRST_PERSON_ID,
            category,
            extra,
        }
    }

    fn bid(&mut self, n: u64, time: u64) -> Bid {
        // P(hot auction) = 1 - 1/hot_auction_ratio.
        let auction = if self.rng.below(self.cfg.hot_auction_ratio) > 0 {
            self.last_auction(n) / HOT_BATCH * HOT_BATCH
        } else {
            self.random_auction(n)
        };
        // P(hot bidder) = 1 - 1/hot_bidders_ratio.
        let bidder = if self.rng.below(self.cfg.hot_bidders_ratio) > 0 {
            self.last_person(n) / HOT_BATCH * HOT_BATCH + 1
        } else {
            self.random_person(n)
        };
        let price = self.rng.price();
        let (channel, url) = if self.rng.below(2) > 0 {
            let (c, u) = &self.tables.hot_channels[self.rng.index(HOT_CHANNELS.len())];
            (Arc::clone(c), Arc::clone(u))
        } else {
            // < NUM_CHANNELS, so it fits in u32.
            let i = self.rng.below(NUM_CHANNELS) as u32;
            self.buf.clear();
            self.tables.push_channel_name(i, &mut self.buf);
            let channel = Arc::from(self.buf.as_str());
            self.buf.clear();
            self.tables.push_channel_url(i, &mut self.buf);
            (channel, Arc::from(self.buf.as_str()))
        };
        let extra = self.extra(4 * 8, self.cfg.avg_bid_bytes);
        Bid {
            auction: to_i64(auction) + FIRST_AUCTION_ID,
            bidder: to_i64(bidder) + FIRST_PERSON_ID,
            price,
            channel,
            url,
            date_time: time,
            extra,
        }
    }
}

impl Iterator for Generator {
    type Item = NexmarkEvent;

    fn next(&mut self) -> Option<NexmarkEvent> {
        if self.emitted >= self.limit {
            return None;
        }
        let n = self.cfg.adjusted_event_number(self.emitted);
        let time = self.cfg.event_time_ms(n);
        let rem = n % self.cfg.total_proportion();
        let event = if rem < self.cfg.person_proportion {
            NexmarkEvent::Person(self.person(n, time))
        } else if rem < self.cfg.person_proportion + self.cfg.auction_proportion {
            NexmarkEvent::Auction(self.auction(n, time))
        } else {
            NexmarkEvent::Bid(self.bid(n, time))
        };
        self.emitted += 1;
        Some(event)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.limit - self.emitted;
        match usize::try_from(left) {
            Ok(l) => (l, Some(l)),
            Err(_) => (usize::MAX, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn exp10_matches_powf() {
        for i in 0..=6000 {
            let x = f64::from(i) / 1000.0 * 0.999_999;
            let ours = exp10(x);
            let libm = 10f64.powf(x);
            assert!(
                ((ours - libm) / libm).abs() < 1e-12,
                "10^{x}: {ours} vs {libm}"
            );
        }
    }

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut rng = Rand::new(7);
        let mut seen = [0u32; 13];
        for _ in 0..13_000 {
            let v = rng.below(13);
            seen[v as usize] += 1;
        }
        // Each value expected 1000 times; 800 is > 6 standard deviations away.
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
        assert_eq!(rng.below(1), 0);
    }

    #[test]
    fn prices_span_the_reference_range() {
        let mut rng = Rand::new(1);
        let prices: Vec<i64> = (0..100_000).map(|_| rng.price()).collect();
        assert!(prices.iter().all(|p| (100..=100_000_000).contains(p)));
        // Log-uniform over six decades: about a sixth below 1 000.
        let cheap = prices.iter().filter(|&&p| p < 1_000).count();
        assert!((15_000..18_500).contains(&cheap), "{cheap}");
    }

    #[test]
    fn words_are_trimmed_and_short() {
        let mut rng = Rand::new(3);
        let mut s = String::new();
        let mut spaces_inside = 0;
        for _ in 0..10_000 {
            s.clear();
            s.push('x');
            rng.push_word(&mut s, 20, ' ');
            let w = &s[1..];
            assert!(w.len() < 20, "{w:?}");
            assert_eq!(w, w.trim(), "{w:?}");
            assert!(w.bytes().all(|b| b == b' ' || b.is_ascii_lowercase()));
            spaces_inside += w.matches(' ').count();
        }
        assert!(spaces_inside > 0);
    }

    #[test]
    fn channel_urls_are_fixed_tables() {
        let t = tables();
        let mut name = String::new();
        t.push_channel_name(42, &mut name);
        assert_eq!(name, "channel-42");
        let mut with_id = 0;
        let mut urls = HashSet::new();
        for i in 0..NUM_CHANNELS as u32 {
            let mut url = String::new();
            t.push_channel_url(i, &mut url);
            assert!(url.starts_with("https://www.nexmark.com/"), "{url}");
            assert!(url.contains("/item.htm?query=1"), "{url}");
            assert_eq!(url.matches('/').count(), 6, "{url}");
            if let Some((_, id)) = url.split_once("&channel_id=") {
                assert_eq!(id, i.reverse_bits().to_string());
                with_id += 1;
            }
            urls.insert(url);
        }
        assert!((8_500..9_500).contains(&with_id), "{with_id}");
        assert!(urls.len() > 9_900, "{} distinct urls", urls.len());
        for (_, url) in &t.hot_channels {
            assert!(url.starts_with("https://www.nexmark.com/") && url.ends_with("query=1"));
        }
        assert_eq!(t.extra_pool.len(), EXTRA_POOL_LEN);
    }

    #[test]
    fn decimals() {
        for v in [0, 7, 10, 4_069_523_456, u32::MAX] {
            let mut s = String::new();
            push_decimal(&mut s, v);
            assert_eq!(s, v.to_string());
        }
    }
}
