//! Reading spec text: YAML or TOML into one JSON value plus a source map.
//!
//! Both syntaxes become the same `serde_json::Value`, so the JSON Schema check and the typed
//! model see one shape. Alongside, a [`SourceMap`] remembers for every JSON pointer where its
//! key and its value are in the text, so that any later finding — from the schema validator,
//! the name checks or DataFusion — can be reported at `file:line:col`. Parsing never fails on
//! the first problem it can recover from: duplicate keys are reported and the first one kept.

use std::collections::HashMap;
use std::ops::Range;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError};
use serde_json::{Map, Number, Value};

use crate::diagnostics::{Code, Diagnostic, Span};

/// Nesting deeper than this is rejected rather than risk the stack.
const MAX_DEPTH: usize = 64;

/// Values that aliases (`*name`) may copy in one document, in all: a handful of nested
/// aliases could otherwise expand a small file into billions of values (a "billion laughs").
pub const MAX_ALIAS_NODES: usize = 100_000;

/// The syntax of a spec file, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// `.yaml` / `.yml`.
    Yaml,
    /// `.toml`.
    Toml,
}

impl Syntax {
    /// The syntax for a path, by its extension.
    pub fn from_path(path: &std::path::Path) -> Option<Syntax> {
        match path.extension()?.to_str()? {
            "yaml" | "yml" => Some(Syntax::Yaml),
            "toml" => Some(Syntax::Toml),
            _ => None,
        }
    }
}

/// Where a value sits in the text.
#[derive(Debug, Clone, Default)]
struct Entry {
    key: Option<Range<usize>>,
    value: Range<usize>,
    /// Where the whole value ends (past a container's last child or closing bracket).
    end: usize,
}

/// Maps JSON pointers to byte ranges, and byte offsets to line and column.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    entries: HashMap<String, Entry>,
    line_starts: Vec<usize>,
    text: String,
}

impl SourceMap {
    fn new(text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceMap { entries: HashMap::new(), line_starts, text: text.to_string() }
    }

    /// The full text the map was built from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The span of a byte range.
    pub fn span(&self, range: Range<usize>) -> Span {
        // Offsets computed inside values may fall within a character: widen to whole ones.
        let mut start = range.start.min(self.text.len());
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = range.end.clamp(start, self.text.len());
        while !self.text.is_char_boundary(end) {
            end += 1;
        }
        let line = self.line_starts.partition_point(|&s| s <= start).max(1);
        let line_start = self.line_starts[line - 1];
        let column = self.text.get(line_start..start).map_or(1, |s| s.chars().count() + 1);
        Span { start, end, line, column }
    }

