//! The engine on one machine: subtasks, their input gates, watermarks, and the job master and
//! task executor that run them.
//!
//! The physical plan is what runs. Each task (a chain of operators joined by forward edges)
//! runs as `parallelism` subtasks, each on its own thread; rows travel as Arrow record
//! batches. A subtask reads an [`gate::InputGate`] with one bounded queue per upstream
//! subtask, so a full or blocked channel backpressures only its own producer; watermarks,
//! idleness, checkpoint barriers and end-of-stream travel in band, in order with the data. A subtask's watermark
//! is the minimum over its active input channels; idle channels do not hold it back, ended
//! channels drop out. Every subtask polls a control mailbox between batches.
//!
//! Control is by messages only: [`controller::run_job`] turns the plan into serializable
//! [`descriptor`]s, and the [`master`] (a state machine) and the [`executor`] (which
//! instantiates descriptors and hosts subtasks) exchange [`messages`], each stamped with the
//! job generation.
//!
//! | file            | what                                                        |
//! |-----------------|-------------------------------------------------------------|
//! | `controller.rs` | `run_job`: plan → descriptors → master ⇄ executor           |
//! | `master.rs`     | the job master state machine                                |
//! | `executor.rs`   | the task executor: builds and hosts subtasks                |
//! | `messages.rs`   | master ⇄ executor messages                                  |
//! | `descriptor.rs` | deployment descriptors                                      |
//! | `gate.rs`       | input gates (a queue per channel) and control mailboxes     |
//! | `task.rs`       | one subtask's loop; watermark tracking per channel          |
//! | `partition.rs`  | sending along an edge: forward, hash, rebalance, broadcast  |
//! | `expr.rs`       | SQL expressions compiled once, evaluated per batch          |

pub mod controller;
pub mod descriptor;
pub mod executor;
pub mod expr;
pub mod gate;
pub mod master;
pub mod messages;
pub mod partition;
pub mod task;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::record_batch::RecordBatch;

pub use controller::{JobOptions, JobResult, run_job};

/// The watermark that ends event time: every window fires.
pub const MAX_WATERMARK: i64 = i64::MAX;

/// What travels between subtasks.
#[derive(Debug, Clone)]
pub enum Message {
    /// Rows.
    Batch(RecordBatch),
    /// No row with event time at or before this (ms since the epoch) will follow.
    Watermark(i64),
    /// The producer has no data for now; do not wait for its watermark.
    Idle,
    /// The producer is done.
    End,
    /// Checkpoint barrier `n`: everything before it belongs to checkpoint `n`.
    Barrier(u64),
}

impl Message {
    /// Approximate bytes the message holds, for channel capacity.
    pub fn size(&self) -> usize {
        match self {
            Message::Batch(b) => b.get_array_memory_size().max(64),
            _ => 16,
        }
    }
}

/// What kind of failure an error is, for restart strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorDomain {
    /// The data is at fault: a retry reads the same record and fails the same way.
    BadData,
    /// An outside system (file system, network, remote service) failed.
    External,
    /// Sluice itself (a bug, a panic, a job being stopped).
    Internal,
}

/// An error inside an operator, with the record at fault when there is one.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{message}{}", record.as_ref().map(|r| format!(" (record: {r})")).unwrap_or_default())]
pub struct OperatorError {
    /// What went wrong.
    pub message: String,
    /// The offending record, shortened, when known.
    pub record: Option<String>,
    /// The operator it happened in, once known.
    pub operator: Option<String>,
    /// What kind of failure it is.
    pub domain: ErrorDomain,
    /// Whether running again may succeed (read by restart strategies).
    pub retryable: bool,
}

impl OperatorError {
    /// An internal error without a record, not retryable.
    pub fn new(message: impl Into<String>) -> Self {
        OperatorError {
            message: message.into(),
            record: None,
            operator: None,
            domain: ErrorDomain::Internal,
            retryable: false,
        }
    }

    /// An error of an outside system; `retryable` when trying again may succeed.
    pub fn external(message: impl Into<String>, retryable: bool) -> Self {
        OperatorError { domain: ErrorDomain::External, retryable, ..OperatorError::new(message) }
    }

    /// An outside system's I/O error about `what` (such as "cannot create folder `x`"),
    /// retryable unless trying again cannot help.
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        OperatorError { message: format!("{what}: {e}"), ..OperatorError::from(e) }
    }

    /// An error about one record (bad data, not retryable).
    pub fn with_record(message: impl Into<String>, record: impl Into<String>) -> Self {
        let mut record: String = record.into();
        if record.len() > 300 {
            let mut cut = 300;
            while !record.is_char_boundary(cut) {
                cut -= 1;
            }
            record.truncate(cut);
            record.push('…');
        }
        OperatorError { record: Some(record), domain: ErrorDomain::BadData, ..OperatorError::new(message) }
    }

    /// The same error in another domain.
    pub fn in_domain(self, domain: ErrorDomain, retryable: bool) -> Self {
        OperatorError { domain, retryable, ..self }
    }
}

