//! The task executor: instantiates deployment descriptors into running subtasks (one thread
//! each) and hosts them. It hears from the job master only through [`ToExecutor`] messages and
//! answers only with [`ToMaster`] messages; its subtasks it reaches through their mailboxes
//! and input gates, which live in this process.
//!
//! A subtask's thread reports to the executor when it ends (a panic is a failure like any
//! other); the executor turns that into `Finished` or `Failed`, each preceded by a `Metrics`
//! report, so the master's last counters are final. Cancel without drain also closes every
//! gate, which wakes senders and receivers blocked on a full or empty channel. Checkpoint
//! triggers go to sources, completions to every subtask (sources last); a subtask's snapshot
//! is uploaded on the I/O runtime and acknowledged to the master once stored.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use indexmap::IndexMap;

use super::descriptor::{DeploymentDescriptor, SubtaskId};
use super::gate::{Control, InputGate, Mailbox};
use super::messages::{OperatorCounters, ToExecutor, ToMaster};
use super::partition::{EdgeSender, Target};
use super::task::{InputWatermarks, Node, Report, TaskFailure, WatermarkGen, run_gate, run_source};
use super::{
    BuildContext, Operator, OperatorError, OperatorMetrics, OperatorSnapshot, Output, SourceEvent, SourceReader,
};
use crate::checkpoint::{FileRef, StateHandle};
use crate::spec::Validated;

/// Rows and watermarks given to a source instead of its connector (for `sluice test`).
#[derive(Debug, Clone)]
pub enum TestInput {
    /// Rows.
    Rows(RecordBatch),
    /// A watermark, ms since the epoch.
    Watermark(i64),
}

/// How an executor builds its subtasks.
#[derive(Default)]
pub struct ExecutorOptions {
    /// Bytes each subtask's input gate may hold.
    pub channel_capacity: usize,
    /// Replace every sink by a capture returned by [`TaskExecutor::shutdown`].
    pub capture_sinks: bool,
    /// Replace these sources by the given rows (read by subtask 0, in order).
    pub test_inputs: Option<HashMap<String, Vec<TestInput>>>,
    /// Where checkpoint state is uploaded; `None` without checkpoints.
    pub storage: Option<crate::checkpoint::Storage>,
    /// The checkpoint the job restores from.
    pub restored: Option<Arc<crate::checkpoint::Restored>>,
}

/// How often the executor reports counters.
const METRICS_EVERY: Duration = Duration::from_millis(200);

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

    fn exact_watermarks(&self) -> bool {
        true
    }
}

/// What a subtask's thread (or an upload) tells its executor.
enum SubtaskEvent {
    Ended(SubtaskId, Result<(), TaskFailure>),
    Report(SubtaskId, Report),
    /// A subtask's checkpoint state is stored (or could not be).
    Uploaded(SubtaskId, u64, Result<Vec<StateHandle>, String>),
}

/// A subtask built and ready to start.
struct Built {
    id: SubtaskId,
    nodes: Vec<Node>,
    reader: Option<(Box<dyn SourceReader>, Option<WatermarkGen>)>,
    channels: InputWatermarks,
    /// The flag readers see as [`BuildContext::stop`], raised by the mailbox on cancel.
    stop: Arc<AtomicBool>,
}

/// A hosted subtask's control handles.
struct Hosted {
    mailbox: Arc<Mailbox>,
    gate: Option<Arc<InputGate>>,
    source: bool,
}

/// Stack of each subtask thread.
const SUBTASK_STACK_BYTES: usize = 8 << 20;

/// Hosts the subtasks of one job in this process.
pub struct TaskExecutor<'a> {
    v: &'a Validated,
    options: ExecutorOptions,
    generation: Option<u64>,
    metrics: IndexMap<String, Arc<OperatorMetrics>>,
    captured: IndexMap<String, Arc<Mutex<Vec<RecordBatch>>>>,
    hosted: Vec<Hosted>,
    threads: Vec<JoinHandle<()>>,
    events_tx: mpsc::Sender<SubtaskEvent>,
    events_rx: mpsc::Receiver<SubtaskEvent>,
    last_metrics: Instant,
    /// Where keyed state goes, set up at deployment.
    state: Arc<crate::state::StateEnv>,
    /// Checkpoint folder per checkpoint in flight (`chk-…` or `sp-…`).
    folders: HashMap<u64, String>,
    /// Native snapshot files the latest completed checkpoint (or the restored one) stored, by
    /// key: a checkpoint refers to these instead of uploading them again.
    stored_files: Arc<HashMap<String, FileRef>>,
    /// Native snapshot files of each checkpoint in flight, which become `stored_files` when it
    /// completes.
    pending_files: HashMap<u64, Vec<FileRef>>,
}

