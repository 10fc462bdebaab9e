//! The command line: argument parsing (clap) and the commands, which call the library and
//! decide exit codes. Exit codes: 0 success, 1 the spec is invalid (or a test failed), 2 usage
//! or I/O error. A closed stdout (`sluice plan | head`) is not an error.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use sluice::diagnostics::{Format, Severity, render};
use sluice::plan::PlanFormat;
use sluice::spec::{self, Options, Report};

mod checkpoints;
mod run;

/// Sluice: stream processing pipelines as YAML or TOML specs.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check spec files offline: syntax, structure, names, graph and types.
    Validate {
        /// Spec files, or folders searched for *.yaml, *.yml and *.toml.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// How to print diagnostics.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Fail (exit 1) on warnings too.
        #[arg(long)]
        deny_warnings: bool,
        /// Check that referenced environment variables and files exist (values are never printed).
        #[arg(long)]
        env: bool,
    },
    /// Show the physical graph a spec runs as.
    Plan {
        /// The spec file.
        spec: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        /// Compare the spec's state with a checkpoint, a savepoint, or a storage URL (its
        /// latest complete checkpoint); exit 1 when state would be lost.
        #[arg(long, value_name = "LOCATION")]
        against: Option<String>,
        /// With `--against`: exit 0 even when state would be lost.
        #[arg(long, requires = "against")]
        allow_state_loss: bool,
    },
    /// Inspect checkpoint storage.
    Checkpoints {
        #[command(subcommand)]
        command: CheckpointsCommand,
    },
    /// Run a spec on this machine until its inputs end (or Ctrl-C).
    Run {
        /// The spec file.
        spec: PathBuf,
        /// Replace every sink by a capture printed to stdout at the end.
        #[arg(long)]
        dry_run: bool,
        /// No progress bar or summary.
        #[arg(long, short)]
        quiet: bool,
        /// Ignore the checkpoints in the spec's storage and start from the beginning.
        #[arg(long, conflicts_with = "from")]
        fresh: bool,
        /// Restore this checkpoint or savepoint (a folder such as `chk-0000000012`, relative to the
        /// spec's storage, or a full `file://` or `s3://` location) instead of the latest.
        #[arg(long, value_name = "PATH")]
        from: Option<String>,
        /// Restore even if some operator's state cannot be (it starts empty).
        #[arg(long)]
        allow_state_loss: bool,
        /// Do not run: ask the run of this spec that holds its checkpoint storage (on any
        /// machine) to take a savepoint and stop, wait until it has, and print where it is.
        #[arg(long, conflicts_with_all = ["dry_run", "fresh", "from", "allow_state_loss"])]
        stop_with_savepoint: bool,
    },
    /// Run the `tests:` of spec files.
    Test {
        /// Spec files, or folders searched for *.yaml, *.yml and *.toml.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Rewrite each test's expectations with what the pipeline produced.
        #[arg(long)]
        update: bool,
        /// Also write results as JUnit XML to this file.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Print the JSON Schema of spec files.
    Schema,
}