impl From<arrow::error::ArrowError> for OperatorError {
    fn from(e: arrow::error::ArrowError) -> Self {
        use arrow::error::ArrowError as A;
        let domain = match &e {
            A::CastError(_) | A::ParseError(_) | A::ArithmeticOverflow(_) | A::DivideByZero => ErrorDomain::BadData,
            A::IoError(..) => ErrorDomain::External,
            _ => ErrorDomain::Internal,
        };
        OperatorError::new(e.to_string()).in_domain(domain, domain == ErrorDomain::External)
    }
}

impl From<datafusion::error::DataFusionError> for OperatorError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        let domain = match e.find_root() {
            D::ArrowError(a, _)
                if matches!(
                    **a,
                    arrow::error::ArrowError::CastError(_)
                        | arrow::error::ArrowError::ParseError(_)
                        | arrow::error::ArrowError::ArithmeticOverflow(_)
                        | arrow::error::ArrowError::DivideByZero
                ) =>
            {
                ErrorDomain::BadData
            }
            D::Execution(_) => ErrorDomain::BadData,
            D::IoError(_) => ErrorDomain::External,
            _ => ErrorDomain::Internal,
        };
        OperatorError::new(crate::spec::check::clean(&e)).in_domain(domain, domain == ErrorDomain::External)
    }
}

impl From<std::io::Error> for OperatorError {
    /// An outside system's error; retryable unless trying again cannot help (missing file,
    /// no permission, invalid input).
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let permanent = matches!(
            e.kind(),
            K::NotFound
                | K::PermissionDenied
                | K::InvalidInput
                | K::InvalidData
                | K::Unsupported
                | K::AlreadyExists
                | K::NotADirectory
                | K::IsADirectory
                | K::ReadOnlyFilesystem
                | K::InvalidFilename
        );
        OperatorError::external(e.to_string(), !permanent)
    }
}

/// Where an operator sends what it produces.
pub trait Output {
    /// Sends rows to the main output.
    fn emit(&mut self, batch: RecordBatch) -> Result<(), OperatorError>;
    /// Sends rows to side output `index` (1-based; 0 is the main output).
    fn emit_side(&mut self, index: usize, batch: RecordBatch) -> Result<(), OperatorError>;
}

/// An operator running inside a subtask. Only `process` is required.
pub trait Operator: Send {
    /// Handles rows arriving on input `input` (0 unless the operator has several inputs).
    fn process(&mut self, input: usize, batch: RecordBatch, out: &mut dyn Output) -> Result<(), OperatorError>;

    /// Called when the subtask's watermark advances, before it is passed downstream.
    fn on_watermark(&mut self, _watermark: i64, _out: &mut dyn Output) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Called about once a second while no input arrives, for work driven by processing
    /// time (such as closing files after their rolling interval).
    fn on_tick(&mut self, _out: &mut dyn Output) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Called once when every input has ended, before end-of-stream is passed downstream.
    fn on_end(&mut self, _out: &mut dyn Output) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Called at barrier `checkpoint`, before it is passed on: returns what restoring needs
    /// (see [`BuildContext::restored`]). Rows it emits go out before the barrier. A sink
    /// pre-commits here (what it wrote becomes durable but not yet visible).
    fn snapshot(&mut self, _checkpoint: u64, _out: &mut dyn Output) -> Result<OperatorSnapshot, OperatorError> {
        Ok(OperatorSnapshot::default())
    }

    /// Checkpoint `checkpoint` is complete everywhere: a sink commits what it pre-committed
    /// up to it. Must be idempotent.
    fn checkpoint_complete(&mut self, _checkpoint: u64) -> Result<(), OperatorError> {
        Ok(())
    }
}

pub use crate::checkpoint::OperatorSnapshot;

/// What a source subtask's reader produces next.
#[derive(Debug)]
pub enum SourceEvent {
    /// Rows.
    Batch(RecordBatch),
    /// Records that could not be read, as dead-letter rows (see [`dead_letter_schema`]).
    DeadLetters(RecordBatch),
    /// An explicit watermark (test sources).
    Watermark(i64),
    /// Nothing right now; ask again (the reader has waited a little).
    Pending,
    /// The input is exhausted.
    End,
}

