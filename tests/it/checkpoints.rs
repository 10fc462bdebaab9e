//! Checkpoints end to end through the `sluice` binary: a job SIGKILLed at random moments (and
//! aborted at chosen ones: during a snapshot upload, right after a manifest, between two
//! committed files) and run again until it finishes commits exactly the rows an
//! uninterrupted run commits, with `file://` and `s3://` storage (a real S3 server started by
//! `scripts/test-infra.sh`), memory and RocksDB state, tumbling, hopping and session windows,
//! at parallelism 2 reading several files, and restored at parallelism 3 and 1.
//!
//! `SLUICE_CRASH_SEEDS=N` runs N seeds instead of 10.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift), so a seed replays the same kills.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes `files` JSON-lines files of `rows` rows each: keys 0..150, event times rising with
/// disorder below the spec's out-of-orderness, so no row is late and the result is exact.
fn write_input(dir: &Path, files: usize, rows: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for f in 0..files {
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(format!("part{f}.jsonl"))).unwrap());
        let mut t: i64 = 1_767_225_600_000;
        for _ in 0..rows {
            t += rng.below(40) as i64;
            let ts = t - rng.below(500) as i64;
            writeln!(out, r#"{{"k": {}, "v": {}, "ts": {ts}}}"#, rng.below(150), 1 + rng.below(100)).unwrap();
        }
    }
}

/// Storage for a case.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Store {
    File,
    S3,
}

/// An S3 server on a free port of 127.0.0.1, serving a fresh folder, stopped on drop.
struct S3Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl S3Server {
    fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ckpt")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = S3Server::spawn(dir.path(), port);
        S3Server { child, port, _dir: dir }
    }

    /// Starts s3s-fs serving `dir` on `port` and waits until it listens.
    fn spawn(dir: &Path, port: u16) -> Child {
        let script = crate::root().join("scripts/test-infra.sh");
        let path = Command::new("bash").arg(&script).arg("s3-path").output().expect("test-infra.sh runs");
        assert!(path.status.success(), "cannot install s3s-fs: {}", String::from_utf8_lossy(&path.stderr));
        let bin = String::from_utf8(path.stdout).unwrap().trim().to_string();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "sluice", "--secret-key", "sluice-secret"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }
}

impl S3Server {
    /// The folder it serves (buckets are its subfolders).
    fn dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pipeline: three windowed aggregations of one source, each into its own CSV sink.
fn spec(dir: &Path, input: &Path, store: &str, s3: Option<u16>, backend: &str, parallelism: u32) -> String {
    let s3 = match s3 {
        Some(port) => format!(
            "\n  s3: {{ endpoint: \"http://127.0.0.1:{port}\", region: us-east-1, access_key_id: sluice, secret_access_key: sluice-secret }}"
        ),
        None => String::new(),
    };
    let out = dir.join("out");
    format!(
        r#"version: 1
name: crash-test
parallelism: {parallelism}
checkpoints:
  interval: 100ms
  storage: "{store}"{s3}
state: {{ backend: {backend}, path: "{state}" }}
sources:
  events:
    connector: file
    path: {input}
    format: jsonl
    schema: {{ k: bigint, v: bigint, ts: timestamp }}
    event_time: {{ column: ts, max_out_of_orderness: 1s }}
transforms:
  tumbling: {{ type: window_aggregate, input: events, key: [k], window: {{ type: tumbling, size: 10s }}, aggregates: {{ n: "count(*)", total: "sum(v)" }} }}
  hopping: {{ type: window_aggregate, input: events, key: [k], window: {{ type: hopping, size: 20s, slide: 5s }}, aggregates: {{ n: "count(*)", total: "sum(v)" }} }}
  sessions: {{ type: window_aggregate, input: events, key: [k], window: {{ type: session, gap: 2s }}, aggregates: {{ n: "count(*)", total: "sum(v)" }} }}
sinks:
  t_out: {{ connector: file, input: tumbling, path: "{out}/t", format: csv }}
  h_out: {{ connector: file, input: hopping, path: "{out}/h", format: csv }}
  s_out: {{ connector: file, input: sessions, path: "{out}/s", format: csv }}
"#,
        input = input.display(),
        state = dir.join("state").display(),
        out = out.display(),
    )
}

/// The committed rows of each sink (visible files only), sorted.
fn committed(dir: &Path) -> Vec<(String, Vec<String>)> {
    ["t", "h", "s"]
        .iter()
        .map(|sink| {
            let folder = dir.join("out").join(sink);
            let mut rows = Vec::new();
            for e in std::fs::read_dir(&folder).map(|r| r.flatten().collect::<Vec<_>>()).unwrap_or_default() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with('.') {
                    continue;
                }
                let text = std::fs::read_to_string(e.path()).unwrap();
                rows.extend(text.lines().skip(1).map(str::to_string));
            }
            rows.sort();
            (sink.to_string(), rows)
        })
        .collect()
}

