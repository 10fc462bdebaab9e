//! Structure: the document checked against the JSON Schema generated from [`super::Pipeline`].
//!
//! The jsonschema crate reports every violation at once, each with the JSON pointer of the
//! offending value; here each is translated into a located diagnostic with a stable code and
//! a message in the spec's own words. Where the schema has alternatives (`oneOf`/`anyOf`:
//! connectors by `connector`, transforms and windows by `type`), the alternative the user
//! meant is chosen by its discriminator or its JSON type and only its errors are reported,
//! so nobody ever reads "is not valid under any of the given schemas".

use std::path::Path;
use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use super::loader::{SourceMap, Syntax, pointer_tokens, push_pointer};
use super::values::{BYTE_SIZE_PATTERN, DURATION_PATTERN};
use crate::connectors::{SinkConfig, SourceConfig};
use crate::diagnostics::{Code, Diagnostic, closest, did_you_mean};
use crate::operators::TransformConfig;

/// Keys that select one alternative of a `oneOf`.
const DISCRIMINATORS: [&str; 3] = ["connector", "type", "strategy"];

fn validator() -> &'static (Value, Validator) {
    static V: OnceLock<(Value, Validator)> = OnceLock::new();
    V.get_or_init(|| {
        let schema = super::json_schema();
        let validator = jsonschema::options()
            .should_validate_formats(false)
            .build(&schema)
            .expect("the generated schema is a valid JSON Schema");
        (schema, validator)
    })
}

/// Checks `value` against the spec's JSON Schema.
pub fn check(value: &Value, syntax: Syntax, file: &Path, map: &SourceMap) -> Vec<Diagnostic> {
    let (schema, validator) = validator();
    let mut t = Translator { schema, syntax, file, map, out: Vec::new() };
    for error in validator.iter_errors(value) {
        t.translate(&error);
    }
    let mut seen = std::collections::HashSet::new();
    t.out.retain(|d| seen.insert((d.code, d.span.map(|s| s.start), d.message.clone())));
    fold_misspelt_required(t.out)
}

/// A required field reported missing next to an unknown key that is its misspelling is one
/// mistake: keep only the unknown key, whose help already says `did you mean`.
fn fold_misspelt_required(diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let misspelt: Vec<(String, String)> = diags
        .iter()
        .filter(|d| d.code == Code::UnknownKey)
        .filter_map(|d| {
            let ptr = d.pointer.as_deref()?;
            let parent = &ptr[..ptr.rfind('/')?];
            let wanted = d.help.as_deref()?.strip_prefix("did you mean `")?.strip_suffix("`?")?;
            Some((parent.to_string(), wanted.to_string()))
        })
        .collect();
    diags
        .into_iter()
        .filter(|d| {
            d.code != Code::MissingField
                || !misspelt.iter().any(|(parent, wanted)| {
                    d.pointer.as_deref() == Some(parent.as_str()) && d.message.ends_with(&format!("`{wanted}`"))
                })
        })
        .collect()
}

struct Translator<'a> {
    schema: &'a Value,
    syntax: Syntax,
    file: &'a Path,
    map: &'a SourceMap,
    out: Vec<Diagnostic>,
}

/// How a place in the spec is named in messages: "source `orders`", "the pipeline".
fn context(pointer: &str) -> String {
    let t = pointer_tokens(pointer);
    match (t.first().map(String::as_str), t.get(1)) {
        (Some("sources"), Some(n)) => format!("source `{n}`"),
        (Some("transforms"), Some(n)) => format!("transform `{n}`"),
        (Some("sinks"), Some(n)) => format!("sink `{n}`"),
        (Some("tests"), Some(n)) => format!("test #{}", n.parse::<usize>().map_or(0, |i| i + 1)),
        (Some(section @ ("checkpoints" | "restart" | "state")), _) => format!("`{section}`"),
        _ => "the pipeline".into(),
    }
}

/// How a nested place is named: "`window` in transform `w`"; top-level ones as [`context`].
fn place(pointer: &str) -> String {
    let t = pointer_tokens(pointer);
    if t.len() > 2 { format!("`{}` in {}", t[t.len() - 1], context(pointer)) } else { context(pointer) }
}

