//! The engine core: cancel through messages, the master and executor talking only in
//! messages, deployment descriptors, error domains, and hash keys checked at build.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sluice::plan::{self, Partitioning};
use sluice::runtime::controller::{JobOptions, cancel_channel, run_job};
use sluice::runtime::descriptor::{self, DeploymentDescriptor};
use sluice::runtime::executor::{ExecutorOptions, TaskExecutor};
use sluice::runtime::master::{JobMaster, JobState};
use sluice::runtime::messages::{ToExecutor, transport};
use sluice::runtime::{ErrorDomain, JobResult};
use sluice::spec::loader::Syntax;
use sluice::spec::{Options, Validated, validate_text};

fn validated(yaml: &str) -> Validated {
    let report = validate_text(Path::new("test.yaml"), yaml, Syntax::Yaml, &Options::default());
    report.validated.unwrap_or_else(|| panic!("valid spec: {:?}", report.diagnostics))
}

const ENDLESS: &str = "version: 1\nname: endless\nparallelism: 2\nsources:\n  g: { connector: datagen, rows_per_second: 20000, schema: { k: bigint, ts: timestamp }, event_time: { column: ts } }\ntransforms:\n  w: { type: window_aggregate, input: g, key: [k], window: { type: tumbling, size: 1s }, aggregates: { n: \"count(*)\" } }\nsinks:\n  out: { connector: blackhole, input: g }\n  wins: { connector: blackhole, input: w }\n";

/// Runs `v` on another thread, cancels it with drain after `after`, and waits (bounded).
fn run_and_cancel(v: Validated, after: Duration) -> JobResult {
    let (handle, requests) = cancel_channel();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let options = JobOptions { capture_sinks: true, cancel: Some(requests), ..JobOptions::default() };
        let _ = tx.send(run_job(&v, options));
    });
    std::thread::sleep(after);
    handle.cancel();
    rx.recv_timeout(Duration::from_secs(30)).expect("the job ends after cancel").expect("a cancelled job succeeds")
}

#[test]
fn cancel_drains_an_endless_job_and_every_row_read_reaches_the_sink() {
    let result = run_and_cancel(validated(ENDLESS), Duration::from_millis(500));
    assert!(result.stopped);
    let read = result.stats.iter().find(|s| s.id == "g").unwrap().rows_out;
    let sunk: usize = result.captured["out"].iter().map(|b| b.num_rows()).sum();
    assert!(read > 0);
    assert_eq!(sunk as u64, read, "drained: every row read was delivered");
    assert_eq!(result.stats.iter().find(|s| s.id == "out").unwrap().rows_in, read, "final counters are complete");
}

/// Pumps messages between `master` and `executor` until `done` or a deadline.
fn pump(
    master: &mut JobMaster,
    executor: &mut TaskExecutor<'_>,
    mut out: Vec<ToExecutor>,
    done: impl Fn(&JobMaster) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        while let Some(m) = out.pop() {
            for reply in executor.handle(transport(m)) {
                out.extend(master.on_message(transport(reply)));
            }
        }
        if done(master) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out in state {:?}", master.state());
        for report in executor.poll(Duration::from_millis(20)) {
            out.extend(master.on_message(transport(report)));
        }
    }
}

#[test]
fn every_subtask_answers_checkpoint_triggers_and_cancel_through_its_mailbox() {
    let v = validated(ENDLESS);
    let plan = plan::build(&v);
    let splits = HashMap::new();
    let descriptors = descriptor::build(&v, &plan, &splits).unwrap();
    let subtasks = descriptors.len();
    assert!(subtasks >= 4, "sources and gate-fed subtasks: {subtasks}");
    let mut master = JobMaster::new(5, descriptors);
    let options = ExecutorOptions { channel_capacity: 1 << 20, capture_sinks: true, ..Default::default() };
    let mut executor = TaskExecutor::new(&v, options);
    let deploy = master.start();
    pump(&mut master, &mut executor, deploy, |m| m.state() == JobState::Running);
    let trigger = master.trigger_checkpoint();
    pump(&mut master, &mut executor, trigger, |m| m.acknowledgements(1) == subtasks);
    assert_eq!(master.state(), JobState::Running, "a checkpoint trigger does not stop the job");
    let cancel = master.cancel(true);
    pump(&mut master, &mut executor, cancel, JobMaster::is_terminal);
    assert_eq!(master.state(), JobState::Finished);
    assert!(master.failure().is_none());
    let captured = executor.shutdown();
    assert!(captured["out"].iter().map(|b| b.num_rows()).sum::<usize>() > 0);
}

