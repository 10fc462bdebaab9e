//! State larger than memory: session windows over many distinct keys on RocksDB with a
//! 256 MB state budget, its peak RSS and state size on disk, and the same query on a smaller
//! sample run on both backends, whose outputs must be identical.
//!
//! `cargo bench --bench state_scale`. Knobs: `SLUICE_BENCH_KEYS` (default 20,000,000),
//! `SLUICE_BENCH_SAMPLE_KEYS` (default 1,000,000).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Every row its own key; all sessions stay open until the end of input (event times span
/// ten minutes, the gap is an hour), so the whole key space is in state at once.
fn spec(keys: u64, backend: &str, state_dir: &Path, sink: &str) -> String {
    format!(
        "version: 1\nname: state-scale\nparallelism: 1\nstate: {{ backend: {backend}, path: \"{}\", memory: 256MB }}\n\
         sources:\n  events:\n    connector: datagen\n    count: {keys}\n    seed: 7\n    schema:\n      \
         user: {{ type: bigint, sequence: true }}\n      amount: {{ type: bigint, min: 1, max: 100 }}\n      \
         ts: {{ type: timestamp, min: \"2026-01-01T00:00:00Z\", max: \"2026-01-01T00:10:00Z\" }}\n    \
         event_time: {{ column: ts, max_out_of_orderness: 10m }}\n\
         transforms:\n  sessions:\n    type: window_aggregate\n    input: events\n    key: [user]\n    \
         window: {{ type: session, gap: 1h }}\n    aggregates: {{ n: \"count(*)\", total: \"sum(amount)\" }}\n\
         sinks:\n{sink}",
        state_dir.display()
    )
}

/// Runs `sluice`; returns (seconds, peak RSS in MB, largest state folder size seen in MB).
#[allow(clippy::zombie_processes)] // `wait4` below reaps the child and reads its usage.
fn measure(bin: &Path, spec_path: &Path, state_dir: &Path) -> (f64, f64, f64) {
    let started = Instant::now();
    let child = Command::new(bin)
        .args(["run", "--quiet", &spec_path.to_string_lossy()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sluice runs");
    let pid = child.id() as i32;
    let mut disk_peak = 0u64;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let done = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if done == pid {
            break;
        }
        disk_peak = disk_peak.max(tree_size(state_dir));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "sluice failed");
    (started.elapsed().as_secs_f64(), usage.ru_maxrss as f64 / 1024.0, disk_peak as f64 / 1e6)
}

fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => tree_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn sorted_lines(dir: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_dir(dir)
        .expect("output folder")
        .flat_map(|f| {
            std::fs::read_to_string(f.expect("entry").path())
                .expect("read")
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort_unstable();
    lines
}

fn main() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_sluice"));
    let keys: u64 = std::env::var("SLUICE_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000_000);
    let sample: u64 = std::env::var("SLUICE_BENCH_SAMPLE_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");

    // The sample on both backends: identical results.
    let mut outputs = Vec::new();
    for backend in ["memory", "rocksdb"] {
        let out = dir.path().join(format!("out-{backend}"));
        let sink =
            format!("  out: {{ connector: file, input: sessions, path: \"{}\", format: jsonl }}\n", out.display());
        let path = dir.path().join(format!("sample-{backend}.yaml"));
        std::fs::write(&path, spec(sample, backend, &state, &sink)).expect("spec");
        let (s, mb, disk) = measure(&bin, &path, &state);
        println!("{sample} keys, {backend:<7}: {s:>7.1} s, peak RSS {mb:>7.1} MB, state on disk up to {disk:>7.1} MB");
        outputs.push(sorted_lines(&out));
    }
    assert_eq!(outputs[0].len() as u64, sample, "one session per key");
    assert!(outputs[0] == outputs[1], "memory and RocksDB results differ");
    println!("  the two backends wrote the same {} sessions", outputs[0].len());

    let sink = "  out: { connector: blackhole, input: sessions }\n";
    let path = dir.path().join("all.yaml");
    std::fs::write(&path, spec(keys, "rocksdb", &state, sink)).expect("spec");
    let (s, mb, disk) = measure(&bin, &path, &state);
    println!(
        "{keys} keys, rocksdb, memory 256MB: {s:.1} s ({:.0} rows/s), peak RSS {mb:.1} MB, state on disk up to {disk:.1} MB",
        keys as f64 / s
    );
}
