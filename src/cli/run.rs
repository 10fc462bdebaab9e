//! `sluice run` and `sluice test`: validate, then hand the spec to the engine; show progress,
//! stop cleanly on Ctrl-C or SIGTERM, and summarise.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sluice::diagnostics::Format;
use sluice::runtime::controller::{CancelRequests, OperatorStats, ProgressFn, cancel_channel};
use sluice::runtime::{JobOptions, run_job};
use sluice::spec::values::Redactor;
use sluice::spec::{self, Options};
use sluice::testing;

use super::{print_report, spec_files};

/// Cancels the job (with drain) on SIGINT or SIGTERM; a second signal exits at once.
fn cancel_on_signals() -> anyhow::Result<CancelRequests> {
    let (handle, requests) = cancel_channel();
    let signals = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];
    let mut iter = signal_hook::iterator::Signals::new(signals)?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut seen = false;
        for _ in iter.forever() {
            if seen {
                std::process::exit(130);
            }
            seen = true;
            handle.cancel();
        }
    })?;
    Ok(requests)
}

fn progress_bar(quiet: bool) -> Option<ProgressFn> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    let mut styled = false;
    Some(Box::new(move |stats: &[OperatorStats]| {
        let sources = stats.iter().filter(|s| s.role == "source");
        let (rows, bytes, total) =
            sources.fold((0, 0, 0), |a, s| (a.0 + s.rows_out, a.1 + s.bytes_read, a.2 + s.bytes_total));
        if !styled {
            let template = if total > 0 {
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}"
            } else {
                "{spinner} [{elapsed_precise}] {bytes} read, {bytes_per_sec} {msg}"
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_length(total);
            styled = true;
        }
        bar.set_position(bytes);
        let elapsed = bar.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!("{rows} rows ({:.0} rows/s)", rows as f64 / elapsed));
    }))
}

fn summary(err: &mut dyn Write, stats: &[OperatorStats]) -> std::io::Result<()> {
    let width = stats.iter().map(|s| s.id.len()).max().unwrap_or(8).max(8);
    writeln!(
        err,
        "{:width$}  {:9}  {:>12}  {:>12}  {:>8}  {:>12}",
        "operator", "role", "rows in", "rows out", "bad", "late dropped"
    )?;
    for s in stats {
        let rows_in = if s.role == "source" { "-".to_string() } else { s.rows_in.to_string() };
        let rows_out = if s.role == "sink" { "-".to_string() } else { s.rows_out.to_string() };
        writeln!(
            err,
            "{:width$}  {:9}  {rows_in:>12}  {rows_out:>12}  {:>8}  {:>12}",
            s.id, s.role, s.bad_records, s.late_dropped
        )?;
    }
    Ok(())
}

/// Flags of `sluice run`.
pub struct RunFlags {
    /// Replace sinks by a capture.
    pub dry_run: bool,
    /// No progress or summary.
    pub quiet: bool,
    /// Ignore existing checkpoints.
    pub fresh: bool,
    /// Restore this checkpoint.
    pub from: Option<String>,
    /// Restore even if some state cannot be.
    pub allow_state_loss: bool,
    /// Ask the running job to stop with a savepoint instead of running it.
    pub stop_with_savepoint: bool,
}

/// `sluice run`.
pub fn run(out: &mut dyn Write, path: &Path, flags: RunFlags) -> anyhow::Result<ExitCode> {
    let RunFlags { dry_run, quiet, fresh, from, allow_state_loss, stop_with_savepoint } = flags;
    let report = spec::validate_file(path, &Options::default())
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let Some(validated) = &report.validated else {
        print_report(out, &report, Format::Human)?;
        return Ok(ExitCode::from(1));
    };
    if stop_with_savepoint {
        return stop_running(out, validated);
    }
    let options = JobOptions {
        capture_sinks: dry_run,
        cancel: Some(cancel_on_signals()?),
        on_progress: progress_bar(quiet),
        fresh,
        from,
        allow_state_loss,
        log: Some(Box::new(|line: &str| eprintln!("{line}"))),
        ..JobOptions::default()
    };
    let result = run_job(validated, options);
    let mut err = std::io::stderr().lock();
    match result {
        Ok(result) => {
            if dry_run {
                for (sink, batches) in &result.captured {
                    // The same check as the printing sinks': no error message in place of a value.
                    if let Err(e) = batches.iter().try_for_each(sluice::connectors::file::values::check_printable) {
                        writeln!(err, "error: sink `{sink}`: {e}")?;
                        return Ok(ExitCode::from(1));
                    }
                    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                    writeln!(out, "── sink `{sink}` would receive {rows} rows")?;
                    if rows > 0 {
                        writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(batches)?)?;
                    }
                }
            }
            if !quiet {
                let how = if result.stopped { "stopped" } else { "finished" };
                writeln!(err, "\n{} {how} in {:.2}s", validated.pipeline.name, result.elapsed.as_secs_f64())?;
                summary(&mut err, &result.stats)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // Connectors name files as the spec writes them; this also keeps the values of
            // `${...}` references out of anything else that reached the message.
            let shown = Redactor::new(report.references.iter().map(|r| &r.reference));
            writeln!(err, "error: {}", shown.apply(&e.to_string()))?;
            Ok(ExitCode::from(1))
        }
    }
}

