//! Small value types shared by every part of a spec: durations, column types, typed
//! references to values from outside (`${env:NAME}`, `${file:PATH}`) and event-time settings.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use indexmap::IndexMap;
use schemars::{JsonSchema, Schema as JsonSchemaObj, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};

/// The regular expression a duration matches, also used in the JSON Schema.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h|d))+$";

/// A length of time written like `500ms`, `10s`, `5m`, `1h`, `1d` or `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Parses the spec notation.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let mut total: u128 = 0;
        let mut rest = text;
        if rest.is_empty() {
            return Err("a duration cannot be empty".into());
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(format!("`{text}` is not a duration"));
            }
            let n: u128 = rest[..digits].parse().map_err(|_| format!("`{text}` is too large"))?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let millis = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "" => return Err(format!("`{text}` has a number without a unit")),
                u => return Err(format!("`{u}` is not a duration unit")),
            };
            rest = &rest[unit_len..];
            total = total.saturating_add(n.saturating_mul(millis));
        }
        let millis = i64::try_from(total).map_err(|_| format!("`{text}` is too large"))?;
        Ok(Duration(std::time::Duration::from_millis(millis as u64)))
    }

    /// Whole milliseconds.
    pub fn as_millis(&self) -> u64 {
        self.0.as_millis() as u64
    }

    /// Whole milliseconds as event-time arithmetic wants them (parsing caps at `i64::MAX`).
    pub fn as_millis_i64(&self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> JsonSchemaObj {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: a number and a unit (ms, s, m, h, d), such as `10s`, `5m` or `1h30m`.",
            "examples": ["10s", "1h"]
        })
    }
}

/// The regular expression a byte size matches, also used in the JSON Schema.
pub const BYTE_SIZE_PATTERN: &str = r"^[0-9]+(B|KB|MB|GB|KiB|MiB|GiB)$";

/// A size in bytes written like `512KB`, `128MB` or `1GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses the spec notation.
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = text[..digits].parse().map_err(|_| format!("`{text}` is not a size such as `128MB`"))?;
        let unit: u64 = match &text[digits..] {
            "B" => 1,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            u => return Err(format!("`{u}` is not a size unit (B, KB, MB, GB, KiB, MiB, GiB)")),
        };
        n.checked_mul(unit).map(ByteSize).ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ByteSize::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> JsonSchemaObj {
        json_schema!({
            "type": "string",
            "pattern": BYTE_SIZE_PATTERN,
            "description": "A size: a number and a unit (B, KB, MB, GB, KiB, MiB, GiB), such as `128MB`.",
            "examples": ["128MB"]
        })
    }
}

/// A column type, by its SQL name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// true or false.
    Boolean,
    /// 32-bit signed integer.
    Int,
    /// 64-bit signed integer.
    Bigint,
    /// 32-bit float.
    Float,
    /// 64-bit float.
    Double,
    /// UTF-8 text.
    String,
    /// Raw bytes.
    Bytes,
    /// A calendar date.
    Date,
    /// An instant with millisecond precision, in UTC.
    Timestamp,
}

impl ColumnType {
    /// The Arrow type of columns of this type.
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Int => DataType::Int32,
            ColumnType::Bigint => DataType::Int64,
            ColumnType::Float => DataType::Float32,
            ColumnType::Double => DataType::Float64,
            ColumnType::String => DataType::Utf8,
            ColumnType::Bytes => DataType::Binary,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => timestamp_type(),
        }
    }
}

/// The Arrow type of event-time and timestamp columns.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Whether a type can carry event time.
pub fn is_timestamp(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(_, _))
}

/// A column in a declared schema: a type name, or a mapping with the type and options.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ColumnDecl {
    /// Just the type: `amount: double`.
    Type(ColumnType),
    /// The type and whether it may be null: `amount: { type: double, nullable: false }`.
    Full(ColumnOptions),
}

/// A column's type and options.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnOptions {
    /// The column type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether the column may hold nulls (default true).
    #[serde(default = "yes")]
    pub nullable: bool,
}

fn yes() -> bool {
    true
}

/// Declared columns, in order.
pub type SchemaDecl = IndexMap<String, ColumnDecl>;

/// The Arrow schema of declared columns.
pub fn arrow_schema(decl: &SchemaDecl) -> Arc<Schema> {
    Arc::new(Schema::new(
        decl.iter()
            .map(|(name, c)| match c {
                ColumnDecl::Type(t) => Field::new(name, t.arrow(), true),
                ColumnDecl::Full(c) => Field::new(name, c.ty.arrow(), c.nullable),
            })
            .collect::<Vec<_>>(),
    ))
}

