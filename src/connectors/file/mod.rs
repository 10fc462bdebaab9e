//! The `file` connector: reads CSV, JSON lines and Parquet files from a local path, folder or
//! glob, or under an `s3://` URL, and writes them to a local folder.

use schemars::JsonSchema;
use serde::Deserialize;

mod json_lines;
mod remote;
mod row_groups;
pub mod sink;
pub mod source;
pub mod values;

use super::{Checker, Sink, Source, StateKind, StreamSchema, check_event_time};
use crate::diagnostics::Code;
use crate::runtime::{BuildContext, Operator, OperatorError, Output, SourceEvent, SourceReader};
use crate::spec::values::{ByteSize, ConfigString, Duration, EventTime, Redactor, SchemaDecl, arrow_schema};

/// File formats read and written by the `file` connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet.
    Parquet,
}

impl FileFormat {
    /// The format as written in specs.
    pub fn name(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Jsonl => "jsonl",
            FileFormat::Parquet => "parquet",
        }
    }
}

/// What a source does with a record it cannot read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Stop the job, naming the file, line and record.
    #[default]
    Fail,
    /// Count the record and go on.
    Skip,
    /// Send the raw record and the error to the `dead_letter` stream.
    DeadLetter,
}

/// CSV options.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Whether the first line names the columns (default true).
    #[serde(default = "default_true")]
    pub header: bool,
    /// The field separator, one character (default `,`).
    #[serde(default)]
    #[schemars(length(min = 1, max = 1))]
    pub delimiter: Option<String>,
}

fn default_true() -> bool {
    true
}

/// Reads rows from files.
///
/// ```yaml
/// orders:
///   connector: file
///   path: data/orders/*.csv
///   format: csv
///   schema: { order_id: bigint, amount: double, ts: timestamp }
///   event_time: { column: ts, max_out_of_orderness: 5s }
/// ```
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    /// A file, a folder (every file in it), a glob such as `data/*.csv`, or an `s3://bucket/prefix` URL.
    pub path: ConfigString,
    /// The format of the files.
    pub format: FileFormat,
    /// The columns of each row, in order, with their types.
    pub schema: SchemaDecl,
    /// CSV options, for `format: csv`.
    #[serde(default)]
    pub csv: Option<CsvOptions>,
    /// Keep watching the folder for new files instead of ending after the last one. New
    /// files must appear whole: write them under a name starting with `.` or `_` (skipped)
    /// and rename them when complete.
    #[serde(default)]
    pub watch: bool,
    /// S3 settings for an `s3://` path: region, endpoint, path-style addressing and credentials
    /// (default: the standard AWS environment and credential chain).
    #[serde(default)]
    pub s3: Option<crate::checkpoint::S3Options>,
    /// With `watch`: files last modified longer ago than this are ignored, and forgotten once
    /// read, so the set of files a watching source remembers (and checkpoints) stays bounded
    /// (default 7d).
    #[serde(default)]
    pub forget_after: Option<Duration>,
    /// What to do with a record that cannot be read: `fail` (default), `skip` or `dead_letter`.
    #[serde(default)]
    pub on_error: OnError,
    /// With `on_error: dead_letter`, the name of the stream of unreadable records (columns
    /// `source`, `raw`, `error`, `location`), which a sink can consume.
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// Which column holds event time, and how watermarks follow it.
    #[serde(default)]
    pub event_time: Option<EventTime>,
    /// Subtasks reading files in parallel (default: the pipeline's).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1024))]
    pub parallelism: Option<u32>,
}

impl Source for FileSource {
    fn check(&self, cx: &mut Checker, ptr: &str) -> Option<StreamSchema> {
        if self.csv.is_some() && self.format != FileFormat::Csv {
            cx.error_at_key(Code::InvalidStructure, &format!("{ptr}/csv"), "`csv` options only apply to `format: csv`");
        }
        if let Some(d) = self.csv.as_ref().and_then(|c| c.delimiter.as_deref())
            && (d.len() != 1 || !d.is_ascii() || d == "\n" || d == "\r" || d == "\"")
        {
            cx.error(
                Code::InvalidValue,
                &format!("{ptr}/csv/delimiter"),
                format!("the delimiter {d:?} is not one ASCII character"),
            )
            .help = Some("use one ASCII character other than a quote or line break, such as `;`, `|` or a tab".into());
        }
        if self.schema.is_empty() {
            cx.error(Code::InvalidStructure, &format!("{ptr}/schema"), "the schema declares no columns");
            return None;
        }
        match (self.on_error, &self.dead_letter) {
            (OnError::DeadLetter, None) => {
                cx.error(
                    Code::MissingField,
                    &format!("{ptr}/on_error"),
                    "`on_error: dead_letter` needs `dead_letter: <stream name>`",
                )
                .help = Some("add `dead_letter: bad_records` and a sink reading `bad_records`".into());
            }
            (OnError::Fail | OnError::Skip, Some(_)) => {
                cx.error_at_key(
                    Code::InvalidStructure,
                    &format!("{ptr}/dead_letter"),
                    "`dead_letter` needs `on_error: dead_letter`",
                );
            }
            _ => {}
        }
        let schema = arrow_schema(&self.schema);
        // A wrong event-time column is reported once, here, not again by every window below.
        let event_time = check_event_time(cx, ptr, &schema, self.event_time.as_ref()).ok()?;
        Some(StreamSchema { schema, event_time })
    }

