//! Hardening of the runtime: file sinks sharing a folder, cleanup after a failed run, and
//! `${env:…}` values kept out of every message, log and output.

use std::path::Path;

use crate::sluice_env;

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Two sinks of one job write the same folder at the same moment: each gets its own files,
/// and every row of both arrives whole.
#[test]
fn two_sinks_on_one_folder_keep_every_row_intact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("in.jsonl");
    let rows = 3000;
    let text: String =
        (0..rows).map(|i| format!("{{\"id\": {i}, \"name\": \"row number {i} with some padding\"}}\n")).collect();
    std::fs::write(&data, text).unwrap();
    let out = dir.path().join("out");
    let spec = dir.path().join("two.yaml");
    std::fs::write(
        &spec,
        format!(
            "version: 1\nname: two-sinks\nsources:\n  s:\n    connector: file\n    path: {}\n    format: jsonl\n    \
             schema: {{ id: bigint, name: string }}\nsinks:\n  a: {{ connector: file, input: s, path: {o}, format: jsonl }}\n  \
             b: {{ connector: file, input: s, path: {o}, format: jsonl }}\n",
            data.display(),
            o = out.display()
        ),
    )
    .unwrap();
    let run = sluice_env(&["run", "-q", spec.to_str().unwrap()], &[]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let names = files(&out);
    assert!(names.iter().all(|n| !n.ends_with(".inprogress")), "{names:?}");
    assert!(names.iter().any(|n| n.contains("-a-")) && names.iter().any(|n| n.contains("-b-")), "{names:?}");
    let mut ids = Vec::new();
    for n in &names {
        for line in std::fs::read_to_string(out.join(n)).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("torn line in {n}: {e}"));
            ids.push(v["id"].as_i64().unwrap());
        }
    }
    ids.sort();
    let expected: Vec<i64> = (0..rows).flat_map(|i| [i, i]).collect();
    assert_eq!(ids, expected, "every row of both sinks, once each");
}

/// A run that fails after its sink opened a file leaves no in-progress file behind.
#[test]
fn a_failed_run_removes_its_in_progress_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("in");
    std::fs::create_dir(&data).unwrap();
    // Files are read in name order: the good rows reach the sink before the bad record fails the job.
    std::fs::write(data.join("a.jsonl"), "{\"id\": 1}\n{\"id\": 2}\n").unwrap();
    std::fs::write(data.join("b.jsonl"), "{\"id\": \"three\"}\n").unwrap();
    let out = dir.path().join("out");
    let spec = dir.path().join("fail.yaml");
    std::fs::write(
        &spec,
        format!(
            "version: 1\nname: fails\nsources:\n  s: {{ connector: file, path: {}, format: jsonl, schema: {{ id: bigint }} }}\n\
             sinks:\n  out: {{ connector: file, input: s, path: {}, format: csv }}\n",
            data.display(),
            out.display()
        ),
    )
    .unwrap();
    let run = sluice_env(&["run", "-q", spec.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("b.jsonl:1"), "the failure is the bad record: {stderr}");
    assert_eq!(files(&out), Vec::<String>::new(), "nothing left in the sink folder");
}

/// A distinctive folder name standing for a secret value.
const SECRET: &str = "s3cr3t-Tok3n-9f8e7d";

/// Everything a run shows and writes: stdout, stderr, and the names and contents of every
/// file under `out`.
fn everything(run: &std::process::Output, out: &Path) -> String {
    let mut all = format!("{}\n{}\n", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    let mut stack = vec![out.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&p) else { continue };
        for e in entries {
            let path = e.unwrap().path();
            all.push_str(&format!("{}\n", path.display()));
            if path.is_dir() {
                stack.push(path);
            } else {
                all.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
            }
        }
    }
    all
}

/// A scratch folder with the secret folder (holding `files`) and an output folder beside it.
fn secret_dir(files: &[(&str, &[u8])]) -> (tempfile::TempDir, String, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join(SECRET);
    std::fs::create_dir(&data).unwrap();
    for (name, bytes) in files {
        std::fs::write(data.join(name), bytes).unwrap();
    }
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    (dir, data.to_string_lossy().into_owned(), out)
}

fn run_spec(dir: &Path, spec: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let path = dir.join("spec.yaml");
    std::fs::write(&path, spec).unwrap();
    let mut all = vec!["run"];
    all.extend(args);
    all.push(path.to_str().unwrap());
    sluice_env(&all, env)
}

const BAD_JSONL: &[u8] = b"{\"id\": 1}\n{\"id\": \"two\"}\n{\"id\": 3}\n";

