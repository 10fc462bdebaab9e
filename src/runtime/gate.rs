//! The inbound side of a subtask: an input gate with one bounded queue per input channel, and
//! the control mailbox every subtask (sources included) polls between batches.
//!
//! A channel is one producer subtask's edge into this subtask. Each channel holds at most
//! its share of the gate's byte budget (plus one message, so that a batch larger than the
//! share still passes when the channel is empty): a full channel backpressures only its own
//! producer. A channel can be blocked (aligned checkpoint barriers will stop reading the
//! channels that delivered a barrier): the consumer stops taking from it, its producer fills
//! it and then waits, and every other channel keeps flowing.
//!
//! The consumer waits for "some unblocked channel has a message": channels with messages that
//! are not blocked sit in a ready list, served round-robin one message at a time; a producer
//! wakes the consumer only when it waits, and the consumer wakes a producer (its own condition
//! variable, no herd) only when that producer waits for room and its channel is half empty. A channel costs a few dozen
//! bytes until it holds messages, so p² channels at parallelism 1024 stay cheap.
//!
//! A remote channel plugs in the same way later: its credit is its flow-control window.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::Message;

/// Index of an input channel at its gate.
pub type ChannelId = usize;

/// Returned when the gate was closed because the job is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// The smallest share of the byte budget a channel gets, however many channels share it.
pub const MIN_CHANNEL_BYTES: usize = 16 << 10;

#[derive(Default)]
struct ChannelQueue {
    messages: VecDeque<(Message, usize)>,
    bytes: usize,
    blocked: bool,
    /// In the ready list (has messages and is not blocked).
    ready: bool,
    /// Its producer waits for room.
    sender_waiting: bool,
}

struct Inner {
    channels: Vec<ChannelQueue>,
    /// Channels with messages that are not blocked, served round-robin.
    ready: VecDeque<u32>,
    closed: bool,
    receiver_waiting: bool,
    /// Set by [`InputGate::interrupt`]; makes a waiting receive return early once.
    interrupted: bool,
    /// Threads woken so far (for tests).
    wakeups: u64,
}

/// One consumer's inbound queues: one byte-bounded queue per input channel.
pub struct InputGate {
    inner: Mutex<Inner>,
    consumer: Condvar,
    /// One per channel: where its producer waits for room.
    producers: Box<[Condvar]>,
    channel_capacity: usize,
}

impl InputGate {
    /// A gate of `channels` channels sharing a budget of about `capacity` bytes (each channel
    /// gets `capacity / channels`, at least [`MIN_CHANNEL_BYTES`]).
    pub fn new(channels: usize, capacity: usize) -> Arc<InputGate> {
        Arc::new(InputGate {
            inner: Mutex::new(Inner {
                channels: (0..channels).map(|_| ChannelQueue::default()).collect(),
                ready: VecDeque::new(),
                closed: false,
                receiver_waiting: false,
                interrupted: false,
                wakeups: 0,
            }),
            consumer: Condvar::new(),
            producers: (0..channels).map(|_| Condvar::new()).collect(),
            channel_capacity: (capacity / channels.max(1)).max(MIN_CHANNEL_BYTES),
        })
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.producers.len()
    }

    /// Bytes one channel may hold.
    pub fn channel_capacity(&self) -> usize {
        self.channel_capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `message` on `channel`, waiting while that channel is full.
    pub fn send(&self, channel: ChannelId, message: Message) -> Result<(), Closed> {
        let size = message.size();
        let mut inner = self.lock();
        loop {
            if inner.closed {
                return Err(Closed);
            }
            let c = &mut inner.channels[channel];
            if c.bytes == 0 || c.bytes + size <= self.channel_capacity {
                break;
            }
            c.sender_waiting = true;
            inner = self.producers[channel].wait(inner).unwrap_or_else(|e| e.into_inner());
        }
        let c = &mut inner.channels[channel];
        c.bytes += size;
        c.messages.push_back((message, size));
        if c.blocked || c.ready {
            return Ok(());
        }
        c.ready = true;
        inner.ready.push_back(channel as u32);
        let wake = std::mem::take(&mut inner.receiver_waiting);
        if wake {
            inner.wakeups += 1;
        }
        drop(inner);
        if wake {
            self.consumer.notify_one();
        }
        Ok(())
    }

    /// Takes the next message from an unblocked channel, waiting while there is none.
    pub fn recv(&self) -> Result<(ChannelId, Message), Closed> {
        loop {
            if let Some(m) = self.recv_timeout(Duration::from_secs(3600))? {
                return Ok(m);
            }
        }
    }

    /// Like [`InputGate::recv`], but gives `None` after `timeout` without a message, or
    /// earlier when [`InputGate::interrupt`] was called.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<(ChannelId, Message)>, Closed> {
        let mut one = VecDeque::with_capacity(1);
        self.recv_many(timeout, 1, &mut one)?;
        Ok(one.pop_front())
    }

