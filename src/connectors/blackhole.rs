//! The `blackhole` connector: counts rows and drops them, for benchmarks and dry runs.

use schemars::JsonSchema;
use serde::Deserialize;

use arrow::record_batch::RecordBatch;

use super::{BuildContext, Checker, Operator, OperatorError, Sink, StateKind, StreamSchema};
use crate::runtime::Output;

/// Drops rows; the runtime has already counted them in.
struct Discard;

impl Operator for Discard {
    fn process(&mut self, _: usize, _: RecordBatch, _: &mut dyn Output) -> Result<(), OperatorError> {
        Ok(())
    }
}

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
    #[schemars(range(min = 1, max = 1024))]
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

    fn writer(&self, _: &BuildContext, _: &StreamSchema) -> Result<Box<dyn Operator>, OperatorError> {
        Ok(Box::new(Discard))
    }

    fn describe(&self) -> String {
        "blackhole (counts rows)".into()
    }
}