/// Stored files that can be referred to again, by their key.
fn by_key(files: impl IntoIterator<Item = FileRef>) -> HashMap<String, FileRef> {
    files.into_iter().filter_map(|f| Some((f.key.clone()?, f))).collect()
}

impl<'a> TaskExecutor<'a> {
    /// An executor for the operators of `v`.
    pub fn new(v: &'a Validated, options: ExecutorOptions) -> Self {
        let (events_tx, events_rx) = mpsc::channel();
        // Files of a checkpoint in this job's storage can be referred to by its next ones; a
        // savepoint's are not (it is the user's to delete: the first checkpoint stands alone).
        let stored_files = match (&options.restored, &options.storage) {
            (Some(r), Some(s)) if r.storage.url() == s.url() && !r.manifest.savepoint => {
                by_key(r.manifest.handles().flat_map(|h| &h.files).cloned())
            }
            _ => HashMap::new(),
        };
        TaskExecutor {
            v,
            options,
            generation: None,
            metrics: IndexMap::new(),
            captured: IndexMap::new(),
            hosted: Vec::new(),
            threads: Vec::new(),
            events_tx,
            events_rx,
            last_metrics: Instant::now(),
            state: crate::state::StateEnv::memory(),
            folders: HashMap::new(),
            stored_files: Arc::new(stored_files),
            pending_files: HashMap::new(),
        }
    }

    /// Handles a message from the master; returns the replies.
    pub fn handle(&mut self, message: ToExecutor) -> Vec<ToMaster> {
        let generation = message.generation();
        match message {
            ToExecutor::Deploy { subtasks, .. } => {
                if let Some(running) = self.generation {
                    // One generation per executor: a restart deploys on a fresh executor.
                    let subtask = subtasks.first().map(|d| d.id).unwrap_or(SubtaskId { task: 0, subtask: 0 });
                    let error = OperatorError::new(format!(
                        "this executor already hosts generation {running}; generation {generation} needs a new one"
                    ));
                    return vec![ToMaster::DeployFailed { generation, subtask, error }];
                }
                self.generation = Some(generation);
                let p = &self.v.pipeline;
                let stateful = subtasks
                    .iter()
                    .filter(|d| {
                        d.chain.iter().any(|id| p.transforms.get(id).is_some_and(|t| !t.get().states().is_empty()))
                    })
                    .count();
                self.state = crate::state::StateEnv::new(&p.name, p.state.as_ref(), stateful);
                let replies = self.deploy(generation, subtasks);
                // Every operator has restored its state: the checkpoint's bytes can go.
                self.options.restored = None;
                replies
            }
            _ if self.generation != Some(generation) => Vec::new(),
            ToExecutor::TriggerCheckpoint { checkpoint, savepoint, stop, .. } => {
                self.folders.insert(checkpoint, crate::checkpoint::Manifest::folder(checkpoint, savepoint));
                for h in self.hosted.iter().filter(|h| h.source) {
                    h.mailbox.post(Control::TriggerCheckpoint { id: checkpoint, stop });
                }
                Vec::new()
            }
            ToExecutor::NotifyCheckpointComplete { checkpoint, .. } => {
                // Later checkpoints refer to what this one stored, unless it is a savepoint.
                let savepoint = self.folders.get(&checkpoint).is_some_and(|f| f.starts_with("sp-"));
                self.folders.retain(|id, _| *id > checkpoint);
                if let Some(files) = self.pending_files.remove(&checkpoint).filter(|_| !savepoint) {
                    self.stored_files = Arc::new(by_key(files));
                }
                self.pending_files.retain(|id, _| *id > checkpoint);
                // Sources last: one that ends on this completion must not reach a sink before
                // the sink has heard of it.
                for h in self.hosted.iter().filter(|h| !h.source).chain(self.hosted.iter().filter(|h| h.source)) {
                    h.mailbox.post(Control::CheckpointComplete(checkpoint));
                }
                Vec::new()
            }
            ToExecutor::Cancel { drain, .. } => {
                self.post(Control::Cancel { drain });
                if !drain {
                    for h in &self.hosted {
                        if let Some(g) = &h.gate {
                            g.close();
                        }
                    }
                }
                Vec::new()
            }
        }
    }

    fn post(&self, control: Control) {
        for h in &self.hosted {
            h.mailbox.post(control.clone());
        }
    }