#[test]
fn deployment_descriptors_survive_serialization_and_wire_every_channel() {
    let v = validated(ENDLESS);
    let plan = plan::build(&v);
    let descriptors = descriptor::build(&v, &plan, &HashMap::new()).unwrap();
    let text = serde_json::to_string(&descriptors).unwrap();
    let back: Vec<DeploymentDescriptor> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, descriptors);
    // Every output address names a channel of its consumer that records this producer.
    let by_id: HashMap<_, _> = descriptors.iter().map(|d| (d.id, d)).collect();
    let mut addressed = 0;
    for d in &descriptors {
        for (_, edges) in &d.outputs {
            for e in edges {
                for a in &e.consumers {
                    let input = &by_id[&a.consumer].inputs[a.channel];
                    assert_eq!(input.producer, d.id);
                    addressed += 1;
                }
            }
        }
    }
    let channels: usize = descriptors.iter().map(|d| d.inputs.len()).sum();
    assert_eq!(addressed, channels, "every channel has exactly one producer");
    assert!(channels >= 2 * 2 * 2, "p=2: two hash edges and two forward/rebalance edges");
}

#[test]
fn an_unknown_hash_key_column_is_an_error_at_build() {
    let v = validated(ENDLESS);
    let mut plan = plan::build(&v);
    let edge =
        plan.edges.iter_mut().find(|e| matches!(e.partitioning, Partitioning::Hash { .. })).expect("a keyed edge");
    edge.partitioning = Partitioning::Hash { key: vec!["k".into(), "nope".into()] };
    let err = descriptor::build(&v, &plan, &HashMap::new()).expect_err("an unknown key column");
    assert!(err.to_string().contains("`nope`"), "{err}");
    assert_eq!(err.operator, "w");
}

fn failing(yaml: &str) -> sluice::runtime::controller::JobError {
    let v = validated(yaml);
    run_job(&v, JobOptions::default()).expect_err("the job fails")
}

#[test]
fn failures_carry_their_domain_and_whether_a_retry_can_help() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"id\": 1}\n{\"id\": \"x\"}\n").unwrap();
    let bad = format!(
        "version: 1\nname: bad\nsources:\n  s: {{ connector: file, path: \"{}\", format: jsonl, schema: {{ id: bigint }} }}\nsinks:\n  o: {{ connector: blackhole, input: s }}\n",
        input.display()
    );
    let e = failing(&bad);
    assert_eq!((e.error.domain, e.error.retryable), (ErrorDomain::BadData, false), "{e}");

    // A file holds the name of the folder the sink must create.
    std::fs::write(dir.path().join("blocked"), "in the way").unwrap();
    let blocked = format!(
        "version: 1\nname: blocked\nsources:\n  s: {{ connector: datagen, count: 10, schema: {{ id: bigint }} }}\nsinks:\n  o: {{ connector: file, input: s, path: \"{}/blocked/out\", format: jsonl }}\n",
        dir.path().display()
    );
    let e = failing(&blocked);
    assert_eq!(e.operator, "o");
    assert_eq!((e.error.domain, e.error.retryable), (ErrorDomain::External, false), "{e}");
}

/// An operator that reads one stream twice (as a self-join will) has two inputs: two edges,
/// and its channels say which input each feeds.
#[test]
fn a_stream_read_twice_feeds_two_inputs() {
    let v = validated(
        "version: 1\nname: self\nparallelism: 2\nsources:\n  a: { connector: datagen, count: 10, schema: { x: bigint } }\n\
         transforms:\n  both: { type: union, inputs: [a, a] }\nsinks:\n  o: { connector: blackhole, input: both }\n",
    );
    let plan = plan::build(&v);
    let into: Vec<usize> = plan.edges.iter().filter(|e| e.to == "both").map(|e| e.input).collect();
    assert_eq!(into, [0, 1]);
    let descriptors = descriptor::build(&v, &plan, &HashMap::new()).unwrap();
    for d in descriptors.iter().filter(|d| d.chain[0] == "both") {
        let mut inputs: Vec<usize> = d.inputs.iter().map(|c| c.input).collect();
        inputs.sort_unstable();
        assert_eq!(inputs, [0, 0, 1, 1], "two producer subtasks on each of two inputs");
    }
}