/// `sluice run SPEC --stop-with-savepoint`: asks the run of the spec holding its checkpoint
/// storage to take a savepoint and stop (through the storage, so from any machine), waits
/// until that run has given the storage up, and prints the savepoint's location.
fn stop_running(out: &mut dyn Write, validated: &spec::Validated) -> anyhow::Result<ExitCode> {
    use sluice::checkpoint::{self, Storage};
    let p = &validated.pipeline;
    let Some(c) = &p.checkpoints else {
        anyhow::bail!("`{}` takes no checkpoints: a savepoint needs `checkpoints:` in the spec", p.name);
    };
    let storage = Storage::open_existing(&c.storage, c.s3.as_ref())
        .map_err(|e| anyhow::anyhow!("no run of `{}` holds storage `{}` ({e})", p.name, c.storage))?;
    let before = checkpoint::inventory(&storage).map_err(|e| anyhow::anyhow!("{e}"))?.max_id.unwrap_or(0);
    let lease = checkpoint::request_stop(&storage, &p.name).map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("asked the run of `{}` (process {} on `{}`) to stop with a savepoint", p.name, lease.pid, lease.host);
    // It looks at each lease renewal; a checkpoint in flight may finish first, then the
    // savepoint gets the checkpoint timeout, and the run drains.
    let timeout = c.timeout.map_or(std::time::Duration::from_secs(600), |t| t.0);
    let pause = c.min_pause.map_or(std::time::Duration::ZERO, |t| t.0);
    let started = std::time::Instant::now();
    let deadline = started + 2 * timeout + pause + std::time::Duration::from_secs(60);
    while checkpoint::still_held(&storage, &lease).unwrap_or(true) {
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the run of `{}` still holds `{}` after {:.0?}; it may still stop",
                p.name,
                c.storage,
                started.elapsed()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let inventory = checkpoint::inventory(&storage).map_err(|e| anyhow::anyhow!("{e}"))?;
    let savepoint = inventory.manifests.iter().map(|(id, name)| (*id, name)).find(|(id, name)| {
        *id > before && name.split('/').next().and_then(checkpoint::folder_id).is_some_and(|(_, sp)| sp)
    });
    match savepoint {
        Some((_, name)) => {
            let dir = name.split('/').next().unwrap_or_default();
            writeln!(out, "{}/{dir}", c.storage.trim_end_matches('/'))?;
            Ok(ExitCode::SUCCESS)
        }
        None => anyhow::bail!("the run of `{}` ended without completing a savepoint; see its log", p.name),
    }
}

/// `sluice test`.
pub fn test(out: &mut dyn Write, paths: &[PathBuf], update: bool, junit: Option<&Path>) -> anyhow::Result<ExitCode> {
    let files = spec_files(paths)?;
    if files.is_empty() {
        anyhow::bail!("no spec files (*.yaml, *.yml, *.toml) found");
    }
    let (mut passed, mut failed) = (0, 0);
    let mut results = Vec::new();
    for file in &files {
        let report = spec::validate_file(file, &Options::default())
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        let Some(validated) = &report.validated else {
            print_report(out, &report, Format::Human)?;
            writeln!(out, "test {} ... FAILED (the spec is invalid)", file.display())?;
            failed += 1;
            continue;
        };
        let mut outcomes = Vec::new();
        for t in &validated.pipeline.tests {
            let o = testing::run_test(validated, t);
            if o.passed() || (update && !o.errored) {
                passed += 1;
                writeln!(out, "test {} :: {} ... ok", file.display(), o.name)?;
            } else {
                failed += 1;
                writeln!(out, "test {} :: {} ... FAILED", file.display(), o.name)?;
                for f in &o.failures {
                    writeln!(out, "    {f}")?;
                }
            }
            outcomes.push(o);
        }
        if update && outcomes.iter().any(|o| o.errored) {
            writeln!(out, "not updating {}: a test could not run", file.display())?;
        } else if update && !outcomes.is_empty() {
            let syntax = spec::loader::Syntax::from_path(file).expect("spec files have a spec extension");
            match testing::update_text(report.map.text(), syntax, &report.map, &validated.pipeline.tests, &outcomes) {
                Ok(text) if text != report.map.text() => {
                    std::fs::write(file, text).map_err(|e| {
                        anyhow::anyhow!("cannot write the updated expectations to {}: {e}", file.display())
                    })?;
                    writeln!(out, "updated expectations in {}", file.display())?;
                }
                Ok(_) => {}
                Err(e) => {
                    writeln!(out, "cannot update {}: {e}", file.display())?;
                    failed += 1;
                }
            }
        }
        results.push((file.display().to_string(), outcomes));
    }
    if let Some(path) = junit {
        std::fs::write(path, testing::junit(&results))
            .map_err(|e| anyhow::anyhow!("cannot write the JUnit report to {}: {e}", path.display()))?;
    }
    writeln!(out, "\n{passed} passed, {failed} failed")?;
    Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