    /// The nearest ancestor of `pointer` (itself included) that the map knows.
    fn nearest<'a>(&'a self, pointer: &str) -> Option<(&'a str, &'a Entry)> {
        let mut p = pointer;
        loop {
            if let Some((k, e)) = self.entries.get_key_value(p) {
                return Some((k.as_str(), e));
            }
            if p.is_empty() {
                return None;
            }
            p = &p[..p.rfind('/').unwrap_or(0)];
        }
    }

    /// Where to point for a finding about the value at `pointer`: the value itself.
    pub fn value_span(&self, pointer: &str) -> Span {
        match self.nearest(pointer) {
            Some((_, e)) => self.span(e.value.clone()),
            None => self.span(0..0),
        }
    }

    /// Where to point for a finding about the member at `pointer`: its key when it has one.
    pub fn key_span(&self, pointer: &str) -> Span {
        match self.nearest(pointer) {
            Some((_, e)) => self.span(e.key.clone().unwrap_or(e.value.clone())),
            None => self.span(0..0),
        }
    }

    /// The span of `needle` found inside the text of the string value at `pointer`, when the
    /// value is written verbatim on one line (plain or simply quoted); otherwise the value.
    pub fn span_within(&self, pointer: &str, offset: usize, len: usize) -> Span {
        let Some((found, e)) = self.nearest(pointer) else { return self.span(0..0) };
        if found != pointer || len == 0 {
            return self.span(e.value.clone());
        }
        let raw = &self.text[e.value.clone()];
        if raw.contains('\n') && !raw.starts_with(['"', '\'']) {
            // A block or multi-line plain scalar: its lines after the first are indented
            // alike, and that indentation is not part of the value. (Folding turns line
            // breaks into spaces, one byte each, so offsets map the same way.) Indentation is
            // ASCII spaces and tabs only: other white space, such as U+00A0, is content.
            let header = raw.starts_with(['|', '>']);
            let lines: Vec<&str> = raw.split('\n').collect();
            let body = if header { &lines[1..] } else { &lines[..] };
            let indent = body[1..]
                .iter()
                .chain(if header { body.first() } else { None })
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start_matches([' ', '\t']).len())
                .min()
                .unwrap_or(0);
            let mut at = e.value.start + if header { lines[0].len() + 1 } else { 0 };
            let mut remaining = offset;
            for (n, line) in body.iter().enumerate() {
                // A plain scalar's continuation lines lose all their leading white space.
                let lead = line.len() - line.trim_start_matches([' ', '\t']).len();
                let skip = match (header, n) {
                    (true, _) => indent.min(lead),
                    (false, 0) => 0,
                    (false, _) => lead,
                };
                let content = &line[skip..];
                if remaining <= content.len() {
                    let start = at + skip + remaining;
                    return self.span(start..(start + len).min(at + line.len()));
                }
                remaining -= content.len() + 1;
                at += line.len() + 1;
            }
            return self.span(e.value.clone());
        }
        let inner = raw
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .filter(|s| !s.contains('\\'))
            .or_else(|| raw.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')).filter(|s| !s.contains('\'')))
            .unwrap_or(raw);
        let lead = inner.as_ptr() as usize - raw.as_ptr() as usize;
        if offset + len <= inner.len() && !inner.contains('\n') && inner.is_char_boundary(offset) {
            let start = e.value.start + lead + offset;
            return self.span(start..start + len);
        }
        self.span(e.value.clone())
    }

    fn insert(&mut self, pointer: String, key: Option<Range<usize>>, value: Range<usize>) {
        let end = value.end;
        self.insert_full(pointer, key, value, end);
    }

    fn insert_full(&mut self, pointer: String, key: Option<Range<usize>>, value: Range<usize>, end: usize) {
        self.entries.insert(pointer, Entry { key, value, end });
    }

    /// The key and the whole value of the member at `pointer`, as byte ranges.
    pub fn member_range(&self, pointer: &str) -> Option<(Range<usize>, Range<usize>)> {
        let e = self.entries.get(pointer)?;
        Some((e.key.clone()?, e.value.start..e.end.max(e.value.end)))
    }

    /// Whether the value at `pointer` sits inside a flow collection (`{ ... }` or `[ ... ]`),
    /// where block syntax cannot be written.
    pub fn in_flow(&self, pointer: &str) -> bool {
        let mut p = pointer;
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if let Some(e) = self.entries.get(p)
                && matches!(self.text.as_bytes().get(e.value.start), Some(b'{' | b'['))
            {
                return true;
            }
        }
        false
    }

    fn end_of(&self, pointer: &str) -> usize {
        self.entries.get(pointer).map_or(0, |e| e.end)
    }
}

/// Appends one escaped reference token to a JSON pointer.
pub fn push_pointer(base: &str, token: &str) -> String {
    format!("{base}/{}", token.replace('~', "~0").replace('/', "~1"))
}

/// The unescaped reference tokens of a JSON pointer.
pub fn pointer_tokens(pointer: &str) -> Vec<String> {
    pointer.split('/').skip(1).map(|t| t.replace("~1", "/").replace("~0", "~")).collect()
}

/// A parsed document: the value, where everything is, and what went wrong on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The document as JSON; `None` when it could not be parsed at all.
    pub value: Option<Value>,
    /// Where every value is.
    pub map: SourceMap,
    /// Parse problems (syntax, duplicate keys, unsupported shapes), located.
    pub diagnostics: Vec<(Code, String, Span, Option<String>)>,
}

/// Parses `text` as `syntax`.
pub fn load(text: &str, syntax: Syntax) -> Loaded {
    match syntax {
        Syntax::Yaml => load_yaml(text),
        Syntax::Toml => load_toml(text),
    }
}

