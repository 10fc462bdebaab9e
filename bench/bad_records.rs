//! The cost of bad records: a file source reading JSON lines and CSV, clean and with 1% bad
//! lines (half of them values of the wrong type, half lines that do not parse), through the
//! release `sluice` binary with `on_error: skip`. Reports rows per second and the ratio of bad
//! to clean, which should stay above 0.5.
//!
//! `cargo bench --bench bad_records`. Knob: `SLUICE_BENCH_ROWS` (default 1,000,000).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn write_data(dir: &Path, format: &str, rows: u64, bad: bool) -> PathBuf {
    let path = dir.join(format!("{}.{format}", if bad { "bad" } else { "clean" }));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    if format == "csv" {
        writeln!(out, "id,name,amount,ts").unwrap();
    }
    for i in 0..rows {
        let ts = 1_767_225_600_000 + i as i64;
        let line = match (format, bad, i % 100) {
            ("csv", true, 37) => format!("{i},name{i},not a number,{ts}"),
            ("csv", true, 71) => format!("{i},name{i}"),
            ("csv", ..) => format!("{i},name{i},{}.25,{ts}", i % 1000),
            (_, true, 37) => format!("{{\"id\": {i}.5, \"name\": \"name{i}\", \"amount\": 1.0, \"ts\": {ts}}}"),
            (_, true, 71) => format!("{{\"id\": {i}, \"name\": \"name{i}\""),
            _ => format!("{{\"id\": {i}, \"name\": \"name{i}\", \"amount\": {}.25, \"ts\": {ts}}}", i % 1000),
        };
        writeln!(out, "{line}").unwrap();
    }
    path
}

fn measure(bin: &Path, dir: &Path, format: &str, data: &Path) -> f64 {
    let spec = dir.join(format!("{format}.yaml"));
    std::fs::write(
        &spec,
        format!(
            "version: 1\nname: bad-records\nparallelism: 1\nsources:\n  src: {{ connector: file, path: \"{}\", format: {format}, schema: {{ id: bigint, name: string, amount: double, ts: timestamp }}, event_time: {{ column: ts }}, on_error: skip }}\nsinks:\n  nowhere: {{ connector: blackhole, input: src }}\n",
            data.display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new(bin).args(["run", "--quiet"]).arg(&spec).output().expect("sluice runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    started.elapsed().as_secs_f64()
}

fn main() {
    let rows: u64 = std::env::var("SLUICE_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_sluice"));
    let dir = tempfile::tempdir().unwrap();
    println!("bad records: {rows} rows, 1% bad; parallelism 1");
    for format in ["jsonl", "csv"] {
        let clean = write_data(dir.path(), format, rows, false);
        let bad = write_data(dir.path(), format, rows, true);
        let clean_s = measure(&bin, dir.path(), format, &clean);
        let bad_s = measure(&bin, dir.path(), format, &bad);
        println!(
            "{format:6} clean {:>12.0} rows/s   1% bad {:>12.0} rows/s   ratio {:.2}",
            rows as f64 / clean_s,
            rows as f64 / bad_s,
            clean_s / bad_s
        );
    }
}
