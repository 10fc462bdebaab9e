//! Diagnostics: what `validate` reports, where, and how it is printed.
//!
//! Every check in [`crate::spec`] produces [`Diagnostic`]s instead of failing on the first
//! problem. A diagnostic carries a stable [`Code`], the file and a [`Span`] (byte range plus
//! 1-based line and column), a one-line message, an optional label under the source line and
//! optional help (did-you-mean, what to write instead). Rendering lives here too: rustc-style
//! text through codespan-reporting, JSON lines for tools, and GitHub workflow annotations.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// How bad a diagnostic is: errors make a spec invalid, warnings do not (unless denied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The spec is valid but probably not what was meant.
    Warning,
    /// The spec cannot run.
    Error,
}

macro_rules! codes {
    ($($variant:ident = $code:literal, $sev:ident, $summary:literal;)*) => {
        /// Stable diagnostic codes. The text of a code never changes meaning once released;
        /// `sluice validate --format json` and CI annotations carry it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $(#[doc = $summary] $variant,)* }

        impl Code {
            /// The code as printed, such as `E0100`.
            pub fn as_str(self) -> &'static str { match self { $(Code::$variant => $code,)* } }
            /// The default severity of diagnostics with this code.
            pub fn severity(self) -> Severity { match self { $(Code::$variant => Severity::$sev,)* } }
            /// One line on what the code means.
            pub fn summary(self) -> &'static str { match self { $(Code::$variant => $summary,)* } }
            /// Every code, in order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];
        }
    };
}

codes! {
    Syntax = "E0001", Error, "the file is not well-formed YAML or TOML";
    DuplicateKey = "E0002", Error, "a key appears twice in the same mapping";
    UnsupportedDocument = "E0003", Error, "the document is not a single mapping (empty file, several documents, a list)";
    UnknownKey = "E0100", Error, "a key the spec does not know";
    MissingField = "E0101", Error, "a required field is missing";
    WrongType = "E0102", Error, "a value has the wrong type";
    InvalidValue = "E0103", Error, "a value is not one of those allowed";
    UnknownKind = "E0104", Error, "an unknown connector or transform type";
    InvalidDuration = "E0105", Error, "a duration is not written like `10s`, `5m` or `1h`";
    OutOfRange = "E0106", Error, "a number is outside its allowed range";
    UnsupportedVersion = "E0107", Error, "the spec `version` is not one this Sluice reads";
    InvalidStructure = "E0108", Error, "the value does not have the shape the spec requires";
    DuplicateName = "E0200", Error, "two streams share a name";
    UnknownInput = "E0201", Error, "an `input` names no source, transform or side output";
    Cycle = "E0202", Error, "transforms read from each other in a cycle";
    UnusedStream = "W0203", Warning, "a source or stream that nothing reads";
    NoSinks = "E0204", Error, "the pipeline writes nowhere";
    InvalidReference = "E0205", Error, "a `${...}` reference is malformed";
    UnresolvedReference = "E0206", Error, "a referenced environment variable or file is missing (with `--env`)";
    UnknownTestTarget = "E0207", Error, "a test names a source or sink that does not exist";
    InvalidName = "E0208", Error, "a name is not a valid identifier";
    UnknownColumn = "E0300", Error, "an expression names a column its input does not have";
    TypeMismatch = "E0301", Error, "operand types do not fit";
    NotBoolean = "E0302", Error, "a filter condition is not boolean";
    SqlSyntax = "E0303", Error, "an expression or query is not valid SQL";
    UnsupportedSql = "E0304", Error, "a query uses something a stateless `sql` transform cannot run";
    EventTimeColumn = "E0305", Error, "an event-time column is missing or not a timestamp";
    NoEventTime = "E0306", Error, "a window needs event time but its input has none";
    InvalidAggregate = "E0307", Error, "an aggregate is not a single aggregate function call";
    UnionMismatch = "E0308", Error, "union inputs have different schemas";
    SinkCannotWrite = "E0309", Error, "a sink cannot write a column type it receives";
    InvalidWindow = "E0310", Error, "window sizes do not fit together";
    ColumnConflict = "E0311", Error, "two output columns share a name";
    UnknownTestColumn = "E0312", Error, "a test row names a column the source does not have";
    UnknownFunction = "E0313", Error, "an expression calls a function that does not exist";
    TestValueType = "E0314", Error, "a test row's value does not fit its column's type";
    SqlTooLarge = "E0315", Error, "an expression or query has too many operators or is nested too deeply";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A place in a file: byte range for rendering, 1-based line and column (in characters) for
/// people and tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Span {
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset one past the last character (at least `start`).
    pub end: usize,
    /// 1-based line of `start`.
    pub line: usize,
    /// 1-based column of `start`, counted in characters.
    pub column: usize,
}