// ---------------------------------------------------------------- YAML

struct YamlLoader<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    char_to_byte: Option<Vec<usize>>,
    map: SourceMap,
    /// Anchored values with their number of values and their height.
    anchors: HashMap<usize, (Value, usize, usize)>,
    /// Values produced so far, aliases' copies included.
    nodes: usize,
    /// Values copied by aliases so far.
    alias_nodes: usize,
    /// The deepest level reached so far, aliases' contents included.
    deepest: usize,
    problems: Vec<(Code, String, Span, Option<String>)>,
}

struct Fatal;

impl<'a> YamlLoader<'a> {
    fn byte(&self, char_index: usize) -> usize {
        match &self.char_to_byte {
            Some(v) => v.get(char_index).copied().unwrap_or(self.map.text.len()),
            None => char_index.min(self.map.text.len()),
        }
    }

    fn range(&self, span: saphyr_parser::Span) -> Range<usize> {
        self.byte(span.start.index())..self.byte(span.end.index())
    }

    /// A scalar's range without the whitespace the parser may include after it.
    fn trimmed(&self, span: saphyr_parser::Span) -> Range<usize> {
        let r = self.range(span);
        let text = self.map.text.get(r.clone()).unwrap_or_default();
        r.start..r.start + text.trim_end().len()
    }

    /// Where a container that started at `start` ends: past its closing bracket when it is
    /// written in flow style, else where its last child ended.
    fn container_end(&self, start: usize, end_event: saphyr_parser::Span, last_child: usize) -> usize {
        if matches!(self.map.text.as_bytes().get(start), Some(b'{' | b'[')) {
            self.range(end_event).end.max(last_child)
        } else {
            last_child
        }
    }

    fn scan_error(&mut self, e: ScanError) -> Fatal {
        let at = self.byte(e.marker().index());
        let span = self.map.span(at..at);
        let line_start = self.map.line_starts[span.line - 1];
        let line = self.map.text[line_start..].lines().next().unwrap_or_default();
        let info = e.info();
        let help = if line.starts_with(|c: char| c.is_whitespace()) && line.trim_start_matches(' ').starts_with('\t') {
            Some("YAML does not allow tabs for indentation; indent with spaces".to_string())
        } else if info.contains("expected key")
            || info.contains("indentation")
            || info.contains("not allowed in this context")
        {
            Some("check the indentation: keys of one mapping start in the same column, and a value on its own lines is indented further than its key".to_string())
        } else if info.contains("simple key") {
            Some("a key needs `: ` (colon and space) before its value".to_string())
        } else {
            None
        };
        self.problems.push((Code::Syntax, format!("YAML syntax error: {info}"), span, help));
        Fatal
    }