#[derive(Debug, Subcommand)]
enum CheckpointsCommand {
    /// List the complete checkpoints and savepoints in a storage (`file://…`, `s3://…` or a folder).
    List {
        /// The storage URL, as in a spec's `checkpoints.storage`, or a spec file (its storage,
        /// with its `s3:` options).
        storage: String,
        /// `table` or `json`.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
}

/// How `checkpoints list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ListFormat {
    Table,
    Json,
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    // Not locked for the whole command: a stdout sink prints from its own thread.
    let mut out = std::io::stdout();
    let result = match cli.command {
        Command::Validate { paths, format, deny_warnings, env } => {
            validate(&mut out, &paths, format, deny_warnings, env)
        }
        Command::Plan { spec, format, against: None, .. } => plan(&mut out, &spec, format),
        Command::Plan { spec, format, against: Some(against), allow_state_loss } => {
            checkpoints::plan_against(&mut out, &spec, format, &against, allow_state_loss)
        }
        Command::Checkpoints { command: CheckpointsCommand::List { storage, format } } => {
            checkpoints::list(&mut out, &storage, format == ListFormat::Json)
        }
        Command::Run { spec, dry_run, quiet, fresh, from, allow_state_loss, stop_with_savepoint } => {
            let flags = run::RunFlags { dry_run, quiet, fresh, from, allow_state_loss, stop_with_savepoint };
            run::run(&mut out, &spec, flags)
        }
        Command::Test { paths, update, junit } => run::test(&mut out, &paths, update, junit.as_deref()),
        Command::Schema => {
            let text = serde_json::to_string_pretty(&spec::json_schema()).expect("schema serializes");
            writeln!(out, "{text}").map(|_| ExitCode::SUCCESS).map_err(Into::into)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Expands folders into the spec files under them, sorted; files are kept as given.
pub(crate) fn spec_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            let mut stack = vec![path.clone()];
            // Folders already walked, by canonical path: a symlink back up the tree (or two
            // links to one folder) is walked once, so cycles end.
            let mut walked = std::collections::HashSet::new();
            while let Some(dir) = stack.pop() {
                let canonical =
                    std::fs::canonicalize(&dir).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
                if !walked.insert(canonical) {
                    continue;
                }
                let entries =
                    std::fs::read_dir(&dir).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
                for entry in entries {
                    let p = entry.map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if spec::loader::Syntax::from_path(&p).is_some() {
                        found.push(p);
                    }
                }
            }
            found.sort();
            files.extend(found);
        } else if spec::loader::Syntax::from_path(path).is_some() {
            files.push(path.clone());
        } else {
            anyhow::bail!("{}: not a spec file (expected .yaml, .yml or .toml)", path.display());
        }
    }
    Ok(files)
}

pub(crate) fn print_report(out: &mut dyn Write, report: &Report, format: Format) -> anyhow::Result<()> {
    let color = format == Format::Human && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let text = report.map.text().to_string();
    render(out, format, &report.diagnostics, &|_: &Path| Some(text.clone()), color)?;
    if format == Format::Human && !report.references.is_empty() {
        writeln!(out, "{}: references to values from outside (not resolved):", report.file.display())?;
        for r in &report.references {
            writeln!(out, "  {} at {}:{}:{}", r.reference, report.file.display(), r.span.line, r.span.column)?;
        }
    }
    Ok(())
}

fn validate(
    out: &mut dyn Write,
    paths: &[PathBuf],
    format: Format,
    deny_warnings: bool,
    env: bool,
) -> anyhow::Result<ExitCode> {
    let files = spec_files(paths)?;
    if files.is_empty() {
        anyhow::bail!("no spec files (*.yaml, *.yml, *.toml) found");
    }
    let options = Options { resolve_env: env };
    let (mut errors, mut warnings, mut bad_files) = (0, 0, 0);
    for file in &files {
        let report =
            spec::validate_file(file, &options).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        let e = report.diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
        let w = report.diagnostics.len() - e;
        errors += e;
        warnings += w;
        if e > 0 || (deny_warnings && w > 0) {
            bad_files += 1;
        }
        print_report(out, &report, format)?;
    }
    if format == Format::Human {
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        writeln!(
            out,
            "checked {}: {}, {}",
            plural(files.len(), "file"),
            plural(errors, "error"),
            plural(warnings, "warning")
        )?;
    }
    Ok(if bad_files > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn plan(out: &mut dyn Write, path: &Path, format: PlanFormat) -> anyhow::Result<ExitCode> {
    let report = spec::validate_file(path, &Options::default())
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let Some(validated) = &report.validated else {
        print_report(out, &report, Format::Human)?;
        return Ok(ExitCode::from(1));
    };
    let plan = sluice::plan::build(validated);
    out.write_all(plan.render(format).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
