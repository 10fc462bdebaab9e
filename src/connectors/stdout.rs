//! The `stdout` connector: prints rows, as a table or as JSON lines.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Checker, Sink, StateKind, StreamSchema};

/// How `stdout` prints rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StdoutFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// An aligned text table per batch.
    Table,
}

/// Prints every row it receives.
///
/// ```yaml
/// late: { connector: stdout, input: late_orders, format: table }
/// ```
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutSink {
    /// The stream to print.
    pub input: String,
    /// `json` (default) or `table`.
    #[serde(default)]
    pub format: StdoutFormat,
    /// Subtasks printing in parallel (default 1).
    #[serde(default)]
    #[schemars(range(min = 1, max = 4096))]
    pub parallelism: Option<u32>,
}

impl Sink for StdoutSink {
    fn input(&self) -> &str {
        &self.input
    }

    fn check(&self, _: &mut Checker, _: &str, _: &StreamSchema) {}

    fn parallelism(&self) -> Option<u32> {
        Some(self.parallelism.unwrap_or(1))
    }

    fn state(&self) -> StateKind {
        StateKind::None
    }

    fn describe(&self) -> String {
        format!("stdout ({:?})", self.format).to_lowercase()
    }
}