    fn next(&mut self) -> Result<(Event<'a>, saphyr_parser::Span), Fatal> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(self.scan_error(e)),
            None => {
                let end = self.map.text.len();
                let span = self.map.span(end..end);
                self.problems.push((Code::Syntax, "unexpected end of YAML".into(), span, None));
                Err(Fatal)
            }
        }
    }

    fn document(&mut self) -> Result<Option<Value>, Fatal> {
        // StreamStart
        self.next()?;
        let (ev, span) = self.next()?;
        match ev {
            Event::StreamEnd => return Ok(None),
            Event::DocumentStart(_) => {}
            _ => {
                let r = self.range(span);
                let s = self.map.span(r);
                self.problems.push((Code::Syntax, "expected a YAML document".into(), s, None));
                return Err(Fatal);
            }
        }
        let (ev, span) = self.next()?;
        let value = self.node(ev, span, String::new(), None, 0)?;
        let (ev, _) = self.next()?; // DocumentEnd
        debug_assert!(matches!(ev, Event::DocumentEnd));
        let (ev, span) = self.next()?;
        if !matches!(ev, Event::StreamEnd) {
            let r = self.range(span);
            let s = self.map.span(r);
            self.problems.push((
                Code::UnsupportedDocument,
                "a spec file holds one YAML document, but this file has several".into(),
                s,
                Some("split each pipeline into its own file".into()),
            ));
        }
        Ok(Some(value))
    }

    fn node(
        &mut self,
        ev: Event<'a>,
        span: saphyr_parser::Span,
        pointer: String,
        key: Option<Range<usize>>,
        depth: usize,
    ) -> Result<Value, Fatal> {
        let start = if matches!(ev, Event::Scalar(..)) { self.trimmed(span) } else { self.range(span) };
        if depth > MAX_DEPTH {
            let s = self.map.span(start);
            self.problems.push((Code::UnsupportedDocument, format!("nesting deeper than {MAX_DEPTH} levels"), s, None));
            return Err(Fatal);
        }
        self.nodes += 1;
        let nodes_before = self.nodes;
        let deepest_before = std::mem::replace(&mut self.deepest, depth);
        let mut end = start.end;
        let (value, anchor, range) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let is_str_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let v = if style == ScalarStyle::Plain && !is_str_tag {
                    resolve_plain(&text)
                } else {
                    Value::String(text.into_owned())
                };
                (v, anchor, start)
            }
            Event::Alias(id) => {
                let v = match self.anchors.get(&id) {
                    Some((_, nodes, _)) if self.alias_nodes + nodes > MAX_ALIAS_NODES => {
                        let s = self.map.span(start.clone());
                        self.problems.push((
                            Code::UnsupportedDocument,
                            format!("aliases expand to more than {MAX_ALIAS_NODES} values"),
                            s,
                            Some("nested aliases multiply; write the repeated part out or use fewer levels".into()),
                        ));
                        return Err(Fatal);
                    }
                    Some((_, _, height)) if depth + height > MAX_DEPTH => {
                        let s = self.map.span(start.clone());
                        self.problems.push((
                            Code::UnsupportedDocument,
                            format!("this alias nests values deeper than {MAX_DEPTH} levels"),
                            s,
                            None,
                        ));
                        return Err(Fatal);
                    }
                    Some((v, nodes, height)) => {
                        self.alias_nodes += nodes;
                        self.nodes += nodes - 1;
                        self.deepest = self.deepest.max(depth + height);
                        v.clone()
                    }
                    None => {
                        let s = self.map.span(start.clone());
                        self.problems.push((Code::Syntax, "alias to an unknown anchor".into(), s, None));
                        Value::Null
                    }
                };
                (v, 0, start)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        end = self.container_end(start.start, span, end);
                        break;
                    }
                    let child = push_pointer(&pointer, &items.len().to_string());
                    items.push(self.node(ev, span, child.clone(), None, depth + 1)?);
                    end = end.max(self.map.end_of(&child));
                }
                (Value::Array(items), anchor, start.start..start.start + 1)
            }
            Event::MappingStart(anchor, _) => {
                let mut obj = Map::new();
                // Keys that came from a `<<` merge; a key given here overrides them.
                let mut merged_keys: Vec<String> = Vec::new();
                loop {
                    let (ev, kspan) = self.next()?;
                    let krange = self.trimmed(kspan);
                    let key_text = match ev {
                        Event::MappingEnd => {
                            end = self.container_end(start.start, kspan, end);
                            break;
                        }
                        Event::Scalar(text, _, _, _) => text.into_owned(),
                        other => {
                            let s = self.map.span(krange.clone());
                            self.problems.push((
                                Code::UnsupportedDocument,
                                "mapping keys must be plain names, not lists or mappings".into(),
                                s,
                                None,
                            ));
                            // Consume the complex key and its value to stay in step.
                            self.node(other, kspan, String::from("/?"), None, depth + 1)?;
                            let (ev, vspan) = self.next()?;
                            self.node(ev, vspan, String::from("/?"), None, depth + 1)?;
                            continue;
                        }
                    };
                    let child = push_pointer(&pointer, &key_text);
                    let (ev, vspan) = self.next()?;
                    if key_text == "<<" {
                        // A merge key: entries of the merged mapping(s) not given here.
                        let merged = self.node(ev, vspan, String::from("/?"), None, depth + 1)?;
                        let sources = match merged {
                            Value::Array(items) => items,
                            other => vec![other],
                        };
                        for source in sources.into_iter().rev() {
                            if let Value::Object(entries) = source {
                                for (k, v) in entries {
                                    let at = push_pointer(&pointer, &k);
                                    if !obj.contains_key(&k) {
                                        self.map.insert(at, Some(krange.clone()), krange.clone());
                                        merged_keys.push(k.clone());
                                        obj.insert(k, v);
                                    }
                                }
                            }
                        }
                        continue;
                    }
                    if let Some(i) = merged_keys.iter().position(|k| *k == key_text) {
                        merged_keys.remove(i);
                        obj.remove(&key_text);
                    }
                    if obj.contains_key(&key_text) {
                        let first = self.map.key_span(&child);
                        let s = self.map.span(krange.clone());
                        self.problems.push((
                            Code::DuplicateKey,
                            format!("key `{key_text}` appears twice in the same mapping"),
                            s,
                            Some(format!("the first `{key_text}` is on line {}; remove one of them", first.line)),
                        ));
                        self.node(ev, vspan, String::from("/?"), None, depth + 1)?;
                        continue;
                    }
                    let v = self.node(ev, vspan, child.clone(), Some(krange), depth + 1)?;
                    end = end.max(self.map.end_of(&child));
                    obj.insert(key_text, v);
                }
                (Value::Object(obj), anchor, start.start..start.start + 1)
            }
            _ => {
                let s = self.map.span(start);
                self.problems.push((Code::Syntax, "unexpected YAML event".into(), s, None));
                return Err(Fatal);
            }
        };
        let height = self.deepest - depth;
        self.deepest = self.deepest.max(deepest_before);
        if anchor != 0 {
            // Counting the node itself: an alias of a scalar still copies one value.
            let nodes = self.nodes - nodes_before + 1;
            self.anchors.insert(anchor, (value.clone(), nodes, height));
        }
        self.map.insert_full(pointer, key, range, end);
        Ok(value)
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Number(i.into());
        }
        if let Ok(u) = text.parse::<u64>() {
            return Value::Number(u.into());
        }
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Number(i.into());
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Number(i.into());
    }
    let looks_float = digits.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().any(|b| b.is_ascii_digit());
    if looks_float
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text.to_string())
}