    fn counters(&self, generation: u64) -> ToMaster {
        let operators = self
            .metrics
            .iter()
            .map(|(id, m)| {
                (
                    id.clone(),
                    OperatorCounters {
                        rows_in: OperatorMetrics::get(&m.rows_in),
                        rows_out: OperatorMetrics::get(&m.rows_out),
                        bytes_read: OperatorMetrics::get(&m.bytes_read),
                        bytes_total: OperatorMetrics::get(&m.bytes_total),
                        bad_records: OperatorMetrics::get(&m.bad_records),
                        late_dropped: OperatorMetrics::get(&m.late_dropped),
                        row_groups_skipped: OperatorMetrics::get(&m.row_groups_skipped),
                    },
                )
            })
            .collect();
        ToMaster::Metrics { generation, operators }
    }

    /// Waits up to `timeout` for news from the subtasks; returns the reports to send.
    pub fn poll(&mut self, timeout: Duration) -> Vec<ToMaster> {
        let Some(generation) = self.generation else {
            std::thread::sleep(timeout);
            return Vec::new();
        };
        let mut out = Vec::new();
        let first = self.events_rx.recv_timeout(timeout).ok();
        let events = first.into_iter().chain(std::iter::from_fn(|| self.events_rx.try_recv().ok())).collect::<Vec<_>>();
        for event in events {
            match event {
                SubtaskEvent::Report(subtask, Report::InputEnded) => {
                    out.push(ToMaster::InputEnded { generation, subtask });
                }
                SubtaskEvent::Report(subtask, Report::Snapshot { checkpoint, states }) => {
                    self.upload(subtask, checkpoint, states);
                }
                SubtaskEvent::Uploaded(subtask, checkpoint, Ok(states)) => {
                    let files = states.iter().flat_map(|s| &s.files).cloned();
                    self.pending_files.entry(checkpoint).or_default().extend(files);
                    out.push(ToMaster::CheckpointAcknowledged { generation, subtask, checkpoint, states });
                }
                SubtaskEvent::Uploaded(subtask, checkpoint, Err(reason)) => {
                    out.push(ToMaster::CheckpointDeclined { generation, subtask, checkpoint, reason });
                }
                SubtaskEvent::Ended(subtask, result) => {
                    out.push(self.counters(generation));
                    self.last_metrics = Instant::now();
                    out.push(match result {
                        Ok(()) => ToMaster::Finished { generation, subtask },
                        Err(f) => {
                            let mut error = f.error;
                            error.operator = Some(f.operator);
                            ToMaster::Failed { generation, subtask, error }
                        }
                    });
                }
            }
        }
        if self.last_metrics.elapsed() >= METRICS_EVERY {
            self.last_metrics = Instant::now();
            out.push(self.counters(generation));
        }
        out
    }

    /// Stores a subtask's snapshot: blobs are uploaded on the I/O runtime, and the result
    /// comes back as an event, so neither the subtask nor the executor waits for storage.
    fn upload(&mut self, subtask: SubtaskId, checkpoint: u64, states: Vec<(String, OperatorSnapshot)>) {
        let tx = self.events_tx.clone();
        let folder = self.folders.get(&checkpoint).cloned().unwrap_or_else(|| format!("chk-{checkpoint:010}"));
        let storage = self.options.storage.clone();
        let generation = self.generation.unwrap_or(1);
        // A savepoint stores the files of every subtask that snapshots for it itself (a subtask
        // that had already finished is in it with what an earlier checkpoint stored).
        let stored = if folder.starts_with("sp-") { Arc::default() } else { self.stored_files.clone() };
        let job = async move {
            let mut handles = Vec::with_capacity(states.len());
            for (operator, snap) in states {
                let mut files = Vec::new();
                if let (Some(native), Some(storage)) = (&snap.native, &storage) {
                    for f in &native.files {
                        if let Some(r) = f.key.as_ref().and_then(|k| stored.get(k)) {
                            files.push(FileRef { file: f.name.clone(), ..r.clone() });
                            continue;
                        }
                        let name = format!("{folder}/{operator}-{}-g{generation}/{}", subtask.subtask, f.name);
                        crate::checkpoint::crash_point("upload");
                        let (size, xxh64) =
                            storage.put_file(&name, &native.dir.join(&f.name)).await.map_err(|e| e.0)?;
                        files.push(FileRef { file: f.name.clone(), key: f.key.clone(), name, size, xxh64 });
                    }
                }
                drop(snap.native);
                let blob = match (snap.blob, &storage) {
                    (Some(bytes), Some(storage)) => {
                        // The attempt is in the name: a run fenced off by a newer one cannot overwrite its state.
                        let name = format!("{folder}/{operator}-{}-g{generation}.state", subtask.subtask);
                        let sealed = crate::checkpoint::seal(&bytes);
                        let size = sealed.len() as u64;
                        crate::checkpoint::crash_point("upload");
                        storage.put_async(&name, sealed).await.map_err(|e| e.0)?;
                        Some(crate::checkpoint::BlobRef { name, size })
                    }
                    _ => None,
                };
                if blob.is_some() || !snap.meta.is_null() || !files.is_empty() {
                    handles.push(StateHandle { operator, subtask: subtask.subtask, meta: snap.meta, blob, files });
                }
            }
            Ok(handles)
        };
        crate::checkpoint::storage::runtime().spawn(async move {
            let result = job.await;
            let _ = tx.send(SubtaskEvent::Uploaded(subtask, checkpoint, result));
        });
    }