/// Whether `e` says the value at `ptr` has the wrong JSON type for its alternative: a type
/// error, a constant or enumeration of another type, or nested alternatives none of which fit.
fn mismatches_type(e: &ValidationError, ptr: &str, instance: &Value) -> bool {
    if e.instance_path().as_str() != ptr {
        return false;
    }
    let other_type = |v: &Value| std::mem::discriminant(v) != std::mem::discriminant(instance);
    match e.kind() {
        ValidationErrorKind::Type { .. } => true,
        ValidationErrorKind::Constant { expected_value } => other_type(expected_value),
        ValidationErrorKind::Enum { options } => options.as_array().is_some_and(|o| o.iter().all(other_type)),
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            context.iter().all(|b| b.iter().any(|e| mismatches_type(e, ptr, instance)))
        }
        _ => false,
    }
}

/// The JSON types the alternatives behind `e` would accept at `ptr`, added to `out`.
fn expected_types(e: &ValidationError, ptr: &str, out: &mut Vec<String>) {
    if e.instance_path().as_str() != ptr {
        return;
    }
    let mut add = |t: String| {
        if !out.contains(&t) {
            out.push(t);
        }
    };
    match e.kind() {
        ValidationErrorKind::Type { kind } => match kind {
            jsonschema::error::TypeKind::Single(t) => add(type_name(&t.to_string()).to_string()),
            jsonschema::error::TypeKind::Multiple(ts) => {
                ts.iter().for_each(|t| add(type_name(&t.to_string()).to_string()))
            }
        },
        ValidationErrorKind::Constant { expected_value } => add(json_type(expected_value).to_string()),
        ValidationErrorKind::Enum { options } => {
            options.as_array().into_iter().flatten().for_each(|o| add(json_type(o).to_string()))
        }
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            context.iter().flatten().for_each(|e| expected_types(e, ptr, out))
        }
        _ => {}
    }
}

fn duration_help(instance: &Value) -> String {
    match instance.as_u64() {
        Some(n) => format!("write a duration with its unit, such as `{n}s`, `{n}m` or `{n}ms`"),
        None => "write a duration with its unit, such as `10s`, `5m` or `1h`".into(),
    }
}