    fn parallelism(&self) -> Option<u32> {
        self.parallelism
    }

    fn state(&self) -> StateKind {
        StateKind::Operator("file splits and read offsets")
    }

    fn event_time(&self) -> Option<&EventTime> {
        self.event_time.as_ref()
    }

    fn dead_letter(&self) -> Option<&str> {
        self.dead_letter.as_deref()
    }

    fn splits(&self) -> Result<Vec<String>, OperatorError> {
        let path = self.path.resolve().map_err(OperatorError::new)?;
        let files =
            source::list_files(&path, &self.path.0, self.s3.as_ref()).map_err(|e| redact(&self.path.redactor(), e))?;
        if files.is_empty() && !self.watch {
            return Err(OperatorError::new(format!("no files match `{}`", self.path.0)));
        }
        Ok(files.into_iter().map(|p| p.to_string_lossy().into_owned()).collect())
    }

    fn reader(&self, ctx: &BuildContext, schema: &StreamSchema) -> Result<Box<dyn SourceReader>, OperatorError> {
        let redactor = self.path.redactor();
        let inner = source::FileReader::new(self, ctx, schema).map_err(|e| redact(&redactor, e))?;
        Ok(Box::new(Redacted { inner, redactor }))
    }

    fn describe(&self) -> String {
        let watch = if self.watch { ", watching" } else { "" };
        format!("file source {:?} ({}{watch})", self.path.0, self.format.name())
    }
}

/// When the file sink starts a new file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rolling {
    /// Start a new file once the current one reaches this size.
    #[serde(default)]
    pub max_size: Option<ByteSize>,
    /// Start a new file after this long.
    #[serde(default)]
    pub interval: Option<Duration>,
}

/// Writes rows to files. Files become visible when the checkpoint that covers them completes.
///
/// ```yaml
/// archive:
///   connector: file
///   input: per_customer
///   path: s3://bucket/archive/
///   format: parquet
///   bucket: "dt=%Y-%m-%d/hour=%H"
/// ```
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSink {
    /// The stream to write.
    pub input: String,
    /// The folder to write into, local or `s3://bucket/prefix`.
    pub path: ConfigString,
    /// The format of the files.
    pub format: FileFormat,
    /// Sub-folders by event time, as a strftime pattern such as `dt=%Y-%m-%d/hour=%H`.
    #[serde(default)]
    pub bucket: Option<String>,
    /// When to start a new file.
    #[serde(default)]
    pub rolling: Option<Rolling>,
    /// Subtasks writing in parallel (default: the pipeline's).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1024))]
    pub parallelism: Option<u32>,
    /// S3 settings for an `s3://` path (default: the standard AWS environment and chain).
    #[serde(default)]
    pub s3: Option<Box<crate::checkpoint::S3Options>>,
}

impl Sink for FileSink {
    fn input(&self) -> &str {
        &self.input
    }

    fn check(&self, cx: &mut Checker, ptr: &str, input: &StreamSchema) {
        if self.format == FileFormat::Csv {
            for f in input.schema.fields() {
                if f.data_type().is_nested() {
                    cx.error(
                        Code::SinkCannotWrite,
                        &format!("{ptr}/format"),
                        format!(
                            "CSV cannot hold column `{}` of type {}",
                            f.name(),
                            crate::plan::type_name(f.data_type())
                        ),
                    )
                    .help = Some(
                        "write `format: jsonl` or `format: parquet`, or flatten the column with a `select`".into(),
                    );
                }
            }
        }
        if let Some(bucket) = &self.bucket {
            if input.event_time.is_none() {
                cx.error(
                    Code::NoEventTime,
                    &format!("{ptr}/bucket"),
                    format!("`bucket` sorts rows into folders by event time, but `{}` has no event time", self.input),
                )
                .help = Some("declare `event_time` on the source, or remove `bucket`".into());
            }
            if let Some(bad) = bad_strftime(bucket) {
                cx.error(Code::InvalidValue, &format!("{ptr}/bucket"), format!("`{bad}` is not a date field")).help =
                    Some("use %Y, %m, %d, %H, %M or %S".into());
            } else if !stays_inside(bucket) {
                cx.error(
                    Code::InvalidValue,
                    &format!("{ptr}/bucket"),
                    format!("`{bucket}` names folders outside the sink's `path`"),
                )
                .help = Some("write relative folders without `..`, such as `dt=%Y-%m-%d/hour=%H`".into());
            }
        }
    }

