//! Input gate throughput against the queue it replaced (one FIFO per subtask shared by every
//! producer, kept in `bench/shared_queue.rs`): 1 and 4 producer threads, each sending small
//! (16-row) or 8192-row batches then end-of-stream, to one consumer thread; the budget is
//! the engine's default (8 MiB per subtask). Messages per second, the best of a few rounds.
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
const ROUNDS: usize = 5;

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

fn best(mut f: impl FnMut() -> Duration) -> Duration {
    (0..ROUNDS).map(|_| f()).min().expect("rounds")
}

fn main() {
    println!("{:>9}  {:>6}  {:>14}  {:>14}  {:>6}", "producers", "rows", "queue msg/s", "gate msg/s", "ratio");
    for producers in [1, 4] {
        for rows in [16i64, 8192] {
            let per_producer = if rows == 16 { 200_000 / producers } else { 20_000 / producers };
            let total = (per_producer * producers) as f64;
            let queue = best(|| {
                let q = shared_queue::Queue::new(CAPACITY);
                let tx = q.clone();
                run(
                    producers,
                    per_producer,
                    rows,
                    move |p, m| tx.send(p, m).expect("open"),
                    || q.recv().expect("open").1,
                )
            });
            let gate = best(|| {
                let g = InputGate::new(producers, CAPACITY);
                let tx = g.clone();
                run(
                    producers,
                    per_producer,
                    rows,
                    move |p, m| tx.send(p, m).expect("open"),
                    || g.recv().expect("open").1,
                )
            });
            let (q, g) = (total / queue.as_secs_f64(), total / gate.as_secs_f64());
            println!("{producers:>9}  {rows:>6}  {q:>14.0}  {g:>14.0}  {:>6.2}", g / q);
        }
    }
}
