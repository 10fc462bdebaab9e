//! The `blackhole` connector: counts rows and drops them, for benchmarks and dry runs.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Checker, Sink, StateKind, StreamSchema};

/// Counts and discards every row.
///
/// ```yaml
/// nowhere: { connector: blackhole, input: bids }
/// ```
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlackholeSink {
    /// The stream to discard.
    pub input: String,
    /// Subtasks (default: the pipeline's).
    #[serde(default)]
    #[schemars(range(min = 1, max = 4096))]
    pub parallelism: Option<u32>,
}

impl Sink for BlackholeSink {
    fn input(&self) -> &str {
        &self.input
    }

    fn check(&self, _: &mut Checker, _: &str, _: &StreamSchema) {}

    fn parallelism(&self) -> Option<u32> {
        self.parallelism
    }

    fn state(&self) -> StateKind {
        StateKind::None
    }

    fn describe(&self) -> String {
        "blackhole (counts rows)".into()
    }
}
