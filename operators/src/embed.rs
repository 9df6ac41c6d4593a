//! Turning text into vectors for the vector collections.
//!
//! [`Embedder`] is the seam: the `embed` operator only knows the trait, so a real model (an
//! ONNX sentence encoder, a remote embedding service) plugs in by implementing it.
//!
//! [`HashingEmbedder`] is the built-in one. It uses signed feature hashing of words, word
//! pairs and character trigrams, because it
//!
//! * needs no model download (nodes may have no network access, and nothing has to be
//!   shipped or versioned beside the binary),
//! * is deterministic across runs, machines and releases (a stable, seeded FNV-1a hash, never
//!   `std`'s randomly seeded one), so vectors written by one node are comparable with queries
//!   embedded on another, also after a restart,
//! * is good enough for keyword-like recall: texts that share words, or words that differ by a
//!   typo, land close together. It knows nothing about meaning ("car" and "automobile" are as
//!   far apart as any two unrelated words); that is what a real model is for.
//!
//! # The features
//!
//! The text is lower-cased and split into words at every character that is not alphanumeric
//! (Unicode-aware, so "café" and "東京" are words; punctuation and emoji separate words and are
//! otherwise ignored). Each word contributes
//!
//! * its unigram, weight [`UNIGRAM_WEIGHT`];
//! * a bigram with the previous word, weight [`BIGRAM_WEIGHT`] (word order and phrases);
//! * its character trigrams with boundary markers (`"^re"`, `"ref"`, …, `"nd$"`; a one-letter
//!   word gives `"^a$"`), each weighted [`TRIGRAM_WEIGHT`]` / √(number of trigrams of the
//!   word)`, so that a long word does not outweigh a short one (typo robustness).
//!
//! Each feature is hashed (a separate seed per feature kind) to an index in `0..dim` and a
//! sign; the signed weights are added up and the vector is L2-normalised. A text without any
//! word (empty, only punctuation or emoji) gives the **zero vector**, which a cosine
//! collection refuses: callers should skip such texts.

use std::fmt;

/// Largest dimension an embedder may produce; matches the storage crate's vector limit.
pub const MAX_EMBED_DIM: usize = 4096;
/// Weight of a single word.
pub const UNIGRAM_WEIGHT: f32 = 1.0;
/// Weight of a pair of adjacent words.
pub const BIGRAM_WEIGHT: f32 = 0.5;
/// Total weight of one word's character trigrams (spread over them).
pub const TRIGRAM_WEIGHT: f32 = 1.0;

const SEED_UNIGRAM: u64 = 0x7569_6e69_6772_616d; // "unigram"
const SEED_BIGRAM: u64 = 0x6269_6772_616d_0001;
const SEED_TRIGRAM: u64 = 0x7472_6967_7261_6d03;

/// Errors building an embedder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    /// The requested dimension is 0 or above [`MAX_EMBED_DIM`].
    #[error("invalid embedding dimension {dim}: must be between 1 and {max}")]
    InvalidDimension {
        /// The dimension asked for.
        dim: usize,
        /// [`MAX_EMBED_DIM`].
        max: usize,
    },
}

/// Turns text into a fixed-length vector. Implementations must be deterministic (the same text
/// always gives the same vector), because stored vectors and later queries have to agree.
pub trait Embedder: Send + Sync {
    /// Length of every vector produced.
    fn dim(&self) -> usize;

    /// Identifies the model and its version, so that vectors made by different embedders are
    /// never mixed in one collection.
    fn name(&self) -> &str;

    /// Writes the embedding of `text` into `out` (cleared first, left with exactly
    /// [`dim`](Embedder::dim) values). Reusing `out` across calls avoids an allocation each.
    fn embed_into(&self, text: &str, out: &mut Vec<f32>);

    /// The embedding of `text` in a new vector.
    fn embed(&self, text: &str) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.dim());
        self.embed_into(text, &mut out);
        out
    }
}

/// The built-in, model-free embedder: signed feature hashing (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct HashingEmbedder {
    dim: usize,
}

impl fmt::Debug for HashingEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashingEmbedder")
            .field("dim", &self.dim)
            .finish()
    }
}