    /// Waits for every subtask's thread to end; returns the captured rows per sink.
    pub fn shutdown(mut self) -> IndexMap<String, Vec<RecordBatch>> {
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        std::mem::take(&mut self.captured)
            .into_iter()
            .map(|(k, v)| (k, std::mem::take(&mut *v.lock().unwrap_or_else(|e| e.into_inner()))))
            .collect()
    }

    /// Builds every subtask before starting any, so a build error leaves nothing running.
    fn deploy(&mut self, generation: u64, subtasks: Vec<DeploymentDescriptor>) -> Vec<ToMaster> {
        let p = &self.v.pipeline;
        for d in &subtasks {
            for id in &d.chain {
                self.metrics.entry(id.clone()).or_default();
            }
        }
        let gates: HashMap<SubtaskId, Arc<InputGate>> = subtasks
            .iter()
            .filter(|d| !p.sources.contains_key(&d.chain[0]))
            .map(|d| (d.id, InputGate::new(d.inputs.len(), self.options.channel_capacity)))
            .collect();
        let mut built = Vec::new();
        for d in subtasks {
            match self.build(&d, &gates) {
                Ok(b) => built.push(b),
                Err((operator, mut error)) => {
                    error.operator = Some(operator);
                    return vec![ToMaster::DeployFailed { generation, subtask: d.id, error }];
                }
            }
        }
        let mut out = Vec::new();
        for b in built {
            let id = b.id;
            let gate = gates.get(&id).cloned();
            let mailbox = Arc::new(Mailbox::new(gate.clone(), b.stop.clone()));
            self.hosted.push(Hosted { mailbox: mailbox.clone(), gate: gate.clone(), source: b.reader.is_some() });
            match self.start(b, gate, mailbox) {
                Ok(handle) => {
                    self.threads.push(handle);
                    out.push(ToMaster::Running { generation, subtask: id });
                }
                Err(error) => {
                    // Stop what already started before reporting.
                    self.handle(ToExecutor::Cancel { generation, drain: false });
                    for t in self.threads.drain(..) {
                        let _ = t.join();
                    }
                    while self.events_rx.try_recv().is_ok() {}
                    return vec![ToMaster::DeployFailed { generation, subtask: id, error }];
                }
            }
        }
        out
    }