fn load_yaml(text: &str) -> Loaded {
    let char_to_byte = (!text.is_ascii()).then(|| {
        let mut v: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        v.push(text.len());
        v
    });
    let mut loader = YamlLoader {
        parser: Parser::new_from_str(text),
        char_to_byte,
        map: SourceMap::new(text),
        anchors: HashMap::new(),
        nodes: 0,
        alias_nodes: 0,
        deepest: 0,
        problems: Vec::new(),
    };
    let value = match loader.document() {
        Ok(Some(v)) => Some(v),
        Ok(None) => {
            let s = loader.map.span(0..0);
            loader.problems.push((Code::UnsupportedDocument, "the file is empty".into(), s, None));
            None
        }
        Err(Fatal) => None,
    };
    Loaded { value, map: loader.map, diagnostics: loader.problems }
}

// ---------------------------------------------------------------- TOML

fn load_toml(text: &str) -> Loaded {
    let mut map = SourceMap::new(text);
    let doc = match toml_edit::Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let range = e.span().unwrap_or(0..0);
            let span = map.span(range);
            let message = e.message().trim().to_string();
            return Loaded {
                value: None,
                map,
                diagnostics: vec![(Code::Syntax, format!("TOML syntax error: {message}"), span, None)],
            };
        }
    };
    let root = doc.as_table();
    if root.is_empty() {
        let span = map.span(0..0);
        return Loaded {
            value: None,
            map,
            diagnostics: vec![(Code::UnsupportedDocument, "the file is empty".into(), span, None)],
        };
    }
    let mut problems = Vec::new();
    let value = toml_table(root, "", &mut map, &mut problems);
    map.insert(String::new(), None, 0..0);
    Loaded { value: Some(value), map, diagnostics: problems }
}

type Problems = Vec<(Code, String, Span, Option<String>)>;

fn toml_table(table: &toml_edit::Table, pointer: &str, map: &mut SourceMap, problems: &mut Problems) -> Value {
    let mut obj = Map::new();
    for (k, item) in table.iter() {
        let child = push_pointer(pointer, k);
        let key = table.key(k).and_then(|k| k.span());
        obj.insert(k.to_string(), toml_item(item, &child, key, map, problems));
    }
    Value::Object(obj)
}

