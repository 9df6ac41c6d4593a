//! The Nexmark generator against what the reference generator guarantees: proportions, ids,
//! references between events, event time and out-of-order groups, auction lengths, hot
//! entities, the row schema of `TOPICS_YAML`, NDJSON round trips, determinism.

use std::collections::{HashMap, HashSet};

use starling_bench::nexmark::{
    write_ndjson, Generator, NexmarkConfig, NexmarkEvent, AUCTION_ID_LEAD, FIRST_AUCTION_ID,
    FIRST_PERSON_ID, PERSON_ID_LEAD, TOPICS_YAML,
};
use starling_operators::definition::Definition;
use starling_operators::json::row_from_json;
use starling_operators::plan::{plan, TopicSpec};
use starling_operators::value::Value;

fn events(cfg: &NexmarkConfig, n: u64) -> Vec<NexmarkEvent> {
    Generator::new(cfg, n).expect("valid config").collect()
}

fn cfg_g(g: u64) -> NexmarkConfig {
    NexmarkConfig {
        out_of_order_group: g,
        ..NexmarkConfig::default()
    }
}

#[test]
fn proportions_are_exact_and_ids_consecutive() {
    // G = 10 divides 50 000, so the groups are whole and permute within the run.
    for g in [1, 10, 1000] {
        let k = 1_000;
        let evs = events(&cfg_g(g), 50 * k);
        let mut persons = HashSet::new();
        let mut auctions = HashSet::new();
        let mut bids = 0;
        for e in &evs {
            match e {
                NexmarkEvent::Person(p) => assert!(persons.insert(p.id), "duplicate {}", p.id),
                NexmarkEvent::Auction(a) => assert!(auctions.insert(a.id), "duplicate {}", a.id),
                NexmarkEvent::Bid(_) => bids += 1,
            }
        }
        assert_eq!(persons.len() as u64, k, "G={g}");
        assert_eq!(auctions.len() as u64, 3 * k, "G={g}");
        assert_eq!(bids, 46 * k, "G={g}");
        let k = k as i64;
        assert_eq!(
            persons,
            (FIRST_PERSON_ID..FIRST_PERSON_ID + k).collect::<HashSet<_>>()
        );
        assert_eq!(
            auctions,
            (FIRST_AUCTION_ID..FIRST_AUCTION_ID + 3 * k).collect::<HashSet<_>>()
        );
    }
}

#[test]
fn same_seed_same_events_other_seed_other_events() {
    let a = events(&NexmarkConfig::default(), 5_000);
    let b = events(&NexmarkConfig::default(), 5_000);
    assert_eq!(a, b);
    let other = NexmarkConfig {
        seed: 1,
        ..NexmarkConfig::default()
    };
    let c = events(&other, 5_000);
    let differing = a.iter().zip(&c).filter(|(x, y)| x != y).count();
    assert!(differing > 4_500, "only {differing} of 5000 events differ");
    // Same kinds, ids and times: only the random fields depend on the seed.
    assert!(a
        .iter()
        .zip(&c)
        .all(|(x, y)| x.topic() == y.topic() && x.date_time() == y.date_time()));
}

/// FNV-1a over the rows of the first events of seed 0. Pins the stream: a change to the
/// PRNG, its seeding or any field's derivation changes every later benchmark input, so it
/// must be deliberate (then update the constant and say so in the commit).
#[test]
fn the_stream_of_seed_0_is_pinned() {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for e in events(&NexmarkConfig::default(), 2_000) {
        feed(e.topic().as_bytes());
        for v in e.to_row() {
            match v {
                Value::Int(i) | Value::Timestamp(i) => feed(&i.to_le_bytes()),
                Value::Str(s) => feed(s.as_bytes()),
                other => panic!("unexpected value {other:?}"),
            }
            feed(&[0xff]);
        }
    }
    assert_eq!(h, PINNED_SEED_0, "the seed-0 stream changed: got {h}");
}

const PINNED_SEED_0: u64 = 13_848_382_246_595_431_204;

