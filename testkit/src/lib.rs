//! What Starling's tests and benchmarks share: starting `starling node` processes, finding
//! the binary, the DuckDB reference environment, and a seeded random generator.
//!
//! Why a crate: before it there were four copies of "start a node and read its first line"
//! and three hand-written RNGs, each drifting from the others. Dev-only: nothing the
//! `starling` binary ships links it.

pub mod reference;
