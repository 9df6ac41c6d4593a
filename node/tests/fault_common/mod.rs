//! The fault tests' lab of network namespaces lives in `starling_testkit::lab`.
#![allow(dead_code)]

pub use starling_testkit::lab::*;
