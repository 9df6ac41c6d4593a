//! Clients of a Starling node, used by the CLI, the load tester and the tests.

pub mod http;