impl HashingEmbedder {
    /// An embedder producing `dim`-long vectors (1..=[`MAX_EMBED_DIM`]). More dimensions mean
    /// fewer hash collisions between features; 256–1024 is typical.
    pub fn new(dim: usize) -> Result<HashingEmbedder, EmbedError> {
        if dim == 0 || dim > MAX_EMBED_DIM {
            return Err(EmbedError::InvalidDimension {
                dim,
                max: MAX_EMBED_DIM,
            });
        }
        Ok(HashingEmbedder { dim })
    }

    /// Adds `weight` at the index and with the sign chosen by `hash`.
    fn add(&self, out: &mut [f32], hash: u64, weight: f32) {
        let h = mix(hash);
        // Multiply-shift maps the high bits uniformly onto 0..dim without a division.
        let index = (((h >> 32) * self.dim as u64) >> 32) as usize;
        let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
        out[index] += sign * weight;
    }

    /// Adds the features of one word (`word` is a run of alphanumeric characters of the input,
    /// not yet lower-cased); returns its unigram hash for the next bigram.
    fn add_word(&self, out: &mut [f32], word: &str, previous: Option<u64>) -> u64 {
        let lower = || word.chars().flat_map(char::to_lowercase);
        let mut unigram = Fnv::new(SEED_UNIGRAM);
        let mut chars = 0usize;
        for c in lower() {
            unigram.char(c);
            chars += 1;
        }
        let unigram = unigram.finish();
        self.add(out, unigram, UNIGRAM_WEIGHT);
        if let Some(previous) = previous {
            let mut bigram = Fnv::new(SEED_BIGRAM);
            bigram.u64(previous);
            bigram.u64(unigram);
            self.add(out, bigram.finish(), BIGRAM_WEIGHT);
        }
        // "^" + word + "$" has exactly `chars` trigrams.
        let weight = TRIGRAM_WEIGHT / (chars as f32).sqrt();
        let mut window = ['^', '^', '^'];
        let mut seen = 1usize; // the leading marker
        for c in lower().chain(std::iter::once('$')) {
            window = [window[1], window[2], c];
            seen += 1;
            if seen >= 3 {
                let mut trigram = Fnv::new(SEED_TRIGRAM);
                for c in window {
                    trigram.char(c);
                }
                self.add(out, trigram.finish(), weight);
            }
        }
        unigram
    }
}

impl Embedder for HashingEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn name(&self) -> &str {
        "hashing-v1"
    }

    fn embed_into(&self, text: &str, out: &mut Vec<f32>) {
        out.clear();
        out.resize(self.dim, 0.0);
        let mut previous = None;
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            previous = Some(self.add_word(out, word, previous));
        }
        let norm = out.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            out.iter_mut().for_each(|x| *x /= norm);
        }
    }
}

/// Seeded 64-bit FNV-1a: fixed by its definition, so the same on every platform and release.
struct Fnv(u64);