/// Event time of a source: which column holds it and how watermarks follow it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTime {
    /// The timestamp column holding each row's event time.
    pub column: String,
    /// How far behind the largest event time seen the watermark stays (default 0s).
    #[serde(default)]
    pub max_out_of_orderness: Option<Duration>,
    /// After this long without rows, a source split stops holding the watermark back.
    #[serde(default)]
    pub idle_timeout: Option<Duration>,
}

/// A string value that may instead be a reference to a value from outside the spec:
/// `${env:NAME}` for an environment variable, `${file:PATH}` for a file's contents (trimmed).
/// References are resolved only when a connector opens, and their values are never printed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(transparent)]
pub struct ConfigString(pub String);

impl ConfigString {
    /// The value with every reference replaced, read now from the environment or the file.
    /// Errors name the reference, never a value.
    pub fn resolve(&self) -> Result<String, String> {
        let refs = find_references(&self.0).map_err(|e| e.message)?;
        let mut out = String::new();
        let mut last = 0;
        for (offset, len, reference) in refs {
            out.push_str(&self.0[last..offset]);
            let value = match &reference {
                Reference::Env(name) => {
                    std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set"))?
                }
                Reference::File(path) => read_reference_file(path).map_err(|e| format!("`{reference}`: {e}"))?,
            };
            out.push_str(&value);
            last = offset + len;
        }
        out.push_str(&self.0[last..]);
        Ok(out)
    }

    /// A redactor for this string's references: messages show the string as written.
    pub fn redactor(&self) -> Redactor {
        let refs = find_references(&self.0).unwrap_or_default();
        Redactor::new(refs.iter().map(|(_, _, r)| r))
    }
}

/// Replaces the values of references in text (messages, locations) by the references
/// themselves, so that `/secret/dir/in.csv:3` shows as `${env:DIR}/in.csv:3`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// (value, reference as written), longest value first.
    pairs: Vec<(String, String)>,
}

impl Redactor {
    /// A redactor for `references`, with their values as they are now. References that do
    /// not resolve, and empty values, are left out.
    pub fn new<'a>(references: impl IntoIterator<Item = &'a Reference>) -> Self {
        let mut pairs = Vec::new();
        for r in references {
            let value = match r {
                Reference::Env(name) => std::env::var(name).ok(),
                Reference::File(path) => read_reference_file(path).ok().map(|v| v.trim().to_string()),
            };
            let Some(value) = value.filter(|v| !v.is_empty()) else { continue };
            // Paths built on a value may lose its trailing separators.
            let trimmed = value.trim_end_matches(['/', '\\']);
            if !trimmed.is_empty() && trimmed != value {
                pairs.push((trimmed.to_string(), r.to_string()));
            }
            pairs.push((value, r.to_string()));
        }
        pairs.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Redactor { pairs }
    }

    /// `text` with every known value replaced by its reference.
    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (value, reference) in &self.pairs {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), reference);
            }
        }
        out
    }
}

/// The most a `${file:PATH}` reference may read.
pub const MAX_REFERENCE_FILE_BYTES: u64 = 1 << 20;

/// The trimmed contents of the file a `${file:PATH}` reference names. Only a regular file of at
/// most [`MAX_REFERENCE_FILE_BYTES`] is read (never a fifo or device, which could block or never
/// end); errors never include the contents.
pub fn read_reference_file(path: &str) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    if !meta.is_file() {
        return Err(format!("`{path}` is not a regular file"));
    }
    if meta.len() > MAX_REFERENCE_FILE_BYTES {
        return Err(format!("`{path}` is larger than {} KiB", MAX_REFERENCE_FILE_BYTES >> 10));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    // Opened by path, so check again what was opened: the file may have changed in between.
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(format!("`{path}` is not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_REFERENCE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read `{path}`: {e}"))?;
    if bytes.len() as u64 > MAX_REFERENCE_FILE_BYTES {
        return Err(format!("`{path}` is larger than {} KiB", MAX_REFERENCE_FILE_BYTES >> 10));
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("`{path}` is not UTF-8 text"))?;
    Ok(text.trim().to_string())
}

