//! Names and the graph: valid and unique names, inputs that exist, no cycles, streams that
//! somebody reads, at least one sink, tests that name real sources and sinks; and the
//! `${env:...}` / `${file:...}` references, found and checked without resolving them.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::Value;

use super::check::Checker;
use super::loader::{SourceMap, push_pointer};
use super::values::{MAX_REFERENCE_FILE_BYTES, Reference, find_references};
use super::{FoundReference, Options, Pipeline, SUPPORTED_VERSION};
use crate::diagnostics::{Code, Diagnostic, did_you_mean};

/// What produces a named stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Producer {
    Source,
    Transform,
    SideOutput,
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks names and the graph. Returns the transforms in topological order, or `None` when
/// the graph is broken.
pub fn check(p: &Pipeline, cx: &mut Checker) -> Option<Vec<String>> {
    if p.version != SUPPORTED_VERSION {
        cx.error(Code::UnsupportedVersion, "/version", format!("spec version {} is not supported", p.version)).help =
            Some(format!("this Sluice reads `version: {SUPPORTED_VERSION}`"));
    }
    check_parallelism(p, cx);

    // Every name with the pointer of the place that defines it.
    let mut defined: Vec<(String, String, Producer)> = Vec::new();
    for (name, s) in &p.sources {
        let ptr = push_pointer("/sources", name);
        defined.push((name.clone(), ptr.clone(), Producer::Source));
        if let Some(dl) = s.get().dead_letter() {
            defined.push((dl.to_string(), format!("{ptr}/dead_letter"), Producer::SideOutput));
        }
    }
    for (name, t) in &p.transforms {
        let ptr = push_pointer("/transforms", name);
        defined.push((name.clone(), ptr.clone(), Producer::Transform));
        for (side, rel) in t.get().side_outputs() {
            defined.push((side.to_string(), format!("{ptr}{rel}"), Producer::SideOutput));
        }
    }
    let mut sink_names = Vec::new();
    for name in p.sinks.keys() {
        sink_names.push((name.clone(), push_pointer("/sinks", name)));
    }

    let mut first_at: HashMap<&str, &str> = HashMap::new();
    let all =
        defined.iter().map(|(n, ptr, kind)| (n, ptr, Some(*kind))).chain(sink_names.iter().map(|(n, p)| (n, p, None)));
    for (name, ptr, kind) in all {
        let side = kind == Some(Producer::SideOutput);
        if !is_identifier(name) {
            let msg =
                format!("`{name}` is not a valid name: use ASCII letters, digits and `_`, not starting with a digit");
            if side {
                cx.error(Code::InvalidName, ptr, msg)
            } else {
                cx.error_at_key(Code::InvalidName, ptr, msg)
            };
        }
        if let Some(first) = first_at.get(name.as_str()) {
            let line = cx_line(cx, first);
            let msg = format!("the name `{name}` is already used");
            let d = if side {
                cx.error(Code::DuplicateName, ptr, msg)
            } else {
                cx.error_at_key(Code::DuplicateName, ptr, msg)
            };
            d.help = Some(format!(
                "it is first defined on line {line}; names identify operators and their state, so each must be unique"
            ));
        } else {
            first_at.insert(name, ptr);
        }
    }

    let streams: HashMap<&str, Producer> = defined.iter().map(|(n, _, k)| (n.as_str(), *k)).collect();
    let sinks: HashSet<&str> = p.sinks.keys().map(String::as_str).collect();
    let mut read: HashSet<&str> = HashSet::new();
    let mut broken = false;
    let check_input = |cx: &mut Checker, input: &str, ptr: &str| {
        if streams.contains_key(input) {
            return true;
        }
        let (msg, help) = if sinks.contains(input) {
            (
                format!("`{input}` is a sink, and sinks produce no stream"),
                "read from the stream the sink reads instead".to_string(),
            )
        } else {
            let names: Vec<&str> = streams.keys().copied().collect();
            let help = did_you_mean(input, names.iter().copied()).unwrap_or_else(|| {
                let mut names = names.clone();
                names.sort();
                format!("the streams are: {}", names.join(", "))
            });
            (format!("`{input}` is not a source, transform or side output"), help)
        };
        let d = cx.error(Code::UnknownInput, ptr, msg);
        d.label = Some("no such stream".into());
        d.help = Some(help);
        false
    };
    for (name, t) in &p.transforms {
        let base = push_pointer("/transforms", name);
        for (input, rel) in t.get().inputs() {
            read.insert(input);
            if !check_input(cx, input, &format!("{base}{rel}")) {
                broken = true;
            }
        }
    }
    for (name, s) in &p.sinks {
        let input = s.get().input();
        read.insert(input);
        if !check_input(cx, input, &format!("{}/input", push_pointer("/sinks", name))) {
            broken = true;
        }
    }
    if p.sinks.is_empty() {
        cx.error_at_key(Code::NoSinks, "/sinks", "the pipeline has no sinks, so its results go nowhere").help =
            Some("add a sink, such as `out: { connector: stdout, input: ... }`".into());
    }
    // With a broken input, "nothing reads X" is usually the same mistake seen from the other end.
    for (name, ptr, kind) in defined.iter().filter(|_| !broken) {
        if !read.contains(name.as_str()) {
            let what = match kind {
                Producer::Source => "source",
                Producer::Transform => "transform",
                Producer::SideOutput => "side output",
            };
            let msg = format!("{what} `{name}` is not read by any transform or sink");
            let d = if *kind == Producer::SideOutput {
                cx.error(Code::UnusedStream, ptr, msg)
            } else {
                cx.error_at_key(Code::UnusedStream, ptr, msg)
            };
            d.help = Some("remove it or give it a sink".into());
        }
    }

    for (i, test) in p.tests.iter().enumerate() {
        for name in test.given.keys() {
            if !p.sources.contains_key(name) {
                let ptr = push_pointer(&format!("/tests/{i}/given"), name);
                let help = did_you_mean(name, p.sources.keys().map(String::as_str)).unwrap_or_else(|| {
                    format!("the sources are: {}", p.sources.keys().cloned().collect::<Vec<_>>().join(", "))
                });
                cx.error_at_key(
                    Code::UnknownTestTarget,
                    &ptr,
                    format!("test gives rows to `{name}`, which is not a source"),
                )
                .help = Some(help);
            }
        }
        for name in test.expect.keys() {
            if !p.sinks.contains_key(name) {
                let ptr = push_pointer(&format!("/tests/{i}/expect"), name);
                let help = did_you_mean(name, p.sinks.keys().map(String::as_str)).unwrap_or_else(|| {
                    format!("the sinks are: {}", p.sinks.keys().cloned().collect::<Vec<_>>().join(", "))
                });
                cx.error_at_key(
                    Code::UnknownTestTarget,
                    &ptr,
                    format!("test expects rows at `{name}`, which is not a sink"),
                )
                .help = Some(help);
            }
        }
    }

    if broken {
        return None;
    }
    topological(p, cx)
}

