//! Nexmark q0, q1, q2, q5, q7 and q11 through the release `sluice` binary, over the `nexmark`
//! generator and over the same bids written to two JSON-lines and two Parquet files, at
//! parallelism 1 and 2, with the stateful queries (q5, q7, q11) on the memory and the RocksDB
//! state backends.
//!
//! Each run is a child process; its wall time gives events per second and `wait4` gives its
//! peak resident memory and minor page faults. Baselines measured in the same run: q0 on the
//! same input (stateful queries are reported as a ratio of it), a bare Arrow JSON decode of the
//! same JSON-lines files (q0 over JSON lines runs alternately with it, to compare), and the
//! stateless queries again over 10× the input (their peak memory must stay flat).
//!
//! `cargo bench --bench nexmark`. Knobs: `SLUICE_BENCH_EVENTS` (bids, default 1,000,000),
//! `SLUICE_BENCH_RUNS` (each configuration runs this many times and the fastest run counts,
//! default 3), `SLUICE_BENCH_BEFORE` (another `sluice` binary, such as a build of an earlier commit: every
//! run is repeated with it and shown side by side, a before/after table in one run),
//! `SLUICE_BENCH_PARALLELISM` (default `1,2`), `SLUICE_BENCH_BIG_GB` (also run q0 over a
//! JSON-lines file of about this many GB), `SLUICE_BENCH_QUERIES` (such as `q0,q2`; default all)
//! and `SLUICE_BENCH_INPUTS` (such as `jsonl`; default `generator,jsonl,parquet`);
//! `SLUICE_BENCH_MEMORY=0` skips the peak-memory comparison at 10× the input.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const QUERIES: [&str; 6] = ["q0", "q1", "q2", "q5", "q7", "q11"];

fn transforms(query: &str) -> &'static str {
    match query {
        "q0" => "",
        "q1" => {
            "transforms:\n  out: { type: select, input: bids, columns: { auction: auction, bidder: bidder, price: \"price * 0.908\", date_time: date_time } }\n"
        }
        "q2" => {
            "transforms:\n  out: { type: sql, input: bids, query: \"SELECT auction, price FROM bids WHERE auction % 123 = 0\" }\n"
        }
        "q5" => {
            "transforms:\n  out: { type: window_aggregate, input: bids, key: [auction], window: { type: hopping, size: 10s, slide: 2s }, aggregates: { bids: \"count(*)\" } }\n"
        }
        "q7" => {
            "transforms:\n  out: { type: window_aggregate, input: bids, window: { type: tumbling, size: 10s }, aggregates: { top_price: \"max(price)\" } }\n"
        }
        "q11" => {
            "transforms:\n  out: { type: window_aggregate, input: bids, key: [bidder], window: { type: session, gap: 10s }, aggregates: { bids: \"count(*)\" } }\n"
        }
        _ => unreachable!(),
    }
}

const BID_SCHEMA: &str = "{ auction: bigint, bidder: bigint, price: bigint, channel: string, url: string, date_time: timestamp, extra: string }";

fn source(mode: &str, events: u64, data: &Path) -> String {
    match mode {
        "generator" => format!(
            "  bids: {{ connector: datagen, nexmark: {{ table: bids }}, count: {events}, seed: 1, event_time: {{ column: date_time, max_out_of_orderness: 1s }} }}\n"
        ),
        format => format!(
            "  bids: {{ connector: file, path: \"{}\", format: {format}, schema: {BID_SCHEMA}, event_time: {{ column: date_time, max_out_of_orderness: 1s }} }}\n",
            data.display()
        ),
    }
}

fn spec(query: &str, mode: &str, events: u64, data: &Path, parallelism: u32, backend: &str) -> String {
    let input = if query == "q0" { "bids" } else { "out" };
    format!(
        "version: 1\nname: nexmark-{query}\nparallelism: {parallelism}\nstate: {{ backend: {backend} }}\nsources:\n{}{}sinks:\n  nowhere: {{ connector: blackhole, input: {input} }}\n",
        source(mode, events, data),
        transforms(query)
    )
}

/// One measured run.
struct Run {
    seconds: f64,
    peak_mb: f64,
    minor_faults: f64,
}

/// Runs `sluice` with `args`.
#[allow(clippy::zombie_processes)] // `wait4` below reaps the child and reads its usage.
fn measure(bin: &Path, args: &[&str]) -> Run {
    let started = Instant::now();
    let child = Command::new(bin).args(args).stdout(std::process::Stdio::null()).spawn().expect("sluice runs");
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    assert!(pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "sluice {args:?} failed");
    Run { seconds, peak_mb: usage.ru_maxrss as f64 / 1024.0, minor_faults: usage.ru_minflt as f64 }
}

