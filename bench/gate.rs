//! Input gate throughput against the queue it replaced (one FIFO per subtask shared by every
//! producer, kept in `bench/shared_queue.rs`): 1 and 4 producer threads, each sending small
//! (16-row) or 8192-row batches then end-of-stream, to one consumer thread; the budget is
//! the engine's default (8 MiB per subtask). Rounds alternate queue and gate, so that drift
//! on a busy machine touches both alike; reported are the medians of messages per second
//! (wall) and of the process's CPU time per message (all threads, from `getrusage`), which
//! does not depend on how the scheduler happens to place the threads.
//!
//! Run with `cargo bench --bench gate`.

mod shared_queue;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float64Array, Int64Array};
use arrow::record_batch::RecordBatch;
use sluice::runtime::Message;
use sluice::runtime::gate::InputGate;

const CAPACITY: usize = 8 << 20;
const ROUNDS: usize = 11;

fn batch(rows: i64) -> RecordBatch {
    let a: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows));
    let b: ArrayRef = Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64)));
    RecordBatch::try_from_iter([("a", a), ("b", b)]).expect("batch")
}

/// Sends `per_producer` batches from each of `producers` threads; returns the elapsed time.
fn run(
    producers: usize,
    per_producer: usize,
    rows: i64,
    send: impl Fn(usize, Message) + Send + Sync + 'static,
    mut recv: impl FnMut() -> Message,
) -> Duration {
    let send = Arc::new(send);
    let b = batch(rows);
    let started = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let send = send.clone();
            let b = b.clone();
            std::thread::spawn(move || {
                for _ in 0..per_producer {
                    send(p, Message::Batch(b.clone()));
                }
                send(p, Message::End);
            })
        })
        .collect();
    let mut ended = 0;
    while ended < producers {
        if let Message::End = recv() {
            ended += 1;
        }
    }
    for t in threads {
        t.join().expect("producer");
    }
    started.elapsed()
}

/// CPU time of the whole process so far (user and system, every thread).
fn cpu_time() -> Duration {
    // SAFETY: `getrusage` fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Wall and CPU time of one round.
fn measure(f: &mut dyn FnMut() -> Duration) -> (Duration, Duration) {
    let cpu = cpu_time();
    let wall = f();
    (wall, cpu_time() - cpu)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    println!(
        "{:>9}  {:>6}  {:>12}  {:>12}  {:>6}  {:>13}  {:>13}  {:>6}",
        "producers", "rows", "queue msg/s", "gate msg/s", "ratio", "queue cpu/msg", "gate cpu/msg", "ratio"
    );
    for producers in [1, 4] {
        for rows in [16i64, 8192] {
            let per_producer = if rows == 16 { 200_000 / producers } else { 20_000 / producers };
            let total = (per_producer * producers) as f64;
            let mut queue_round = || {
                let q = shared_queue::Queue::new(CAPACITY);
                let tx = q.clone();
                run(
                    producers,
                    per_producer,
                    rows,
                    move |p, m| tx.send(p, m).expect("open"),
                    || q.recv().expect("open").1,
                )
            };
            let mut gate_round = || {
                let g = InputGate::new(producers, CAPACITY);
                let mut inbox = std::collections::VecDeque::new();
                let tx = g.clone();
                run(
                    producers,
                    per_producer,
                    rows,
                    move |p, m| tx.send(p, m).expect("open"),
                    // As a subtask takes them: several under one lock.
                    || {
                        if inbox.is_empty() {
                            g.recv_many(Duration::from_secs(3600), 32, &mut inbox).expect("open");
                        }
                        inbox.pop_front().expect("a message").1
                    },
                )
            };
            let (mut qw, mut qc, mut gw, mut gc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                let (w, c) = measure(&mut queue_round);
                qw.push(w);
                qc.push(c);
                let (w, c) = measure(&mut gate_round);
                gw.push(w);
                gc.push(c);
            }
            let (q, g) = (total / median(qw).as_secs_f64(), total / median(gw).as_secs_f64());
            let per_msg = |c: Vec<Duration>| median(c).as_secs_f64() * 1e9 / total;
            let (qc, gc) = (per_msg(qc), per_msg(gc));
            println!(
                "{producers:>9}  {rows:>6}  {q:>12.0}  {g:>12.0}  {:>6.2}  {qc:>10.0} ns  {gc:>10.0} ns  {:>6.2}",
                g / q,
                qc / gc
            );
        }
    }
}