/// No parallelism may exceed the number of key groups (`max_parallelism`): a keyed subtask
/// owns at least one key group.
fn check_parallelism(p: &Pipeline, cx: &mut Checker) {
    // Without `max_parallelism` the default grows with the parallelism (as Flink's does).
    let Some(max) = p.max_parallelism else { return };
    let mut all: Vec<(String, Option<u32>)> = vec![("/parallelism".into(), p.parallelism)];
    all.extend(p.sources.iter().map(|(n, s)| (push_pointer("/sources", n), s.get().parallelism())));
    all.extend(p.transforms.iter().map(|(n, t)| (push_pointer("/transforms", n), t.get().parallelism())));
    all.extend(p.sinks.iter().map(|(n, s)| (push_pointer("/sinks", n), s.get().parallelism())));
    for (i, (ptr, parallelism)) in all.into_iter().enumerate() {
        let Some(n) = parallelism.filter(|&n| n > max) else { continue };
        let at = if i == 0 { ptr } else { format!("{ptr}/parallelism") };
        cx.error(Code::OutOfRange, &at, format!("parallelism {n} is more than `max_parallelism` ({max})")).help =
            Some("lower `parallelism`, or raise `max_parallelism` (the number of key groups)".into());
    }
}

fn cx_line(cx: &Checker, pointer: &str) -> usize {
    cx.line_of(pointer)
}

