//! The dataflow definitions shipped with Starling, as text. Each one runs in a test of this
//! crate; the `starling demo` command runs [`SUPPORT_DESK`].
//!
//! To start your own agent, copy `agents/support_desk.yaml` and change the topics, the
//! nodes and the outputs; `docs/definitions.md` describes every field.

/// The support-desk agent: per-user activity per minute, escalations, per-channel counts.
pub const SUPPORT_DESK: &str = include_str!("../agents/support_desk.yaml");

/// Every shipped definition, by file name.
pub const ALL: &[(&str, &str)] = &[("agents/support_desk.yaml", SUPPORT_DESK)];
