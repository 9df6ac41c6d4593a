//! The exactly-once check: close the input, wait for the count dataflow to catch up, read
//! its view, and compare with what the node acknowledged.
//!
//! The comparison ([`compare`]) is pure. Per key, with `a` acknowledged, `u` of unknown
//! outcome, and the view's `counted` (events) and `distinct` (distinct sequence numbers):
//! * `counted − distinct` events were counted twice or more: **duplicated**;
//! * `a − distinct` (when positive) acknowledged events were not counted: **missing**;
//! * `distinct − (a + u)` (when positive) were counted though never acknowledged nor
//!   possibly applied: **unexpected**;
//! * anything else between `a` and `a + u` is the part of the unknown-outcome batches the
//!   node did apply, reported but not an error.
//!
//! The check passes when nothing is duplicated, missing or unexpected.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value as Json;
use starling_client::http::HttpClient;

use crate::setup::{Names, WINDOW_MS};
use crate::workload::KeyNames;

/// How many differing keys a report lists.
pub const LIST_LIMIT: usize = 10;

/// One key's figures from the view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    pub counted: u64,
    pub distinct: u64,
}

/// A key whose count is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub key: String,
    pub acknowledged: u64,
    pub unknown: u64,
    pub counted: u64,
    pub distinct: u64,
}

/// What the check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub acknowledged: u64,
    /// Events the view counted (duplicates included).
    pub counted: u64,
    pub missing: u64,
    pub duplicated: u64,
    pub unexpected: u64,
    /// Events of unknown-outcome batches that were counted (applied after all).
    pub unknown_applied: u64,
    /// Keys with a difference, at most [`LIST_LIMIT`], in key order.
    pub differences: Vec<Difference>,
    /// Keys with a difference in all.
    pub keys_differing: u64,
    /// Events the dataflow sent to its late topic (explains missing ones).
    pub late_events: u64,
    /// Set when the dataflow did not catch up in time (the verdict is then a failure).
    pub not_caught_up: Option<String>,
}

impl Verdict {
    /// Whether every acknowledged event was counted exactly once.
    pub fn ok(&self) -> bool {
        self.missing == 0
            && self.duplicated == 0
            && self.unexpected == 0
            && self.not_caught_up.is_none()
    }
}

/// Compares per-key acknowledgements with the view. `view` holds the entries under key
/// names this run used (`None` where the view has no entry); `foreign` are view entries
/// under other names (never expected).
pub fn compare(
    names: &KeyNames,
    acked: &[u64],
    unknown: &[u64],
    view: &[Option<Counted>],
    foreign: &[(String, Counted)],
) -> Verdict {
    let mut v = Verdict::default();
    for i in 0..names.len() {
        let a = acked.get(i).copied().unwrap_or(0);
        let u = unknown.get(i).copied().unwrap_or(0);
        let c = view.get(i).copied().flatten().unwrap_or_default();
        v.acknowledged += a;
        v.counted += c.counted;
        let dup = c.counted.saturating_sub(c.distinct);
        let missing = a.saturating_sub(c.distinct);
        let unexpected = c.distinct.saturating_sub(a + u);
        v.duplicated += dup;
        v.missing += missing;
        v.unexpected += unexpected;
        v.unknown_applied += c.distinct.min(a + u).saturating_sub(a);
        if dup + missing + unexpected > 0 {
            note(
                &mut v,
                Difference {
                    key: names.name(i as u32).to_string(),
                    acknowledged: a,
                    unknown: u,
                    counted: c.counted,
                    distinct: c.distinct,
                },
            );
        }
    }
    for (key, c) in foreign {
        v.counted += c.counted;
        v.unexpected += c.distinct;
        v.duplicated += c.counted.saturating_sub(c.distinct);
        note(
            &mut v,
            Difference {
                key: key.clone(),
                acknowledged: 0,
                unknown: 0,
                counted: c.counted,
                distinct: c.distinct,
            },
        );
    }
    v
}

/// Counts a differing key, and lists it while the list is short.
fn note(v: &mut Verdict, d: Difference) {
    v.keys_differing += 1;
    if v.differences.len() < LIST_LIMIT {
        v.differences.push(d);
    }
}