/// The fastest of `runs` runs (with its memory and faults).
fn best_of(runs: usize, bin: &Path, args: &[&str]) -> Run {
    (0..runs.max(1))
        .map(|_| measure(bin, args))
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
        .expect("at least one run")
}

/// Writes `events` bids to `dir/bids.<format>` with sluice itself.
fn write_bids(bin: &Path, dir: &Path, events: u64, format: &str) -> PathBuf {
    let out = dir.join(format!("bids-{events}-{format}"));
    let spec = format!(
        "version: 1\nname: write-bids\nparallelism: 2\nsources:\n  bids: {{ connector: datagen, nexmark: {{ table: bids }}, count: {events}, seed: 1 }}\nsinks:\n  files: {{ connector: file, input: bids, path: \"{}\", format: {format}, rolling: {{ max_size: 8GB }} }}\n",
        out.display()
    );
    let path = dir.join(format!("write-{events}-{format}.yaml"));
    std::fs::write(&path, spec).expect("write spec");
    measure(bin, &["run", "--quiet", &path.to_string_lossy()]);
    out
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
}

/// Decodes the JSON-lines files in `dir` with Arrow alone, on `threads` threads (files dealt
/// round-robin, as sluice's file source deals them to subtasks); returns seconds.
fn bare_json_decode(dir: &Path, threads: usize) -> f64 {
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("auction", arrow::datatypes::DataType::Int64, true),
        arrow::datatypes::Field::new("bidder", arrow::datatypes::DataType::Int64, true),
        arrow::datatypes::Field::new("price", arrow::datatypes::DataType::Int64, true),
        arrow::datatypes::Field::new("channel", arrow::datatypes::DataType::Utf8, true),
        arrow::datatypes::Field::new("url", arrow::datatypes::DataType::Utf8, true),
        arrow::datatypes::Field::new("date_time", sluice::spec::values::timestamp_type(), true),
        arrow::datatypes::Field::new("extra", arrow::datatypes::DataType::Utf8, true),
    ]));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).expect("dir").map(|f| f.expect("entry").path()).collect();
    files.sort();
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let mine: Vec<PathBuf> = files.iter().skip(t).step_by(threads).cloned().collect();
            let schema = schema.clone();
            std::thread::spawn(move || {
                let mut rows = 0;
                for f in mine {
                    let file = std::fs::File::open(f).expect("open");
                    let reader = arrow::json::ReaderBuilder::new(schema.clone())
                        .with_batch_size(8192)
                        .build(BufReader::with_capacity(1 << 20, file))
                        .expect("reader");
                    for b in reader {
                        rows += b.expect("decodes").num_rows();
                    }
                }
                rows
            })
        })
        .collect();
    let rows: usize = workers.into_iter().map(|w| w.join().expect("decoder")).sum();
    assert!(rows > 0);
    started.elapsed().as_secs_f64()
}