#[test]
fn event_time_in_order_with_g1_and_bounded_displacement_otherwise() {
    let cfg = NexmarkConfig::default();
    let evs = events(&cfg, 20_000);
    assert_eq!(cfg.max_displacement_ms(), 0);
    assert_eq!(evs[0].date_time(), cfg.base_time_ms);
    for w in evs.windows(2) {
        assert!(w[0].date_time() <= w[1].date_time());
    }
    // 10 000 events/s: 20 000 events span 2 s of event time.
    assert_eq!(
        evs.last().map(|e| e.date_time()),
        Some(cfg.base_time_ms + 1999)
    );

    // Ten events per millisecond and groups of ten: every group falls in one millisecond.
    assert_eq!(cfg_g(10).max_displacement_ms(), 0);
    // 953 = 1 mod 7: the permutation is the identity, as in the reference.
    let identity = events(&cfg_g(7), 1_000);
    assert!(identity
        .windows(2)
        .all(|w| w[0].date_time() <= w[1].date_time()));

    for (g, rate) in [(15, 10_000), (1000, 10_000), (500, 1_000), (5, 3)] {
        let cfg = NexmarkConfig {
            out_of_order_group: g,
            rate,
            ..NexmarkConfig::default()
        };
        let bound = cfg.max_displacement_ms();
        let mut newest = 0;
        let mut worst = 0;
        let mut reordered = 0;
        let mut gen = Generator::new(&cfg, 20_000).expect("valid config");
        loop {
            let watermark = gen.watermark_ms();
            let Some(e) = gen.next() else { break };
            let t = e.date_time();
            assert!(t >= watermark, "G={g}: {t} below watermark {watermark}");
            if t < newest {
                reordered += 1;
                worst = worst.max(newest - t);
            }
            newest = newest.max(t);
        }
        assert!(worst <= bound, "G={g} rate={rate}: {worst} ms > {bound} ms");
        assert!(reordered > 0, "G={g} rate={rate}: nothing reordered");
        if g >= 500 {
            // Large groups are stirred well: the bound (the group's span) is nearly reached.
            assert!(
                worst * 10 >= bound * 9,
                "G={g}: worst {worst} ms, bound {bound} ms"
            );
        }
    }
}

#[test]
fn references_follow_the_reference_rules() {
    // In order (G = 1), the newest entity as of an event is the newest already emitted.
    let cfg = NexmarkConfig::default();
    let (mut persons, mut auctions) = (0i64, 0i64);
    let (mut bids, mut bids_on_existing) = (0u64, 0u64);
    for e in events(&cfg, 200_000) {
        match e {
            NexmarkEvent::Person(_) => persons += 1,
            NexmarkEvent::Auction(a) => {
                auctions += 1;
                let newest = FIRST_PERSON_ID + persons - 1;
                assert!(a.seller <= newest + PERSON_ID_LEAD as i64, "{a:?}");
                assert!(
                    a.seller >= FIRST_PERSON_ID + (persons - 1000).max(0),
                    "{a:?}"
                );
            }
            NexmarkEvent::Bid(b) => {
                bids += 1;
                let newest = FIRST_AUCTION_ID + auctions - 1;
                assert!(b.auction <= newest + AUCTION_ID_LEAD as i64, "{b:?}");
                // In flight: at most 100 behind (the hot batch is 100 wide too).
                assert!(b.auction >= (newest - 100).max(FIRST_AUCTION_ID), "{b:?}");
                if b.auction <= newest {
                    bids_on_existing += 1;
                }
                let newest_person = FIRST_PERSON_ID + persons - 1;
                assert!(b.bidder <= newest_person + PERSON_ID_LEAD as i64, "{b:?}");
                assert!(
                    b.bidder >= FIRST_PERSON_ID + (persons - 1000).max(0),
                    "{b:?}"
                );
            }
        }
    }
    // Only non-hot bids (half) may look ahead, by at most 10 of ~111 choices.
    assert!(
        bids_on_existing * 100 > bids * 93,
        "{bids_on_existing} of {bids}"
    );
    assert!(
        bids_on_existing < bids,
        "no bid looked ahead: the lead is not exercised"
    );
}

