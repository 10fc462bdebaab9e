//! One subtask: a chain of operators on one thread, fed by a source reader or by its input
//! gate, sending what its last operator produces along the outgoing edges. Between batches it
//! reads its control mailbox.
//!
//! Watermarks: a gate-fed subtask keeps the last watermark of every inbound channel; its
//! own watermark is the minimum over channels that are neither idle nor ended, and it is
//! passed down the chain (each operator's `on_watermark` first) only when it advances. A
//! source subtask generates watermarks from its event-time column: the largest event time
//! seen, less the allowed out-of-orderness, less 1 ms; it reports itself idle after
//! `idle_timeout` without rows, and sends the final watermark when its input is exhausted
//! (not when the job is stopped, so windows are not closed early).
//!
//! Checkpoints: a source snapshots its reader's position when its mailbox asks and sends
//! barrier `n` in band; a gate-fed subtask aligns barriers (see [`run_gate`]); either then
//! snapshots every operator of its chain in order, passes the barrier on and reports the
//! snapshot to its executor, which stores it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, TimestampMillisecondArray};
use arrow::compute::kernels::aggregate::max;
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;

use super::gate::{Control, InputGate, Mailbox};
use super::partition::EdgeSender;
use super::{
    MAX_WATERMARK, Message, Operator, OperatorError, OperatorMetrics, OperatorSnapshot, Output, SourceEvent,
    SourceReader,
};

/// One operator of a chain with where its outputs go when they leave the chain.
pub struct Node {
    /// The operator's id.
    pub id: String,
    /// The operator.
    pub op: Box<dyn Operator>,
    /// Per output (0 main, then side outputs): the edges it feeds. A node followed by
    /// another in the chain sends its main output there instead.
    pub outputs: Vec<Vec<EdgeSender>>,
    /// Counters.
    pub metrics: Arc<OperatorMetrics>,
}

struct NodeOutput<'a> {
    rest: &'a mut [Node],
    outputs: &'a mut Vec<Vec<EdgeSender>>,
    metrics: &'a OperatorMetrics,
}

impl Output for NodeOutput<'_> {
    fn emit(&mut self, batch: RecordBatch) -> Result<(), OperatorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        OperatorMetrics::add(&self.metrics.rows_out, batch.num_rows() as u64);
        if !self.rest.is_empty() {
            return deliver(self.rest, 0, batch);
        }
        if let Some(edges) = self.outputs.get_mut(0) {
            for e in edges.iter_mut() {
                e.send_batch(batch.clone())?;
            }
        }
        Ok(())
    }

    fn emit_side(&mut self, index: usize, batch: RecordBatch) -> Result<(), OperatorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        OperatorMetrics::add(&self.metrics.rows_out, batch.num_rows() as u64);
        if let Some(edges) = self.outputs.get_mut(index) {
            for e in edges.iter_mut() {
                e.send_batch(batch.clone())?;
            }
        }
        Ok(())
    }
}

/// Why a subtask stopped early.
#[derive(Debug)]
pub struct TaskFailure {
    /// The operator that failed.
    pub operator: String,
    /// What happened.
    pub error: OperatorError,
}

/// Attributes `error` to the innermost operator it passed through.
fn fail(node: &Node, error: OperatorError) -> TaskFailure {
    fail_id(&node.id, error)
}

/// Attributes `error` to the innermost operator it passed through, else to operator `id`.
fn fail_id(id: &str, mut error: OperatorError) -> TaskFailure {
    let operator = error.operator.take().unwrap_or_else(|| id.to_string());
    TaskFailure { operator, error }
}

fn tag(id: &str, mut e: OperatorError) -> OperatorError {
    if e.operator.is_none() {
        e.operator = Some(id.to_string());
    }
    e
}

/// Hands `batch` to the first node of `nodes`.
fn deliver(nodes: &mut [Node], input: usize, batch: RecordBatch) -> Result<(), OperatorError> {
    let (first, rest) = nodes.split_first_mut().expect("a chain has nodes");
    OperatorMetrics::add(&first.metrics.rows_in, batch.num_rows() as u64);
    let mut out = NodeOutput { rest, outputs: &mut first.outputs, metrics: &first.metrics };
    first.op.process(input, batch, &mut out).map_err(|e| tag(&first.id, e))
}

