//! The controller (job master) for one process: builds every subtask of the physical plan,
//! wires their channels, starts them on threads, watches them and ends the run.
//!
//! Subtasks report through [`TaskEvent`]s over a channel: plain data that a later worker
//! process can send over the network instead. A failure anywhere stops the job: the stop
//! flag is raised, every queue is closed (which wakes blocked senders and receivers), and
//! the first failure is reported with the operator and the record at fault. Ctrl-C raises
//! the same stop flag without a failure: sources stop reading, end-of-stream flows down, and
//! sinks flush and close.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use indexmap::IndexMap;

use super::channel::Queue;
use super::partition::{Partitioner, RemoteEdge, Target};
use super::task::{InputWatermarks, Node, TaskFailure, WatermarkGen, run_queue, run_source};
use super::{BuildContext, Operator, OperatorError, OperatorMetrics, Output, SourceEvent, SourceReader};
use crate::plan::{self, Partitioning, PhysicalPlan};
use crate::spec::Validated;

/// What a subtask tells the controller.
#[derive(Debug)]
pub enum TaskEvent {
    /// The subtask finished normally.
    Finished {
        /// Task id.
        task: usize,
        /// Subtask index.
        subtask: usize,
    },
    /// The subtask failed.
    Failed {
        /// Task id.
        task: usize,
        /// Subtask index.
        subtask: usize,
        /// The operator at fault.
        operator: String,
        /// What happened.
        error: OperatorError,
    },
}

/// Rows and watermarks given to a source instead of its connector (for `sluice test`).
#[derive(Debug, Clone)]
pub enum TestInput {
    /// Rows.
    Rows(RecordBatch),
    /// A watermark, ms since the epoch.
    Watermark(i64),
}

/// A callback receiving live counters.
pub type ProgressFn = Box<dyn FnMut(&[OperatorStats]) + Send>;

/// How to run a job.
pub struct JobOptions {
    /// Bytes each subtask's inbound queue may hold.
    pub channel_capacity: usize,
    /// Replace every sink by a capture returned in [`JobResult::captured`].
    pub capture_sinks: bool,
    /// Replace these sources by the given rows (read by subtask 0, in order).
    pub test_inputs: Option<HashMap<String, Vec<TestInput>>>,
    /// Raised to stop the job cleanly (Ctrl-C).
    pub stop: Arc<AtomicBool>,
    /// Called about five times a second with live counters.
    pub on_progress: Option<ProgressFn>,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            channel_capacity: 8 << 20,
            capture_sinks: false,
            test_inputs: None,
            stop: Arc::new(AtomicBool::new(false)),
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
    /// Rows in.
    pub rows_in: u64,
    /// Rows out.
    pub rows_out: u64,
    /// Bytes read (sources).
    pub bytes_read: u64,
    /// Bytes to read in all, when known (sources).
    pub bytes_total: u64,
    /// Records skipped or dead-lettered.
    pub bad_records: u64,
    /// Late rows dropped.
    pub late_dropped: u64,
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

struct Passthrough;

impl Operator for Passthrough {
    fn process(&mut self, _: usize, batch: RecordBatch, out: &mut dyn Output) -> Result<(), OperatorError> {
        out.emit(batch)
    }
}

struct Capture(Arc<Mutex<Vec<RecordBatch>>>);

impl Operator for Capture {
    fn process(&mut self, _: usize, batch: RecordBatch, _: &mut dyn Output) -> Result<(), OperatorError> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(batch);
        Ok(())
    }
}

struct TestReader {
    events: std::vec::IntoIter<TestInput>,
}

impl SourceReader for TestReader {
    fn next(&mut self) -> Result<SourceEvent, OperatorError> {
        Ok(match self.events.next() {
            Some(TestInput::Rows(b)) => SourceEvent::Batch(b),
            Some(TestInput::Watermark(w)) => SourceEvent::Watermark(w),
            None => SourceEvent::End,
        })
    }

    fn explicit_watermarks(&self) -> bool {
        true
    }
}