fn main() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_sluice"));
    let before: Option<PathBuf> = std::env::var_os("SLUICE_BENCH_BEFORE").map(PathBuf::from);
    let runs: usize = std::env::var("SLUICE_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let events: u64 = std::env::var("SLUICE_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let big_gb: f64 = std::env::var("SLUICE_BENCH_BIG_GB").ok().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let parallelisms: Vec<u32> = std::env::var("SLUICE_BENCH_PARALLELISM")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let list = |var: &str, all: &[&'static str]| -> Vec<&'static str> {
        let wanted = std::env::var(var).unwrap_or_default();
        all.iter().copied().filter(|q| wanted.is_empty() || wanted.split(',').any(|w| w.trim() == *q)).collect()
    };
    let queries = list("SLUICE_BENCH_QUERIES", &QUERIES);
    let inputs = list("SLUICE_BENCH_INPUTS", &["generator", "jsonl", "parquet"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let jsonl = write_bids(&bin, dir.path(), events, "jsonl");
    let parquet = write_bids(&bin, dir.path(), events, "parquet");
    println!(
        "nexmark bids: {events} events; jsonl {:.0} MB, parquet {:.0} MB (two files each); release build; fastest of {runs} runs",
        dir_size(&jsonl) as f64 / 1e6,
        dir_size(&parquet) as f64 / 1e6
    );
    let before_header = if before.is_some() {
        format!(" {:>9} {:>10} {:>11} {:>8}", "before s", "before MB", "before f/M", "speedup")
    } else {
        String::new()
    };
    println!(
        "{:<5} {:<10} {:>3} {:<8} {:>8} {:>12} {:>8} {:>10} {:>8}{before_header}",
        "query", "input", "p", "state", "seconds", "events/s", "peak MB", "faults/M", "× q0"
    );
    let mut q0 = std::collections::HashMap::new();
    for &q in &queries {
        let backends: &[&str] = if matches!(q, "q5" | "q7" | "q11") { &["memory", "rocksdb"] } else { &["memory"] };
        for &p in &parallelisms {
            for (mode, data) in
                [("generator", jsonl.as_path()), ("jsonl", jsonl.as_path()), ("parquet", parquet.as_path())]
                    .into_iter()
                    .filter(|(m, _)| inputs.contains(m))
            {
                for backend in backends {
                    let path = dir.path().join(format!("{q}-{mode}-{p}-{backend}.yaml"));
                    std::fs::write(&path, spec(q, mode, events, data, p, backend)).expect("spec");
                    let r = best_of(runs, &bin, &["run", "--quiet", &path.to_string_lossy()]);
                    if q == "q0" {
                        q0.insert((mode, p), r.seconds);
                    }
                    let ratio = q0.get(&(mode, p)).map_or(f64::NAN, |s| s / r.seconds);
                    let then = before.as_ref().map_or(String::new(), |b| {
                        let o = best_of(runs, b, &["run", "--quiet", &path.to_string_lossy()]);
                        format!(
                            " {:>9.2} {:>10.1} {:>11.0} {:>8.2}",
                            o.seconds,
                            o.peak_mb,
                            o.minor_faults * 1e6 / events as f64,
                            o.seconds / r.seconds
                        )
                    });
                    println!(
                        "{q:<5} {mode:<10} {p:>3} {backend:<8} {:>8.2} {:>12.0} {:>8.1} {:>10.0} {ratio:>8.2}{then}",
                        r.seconds,
                        events as f64 / r.seconds,
                        r.peak_mb,
                        r.minor_faults * 1e6 / events as f64,
                    );
                }
            }
        }
    }
    println!();
    if inputs.contains(&"jsonl") && queries.contains(&"q0") {
        // Side by side: q0 and the bare decode alternate, so both see the same machine.
        for &p in &parallelisms {
            let path = dir.path().join(format!("q0-jsonl-{p}-memory.yaml"));
            let (mut q0, mut bare) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..runs.max(1) {
                q0 = q0.min(measure(&bin, &["run", "--quiet", &path.to_string_lossy()]).seconds);
                bare = bare.min(bare_json_decode(&jsonl, p as usize));
            }
            println!(
                "baseline: bare Arrow JSON decode of the same files on {p} thread(s): {bare:.2} s ({:.0} events/s), q0 over jsonl at p={p} alternating with it: {q0:.2} s, {:.2}× its speed",
                events as f64 / bare,
                bare / q0
            );
        }
    }

    // Peak memory of stateless queries at 1× and 10× the input.
    if std::env::var("SLUICE_BENCH_MEMORY").is_ok_and(|v| v == "0") {
        return;
    }
    let jsonl10 = write_bids(&bin, dir.path(), events * 10, "jsonl");
    println!("\npeak memory, 1× vs 10× input ({} vs {} events, JSON lines):", events, events * 10);
    for q in ["q0", "q1", "q2"].into_iter().filter(|q| queries.contains(q)) {
        let mut peaks = Vec::new();
        for (n, data) in [(events, &jsonl), (events * 10, &jsonl10)] {
            let path = dir.path().join(format!("{q}-mem-{n}.yaml"));
            std::fs::write(&path, spec(q, "jsonl", n, data, 1, "memory")).expect("spec");
            peaks.push(measure(&bin, &["run", "--quiet", &path.to_string_lossy()]).peak_mb);
        }
        println!("  {q}: {:.1} MB → {:.1} MB ({:.2}×)", peaks[0], peaks[1], peaks[1] / peaks[0]);
    }
    drop(jsonl10);

    if big_gb > 0.0 {
        let per_event = dir_size(&jsonl) as f64 / events as f64;
        let n = (big_gb * 1e9 / per_event) as u64;
        let big = write_bids(&bin, dir.path(), n, "jsonl");
        let path = dir.path().join("q0-big.yaml");
        std::fs::write(&path, spec("q0", "jsonl", n, &big, 1, "memory")).expect("spec");
        let Run { seconds: s, peak_mb: mb, .. } = measure(&bin, &["run", "--quiet", &path.to_string_lossy()]);
        println!(
            "\nq0 over a {:.2} GB JSON-lines file ({n} events): {s:.1} s, {:.0} events/s, peak {mb:.1} MB",
            dir_size(&big) as f64 / 1e9,
            n as f64 / s
        );
    }
}