impl Fnv {
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new(seed: u64) -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325 ^ seed)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(Self::PRIME);
        }
    }

    fn char(&mut self, c: char) {
        let mut buf = [0u8; 4];
        self.bytes(c.encode_utf8(&mut buf).as_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// splitmix64's finaliser: FNV's low and high bits are poorly mixed for short inputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn norm(v: &[f32]) -> f32 {
        v.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    #[test]
    fn dimension_is_checked() {
        assert!(HashingEmbedder::new(1).is_ok());
        assert!(HashingEmbedder::new(MAX_EMBED_DIM).is_ok());
        for dim in [0, MAX_EMBED_DIM + 1] {
            let e = HashingEmbedder::new(dim).unwrap_err();
            assert_eq!(e, EmbedError::InvalidDimension { dim, max: 4096 });
            assert!(e.to_string().contains(&dim.to_string()));
        }
    }

    #[test]
    fn output_is_normalised_and_sized() {
        let e = HashingEmbedder::new(256).unwrap();
        assert_eq!(e.dim(), 256);
        for text in [
            "hello",
            "Hello, world!",
            "a b c d e f g",
            "naïve café 東京 ünïcödé",
        ] {
            let v = e.embed(text);
            assert_eq!(v.len(), 256);
            assert!((norm(&v) - 1.0).abs() < 1e-5, "{text}: {}", norm(&v));
        }
        // No words: the zero vector.
        for text in ["", "   ", "!!! ??? ...", "😀🎉👍"] {
            let v = e.embed(text);
            assert_eq!(v.len(), 256);
            assert!(v.iter().all(|x| *x == 0.0), "{text:?}");
        }
    }

    #[test]
    fn deterministic_and_pinned() {
        let e = HashingEmbedder::new(16).unwrap();
        let a = e.embed("The quick brown fox");
        assert_eq!(
            a,
            HashingEmbedder::new(16)
                .unwrap()
                .embed("The quick brown fox")
        );
        // Case and punctuation do not matter.
        assert_eq!(a, e.embed("the QUICK, brown... fox!"));
        // The hash itself, and so every vector ever stored, must never change.
        let mut h = Fnv::new(SEED_UNIGRAM);
        h.bytes(b"refund");
        assert_eq!(mix(h.finish()), PINNED_REFUND_HASH);
        let v = e.embed("refund");
        assert_eq!(
            v.iter()
                .map(|x| (x * 1e4).round() as i32)
                .collect::<Vec<_>>(),
            PINNED_REFUND
        );
    }

    const PINNED_REFUND_HASH: u64 = 11_216_505_227_869_212_459;
    const PINNED_REFUND: [i32; 16] = [
        2673, 0, 0, 0, -5345, 0, -2673, 0, 0, -6547, 0, 0, 0, 0, 2673, 2673,
    ];

    #[test]
    fn buffer_is_reused() {
        let e = HashingEmbedder::new(64).unwrap();
        let mut out = vec![9.0; 1000];
        e.embed_into("some text", &mut out);
        assert_eq!(out, e.embed("some text"));
        let capacity = out.capacity();
        let ptr = out.as_ptr();
        e.embed_into("other text", &mut out);
        assert_eq!((out.capacity(), out.as_ptr()), (capacity, ptr));
    }

    #[test]
    fn shared_words_are_closer() {
        let e = HashingEmbedder::new(512).unwrap();
        let a = e.embed("refund my order please");
        let b = e.embed("please refund the order");
        let c = e.embed("weather forecast for tomorrow");
        assert!(cosine(&a, &b) > 0.4, "{}", cosine(&a, &b));
        assert!(cosine(&a, &b) > cosine(&a, &c) + 0.3);
        // Word order counts a little (bigrams).
        let d = e.embed("order my refund please");
        assert!(cosine(&a, &d) < 0.999 && cosine(&a, &d) > cosine(&a, &b));
    }

    #[test]
    fn typos_stay_close() {
        let e = HashingEmbedder::new(512).unwrap();
        let refund = e.embed("refund");
        let typo = e.embed("refnud");
        let other = e.embed("shipping");
        assert!(
            cosine(&refund, &typo) > cosine(&refund, &other) + 0.1,
            "typo {} other {}",
            cosine(&refund, &typo),
            cosine(&refund, &other)
        );
        let a = e.embed("cancel my subscription");
        let b = e.embed("cancle my subscripton");
        let c = e.embed("track my parcel");
        assert!(cosine(&a, &b) > cosine(&a, &c));
    }

    #[test]
    fn hostile_input_is_fast_and_safe() {
        let e = HashingEmbedder::new(256).unwrap();
        let mut out = Vec::new();
        let cases = [
            "word ".repeat(200_000),
            "!?.,;".repeat(200_000),
            "😀".repeat(250_000),
            "a".repeat(1_000_000),
            "İ".repeat(300_000) + &"ß".repeat(200_000),
            "\u{0}\u{301}\u{200b}".repeat(100_000),
        ];
        for text in &cases {
            let start = Instant::now();
            e.embed_into(text, &mut out);
            let n = norm(&out);
            assert!(n == 0.0 || (n - 1.0).abs() < 1e-4);
            assert!(out.iter().all(|x| x.is_finite()));
            // Debug build on a slow machine: generous, but catches anything quadratic.
            assert!(start.elapsed().as_secs_f64() < 5.0, "{:?}", start.elapsed());
        }
    }
}