    fn start(
        &self,
        b: Built,
        gate: Option<Arc<InputGate>>,
        mailbox: Arc<Mailbox>,
    ) -> Result<JoinHandle<()>, OperatorError> {
        let Built { id, mut nodes, reader, mut channels, .. } = b;
        let tx = self.events_tx.clone();
        let head = nodes[0].id.clone();
        let checkpointing = self.options.storage.is_some();
        std::thread::Builder::new()
            .name(format!("{head}#{}", id.subtask))
            // Expressions evaluate recursively (up to the validated size limit), as on the
            // main thread: give subtasks the main thread's stack, reserved, not committed.
            .stack_size(SUBTASK_STACK_BYTES)
            .spawn(move || {
                let reports = tx.clone();
                let mut report = move |r| {
                    let _ = reports.send(SubtaskEvent::Report(id, r));
                };
                // A panic is a failure like any other: report it, so the job stops instead of
                // waiting forever for this subtask.
                let run = std::panic::AssertUnwindSafe(|| match (reader, gate) {
                    (Some((r, wm_gen)), _) => run_source(r, &mut nodes, wm_gen, &mailbox, &mut report, checkpointing),
                    (None, Some(g)) => run_gate(&g, &mailbox, &mut report, &mut channels, &mut nodes),
                    (None, None) => Ok(()),
                });
                let result = std::panic::catch_unwind(run).unwrap_or_else(|panic| {
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
                let _ = tx.send(SubtaskEvent::Ended(id, result));
            })
            .map_err(|e| OperatorError::new(format!("cannot start a thread: {e}")))
    }

    /// Instantiates one descriptor; an error names the operator at fault.
    fn build(
        &mut self,
        d: &DeploymentDescriptor,
        gates: &HashMap<SubtaskId, Arc<InputGate>>,
    ) -> Result<Built, (String, OperatorError)> {
        let v = self.v;
        let p = &v.pipeline;
        let s = d.id.subtask;
        let mut nodes = Vec::new();
        let mut reader = None;
        let stop = Arc::new(AtomicBool::new(false));
        for (i, id) in d.chain.iter().enumerate() {
            let ctx = BuildContext {
                operator: id.clone(),
                subtask: s,
                parallelism: d.parallelism,
                metrics: self.metrics[id].clone(),
                stop: stop.clone(),
                splits: if i == 0 { d.splits.clone() } else { Vec::new() },
                all_splits: if i == 0 { d.all_splits.clone() } else { Vec::new() },
                state: self.state.clone(),
                key_groups: crate::state::key_group_range(s as u32, p.key_groups(), d.parallelism as u32),
                max_parallelism: p.key_groups(),
                read_columns: if i == 0 { d.source_columns.clone() } else { None },
                skips: if i == 0 { d.source_skips.clone() } else { None },
                restored: self.options.restored.clone(),
                checkpointing: self.options.storage.is_some(),
                generation: self.generation.unwrap_or(1),
            };
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
                let r: Box<dyn SourceReader> = match self.options.test_inputs.as_mut() {
                    Some(inputs) => {
                        let events = if s == 0 { inputs.remove(id).unwrap_or_default() } else { Vec::new() };
                        Box::new(TestReader { events: events.into_iter() })
                    }
                    None => src.get().reader(&ctx, schema).map_err(|e| (id.clone(), e))?,
                };
                reader = Some((r, wm_gen));
                Box::new(Passthrough)
            } else if let Some(tr) = p.transforms.get(id) {
                let c = tr.get();
                // A head whose input edge prunes columns sees only those.
                let pruned: Vec<Option<crate::spec::check::StreamSchema>> = c
                    .inputs()
                    .iter()
                    .enumerate()
                    .map(|(k, (n, _))| {
                        let columns = d.input_columns.get(k).cloned().flatten().filter(|_| i == 0)?;
                        Some(v.streams[*n].schema.project(&columns))
                    })
                    .collect::<Vec<_>>();
                let inputs: Vec<(&str, &crate::spec::check::StreamSchema)> = c
                    .inputs()
                    .iter()
                    .zip(&pruned)
                    .map(|((n, _), pruned)| (*n, pruned.as_ref().unwrap_or(&v.streams[*n].schema)))
                    .collect();
                c.operator(&ctx, &inputs, &v.streams[id].schema).map_err(|e| (id.clone(), e))?
            } else {
                let sink = p.sinks.get(id).expect("operators are sources, transforms or sinks");
                if self.options.capture_sinks {
                    Box::new(Capture(self.captured.entry(id.clone()).or_default().clone()))
                } else {
                    let input = &v.streams[sink.get().input()].schema;
                    sink.get().writer(&ctx, input).map_err(|e| (id.clone(), e))?
                }
            };
            let is_tail = i + 1 == d.chain.len();
            let outputs = if is_tail {
                d.outputs
                    .iter()
                    .map(|(_, edges)| {
                        edges
                            .iter()
                            .map(|e| {
                                let targets = e
                                    .consumers
                                    .iter()
                                    .map(|a| Target { gate: gates[&a.consumer].clone(), channel: a.channel })
                                    .collect();
                                EdgeSender::new(e.partitioner.clone(), targets, s).with_projection(e.projection.clone())
                            })
                            .collect()
                    })
                    .collect()
            } else {
                Vec::new()
            };
            nodes.push(Node { id: id.clone(), op, outputs, metrics: self.metrics[id].clone() });
        }
        let channels = InputWatermarks::new(d.inputs.iter().map(|c| c.input));
        Ok(Built { id: d.id, nodes, reader, channels, stop })
    }
}

impl Drop for TaskExecutor<'_> {
    /// An executor dropped with subtasks still running stops them.
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.post(Control::Cancel { drain: false });
            for h in &self.hosted {
                if let Some(g) = &h.gate {
                    g.close();
                }
            }
        }
    }
}
