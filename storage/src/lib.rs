//! Per-node durable state for Starling: the partitioned event log, operator checkpoints,
//! key-value trees (sled) and vector collections (usearch).
//!
//! Empty until the storage issue: the in-process engine keeps no durable state yet.
