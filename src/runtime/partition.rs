//! Sending a subtask's output along one edge: to which downstream subtask each row goes.
//!
//! Hash partitioning is vectorized: the key columns of a whole batch are hashed at once, each
//! hash picks a key group, each key group belongs to one subtask, and the batch is split with
//! one `take` per target subtask. The hash is Sluice's own, specified and versioned
//! ([`crate::state::key_hash`]), so a key lands in the same key group in every process, run
//! and release.
//!
//! A split makes batches `p` times smaller, and every batch costs the consumer a fixed amount
//! of work; so the parts bound for each target are coalesced up to [`COALESCE_ROWS`] rows
//! before they are sent. Buffered rows go out before any control message (order is kept),
//! when they have waited [`COALESCE_WAIT`], and on the subtask's tick.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, UInt32Array};
use arrow::compute::{BatchCoalescer, take_record_batch};
use arrow::record_batch::RecordBatch;

use super::gate::{ChannelId, Closed, InputGate};
use super::{Message, OperatorError};
use crate::state::key_hash::hash_rows;
use crate::state::{key_group_of, subtask_for_key_group};

/// How an edge picks a downstream subtask.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Partitioner {
    /// To the subtask with the same index.
    Forward,
    /// By hash of these columns.
    Hash {
        /// Key column indices in the edge's schema.
        columns: Vec<usize>,
        /// Key groups.
        max_parallelism: u32,
    },
    /// Round-robin, batch by batch.
    Rebalance,
    /// Everything to subtask 0.
    Global,
    /// Everything to every subtask.
    Broadcast,
}

/// One downstream subtask's input gate and this sender's channel there.
#[derive(Clone)]
pub struct Target {
    /// The downstream subtask's gate.
    pub gate: Arc<InputGate>,
    /// This producer's channel at that gate.
    pub channel: ChannelId,
}

/// The sending end of one edge in one producer subtask (in process: it writes straight into
/// the consumers' gates).
pub struct EdgeSender {
    /// How rows are distributed.
    pub partitioner: Partitioner,
    /// One target per downstream subtask, in subtask order.
    pub targets: Vec<Target>,
    /// The producing subtask's index.
    pub subtask: usize,
    next: usize,
    /// The columns this edge carries, when not all.
    projection: Option<Vec<usize>>,
    /// Per target of a hash edge: rows waiting to fill a batch.
    coalescers: Vec<BatchCoalescer>,
    /// When the oldest buffered rows arrived.
    buffered_since: Option<Instant>,
}

/// Rows a coalesced batch is filled to.
pub const COALESCE_ROWS: usize = 8192;

/// The longest buffered rows wait for more before they are sent anyway.
pub const COALESCE_WAIT: Duration = Duration::from_millis(100);

fn closed(_: Closed) -> OperatorError {
    OperatorError::new("the job is stopping")
}

impl EdgeSender {
    /// A sender for producer subtask `subtask`.
    pub fn new(partitioner: Partitioner, targets: Vec<Target>, subtask: usize) -> Self {
        EdgeSender {
            partitioner,
            targets,
            subtask,
            next: subtask,
            projection: None,
            coalescers: Vec::new(),
            buffered_since: None,
        }
    }

    /// Sends only these columns (indices into the stream's schema).
    pub fn with_projection(mut self, projection: Option<Vec<usize>>) -> Self {
        self.projection = projection;
        self
    }

    /// Sends every buffered row now.
    pub fn flush(&mut self) -> Result<(), OperatorError> {
        if self.buffered_since.take().is_none() {
            return Ok(());
        }
        for i in 0..self.coalescers.len() {
            self.coalescers[i].finish_buffered_batch()?;
            self.send_completed(i)?;
        }
        Ok(())
    }

    fn send_completed(&mut self, i: usize) -> Result<(), OperatorError> {
        while let Some(b) = self.coalescers[i].next_completed_batch() {
            let t = &self.targets[i];
            t.gate.send(t.channel, Message::Batch(b)).map_err(closed)?;
        }
        Ok(())
    }

    fn send_to(&self, i: usize, m: Message) -> Result<(), OperatorError> {
        let t = &self.targets[i];
        t.gate.send(t.channel, m).map_err(closed)
    }

