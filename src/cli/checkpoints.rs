//! `sluice checkpoints list` and `sluice plan --against`: what a checkpoint storage holds, and
//! whether a spec can take over a checkpoint's state.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use sluice::checkpoint::compat::{self, Verdict};
use sluice::checkpoint::{self, Manifest, Storage};
use sluice::diagnostics::Format;
use sluice::plan::PlanFormat;
use sluice::spec::{self, Options};

use super::print_report;

/// A short summary of a source's inline state (its position) per subtask.
fn positions(m: &Manifest, source: &str) -> String {
    let Some(o) = m.operator(source) else { return String::new() };
    let mut parts = Vec::new();
    for s in &o.subtasks {
        let text = match s.meta.get("files").and_then(|f| f.as_array()) {
            Some(files) => {
                let done = files.iter().filter(|f| f.get("done").and_then(|d| d.as_bool()) == Some(true)).count();
                let bytes: u64 = files.iter().filter_map(|f| f.get("offset").and_then(|o| o.as_u64())).sum();
                format!("{done} files done, {} open at {bytes} bytes", files.len() - done)
            }
            None => s.meta.to_string(),
        };
        parts.push(format!("{}#{}: {text}", o.id, s.subtask));
    }
    parts.join("; ")
}

/// `sluice checkpoints list STORAGE`.
pub fn list(out: &mut dyn Write, url: &str, json: bool) -> anyhow::Result<ExitCode> {
    // A spec file names its storage and how to reach it.
    let from_spec = Path::new(url);
    let (url, s3) = if from_spec.is_file() && sluice::spec::loader::Syntax::from_path(from_spec).is_some() {
        let report = sluice::spec::validate_file(from_spec, &sluice::spec::Options::default())
            .map_err(|e| anyhow::anyhow!("cannot read {url}: {e}"))?;
        let Some(c) = report.validated.as_ref().and_then(|v| v.pipeline.checkpoints.clone()) else {
            anyhow::bail!("{url} is not a valid spec with `checkpoints:`; `sluice validate {url}` says why");
        };
        (c.storage, c.s3)
    } else {
        (url.to_string(), None)
    };
    let url = url.as_str();
    let storage = Storage::open_existing(url, s3.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut rows = Vec::new();
    for (_, name) in checkpoint::manifests(&storage).map_err(|e| anyhow::anyhow!("{e}"))? {
        let bytes = storage.get(&name).map_err(|e| anyhow::anyhow!("{e}"))?.unwrap_or_default();
        match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(m) => rows.push(Ok(m)),
            Err(e) => rows.push(Err(format!("{name}: unreadable manifest ({e})"))),
        }
    }
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| match r {
                Ok(m) => serde_json::json!({
                    "id": m.id,
                    "kind": if m.savepoint { "savepoint" } else { "checkpoint" },
                    "pipeline": m.pipeline,
                    "time": m.time,
                    "generation": m.generation,
                    "duration_ms": m.duration_ms,
                    "state_bytes": m.state_bytes(),
                    "new_bytes": m.new_bytes(),
                    "location": format!("{}/{}", url.trim_end_matches('/'), m.dir()),
                    "operators": m.operators.iter().map(|o| serde_json::json!({
                        "id": o.id,
                        "parallelism": o.parallelism,
                        "state_bytes": o.subtasks.iter().map(checkpoint::StateHandle::bytes).sum::<u64>(),
                    })).collect::<Vec<_>>(),
                    "sources": m.splits.keys().filter_map(|s| m.operator(s)).map(|o| (o.id.clone(),
                        serde_json::Value::Array(o.subtasks.iter().map(|s| s.meta.clone()).collect()))).collect::<serde_json::Map<_, _>>(),
                }),
                Err(e) => serde_json::json!({ "error": e }),
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&items)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        writeln!(out, "no complete checkpoints in {url}")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:>6}  {:10}  {:24}  {:>10}  {:>10}  {:>8}  {:9}  sources",
        "id", "kind", "time", "state", "uploaded", "took", "operators"
    )?;
    for r in &rows {
        match r {
            Ok(m) => {
                let kind = if m.savepoint { "savepoint" } else { "checkpoint" };
                let sources: Vec<String> = m.splits.keys().map(|s| positions(m, s)).filter(|s| !s.is_empty()).collect();
                writeln!(
                    out,
                    "{:>6}  {kind:10}  {:24}  {:>10}  {:>10}  {:>6}ms  {:9}  {}",
                    m.id,
                    m.time,
                    format_bytes(m.state_bytes()),
                    format_bytes(m.new_bytes()),
                    m.duration_ms,
                    m.operators.len(),
                    sources.join("; ")
                )?;
            }
            Err(e) => writeln!(out, "{e}")?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn format_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// `sluice plan SPEC --against LOCATION`.
pub fn plan_against(
    out: &mut dyn Write,
    path: &Path,
    format: PlanFormat,
    against: &str,
    allow_state_loss: bool,
) -> anyhow::Result<ExitCode> {
    let report = spec::validate_file(path, &Options::default())
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let Some(v) = &report.validated else {
        print_report(out, &report, Format::Human)?;
        return Ok(ExitCode::from(1));
    };
    let s3 = v.pipeline.checkpoints.as_ref().and_then(|c| c.s3.as_ref());
    let restored = checkpoint::open_location(against, None, s3, &v.pipeline.name, &checkpoint::Fetch::Sizes)
        .map_err(|e| anyhow::anyhow!(e))?;
    let Some(r) = restored else { anyhow::bail!("`{against}` holds no complete checkpoint") };
    let plan = sluice::plan::build(v);
    let changes = compat::compare(v, &plan, &r.manifest);
    let lost = changes.iter().any(|c| c.loses_state());
    if format == PlanFormat::Json {
        let doc = serde_json::json!({
            "checkpoint": r.location,
            "id": r.manifest.id,
            "state_lost": lost,
            "operators": changes,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(out, "state of {} (checkpoint {}):", r.location, r.manifest.id)?;
        let width = changes.iter().map(|c| c.operator.len()).max().unwrap_or(8).max(8);
        for c in &changes {
            let verdict = match c.verdict {
                Verdict::Kept => "kept",
                Verdict::Dropped => "DROPPED",
                Verdict::Incompatible => "INCOMPATIBLE",
                Verdict::New => "new",
            };
            writeln!(out, "  {:width$}  {verdict:12}  {}", c.operator, c.reason)?;
        }
        if lost {
            writeln!(out, "state would be lost{}", if allow_state_loss { " (allowed)" } else { "" })?;
        }
    }
    Ok(if lost && !allow_state_loss { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
