//! One subtask: a chain of operators on one thread, fed by a source reader or by its inbound
//! queue, sending what its last operator produces along the outgoing edges.
//!
//! Watermarks: a queue-fed subtask keeps the last watermark of every inbound channel; its
//! own watermark is the minimum over channels that are neither idle nor ended, and it is
//! passed down the chain (each operator's `on_watermark` first) only when it advances. A
//! source subtask generates watermarks from its event-time column: the largest event time
//! seen, less the allowed out-of-orderness, less 1 ms; it reports itself idle after
//! `idle_timeout` without rows, and sends the final watermark when its input is exhausted
//! (not when the job is stopped, so windows are not closed early).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::{Array, TimestampMillisecondArray};
use arrow::compute::kernels::aggregate::max;
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;

use super::channel::Queue;
use super::partition::RemoteEdge;
use super::{MAX_WATERMARK, Message, Operator, OperatorError, OperatorMetrics, Output, SourceEvent, SourceReader};

/// One operator of a chain with where its outputs go when they leave the chain.
pub struct Node {
    /// The operator's id.
    pub id: String,
    /// The operator.
    pub op: Box<dyn Operator>,
    /// Per output (0 main, then side outputs): the remote edges it feeds. A node followed by
    /// another in the chain sends its main output there instead.
    pub outputs: Vec<Vec<RemoteEdge>>,
    /// Counters.
    pub metrics: Arc<OperatorMetrics>,
}

struct NodeOutput<'a> {
    rest: &'a mut [Node],
    outputs: &'a mut Vec<Vec<RemoteEdge>>,
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
fn fail(node: &Node, mut error: OperatorError) -> TaskFailure {
    let operator = error.operator.take().unwrap_or_else(|| node.id.clone());
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
    let Some(message) = after_tail else { return Ok(()) };
    let tail = nodes.last().expect("a chain has nodes");
    for edges in &tail.outputs {
        for e in edges {
            e.broadcast(message.clone()).map_err(|e| fail(tail, e))?;
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

/// How often quiet subtasks tick.
const TICK: Duration = Duration::from_secs(1);

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

/// Runs a source subtask: reads until the input ends or `stop` is set.
pub fn run_source(
    mut reader: Box<dyn SourceReader>,
    nodes: &mut [Node],
    wm_gen: Option<WatermarkGen>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), TaskFailure> {
    let mut current = i64::MIN;
    let mut last_data = Instant::now();
    let mut last_tick = Instant::now();
    let mut is_idle = false;
    let explicit = reader.explicit_watermarks();
    loop {
        if stop.load(Ordering::Relaxed) {
            return end(nodes);
        }
        let event = reader.next().map_err(|e| fail(&nodes[0], e))?;
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
                    watermark(nodes, w)?;
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
                    watermark(nodes, w)?;
                }
            }
            SourceEvent::Pending => {
                if last_tick.elapsed() >= TICK {
                    last_tick = Instant::now();
                    tick(nodes)?;
                }
                let timeout = wm_gen.as_ref().and_then(|g| g.idle_timeout);
                if !is_idle && timeout.is_some_and(|t| last_data.elapsed() >= t) {
                    is_idle = true;
                    idle(nodes)?;
                }
            }
            SourceEvent::End => {
                if current < MAX_WATERMARK {
                    watermark(nodes, MAX_WATERMARK)?;
                }
                return end(nodes);
            }
        }
    }
}

/// What a queue-fed subtask knows of one inbound channel.
#[derive(Debug, Clone, Copy)]
pub struct ChannelState {
    /// Which input of the head operator the channel feeds.
    pub input: usize,
    watermark: i64,
    idle: bool,
    ended: bool,
}

impl ChannelState {
    /// A fresh channel feeding `input`.
    pub fn new(input: usize) -> Self {
        ChannelState { input, watermark: i64::MIN, idle: false, ended: false }
    }
}

/// The combined watermark: minimum over active channels; `None` while all are idle.
fn combined(channels: &[ChannelState]) -> Option<i64> {
    let active = channels.iter().filter(|c| !c.idle && !c.ended);
    // Idle or ended everywhere gives `None`: hold. (Exhausted inputs sent the final
    // watermark before ending; stopped ones did not, and their open windows must stay open.)
    active.map(|c| c.watermark).min()
}

/// Runs a subtask fed by `queue` until every channel has ended.
pub fn run_queue(queue: &Queue, channels: &mut [ChannelState], nodes: &mut [Node]) -> Result<(), TaskFailure> {
    let mut current = i64::MIN;
    // Whether this subtask told its consumers it is idle (all its inputs are).
    let mut idle_sent = false;
    if channels.is_empty() {
        return end(nodes);
    }
    loop {
        let (from, message) = match queue.recv_timeout(TICK) {
            Ok(Some(m)) => m,
            Ok(None) => {
                tick(nodes)?;
                continue;
            }
            Err(_) => return Err(fail(&nodes[0], OperatorError::new("the job is stopping"))),
        };
        let ch = &mut channels[from];
        match message {
            Message::Batch(batch) => {
                ch.idle = false;
                idle_sent = false;
                let input = ch.input;
                deliver(nodes, input, batch).map_err(|e| fail(&nodes[0], e))?;
                continue;
            }
            Message::Watermark(w) => {
                ch.idle = false;
                idle_sent = false;
                ch.watermark = ch.watermark.max(w);
            }
            Message::Idle => ch.idle = true,
            Message::End => ch.ended = true,
        }
        if let Some(w) = combined(channels).filter(|w| *w > current) {
            current = w;
            watermark(nodes, w)?;
        }
        // Idle inputs everywhere: pass idleness on, so consumers stop waiting for us too.
        let any_active = channels.iter().any(|c| !c.idle && !c.ended);
        if !any_active && !idle_sent && !channels.iter().all(|c| c.ended) {
            idle_sent = true;
            idle(nodes)?;
        }
        if channels.iter().all(|c| c.ended) {
            return end(nodes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_watermark_ignores_idle_and_ended_channels() {
        let mut c = vec![ChannelState::new(0), ChannelState::new(0), ChannelState::new(1)];
        c[0].watermark = 10;
        c[1].watermark = 5;
        c[2].watermark = 7;
        assert_eq!(combined(&c), Some(5));
        c[1].idle = true;
        assert_eq!(combined(&c), Some(7));
        c[2].ended = true;
        assert_eq!(combined(&c), Some(10));
        c[0].idle = true;
        assert_eq!(combined(&c), None);
        c[0].ended = true;
        c[1].ended = true;
        assert_eq!(combined(&c), None);
    }
}