    /// Sends rows.
    pub fn send_batch(&mut self, batch: RecordBatch) -> Result<(), OperatorError> {
        let n = self.targets.len();
        if batch.num_rows() == 0 || n == 0 {
            return Ok(());
        }
        let batch = match &self.projection {
            Some(columns) => batch.project(columns)?,
            None => batch,
        };
        match &self.partitioner {
            Partitioner::Forward => self.send_to(self.subtask % n, Message::Batch(batch)),
            Partitioner::Global => self.send_to(0, Message::Batch(batch)),
            Partitioner::Rebalance => {
                self.next = (self.next + 1) % n;
                self.send_to(self.next, Message::Batch(batch))
            }
            Partitioner::Broadcast => {
                for i in 0..n {
                    self.send_to(i, Message::Batch(batch.clone()))?;
                }
                Ok(())
            }
            Partitioner::Hash { columns, max_parallelism } => {
                if n == 1 {
                    return self.send_to(0, Message::Batch(batch));
                }
                let targets = hash_targets(&batch, columns, *max_parallelism, n)?;
                let mut per_target: Vec<Vec<u32>> = vec![Vec::new(); n];
                for (row, t) in targets.iter().enumerate() {
                    per_target[*t as usize].push(row as u32);
                }
                if self.coalescers.is_empty() {
                    self.coalescers = (0..n).map(|_| BatchCoalescer::new(batch.schema(), COALESCE_ROWS)).collect();
                }
                for (i, rows) in per_target.into_iter().enumerate() {
                    if rows.is_empty() {
                        continue;
                    }
                    // A part big enough on its own skips the copy into the buffer.
                    if rows.len() * 2 >= COALESCE_ROWS && self.coalescers[i].is_empty() {
                        let part = if rows.len() == batch.num_rows() {
                            batch.clone()
                        } else {
                            take_record_batch(&batch, &UInt32Array::from(rows))?
                        };
                        self.send_to(i, Message::Batch(part))?;
                        continue;
                    }
                    self.coalescers[i].push_batch_with_indices(batch.clone(), &UInt32Array::from(rows))?;
                    self.send_completed(i)?;
                    if !self.coalescers[i].is_empty() {
                        self.buffered_since.get_or_insert_with(Instant::now);
                    }
                }
                if self.buffered_since.is_some_and(|t| t.elapsed() >= COALESCE_WAIT) {
                    self.flush()?;
                }
                Ok(())
            }
        }
    }

    /// Sends a control message to every downstream subtask, after the rows before it.
    pub fn broadcast(&mut self, m: Message) -> Result<(), OperatorError> {
        self.flush()?;
        for i in 0..self.targets.len() {
            self.send_to(i, m.clone())?;
        }
        Ok(())
    }
}

/// The target subtask of every row of `batch` when hashing `columns`.
pub fn hash_targets(
    batch: &RecordBatch,
    columns: &[usize],
    max_parallelism: u32,
    parallelism: usize,
) -> Result<Vec<u32>, OperatorError> {
    let arrays: Vec<ArrayRef> = columns.iter().map(|&c| batch.column(c).clone()).collect();
    let mut hashes = Vec::with_capacity(batch.num_rows());
    hash_rows(&arrays, &mut hashes)?;
    Ok(hashes
        .iter()
        .map(|h| subtask_for_key_group(key_group_of(*h, max_parallelism), max_parallelism, parallelism as u32))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array};

    #[test]
    fn hash_partitioning_is_stable_and_keeps_keys_together() {
        let keys = Int64Array::from_iter_values((0..1000).map(|i| i % 37));
        let batch = RecordBatch::try_from_iter([("k", Arc::new(keys) as ArrayRef)]).unwrap();
        let a = hash_targets(&batch, &[0], 128, 4).unwrap();
        let b = hash_targets(&batch, &[0], 128, 4).unwrap();
        assert_eq!(a, b);
        let col = batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let mut owner = std::collections::HashMap::new();
        for (i, t) in a.iter().enumerate() {
            assert_eq!(*owner.entry(col.value(i)).or_insert(*t), *t, "one key, one subtask");
        }
        let used: std::collections::HashSet<_> = a.iter().collect();
        assert!(used.len() > 1, "keys spread over subtasks");
    }
}