#[test]
fn auction_lengths_stay_within_the_bound_and_reach_it() {
    for cfg in [
        NexmarkConfig::default(),
        NexmarkConfig {
            rate: 1_000,
            ..NexmarkConfig::default()
        },
        NexmarkConfig {
            rate: 333,
            out_of_order_group: 7,
            seed: 9,
            ..NexmarkConfig::default()
        },
    ] {
        let bound = cfg.max_auction_length_ms();
        let mut longest = 0;
        let mut total = 0;
        let mut count = 0;
        for e in events(&cfg, 100_000) {
            if let NexmarkEvent::Auction(a) = e {
                let len = a.expires - a.date_time;
                assert!((1..=bound).contains(&len), "{len} ms, bound {bound} ms");
                longest = longest.max(len);
                total += len;
                count += 1;
            }
        }
        assert!(
            longest * 100 >= bound * 98,
            "longest {longest} ms, bound {bound} ms"
        );
        // Uniform in [1, 2h]: the mean is about h = bound / 2.
        let mean = total / count;
        assert!(
            mean * 100 > bound * 45 && mean * 100 < bound * 55,
            "mean {mean}"
        );
    }
    // 1666 events at 10 000 events/s: h <= ceil(166.6) = 167, so 334.
    assert_eq!(NexmarkConfig::default().max_auction_length_ms(), 334);
}

#[test]
fn hot_auctions_bidders_and_sellers_are_hot() {
    let cfg = NexmarkConfig::default();
    let mut per_auction: HashMap<i64, u64> = HashMap::new();
    let mut per_bidder: HashMap<i64, u64> = HashMap::new();
    let mut per_seller: HashMap<i64, u64> = HashMap::new();
    let (mut bids, mut auctions) = (0u64, 0u64);
    for e in events(&cfg, 50_000) {
        match e {
            NexmarkEvent::Bid(b) => {
                bids += 1;
                *per_auction.entry(b.auction).or_default() += 1;
                *per_bidder.entry(b.bidder).or_default() += 1;
            }
            NexmarkEvent::Auction(a) => {
                auctions += 1;
                *per_seller.entry(a.seller).or_default() += 1;
            }
            NexmarkEvent::Person(_) => {}
        }
    }
    let top = |m: &HashMap<i64, u64>| m.values().copied().max().unwrap_or(0);
    // Uniform over 3 000 auctions would give ~15 bids each; the hot auction of a batch of
    // 100 auctions (~1 530 bids) gets half of them.
    let uniform = bids / 3_000;
    assert!(
        top(&per_auction) > 30 * uniform,
        "{} vs {uniform}",
        top(&per_auction)
    );
    // 1 000 persons; a hot bidder holds for 100 persons (~4 600 bids) and gets 3/4.
    assert!(top(&per_bidder) > 2_000, "{}", top(&per_bidder));
    assert!(top(&per_seller) > 150, "{} of {auctions}", top(&per_seller));
}

#[test]
fn fields_follow_the_reference_model() {
    let cfg = NexmarkConfig::default();
    let (mut size_p, mut size_a, mut size_b) = (0usize, 0usize, 0usize);
    let (mut np, mut na, mut nb) = (0usize, 0usize, 0usize);
    let mut hot_channel_bids = 0;
    for e in events(&cfg, 100_000) {
        match e {
            NexmarkEvent::Person(p) => {
                assert!(["AZ", "CA", "ID", "OR", "WA", "WY"].contains(&&*p.state));
                assert!(p.name.split(' ').count() == 2, "{}", p.name);
                assert!(p.email_address.ends_with(".com") && p.email_address.contains('@'));
                assert_eq!(p.credit_card.len(), 19, "{}", p.credit_card);
                let size = 8
                    + p.name.len()
                    + p.email_address.len()
                    + p.credit_card.len()
                    + p.city.len()
                    + p.state.len();
                size_p += size + p.extra.len();
                np += 1;
            }
            NexmarkEvent::Auction(a) => {
                assert!((10..=14).contains(&a.category));
                assert!((100..=100_000_000).contains(&a.initial_bid));
                assert!(a.reserve >= a.initial_bid + 100);
                assert!(a.item_name.len() < 20 && a.description.len() < 100);
                size_a += 48 + a.item_name.len() + a.description.len() + a.extra.len();
                na += 1;
            }
            NexmarkEvent::Bid(b) => {
                assert!((100..=100_000_000).contains(&b.price));
                if ["Google", "Facebook", "Baidu", "Apple"].contains(&&*b.channel) {
                    hot_channel_bids += 1;
                } else {
                    assert!(b.channel.starts_with("channel-"), "{}", b.channel);
                }
                assert!(b.url.starts_with("https://www.nexmark.com/"));
                size_b += 32 + b.extra.len();
                nb += 1;
            }
        }
    }
    let near = |total: usize, n: usize, want: usize| {
        let avg = total / n;
        assert!(
            avg * 100 >= want * 97 && avg * 100 <= want * 103,
            "{avg} vs {want}"
        );
    };
    near(size_p, np, cfg.avg_person_bytes);
    near(size_a, na, cfg.avg_auction_bytes);
    near(size_b, nb, cfg.avg_bid_bytes);
    assert!(hot_channel_bids * 100 > nb * 45 && hot_channel_bids * 100 < nb * 55);
}

