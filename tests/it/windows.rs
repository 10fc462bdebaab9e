//! Window results against an independent reference: a plain per-row fold written here, on
//! generated data with out-of-order and late rows, for tumbling, hopping and session
//! windows at parallelism 1, 2 and 4, on the memory and the RocksDB state backend.
//!
//! Input is given as in `sluice test`: segments of rows separated by explicit watermarks, so
//! which rows are late is decided by the data, not by thread timing. The reference follows
//! the documented semantics: a window fires when the watermark reaches `end - 1`; rows for a
//! window past `end - 1 + lateness` are late; rows arriving after a window fired (but within
//! the lateness) produce an updated result at the end of their segment.
//!
//! With several source subtasks (files read in parallel) the watermark a window subtask sees
//! depends on thread timing, so that run is given data in which no row is ever behind the
//! watermark: every window then fires once, with all its rows, whatever the timing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde_json::{Value, json};
use sluice::runtime::controller::TestInput;
use sluice::runtime::{JobOptions, run_job};
use sluice::spec::loader::Syntax;
use sluice::spec::{Options, validate_text};
use sluice::testing::{format_ms, rows_of};

const BASE: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const LATENESS: i64 = 4_000;

#[derive(Debug, Clone, Copy)]
struct Event {
    k: i64,
    v: i64,
    d: i64,
    ts: i64,
}