fn toml_item(
    item: &toml_edit::Item,
    pointer: &str,
    key: Option<Range<usize>>,
    map: &mut SourceMap,
    problems: &mut Problems,
) -> Value {
    let value = match item {
        toml_edit::Item::None => Value::Null,
        toml_edit::Item::Value(v) => return toml_value(v, pointer, key, map, problems),
        toml_edit::Item::Table(t) => toml_table(t, pointer, map, problems),
        toml_edit::Item::ArrayOfTables(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, t)| {
                    let child = push_pointer(pointer, &i.to_string());
                    let v = toml_table(t, &child, map, problems);
                    let span = t.span().unwrap_or(0..0);
                    map.insert(child, None, span);
                    v
                })
                .collect(),
        ),
    };
    let span = item.span().or_else(|| key.clone()).unwrap_or(0..0);
    map.insert(pointer.to_string(), key, span);
    value
}

fn toml_value(
    v: &toml_edit::Value,
    pointer: &str,
    key: Option<Range<usize>>,
    map: &mut SourceMap,
    problems: &mut Problems,
) -> Value {
    use toml_edit::Value as T;
    let out = match v {
        T::String(s) => Value::String(s.value().clone()),
        T::Integer(i) => Value::Number((*i.value()).into()),
        T::Float(f) => match Number::from_f64(*f.value()) {
            Some(n) => Value::Number(n),
            None => {
                // `nan` and `inf` have no JSON form; never read them as "not set".
                let span = map.span(v.span().or_else(|| key.clone()).unwrap_or(0..0));
                let what = if f.value().is_nan() { "not a number (`nan`)" } else { "infinite" };
                problems.push((
                    Code::InvalidValue,
                    format!("the value is {what}; a spec needs a finite number"),
                    span,
                    None,
                ));
                Value::Null
            }
        },
        T::Boolean(b) => Value::Bool(*b.value()),
        T::Datetime(d) => Value::String(d.value().to_string()),
        T::Array(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, v)| toml_value(v, &push_pointer(pointer, &i.to_string()), None, map, problems))
                .collect(),
        ),
        T::InlineTable(t) => {
            let mut obj = Map::new();
            for (k, v) in t.iter() {
                let child = push_pointer(pointer, k);
                let kspan = t.key(k).and_then(|k| k.span());
                obj.insert(k.to_string(), toml_value(v, &child, kspan, map, problems));
            }
            Value::Object(obj)
        }
    };
    let span = v.span().or_else(|| key.clone()).unwrap_or(0..0);
    map.insert(pointer.to_string(), key, span);
    out
}

