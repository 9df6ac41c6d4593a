//! What a collection is fixed to at creation (dimension and [`Metric`]) and the rules for its
//! name: the parts checked before any file or index exists, kept apart from both.

use std::fmt;
use std::str::FromStr;

use usearch::MetricKind;

use super::{VectorError, MAX_DIM, MAX_NAME_BYTES};
use crate::StorageError;

/// How distance between vectors is measured; fixed per collection. See the [module docs](super) for
/// what [`Hit::distance`](super::Hit::distance) means under each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// `1 − cos(a, b)`: direction only, the usual choice for text embeddings.
    Cosine,
    /// Euclidean distance `‖a − b‖`.
    L2,
    /// `1 − a·b`: for vectors that are already normalised, or when magnitude should count.
    InnerProduct,
}

impl Metric {
    pub(super) fn code(self) -> u8 {
        match self {
            Metric::Cosine => 1,
            Metric::L2 => 2,
            Metric::InnerProduct => 3,
        }
    }

    pub(super) fn from_code(code: u8) -> Option<Metric> {
        match code {
            1 => Some(Metric::Cosine),
            2 => Some(Metric::L2),
            3 => Some(Metric::InnerProduct),
            _ => None,
        }
    }

    pub(super) fn usearch(self) -> MetricKind {
        match self {
            Metric::Cosine => MetricKind::Cos,
            Metric::L2 => MetricKind::L2sq,
            Metric::InnerProduct => MetricKind::IP,
        }
    }

    /// The distance reported to callers, from usearch's raw distance.
    pub(super) fn public_distance(self, raw: f32) -> f32 {
        match self {
            Metric::L2 => raw.max(0.0).sqrt(),
            Metric::Cosine | Metric::InnerProduct => raw,
        }
    }

    /// The distance computed here, the same way usearch orders results (used when a filtered
    /// search has to fall back to a scan).
    pub(super) fn exact_distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::L2 => a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                .sqrt(),
            Metric::InnerProduct => 1.0 - a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>(),
            Metric::Cosine => {
                let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
                for (x, y) in a.iter().zip(b) {
                    dot += x * y;
                    na += x * x;
                    nb += y * y;
                }
                if na == 0.0 || nb == 0.0 {
                    1.0
                } else {
                    1.0 - dot / (na.sqrt() * nb.sqrt())
                }
            }
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::InnerProduct => "inner_product",
        })
    }
}

impl FromStr for Metric {
    type Err = VectorError;

    /// Accepts `cosine`, `l2`, `inner_product` and `ip`, in any ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" => Ok(Metric::Cosine),
            "l2" => Ok(Metric::L2),
            "inner_product" | "ip" => Ok(Metric::InnerProduct),
            _ => Err(VectorError::UnknownMetric {
                given: s.to_string(),
            }),
        }
    }
}

/// What a collection holds: the vector dimension and the metric. Fixed at creation, so that
/// `create` can be repeated safely (same spec: nothing happens; another spec: an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CollectionSpec {
    /// Number of `f32` values per vector, 1..=[`MAX_DIM`].
    pub dim: usize,
    /// How distance is measured.
    pub metric: Metric,
}

impl fmt::Display for CollectionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-d {}", self.dim, self.metric)
    }
}

pub(super) fn check_name(name: &str) -> Result<(), StorageError> {
    let bad = |reason| {
        Err(VectorError::InvalidName {
            name: name.to_string(),
            reason,
        }
        .into())
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return bad("it is longer than 128 bytes");
    }
    if name.starts_with('.') {
        return bad("names starting with '.' (including \".\" and \"..\") are reserved");
    }
    if name.contains(['/', '\\']) {
        return bad("it contains a path separator");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    Ok(())
}

pub(super) fn check_spec(spec: CollectionSpec) -> Result<(), StorageError> {
    if spec.dim == 0 || spec.dim > MAX_DIM {
        return Err(VectorError::InvalidDimension {
            dim: spec.dim,
            max: MAX_DIM,
        }
        .into());
    }
    Ok(())
}