/// Closes the input (watermark past every event sent), waits for the dataflow, reads the
/// view and compares.
pub async fn run(
    node: &HttpClient,
    names: &Names,
    keys: &KeyNames,
    drive: &crate::drive::DriveResult,
    lateness_ms: u64,
    jitter_ms: u64,
    settle: Duration,
) -> Result<Verdict> {
    // Past the newest event, its window, and any lateness, so every window closes, every
    // correction is in, and every result is written to the view.
    let close = drive.max_ts + jitter_ms + lateness_ms + 2 * WINDOW_MS + 1;
    node.advance_watermark(&names.topic, close)
        .await
        .context("could not advance the topic's watermark to close the count")?;
    let started = Instant::now();
    let mut info;
    let not_caught_up = loop {
        info = node
            .dataflow(&names.dataflow)
            .await
            .context("could not read the count dataflow's progress")?;
        let frontier = info["frontier"].as_u64().unwrap_or(0);
        if frontier >= close {
            break None;
        }
        if started.elapsed() > settle {
            break Some(format!(
                "the count dataflow did not catch up within {settle:?}: its frontier is \
                 {frontier}, the check needs {close} (raise --settle-timeout if the node is \
                 just slow)"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tracing::debug!(waited = ?started.elapsed(), "count dataflow settled");
    let (view, foreign) = read_view(node, &names.view, keys).await?;
    let mut verdict = compare(keys, &drive.acked, &drive.unknown, &view, &foreign);
    verdict.late_events = info["counters"]["late_events"].as_u64().unwrap_or(0);
    verdict.not_caught_up = not_caught_up;
    Ok(verdict)
}

/// Every entry of the view, paged over `GET /v1/kv/{view}` (the HTTP client has no KV
/// call, hence the plain request here).
async fn read_view(
    node: &HttpClient,
    view: &str,
    keys: &KeyNames,
) -> Result<(Vec<Option<Counted>>, Vec<(String, Counted)>)> {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/kv/{view}", node.base());
    let mut found = vec![None; keys.len()];
    let mut foreign = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut req = http.get(&url).query(&[("limit", "10000")]);
        if let Some(a) = &after {
            req = req.query(&[("after", a.as_str())]);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot read the count view at {url}"))?;
        let status = resp.status();
        let page: Json = resp
            .json()
            .await
            .with_context(|| format!("the count view at {url} answered something not JSON"))?;
        if !status.is_success() {
            bail!("reading the count view at {url}: {status}: {page}");
        }
        let items = page["items"]
            .as_array()
            .ok_or_else(|| anyhow!("the count view page has no `items`: {page}"))?;
        for item in items {
            let key = item["key"].as_str().unwrap_or_default();
            let c = parse_entry(&item["value"])
                .ok_or_else(|| anyhow!("view entry `{key}` is not a count: {item}"))?;
            match keys.index(key) {
                Some(i) => found[i as usize] = Some(c),
                None => foreign.push((key.to_string(), c)),
            }
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    Ok((found, foreign))
}

/// `{"counted": N, "distinct": M, ...}` as the per-key aggregate writes it.
fn parse_entry(v: &Json) -> Option<Counted> {
    Some(Counted {
        counted: v["counted"].as_u64()?,
        distinct: v["distinct"].as_u64()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(counted: u64, distinct: u64) -> Option<Counted> {
        Some(Counted { counted, distinct })
    }

    #[test]
    fn exact_counts_pass() {
        let names = KeyNames::new(3);
        let v = compare(&names, &[2, 0, 5], &[0; 3], &[c(2, 2), None, c(5, 5)], &[]);
        assert!(v.ok(), "{v:?}");
        assert_eq!((v.acknowledged, v.counted), (7, 7));
    }

    #[test]
    fn a_missing_event_is_named_with_its_key() {
        let names = KeyNames::new(3);
        let v = compare(&names, &[2, 1, 5], &[0; 3], &[c(2, 2), None, c(4, 4)], &[]);
        assert!(!v.ok());
        assert_eq!(v.missing, 2);
        assert_eq!(v.keys_differing, 2);
        assert_eq!(v.differences[0].key, "k1");
        assert_eq!(v.differences[1].counted, 4);
    }

    #[test]
    fn duplicates_fail_even_when_totals_match() {
        let names = KeyNames::new(1);
        let v = compare(&names, &[3], &[0], &[c(3, 2)], &[]);
        assert_eq!((v.duplicated, v.missing), (1, 1));
        assert!(!v.ok());
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_be_counted() {
        let names = KeyNames::new(2);
        let v = compare(&names, &[1, 1], &[2, 2], &[c(1, 1), c(3, 3)], &[]);
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.unknown_applied, 2);
        let v = compare(&names, &[1, 1], &[2, 2], &[c(1, 1), c(4, 4)], &[]);
        assert_eq!(v.unexpected, 1);
    }

    #[test]
    fn foreign_keys_are_unexpected_and_not_caught_up_fails() {
        let names = KeyNames::new(1);
        let mut v = compare(
            &names,
            &[1],
            &[0],
            &[c(1, 1)],
            &[(
                "zz".into(),
                Counted {
                    counted: 2,
                    distinct: 2,
                },
            )],
        );
        assert_eq!(v.unexpected, 2);
        let mut ok = compare(&names, &[1], &[0], &[c(1, 1)], &[]);
        assert!(ok.ok());
        ok.not_caught_up = Some("slow".into());
        assert!(!ok.ok());
        v.differences.clear();
        assert!(!v.ok());
    }

    #[test]
    fn only_the_first_differences_are_listed() {
        let names = KeyNames::new(50);
        let v = compare(&names, &[1; 50], &[0; 50], &[None; 50], &[]);
        assert_eq!(v.differences.len(), LIST_LIMIT);
        assert_eq!(v.keys_differing, 50);
        assert_eq!(v.missing, 50);
    }
}