/// What happened in a case.
#[derive(Debug, Default)]
struct Outcome {
    kills: usize,
    restores: usize,
}

/// Whether the checkpoint folder `store` (local, or the S3 server's folder of the bucket
/// prefix) holds a complete checkpoint from after `since`.
fn has_new_checkpoint(store: &Path, since: std::time::SystemTime) -> bool {
    std::fs::read_dir(store).is_ok_and(|d| {
        d.flatten().any(|e| {
            std::fs::metadata(e.path().join("_manifest.json")).and_then(|m| m.modified()).is_ok_and(|t| t >= since)
        })
    })
}

/// Runs `specs[0]` (then `specs[1]` for every run after the first interruption, to rescale)
/// until it finishes: killed by `rng` up to `max_kills` times, at a random moment of the run
/// or a random moment after its first checkpoint (in the folder `store`), and aborted at
/// `crash` on its first run.
fn run_with_kills(specs: &[PathBuf], store: &Path, rng: &mut Rng, max_kills: usize, crash: Option<&str>) -> Outcome {
    let mut outcome = Outcome::default();
    for attempt in 0..max_kills + 2 {
        let spec = &specs[if attempt == 0 { 0 } else { specs.len() - 1 }];
        let log = spec.with_extension(format!("log{attempt}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(["run", "--quiet"]).arg(spec).stderr(std::fs::File::create(&log).unwrap()).stdout(Stdio::null());
        if let (0, Some(point)) = (attempt, crash) {
            cmd.env("SLUICE_CRASH_AT", point);
        }
        let started = std::time::SystemTime::now();
        let mut child = cmd.spawn().unwrap();
        if attempt < max_kills && crash.is_none_or(|_| attempt > 0) {
            if rng.below(2) == 0 {
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline
                    && child.try_wait().unwrap().is_none()
                    && !has_new_checkpoint(store, started)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            let deadline = Instant::now() + Duration::from_millis(rng.below(1500));
            while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                outcome.kills += 1;
                outcome.restores += std::fs::read_to_string(&log).unwrap().matches("restoring checkpoint").count();
                continue;
            }
        }
        let status = child.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        outcome.restores += text.matches("restoring checkpoint").count();
        if status.success() {
            return outcome;
        }
        assert!(
            crash.is_some() && attempt == 0 && text.contains("SLUICE_CRASH_AT"),
            "run {attempt} of {} failed ({status}): {text}",
            spec.display()
        );
        outcome.kills += 1;
    }
    panic!("{} did not finish after {max_kills} kills", specs[0].display());
}

#[test]
fn a_killed_job_resumes_and_commits_exactly_what_an_uninterrupted_run_does() {
    let seeds: u64 = std::env::var("SLUICE_CRASH_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let base = tempfile::tempdir().unwrap();
    let input = base.path().join("in");
    write_input(&input, 4, 20_000);

    // The reference: one uninterrupted run.
    let reference_dir = base.path().join("reference");
    std::fs::create_dir_all(&reference_dir).unwrap();
    let store = format!("file://{}", reference_dir.join("store").display());
    let reference_spec = reference_dir.join("spec.yaml");
    std::fs::write(&reference_spec, spec(&reference_dir, &input, &store, None, "memory", 2)).unwrap();
    let done = run_with_kills(&[reference_spec], &reference_dir.join("store"), &mut Rng(1), 0, None);
    assert_eq!(done.kills, 0);
    let expected = committed(&reference_dir);
    for (sink, rows) in &expected {
        assert!(rows.len() > 1000, "sink {sink} has {} rows", rows.len());
    }

    let s3 = S3Server::start();
    let (mut kills, mut restores) = (0, 0);
    let mut failures = Vec::new();
    for seed in 0..seeds {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let storage = if seed % 2 == 0 { Store::File } else { Store::S3 };
        let backend = if (seed / 2) % 2 == 0 { "memory" } else { "rocksdb" };
        let crash = match seed % 10 {
            3 => Some("upload:5"),
            6 => Some("commit:3"),
            8 => Some("manifest:2"),
            _ => None,
        };
        let rescale = match seed % 10 {
            5 => Some(3),
            9 => Some(1),
            _ => None,
        };
        let dir = base.path().join(format!("seed{seed}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (store, port, folder) = match storage {
            Store::File => (format!("file://{}", dir.join("store").display()), None, dir.join("store")),
            Store::S3 => (format!("s3://ckpt/seed{seed}"), Some(s3.port), s3.dir().join(format!("ckpt/seed{seed}"))),
        };
        let mut specs = vec![dir.join("spec.yaml")];
        std::fs::write(&specs[0], spec(&dir, &input, &store, port, backend, 2)).unwrap();
        if let Some(p) = rescale {
            specs.push(dir.join(format!("spec-p{p}.yaml")));
            std::fs::write(&specs[1], spec(&dir, &input, &store, port, backend, p)).unwrap();
        }
        let outcome = run_with_kills(&specs, &folder, &mut rng, 4, crash);
        kills += outcome.kills;
        restores += outcome.restores;
        let got = committed(&dir);
        for ((sink, want), (_, have)) in expected.iter().zip(&got) {
            if want != have {
                let missing = want.iter().filter(|r| !have.contains(r)).count();
                let extra = have.len() + missing - want.len();
                failures.push(format!(
                    "seed {seed} ({storage:?}, {backend}, crash {crash:?}, rescale {rescale:?}): sink {sink}: \
                     {missing} rows missing, {extra} extra, after {outcome:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(kills >= seeds as usize, "{kills} kills over {seeds} seeds: the runs were too short to interrupt");
    assert!(restores > 0, "no run restored a checkpoint");
    eprintln!("crash test: {seeds} seeds, {kills} kills, {restores} restores, output exact");
}

/// A job of `count` generated rows at `rate` rows/s into one JSON-lines sink, checkpointing to
/// `store` every 200ms.
fn datagen_spec(name: &str, dir: &Path, store: &str, s3: Option<u16>, rate: u64, count: u64) -> String {
    let s3 = match s3 {
        Some(port) => format!(
            "\n  timeout: 2s\n  s3: {{ endpoint: \"http://127.0.0.1:{port}\", access_key_id: sluice, secret_access_key: sluice-secret }}"
        ),
        None => String::new(),
    };
    format!(
        r#"version: 1
name: {name}
parallelism: 2
checkpoints:
  interval: 200ms
  retain: 5
  storage: "{store}"{s3}
sources:
  rows:
    connector: datagen
    rows_per_second: {rate}
    count: {count}
    schema:
      id: {{ type: bigint, sequence: true, min: 0 }}
sinks:
  out: {{ connector: file, input: rows, path: "{out}", format: jsonl }}
"#,
        out = dir.join("out").display()
    )
}

/// The ids committed by the datagen job, sorted.
fn committed_ids(dir: &Path) -> Vec<i64> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(dir.join("out")).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        for line in std::fs::read_to_string(e.path()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            ids.push(v["id"].as_i64().unwrap());
        }
    }
    ids.sort_unstable();
    ids
}

fn spawn_run(spec: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--quiet"])
        .arg(spec)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until a run holds the lease of the local storage `store`.
fn wait_for_lease(store: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !store.join("_lease.json").exists() {
        assert!(Instant::now() < deadline, "no lease taken");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(child: Child) -> (bool, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn a_second_run_on_the_same_storage_refuses_to_start_and_another_pipeline_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("store").display());
    let spec = dir.path().join("a.yaml");
    std::fs::write(&spec, datagen_spec("a", dir.path(), &store, None, 2000, 4000)).unwrap();
    let first = spawn_run(&spec, &[]);
    wait_for_lease(&dir.path().join("store"));
    let (ok, err) = finish(spawn_run(&spec, &[]));
    assert!(!ok);
    assert!(err.contains("is in use by another run of `a`"), "{err}");
    let (ok, err) = finish(first);
    assert!(ok, "{err}");
    assert_eq!(committed_ids(dir.path()), (0..4000).collect::<Vec<_>>(), "the refused run wrote nothing");
    assert!(!dir.path().join("store/_lease.json").exists(), "the lease is released at the end");

    // Another pipeline's checkpoints are not restored.
    let other = dir.path().join("b.yaml");
    std::fs::write(&other, datagen_spec("b", dir.path(), &store, None, 2000, 10)).unwrap();
    let (ok, err) = finish(spawn_run(&other, &[]));
    assert!(!ok);
    assert!(err.contains("belongs to pipeline `a`, not `b`"), "{err}");

    // Run again, the finished job resumes after its end and commits nothing twice.
    let (ok, err) = finish(spawn_run(&spec, &[]));
    assert!(ok, "{err}");
    assert!(err.contains("restoring checkpoint"), "{err}");
    assert_eq!(committed_ids(dir.path()), (0..4000).collect::<Vec<_>>());
}

#[test]
fn a_corrupt_checkpoint_is_skipped_for_the_previous_complete_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let spec = dir.path().join("a.yaml");
    std::fs::write(&spec, datagen_spec("a", dir.path(), &format!("file://{}", store.display()), None, 4000, 4000))
        .unwrap();
    let (ok, err) = finish(spawn_run(&spec, &[]));
    assert!(ok, "{err}");
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("_manifest.json"))
        .filter(|p| p.exists())
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 2, "retain: 5 keeps several: {manifests:?}");
    let newest = manifests.pop().unwrap();
    let previous = manifests.pop().unwrap();
    let text = std::fs::read_to_string(&newest).unwrap();
    std::fs::write(&newest, &text[..text.len() / 2]).unwrap();
    let (ok, err) = finish(spawn_run(&spec, &["--dry-run"]));
    assert!(ok, "{err}");
    let (_, err) = finish(spawn_run(&spec, &[]));
    let folder = |p: &Path| p.parent().unwrap().file_name().unwrap().to_string_lossy().to_string();
    assert!(err.contains(&format!("skipping a checkpoint: checkpoint manifest `file://{}", store.display())), "{err}");
    assert!(err.contains(&folder(&newest)) && err.contains("unreadable"), "{err}");
    assert!(err.contains("restoring checkpoint") && err.contains(&folder(&previous)), "{err}");
}

#[test]
fn a_savepoint_on_sigterm_restores_at_another_parallelism_and_plan_against_reports_compatibility() {
    let base = tempfile::tempdir().unwrap();
    let input = base.path().join("in");
    write_input(&input, 3, 30_000);
    let reference = base.path().join("reference");
    let store = |d: &Path| format!("file://{}", d.join("store").display());
    std::fs::create_dir_all(&reference).unwrap();
    let spec_ref = reference.join("spec.yaml");
    std::fs::write(&spec_ref, spec(&reference, &input, &store(&reference), None, "memory", 2)).unwrap();
    let (ok, err) = finish(spawn_run(&spec_ref, &[]));
    assert!(ok, "{err}");
    let expected = committed(&reference);

    // RocksDB files restored into RocksDB at p=3 and into memory at p=1; memory state at p=1.
    for (p, backend, then) in [(3, "rocksdb", "rocksdb"), (1, "rocksdb", "memory"), (1, "memory", "memory")] {
        let dir = base.path().join(format!("p{p}-{backend}"));
        std::fs::create_dir_all(&dir).unwrap();
        let first = dir.join("spec.yaml");
        std::fs::write(&first, spec(&dir, &input, &store(&dir), None, backend, 2)).unwrap();
        let child = spawn_run(&first, &[]);
        // Stop it once it has a checkpoint, with SIGTERM: a savepoint, then exit 0.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_dir(dir.join("store"))
            .map(|d| d.flatten().any(|e| e.path().join("_manifest.json").exists()))
            .unwrap_or(false)
        {
            assert!(Instant::now() < deadline, "no checkpoint");
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: signals a child process this test owns.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let (ok, err) = finish(child);
        assert!(ok, "{err}");
        assert!(err.contains("savepoint") && err.contains("written to"), "{err}");
        let list = crate::sluice(&["checkpoints", "list", &store(&dir), "--format", "json"]);
        let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
        assert_eq!(listed[0]["kind"], "savepoint", "{listed}");
        assert!(listed[0]["sources"]["events"].as_array().is_some_and(|s| s.len() == 2), "{listed}");
        assert!(listed[0]["state_bytes"].as_u64().unwrap() > 0);

        let rescaled = dir.join(format!("spec-p{p}.yaml"));
        std::fs::write(&rescaled, spec(&dir, &input, &store(&dir), None, then, p)).unwrap();
        let plan = crate::sluice(&["plan", rescaled.to_str().unwrap(), "--against", &store(&dir), "--format", "json"]);
        assert!(plan.status.success(), "{}", String::from_utf8_lossy(&plan.stderr));
        let verdicts: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
        let tumbling = verdicts["operators"].as_array().unwrap().iter().find(|o| o["operator"] == "tumbling").unwrap();
        assert_eq!(tumbling["verdict"], "kept");
        assert!(tumbling["reason"].as_str().unwrap().contains(&format!("parallelism 2 → {p}")), "{tumbling}");

        let (ok, err) = finish(spawn_run(&rescaled, &[]));
        assert!(ok, "{err}");
        assert!(err.contains("restoring checkpoint"), "{err}");
        assert_eq!(committed(&dir), expected, "restored from p=2 ({backend}) at p={p} ({then})");
    }

    // A changed window or key is incompatible: plan exits 1 and run refuses.
    let dir = base.path().join("p1-memory");
    let changed = dir.join("changed.yaml");
    let text = spec(&dir, &input, &store(&dir), None, "memory", 2)
        .replace("size: 10s", "size: 30s")
        .replace("key: [k], window: { type: hopping", "key: [v], window: { type: hopping");
    std::fs::write(&changed, text).unwrap();
    let plan = crate::sluice(&["plan", changed.to_str().unwrap(), "--against", &store(&dir)]);
    assert_eq!(plan.status.code(), Some(1));
    let shown = String::from_utf8_lossy(&plan.stdout);
    assert!(
        shown.contains("tumbling") && shown.contains("INCOMPATIBLE") && shown.contains("window or aggregates changed"),
        "{shown}"
    );
    assert!(shown.contains("hopping") && shown.contains("its key changed"), "{shown}");
    assert!(shown.contains("sessions") && shown.contains("kept"), "{shown}");
    let allowed = crate::sluice(&["plan", changed.to_str().unwrap(), "--against", &store(&dir), "--allow-state-loss"]);
    assert_eq!(allowed.status.code(), Some(0));
    let (ok, err) = finish(spawn_run(&changed, &[]));
    assert!(!ok);
    assert!(err.contains("would lose state") && err.contains("`tumbling`"), "{err}");
}

#[test]
fn checkpoints_fail_while_s3_is_down_and_the_job_keeps_running_and_recovers() {
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir(data.path().join("ckpt")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = S3Server::spawn(data.path(), port);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("a.yaml");
    std::fs::write(&spec, datagen_spec("a", dir.path(), "s3://ckpt/down", Some(port), 1000, 5000)).unwrap();
    let child = spawn_run(&spec, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    server.kill().unwrap();
    server.wait().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let mut server = S3Server::spawn(data.path(), port);
    let (ok, err) = finish(child);
    let _ = server.kill();
    let _ = server.wait();
    assert!(ok, "{err}");
    assert!(err.contains("checkpoint") && err.contains("failed"), "{err}");
    assert_eq!(committed_ids(dir.path()), (0..5000).collect::<Vec<_>>(), "every row once");
}

#[test]
fn a_retryable_failure_restarts_the_job_in_process_from_its_latest_checkpoint() {
    for (restart, restarts) in
        [("{ strategy: fixed_delay, attempts: 3, delay: 100ms }", true), ("{ strategy: none }", false)]
    {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("file://{}", dir.path().join("store").display());
        let spec = dir.path().join("a.yaml");
        let text = datagen_spec("a", dir.path(), &store, None, 3000, 3000)
            .replace("parallelism: 2\n", &format!("parallelism: 2\nrestart: {restart}\n"));
        std::fs::write(&spec, text).unwrap();
        // The third file commit fails as a storage hiccup would.
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--quiet"])
            .arg(&spec)
            .env("SLUICE_FAIL_AT", "commit:3")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if restarts {
            assert!(out.status.success(), "{err}");
            assert!(err.contains("injected failure at commit #3") && err.contains("restarting in 100ms"), "{err}");
            assert!(err.contains("restoring checkpoint"), "{err}");
            assert_eq!(committed_ids(dir.path()), (0..3000).collect::<Vec<_>>(), "every row once");
        } else {
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains("injected failure at commit #3") && !err.contains("restarting"), "{err}");
        }
    }
}

#[test]
fn a_bad_record_under_on_error_fail_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), "{\"x\": 1}\n{\"x\": \"not a number\"}\n").unwrap();
    let spec = dir.path().join("a.yaml");
    std::fs::write(
        &spec,
        format!(
            "version: 1\nname: bad\nrestart: {{ strategy: fixed_delay, attempts: 5, delay: 10ms }}\n\
             checkpoints: {{ interval: 100ms, storage: \"file://{store}\" }}\n\
             sources:\n  s: {{ connector: file, path: {input}, format: jsonl, schema: {{ x: bigint }} }}\n\
             sinks:\n  o: {{ connector: file, input: s, path: {out}, format: jsonl }}\n",
            store = dir.path().join("store").display(),
            input = dir.path().join("in.jsonl").display(),
            out = dir.path().join("out").display(),
        ),
    )
    .unwrap();
    let (ok, err) = finish(spawn_run(&spec, &[]));
    assert!(!ok);
    assert!(err.contains("in.jsonl:2") && !err.contains("restarting"), "{err}");
}

#[test]
fn generated_rows_restored_at_another_parallelism_are_neither_lost_nor_repeated() {
    for p in [3, 1] {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("file://{}", dir.path().join("store").display());
        let spec = dir.path().join("a.yaml");
        std::fs::write(&spec, datagen_spec("a", dir.path(), &store, None, 4000, 6000)).unwrap();
        let child = spawn_run(&spec, &[]);
        std::thread::sleep(Duration::from_millis(700));
        // SAFETY: signals a child process this test owns.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let (ok, err) = finish(child);
        assert!(ok && err.contains("savepoint"), "{err}");
        let before = committed_ids(dir.path()).len();
        assert!(before > 0 && before < 6000, "stopped midway: {before} rows");
        let rescaled = dir.path().join("b.yaml");
        std::fs::write(
            &rescaled,
            datagen_spec("a", dir.path(), &store, None, 4000, 6000)
                .replace("parallelism: 2", &format!("parallelism: {p}")),
        )
        .unwrap();
        let (ok, err) = finish(spawn_run(&rescaled, &[]));
        assert!(ok, "{err}");
        assert_eq!(committed_ids(dir.path()), (0..6000).collect::<Vec<_>>(), "p=2 → p={p}");
    }
}

#[test]
fn a_watching_source_forgets_files_past_its_horizon_and_reads_each_file_once_across_restores() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("old.jsonl"), "{\"id\": 1}\n{\"id\": 2}\n").unwrap();
    let ten_days = std::time::SystemTime::now() - Duration::from_secs(10 * 24 * 3600);
    std::fs::File::options().write(true).open(input.join("old.jsonl")).unwrap().set_modified(ten_days).unwrap();
    std::fs::write(input.join("new.jsonl"), "{\"id\": 3}\n").unwrap();
    let store = format!("file://{}", dir.path().join("store").display());
    let spec = dir.path().join("w.yaml");
    std::fs::write(
        &spec,
        format!(
            "version: 1\nname: w\ncheckpoints: {{ interval: 100ms, storage: \"{store}\" }}\n\
             sources:\n  events: {{ connector: file, path: {input}, format: jsonl, watch: true, forget_after: 1d, schema: {{ id: bigint }} }}\n\
             sinks:\n  out: {{ connector: file, input: events, path: {out}, format: jsonl }}\n",
            input = input.display(),
            out = dir.path().join("out").display(),
        ),
    )
    .unwrap();
    let run_until = |ids: Vec<i64>| {
        let child = spawn_run(&spec, &[]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_dir(dir.path().join("out")).is_err() || committed_ids(dir.path()) != ids {
            assert!(Instant::now() < deadline, "never committed {ids:?}: {:?}", committed_ids(dir.path()));
            std::thread::sleep(Duration::from_millis(50));
        }
        // Let a scan (each second) forget the old file, and a checkpoint record it.
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: signals a child process this test owns.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let (ok, err) = finish(child);
        assert!(ok, "{err}");
    };
    run_until(vec![1, 2, 3]);
    let list = crate::sluice(&["checkpoints", "list", &store, "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let files: Vec<String> = listed[0]["sources"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_string()))
        .collect();
    assert!(files.iter().any(|f| f.ends_with("new.jsonl")), "{files:?}");
    assert!(!files.iter().any(|f| f.ends_with("old.jsonl")), "the old file is forgotten: {files:?}");
    // A file added while stopped is read once; neither earlier file again.
    std::fs::write(input.join("later.jsonl"), "{\"id\": 4}\n").unwrap();
    run_until(vec![1, 2, 3, 4]);
}

#[test]
fn a_file_source_reads_s3_objects_and_resumes_them_after_a_kill() {
    let s3 = S3Server::start();
    let input = s3.dir().join("ckpt/in");
    write_input(&input, 3, 20_000);
    std::fs::write(input.join("_ignored.jsonl"), "not json\n").unwrap();
    let base = tempfile::tempdir().unwrap();
    let (local, remote) = (base.path().join("local"), base.path().join("remote"));
    let source_s3 = format!(
        "    s3: {{ endpoint: \"http://127.0.0.1:{}\", access_key_id: sluice, secret_access_key: sluice-secret }}\n    path:",
        s3.port
    );
    let spec_at = |dir: &Path, path: &Path| {
        std::fs::create_dir_all(dir).unwrap();
        let text = spec(dir, path, &format!("file://{}", dir.join("store").display()), None, "memory", 2)
            .replace("    path: s3://", &format!("{source_s3} s3://"));
        let file = dir.join("spec.yaml");
        std::fs::write(&file, text).unwrap();
        file
    };
    let local_spec = spec_at(&local, &input);
    let (ok, err) = finish(spawn_run(&local_spec, &[]));
    assert!(ok, "{err}");
    let remote_spec = spec_at(&remote, Path::new("s3://ckpt/in/"));
    let outcome = run_with_kills(&[remote_spec], &remote.join("store"), &mut Rng(5), 2, None);
    assert_eq!(committed(&remote), committed(&local), "after {outcome:?}");
}

#[test]
fn a_file_sink_on_s3_commits_exactly_once_across_kills() {
    let s3 = S3Server::start();
    let base = tempfile::tempdir().unwrap();
    let input = base.path().join("in");
    write_input(&input, 3, 20_000);
    let (local, remote) = (base.path().join("local"), base.path().join("remote"));
    for d in [&local, &remote] {
        std::fs::create_dir_all(d).unwrap();
    }
    let store = |d: &Path| format!("file://{}", d.join("store").display());
    let local_spec = local.join("spec.yaml");
    std::fs::write(&local_spec, spec(&local, &input, &store(&local), None, "memory", 2)).unwrap();
    let (ok, err) = finish(spawn_run(&local_spec, &[]));
    assert!(ok, "{err}");
    let options = format!(
        "s3: {{ endpoint: \"http://127.0.0.1:{}\", access_key_id: sluice, secret_access_key: sluice-secret }}, input:",
        s3.port
    );
    let text = spec(&remote, &input, &store(&remote), None, "rocksdb", 2)
        .replace(&format!("path: \"{}/", remote.join("out").display()), "path: \"s3://ckpt/out/")
        .replace("connector: file, input:", &format!("connector: file, {options}"));
    assert!(text.contains("s3://ckpt/out/t"), "{text}");
    let remote_spec = remote.join("spec.yaml");
    std::fs::write(&remote_spec, text).unwrap();
    let outcome = run_with_kills(&[remote_spec], &remote.join("store"), &mut Rng(11), 3, None);
    // The server keeps objects as files of its folder: committed objects are what it lists.
    let served = s3.dir().join("ckpt");
    assert_eq!(committed(&served), committed(&local), "after {outcome:?}");
}

/// Sessions per bidder of generated bids that stay open to the end (1 h gap), so keyed state
/// grows through the run; RocksDB state, a checkpoint every 100 ms, two kept.
fn sessions_spec(dir: &Path, backend: &str, rate: Option<u64>, count: u64) -> String {
    let rate = rate.map(|r| format!(", rows_per_second: {r}")).unwrap_or_default();
    format!(
        r#"version: 1
name: sessions
parallelism: 2
checkpoints: {{ interval: 100ms, retain: 2, storage: "file://{store}" }}
state: {{ backend: {backend}, path: "{state}" }}
sources:
  bids: {{ connector: datagen, nexmark: {{ table: bids }}, count: {count}, seed: 7{rate}, event_time: {{ column: date_time, max_out_of_orderness: 1s }} }}
transforms:
  per_bidder: {{ type: window_aggregate, input: bids, key: [bidder], window: {{ type: session, gap: 1h }}, aggregates: {{ n: "count(*)", total: "sum(price)" }} }}
sinks:
  out: {{ connector: file, input: per_bidder, path: "{out}", format: csv }}
"#,
        store = dir.join("store").display(),
        state = dir.join("state").display(),
        out = dir.join("out").display(),
    )
}

/// The committed CSV rows in `dir/out`, sorted.
fn committed_rows(dir: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for e in std::fs::read_dir(dir.join("out")).map(|r| r.flatten().collect::<Vec<_>>()).unwrap_or_default() {
        if !e.file_name().to_string_lossy().starts_with('.') {
            rows.extend(std::fs::read_to_string(e.path()).unwrap().lines().skip(1).map(str::to_string));
        }
    }
    rows.sort();
    rows
}

#[test]
fn rocksdb_checkpoints_upload_only_new_files_and_a_job_resumes_from_files_older_checkpoints_stored() {
    let base = tempfile::tempdir().unwrap();
    let reference = base.path().join("reference");
    std::fs::create_dir_all(&reference).unwrap();
    let spec_ref = reference.join("spec.yaml");
    std::fs::write(&spec_ref, sessions_spec(&reference, "memory", None, 120_000)).unwrap();
    let (ok, err) = finish(spawn_run(&spec_ref, &[]));
    assert!(ok, "{err}");
    let expected = committed_rows(&reference);
    assert!(expected.len() > 1000, "{} sessions", expected.len());

    let dir = base.path().join("incremental");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("spec.yaml");
    std::fs::write(&spec, sessions_spec(&dir, "rocksdb", Some(20_000), 120_000)).unwrap();
    let store = dir.join("store");
    let mut child = spawn_run(&spec, &[]);
    // Kill it once it has taken a few checkpoints.
    let deadline = Instant::now() + Duration::from_secs(60);
    let latest = || {
        std::fs::read_dir(&store)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join("_manifest.json").exists())
                    .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("chk-")?.parse::<u64>().ok())
                    .max()
            })
            .ok()
            .flatten()
    };
    while latest().is_none_or(|id| id < 6) {
        assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none(), "too few checkpoints");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let list = crate::sluice(&["checkpoints", "list", &format!("file://{}", store.display()), "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let checkpoints = listed.as_array().unwrap();
    // Two kept, and a third when the kill came between a manifest and retention.
    assert!((2..=3).contains(&checkpoints.len()), "retain: 2 keeps two: {listed}");
    // Each refers to the SST files it shares with the one before instead of uploading them.
    let manifest = |id: u64| -> serde_json::Value {
        let text = std::fs::read_to_string(store.join(format!("chk-{id:010}/_manifest.json"))).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let newest = manifest(checkpoints[0]["id"].as_u64().unwrap());
    let files: Vec<&serde_json::Value> = newest["operators"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|o| o["subtasks"].as_array().unwrap())
        .flat_map(|s| s["files"].as_array().into_iter().flatten())
        .collect();
    assert!(files.iter().any(|f| f["file"].as_str().unwrap().ends_with(".sst")), "{newest}");
    let own = format!("{}/", checkpoints[0]["location"].as_str().unwrap().rsplit('/').next().unwrap());
    let shared: Vec<&&serde_json::Value> =
        files.iter().filter(|f| f["key"].is_string() && !f["name"].as_str().unwrap().starts_with(&own)).collect();
    assert!(!shared.is_empty(), "no file is shared with an older checkpoint: {newest}");
    assert!(checkpoints[0]["new_bytes"].as_u64() < checkpoints[0]["state_bytes"].as_u64(), "{listed}");
    // Files an older checkpoint stored stay while a kept checkpoint refers to them.
    for f in &shared {
        let path = store.join(f["name"].as_str().unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), f["size"].as_u64().unwrap(), "{}", path.display());
    }

    // A file of the newest checkpoint corrupted in place (same size): that checkpoint is skipped.
    let own_file = files
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .find(|n| n.starts_with(&own) && n.ends_with(".sst"))
        .expect("the newest checkpoint stored an SST file of its own");
    let path = store.join(own_file);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    // A fresh inode: the stored file may share one with a folder of the killed run.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, bytes).unwrap();

    // Resumed and stopped with a savepoint: that stores every file it refers to itself.
    let child = spawn_run(&spec, &[]);
    let before = latest().unwrap();
    while latest().is_none_or(|id| id <= before) {
        assert!(Instant::now() < deadline, "no checkpoint after the restore");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: signals a child process this test owns.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (ok, err) = finish(child);
    assert!(ok && err.contains("restoring checkpoint") && err.contains("savepoint"), "{err}");
    assert!(
        err.contains(&format!(
            "skipping a checkpoint: checkpoint file `file://{}/{own_file}` is corrupt (checksum mismatch)",
            store.display()
        )),
        "{err}"
    );
    let previous = checkpoints[1]["location"].as_str().unwrap().rsplit('/').next().unwrap();
    assert!(err.contains(&format!("restoring checkpoint {}", checkpoints[1]["id"])) && err.contains(previous), "{err}");
    let list = crate::sluice(&["checkpoints", "list", &format!("file://{}", store.display()), "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed[0]["kind"], "savepoint", "{listed}");
    assert!(listed[0]["state_bytes"].as_u64().unwrap() > 0, "{listed}");
    assert_eq!(listed[0]["new_bytes"], listed[0]["state_bytes"], "{listed}");

    // Resumed again, it finishes with exactly the uninterrupted run's sessions.
    let (ok, err) = finish(spawn_run(&spec, &[]));
    assert!(ok, "{err}");
    assert!(err.contains("restoring checkpoint"), "{err}");
    assert_eq!(committed_rows(&dir), expected);
    assert!(std::fs::read_dir(dir.join("state")).unwrap().next().is_none(), "the state folder is left empty");
}

#[test]
fn run_stop_with_savepoint_stops_the_running_job_through_its_storage() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("store").display());
    let spec = dir.path().join("a.yaml");
    std::fs::write(&spec, datagen_spec("a", dir.path(), &store, None, 4000, 30_000)).unwrap();
    let stop = || crate::sluice(&["run", spec.to_str().unwrap(), "--stop-with-savepoint"]);
    let refused = stop();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no run of `a` holds storage"), "{refused:?}");
    // A spec without checkpoints has nothing to stop through, nor to list.
    let plain = dir.path().join("plain.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    let (head, tail) = text.split_once("checkpoints:").unwrap();
    std::fs::write(&plain, format!("{head}{}", &tail[tail.find("sources:").unwrap()..])).unwrap();
    let refused = crate::sluice(&["run", plain.to_str().unwrap(), "--stop-with-savepoint"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("takes no checkpoints"), "{refused:?}");
    let refused = crate::sluice(&["checkpoints", "list", plain.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a valid spec with `checkpoints:`"), "{refused:?}");

    let child = spawn_run(&spec, &[]);
    wait_for_lease(&dir.path().join("store"));
    let stopped = stop();
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    let location = String::from_utf8_lossy(&stopped.stdout).trim().to_string();
    assert!(location.starts_with(&format!("{store}/sp-")), "{location}");
    let (ok, err) = finish(child);
    assert!(ok && err.contains("stopping with a savepoint, as requested"), "{err}");
    let manifest = Path::new(location.strip_prefix("file://").unwrap()).join("_manifest.json");
    assert!(manifest.exists(), "{}", manifest.display());
    // `checkpoints list` takes the spec for its storage.
    let list = crate::sluice(&["checkpoints", "list", spec.to_str().unwrap(), "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed[0]["location"].as_str(), Some(location.as_str()), "{listed}");
    let before = committed_ids(dir.path()).len();
    assert!(before > 0 && before < 30_000, "stopped midway: {before} rows");

    // The next run resumes from that savepoint: every row once.
    let (ok, err) = finish(spawn_run(&spec.clone(), &["--from", &location]));
    assert!(ok, "{err}");
    assert_eq!(committed_ids(dir.path()), (0..30_000).collect::<Vec<_>>());
}
