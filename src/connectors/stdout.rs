//! The `stdout` connector: prints rows, as a table or as JSON lines.

use schemars::JsonSchema;
use serde::Deserialize;

use std::io::Write;

use arrow::record_batch::RecordBatch;

use super::{BuildContext, Checker, Operator, OperatorError, Sink, StateKind, StreamSchema};
use crate::runtime::Output;

/// Prints batches; a closed stdout ends printing quietly.
struct StdoutWriter {
    format: StdoutFormat,
    closed: bool,
}

impl Operator for StdoutWriter {
    fn process(&mut self, _: usize, batch: RecordBatch, _: &mut dyn Output) -> Result<(), OperatorError> {
        if self.closed {
            return Ok(());
        }
        super::file::values::check_printable(&batch)?;
        let mut buf = Vec::new();
        match self.format {
            StdoutFormat::Json => {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
                w.write(&batch)?;
                w.finish()?;
            }
            StdoutFormat::Table => {
                writeln!(buf, "{}", arrow::util::pretty::pretty_format_batches(&[batch])?)?;
            }
        }
        let mut out = std::io::stdout().lock();
        match out.write_all(&buf).and_then(|_| out.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => self.closed = true,
            other => other?,
        }
        Ok(())
    }
}

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
    #[schemars(range(min = 1, max = 1024))]
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

    fn writer(&self, _: &BuildContext, _: &StreamSchema) -> Result<Box<dyn Operator>, OperatorError> {
        Ok(Box::new(StdoutWriter { format: self.format, closed: false }))
    }

    fn describe(&self) -> String {
        format!("stdout ({:?})", self.format).to_lowercase()
    }
}