/// Converts parse problems into located diagnostics for `file`.
pub fn diagnostics_for(loaded: &Loaded, file: &std::path::Path) -> Vec<Diagnostic> {
    loaded
        .diagnostics
        .iter()
        .map(|(code, msg, span, help)| {
            let mut d = Diagnostic::new(*code, msg.clone()).at(file, *span);
            d.help = help.clone();
            d
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_values_and_locations() {
        let text = "name: x\nsources:\n  orders: { connector: file, n: 3, f: 1.5, b: true, z: ~ }\n";
        let l = load(text, Syntax::Yaml);
        assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
        let v = l.value.unwrap();
        assert_eq!(v["sources"]["orders"]["n"], 3);
        assert_eq!(v["sources"]["orders"]["f"], 1.5);
        assert_eq!(v["sources"]["orders"]["b"], true);
        assert!(v["sources"]["orders"]["z"].is_null());
        let s = l.map.key_span("/sources/orders/connector");
        assert_eq!((s.line, s.column), (3, 13));
        let s = l.map.value_span("/sources/orders/connector");
        assert_eq!((s.line, s.column), (3, 24));
        assert_eq!(&text[s.start..s.end], "file");
    }

    #[test]
    fn yaml_duplicate_keys_are_reported() {
        let l = load("a: 1\nb: 2\na: 3\n", Syntax::Yaml);
        assert_eq!(l.diagnostics.len(), 1);
        assert_eq!(l.diagnostics[0].0, Code::DuplicateKey);
        assert_eq!(l.diagnostics[0].2.line, 3);
        assert_eq!(l.value.unwrap()["a"], 1);
    }

    #[test]
    fn yaml_syntax_error_is_located() {
        let l = load("a: 1\nb: [1, 2\nc: 3\n", Syntax::Yaml);
        assert!(l.value.is_none());
        assert_eq!(l.diagnostics[0].0, Code::Syntax);
    }

    #[test]
    fn quoted_numbers_stay_strings() {
        let l = load("a: '1'\nb: \"true\"\nc: 0x10\n", Syntax::Yaml);
        let v = l.value.unwrap();
        assert_eq!(v["a"], "1");
        assert_eq!(v["b"], "true");
        assert_eq!(v["c"], 16);
    }

    #[test]
    fn non_ascii_columns_count_characters() {
        let text = "name: \"é\"\nx: 1\nsources: {ü: 1, k: 2}\n";
        let l = load(text, Syntax::Yaml);
        let s = l.map.key_span("/sources/k");
        assert_eq!((s.line, s.column), (3, 17));
        assert_eq!(&text[s.start..s.end], "k");
    }

    #[test]
    fn member_ranges_cover_whole_values() {
        let text = "a:\n  b:\n    - 1\n    - { x: 2 }\n  c: [1, 2]\nd: 3\n";
        let l = load(text, Syntax::Yaml);
        let (_, b) = l.map.member_range("/a/b").unwrap();
        assert_eq!(&text[b], "- 1\n    - { x: 2 }");
        let (_, c) = l.map.member_range("/a/c").unwrap();
        assert_eq!(&text[c], "[1, 2]");
    }

    #[test]
    fn spans_within_flow_mappings_and_block_scalars() {
        let text = "t: { where: \"amout > 1\" }\nq: |\n  SELECT a\n  FROM b WHERE amont > 1\nx: 1\n";
        let l = load(text, Syntax::Yaml);
        let s = l.map.span_within("/t/where", 0, 5);
        assert_eq!(&text[s.start..s.end], "amout");
        let q = l.value.unwrap()["q"].as_str().unwrap().to_string();
        let off = q.find("amont").unwrap();
        let s = l.map.span_within("/q", off, 5);
        assert_eq!(&text[s.start..s.end], "amont");
        assert_eq!((s.line, s.column), (4, 16));
    }

    #[test]
    fn yaml_merge_keys() {
        let text = "base: &b { type: filter, where: \"x > 1\" }\nt:\n  <<: *b\n  where: \"y > 2\"\n";
        let l = load(text, Syntax::Yaml);
        let v = l.value.unwrap();
        assert_eq!(v["t"]["type"], "filter");
        assert_eq!(v["t"]["where"], "y > 2");
        assert!(v["t"].get("<<").is_none());
    }

    #[test]
    fn toml_values_and_locations() {
        let text = "name = \"x\"\n[sources.orders]\nconnector = \"file\"\nschema = { a = \"bigint\" }\n[[tests]]\nname = \"t\"\n";
        let l = load(text, Syntax::Toml);
        assert!(l.diagnostics.is_empty());
        let v = l.value.unwrap();
        assert_eq!(v["sources"]["orders"]["schema"]["a"], "bigint");
        assert_eq!(v["tests"][0]["name"], "t");
        let s = l.map.key_span("/sources/orders/connector");
        assert_eq!((s.line, s.column), (3, 1));
        let s = l.map.value_span("/sources/orders/schema/a");
        assert_eq!((s.line, s.column), (4, 16));
    }

    #[test]
    fn toml_syntax_error_is_located() {
        let l = load("a = 1\nb = [1,\n", Syntax::Toml);
        assert!(l.value.is_none());
        assert_eq!(l.diagnostics[0].0, Code::Syntax);
        assert!(l.diagnostics[0].2.line >= 2);
    }

    #[test]
    fn span_within_finds_offsets_in_quoted_values() {
        let text = "where: \"amount > 100\"\n";
        let l = load(text, Syntax::Yaml);
        let s = l.map.span_within("/where", 0, 6);
        assert_eq!(&text[s.start..s.end], "amount");
        assert_eq!(s.column, 9);
    }
}