    /// Like [`InputGate::recv_timeout`], but appends up to `max` messages to `out` under one
    /// lock, taking turns among the ready channels, and stops after a message that is not a
    /// batch (what follows a control message, such as a checkpoint barrier that blocks its
    /// channel, is taken only after the consumer has acted on it). Appends nothing after
    /// `timeout`, or earlier when [`InputGate::interrupt`] was called.
    pub fn recv_many(
        &self,
        timeout: Duration,
        max: usize,
        out: &mut VecDeque<(ChannelId, Message)>,
    ) -> Result<(), Closed> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        loop {
            if inner.closed {
                return Err(Closed);
            }
            if !inner.ready.is_empty() {
                // Producers to wake once the lock is released (rarely more than one).
                let mut wake: Vec<u32> = Vec::new();
                let state = &mut *inner;
                for _ in 0..max.max(1) {
                    let Some(&channel) = state.ready.front() else { break };
                    let c = &mut state.channels[channel as usize];
                    let (message, size) = c.messages.pop_front().expect("a ready channel has messages");
                    c.bytes -= size;
                    // A waiting producer is woken once its channel is half empty, not for every
                    // message taken.
                    if c.sender_waiting && c.bytes <= self.channel_capacity / 2 {
                        c.sender_waiting = false;
                        state.wakeups += 1;
                        wake.push(channel);
                    }
                    if c.messages.is_empty() {
                        c.ready = false;
                        state.ready.pop_front();
                    } else if state.ready.len() > 1 {
                        state.ready.rotate_left(1);
                    }
                    let control = !matches!(message, Message::Batch(_));
                    out.push_back((channel as usize, message));
                    if control {
                        break;
                    }
                }
                drop(inner);
                for channel in wake {
                    self.producers[channel as usize].notify_one();
                }
                return Ok(());
            }
            if std::mem::take(&mut inner.interrupted) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            inner.receiver_waiting = true;
            inner = self.consumer.wait_timeout(inner, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
            inner.receiver_waiting = false;
        }
    }

    /// Stops handing out messages of `channel`; its producer may fill it and then waits.
    pub fn block(&self, channel: ChannelId) {
        let mut inner = self.lock();
        let c = &mut inner.channels[channel];
        c.blocked = true;
        if std::mem::take(&mut c.ready) {
            inner.ready.retain(|&r| r as usize != channel);
        }
    }

    /// Resumes handing out messages of `channel`.
    pub fn unblock(&self, channel: ChannelId) {
        let mut inner = self.lock();
        let c = &mut inner.channels[channel];
        c.blocked = false;
        if c.ready || c.messages.is_empty() {
            return;
        }
        c.ready = true;
        inner.ready.push_back(channel as u32);
        if std::mem::take(&mut inner.receiver_waiting) {
            inner.wakeups += 1;
            self.consumer.notify_one();
        }
    }

    /// Whether `channel` is blocked.
    pub fn is_blocked(&self, channel: ChannelId) -> bool {
        self.lock().channels[channel].blocked
    }

    /// Makes the consumer's current or next wait return `None` (new control mail).
    pub fn interrupt(&self) {
        let mut inner = self.lock();
        inner.interrupted = true;
        if std::mem::take(&mut inner.receiver_waiting) {
            inner.wakeups += 1;
            self.consumer.notify_one();
        }
    }