fn topic_specs() -> HashMap<String, TopicSpec> {
    let inputs = "\
inputs:
  - {id: p, topic: person}
  - {id: a, topic: auction}
  - {id: b, topic: bid}
";
    let text = format!("name: nexmark_schema\n{TOPICS_YAML}{inputs}");
    let def: Definition = serde_yaml_ng::from_str(&text).expect("TOPICS_YAML parses");
    let plan = plan(&def, &HashMap::new()).expect("TOPICS_YAML plans");
    plan.new_topics
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect()
}

#[test]
fn rows_and_json_match_the_declared_topics() {
    let specs = topic_specs();
    let mut seen = HashSet::new();
    for e in events(&cfg_g(5), 2_000) {
        let spec = &specs[e.topic()];
        let row = e.to_row();
        assert_eq!(row.len(), spec.schema.len(), "{}", e.topic());
        for (i, v) in row.iter().enumerate() {
            assert_eq!(
                v.data_type(),
                spec.schema.field(i).data_type,
                "{}",
                e.topic()
            );
        }
        // The JSON form decodes, by the declared schema, to the same row.
        let decoded = row_from_json(&spec.schema, &e.to_json()).expect("JSON fits the schema");
        assert_eq!(decoded, row);
        let time = spec.time.expect("time field");
        assert_eq!(row[time], Value::Timestamp(e.date_time() as i64));
        let key = spec.key.expect("key field");
        let expected_key = match &e {
            NexmarkEvent::Person(p) => p.id,
            NexmarkEvent::Auction(a) => a.id,
            NexmarkEvent::Bid(b) => b.auction,
        };
        assert_eq!(row[key], Value::Int(expected_key));
        seen.insert(e.topic());
    }
    assert_eq!(seen.len(), 3);
}

#[test]
fn ndjson_lines_parse_back_to_the_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 5 000 is a whole number of groups of 5, so the counts are exact.
    let cfg = cfg_g(5);
    let counts = write_ndjson(dir.path(), &cfg, 5_000).expect("write");
    assert_eq!(
        (counts.persons, counts.auctions, counts.bids),
        (100, 300, 4_600)
    );
    let evs = events(&cfg, 5_000);
    let lo = evs.iter().map(|e| e.date_time()).min();
    let hi = evs.iter().map(|e| e.date_time()).max();
    assert_eq!(counts.time_range, lo.zip(hi));
    for topic in ["person", "auction", "bid"] {
        let text =
            std::fs::read_to_string(dir.path().join(format!("{topic}.ndjson"))).expect("read back");
        let expected: Vec<_> = evs.iter().filter(|e| e.topic() == topic).collect();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), expected.len(), "{topic}");
        for (line, e) in lines.iter().zip(expected) {
            let parsed: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            assert_eq!(parsed, e.to_json(), "{topic}");
        }
    }
}

#[test]
fn bad_configs_are_refused_with_a_reason() {
    for (cfg, word) in [
        (cfg_g(0), "out_of_order_group"),
        (cfg_g(953 * 2), "953"),
        (
            NexmarkConfig {
                rate: 0,
                ..NexmarkConfig::default()
            },
            "rate",
        ),
        (
            NexmarkConfig {
                hot_auction_ratio: 0,
                ..NexmarkConfig::default()
            },
            "hot",
        ),
    ] {
        let err = Generator::new(&cfg, 10).err().expect("refused").to_string();
        assert!(err.contains(word), "{err}");
    }
}

/// The generator's schema and the shipped queries' topic declarations are one schema: a
/// field renamed in one place only would make every query refuse the generated events.
#[test]
fn topics_yaml_is_what_the_shipped_queries_declare() {
    let text = format!("name: nexmark_schema\n{TOPICS_YAML}inputs:\n  - {{id: b, topic: bid}}\n");
    let def: Definition = serde_yaml_ng::from_str(&text).expect("TOPICS_YAML parses");
    let mut ours = def.topics;
    ours.sort_by(|a, b| a.name.cmp(&b.name));
    let theirs = starling_bench::queries::topics().expect("shipped queries declare the topics");
    assert_eq!(ours, theirs);
}