/// A step applied to every operator of a chain.
type NodeStep<'a> = dyn FnMut(&mut dyn Operator, &mut dyn Output) -> Result<(), OperatorError> + 'a;

/// Runs `f` on the chain's nodes in order, attributing an error to the node at fault.
fn each_node(nodes: &mut [Node], f: &mut NodeStep<'_>, after_tail: Option<Message>) -> Result<(), TaskFailure> {
    for i in 0..nodes.len() {
        let (head, rest) = nodes.split_at_mut(i + 1);
        let node = &mut head[i];
        let mut out = NodeOutput { rest, outputs: &mut node.outputs, metrics: &node.metrics };
        if let Err(e) = f(node.op.as_mut(), &mut out) {
            // Errors from a later node surface through `deliver`; find the real culprit.
            return Err(fail(node, e));
        }
    }
    let tail = nodes.last_mut().expect("a chain has nodes");
    let Some(message) = after_tail else {
        // A tick: rows waiting in coalescing buffers go out.
        for edges in &mut tail.outputs {
            for e in edges.iter_mut() {
                e.flush().map_err(|e| fail_id(&tail.id, e))?;
            }
        }
        return Ok(());
    };
    for edges in &mut tail.outputs {
        for e in edges.iter_mut() {
            e.broadcast(message.clone()).map_err(|e| fail_id(&tail.id, e))?;
        }
    }
    Ok(())
}

fn watermark(nodes: &mut [Node], w: i64) -> Result<(), TaskFailure> {
    each_node(nodes, &mut |op, out| op.on_watermark(w, out), Some(Message::Watermark(w)))
}

fn end(nodes: &mut [Node]) -> Result<(), TaskFailure> {
    each_node(nodes, &mut |op, out| op.on_end(out), Some(Message::End))
}

fn idle(nodes: &mut [Node]) -> Result<(), TaskFailure> {
    each_node(nodes, &mut |_, _| Ok(()), Some(Message::Idle))
}

fn tick(nodes: &mut [Node]) -> Result<(), TaskFailure> {
    each_node(nodes, &mut |op, out| op.on_tick(out), None)
}

/// How often subtasks tick (busy or not).
const TICK: Duration = Duration::from_secs(1);

/// Messages a subtask takes from its input gate under one lock.
const INBOX: usize = 32;

/// How often a source sends its watermark downstream when it advances (Flink's default
/// periodic watermark interval). Between watermarks the rows of many batches travel
/// together: a hash edge coalesces them into full batches.
pub const WATERMARK_INTERVAL: Duration = Duration::from_millis(200);

/// Watermark generation at a source.
pub struct WatermarkGen {
    /// Index of the event-time column.
    pub column: usize,
    /// Allowed out-of-orderness, ms.
    pub out_of_orderness: i64,
    /// Report idle after this long without rows.
    pub idle_timeout: Option<Duration>,
}

/// The largest event time in `batch[column]`, in ms.
pub fn max_event_time(batch: &RecordBatch, column: usize) -> Option<i64> {
    let col = batch.column(column);
    match col.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            max(col.as_any().downcast_ref::<TimestampMillisecondArray>().expect("ms timestamps"))
        }
        _ => None,
    }
}

/// What the mailbox asks of a subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mail {
    Continue,
    /// Cancel with drain: sources end their input.
    Drain,
    /// Cancel without drain.
    Abort,
}

/// What a subtask tells its executor about checkpoints.
#[derive(Debug)]
pub enum Report {
    /// The chain's state at barrier `checkpoint`, per operator id (head first).
    Snapshot {
        /// Checkpoint id.
        checkpoint: u64,
        /// Per operator of the chain.
        states: Vec<(String, OperatorSnapshot)>,
    },
    /// A source read all its input (with checkpoints, it ends after the next one completes).
    InputEnded,
}