    /// Closes the gate: pending and future sends and receives fail.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.ready.clear();
        for c in &mut inner.channels {
            *c = ChannelQueue::default();
        }
        drop(inner);
        self.consumer.notify_all();
        for p in self.producers.iter() {
            p.notify_all();
        }
    }

    /// Bytes queued on `channel`.
    pub fn queued_bytes(&self, channel: ChannelId) -> usize {
        self.lock().channels[channel].bytes
    }

    /// Threads this gate has woken so far.
    pub fn wakeups(&self) -> u64 {
        self.lock().wakeups
    }
}

/// What the task executor tells one subtask, through its mailbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Control {
    /// Sources: take checkpoint `id` (snapshot the position, send barrier `id`); with `stop`,
    /// read no further and end once it completes (a stop with savepoint).
    TriggerCheckpoint {
        /// Checkpoint id.
        id: u64,
        /// Whether the job stops after it.
        stop: bool,
    },
    /// Checkpoint `id` is complete everywhere: sinks commit.
    CheckpointComplete(u64),
    /// Stop. With `drain`, sources end their input and the rest finishes as at the end of
    /// input (sinks flush); without, every subtask fails fast.
    Cancel {
        /// Whether to let what was read flow through to the sinks.
        drain: bool,
    },
}

/// A subtask's control mailbox: many senders, the subtask itself reads it between batches.
pub struct Mailbox {
    mail: Mutex<VecDeque<Control>>,
    /// Whether there is mail (so polling costs one atomic load).
    has_mail: AtomicBool,
    /// Raised on cancel, for readers that wait inside `next` (see [`super::BuildContext::stop`]).
    stop: Arc<AtomicBool>,
    /// The subtask's gate, woken when mail arrives.
    gate: Option<Arc<InputGate>>,
}

impl Mailbox {
    /// A mailbox for a subtask fed by `gate` (`None` for sources), raising `stop` on cancel.
    pub fn new(gate: Option<Arc<InputGate>>, stop: Arc<AtomicBool>) -> Mailbox {
        Mailbox { mail: Mutex::new(VecDeque::new()), has_mail: AtomicBool::new(false), stop, gate }
    }

    /// Posts `control`, waking the subtask if it waits for input.
    pub fn post(&self, control: Control) {
        if matches!(control, Control::Cancel { .. }) {
            self.stop.store(true, Ordering::SeqCst);
        }
        self.mail.lock().unwrap_or_else(|e| e.into_inner()).push_back(control);
        self.has_mail.store(true, Ordering::Release);
        if let Some(g) = &self.gate {
            g.interrupt();
        }
    }

