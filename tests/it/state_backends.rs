//! The state backends through the `sluice` binary: one spec run with `backend: memory` and with
//! `backend: rocksdb` writes the same rows (tumbling, hopping and session windows, count
//! distinct, min/max of strings, allowed lateness and late rows), a RocksDB run leaves no
//! state folder behind, and `sluice plan` lists the states the window operator declares.

use std::path::Path;

use crate::sluice;

/// Source files of 50 rows each (one batch, then a watermark): 6 keys, event time drifting
/// forward with some rows far behind, so that sessions both merge
/// and split. (Rows that trail by whole files are not late: files are read by lowest
/// watermark. Late rows and updates within the lateness, on both backends: `windows.rs`.)
fn write_rows(dir: &Path, bad_last: bool) {
    let mut out = String::new();
    let base = 1_767_225_600_000_i64; // 2026-01-01T00:00:00Z
    for i in 0..3000_i64 {
        let r = (i * 7919 + 13) % 1000;
        let back = if r % 17 == 0 { 25_000 } else { r * 7 };
        let ts = base + i * 300 - back;
        let secs = ts.div_euclid(1000);
        let t = chrono::DateTime::from_timestamp(secs, (ts.rem_euclid(1000) * 1_000_000) as u32).unwrap();
        out.push_str(&format!(
            "{{\"k\": {}, \"v\": {}, \"tag\": \"t{}\", \"ts\": \"{}\"}}\n",
            r % 6,
            r % 50 - 10,
            (r / 6) % 9,
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ));
        if i % 50 == 49 {
            if bad_last && i == 2999 {
                out.push_str("{\"k\": 1, \"v\": 1, \"tag\": \"x\", \"ts\": \"not a time\"}\n");
            }
            std::fs::write(dir.join(format!("events-{:03}.jsonl", i / 50)), std::mem::take(&mut out)).unwrap();
        }
    }
}

fn spec(data: &Path, out: &Path, state: &str) -> String {
    let agg = r#"{ n: "count(*)", total: "sum(v)", lo: "min(v)", mean: "avg(v)", tags: "count(DISTINCT tag)", first_tag: "min(tag)", last_tag: "max(tag)" }"#;
    let window = |name: &str, shape: &str, late: &str| {
        format!(
            "  {name}:\n    type: window_aggregate\n    input: events\n    key: [k]\n    window: {shape}\n    allowed_lateness: 3s\n{late}    aggregates: {agg}\n    parallelism: 2\n"
        )
    };
    let sink = |name: &str, input: &str| {
        format!(
            "  {name}: {{ connector: file, input: {input}, path: \"{}/{name}/\", format: jsonl, parallelism: 1 }}\n",
            out.display()
        )
    };
    format!(
        "version: 1\nname: backends\nstate: {state}\nsources:\n  events:\n    connector: file\n    path: \"{}\"\n    format: jsonl\n    schema: {{ k: bigint, v: bigint, tag: string, ts: timestamp }}\n    event_time: {{ column: ts, max_out_of_orderness: 2s }}\n    parallelism: 1\ntransforms:\n{}{}{}sinks:\n{}{}{}{}",
        data.display(),
        window("tumbling", "{ type: tumbling, size: 10s }", "    late_output: too_late\n"),
        window("hopping", "{ type: hopping, size: 9s, slide: 3s }", ""),
        window("session", "{ type: session, gap: 2s }", ""),
        sink("tumbling_out", "tumbling"),
        sink("hopping_out", "hopping"),
        sink("session_out", "session"),
        sink("late_out", "too_late"),
    )
}

/// Every line the sinks wrote, per sink, sorted.
fn outputs(out: &Path) -> Vec<(String, Vec<String>)> {
    let mut sinks = Vec::new();
    for name in ["tumbling_out", "hopping_out", "session_out", "late_out"] {
        let mut lines = Vec::new();
        for f in std::fs::read_dir(out.join(name)).unwrap() {
            let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
            lines.extend(text.lines().map(str::to_string));
        }
        lines.sort();
        sinks.push((name.to_string(), lines));
    }
    sinks
}

fn run(dir: &Path, state: &str) -> Vec<(String, Vec<String>)> {
    let out = dir.join(format!("out-{}", if state.contains("rocksdb") { "rocksdb" } else { "memory" }));
    let spec_path = dir.join(format!("spec-{}.yaml", out.file_name().unwrap().to_str().unwrap()));
    std::fs::write(&spec_path, spec(&dir.join("events-*.jsonl"), &out, state)).unwrap();
    let result = sluice(&["run", "--quiet", spec_path.to_str().unwrap()]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    outputs(&out)
}

#[test]
fn memory_and_rocksdb_write_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    write_rows(dir.path(), false);
    let state_dir = dir.path().join("state");
    let memory = run(dir.path(), "{ backend: memory }");
    let rocks = run(dir.path(), &format!("{{ backend: rocksdb, path: \"{}\", memory: 32MB }}", state_dir.display()));
    for ((name, m), (_, r)) in memory.iter().zip(&rocks) {
        if name != "late_out" {
            assert!(m.len() > 20, "{name}: only {} rows", m.len());
        }
        assert_eq!(m, r, "{name} differs between backends");
    }
    let all: Vec<serde_json::Value> =
        memory.iter().take(3).flat_map(|(_, l)| l).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        all.iter().any(|v| v["tags"].as_i64() > Some(1) && v["tags"].as_i64() < v["n"].as_i64()),
        "count distinct counts values, not rows"
    );
    assert!(all.iter().any(|v| v["first_tag"] != v["last_tag"]), "min and max of strings");
    // The RocksDB run kept its state under `path` and removed it when it ended.
    assert!(state_dir.is_dir(), "the run opened RocksDB state under `path`");
    let left: Vec<_> = std::fs::read_dir(&state_dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "state left behind: {left:?}");
}

#[test]
fn a_failed_rocksdb_run_leaves_no_state_folder() {
    let dir = tempfile::tempdir().unwrap();
    // A row whose event time is not a timestamp fails the job once windows hold state.
    write_rows(dir.path(), true);
    let state_dir = dir.path().join("state");
    let out = dir.path().join("out");
    let spec_path = dir.path().join("spec.yaml");
    let state = format!("{{ backend: rocksdb, path: \"{}\" }}", state_dir.display());
    std::fs::write(&spec_path, spec(&dir.path().join("events-*.jsonl"), &out, &state)).unwrap();
    let result = sluice(&["run", "--quiet", spec_path.to_str().unwrap()]);
    assert!(!result.status.success(), "the bad record fails the run");
    assert!(state_dir.is_dir(), "the run opened RocksDB state under `path`");
    let left: Vec<_> = std::fs::read_dir(&state_dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "state left behind: {left:?}");
}

#[test]
fn plan_lists_the_declared_states() {
    let out = sluice(&["plan", "pipelines/orders.yaml"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("state: keyed — slices (value: namespace i64 (ordered), value accumulators), timers (timers: "),
        "{text}"
    );
    let out = sluice(&["plan", "pipelines/sessions.toml", "--format", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let windows: Vec<&serde_json::Value> =
        v["operators"].as_array().unwrap().iter().filter(|o| o["type"] == "window_aggregate").collect();
    assert!(!windows.is_empty());
    for w in windows {
        let declared = w["state"]["declared"].as_array().unwrap();
        let names: Vec<&str> = declared.iter().map(|d| d["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["sessions", "timers"], "{w}");
        assert_eq!(declared[0]["kind"], "value");
        assert_eq!(declared[1]["kind"], "timers");
    }
}