/// Checkpoint requests read from the mailbox and not yet acted on.
#[derive(Debug, Default)]
struct Requests {
    /// Triggers (sources): id and whether to stop after it.
    triggers: VecDeque<(u64, bool)>,
    /// Checkpoints completed.
    completed: Vec<u64>,
}

/// Reads every pending control message.
fn read_mail(mailbox: &Mailbox, requests: &mut Requests) -> Mail {
    let mut mail = Mail::Continue;
    while let Some(c) = mailbox.poll() {
        match c {
            Control::TriggerCheckpoint { id, stop } => requests.triggers.push_back((id, stop)),
            Control::CheckpointComplete(id) => requests.completed.push(id),
            Control::Cancel { drain: true } => mail = Mail::Drain,
            Control::Cancel { drain: false } => return Mail::Abort,
        }
    }
    mail
}

fn cancelled(nodes: &[Node]) -> TaskFailure {
    fail(&nodes[0], OperatorError::new("the job is stopping"))
}

/// Snapshots every operator of the chain at barrier `checkpoint`, in order, then sends the
/// barrier on; `head` replaces the head's inline state (a source's position).
fn snapshot(
    nodes: &mut [Node],
    checkpoint: u64,
    head: Option<serde_json::Value>,
) -> Result<Vec<(String, OperatorSnapshot)>, TaskFailure> {
    let mut snaps = Vec::with_capacity(nodes.len());
    each_node(
        nodes,
        &mut |op, out| {
            snaps.push(op.snapshot(checkpoint, out)?);
            Ok(())
        },
        Some(Message::Barrier(checkpoint)),
    )?;
    let mut states: Vec<(String, OperatorSnapshot)> = nodes.iter().map(|n| n.id.clone()).zip(snaps).collect();
    if let Some(position) = head {
        states[0].1.meta = position;
    }
    Ok(states)
}

/// Tells every operator of the chain that checkpoints `completed` are complete.
fn complete(nodes: &mut [Node], completed: &mut Vec<u64>) -> Result<(), TaskFailure> {
    for id in completed.drain(..) {
        for n in nodes.iter_mut() {
            n.op.checkpoint_complete(id).map_err(|e| fail(n, e))?;
        }
    }
    Ok(())
}

