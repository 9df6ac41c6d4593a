//! The dataflow definitions shipped with Starling, as text. Each one runs in a test: the
//! agents in this crate's tests, the Nexmark queries against DuckDB in
//! `bench/tests/nexmark_reference.rs`. The `starling demo` command runs [`SUPPORT_DESK`].
//!
//! To start your own agent, copy `agents/support_desk.yaml` and change the topics, the
//! nodes and the outputs; `docs/definitions.md` describes every field.

/// The support-desk agent: per-user activity per minute, escalations, per-channel counts.
pub const SUPPORT_DESK: &str = include_str!("../agents/support_desk.yaml");

/// The Nexmark benchmark queries (Flink's versions) as Starling definitions, over the topics
/// `person`, `auction` and `bid` that `starling-bench`'s generator fills. Each dataflow is
/// named `nexmark_<query>` and has one output, `out`.
pub mod nexmark {
    /// A query: its short name (`q5`), its definition and the topics it reads.
    pub struct Query {
        /// The name used on the command line (`q0` … `q11`, `tumble`).
        pub name: &'static str,
        /// The definition text (YAML).
        pub definition: &'static str,
        /// The topics it reads, so a runner knows which inputs to end.
        pub topics: &'static [&'static str],
    }

    impl Query {
        /// The installed dataflow's name.
        pub fn dataflow(&self) -> String {
            format!("nexmark_{}", self.name)
        }
    }

    const BID: &[&str] = &["bid"];

    /// Every shipped query, in benchmark order. q6 is left out (as in Flink's benchmark);
    /// `tumble` is not a Nexmark query but the simplest windowed count, run by the peers.
    pub const QUERIES: &[Query] = &[
        Query {
            name: "q0",
            definition: include_str!("../nexmark/q0.yaml"),
            topics: BID,
        },
        Query {
            name: "q1",
            definition: include_str!("../nexmark/q1.yaml"),
            topics: BID,
        },
        Query {
            name: "q2",
            definition: include_str!("../nexmark/q2.yaml"),
            topics: BID,
        },
        Query {
            name: "q3",
            definition: include_str!("../nexmark/q3.yaml"),
            topics: &["person", "auction"],
        },
        Query {
            name: "q4",
            definition: include_str!("../nexmark/q4.yaml"),
            topics: &["auction", "bid"],
        },
        Query {
            name: "q5",
            definition: include_str!("../nexmark/q5.yaml"),
            topics: BID,
        },
        Query {
            name: "q7",
            definition: include_str!("../nexmark/q7.yaml"),
            topics: BID,
        },
        Query {
            name: "q8",
            definition: include_str!("../nexmark/q8.yaml"),
            topics: &["person", "auction"],
        },
        Query {
            name: "q11",
            definition: include_str!("../nexmark/q11.yaml"),
            topics: BID,
        },
        Query {
            name: "tumble",
            definition: include_str!("../nexmark/tumble.yaml"),
            topics: BID,
        },
    ];

    /// The query called `name`, if it is shipped.
    pub fn query(name: &str) -> Option<&'static Query> {
        QUERIES.iter().find(|q| q.name == name)
    }

    /// The names of every shipped query, for error messages.
    pub fn names() -> Vec<&'static str> {
        QUERIES.iter().map(|q| q.name).collect()
    }
}

/// Every shipped agent definition, by file name (the Nexmark queries are in
/// [`nexmark::QUERIES`]).
pub const ALL: &[(&str, &str)] = &[("agents/support_desk.yaml", SUPPORT_DESK)];
