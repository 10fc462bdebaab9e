//! Running a job on this machine: the job master and a task executor, joined by messages.
//!
//! [`run_job`] plans the job, turns the plan into deployment descriptors, and then only
//! carries [`messages`](super::messages) between the [`JobMaster`] and the [`TaskExecutor`]
//! (through a serialization round trip in debug builds), until the master reaches a final
//! state. A failure anywhere cancels the job without drain: every gate is closed (which wakes
//! blocked senders and receivers), and the first failure is reported with the operator and
//! the record at fault. A [`CancelHandle`] (Ctrl-C) cancels with drain: sources stop
//! reading, end-of-stream flows down, and sinks flush and close.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use indexmap::IndexMap;

use super::OperatorError;
use super::descriptor;
pub use super::executor::TestInput;
use super::executor::{ExecutorOptions, TaskExecutor};
use super::master::JobMaster;
use super::messages::{OperatorCounters, ToExecutor, transport};
use crate::plan::{self, PhysicalPlan};
use crate::spec::Validated;

/// Asks a running job to stop cleanly (sources end, sinks flush); usable from any thread.
#[derive(Debug, Clone)]
pub struct CancelHandle(mpsc::Sender<()>);

impl CancelHandle {
    /// Cancels the job with drain (once is enough; later calls do nothing more).
    pub fn cancel(&self) {
        let _ = self.0.send(());
    }
}

/// The receiving end of a [`CancelHandle`], given to [`run_job`] in [`JobOptions::cancel`].
#[derive(Debug)]
pub struct CancelRequests(mpsc::Receiver<()>);

/// A handle to cancel a job and what to pass in [`JobOptions::cancel`].
pub fn cancel_channel() -> (CancelHandle, CancelRequests) {
    let (tx, rx) = mpsc::channel();
    (CancelHandle(tx), CancelRequests(rx))
}

/// A callback receiving live counters.
pub type ProgressFn = Box<dyn FnMut(&[OperatorStats]) + Send>;

/// How to run a job.
pub struct JobOptions {
    /// Bytes each subtask's input gate may hold (shared among its channels).
    pub channel_capacity: usize,
    /// Replace every sink by a capture returned in [`JobResult::captured`].
    pub capture_sinks: bool,
    /// Replace these sources by the given rows (read by subtask 0, in order).
    pub test_inputs: Option<HashMap<String, Vec<TestInput>>>,
    /// Cancel requests (Ctrl-C): the job stops cleanly.
    pub cancel: Option<CancelRequests>,
    /// Called about five times a second with live counters.
    pub on_progress: Option<ProgressFn>,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            channel_capacity: 8 << 20,
            capture_sinks: false,
            test_inputs: None,
            cancel: None,
            on_progress: None,
        }
    }
}

/// Counters of one operator.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OperatorStats {
    /// Operator id.
    pub id: String,
    /// `source`, `transform` or `sink`.
    pub role: &'static str,
    /// Its counters.
    #[serde(flatten)]
    pub counters: OperatorCounters,
}

impl std::ops::Deref for OperatorStats {
    type Target = OperatorCounters;
    fn deref(&self) -> &OperatorCounters {
        &self.counters
    }
}

/// The outcome of a run.
#[derive(Debug)]
pub struct JobResult {
    /// Counters per operator, in plan order.
    pub stats: Vec<OperatorStats>,
    /// Captured rows per sink, when sinks were captured.
    pub captured: IndexMap<String, Vec<RecordBatch>>,
    /// Wall time.
    pub elapsed: Duration,
    /// Whether the run was stopped before its inputs ended.
    pub stopped: bool,
}

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
#[error("operator `{operator}` (subtask {subtask}) failed: {error}")]
pub struct JobError {
    /// The operator at fault.
    pub operator: String,
    /// Its subtask.
    pub subtask: usize,
    /// What happened.
    pub error: OperatorError,
}

fn stats(plan: &PhysicalPlan, counters: &HashMap<String, OperatorCounters>) -> Vec<OperatorStats> {
    plan.operators
        .iter()
        .map(|o| OperatorStats {
            id: o.id.clone(),
            role: o.role,
            counters: counters.get(&o.id).cloned().unwrap_or_default(),
        })
        .collect()
}

/// How long the executor is polled for news before the master looks at cancel requests.
const POLL: Duration = Duration::from_millis(100);

/// How often `on_progress` is called.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Runs a validated spec to completion (or until cancelled) on this machine.
pub fn run_job(v: &Validated, options: JobOptions) -> Result<JobResult, JobError> {
    let started = Instant::now();
    let JobOptions { channel_capacity, capture_sinks, test_inputs, cancel, mut on_progress } = options;
    let plan = plan::build_with(v, test_inputs.is_some());

    // Splits (such as files) are enumerated once per source and dealt round-robin, so every
    // subtask works from the same list.
    let mut splits: HashMap<String, Vec<String>> = HashMap::new();
    if test_inputs.is_none() {
        for (name, src) in &v.pipeline.sources {
            let list = src.get().splits().map_err(|e| JobError { operator: name.clone(), subtask: 0, error: e })?;
            splits.insert(name.clone(), list);
        }
    }
    let descriptors = descriptor::build(v, &plan, &splits)?;

    let mut master = JobMaster::new(1, descriptors);
    let mut executor = TaskExecutor::new(v, ExecutorOptions { channel_capacity, capture_sinks, test_inputs });
    let mut to_executor: VecDeque<ToExecutor> = master.start().into();
    let mut last_progress = Instant::now();
    loop {
        while let Some(m) = to_executor.pop_front() {
            for reply in executor.handle(transport(m)) {
                to_executor.extend(master.on_message(transport(reply)));
            }
        }
        if master.is_terminal() {
            break;
        }
        if cancel.as_ref().is_some_and(|c| c.0.try_recv().is_ok()) {
            to_executor.extend(master.cancel(true));
            continue;
        }
        for report in executor.poll(POLL) {
            to_executor.extend(master.on_message(transport(report)));
        }
        if let Some(cb) = on_progress.as_mut().filter(|_| last_progress.elapsed() >= PROGRESS_EVERY) {
            last_progress = Instant::now();
            cb(&stats(&plan, master.counters()));
        }
    }
    let captured = executor.shutdown();
    if let Some(f) = master.failure() {
        let mut error = f.error.clone();
        let operator = error.operator.take().unwrap_or_default();
        return Err(JobError { operator, subtask: f.subtask.subtask, error });
    }
    Ok(JobResult {
        stats: stats(&plan, master.counters()),
        captured,
        elapsed: started.elapsed(),
        stopped: master.cancelled(),
    })
}