/// Runs a source subtask: reads until the input ends or a cancel arrives in `mailbox`.
///
/// With `checkpointing`, a trigger in the mailbox makes it snapshot its reader's position
/// and send the barrier (after events the reader holds already read); at the end of input it
/// sends the final watermark, reports it, and ends only once a checkpoint taken after that
/// completes, so what the end produced is committed. A trigger with `stop` (a savepoint)
/// makes it read no further and end, without the final watermark, once that completes.
pub fn run_source(
    mut reader: Box<dyn SourceReader>,
    nodes: &mut [Node],
    wm_gen: Option<WatermarkGen>,
    mailbox: &Mailbox,
    report: &mut dyn FnMut(Report),
    checkpointing: bool,
) -> Result<(), TaskFailure> {
    let mut current = i64::MIN;
    let mut last_data = Instant::now();
    let mut last_tick = Instant::now();
    let mut is_idle = false;
    let explicit = reader.explicit_watermarks();
    let exact = reader.exact_watermarks();
    // The watermark reached but not yet sent, and when one was last sent.
    let mut pending: Option<i64> = None;
    let mut last_sent = Instant::now();
    let mut requests = Requests::default();
    // All input read (with checkpoints: waiting for a checkpoint to complete before ending).
    let mut input_ended = false;
    // Reading stopped for a savepoint.
    let mut paused = false;
    // End once a checkpoint at or after this one completes.
    let mut end_after: Option<u64> = None;
    loop {
        match read_mail(mailbox, &mut requests) {
            Mail::Continue => {}
            Mail::Drain => return end(nodes),
            Mail::Abort => return Err(cancelled(nodes)),
        }
        let done = requests.completed.iter().max().copied();
        complete(nodes, &mut requests.completed)?;
        if let (Some(done), Some(after)) = (done, end_after)
            && done >= after
        {
            return end(nodes);
        }
        if let Some(&(id, stop)) = requests.triggers.front()
            && (input_ended || paused || !reader.has_buffered())
        {
            requests.triggers.pop_front();
            let position = reader.position();
            let states = snapshot(nodes, id, Some(position))?;
            report(Report::Snapshot { checkpoint: id, states });
            if input_ended || stop {
                end_after = Some(id);
                paused |= stop;
            }
            continue;
        }
        if input_ended || paused {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        if let Some(w) = pending.filter(|_| last_sent.elapsed() >= WATERMARK_INTERVAL) {
            pending = None;
            last_sent = Instant::now();
            watermark(nodes, w)?;
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            tick(nodes)?;
        }
        let event = reader.next().map_err(|e| fail(&nodes[0], e))?;
        // Exact watermarks (a test's) go out as given, right after the rows before them.
        if exact && let Some(w) = pending.take() {
            last_sent = Instant::now();
            watermark(nodes, w)?;
        }
        match event {
            SourceEvent::Batch(batch) => {
                last_data = Instant::now();
                if is_idle {
                    is_idle = false;
                }
                let next_wm = match (&wm_gen, explicit) {
                    (Some(g), false) => {
                        max_event_time(&batch, g.column).map(|m| m.saturating_sub(g.out_of_orderness).saturating_sub(1))
                    }
                    _ => None,
                };
                deliver(nodes, 0, batch).map_err(|e| fail(&nodes[0], e))?;
                if let Some(w) = next_wm.filter(|w| *w > current) {
                    current = w;
                    pending = Some(w);
                }
            }
            SourceEvent::DeadLetters(batch) => {
                let node = &mut nodes[0];
                let (first, rest) = std::slice::from_mut(node).split_first_mut().expect("node");
                let mut out = NodeOutput { rest, outputs: &mut first.outputs, metrics: &first.metrics };
                out.emit_side(1, batch).map_err(|e| fail(&nodes[0], e))?;
            }
            SourceEvent::Watermark(w) => {
                if w > current {
                    current = w;
                    pending = Some(w);
                }
            }
            SourceEvent::Pending => {
                // Nothing to read for now: what was reached goes out at once.
                if let Some(w) = pending.take() {
                    last_sent = Instant::now();
                    watermark(nodes, w)?;
                }
                let timeout = wm_gen.as_ref().and_then(|g| g.idle_timeout);
                if !is_idle && timeout.is_some_and(|t| last_data.elapsed() >= t) {
                    is_idle = true;
                    idle(nodes)?;
                }
            }
            SourceEvent::End => {
                if current < MAX_WATERMARK || pending.is_some() {
                    current = MAX_WATERMARK;
                    pending = None;
                    watermark(nodes, MAX_WATERMARK)?;
                }
                if !checkpointing {
                    return end(nodes);
                }
                // Rows waiting in coalescing buffers go out before the final checkpoint's barrier.
                tick(nodes)?;
                input_ended = true;
                report(Report::InputEnded);
            }
        }
    }
}

/// What a gate-fed subtask knows of one inbound channel.
#[derive(Debug, Clone, Copy)]
struct ChannelState {
    watermark: i64,
    /// Which input of the head operator the channel feeds.
    input: u32,
    idle: bool,
    ended: bool,
}

/// The watermarks of a gate-fed subtask's inbound channels and their combined minimum, kept
/// up to date message by message: a message costs O(log distinct watermarks), not a rescan
/// of every channel (with p upstream subtasks each sending to p downstream ones, a rescan
/// per message made control traffic cost p³).
#[derive(Debug)]
pub struct InputWatermarks {
    channels: Vec<ChannelState>,
    /// Active (neither idle nor ended) channels per watermark.
    active: BTreeMap<i64, u32>,
    active_count: usize,
    ended_count: usize,
}

impl InputWatermarks {
    /// Channels feeding the head operator's inputs `inputs[channel]`, all active, with no
    /// watermark yet.
    pub fn new(inputs: impl IntoIterator<Item = usize>) -> Self {
        let channels: Vec<ChannelState> = inputs
            .into_iter()
            .map(|input| ChannelState { watermark: i64::MIN, input: input as u32, idle: false, ended: false })
            .collect();
        let n = channels.len();
        let active = if n == 0 { BTreeMap::new() } else { BTreeMap::from([(i64::MIN, n as u32)]) };
        InputWatermarks { channels, active, active_count: n, ended_count: 0 }
    }

    /// Number of channels.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether there are no channels.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The head operator's input that `channel` feeds.
    pub fn input(&self, channel: usize) -> usize {
        self.channels[channel].input as usize
    }

    fn is_active(c: &ChannelState) -> bool {
        !c.idle && !c.ended
    }

    fn remove_active(&mut self, w: i64) {
        if let std::collections::btree_map::Entry::Occupied(mut e) = self.active.entry(w) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        self.active_count -= 1;
    }

    fn add_active(&mut self, w: i64) {
        *self.active.entry(w).or_insert(0) += 1;
        self.active_count += 1;
    }

    /// Rows arrived on `channel`: it is no longer idle.
    pub fn on_data(&mut self, channel: usize) {
        let c = self.channels[channel];
        if c.idle && !c.ended {
            self.channels[channel].idle = false;
            self.add_active(c.watermark);
        }
    }

    /// `channel` sent watermark `w`: it is no longer idle, and its watermark never goes back.
    pub fn on_watermark(&mut self, channel: usize, w: i64) {
        let c = self.channels[channel];
        if c.ended {
            return;
        }
        let next = c.watermark.max(w);
        if Self::is_active(&c) {
            if next == c.watermark {
                return;
            }
            self.remove_active(c.watermark);
        }
        self.channels[channel].idle = false;
        self.channels[channel].watermark = next;
        self.add_active(next);
    }

    /// `channel` reported itself idle.
    pub fn on_idle(&mut self, channel: usize) {
        let c = self.channels[channel];
        if Self::is_active(&c) {
            self.remove_active(c.watermark);
        }
        self.channels[channel].idle = true;
    }

    /// `channel` ended.
    pub fn on_end(&mut self, channel: usize) {
        let c = self.channels[channel];
        if c.ended {
            return;
        }
        if Self::is_active(&c) {
            self.remove_active(c.watermark);
        }
        self.channels[channel].ended = true;
        self.ended_count += 1;
    }

    /// The combined watermark: the minimum over active channels; `None` while none is active.
    /// (Exhausted inputs sent the final watermark before ending; stopped ones did not, and
    /// their open windows must stay open, so idle or ended everywhere holds.)
    pub fn combined(&self) -> Option<i64> {
        self.active.first_key_value().map(|(w, _)| *w)
    }

    /// Whether some channel is neither idle nor ended.
    pub fn any_active(&self) -> bool {
        self.active_count > 0
    }

    /// Whether `channel` has ended.
    pub fn is_ended(&self, channel: usize) -> bool {
        self.channels[channel].ended
    }

    /// Whether every channel has ended.
    pub fn all_ended(&self) -> bool {
        self.ended_count == self.channels.len()
    }
}

/// Runs a subtask fed by `gate` until every channel has ended (or a cancel without drain
/// arrives in `mailbox`; with drain, the subtask goes on until its inputs end).
///
/// Barriers are aligned: a channel that delivered barrier `n` is blocked until every channel
/// that has not ended has delivered it too; then the chain snapshots, the barrier goes on,
/// and the channels are unblocked.
pub fn run_gate(
    gate: &InputGate,
    mailbox: &Mailbox,
    report: &mut dyn FnMut(Report),
    channels: &mut InputWatermarks,
    nodes: &mut [Node],
) -> Result<(), TaskFailure> {
    let mut current = i64::MIN;
    // Whether this subtask's consumers take it for idle: it said so (all its inputs are) and
    // has sent neither rows nor a watermark since.
    let mut idle_sent = false;
    let mut last_tick = Instant::now();
    let mut requests = Requests::default();
    if channels.is_empty() {
        return end(nodes);
    }
    // The barrier being aligned and which channels delivered it (those are blocked).
    let mut aligning: Option<(u64, Vec<bool>)> = None;
    // Messages taken from the gate and not yet handled.
    let mut inbox = std::collections::VecDeque::with_capacity(INBOX);
    loop {
        if read_mail(mailbox, &mut requests) == Mail::Abort {
            return Err(cancelled(nodes));
        }
        requests.triggers.clear();
        complete(nodes, &mut requests.completed)?;
        // Ticks come on time under load too: they flush coalesced rows and roll files.
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            tick(nodes)?;
        }
        if inbox.is_empty() && gate.recv_many(TICK.saturating_sub(last_tick.elapsed()), INBOX, &mut inbox).is_err() {
            return Err(cancelled(nodes));
        }
        let Some((from, message)) = inbox.pop_front() else {
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                tick(nodes)?;
            }
            continue;
        };
        match message {
            Message::Batch(batch) => {
                channels.on_data(from);
                idle_sent = false;
                deliver(nodes, channels.input(from), batch).map_err(|e| fail(&nodes[0], e))?;
                continue;
            }
            Message::Watermark(w) => channels.on_watermark(from, w),
            Message::Idle => channels.on_idle(from),
            Message::End => channels.on_end(from),
            Message::Barrier(n) => {
                match &aligning {
                    Some((id, _)) if n < *id => continue,
                    Some((id, _)) if n == *id => {}
                    _ => {
                        // A newer barrier: the old alignment is abandoned.
                        for c in 0..channels.len() {
                            gate.unblock(c);
                        }
                        aligning = Some((n, vec![false; channels.len()]));
                    }
                }
                let (_, arrived) = aligning.as_mut().expect("aligning");
                arrived[from] = true;
                gate.block(from);
            }
        }
        if let Some((n, arrived)) = &aligning
            && (0..channels.len()).all(|c| arrived[c] || channels.is_ended(c))
        {
            let n = *n;
            aligning = None;
            let states = snapshot(nodes, n, None)?;
            report(Report::Snapshot { checkpoint: n, states });
            for c in 0..channels.len() {
                gate.unblock(c);
            }
        }
        if let Some(w) = channels.combined().filter(|w| *w > current) {
            current = w;
            idle_sent = false;
            watermark(nodes, w)?;
        }
        if channels.all_ended() {
            // Completions posted before the inputs ended are acted on before the end.
            if read_mail(mailbox, &mut requests) == Mail::Abort {
                return Err(cancelled(nodes));
            }
            complete(nodes, &mut requests.completed)?;
            return end(nodes);
        }
        // Idle inputs everywhere: pass idleness on, so consumers stop waiting for us too
        // (once; and not after the final watermark, which holds nothing back).
        if !channels.any_active() && !idle_sent && current < MAX_WATERMARK {
            idle_sent = true;
            idle(nodes)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::partition::{Partitioner, Target};
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn combined_watermark_ignores_idle_and_ended_channels() {
        let mut c = InputWatermarks::new([0, 0, 1]);
        c.on_watermark(0, 10);
        c.on_watermark(1, 5);
        c.on_watermark(2, 7);
        assert_eq!(c.combined(), Some(5));
        c.on_idle(1);
        assert_eq!(c.combined(), Some(7));
        c.on_end(2);
        assert_eq!(c.combined(), Some(10));
        c.on_idle(0);
        assert_eq!(c.combined(), None);
        assert!(!c.any_active());
        c.on_data(1);
        assert_eq!(c.combined(), Some(5), "rows from an idle channel make it count again");
        c.on_end(0);
        c.on_end(1);
        assert_eq!(c.combined(), None);
        assert!(c.all_ended());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Data(usize),
        Watermark(usize, i64),
        Idle(usize),
        End(usize),
    }

    fn op(n: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (0..n).prop_map(Op::Data),
            4 => (0..n, -5i64..40).prop_map(|(c, w)| Op::Watermark(c, w)),
            1 => (0..n).prop_map(Op::Idle),
            1 => (0..n).prop_map(Op::End),
        ]
    }

    proptest! {
        /// The tracked minimum equals a rescan of every channel after every message.
        #[test]
        fn tracked_minimum_equals_a_rescan(n in 1usize..12, ops in proptest::collection::vec(op(12), 0..200)) {
            let mut tracked = InputWatermarks::new(vec![0; n]);
            // (watermark, idle, ended) per channel, updated the simple way.
            let mut naive = vec![(i64::MIN, false, false); n];
            for o in ops {
                match o {
                    Op::Data(c) if c < n => {
                        tracked.on_data(c);
                        naive[c].1 = false;
                    }
                    Op::Watermark(c, w) if c < n => {
                        tracked.on_watermark(c, w);
                        naive[c].0 = naive[c].0.max(w);
                        naive[c].1 = false;
                    }
                    Op::Idle(c) if c < n => {
                        tracked.on_idle(c);
                        naive[c].1 = true;
                    }
                    Op::End(c) if c < n => {
                        tracked.on_end(c);
                        naive[c].2 = true;
                    }
                    _ => continue,
                }
                let active = naive.iter().filter(|c| !c.1 && !c.2);
                prop_assert_eq!(tracked.combined(), active.clone().map(|c| c.0).min());
                prop_assert_eq!(tracked.any_active(), active.count() > 0);
                prop_assert_eq!(tracked.all_ended(), naive.iter().all(|c| c.2));
            }
        }
    }

    /// Counts the watermarks it sees.
    struct CountWatermarks(Arc<AtomicU64>);

    impl Operator for CountWatermarks {
        fn process(&mut self, _: usize, _: RecordBatch, _: &mut dyn Output) -> Result<(), OperatorError> {
            Ok(())
        }

        fn on_watermark(&mut self, _: i64, _: &mut dyn Output) -> Result<(), OperatorError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    #[test]
    fn a_watermark_is_forwarded_only_when_the_minimum_advances() {
        let channels = 64;
        let inbound = InputGate::new(channels, 1 << 20);
        let downstream = InputGate::new(1, 1 << 20);
        // Every channel sends watermarks 1..=5, some twice and some going back; then all go
        // idle (twice), then each sends the final watermark and ends.
        for w in 1..=5 {
            for c in 0..channels {
                inbound.send(c, Message::Watermark(w)).unwrap();
                if c % 3 == 0 {
                    inbound.send(c, Message::Watermark(w - 1)).unwrap();
                    inbound.send(c, Message::Watermark(w)).unwrap();
                }
            }
        }
        for _ in 0..2 {
            for c in 0..channels {
                inbound.send(c, Message::Idle).unwrap();
            }
        }
        for c in 0..channels {
            inbound.send(c, Message::Watermark(MAX_WATERMARK)).unwrap();
            inbound.send(c, Message::End).unwrap();
        }
        let seen = Arc::new(AtomicU64::new(0));
        let edge = EdgeSender::new(Partitioner::Forward, vec![Target { gate: downstream.clone(), channel: 0 }], 0);
        let mut nodes = vec![Node {
            id: "w".into(),
            op: Box::new(CountWatermarks(seen.clone())),
            outputs: vec![vec![edge]],
            metrics: Arc::new(OperatorMetrics::default()),
        }];
        let mut inputs = InputWatermarks::new(vec![0; channels]);
        let mailbox = Mailbox::new(Some(inbound.clone()), Default::default());
        run_gate(&inbound, &mailbox, &mut |_| {}, &mut inputs, &mut nodes).unwrap();
        let mut sent = Vec::new();
        while let Ok(Some((_, m))) = downstream.recv_timeout(Duration::ZERO) {
            sent.push(match m {
                Message::Watermark(w) => format!("{w}"),
                other => format!("{other:?}"),
            });
        }
        let max = MAX_WATERMARK.to_string();
        assert_eq!(sent, ["1", "2", "3", "4", "5", "Idle", &max, "End"], "one message per change");
        assert_eq!(seen.load(Ordering::Relaxed), 6, "the operator sees each advance once");
    }
}