/// The field a pointer ends in, for messages.
fn field(pointer: &str) -> String {
    pointer_tokens(pointer).last().cloned().unwrap_or_else(|| "the document".into())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn type_name(t: &str) -> &'static str {
    match t {
        "object" => "a mapping",
        "array" => "a list",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean (true or false)",
        "null" => "null",
        _ => "a value",
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Translator<'_> {
    fn push(&mut self, d: Diagnostic, pointer: &str) {
        let mut d = d;
        d.file = self.file.to_path_buf();
        d.pointer = Some(pointer.to_string());
        self.out.push(d);
    }

    fn at_value(&mut self, code: Code, pointer: &str, message: String, help: Option<String>) {
        let span = self.map.value_span(pointer);
        let mut d = Diagnostic::new(code, message).at(self.file, span);
        d.help = help;
        self.push(d, pointer);
    }

    fn at_key(&mut self, code: Code, pointer: &str, message: String, help: Option<String>) {
        let span = self.map.key_span(pointer);
        let mut d = Diagnostic::new(code, message).at(self.file, span);
        d.help = help;
        self.push(d, pointer);
    }

    /// How to write `key` with a value in this file's syntax.
    fn assign(&self, key: &str) -> String {
        match self.syntax {
            Syntax::Yaml => format!("{key}: "),
            Syntax::Toml => format!("{key} = "),
        }
    }

    /// The names a discriminator may take at `pointer`, by where it is in the spec.
    fn kinds_at(&self, pointer: &str, key: &str) -> Vec<String> {
        let t = pointer_tokens(pointer);
        let list: &[&str] = match (t.first().map(String::as_str), key, t.len()) {
            (Some("sources"), "connector", 2) => SourceConfig::NAMES,
            (Some("sinks"), "connector", 2) => SinkConfig::NAMES,
            (Some("transforms"), "type", 2) => TransformConfig::NAMES,
            (Some("transforms"), "type", _) => &["tumbling", "hopping", "session"],
            (Some("restart"), "strategy", _) => &["none", "fixed_delay", "failure_rate", "exponential_backoff"],
            _ => &[],
        };
        list.iter().map(|s| s.to_string()).collect()
    }

    fn translate(&mut self, e: &ValidationError) {
        let ptr = e.instance_path().as_str().to_string();
        let instance = e.instance();
        match e.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let known = self.allowed_keys(e.schema_path().as_str());
                for key in unexpected {
                    let help = did_you_mean(key, known.iter().map(String::as_str))
                        .or_else(|| (!known.is_empty()).then(|| format!("allowed keys here: {}", known.join(", "))));
                    let at = push_pointer(&ptr, key);
                    self.at_key(Code::UnknownKey, &at, format!("unknown key `{key}` in {}", context(&at)), help);
                }
            }
            ValidationErrorKind::Required { property } => {
                let prop = short(property);
                let kinds = self.kinds_at(&ptr, &prop);
                let help = if kinds.is_empty() {
                    None
                } else {
                    Some(format!("add `{}` with one of: {}", self.assign(&prop), kinds.join(", ")))
                };
                let what = if ptr.is_empty() { "the pipeline".to_string() } else { place(&ptr) };
                let d_ptr = ptr.clone();
                self.at_key(Code::MissingField, &d_ptr, format!("{what} is missing required field `{prop}`"), help);
            }
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    jsonschema::error::TypeKind::Single(t) => type_name(&t.to_string()).to_string(),
                    jsonschema::error::TypeKind::Multiple(ts) => {
                        let names: Vec<&str> =
                            ts.iter().map(|t| type_name(&t.to_string())).filter(|n| *n != "null").collect();
                        names.join(" or ")
                    }
                };
                let help = type_help(&ptr, instance)
                    .or_else(|| e.schema_path().as_str().contains("/Duration").then(|| duration_help(instance)));
                self.at_value(
                    Code::WrongType,
                    &ptr,
                    format!("`{}` in {} must be {expected}, not {}", field(&ptr), context(&ptr), json_type(instance)),
                    help,
                );
            }
            ValidationErrorKind::Enum { options } => {
                let opts: Vec<String> = options.as_array().map(|a| a.iter().map(short).collect()).unwrap_or_default();
                let value = short(instance);
                let help = match closest(&value, opts.iter().map(String::as_str)) {
                    Some(c) => format!("did you mean `{c}`? expected one of: {}", opts.join(", ")),
                    None => format!("expected one of: {}", opts.join(", ")),
                };
                self.at_value(
                    Code::InvalidValue,
                    &ptr,
                    format!("`{value}` is not a valid `{}` in {}", field(&ptr), context(&ptr)),
                    Some(help),
                );
            }
            ValidationErrorKind::Constant { expected_value } => {
                self.at_value(
                    Code::InvalidValue,
                    &ptr,
                    format!("`{}` must be `{}`", field(&ptr), short(expected_value)),
                    None,
                );
            }
            ValidationErrorKind::Pattern { pattern } => {
                let value = short(instance);
                if pattern == DURATION_PATTERN {
                    self.at_value(
                        Code::InvalidDuration,
                        &ptr,
                        format!("`{value}` is not a duration (`{}` in {})", field(&ptr), context(&ptr)),
                        Some(
                            "write a whole number and a unit: `500ms`, `10s`, `5m`, `1h`, `1d`, or a sum like `1h30m`"
                                .into(),
                        ),
                    );
                } else if pattern == BYTE_SIZE_PATTERN {
                    self.at_value(
                        Code::InvalidValue,
                        &ptr,
                        format!("`{value}` is not a size"),
                        Some("write a whole number and a unit: `512KB`, `128MB`, `1GB`, `64MiB`".into()),
                    );
                } else if field(&ptr) == "storage" {
                    self.at_value(
                        Code::InvalidValue,
                        &ptr,
                        format!("`{value}` is not a checkpoint storage URL"),
                        Some("use `file://path/to/folder` or `s3://bucket/prefix`".into()),
                    );
                } else {
                    self.at_value(Code::InvalidValue, &ptr, format!("`{value}` does not match `{pattern}`"), None);
                }
            }
            ValidationErrorKind::Minimum { limit } | ValidationErrorKind::ExclusiveMinimum { limit } => {
                self.at_value(
                    Code::OutOfRange,
                    &ptr,
                    format!("`{}` in {} is {}, below the minimum {limit}", field(&ptr), context(&ptr), short(instance)),
                    None,
                );
            }
            ValidationErrorKind::Maximum { limit } | ValidationErrorKind::ExclusiveMaximum { limit } => {
                self.at_value(
                    Code::OutOfRange,
                    &ptr,
                    format!("`{}` in {} is {}, above the maximum {limit}", field(&ptr), context(&ptr), short(instance)),
                    None,
                );
            }
            ValidationErrorKind::MinItems { limit } => self.at_value(
                Code::InvalidStructure,
                &ptr,
                format!("`{}` in {} needs at least {limit} item{}", field(&ptr), context(&ptr), plural(*limit)),
                None,
            ),
            ValidationErrorKind::MinProperties { limit } => self.at_value(
                Code::InvalidStructure,
                &ptr,
                format!(
                    "`{}` in {} needs at least {limit} entr{}",
                    field(&ptr),
                    context(&ptr),
                    if *limit == 1 { "y" } else { "ies" }
                ),
                None,
            ),
            ValidationErrorKind::MinLength { limit } | ValidationErrorKind::MaxLength { limit } => {
                let rel =
                    if matches!(e.kind(), ValidationErrorKind::MinLength { .. }) { "at least" } else { "at most" };
                self.at_value(
                    Code::InvalidValue,
                    &ptr,
                    format!(
                        "`{}` in {} must be {rel} {limit} character{} long",
                        field(&ptr),
                        context(&ptr),
                        plural(*limit)
                    ),
                    None,
                );
            }
            ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
                self.alternatives(&ptr, instance, context);
            }
            other => {
                self.at_value(
                    Code::InvalidStructure,
                    &ptr,
                    format!("invalid value in {}: {}", context(&ptr), describe_kind(other)),
                    None,
                );
            }
        }
    }

    /// Picks the alternative the user meant and reports only its errors.
    fn alternatives(&mut self, ptr: &str, instance: &Value, branches: &[Vec<ValidationError<'static>>]) {
        let obj = instance.as_object();
        // Alternatives selected by a discriminator key: `connector`, `type`, `strategy`.
        for key in DISCRIMINATORS {
            let at = push_pointer(ptr, key);
            let consts: Vec<String> = branches
                .iter()
                .flatten()
                .filter(|e| e.instance_path().as_str() == at)
                .filter_map(|e| match e.kind() {
                    ValidationErrorKind::Constant { expected_value } => Some(short(expected_value)),
                    _ => None,
                })
                .collect();
            let required_everywhere = !branches.is_empty()
                && branches.iter().all(|b| {
                    b.iter().any(|e| {
                        e.instance_path().as_str() == ptr
                            && matches!(e.kind(), ValidationErrorKind::Required { property } if property == key)
                    })
                });
            if required_everywhere && obj.is_some_and(|o| !o.contains_key(key)) {
                // A misspelt discriminator is one mistake, not a missing one.
                if let Some(typo) = obj.and_then(|o| o.keys().find(|k| closest(k, [key]).is_some())) {
                    let at = push_pointer(ptr, typo);
                    let message = format!("unknown key `{typo}` in {}", place(ptr));
                    self.at_key(Code::UnknownKey, &at, message, Some(format!("did you mean `{key}`?")));
                    return;
                }
                let mut kinds = self.kinds_at(ptr, key);
                if kinds.is_empty() {
                    kinds = consts;
                }
                let add = self.assign(key);
                self.at_key(
                    Code::MissingField,
                    ptr,
                    format!("{} is missing required field `{key}`", place(ptr)),
                    Some(format!("add `{add}` with one of: {}", kinds.join(", "))),
                );
                return;
            }
            let Some(given) = obj.and_then(|o| o.get(key)) else { continue };
            if consts.is_empty() {
                continue;
            }
            let matching: Vec<&Vec<ValidationError>> = branches
                .iter()
                .filter(|b| {
                    !b.iter().any(|e| {
                        e.instance_path().as_str() == at
                            && matches!(
                                e.kind(),
                                ValidationErrorKind::Constant { .. } | ValidationErrorKind::Type { .. }
                            )
                    })
                })
                .collect();
            match matching.as_slice() {
                [one] => {
                    for e in one.iter() {
                        self.translate(e);
                    }
                }
                _ => {
                    let mut kinds = self.kinds_at(ptr, key);
                    if kinds.is_empty() {
                        kinds = consts;
                    }
                    let value = short(given);
                    let help = match closest(&value, kinds.iter().map(String::as_str)) {
                        Some(c) => format!("did you mean `{c}`? expected one of: {}", kinds.join(", ")),
                        None => format!("expected one of: {}", kinds.join(", ")),
                    };
                    let noun = if key == "connector" {
                        "connector"
                    } else if key == "strategy" {
                        "restart strategy"
                    } else {
                        "type"
                    };
                    self.at_value(
                        Code::UnknownKind,
                        &at,
                        format!("unknown {noun} `{value}` in {}", context(ptr)),
                        Some(help),
                    );
                }
            }
            return;
        }
        // An enumeration of documented constants: one `const` per alternative.
        let consts: Option<Vec<String>> = branches
            .iter()
            .map(|b| match b.as_slice() {
                [e] if e.instance_path().as_str() == ptr => match e.kind() {
                    ValidationErrorKind::Constant { expected_value } => Some(short(expected_value)),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        if let Some(opts) = consts.filter(|c| !c.is_empty()) {
            let value = short(instance);
            let help = match closest(&value, opts.iter().map(String::as_str)) {
                Some(c) => format!("did you mean `{c}`? expected one of: {}", opts.join(", ")),
                None => format!("expected one of: {}", opts.join(", ")),
            };
            let message = format!("`{value}` is not a valid `{}` in {}", field(ptr), context(ptr));
            self.at_value(Code::InvalidValue, ptr, message, Some(help));
            return;
        }
        // Otherwise by JSON type: drop alternatives whose type does not fit.
        let fitting: Vec<&Vec<ValidationError>> =
            branches.iter().filter(|b| !b.iter().any(|e| mismatches_type(e, ptr, instance))).collect();
        if fitting.is_empty() {
            let mut types: Vec<String> = Vec::new();
            for e in branches.iter().flatten() {
                expected_types(e, ptr, &mut types);
            }
            types.retain(|t| t != "null");
            self.at_value(
                Code::WrongType,
                ptr,
                format!(
                    "`{}` in {} must be {}, not {}",
                    field(ptr),
                    context(ptr),
                    types.join(" or "),
                    json_type(instance)
                ),
                type_help(ptr, instance).or_else(|| {
                    let duration = branches.iter().flatten().any(|e| e.schema_path().as_str().contains("/Duration"));
                    duration.then(|| duration_help(instance))
                }),
            );
            return;
        }
        let best = fitting.into_iter().min_by_key(|b| b.len()).expect("not empty");
        for e in best {
            self.translate(e);
        }
    }

    /// The property names of the schema object that holds the `additionalProperties`
    /// keyword at `schema_path`.
    fn allowed_keys(&self, schema_path: &str) -> Vec<String> {
        let parent = schema_path.strip_suffix("/additionalProperties").unwrap_or(schema_path);
        let mut node = self.schema.pointer(parent);
        // Follow a `$ref` if the keyword's schema is a reference.
        if let Some(r) = node.and_then(|n| n.get("$ref")).and_then(Value::as_str) {
            node = r.strip_prefix('#').and_then(|p| self.schema.pointer(p));
        }
        let mut keys: Vec<String> = node
            .and_then(|n| n.get("properties"))
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        keys.dedup();
        keys
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn type_help(ptr: &str, instance: &Value) -> Option<String> {
    let f = field(ptr);
    match (f.as_str(), instance) {
        ("key" | "inputs", Value::String(s)) => Some(format!("write a list: `[{s}]`")),
        (_, Value::Null) => Some(format!("give `{f}` a value, or remove the key")),
        _ => None,
    }
}

fn describe_kind(kind: &ValidationErrorKind) -> String {
    match kind {
        ValidationErrorKind::OneOfMultipleValid { .. } => "it fits more than one alternative".into(),
        ValidationErrorKind::UniqueItems => "items must be unique".into(),
        ValidationErrorKind::MaxItems { limit } => format!("at most {limit} items"),
        ValidationErrorKind::MaxProperties { limit } => format!("at most {limit} entries"),
        ValidationErrorKind::MultipleOf { .. } => "not a multiple of the allowed step".into(),
        ValidationErrorKind::FalseSchema => "no value is allowed here".into(),
        _ => "the value does not fit the spec".into(),
    }
}