const PRUNED: &str = r#"version: 1
name: pruned
parallelism: 1
sources:
  s:
    connector: datagen
    schema: { id: string, note: string, k: bigint, v: bigint, ts: timestamp }
    event_time: { column: ts }
transforms:
  w:
    type: window_aggregate
    input: s
    key: [k]
    window: { type: tumbling, size: 10s }
    late_output: late
    aggregates: { total: "sum(v)" }
sinks:
  out: { connector: blackhole, input: w }
  late_rows: { connector: blackhole, input: late }
tests:
  - name: late rows keep every column
    given:
      s:
        - { id: a, note: first, k: 1, v: 5, ts: "2026-01-01T00:00:01Z" }
        - { watermark: "2026-01-01T00:00:30Z" }
        - { id: b, note: too late, k: 1, v: 7, ts: "2026-01-01T00:00:02Z" }
    expect:
      out: [ { k: 1, total: 5 } ]
      late_rows: [ { id: b, note: too late, k: 1, v: 7 } ]
"#;

/// A window with `late_output` sends late rows on whole: the columns it does not aggregate
/// are not pruned from its input.
#[test]
fn late_rows_keep_the_columns_the_window_does_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pruned.yaml");
    std::fs::write(&path, PRUNED).unwrap();
    let out = crate::sluice(&["test", path.to_str().unwrap()]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

/// Keyed windows at parallelism 3 behind an edge that prunes leading columns (the key moves
/// from column 2 to column 0): every key's total is right, as at parallelism 1.
#[test]
fn hashing_after_pruning_keeps_each_key_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = String::new();
    let mut expected: std::collections::BTreeMap<i64, i64> = Default::default();
    for i in 0..3000i64 {
        let k = (i * 7) % 37;
        rows.push_str(&format!(
            "{{\"id\": \"r{i}\", \"note\": \"{}\", \"k\": {k}, \"v\": {i}, \"ts\": \"2026-01-01T00:00:0{}Z\"}}\n",
            "x".repeat((i % 5) as usize),
            i % 10
        ));
        *expected.entry(k).or_default() += i;
    }
    std::fs::write(dir.path().join("in.jsonl"), rows).unwrap();
    for p in [1, 3] {
        let out_dir = dir.path().join(format!("out{p}"));
        let spec = format!(
            "version: 1\nname: pruned\nparallelism: {p}\nsources:\n  s: {{ connector: file, path: \"{}\", format: jsonl, \
             schema: {{ id: string, note: string, k: bigint, v: bigint, ts: timestamp }}, event_time: {{ column: ts }} }}\n\
             transforms:\n  w: {{ type: window_aggregate, input: s, key: [k], window: {{ type: tumbling, size: 1m }}, \
             aggregates: {{ total: \"sum(v)\" }} }}\nsinks:\n  out: {{ connector: file, input: w, path: \"{}\", format: jsonl }}\n",
            dir.path().join("in.jsonl").display(),
            out_dir.display()
        );
        let path = dir.path().join(format!("p{p}.yaml"));
        std::fs::write(&path, spec).unwrap();
        let plan = crate::sluice(&["plan", path.to_str().unwrap()]);
        assert!(String::from_utf8_lossy(&plan.stdout).contains("only the columns it reads"));
        let run = crate::sluice(&["run", "--quiet", path.to_str().unwrap()]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let mut got: std::collections::BTreeMap<i64, i64> = Default::default();
        for f in std::fs::read_dir(&out_dir).unwrap() {
            for line in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert!(
                    got.insert(v["k"].as_i64().unwrap(), v["total"].as_i64().unwrap()).is_none(),
                    "one row per key"
                );
            }
        }
        assert_eq!(got, expected, "parallelism {p}");
    }
}
