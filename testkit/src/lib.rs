//! What Starling's tests and benchmarks share: the `starling` binary, node processes and
//! cluster members on loopback, the network-namespace lab of the fault tests, the DuckDB
//! reference environment, and a seeded random generator.
//!
//! Why a crate: before it there were four copies of "start a node and read its first line"
//! and three hand-written RNGs, each drifting from the others. It talks to nodes over plain
//! HTTP and processes only, so it compiles none of the engine. Nothing the `starling` binary
//! ships links it.

pub mod bin;
pub mod cluster;
pub mod lab;
pub mod node;
pub mod reference;
pub mod rng;
