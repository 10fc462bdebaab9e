#![allow(dead_code)]
//! The engine's former inbound queue, kept only as the baseline of `bench/gate.rs`: one FIFO
//! per subtask shared by every producer, bounded in bytes.
//!
//! Capacity is backpressure: a producer whose message does not fit waits until the consumer
//! has taken enough, so a slow sink slows every operator before it down to the sources, and
//! memory between two subtasks never exceeds the capacity (plus one message, so that a batch
//! larger than the capacity still passes when the queue is empty). Messages from one producer
//! stay in order. Closing the queue (on failure or cancel) wakes everyone.
//!
//! Waking a thread costs a system call and a context switch, and control messages travel
//! from every upstream subtask to every downstream one; so a sender wakes the consumer only
//! when it is waiting for a message, and the consumer wakes senders only when one is waiting
//! for room.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use sluice::runtime::Message;

/// Index of the producer channel a message came through, as the consumer numbers them.
pub type ChannelId = usize;

struct Inner {
    queue: VecDeque<(ChannelId, Message, usize)>,
    bytes: usize,
    closed: bool,
    /// Whether the consumer waits for a message.
    receiver_waiting: bool,
    /// Senders waiting for room.
    senders_waiting: usize,
    /// Threads woken so far (for tests).
    wakeups: u64,
}

/// A byte-bounded multi-producer queue.
pub struct Queue {
    inner: Mutex<Inner>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
}

/// Returned when the queue was closed because the job is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl Queue {
    /// A queue holding at most about `capacity` bytes.
    pub fn new(capacity: usize) -> Arc<Queue> {
        Arc::new(Queue {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                bytes: 0,
                closed: false,
                receiver_waiting: false,
                senders_waiting: 0,
                wakeups: 0,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity: capacity.max(1),
        })
    }

    /// Sends `message` from producer channel `from`, waiting while the queue is full.
    pub fn send(&self, from: ChannelId, message: Message) -> Result<(), Closed> {
        let size = message.size();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while !inner.closed && inner.bytes > 0 && inner.bytes + size > self.capacity {
            inner.senders_waiting += 1;
            inner = self.not_full.wait(inner).unwrap_or_else(|e| e.into_inner());
            inner.senders_waiting -= 1;
        }
        if inner.closed {
            return Err(Closed);
        }
        inner.bytes += size;
        inner.queue.push_back((from, message, size));
        let wake = std::mem::take(&mut inner.receiver_waiting);
        if wake {
            inner.wakeups += 1;
        }
        drop(inner);
        if wake {
            self.not_empty.notify_one();
        }
        Ok(())
    }

    /// Takes the next message, waiting while the queue is empty.
    pub fn recv(&self) -> Result<(ChannelId, Message), Closed> {
        loop {
            if let Some(m) = self.recv_timeout(std::time::Duration::from_secs(3600))? {
                return Ok(m);
            }
        }
    }

    /// Like [`Queue::recv`], but gives `None` after `timeout` without a message.
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Result<Option<(ChannelId, Message)>, Closed> {
        let deadline = std::time::Instant::now() + timeout;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if inner.closed {
                return Err(Closed);
            }
            if let Some((from, message, size)) = inner.queue.pop_front() {
                inner.bytes -= size;
                let wake = inner.senders_waiting > 0;
                if wake {
                    inner.wakeups += 1;
                }
                drop(inner);
                if wake {
                    self.not_full.notify_all();
                }
                return Ok(Some((from, message)));
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            inner.receiver_waiting = true;
            inner = self.not_empty.wait_timeout(inner, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
            inner.receiver_waiting = false;
        }
    }

    /// Closes the queue: pending and future sends and receives fail.
    pub fn close(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.closed = true;
        inner.queue.clear();
        inner.bytes = 0;
        drop(inner);
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }

    /// Bytes currently queued.
    pub fn queued_bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }

    /// Threads this queue has woken so far.
    pub fn wakeups(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).wakeups
    }
}
