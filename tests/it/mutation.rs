//! Random mutations of the examples — lines deleted, keys renamed, values retyped, lines
//! re-indented, duplicated or cut — must never panic the validator, and every error must
//! carry a location inside the file.

use std::path::Path;

use proptest::prelude::*;
use sluice::diagnostics::{Format, render};
use sluice::spec::loader::Syntax;
use sluice::spec::{Options, validate_text};

use crate::{root, spec_files};

fn examples() -> &'static [(String, Syntax)] {
    static EXAMPLES: std::sync::OnceLock<Vec<(String, Syntax)>> = std::sync::OnceLock::new();
    EXAMPLES.get_or_init(|| {
        spec_files(&root().join("pipelines"))
            .into_iter()
            .map(|p| (std::fs::read_to_string(&p).unwrap(), Syntax::from_path(&p).unwrap()))
            .collect()
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    RenameKey(usize, usize, char),
    Retype(usize, usize),
    Reindent(usize, i8),
    DuplicateLine(usize),
    Truncate(usize),
    Insert(usize, char),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let text_char = prop_oneof![Just('x'), Just(':'), Just('{'), Just('['), Just('"'), Just('-'), Just(' '), Just('é')];
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        (any::<usize>(), any::<usize>(), proptest::char::range('a', 'z'))
            .prop_map(|(l, p, c)| Mutation::RenameKey(l, p, c)),
        (any::<usize>(), 0usize..REPLACEMENTS.len()).prop_map(|(l, r)| Mutation::Retype(l, r)),
        (any::<usize>(), -4i8..=4).prop_map(|(l, d)| Mutation::Reindent(l, d)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), text_char).prop_map(|(p, c)| Mutation::Insert(p, c)),
    ]
}

const REPLACEMENTS: [&str; 10] = ["42", "-1", "\"text\"", "[1, 2]", "{ a: 1 }", "true", "~", "", "5 hours", "1.5"];

fn apply(text: &str, m: &Mutation, syntax: Syntax) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return text.to_string();
    }
    let n = lines.len();
    match *m {
        Mutation::DeleteLine(l) => {
            lines.remove(l % n);
        }
        Mutation::RenameKey(l, p, c) => {
            let line = &mut lines[l % n];
            let sep = if syntax == Syntax::Toml { '=' } else { ':' };
            if let Some(end) = line.find(sep) {
                let start = line.len() - line.trim_start().len();
                if end > start {
                    let at = start + p % (end - start);
                    if line.is_char_boundary(at) {
                        line.insert(at, c);
                    }
                }
            }
        }
        Mutation::Retype(l, r) => {
            let line = &mut lines[l % n];
            let sep = if syntax == Syntax::Toml { " = " } else { ": " };
            if let Some(at) = line.find(sep) {
                let mut replacement = REPLACEMENTS[r].to_string();
                if syntax == Syntax::Toml {
                    replacement = replacement.replace("{ a: 1 }", "{ a = 1 }").replace('~', "\"\"");
                }
                line.truncate(at + sep.len());
                line.push_str(&replacement);
            }
        }
        Mutation::Reindent(l, d) => {
            let line = &mut lines[l % n];
            if d > 0 {
                line.insert_str(0, &" ".repeat(d as usize));
            } else {
                let strip = (-d as usize).min(line.len() - line.trim_start().len());
                line.drain(..strip);
            }
        }
        Mutation::DuplicateLine(l) => {
            let copy = lines[l % n].clone();
            lines.insert(l % n, copy);
        }
        Mutation::Truncate(p) => {
            let mut at = p % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            return text[..at].to_string();
        }
        Mutation::Insert(p, c) => {
            let mut out = text.to_string();
            let mut at = p % (text.len() + 1);
            while !out.is_char_boundary(at) {
                at -= 1;
            }
            out.insert(at, c);
            return out;
        }
    }
    lines.join("\n") + "\n"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_examples_never_panic_and_errors_are_located(
        example in 0usize..64,
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let all = examples();
        let (original, syntax) = &all[example % all.len()];
        let mut text = original.clone();
        for m in &mutations {
            text = apply(&text, m, *syntax);
        }
        let file = Path::new(if *syntax == Syntax::Toml { "mutated.toml" } else { "mutated.yaml" });
        let report = validate_text(file, &text, *syntax, &Options::default());
        let line_count = text.lines().count() + 1;
        for d in &report.diagnostics {
            let span = d.span.unwrap_or_else(|| panic!("no location: {d:?}\n{text}"));
            prop_assert!(span.line >= 1 && span.line <= line_count, "line {} of {line_count}: {d:?}", span.line);
            prop_assert!(span.column >= 1);
            prop_assert!(span.start <= span.end && span.end <= text.len(), "{d:?}");
            prop_assert!(!d.message.is_empty());
        }
        prop_assert_eq!(report.has_errors(), report.validated.is_none(), "{:?}", report.diagnostics);
        let mut out = Vec::new();
        let source = text.clone();
        render(&mut out, Format::Human, &report.diagnostics, &|_| Some(source.clone()), false).unwrap();
    }
}