#[test]
fn a_failing_bad_record_is_named_through_the_template() {
    let (dir, data, out) = secret_dir(&[("in.jsonl", BAD_JSONL)]);
    let spec = format!(
        "version: 1\nname: secret\nsources:\n  s: {{ connector: file, path: \"${{env:DATA_DIR}}/in.jsonl\", format: jsonl, schema: {{ id: bigint }} }}\n\
         sinks:\n  o: {{ connector: file, input: s, path: \"{}\", format: jsonl }}\n",
        out.display()
    );
    let run = run_spec(dir.path(), &spec, &[], &[("DATA_DIR", &data)]);
    assert_fails_naming(&run, &out, "${env:DATA_DIR}/in.jsonl:2");
}

/// The run failed, never showed the secret value, and named `template` instead.
fn assert_fails_naming(run: &std::process::Output, out: &Path, template: &str) {
    let all = everything(run, out);
    assert_eq!(run.status.code(), Some(1), "{all}");
    assert!(!all.contains(SECRET), "the secret value is printed: {all}");
    assert!(all.contains(template), "named through the template: {all}");
}

#[test]
fn dead_letter_locations_are_named_through_the_template() {
    let (dir, data, out) = secret_dir(&[("in.jsonl", BAD_JSONL)]);
    let spec = format!(
        "version: 1\nname: secret\nsources:\n  s:\n    connector: file\n    path: \"${{env:DATA_DIR}}/in.jsonl\"\n    format: jsonl\n    \
         schema: {{ id: bigint }}\n    on_error: dead_letter\n    dead_letter: rejected\n\
         sinks:\n  o: {{ connector: file, input: s, path: \"{o}/good\", format: jsonl }}\n  \
         r: {{ connector: file, input: rejected, path: \"{o}/rejected\", format: jsonl }}\n",
        o = out.display()
    );
    let run = run_spec(dir.path(), &spec, &[], &[("DATA_DIR", &data)]);
    let all = everything(&run, &out);
    assert!(run.status.success(), "{all}");
    assert!(!all.contains(SECRET), "the value of DATA_DIR is written: {all}");
    let rejected = out.join("rejected");
    let rows: Vec<serde_json::Value> = files(&rejected)
        .iter()
        .flat_map(|f| std::fs::read_to_string(rejected.join(f)).unwrap().lines().map(String::from).collect::<Vec<_>>())
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["location"], "${env:DATA_DIR}/in.jsonl:2");

    // A dry run prints the dead letters instead.
    let dry = run_spec(dir.path(), &spec, &["--dry-run"], &[("DATA_DIR", &data)]);
    let shown = everything(&dry, &dir.path().join("none"));
    assert!(dry.status.success(), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("${env:DATA_DIR}/in.jsonl:2"), "{shown}");
}

#[test]
fn a_parquet_read_error_is_named_through_the_template() {
    let (dir, data, out) = secret_dir(&[("in.parquet", b"this is not a parquet file")]);
    let spec = format!(
        "version: 1\nname: secret\nsources:\n  s: {{ connector: file, path: \"${{env:DATA_DIR}}/*.parquet\", format: parquet, schema: {{ id: bigint }} }}\n\
         sinks:\n  o: {{ connector: file, input: s, path: \"{}\", format: jsonl }}\n",
        out.display()
    );
    let run = run_spec(dir.path(), &spec, &[], &[("DATA_DIR", &data)]);
    assert_fails_naming(&run, &out, "${env:DATA_DIR}/in.parquet");
}

#[test]
fn a_sink_folder_that_cannot_be_created_is_named_through_the_template() {
    let (dir, data, out) = secret_dir(&[]);
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"id\": 1, \"ts\": \"2026-01-01T00:00:00Z\"}\n").unwrap();
    // The bucket folder cannot be created: a file holds its name.
    std::fs::write(Path::new(&data).join("dt=2026-01-01"), "in the way").unwrap();
    let spec = format!(
        "version: 1\nname: secret\nsources:\n  s: {{ connector: file, path: \"{}\", format: jsonl, schema: {{ id: bigint, ts: timestamp }}, event_time: {{ column: ts }} }}\n\
         sinks:\n  o: {{ connector: file, input: s, path: \"${{env:OUT_DIR}}\", format: jsonl, bucket: \"dt=%Y-%m-%d\" }}\n",
        input.display()
    );
    let run = run_spec(dir.path(), &spec, &[], &[("OUT_DIR", &data)]);
    assert_fails_naming(&run, &out, "cannot create folder `${env:OUT_DIR}/dt=2026-01-01`");
}