/// One `${kind:name}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `${env:NAME}`.
    Env(String),
    /// `${file:PATH}`.
    File(String),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Env(n) => write!(f, "${{env:{n}}}"),
            Reference::File(p) => write!(f, "${{file:{p}}}"),
        }
    }
}

/// A problem in a `${...}` reference: the byte offset in the string, its length and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceError {
    /// Byte offset of the reference in the string.
    pub offset: usize,
    /// Byte length of the offending text.
    pub len: usize,
    /// What is wrong.
    pub message: String,
}

/// Finds every reference in `text`, with its byte offset and length.
pub fn find_references(text: &str) -> Result<Vec<(usize, usize, Reference)>, ReferenceError> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find("${") {
        let start = from + pos;
        let Some(close) = text[start..].find('}') else {
            return Err(ReferenceError {
                offset: start,
                len: text.len() - start,
                message: "`${` is not closed by `}`".into(),
            });
        };
        let inner = &text[start + 2..start + close];
        let len = close + 1;
        let reference = match inner.split_once(':') {
            Some(("env", name)) if is_env_name(name) => Reference::Env(name.to_string()),
            Some(("env", name)) => {
                return Err(ReferenceError {
                    offset: start,
                    len,
                    message: format!("`{name}` is not an environment variable name (letters, digits and `_`)"),
                });
            }
            Some(("file", path)) if !path.is_empty() => Reference::File(path.to_string()),
            Some((kind, _)) => {
                return Err(ReferenceError {
                    offset: start,
                    len,
                    message: format!("unknown reference kind `{kind}`: use `${{env:NAME}}` or `${{file:PATH}}`"),
                });
            }
            None => {
                return Err(ReferenceError {
                    offset: start,
                    len,
                    message: format!("`${{{inner}}}` needs a kind: write `${{env:{inner}}}` or `${{file:{inner}}}`"),
                });
            }
        };
        out.push((start, len, reference));
        from = start + len;
    }
    Ok(out)
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("10s").unwrap().as_millis(), 10_000);
        assert_eq!(Duration::parse("1h30m").unwrap().as_millis(), 5_400_000);
        assert_eq!(Duration::parse("250ms").unwrap().as_millis(), 250);
        assert!(Duration::parse("10").is_err());
        assert!(Duration::parse("10 s").is_err());
        assert!(Duration::parse("1w").is_err());
        assert!(Duration::parse("").is_err());
        assert!(Duration::parse("99999999999999999999999h").is_err());
        assert_eq!(Duration::parse("1h30m").unwrap().to_string(), "1h30m");
        let re = regex_lite_match(DURATION_PATTERN);
        assert!(re("10s") && re("1h30m") && !re("10") && !re("s"));
    }

    fn regex_lite_match(pattern: &str) -> impl Fn(&str) -> bool {
        let schema = serde_json::json!({"type": "string", "pattern": pattern});
        let v = jsonschema::validator_for(&schema).unwrap();
        move |s| v.is_valid(&serde_json::json!(s))
    }

    #[test]
    fn redactor_shows_references_instead_of_values() {
        // SAFETY: no other test reads or writes this variable.
        unsafe { std::env::set_var("SLUICE_TEST_REDACT_DIR", "/srv/hidden/") };
        let r = ConfigString("${env:SLUICE_TEST_REDACT_DIR}/in.csv".into()).redactor();
        assert_eq!(r.apply("`/srv/hidden//in.csv:3`"), "`${env:SLUICE_TEST_REDACT_DIR}/in.csv:3`");
        assert_eq!(
            r.apply("/srv/hidden/x and /srv/hidden"),
            "${env:SLUICE_TEST_REDACT_DIR}x and ${env:SLUICE_TEST_REDACT_DIR}"
        );
        assert_eq!(ConfigString("${env:SLUICE_TEST_REDACT_UNSET}".into()).redactor().apply("a"), "a");
    }

    #[test]
    fn references() {
        let r = find_references("a ${env:KAFKA_BROKERS} b ${file:/run/secret}").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (2, 20, Reference::Env("KAFKA_BROKERS".into())));
        assert_eq!(r[1].2, Reference::File("/run/secret".into()));
        assert!(find_references("${KAFKA}").unwrap_err().message.contains("${env:KAFKA}"));
        assert!(find_references("${vault:x}").is_err());
        assert!(find_references("${env:A").is_err());
        assert!(find_references("${env:1A}").is_err());
        assert!(find_references("plain $ text").unwrap().is_empty());
    }
}