/// Reads one source subtask's share of the input.
pub trait SourceReader: Send {
    /// The next event.
    fn next(&mut self) -> Result<SourceEvent, OperatorError>;
    /// Whether the reader emits its own watermarks ([`SourceEvent::Watermark`]) instead of
    /// having them generated from the event-time column.
    fn explicit_watermarks(&self) -> bool {
        false
    }
    /// Whether every watermark the reader gives must reach downstream as given (the watermarks
    /// a `sluice test` writes); otherwise a source sends its watermark at most every
    /// [`task::WATERMARK_INTERVAL`], as Flink's periodic watermarks do.
    fn exact_watermarks(&self) -> bool {
        false
    }
    /// Where the reader is, for a checkpoint: read back through [`BuildContext::restored`]
    /// by the reader of a restored job. Taken only when [`SourceReader::has_buffered`] is false.
    fn position(&mut self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Whether the reader holds events already read (so a position now would skip them).
    fn has_buffered(&self) -> bool {
        false
    }
}

/// Counters of one operator across its subtasks, read live by the controller.
#[derive(Debug, Default)]
pub struct OperatorMetrics {
    /// Rows received.
    pub rows_in: AtomicU64,
    /// Rows sent on (all outputs).
    pub rows_out: AtomicU64,
    /// Bytes read from outside (sources).
    pub bytes_read: AtomicU64,
    /// Bytes the source will read in all, when known.
    pub bytes_total: AtomicU64,
    /// Records that could not be read (skipped or dead-lettered).
    pub bad_records: AtomicU64,
    /// Rows too late for their window and not sent to a late output.
    pub late_dropped: AtomicU64,
    /// Parquet row groups not read because no consumer could use a row of them.
    pub row_groups_skipped: AtomicU64,
}

impl OperatorMetrics {
    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Everything a component needs to build its runtime part for one subtask.
pub struct BuildContext {
    /// The operator's id (spec name).
    pub operator: String,
    /// This subtask's index.
    pub subtask: usize,
    /// Subtasks of this operator.
    pub parallelism: usize,
    /// The operator's counters.
    pub metrics: Arc<OperatorMetrics>,
    /// Raised when this subtask is cancelled (by its mailbox), for a reader that waits
    /// inside `next` and wants to return early.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// For sources: this subtask's share of the splits (such as files), dealt round-robin.
    pub splits: Vec<String>,
    /// For sources: every split enumerated at the start, so a subtask knows what others own.
    pub all_splits: Vec<String>,
    /// Where keyed state goes; stateful operators open their backend from it.
    pub state: Arc<crate::state::StateEnv>,
    /// The key groups this subtask owns, `[start, end)`.
    pub key_groups: std::ops::Range<u16>,
    /// The job's number of key groups.
    pub max_parallelism: u32,
    /// For sources: the columns some consumer reads, when that is fewer than all; a source
    /// may leave the others null (they must be nullable) instead of decoding them.
    pub read_columns: Option<Vec<String>>,
    /// For sources: per consumer, comparisons every row it uses meets; a source may skip
    /// blocks of rows where each consumer has one that statistics prove false.
    pub skips: Option<Vec<Vec<crate::plan::predicate::ColumnBound>>>,
    /// The checkpoint the job restores from, if any: operators take their state from it.
    pub restored: Option<Arc<crate::checkpoint::Restored>>,
    /// Whether the job takes checkpoints (sinks then commit only on checkpoint completion).
    pub checkpointing: bool,
    /// The job attempt: unique across attempts on the same checkpoint storage.
    pub generation: u64,
}

impl BuildContext {
    /// What each subtask of this operator stored in the restored checkpoint: inline state
    /// and blob, in old-subtask order; empty without one.
    pub fn restored_state(&self) -> Vec<(&serde_json::Value, Option<&[u8]>)> {
        self.restored.as_ref().map(|r| r.operator(&self.operator)).unwrap_or_default()
    }

    /// Opens this subtask's keyed state with the states `descriptors` declares, holding what
    /// the restored checkpoint's native snapshots (RocksDB files) have in its key groups.
    pub fn open_state(
        &self,
        descriptors: Vec<crate::state::backend::StateDescriptor>,
    ) -> Result<Box<dyn crate::state::backend::StateBackend>, OperatorError> {
        if let Some(r) = &self.restored
            && r.staged.is_none()
            && r.manifest.operator(&self.operator).is_some_and(|o| o.subtasks.iter().any(|s| !s.files.is_empty()))
        {
            return Err(OperatorError::new(format!(
                "the state files of `{}` in {} were not fetched",
                self.operator, r.location
            )));
        }
        let parts = self.restored.as_ref().map(|r| r.native_parts(&self.operator)).unwrap_or_default();
        Ok(self.state.open_restored(&self.operator, self.subtask, descriptors, self.key_groups.clone(), &parts)?)
    }
}

#[cfg(test)]
impl BuildContext {
    /// Subtask 0 of 1 of `operator`, owning every one of `max_parallelism` key groups, with
    /// memory state: for tests that build an operator outside a job.
    pub fn local(operator: &str, max_parallelism: u32) -> Self {
        BuildContext {
            operator: operator.into(),
            subtask: 0,
            parallelism: 1,
            metrics: Default::default(),
            stop: Default::default(),
            splits: Vec::new(),
            all_splits: Vec::new(),
            state: crate::state::StateEnv::memory(),
            key_groups: 0..max_parallelism as u16,
            max_parallelism,
            read_columns: None,
            skips: None,
            restored: None,
            checkpointing: false,
            generation: 1,
        }
    }
}

/// The schema of dead-letter streams: which source, the raw record, why, and where.
pub fn dead_letter_schema() -> arrow::datatypes::SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema};
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
    ]))
}