fn stats(plan: &PhysicalPlan, metrics: &HashMap<String, Arc<OperatorMetrics>>) -> Vec<OperatorStats> {
    plan.operators
        .iter()
        .map(|o| {
            let m = &metrics[&o.id];
            OperatorStats {
                id: o.id.clone(),
                role: o.role,
                rows_in: OperatorMetrics::get(&m.rows_in),
                rows_out: OperatorMetrics::get(&m.rows_out),
                bytes_read: OperatorMetrics::get(&m.bytes_read),
                bytes_total: OperatorMetrics::get(&m.bytes_total),
                bad_records: OperatorMetrics::get(&m.bad_records),
                late_dropped: OperatorMetrics::get(&m.late_dropped),
            }
        })
        .collect()
}

fn build_error(operator: &str, subtask: usize, e: OperatorError) -> JobError {
    JobError { operator: operator.to_string(), subtask, error: e }
}

fn nodes_head(plan: &PhysicalPlan, task: usize) -> String {
    plan.tasks.iter().find(|t| t.id == task).map(|t| t.operators[0].clone()).unwrap_or_default()
}

/// Runs a validated spec to completion (or until stopped) on this machine.
pub fn run_job(v: &Validated, mut options: JobOptions) -> Result<JobResult, JobError> {
    let started = Instant::now();
    let p = &v.pipeline;
    let plan = plan::build_with(v, options.test_inputs.is_some());
    let metrics: HashMap<String, Arc<OperatorMetrics>> =
        plan.operators.iter().map(|o| (o.id.clone(), Arc::new(OperatorMetrics::default()))).collect();
    let par: HashMap<&str, usize> = plan.operators.iter().map(|o| (o.id.as_str(), o.parallelism as usize)).collect();

    // One queue per subtask of every task whose head is not a source.
    let mut queues: HashMap<(usize, usize), Arc<Queue>> = HashMap::new();
    for t in &plan.tasks {
        let head = &t.operators[0];
        if !p.sources.contains_key(head) {
            for s in 0..t.parallelism as usize {
                queues.insert((t.id, s), Queue::new(options.channel_capacity));
            }
        }
    }
    let task_of: HashMap<&str, usize> = plan.operators.iter().map(|o| (o.id.as_str(), o.task)).collect();

    // Inbound channels per consumer subtask (the input each feeds), and the target each
    // producer subtask sends to.
    let mut channels: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
    let mut targets: HashMap<(usize, usize), Vec<Target>> = HashMap::new(); // (edge index, producer subtask)
    for (ei, e) in plan.edges.iter().filter(|e| !e.chained).enumerate() {
        let input = input_index(v, &e.to, &e.stream);
        let consumer_task = task_of[e.to.as_str()];
        for u in 0..par[e.from.as_str()] {
            let mut list = Vec::new();
            for s in 0..par[e.to.as_str()] {
                let chans = channels.entry((consumer_task, s)).or_default();
                let id = chans.len();
                chans.push(input);
                list.push(Target { queue: queues[&(consumer_task, s)].clone(), channel: id });
            }
            targets.insert((ei, u), list);
        }
    }
    let remote: Vec<&plan::Edge> = plan.edges.iter().filter(|e| !e.chained).collect();

    let mut captured: IndexMap<String, Arc<Mutex<Vec<RecordBatch>>>> = IndexMap::new();
    let mut test_inputs = options.test_inputs.take();

    // Splits (such as files) are enumerated once per source and dealt round-robin, so every
    // subtask works from the same list.
    let mut splits: HashMap<&str, Vec<String>> = HashMap::new();
    if test_inputs.is_none() {
        for (name, src) in &p.sources {
            splits.insert(name, src.get().splits().map_err(|e| build_error(name, 0, e))?);
        }
    }

    let stateful: usize = plan
        .operators
        .iter()
        .filter(|o| o.state.as_ref().is_some_and(|s| s.kind == "keyed"))
        .map(|o| o.parallelism as usize)
        .sum();
    let state = crate::state::StateEnv::new(&p.name, p.state.as_ref(), stateful);

    // Build every subtask before starting any, so a build error leaves nothing running.
    let mut subtasks = Vec::new();
    for t in &plan.tasks {
        for s in 0..t.parallelism as usize {
            let mut nodes = Vec::new();
            let mut reader: Option<(Box<dyn SourceReader>, Option<WatermarkGen>)> = None;
            for (i, id) in t.operators.iter().enumerate() {
                let op_meta = plan.operators.iter().find(|o| &o.id == id).expect("operator");
                let parallelism = op_meta.parallelism as usize;
                let ctx = BuildContext {
                    operator: id.clone(),
                    subtask: s,
                    parallelism,
                    metrics: metrics[id].clone(),
                    stop: options.stop.clone(),
                    splits: splits
                        .get(id.as_str())
                        .map(|all| all.iter().skip(s).step_by(parallelism).cloned().collect())
                        .unwrap_or_default(),
                    all_splits: splits.get(id.as_str()).cloned().unwrap_or_default(),
                    state: state.clone(),
                    key_groups: crate::state::key_group_range(s as u32, plan.max_parallelism, parallelism as u32),
                    max_parallelism: plan.max_parallelism,
                };
                // Output streams of this operator: main first, then side outputs in order.
                let mut streams = vec![id.clone()];
                let op: Box<dyn Operator> = if let Some(src) = p.sources.get(id) {
                    let schema = &v.streams[id].schema;
                    let wm_gen = src.get().event_time().and_then(|et| {
                        let column = schema.schema.index_of(&et.column).ok()?;
                        Some(WatermarkGen {
                            column,
                            out_of_orderness: et.max_out_of_orderness.map_or(0, |d| d.as_millis_i64()),
                            idle_timeout: et.idle_timeout.map(|d| d.0),
                        })
                    });
                    let r: Box<dyn SourceReader> = match test_inputs.as_mut() {
                        Some(inputs) => {
                            let events = if s == 0 { inputs.remove(id).unwrap_or_default() } else { Vec::new() };
                            Box::new(TestReader { events: events.into_iter() })
                        }
                        None => src.get().reader(&ctx, schema).map_err(|e| build_error(id, s, e))?,
                    };
                    reader = Some((r, wm_gen));
                    streams.extend(src.get().dead_letter().map(str::to_string));
                    Box::new(Passthrough)
                } else if let Some(tr) = p.transforms.get(id) {
                    let c = tr.get();
                    let inputs: Vec<(&str, &crate::spec::check::StreamSchema)> =
                        c.inputs().iter().map(|(n, _)| (*n, &v.streams[*n].schema)).collect();
                    streams.extend(c.side_outputs().iter().map(|(n, _)| n.to_string()));
                    c.operator(&ctx, &inputs, &v.streams[id].schema).map_err(|e| build_error(id, s, e))?
                } else {
                    let sink = p.sinks.get(id).expect("operators are sources, transforms or sinks");
                    if options.capture_sinks {
                        let store = captured.entry(id.clone()).or_default().clone();
                        Box::new(Capture(store))
                    } else {
                        let input = &v.streams[sink.get().input()].schema;
                        sink.get().writer(&ctx, input).map_err(|e| build_error(id, s, e))?
                    }
                };
                let is_tail = i + 1 == t.operators.len();
                let outputs = streams
                    .iter()
                    .map(|stream| {
                        if !is_tail {
                            return Vec::new();
                        }
                        remote
                            .iter()
                            .enumerate()
                            .filter(|(_, e)| &e.from == id && &e.stream == stream)
                            .map(|(ei, e)| {
                                let partitioner = partitioner(e, &v.streams[stream].schema.schema, p.key_groups());
                                RemoteEdge::new(partitioner, targets[&(ei, s)].clone(), s)
                            })
                            .collect()
                    })
                    .collect();
                nodes.push(Node { id: id.clone(), op, outputs, metrics: metrics[id].clone() });
            }
            let queue = queues.get(&(t.id, s)).cloned();
            let chans = InputWatermarks::new(channels.remove(&(t.id, s)).unwrap_or_default());
            subtasks.push((t.id, s, nodes, reader, queue, chans));
        }
    }

    let (events_tx, events_rx) = mpsc::channel::<TaskEvent>();
    let mut threads = Vec::new();
    for (task, s, mut nodes, reader, queue, mut chans) in subtasks {
        let tx = events_tx.clone();
        let stop = options.stop.clone();
        let head = nodes[0].id.clone();
        let spawned = std::thread::Builder::new().name(format!("{head}#{s}")).spawn(move || {
            // A panic is a failure like any other: report it, so the job stops instead of
            // waiting forever for this subtask.
            let run = std::panic::AssertUnwindSafe(|| match (reader, queue) {
                (Some((r, wm_gen)), _) => run_source(r, &mut nodes, wm_gen, &stop),
                (None, Some(q)) => run_queue(&q, &mut chans, &mut nodes),
                (None, None) => Ok(()),
            });
            let result: Result<(), TaskFailure> = std::panic::catch_unwind(run).unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(TaskFailure {
                    operator: head,
                    error: OperatorError::new(format!("internal error (panic): {what}")),
                })
            });
            let event = match result {
                Ok(()) => TaskEvent::Finished { task, subtask: s },
                Err(f) => TaskEvent::Failed { task, subtask: s, operator: f.operator, error: f.error },
            };
            let _ = tx.send(event);
        });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                // Stop what already started before reporting.
                options.stop.store(true, Ordering::SeqCst);
                for q in queues.values() {
                    q.close();
                }
                for t in threads {
                    let _ = t.join();
                }
                return Err(JobError {
                    operator: nodes_head(&plan, task),
                    subtask: s,
                    error: OperatorError::new(format!("cannot start a thread: {e}")),
                });
            }
        }
    }
    drop(events_tx);

    let total = threads.len();
    let mut finished = 0;
    let mut failure: Option<JobError> = None;
    while finished < total {
        match events_rx.recv_timeout(Duration::from_millis(200)) {
            Ok(TaskEvent::Finished { .. }) => finished += 1,
            Ok(TaskEvent::Failed { subtask, operator, error, .. }) => {
                finished += 1;
                // The first failure is the cause; the rest are subtasks told to stop.
                if failure.is_none() {
                    failure = Some(JobError { operator, subtask, error });
                    options.stop.store(true, Ordering::SeqCst);
                    for q in queues.values() {
                        q.close();
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(cb) = options.on_progress.as_mut() {
                    cb(&stats(&plan, &metrics));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for t in threads {
        let _ = t.join();
    }
    if let Some(f) = failure {
        return Err(f);
    }
    let captured = captured
        .into_iter()
        .map(|(k, v)| (k, std::mem::take(&mut *v.lock().unwrap_or_else(|e| e.into_inner()))))
        .collect();
    Ok(JobResult {
        stats: stats(&plan, &metrics),
        captured,
        elapsed: started.elapsed(),
        stopped: options.stop.load(Ordering::SeqCst),
    })
}

/// Which input of operator `to` the stream `stream` feeds.
fn input_index(v: &Validated, to: &str, stream: &str) -> usize {
    v.pipeline.transforms.get(to).and_then(|t| t.get().inputs().iter().position(|(n, _)| *n == stream)).unwrap_or(0)
}

fn partitioner(e: &plan::Edge, schema: &arrow::datatypes::Schema, max_parallelism: u32) -> Partitioner {
    match &e.partitioning {
        Partitioning::Forward => Partitioner::Forward,
        Partitioning::Rebalance => Partitioner::Rebalance,
        Partitioning::Global => Partitioner::Global,
        Partitioning::Broadcast => Partitioner::Broadcast,
        Partitioning::Hash { key } => {
            Partitioner::Hash { columns: key.iter().filter_map(|k| schema.index_of(k).ok()).collect(), max_parallelism }
        }
    }
}