/// One finding of `validate`.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    /// Stable code.
    pub code: Code,
    /// Error or warning.
    pub severity: Severity,
    /// One sentence saying what is wrong.
    pub message: String,
    /// The file the finding is in.
    pub file: PathBuf,
    /// Where in the file; `None` only for findings about the file as a whole.
    pub span: Option<Span>,
    /// Short text shown under the source line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// What to change, such as a did-you-mean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// JSON pointer of the offending value in the spec, for tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with the code's default severity and no location yet.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            file: PathBuf::new(),
            span: None,
            label: None,
            help: None,
            pointer: None,
        }
    }

    /// Sets the help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Sets the label under the source line.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Sets the location.
    pub fn at(mut self, file: &Path, span: Span) -> Self {
        self.file = file.to_path_buf();
        self.span = Some(span);
        self
    }

    /// Whether this diagnostic makes the spec invalid.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// `did you mean `x`?` for the closest candidate, if one is close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// The candidate closest to `word`, when it is plausibly a misspelling of it.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Output formats of `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// rustc-style text with the offending line.
    #[default]
    Human,
    /// One JSON object per diagnostic, one per line.
    Json,
    /// GitHub Actions workflow commands (`::error file=...`), shown as annotations.
    Github,
}

/// Writes diagnostics in `format`. `sources` gives the text of each file for excerpts.
pub fn render(
    out: &mut dyn Write,
    format: Format,
    diagnostics: &[Diagnostic],
    source_of: &dyn Fn(&Path) -> Option<String>,
    color: bool,
) -> std::io::Result<()> {
    match format {
        Format::Human => render_human(out, diagnostics, source_of, color),
        Format::Json => {
            for d in diagnostics {
                serde_json::to_writer(&mut *out, d)?;
                writeln!(out)?;
            }
            Ok(())
        }
        Format::Github => {
            for d in diagnostics {
                let level = match d.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                let (line, col) = d.span.map(|s| (s.line, s.column)).unwrap_or((1, 1));
                let mut msg = format!("{}: {}", d.code, d.message);
                if let Some(help) = &d.help {
                    msg.push_str(&format!(" ({help})"));
                }
                writeln!(
                    out,
                    "::{level} file={},line={line},col={col},title=sluice {}::{}",
                    escape_property(&d.file.display().to_string()),
                    d.code,
                    escape_data(&msg)
                )?;
            }
            Ok(())
        }
    }
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

fn render_human(
    out: &mut dyn Write,
    diagnostics: &[Diagnostic],
    source_of: &dyn Fn(&Path) -> Option<String>,
    color: bool,
) -> std::io::Result<()> {
    use codespan_reporting::diagnostic::{Diagnostic as CsDiag, Label};
    use codespan_reporting::files::SimpleFiles;
    use codespan_reporting::term::{self, termcolor};

    let mut files = SimpleFiles::new();
    let mut ids: Vec<(PathBuf, usize)> = Vec::new();
    let config = term::Config::default();
    let choice = if color { termcolor::ColorChoice::Always } else { termcolor::ColorChoice::Never };
    let mut buffer = termcolor::Buffer::no_color();
    if color {
        buffer = termcolor::Buffer::ansi();
    }
    let _ = choice;
    for d in diagnostics {
        let id = match ids.iter().find(|(p, _)| *p == d.file) {
            Some((_, id)) => Some(*id),
            None => source_of(&d.file).map(|text| {
                let id = files.add(d.file.display().to_string(), text);
                ids.push((d.file.clone(), id));
                id
            }),
        };
        let mut cs = match d.severity {
            Severity::Error => CsDiag::error(),
            Severity::Warning => CsDiag::warning(),
        }
        .with_code(d.code.as_str())
        .with_message(&d.message);
        match (id, d.span) {
            (Some(id), Some(span)) => {
                let mut label = Label::primary(id, span.start..span.end.max(span.start));
                if let Some(text) = &d.label {
                    label = label.with_message(text);
                }
                cs = cs.with_labels(vec![label]);
            }
            _ => {
                let place = match d.span {
                    Some(s) => format!("{}:{}:{}", d.file.display(), s.line, s.column),
                    None => d.file.display().to_string(),
                };
                cs = cs.with_notes(vec![format!("in {place}")]);
            }
        }
        if let Some(help) = &d.help {
            cs = cs.with_notes(vec![format!("help: {help}")]);
        }
        term::emit_to_write_style(&mut buffer, &config, &files, &cs)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    out.write_all(buffer.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert_eq!(s.len(), 5);
            let lead = if code.severity() == Severity::Error { 'E' } else { 'W' };
            assert!(s.starts_with(lead), "{s} prefix does not match its severity");
        }
    }

    #[test]
    fn did_you_mean_finds_typos_only() {
        assert_eq!(closest("inptu", ["input", "where", "type"]), Some("input"));
        assert_eq!(closest("conector", ["connector", "topic"]), Some("connector"));
        assert_eq!(closest("zzz", ["input", "where"]), None);
    }

    #[test]
    fn github_format_escapes() {
        let d = Diagnostic::new(Code::UnknownKey, "bad\nthing")
            .at(Path::new("a,b.yaml"), Span { start: 0, end: 1, line: 3, column: 4 });
        let mut out = Vec::new();
        render(&mut out, Format::Github, &[d], &|_| None, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "::error file=a%2Cb.yaml,line=3,col=4,title=sluice E0100::E0100: bad%0Athing\n");
    }
}
