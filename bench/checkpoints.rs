//! The cost of checkpoints: Nexmark q5 (hopping windows) and q11 (session windows) over
//! generated bids through the release `sluice` binary, on memory and RocksDB state, without
//! checkpoints and with a checkpoint every second (to a local folder), side by side in one
//! run; with the checkpoints' count, mean duration, mean size and mean bytes uploaded (RocksDB
//! checkpoints upload only SST files the previous checkpoint did not have).
//!
//! `cargo bench --bench checkpoints` (release build); `SLUICE_BENCH_EVENTS` (default 5M),
//! `SLUICE_BENCH_RUNS` (default 3: the fastest run counts).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn spec(query: &str, events: u64, backend: &str, store: Option<&Path>) -> String {
    let transform = match query {
        "q5" => {
            "{ type: window_aggregate, input: bids, key: [auction], window: { type: hopping, size: 10s, slide: 2s }, aggregates: { bids: \"count(*)\" } }"
        }
        _ => {
            "{ type: window_aggregate, input: bids, key: [bidder], window: { type: session, gap: 10s }, aggregates: { bids: \"count(*)\" } }"
        }
    };
    let checkpoints = store
        .map(|s| format!("checkpoints: {{ interval: 1s, storage: \"file://{}\" }}\n", s.display()))
        .unwrap_or_default();
    format!(
        "version: 1\nname: ckpt-{query}\nparallelism: 2\nstate: {{ backend: {backend} }}\n{checkpoints}sources:\n  bids: {{ connector: datagen, nexmark: {{ table: bids }}, count: {events}, seed: 1, event_time: {{ column: date_time, max_out_of_orderness: 1s }} }}\ntransforms:\n  out: {transform}\nsinks:\n  nowhere: {{ connector: blackhole, input: out }}\n"
    )
}

/// Seconds of one run, and the checkpoints it logged: (count, mean ms, mean bytes, mean bytes uploaded).
fn run(bin: &Path, spec: &Path) -> (f64, usize, f64, f64, f64) {
    let started = Instant::now();
    let out = Command::new(bin)
        .args(["run", "--quiet"])
        .arg(spec)
        .env("SLUICE_LOG", "checkpoints")
        .stdout(Stdio::null())
        .output()
        .expect("sluice runs");
    let seconds = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (mut n, mut ms, mut bytes, mut uploaded) = (0usize, 0f64, 0f64, 0f64);
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        // "checkpoint N complete: B bytes of state (U uploaded) in M ms"
        let Some(rest) = line.split(" complete: ").nth(1) else { continue };
        let words: Vec<&str> = rest.split_whitespace().collect();
        if let (Some(b), Some(u), Some(m)) = (words.first(), words.get(4), words.get(7)) {
            n += 1;
            bytes += b.parse::<f64>().unwrap_or(0.0);
            uploaded += u.trim_start_matches('(').parse::<f64>().unwrap_or(0.0);
            ms += m.parse::<f64>().unwrap_or(0.0);
        }
    }
    let mean = |x: f64| if n > 0 { x / n as f64 } else { 0.0 };
    (seconds, n, mean(ms), mean(bytes), mean(uploaded))
}

fn main() {
    let bin = Path::new(env!("CARGO_BIN_EXE_sluice"));
    let events: u64 = std::env::var("SLUICE_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000_000);
    let runs: usize = std::env::var("SLUICE_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir().expect("temp dir");
    println!("checkpoints every 1s against none: {events} bids, parallelism 2, fastest of {runs}");
    println!(
        "{:5} {:8} {:>9} {:>9} {:>7} {:>6} {:>10} {:>12} {:>14}",
        "query", "state", "none s", "ckpt s", "ratio", "ckpts", "mean ms", "mean bytes", "mean uploaded"
    );
    for query in ["q5", "q11"] {
        for backend in ["memory", "rocksdb"] {
            let plain = dir.path().join(format!("{query}-{backend}.yaml"));
            std::fs::write(&plain, spec(query, events, backend, None)).expect("write spec");
            let none = (0..runs).map(|_| run(bin, &plain).0).fold(f64::MAX, f64::min);
            let mut best = (f64::MAX, 0, 0.0, 0.0, 0.0);
            for i in 0..runs {
                let store = dir.path().join(format!("store-{query}-{backend}-{i}"));
                let with = dir.path().join(format!("{query}-{backend}-ckpt-{i}.yaml"));
                std::fs::write(&with, spec(query, events, backend, Some(&store))).expect("write spec");
                let r = run(bin, &with);
                if r.0 < best.0 {
                    best = r;
                }
            }
            println!(
                "{query:5} {backend:8} {none:>9.2} {:>9.2} {:>7.2} {:>6} {:>10.0} {:>12.0} {:>14.0}",
                best.0,
                none / best.0,
                best.1,
                best.2,
                best.3,
                best.4
            );
        }
    }
}