    fn parallelism(&self) -> Option<u32> {
        self.parallelism
    }

    fn state(&self) -> StateKind {
        StateKind::Operator("in-progress files")
    }

    fn writer(&self, ctx: &BuildContext, input: &StreamSchema) -> Result<Box<dyn Operator>, OperatorError> {
        let redactor = self.path.redactor();
        let inner = sink::FileWriter::new(self, ctx, input).map_err(|e| redact(&redactor, e))?;
        Ok(Box::new(Redacted { inner, redactor }))
    }

    fn recover(&self, name: &str, restored: &[&serde_json::Value]) -> Result<(), OperatorError> {
        let redactor = self.path.redactor();
        let dir = self.path.resolve().map_err(OperatorError::new)?;
        sink::recover(std::path::Path::new(&dir), name, restored, self.s3.as_deref()).map_err(|e| redact(&redactor, e))
    }

    fn describe(&self) -> String {
        let bucket = self.bucket.as_ref().map(|b| format!(", bucket {b}")).unwrap_or_default();
        format!("file sink {:?} ({}{bucket})", self.path.0, self.format.name())
    }
}

/// A reader or writer whose errors, and dead-letter locations, show file paths as the spec
/// writes them (`${env:DIR}/in.csv:3`), never with the resolved values of references, which
/// may also appear inside errors from Arrow, Parquet or the OS.
struct Redacted<T> {
    inner: T,
    redactor: Redactor,
}

fn redact(redactor: &Redactor, mut e: OperatorError) -> OperatorError {
    e.message = redactor.apply(&e.message);
    e
}

impl<T: SourceReader> SourceReader for Redacted<T> {
    fn next(&mut self) -> Result<SourceEvent, OperatorError> {
        match self.inner.next().map_err(|e| redact(&self.redactor, e))? {
            SourceEvent::DeadLetters(batch) => {
                let mut columns = batch.columns().to_vec();
                for name in ["error", "location"] {
                    let i = batch.schema().index_of(name)?;
                    let text = arrow::array::AsArray::as_string::<i32>(batch.column(i));
                    let shown: arrow::array::StringArray =
                        text.iter().map(|v| v.map(|v| self.redactor.apply(v))).collect();
                    columns[i] = std::sync::Arc::new(shown);
                }
                Ok(SourceEvent::DeadLetters(arrow::record_batch::RecordBatch::try_new(batch.schema(), columns)?))
            }
            other => Ok(other),
        }
    }

    fn explicit_watermarks(&self) -> bool {
        self.inner.explicit_watermarks()
    }

    fn exact_watermarks(&self) -> bool {
        self.inner.exact_watermarks()
    }

    fn position(&mut self) -> serde_json::Value {
        self.inner.position()
    }

    fn has_buffered(&self) -> bool {
        self.inner.has_buffered()
    }
}

impl<T: Operator> Operator for Redacted<T> {
    fn process(
        &mut self,
        input: usize,
        batch: arrow::record_batch::RecordBatch,
        out: &mut dyn Output,
    ) -> Result<(), OperatorError> {
        self.inner.process(input, batch, out).map_err(|e| redact(&self.redactor, e))
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut dyn Output) -> Result<(), OperatorError> {
        self.inner.on_watermark(watermark, out).map_err(|e| redact(&self.redactor, e))
    }

    fn on_tick(&mut self, out: &mut dyn Output) -> Result<(), OperatorError> {
        self.inner.on_tick(out).map_err(|e| redact(&self.redactor, e))
    }

    fn snapshot(
        &mut self,
        checkpoint: u64,
        out: &mut dyn Output,
    ) -> Result<crate::checkpoint::OperatorSnapshot, OperatorError> {
        self.inner.snapshot(checkpoint, out).map_err(|e| redact(&self.redactor, e))
    }

    fn checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), OperatorError> {
        self.inner.checkpoint_complete(checkpoint).map_err(|e| redact(&self.redactor, e))
    }

    fn on_end(&mut self, out: &mut dyn Output) -> Result<(), OperatorError> {
        self.inner.on_end(out).map_err(|e| redact(&self.redactor, e))
    }
}

/// Whether a bucket folder (or pattern: date fields expand to digits) stays under the sink's
/// folder: relative, and with no `..` component.
fn stays_inside(bucket: &str) -> bool {
    use std::path::Component;
    !bucket.starts_with(['/', '\\'])
        && std::path::Path::new(bucket).components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && !bucket.split(['/', '\\']).any(|part| part == "..")
}

fn bad_strftime(pattern: &str) -> Option<String> {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('Y' | 'm' | 'd' | 'H' | 'M' | 'S' | '%') => {}
                Some(other) => return Some(format!("%{other}")),
                None => return Some("%".into()),
            }
        }
    }
    None
}
