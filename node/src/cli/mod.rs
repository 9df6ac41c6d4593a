//! The `starling` command line: one function per subcommand; `bin/starling.rs` only parses
//! arguments and calls these.

pub mod check;
pub mod demo;
pub mod remote;
