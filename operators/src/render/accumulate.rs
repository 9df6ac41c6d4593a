//! Aggregate accumulators, shared by windowed and incremental aggregates.
//!
//! An accumulator takes `(value, diff)` updates, so the same code serves insert-only inputs
//! and inputs with retractions. `min`/`max` keep a multiset only when the input can retract
//! (an insert-only input keeps just the current extreme). Nulls are skipped by every function
//! but `count`, as in SQL; `sum`, `min`, `max` and `avg` of no non-null values are null.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use crate::definition::AggFn;
use crate::plan::AggPlan;
use crate::value::{DataType, Value};

/// The running state of one aggregate column for one group.
#[derive(Clone, Debug)]
pub enum Acc {
    Count(i64),
    Sum {
        sum: i128,
        float: f64,
        n: i64,
        is_float: bool,
    },
    Avg {
        sum: f64,
        n: i64,
    },
    /// Insert-only min/max: the current extreme.
    Extreme {
        value: Option<Value>,
        max: bool,
    },
    /// Min/max over a retracting input: every value with its multiplicity.
    ExtremeMultiset {
        values: BTreeMap<Value, i64>,
        max: bool,
    },
    CountDistinct(HashMap<Value, i64>),
    TopK {
        counts: HashMap<Value, i64>,
        k: usize,
    },
}

impl Acc {
    /// A fresh accumulator for `agg`.
    pub fn new(agg: &AggPlan, append_only: bool) -> Acc {
        match agg.func {
            AggFn::Count => Acc::Count(0),
            AggFn::Sum => Acc::Sum {
                sum: 0,
                float: 0.0,
                n: 0,
                is_float: agg.data_type == DataType::Float,
            },
            AggFn::Avg => Acc::Avg { sum: 0.0, n: 0 },
            AggFn::Min | AggFn::Max if append_only => Acc::Extreme {
                value: None,
                max: agg.func == AggFn::Max,
            },
            AggFn::Min | AggFn::Max => Acc::ExtremeMultiset {
                values: BTreeMap::new(),
                max: agg.func == AggFn::Max,
            },
            AggFn::CountDistinct => Acc::CountDistinct(HashMap::default()),
            AggFn::TopK => Acc::TopK {
                counts: HashMap::default(),
                k: agg.k,
            },
        }
    }

    /// Applies one update. `value` is the aggregated expression's value (ignored by count).
    #[inline]
    pub fn update(&mut self, value: &Value, diff: isize) {
        let d = diff as i64;
        match self {
            Acc::Count(c) => *c += d,
            _ if value.is_null() => {}
            Acc::Sum { sum, float, n, .. } => {
                match value {
                    Value::Int(i) => *sum += *i as i128 * d as i128,
                    other => *float += other.as_f64().unwrap_or(0.0) * d as f64,
                }
                *n += d;
            }
            Acc::Avg { sum, n } => {
                *sum += value.as_f64().unwrap_or(0.0) * d as f64;
                *n += d;
            }
            Acc::Extreme { value: cur, max } => {
                let better = match cur {
                    None => true,
                    Some(c) => (value > c) == *max && value != c,
                };
                if better {
                    *cur = Some(value.clone());
                }
            }
            Acc::ExtremeMultiset { values, .. } => bump(values, value, d),
            Acc::CountDistinct(counts) | Acc::TopK { counts, .. } => bump_hash(counts, value, d),
        }
    }

    /// Folds another accumulator of the same function into this one (session merges).
    pub fn merge(&mut self, other: Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (
                Acc::Sum { sum, float, n, .. },
                Acc::Sum {
                    sum: s2,
                    float: f2,
                    n: n2,
                    ..
                },
            ) => {
                *sum += s2;
                *float += f2;
                *n += n2;
            }
            (Acc::Avg { sum, n }, Acc::Avg { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (Acc::Extreme { value, max }, Acc::Extreme { value: Some(v), .. }) => {
                let better = match value {
                    None => true,
                    Some(c) => (&v > c) == *max && &v != c,
                };
                if better {
                    *value = Some(v);
                }
            }
            (Acc::ExtremeMultiset { values, .. }, Acc::ExtremeMultiset { values: v2, .. }) => {
                for (v, c) in v2 {
                    bump(values, &v, c);
                }
            }
            (Acc::CountDistinct(a), Acc::CountDistinct(b))
            | (Acc::TopK { counts: a, .. }, Acc::TopK { counts: b, .. }) => {
                for (v, c) in b {
                    bump_hash(a, &v, c);
                }
            }
            _ => {}
        }
    }

    /// The aggregate's current value.
    pub fn result(&self) -> Value {
        match self {
            Acc::Count(c) => Value::Int(*c),
            Acc::Sum { n: 0, .. } => Value::Null,
            Acc::Sum {
                sum,
                float,
                is_float,
                ..
            } => {
                if *is_float {
                    Value::Float(*sum as f64 + *float)
                } else {
                    i64::try_from(*sum).map_or(Value::Float(*sum as f64), Value::Int)
                }
            }
            Acc::Avg { n, .. } if *n <= 0 => Value::Null,
            Acc::Avg { sum, n } => Value::Float(*sum / *n as f64),
            Acc::Extreme { value, .. } => value.clone().unwrap_or(Value::Null),
            Acc::ExtremeMultiset { values, max } => {
                let v = if *max {
                    values.keys().next_back()
                } else {
                    values.keys().next()
                };
                v.cloned().unwrap_or(Value::Null)
            }
            Acc::CountDistinct(c) => Value::Int(c.len() as i64),
            Acc::TopK { counts, k } => {
                let mut all: Vec<(&Value, &i64)> = counts.iter().collect();
                // Most frequent first; ties by value so results are deterministic.
                all.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
                Value::List(
                    all.into_iter()
                        .take(*k)
                        .map(|(v, _)| v.clone())
                        .collect::<Arc<[Value]>>(),
                )
            }
        }
    }
}

fn bump(map: &mut BTreeMap<Value, i64>, v: &Value, d: i64) {
    let e = map.entry(v.clone()).or_insert(0);
    *e += d;
    if *e == 0 {
        map.remove(v);
    }
}

fn bump_hash(map: &mut HashMap<Value, i64>, v: &Value, d: i64) {
    let e = map.entry(v.clone()).or_insert(0);
    *e += d;
    if *e == 0 {
        map.remove(v);
    }
}

/// The accumulators of one group, one per aggregate column.
pub fn new_group(aggs: &[AggPlan], append_only: bool) -> Vec<Acc> {
    aggs.iter().map(|a| Acc::new(a, append_only)).collect()
}

/// Results of a group, appended to `row`.
pub fn results_into(accs: &[Acc], row: &mut Vec<Value>) {
    row.extend(accs.iter().map(Acc::result));
}