/// Orders transforms so that each comes after its inputs; reports a cycle if there is one.
fn topological(p: &Pipeline, cx: &mut Checker) -> Option<Vec<String>> {
    // The transform producing each stream (side outputs belong to their transform).
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for (name, t) in &p.transforms {
        owner.insert(name, name);
        for (side, _) in t.get().side_outputs() {
            owner.insert(side, name);
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark: HashMap<&str, Mark> = p.transforms.keys().map(|k| (k.as_str(), Mark::New)).collect();
    let mut order = Vec::new();
    // Iterative DFS, so deep chains cannot overflow the stack.
    for start in p.transforms.keys() {
        if mark[start.as_str()] != Mark::New {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        mark.insert(start, Mark::Active);
        while let Some((node, next)) = stack.pop() {
            let inputs = p.transforms[node].get().inputs();
            if next < inputs.len() {
                stack.push((node, next + 1));
                let (input, rel) = &inputs[next];
                let Some(&dep) = owner.get(input) else { continue };
                match mark[dep] {
                    Mark::New => {
                        mark.insert(dep, Mark::Active);
                        stack.push((dep, 0));
                    }
                    Mark::Active => {
                        let mut path: Vec<&str> = stack.iter().map(|(n, _)| *n).collect();
                        let from = path.iter().position(|n| *n == dep).unwrap_or(0);
                        path.drain(..from);
                        path.push(dep);
                        let ptr = format!("{}{rel}", push_pointer("/transforms", node));
                        cx.error(
                            Code::Cycle,
                            &ptr,
                            format!("transforms read from each other in a cycle: {}", path.join(" → ")),
                        )
                        .help = Some("a pipeline is a DAG: break the cycle by reading from a source".into());
                        return None;
                    }
                    Mark::Done => {}
                }
            } else {
                mark.insert(node, Mark::Done);
                order.push(node.to_string());
            }
        }
    }
    Some(order)
}

/// Finds the `${...}` references in connector settings, reporting malformed ones, references
/// outside connector settings and, when `options.resolve_env`, missing variables and files.
pub fn references(
    value: &Value,
    file: &Path,
    map: &SourceMap,
    options: &Options,
) -> (Vec<FoundReference>, Vec<Diagnostic>) {
    let mut found = Vec::new();
    let mut diags = Vec::new();
    let mut stack = vec![(String::new(), value)];
    while let Some((ptr, v)) = stack.pop() {
        match v {
            Value::Object(o) => stack.extend(o.iter().map(|(k, v)| (push_pointer(&ptr, k), v))),
            Value::Array(a) => stack.extend(a.iter().enumerate().map(|(i, v)| (format!("{ptr}/{i}"), v))),
            Value::String(s) if s.contains("${") => {
                let in_connector = ptr.starts_with("/sources/") || ptr.starts_with("/sinks/");
                match find_references(s) {
                    Err(e) => {
                        let span = map.span_within(&ptr, e.offset, e.len);
                        let mut d = Diagnostic::new(Code::InvalidReference, e.message).at(file, span);
                        d.pointer = Some(ptr.clone());
                        diags.push(d);
                    }
                    Ok(refs) => {
                        for (offset, len, reference) in refs {
                            let span = map.span_within(&ptr, offset, len);
                            if !in_connector {
                                let mut d = Diagnostic::new(
                                    Code::InvalidReference,
                                    format!("`{reference}` is only resolved in connector settings (sources and sinks)"),
                                )
                                .at(file, span);
                                d.pointer = Some(ptr.clone());
                                diags.push(d);
                                continue;
                            }
                            if options.resolve_env {
                                let missing = match &reference {
                                    Reference::Env(name) => std::env::var_os(name)
                                        .is_none()
                                        .then(|| format!("environment variable `{name}` is not set")),
                                    // Relative to the working directory, as `run` reads it.
                                    Reference::File(path) => match std::fs::metadata(path) {
                                        Err(_) => Some(format!(
                                            "file `{path}` does not exist (paths are relative to the working directory)"
                                        )),
                                        Ok(m) if !m.is_file() => Some(format!("`{path}` is not a regular file")),
                                        Ok(m) if m.len() > MAX_REFERENCE_FILE_BYTES => Some(format!(
                                            "file `{path}` is larger than {} KiB",
                                            MAX_REFERENCE_FILE_BYTES >> 10
                                        )),
                                        Ok(_) => None,
                                    },
                                };
                                if let Some(msg) = missing {
                                    let mut d = Diagnostic::new(Code::UnresolvedReference, msg).at(file, span);
                                    d.pointer = Some(ptr.clone());
                                    diags.push(d);
                                }
                            }
                            found.push(FoundReference { reference, span, pointer: ptr.clone() });
                        }
                    }
                }
            }
            _ => {}
        }
    }
    found.sort_by_key(|r| r.span.start);
    (found, diags)
}
