//! Reproducible benchmarks for Starling. Each workload is a function that a release binary
//! (`starling-bench`) runs at full size and a test runs at a small size, so none can rot.

pub mod lookup;
pub mod nexmark;
pub mod node_run;
pub mod publish;
pub mod queries;
pub mod window;