enum Item {
    Row(Event),
    Watermark(i64),
}

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rows with event time drifting forward, jittered back by up to 30 s (so some are late for
/// a watermark that trails the maximum by 5 s), and a watermark every 25 rows.
fn generate(n: u64, seed: u64) -> Vec<Item> {
    let mut items = Vec::new();
    let mut max_ts = i64::MIN;
    for i in 0..n {
        let r = mix(seed ^ i);
        let ts = BASE + i as i64 * 700 - (r % 30_000) as i64 + ((r >> 20) % 3_000) as i64;
        let e = Event { k: (r >> 8) as i64 % 5, v: (r >> 16) as i64 % 100 - 20, d: (r >> 24) as i64 % 7, ts };
        max_ts = max_ts.max(ts);
        items.push(Item::Row(e));
        if i % 25 == 24 {
            items.push(Item::Watermark(max_ts - 5_000));
        }
    }
    items
}

#[derive(Debug, Clone, Default)]
struct Acc {
    count: i64,
    sum: i64,
    min: Option<i64>,
    max: Option<i64>,
    distinct: HashSet<i64>,
}

impl Acc {
    fn add(&mut self, e: &Event) {
        self.count += 1;
        self.sum += e.v;
        self.min = Some(self.min.map_or(e.v, |m| m.min(e.v)));
        self.max = Some(self.max.map_or(e.v, |m| m.max(e.v)));
        self.distinct.insert(e.d);
    }

    fn merge(&mut self, o: Acc) {
        self.count += o.count;
        self.sum += o.sum;
        self.min = match (self.min, o.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, o.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.distinct.extend(o.distinct);
    }

    fn row(&self, k: i64, start: i64, end: i64) -> String {
        format!(
            "k={k} [{}, {}) count={} sum={} min={:?} max={:?} avg={:.6} distinct={}",
            format_ms(start),
            format_ms(end),
            self.count,
            self.sum,
            self.min,
            self.max,
            self.sum as f64 / self.count as f64,
            self.distinct.len()
        )
    }
}

#[derive(Clone, Copy)]
enum Shape {
    Tumbling(i64),
    Hopping(i64, i64),
    Session(i64),
}

/// The reference: returns (results, late rows).
fn reference(items: &[Item], shape: Shape, lateness: i64) -> (Vec<String>, usize) {
    let mut wm = i64::MIN;
    let mut out = Vec::new();
    let mut late = 0;
    // Fixed windows: (k, start, end) → acc. Sessions: k → [(start, end, acc)].
    let mut windows: BTreeMap<(i64, i64, i64), Acc> = BTreeMap::new();
    let mut sessions: BTreeMap<i64, Vec<(i64, i64, Acc)>> = BTreeMap::new();
    let mut segment: Vec<Event> = Vec::new();
    let due = |end: i64, wm: i64| end - 1 <= wm;
    let is_late = |end: i64, wm: i64| end - 1 + lateness <= wm;
    let mut items: Vec<&Item> = items.iter().collect();
    items.push(&Item::Watermark(i64::MAX));
    for item in items {
        match item {
            Item::Row(e) => segment.push(*e),
            Item::Watermark(w) => {
                // The segment is one batch: apply it, then report updated windows that were due.
                let mut updated: Vec<(i64, i64, i64)> = Vec::new();
                match shape {
                    Shape::Tumbling(_) | Shape::Hopping(_, _) => {
                        let (size, slide) = match shape {
                            Shape::Tumbling(s) => (s, s),
                            Shape::Hopping(s, h) => (s, h),
                            Shape::Session(_) => unreachable!(),
                        };
                        for e in &segment {
                            let mut accepted = false;
                            let mut start = e.ts - e.ts.rem_euclid(slide);
                            while start > e.ts - size {
                                let end = start + size;
                                if !is_late(end, wm) {
                                    windows.entry((e.k, start, end)).or_default().add(e);
                                    accepted = true;
                                    if due(end, wm) && !updated.contains(&(e.k, start, end)) {
                                        updated.push((e.k, start, end));
                                    }
                                }
                                start -= slide;
                            }
                            late += usize::from(!accepted);
                        }
                        for w in &updated {
                            out.push(windows[w].row(w.0, w.1, w.2));
                        }
                    }
                    Shape::Session(gap) => {
                        let mut by_key: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
                        for e in &segment {
                            by_key.entry(e.k).or_default().push(*e);
                        }
                        for (k, mut rows) in by_key {
                            rows.sort_by_key(|e| e.ts);
                            let list = sessions.entry(k).or_default();
                            let mut touched: Vec<(i64, i64)> = Vec::new();
                            for e in rows {
                                let (s, t) = (e.ts, e.ts + gap);
                                let overlapping: Vec<usize> =
                                    (0..list.len()).filter(|&i| list[i].0 <= t && s <= list[i].1).collect();
                                if overlapping.is_empty() && is_late(t, wm) {
                                    late += 1;
                                    continue;
                                }
                                let mut merged = (s, t, Acc::default());
                                for &i in overlapping.iter().rev() {
                                    let old = list.remove(i);
                                    merged.0 = merged.0.min(old.0);
                                    merged.1 = merged.1.max(old.1);
                                    merged.2.merge(old.2);
                                }
                                merged.2.add(&e);
                                if due(merged.1, wm) {
                                    touched.retain(|x| *x != (merged.0, merged.1));
                                    touched.push((merged.0, merged.1));
                                }
                                list.push(merged);
                            }
                            for (s, t) in touched {
                                if let Some(x) = list.iter().find(|x| x.0 == s && x.1 == t) {
                                    out.push(x.2.row(k, s, t));
                                }
                            }
                        }
                    }
                }
                segment.clear();
                // Then the watermark: fire what became due, drop what is past lateness.
                let new_wm = (*w).max(wm);
                match shape {
                    Shape::Session(_) => {
                        for (k, list) in sessions.iter_mut() {
                            let mut fired: Vec<(i64, i64)> =
                                list.iter().filter(|x| !due(x.1, wm) && due(x.1, new_wm)).map(|x| (x.0, x.1)).collect();
                            fired.sort_by_key(|x| x.1);
                            for (s, t) in fired {
                                let x = list.iter().find(|x| x.0 == s && x.1 == t).unwrap();
                                out.push(x.2.row(*k, s, t));
                            }
                            list.retain(|x| !is_late(x.1, new_wm));
                        }
                    }
                    _ => {
                        for ((k, s, t), acc) in &windows {
                            if !due(*t, wm) && due(*t, new_wm) {
                                out.push(acc.row(*k, *s, *t));
                            }
                        }
                        windows.retain(|(_, _, t), _| !is_late(*t, new_wm));
                    }
                }
                wm = new_wm;
            }
        }
    }
    out.sort();
    (out, late)
}

fn spec(shape: Shape, parallelism: u32, backend: &str, source: &str, lateness: i64) -> String {
    let window = match shape {
        Shape::Tumbling(s) => format!("{{ type: tumbling, size: {}ms }}", s),
        Shape::Hopping(s, h) => format!("{{ type: hopping, size: {}ms, slide: {}ms }}", s, h),
        Shape::Session(g) => format!("{{ type: session, gap: {}ms }}", g),
    };
    format!(
        r#"version: 1
name: windows-reference
parallelism: {parallelism}
state: {backend}
sources:
  events:
{source}
    schema: {{ k: bigint, v: bigint, d: bigint, ts: timestamp }}
transforms:
  w:
    type: window_aggregate
    input: events
    key: [k]
    window: {window}
    allowed_lateness: {lateness}ms
    late_output: too_late
    aggregates: {{ n: "count(*)", total: "sum(v)", lo: "min(v)", hi: "max(v)", mean: "avg(v)", kinds: "count(DISTINCT d)" }}
sinks:
  out: {{ connector: blackhole, input: w }}
  late: {{ connector: blackhole, input: too_late }}
"#
    )
}

/// The `state:` setting of a backend; RocksDB keeps its folders under `dir`.
fn backend(name: &str, dir: &Path) -> String {
    match name {
        "rocksdb" => format!("{{ backend: rocksdb, path: \"{}\", memory: 64MB }}", dir.display()),
        // So little memory that windows keep almost nothing in their in-memory tier.
        "memory-small" => "{ backend: memory, memory: 16KB }".into(),
        _ => "{ backend: memory }".into(),
    }
}

const GIVEN_ROWS: &str = "    connector: datagen\n    event_time: { column: ts }";

fn engine(items: &[Item], shape: Shape, parallelism: u32, backend_name: &str, lateness: i64) -> (Vec<String>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let text = spec(shape, parallelism, &backend(backend_name, dir.path()), GIVEN_ROWS, lateness);
    let report = validate_text(Path::new("windows.yaml"), &text, Syntax::Yaml, &Options::default());
    let v = report.validated.unwrap_or_else(|| panic!("{:?}", report.diagnostics));
    let schema = v.streams["events"].schema.schema.clone();
    let mut inputs = Vec::new();
    let mut rows = Vec::new();
    let flush = |rows: &mut Vec<Value>, inputs: &mut Vec<TestInput>| {
        if rows.is_empty() {
            return;
        }
        let mut d =
            arrow::json::ReaderBuilder::new(schema.clone()).with_batch_size(rows.len()).build_decoder().unwrap();
        let text: String = rows.iter().map(|r| r.to_string() + "\n").collect();
        d.decode(text.as_bytes()).unwrap();
        inputs.push(TestInput::Rows(d.flush().unwrap().unwrap()));
        rows.clear();
    };
    for item in items {
        match item {
            Item::Row(e) => rows.push(json!({"k": e.k, "v": e.v, "d": e.d, "ts": format_ms(e.ts)})),
            Item::Watermark(w) => {
                flush(&mut rows, &mut inputs);
                inputs.push(TestInput::Watermark(*w));
            }
        }
    }
    flush(&mut rows, &mut inputs);
    let options = JobOptions {
        capture_sinks: true,
        test_inputs: Some(HashMap::from([("events".to_string(), inputs)])),
        ..JobOptions::default()
    };
    let result = run_job(&v, options).expect("job runs");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "state folders left behind");
    (engine_rows(&result), result.captured["late"].iter().map(|b| b.num_rows()).sum())
}

/// The window results a job sent to sink `out`, in the reference's format, sorted.
fn engine_rows(result: &sluice::runtime::JobResult) -> Vec<String> {
    let mut out: Vec<String> = result.captured["out"]
        .iter()
        .flat_map(rows_of)
        .map(|r| {
            let ms = |c: &str| sluice::connectors::datagen::chrono_like_rfc3339(r[c].as_str().unwrap()).unwrap();
            let acc = Acc {
                count: r["n"].as_i64().unwrap(),
                sum: r["total"].as_i64().unwrap(),
                min: r["lo"].as_i64(),
                max: r["hi"].as_i64(),
                distinct: (0..r["kinds"].as_i64().unwrap()).collect(),
            };
            let row = acc.row(r["k"].as_i64().unwrap(), ms("window_start"), ms("window_end"));
            // avg is computed by the engine: check it against its own sum and count.
            let mean = r["mean"].as_f64().unwrap();
            assert!((mean - acc.sum as f64 / acc.count as f64).abs() < 1e-9, "{row}: avg {mean}");
            row
        })
        .collect();
    out.sort();
    out
}

fn check(shape: Shape, name: &str, lateness: i64) {
    let items = generate(1500, 42);
    let (expected, expected_late) = reference(&items, shape, lateness);
    assert!(expected_late > 10, "{name}: the data must contain late rows, has {expected_late}");
    assert!(expected.len() > 20, "{name}: too few results");
    let runs = [
        ("memory", 1),
        ("memory", 2),
        ("memory", 4),
        ("memory-small", 1),
        ("memory-small", 4),
        ("rocksdb", 1),
        ("rocksdb", 2),
        ("rocksdb", 4),
    ];
    for (backend, p) in runs {
        let (actual, late) = engine(&items, shape, p, backend, lateness);
        let name = format!("{name} on {backend}, lateness {lateness} ms");
        assert_eq!(late, expected_late, "{name}, parallelism {p}: late rows");
        if actual != expected {
            let a: HashSet<_> = actual.iter().collect();
            let e: HashSet<_> = expected.iter().collect();
            let missing: Vec<_> = e.difference(&a).take(5).collect();
            let extra: Vec<_> = a.difference(&e).take(5).collect();
            panic!(
                "{name}, parallelism {p}: {} results, reference {}\nmissing: {missing:#?}\nextra: {extra:#?}",
                actual.len(),
                expected.len()
            );
        }
    }
}

#[test]
fn tumbling_windows_match_the_reference() {
    check(Shape::Tumbling(10_000), "tumbling", LATENESS);
}

#[test]
fn tumbling_windows_without_lateness_match_the_reference() {
    check(Shape::Tumbling(10_000), "tumbling", 0);
}

#[test]
fn hopping_windows_match_the_reference() {
    check(Shape::Hopping(10_000, 2_500), "hopping", LATENESS);
}

#[test]
fn hopping_windows_without_lateness_match_the_reference() {
    check(Shape::Hopping(10_000, 2_500), "hopping", 0);
    check(Shape::Hopping(6_000, 2_000), "hopping in three slides", 0);
}

#[test]
fn session_windows_match_the_reference() {
    check(Shape::Session(1_500), "session", LATENESS);
}

/// Rows in four files of consecutive time ranges, read by several source subtasks (each reads
/// its files in order, so its event times only drift back by the jitter); the watermark trails the
/// largest event time by more than any row's delay, so no row is late and each window fires once.
fn check_parallel_sources(shape: Shape, name: &str) {
    let items = generate(1200, 7);
    let rows: Vec<Event> = items
        .iter()
        .filter_map(|i| match i {
            Item::Row(e) => Some(*e),
            Item::Watermark(_) => None,
        })
        .collect();
    let events: Vec<Item> = rows.iter().map(|e| Item::Row(*e)).collect();
    // No row is late here, so windows fire once, from the in-memory tier (no lateness).
    let (expected, expected_late) = reference(&events, shape, 0);
    assert_eq!(expected_late, 0);
    assert!(expected.len() > 20, "{name}: too few results");
    let data = tempfile::tempdir().unwrap();
    for f in 0..4 {
        let text: String = rows
            .iter()
            .enumerate()
            .filter(|(i, _)| i * 4 / rows.len() == f)
            .map(|(_, e)| json!({"k": e.k, "v": e.v, "d": e.d, "ts": format_ms(e.ts)}).to_string() + "\n")
            .collect();
        std::fs::write(data.path().join(format!("part-{f}.jsonl")), text).unwrap();
    }
    let source = format!(
        "    connector: file\n    path: \"{}/*.jsonl\"\n    format: jsonl\n    event_time: {{ column: ts, max_out_of_orderness: 40s }}",
        data.path().display()
    );
    for backend_name in ["memory", "rocksdb"] {
        for p in [2, 4] {
            let dir = tempfile::tempdir().unwrap();
            let text = spec(shape, p, &backend(backend_name, dir.path()), &source, 0);
            let report = validate_text(Path::new("windows.yaml"), &text, Syntax::Yaml, &Options::default());
            let v = report.validated.unwrap_or_else(|| panic!("{:?}", report.diagnostics));
            let plan = sluice::plan::build(&v);
            assert_eq!(plan.operators.iter().find(|o| o.id == "events").unwrap().parallelism, p);
            let result = run_job(&v, JobOptions { capture_sinks: true, ..JobOptions::default() }).expect("job runs");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "state folders left behind");
            let actual = engine_rows(&result);
            assert_eq!(actual, expected, "{name} on {backend_name}, parallelism {p}");
        }
    }
}

#[test]
fn windows_match_the_reference_with_several_source_subtasks() {
    check_parallel_sources(Shape::Tumbling(10_000), "tumbling");
    check_parallel_sources(Shape::Hopping(10_000, 2_500), "hopping");
    check_parallel_sources(Shape::Session(1_500), "session");
}