    /// The next message, if any.
    pub fn poll(&self) -> Option<Control> {
        if !self.has_mail.load(Ordering::Acquire) {
            return None;
        }
        let mut mail = self.mail.lock().unwrap_or_else(|e| e.into_inner());
        let next = mail.pop_front();
        if mail.is_empty() {
            self.has_mail.store(false, Ordering::Release);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::record_batch::RecordBatch;

    fn batch(n: i64) -> Message {
        let a = Int64Array::from_iter_values(0..n);
        Message::Batch(RecordBatch::try_from_iter([("x", Arc::new(a) as _)]).unwrap())
    }

    fn wait_until(f: impl Fn() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_full_channel_blocks_only_its_own_producer() {
        let g = InputGate::new(2, 2 * MIN_CHANNEL_BYTES);
        let big = || batch(1500); // 12 000 bytes: one fits in a channel, two do not
        g.send(0, big()).unwrap();
        let g2 = g.clone();
        let producer = std::thread::spawn(move || g2.send(0, big()));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!producer.is_finished(), "channel 0 is full: its producer waits");
        // Channel 1 still takes messages.
        g.send(1, big()).unwrap();
        assert_eq!(g.queued_bytes(1), big().size());
        assert!(g.queued_bytes(0) <= g.channel_capacity());
        g.recv().unwrap();
        g.recv().unwrap();
        producer.join().unwrap().unwrap();
    }

    #[test]
    fn a_blocked_channel_backpressures_its_producer_while_others_flow() {
        let g = InputGate::new(2, 2 * MIN_CHANNEL_BYTES);
        g.block(0);
        let g0 = g.clone();
        // The producer of channel 0 keeps sending until it has to wait.
        let blocked = std::thread::spawn(move || {
            for _ in 0..100 {
                g0.send(0, batch(1000)).unwrap();
            }
        });
        let g1 = g.clone();
        let flowing = std::thread::spawn(move || {
            for _ in 0..1000 {
                g1.send(1, batch(1000)).unwrap();
            }
            g1.send(1, Message::End).unwrap();
        });
        // The consumer sees every message of channel 1 and none of channel 0.
        let mut from_1 = 0;
        loop {
            let (c, m) = g.recv().unwrap();
            assert_eq!(c, 1, "a blocked channel hands out nothing");
            if matches!(m, Message::End) {
                break;
            }
            from_1 += 1;
        }
        flowing.join().unwrap();
        assert_eq!(from_1, 1000);
        assert!(!blocked.is_finished(), "the blocked channel's producer waits for room");
        assert!(g.queued_bytes(0) <= g.channel_capacity() + batch(1000).size());
        assert!(g.recv_timeout(Duration::from_millis(20)).unwrap().is_none());
        // Unblocked, channel 0 drains in order and its producer completes.
        g.unblock(0);
        let mut n = 0;
        while n < 100 {
            let (c, _) = g.recv().unwrap();
            assert_eq!(c, 0);
            n += 1;
        }
        blocked.join().unwrap();
    }

    #[test]
    fn unblock_wakes_a_waiting_consumer() {
        let g = InputGate::new(1, 1 << 20);
        g.block(0);
        g.send(0, Message::Watermark(3)).unwrap();
        let g2 = g.clone();
        let consumer = std::thread::spawn(move || g2.recv().map(|(c, m)| (c, matches!(m, Message::Watermark(3)))));
        wait_until(|| g.lock().receiver_waiting);
        g.unblock(0);
        assert_eq!(consumer.join().unwrap(), Ok((0, true)));
    }

    #[test]
    fn close_wakes_blocked_senders_and_receivers() {
        let g = InputGate::new(1, 1);
        g.send(0, batch(10_000)).unwrap();
        let g2 = g.clone();
        let producer = std::thread::spawn(move || g2.send(0, batch(10_000)));
        wait_until(|| g.lock().channels[0].sender_waiting);
        g.close();
        assert_eq!(producer.join().unwrap(), Err(Closed));
        assert_eq!(g.recv().map(|_| ()), Err(Closed));
    }

    #[test]
    fn order_per_channel_is_kept_and_channels_take_turns() {
        let g = InputGate::new(2, 1 << 20);
        for i in 0..3 {
            g.send(0, Message::Watermark(i)).unwrap();
        }
        for i in 10..13 {
            g.send(1, Message::Watermark(i)).unwrap();
        }
        let got: Vec<(usize, i64)> = (0..6)
            .map(|_| match g.recv().unwrap() {
                (c, Message::Watermark(w)) => (c, w),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, [(0, 0), (1, 10), (0, 1), (1, 11), (0, 2), (1, 12)]);
    }

    #[test]
    fn many_are_taken_in_turns_and_stop_after_a_control_message() {
        let g = InputGate::new(2, 1 << 20);
        let rows = |n: i64| {
            let a: arrow::array::ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![n]));
            Message::Batch(arrow::record_batch::RecordBatch::try_from_iter([("a", a)]).unwrap())
        };
        for i in 0..3 {
            g.send(0, rows(i)).unwrap();
            g.send(1, rows(10 + i)).unwrap();
        }
        g.send(0, Message::Watermark(5)).unwrap();
        g.send(0, rows(3)).unwrap();
        let mut out = VecDeque::new();
        g.recv_many(Duration::ZERO, 4, &mut out).unwrap();
        let from: Vec<usize> = out.iter().map(|(c, _)| *c).collect();
        assert_eq!(from, vec![0, 1, 0, 1], "at most `max`, channels in turn");
        out.clear();
        g.recv_many(Duration::ZERO, 100, &mut out).unwrap();
        let taken: Vec<(usize, bool)> = out.iter().map(|(c, m)| (*c, matches!(m, Message::Watermark(5)))).collect();
        assert_eq!(taken, vec![(0, false), (1, false), (0, true)], "nothing after the watermark");
        out.clear();
        g.recv_many(Duration::ZERO, 100, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        out.clear();
        g.recv_many(Duration::from_millis(5), 100, &mut out).unwrap();
        assert!(out.is_empty(), "nothing left: the timeout passes");
    }

    #[test]
    fn a_waiting_producer_is_woken_once_its_channel_is_half_empty() {
        let g = InputGate::new(1, MIN_CHANNEL_BYTES);
        let batch = |rows: i64| {
            let a: arrow::array::ArrayRef = Arc::new(arrow::array::Int64Array::from_iter_values(0..rows));
            Message::Batch(arrow::record_batch::RecordBatch::try_from_iter([("a", a)]).unwrap())
        };
        let size = batch(100).size();
        let fits = MIN_CHANNEL_BYTES / size;
        assert!(fits >= 8, "the test wants several messages per channel, fits {fits}");
        for _ in 0..fits {
            g.send(0, batch(100)).unwrap();
        }
        let g2 = g.clone();
        let producer = std::thread::spawn(move || g2.send(0, batch(100)));
        wait_until(|| g.lock().channels[0].sender_waiting);
        // Room for one message is not enough to wake it...
        let mut taken = 0;
        while g.lock().channels[0].bytes > MIN_CHANNEL_BYTES / 2 + size {
            g.recv().unwrap();
            taken += 1;
        }
        assert!(taken >= 2);
        assert!(g.lock().channels[0].sender_waiting, "woken before the channel was half empty");
        assert_eq!(g.wakeups(), 0);
        // ...half empty is.
        while g.lock().channels[0].bytes > MIN_CHANNEL_BYTES / 2 {
            g.recv().unwrap();
        }
        assert_eq!(producer.join().unwrap(), Ok(()));
        assert_eq!(g.wakeups(), 1);
    }

    #[test]
    fn senders_wake_the_consumer_only_when_it_waits() {
        let g = InputGate::new(100, 1 << 20);
        for i in 0..100 {
            g.send(i, Message::Watermark(i as i64)).unwrap();
        }
        for _ in 0..100 {
            g.recv().unwrap();
        }
        assert_eq!(g.wakeups(), 0, "nobody was waiting");
        let g2 = g.clone();
        let consumer = std::thread::spawn(move || g2.recv().map(|(c, _)| c));
        wait_until(|| g.lock().receiver_waiting);
        g.send(7, Message::End).unwrap();
        assert_eq!(consumer.join().unwrap(), Ok(7));
        assert_eq!(g.wakeups(), 1);
    }

    #[test]
    fn mail_interrupts_a_waiting_consumer() {
        let g = InputGate::new(1, 1 << 20);
        let stop = Arc::new(AtomicBool::new(false));
        let mailbox = Mailbox::new(Some(g.clone()), stop.clone());
        let g2 = g.clone();
        let started = Instant::now();
        let consumer = std::thread::spawn(move || g2.recv_timeout(Duration::from_secs(30)).map(|m| m.is_none()));
        wait_until(|| g.lock().receiver_waiting);
        mailbox.post(Control::TriggerCheckpoint { id: 1, stop: false });
        mailbox.post(Control::Cancel { drain: true });
        assert_eq!(consumer.join().unwrap(), Ok(true));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(stop.load(Ordering::SeqCst), "cancel raises the reader's stop flag");
        assert_eq!(mailbox.poll(), Some(Control::TriggerCheckpoint { id: 1, stop: false }));
        assert_eq!(mailbox.poll(), Some(Control::Cancel { drain: true }));
        assert_eq!(mailbox.poll(), None);
    }

    #[test]
    fn an_idle_channel_costs_no_allocation() {
        let g = InputGate::new(1024, 8 << 20);
        let inner = g.lock();
        assert!(inner.channels.iter().all(|c| c.messages.capacity() == 0));
        assert!(std::mem::size_of::<ChannelQueue>() <= 64);
    }
}
