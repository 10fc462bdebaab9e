//! Decoding JSON lines into text columns in one pass: each line must hold exactly one JSON
//! object; the values of the wanted keys become text (strings unescaped, numbers and booleans
//! as written, `null` and absent keys as null) for [`super::values::conform`] to convert to
//! the declared types, and every other value is checked and skipped. A line that is not one
//! well-formed object is one bad record, with why and at which byte; the other lines of the
//! chunk decode as usual.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::error::ArrowError;

use super::values::RowErrors;

/// Where the text of one wanted value is, while its line is decoded.
#[derive(Clone, Copy)]
enum Slot {
    Null,
    /// Bytes of the line.
    Line(u32, u32),
    /// Bytes of the line's unescape buffer.
    Scratch(u32, u32),
}

/// A JSON-lines decoder for a fixed set of keys, reused across chunks.
pub struct JsonLines {
    names: Vec<Box<[u8]>>,
    /// Names to columns, for keys that are not where the previous line had them.
    index: HashMap<Box<[u8]>, usize>,
    /// Per key position on the previous line: its key and the column it is, if wanted (lines
    /// of one producer mostly list the same keys in the same order).
    hints: Vec<(Box<[u8]>, Option<usize>)>,
    slots: Vec<Slot>,
    scratch: Vec<u8>,
    key: Vec<u8>,
    stack: Vec<u8>,
    values: Vec<Vec<u8>>,
    offsets: Vec<Vec<i32>>,
    /// Per column, whether each row is not null; empty while the column has no null.
    valid: Vec<Vec<bool>>,
    /// Value bytes per column in the last chunk, to size the next.
    last_bytes: Vec<usize>,
}

type Parse<T> = Result<T, String>;

/// Key positions per line whose key is remembered for the next line.
const MAX_HINTS: usize = 1024;

fn shown(b: u8) -> String {
    match b {
        b' '..=b'~' => format!("`{}`", b as char),
        _ => format!("byte 0x{b:02x}"),
    }
}

fn unexpected(line: &[u8], pos: usize, expected: &str) -> String {
    match line.get(pos) {
        Some(&b) => format!("expected {expected} at byte {}, found {}", pos + 1, shown(b)),
        None => "the line ends inside its JSON value".into(),
    }
}

fn skip_ws(line: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\r' | b'\n') = line.get(pos) {
        pos += 1;
    }
    pos
}

fn hex4(line: &[u8], pos: usize) -> Parse<u32> {
    let digits = line.get(pos..pos + 4).ok_or_else(|| unexpected(line, line.len(), ""))?;
    digits.iter().enumerate().try_fold(0, |v, (i, &d)| match (d as char).to_digit(16) {
        Some(x) => Ok(v << 4 | x),
        None => Err(unexpected(line, pos + i, "a hex digit")),
    })
}

/// The escape sequence at `pos` (just after its backslash): the character and where it ends.
fn escape(line: &[u8], pos: usize) -> Parse<(char, usize)> {
    let c = match line.get(pos) {
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => {
            let high = hex4(line, pos + 1)?;
            if let Some(c) = char::from_u32(high) {
                return Ok((c, pos + 5));
            }
            // A surrogate: valid only as a high one followed by an escaped low one.
            let low = match line.get(pos + 5..pos + 7) {
                Some(b"\\u") if (0xD800..0xDC00).contains(&high) => hex4(line, pos + 7)?,
                _ => return Err(format!("unpaired UTF-16 surrogate \\u{high:04X} at byte {pos}")),
            };
            if !(0xDC00..0xE000).contains(&low) {
                return Err(format!("unpaired UTF-16 surrogate \\u{high:04X} at byte {pos}"));
            }
            let c = char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)).expect("a surrogate pair");
            return Ok((c, pos + 11));
        }
        _ => return Err(unexpected(line, pos, "an escape sequence")),
    };
    Ok((c, pos + 1))
}

/// The string starting after the quote at `pos - 1`: where its closing quote is, and whether
/// it holds escapes (all checked).
fn string_end(line: &[u8], mut pos: usize) -> Parse<(usize, bool)> {
    let mut escaped = false;
    loop {
        match memchr::memchr2(b'"', b'\\', &line[pos..]) {
            Some(i) if line[pos + i] == b'"' => return Ok((pos + i, escaped)),
            Some(i) => {
                escaped = true;
                pos = escape(line, pos + i + 1)?.1;
            }
            None => return Err(unexpected(line, line.len(), "")),
        }
    }
}

/// Appends string bytes `range` of `line`, escapes resolved, to `out`.
fn unescape(line: &[u8], range: Range<usize>, out: &mut Vec<u8>) {
    let mut pos = range.start;
    while let Some(i) = memchr::memchr(b'\\', &line[pos..range.end]) {
        out.extend_from_slice(&line[pos..pos + i]);
        let (c, end) = escape(line, pos + i + 1).expect("checked by string_end");
        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        pos = end;
    }
    out.extend_from_slice(&line[pos..range.end]);
}

/// The end of the JSON number starting at `pos`, checked against the JSON grammar.
fn number_end(line: &[u8], start: usize) -> Parse<usize> {
    let digits = |mut p: usize| {
        while line.get(p).is_some_and(u8::is_ascii_digit) {
            p += 1;
        }
        p
    };
    let mut pos = start + usize::from(line[start] == b'-');
    let int = digits(pos);
    let bad = |at: usize| {
        let end = (at..line.len()).find(|&p| !matches!(line[p], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'));
        let text = String::from_utf8_lossy(&line[start..end.unwrap_or(line.len())]).into_owned();
        format!("`{text}` at byte {} is not a JSON number", start + 1)
    };
    if int == pos || (line[pos] == b'0' && int > pos + 1) {
        return Err(bad(pos));
    }
    pos = int;
    if line.get(pos) == Some(&b'.') {
        let frac = digits(pos + 1);
        if frac == pos + 1 {
            return Err(bad(pos));
        }
        pos = frac;
    }
    if let Some(b'e' | b'E') = line.get(pos) {
        pos += 1;
        if let Some(b'+' | b'-') = line.get(pos) {
            pos += 1;
        }
        let exp = digits(pos);
        if exp == pos {
            return Err(bad(pos));
        }
        pos = exp;
    }
    if let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = line.get(pos) {
        return Err(bad(pos));
    }
    Ok(pos)
}

/// The end of `literal` (`true`, `false`, `null`) expected at `pos`.
fn literal_end(line: &[u8], pos: usize, literal: &[u8]) -> Parse<usize> {
    match line.get(pos..pos + literal.len()) {
        Some(l) if l == literal => Ok(pos + literal.len()),
        _ => {
            let bad = (0..literal.len()).find(|&i| line.get(pos + i) != Some(&literal[i])).unwrap_or(0);
            Err(unexpected(line, pos + bad, &format!("`{}`", String::from_utf8_lossy(literal))))
        }
    }
}

impl JsonLines {
    /// A decoder of the keys `names`, each into a text column of that position.
    pub fn new(names: &[&str]) -> Self {
        let names: Vec<Box<[u8]>> = names.iter().map(|n| n.as_bytes().into()).collect();
        let n = names.len();
        JsonLines {
            index: names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect(),
            names,
            hints: Vec::new(),
            slots: vec![Slot::Null; n],
            scratch: Vec::new(),
            key: Vec::new(),
            stack: Vec::new(),
            values: vec![Vec::new(); n],
            offsets: vec![Vec::new(); n],
            valid: vec![Vec::new(); n],
            last_bytes: vec![0; n],
        }
    }

    /// Decodes `lines` (each a record's bytes) into one text column per key; a line that is
    /// not one JSON object is left out and reported by its position in `lines`, with why.
    pub fn decode(
        &mut self,
        buf: &[u8],
        lines: impl ExactSizeIterator<Item = Range<usize>>,
    ) -> Result<(Vec<ArrayRef>, RowErrors), ArrowError> {
        let rows = lines.len();
        // Checked once for the whole buffer, and line by line only if that fails.
        let utf8 = std::str::from_utf8(buf).is_ok();
        for c in 0..self.names.len() {
            self.values[c] = Vec::with_capacity(self.last_bytes[c] + self.last_bytes[c] / 8);
            self.offsets[c].clear();
            self.offsets[c].reserve(rows + 1);
            self.offsets[c].push(0);
            self.valid[c].clear();
        }
        let mut bad = Vec::new();
        for (i, range) in lines.enumerate() {
            let line = &buf[range];
            if !utf8 && let Err(e) = std::str::from_utf8(line) {
                bad.push((i, format!("the line is not UTF-8 (byte {})", e.valid_up_to() + 1)));
                continue;
            }
            match self.line(line) {
                Ok(()) => self.append(line),
                Err(why) => bad.push((i, why)),
            }
        }
        let columns = (0..self.names.len())
            .map(|c| {
                let values = std::mem::take(&mut self.values[c]);
                self.last_bytes[c] = values.len();
                let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::take(&mut self.offsets[c])));
                let valid = std::mem::take(&mut self.valid[c]);
                let nulls = (!valid.is_empty()).then(|| NullBuffer::from(valid));
                // Checked again, though UTF-8 by construction: slices between quotes of UTF-8
                // lines, escapes written as characters, and ASCII numbers and literals.
                Ok(Arc::new(StringArray::try_new(offsets, Buffer::from_vec(values), nulls)?) as ArrayRef)
            })
            .collect::<Result<_, ArrowError>>()?;
        Ok((columns, bad))
    }

    fn append(&mut self, line: &[u8]) {
        for (c, slot) in self.slots.iter().enumerate() {
            let bytes = match *slot {
                Slot::Null => None,
                Slot::Line(a, b) => Some(&line[a as usize..b as usize]),
                Slot::Scratch(a, b) => Some(&self.scratch[a as usize..b as usize]),
            };
            match bytes {
                Some(bytes) => {
                    self.values[c].extend_from_slice(bytes);
                    if !self.valid[c].is_empty() {
                        self.valid[c].push(true);
                    }
                }
                None => {
                    // Validity is kept from a column's first null on.
                    self.valid[c].resize(self.offsets[c].len() - 1, true);
                    self.valid[c].push(false);
                }
            }
            self.offsets[c].push(self.values[c].len() as i32);
        }
    }

    /// Decodes one line into the slots.
    fn line(&mut self, line: &[u8]) -> Parse<()> {
        self.slots.fill(Slot::Null);
        self.scratch.clear();
        let mut pos = skip_ws(line, 0);
        if pos == line.len() {
            return Err("expected a JSON object, found an empty line".into());
        }
        if line.get(pos) != Some(&b'{') {
            return Err(unexpected(line, pos, "a JSON object"));
        }
        pos = skip_ws(line, pos + 1);
        let mut k = 0;
        if line.get(pos) != Some(&b'}') {
            loop {
                if line.get(pos) != Some(&b'"') {
                    return Err(unexpected(line, pos, "a key"));
                }
                let (end, escaped) = string_end(line, pos + 1)?;
                let column = self.column(k, line, pos + 1..end, escaped);
                pos = skip_ws(line, end + 1);
                if line.get(pos) != Some(&b':') {
                    return Err(unexpected(line, pos, "`:`"));
                }
                pos = skip_ws(line, pos + 1);
                pos = match column {
                    Some(c) => self.value(line, pos, c)?,
                    None => self.skip_value(line, pos)?,
                };
                pos = skip_ws(line, pos);
                k += 1;
                match line.get(pos) {
                    Some(b',') => pos = skip_ws(line, pos + 1),
                    Some(b'}') => break,
                    _ => return Err(unexpected(line, pos, "`,` or `}`")),
                }
            }
        }
        pos = skip_ws(line, pos + 1);
        if pos < line.len() {
            // More after the object: count the values, if that is what they are.
            let mut found = 1;
            while pos < line.len() {
                pos = skip_ws(
                    line,
                    self.skip_value(line, pos).map_err(|_| unexpected(line, pos, "the end of the line"))?,
                );
                found += 1;
            }
            return Err(format!("expected one record on the line, found {found}"));
        }
        Ok(())
    }

    /// The column of the key in `range` of `line`, the `k`th of its line.
    fn column(&mut self, k: usize, line: &[u8], range: Range<usize>, escaped: bool) -> Option<usize> {
        let key = match escaped {
            false => &line[range],
            true => {
                self.key.clear();
                unescape(line, range, &mut self.key);
                &self.key
            }
        };
        if let Some((hint, c)) = self.hints.get(k)
            && **hint == *key
        {
            return *c;
        }
        let c = self.index.get(key).copied();
        // Hints for the first keys only: a hostile line of a million keys is not remembered.
        if k < MAX_HINTS {
            if self.hints.len() <= k {
                self.hints.resize(k + 1, (Box::default(), None));
            }
            self.hints[k] = (key.into(), c);
        }
        c
    }

    /// Decodes the value at `pos` into column `c`'s slot; returns where it ends.
    fn value(&mut self, line: &[u8], pos: usize, c: usize) -> Parse<usize> {
        let (slot, end) = match line.get(pos) {
            Some(b'"') => {
                let (end, escaped) = string_end(line, pos + 1)?;
                let slot = match escaped {
                    false => Slot::Line(pos as u32 + 1, end as u32),
                    true => {
                        let from = self.scratch.len();
                        unescape(line, pos + 1..end, &mut self.scratch);
                        Slot::Scratch(from as u32, self.scratch.len() as u32)
                    }
                };
                (slot, end + 1)
            }
            Some(b'-' | b'0'..=b'9') => {
                let end = number_end(line, pos)?;
                (Slot::Line(pos as u32, end as u32), end)
            }
            Some(b't') => (Slot::Line(pos as u32, pos as u32 + 4), literal_end(line, pos, b"true")?),
            Some(b'f') => (Slot::Line(pos as u32, pos as u32 + 5), literal_end(line, pos, b"false")?),
            Some(b'n') => (Slot::Null, literal_end(line, pos, b"null")?),
            Some(b @ (b'{' | b'[')) => {
                let what = if *b == b'{' { "an object" } else { "a list" };
                let name = String::from_utf8_lossy(&self.names[c]);
                return Err(format!(
                    "column `{name}`: expected a string, number or boolean at byte {}, found {what}",
                    pos + 1
                ));
            }
            _ => return Err(unexpected(line, pos, "a value")),
        };
        self.slots[c] = slot;
        Ok(end)
    }

    /// Checks the value at `pos`, of any nesting, and returns where it ends.
    fn skip_value(&mut self, line: &[u8], mut pos: usize) -> Parse<usize> {
        self.stack.clear();
        loop {
            // A value is expected at `pos`.
            pos = skip_ws(line, pos);
            match line.get(pos) {
                Some(b'"') => pos = string_end(line, pos + 1)?.0 + 1,
                Some(b'-' | b'0'..=b'9') => pos = number_end(line, pos)?,
                Some(b't') => pos = literal_end(line, pos, b"true")?,
                Some(b'f') => pos = literal_end(line, pos, b"false")?,
                Some(b'n') => pos = literal_end(line, pos, b"null")?,
                Some(b'[') => {
                    pos = skip_ws(line, pos + 1);
                    if line.get(pos) != Some(&b']') {
                        self.stack.push(b'[');
                        continue;
                    }
                    pos += 1;
                }
                Some(b'{') => {
                    pos = skip_ws(line, pos + 1);
                    if line.get(pos) != Some(&b'}') {
                        self.stack.push(b'{');
                        pos = self.member_key(line, pos)?;
                        continue;
                    }
                    pos += 1;
                }
                _ => return Err(unexpected(line, pos, "a value")),
            }
            // After a value: close what ends here, up to the next value.
            loop {
                let Some(&open) = self.stack.last() else { return Ok(pos) };
                pos = skip_ws(line, pos);
                let close = if open == b'{' { b'}' } else { b']' };
                match line.get(pos) {
                    Some(b',') if open == b'{' => {
                        pos = self.member_key(line, skip_ws(line, pos + 1))?;
                        break;
                    }
                    Some(b',') => {
                        pos += 1;
                        break;
                    }
                    Some(&b) if b == close => {
                        self.stack.pop();
                        pos += 1;
                    }
                    _ => return Err(unexpected(line, pos, if open == b'{' { "`,` or `}`" } else { "`,` or `]`" })),
                }
            }
        }
    }

    /// Checks an object member's key and colon at `pos`; returns where its value starts.
    fn member_key(&self, line: &[u8], pos: usize) -> Parse<usize> {
        if line.get(pos) != Some(&b'"') {
            return Err(unexpected(line, pos, "a key"));
        }
        let pos = skip_ws(line, string_end(line, pos + 1)?.0 + 1);
        match line.get(pos) {
            Some(b':') => Ok(pos + 1),
            _ => Err(unexpected(line, pos, "`:`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use proptest::prelude::*;

    type Texts = Vec<Vec<Option<String>>>;

    fn decode(names: &[&str], lines: &[&str]) -> (Texts, RowErrors) {
        let mut d = JsonLines::new(names);
        let buf = lines.concat();
        let mut at = 0;
        let ranges = lines.iter().map(|l| {
            at += l.len();
            at - l.len()..at
        });
        let (columns, bad) = d.decode(buf.as_bytes(), ranges.collect::<Vec<_>>().into_iter()).unwrap();
        let columns =
            columns.iter().map(|c| c.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect()).collect();
        (columns, bad)
    }

    fn text(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn values_become_text() {
        let (cols, bad) = decode(
            &["a", "b", "c"],
            &[
                "{\"a\": 1, \"b\": \"x\", \"c\": true}\n",
                " {\"c\":null,\"zz\":{\"q\":[1,2,{\"r\":\"s\"}],\"t\":[]},\"a\":-1.5e+3}\r\n",
                "{\"b\":\"esc \\\"q\\\" \\\\ \\/ \\u00e9 \\ud83d\\ude00 \\n\", \"a\": 0, \"a\": 7}",
                "{}",
                "{\"b\": \"last\", \"c\": false}",
            ],
        );
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(cols[0], vec![text("1"), text("-1.5e+3"), text("7"), None, None]);
        assert_eq!(cols[1], vec![text("x"), None, text("esc \"q\" \\ / é 😀 \n"), None, text("last")]);
        assert_eq!(cols[2], vec![text("true"), None, None, None, text("false")]);
    }

    #[test]
    fn a_bad_line_is_reported_and_the_others_decode() {
        let lines = [
            "{\"a\": 1}",
            "{\"a\": 2}{\"a\": 3}",
            "{\"a\":",
            "3}",
            "{\"a\": 01}",
            "{\"a\": 1.}",
            "{\"a\": [1]}",
            "{\"a\": 1 \"b\": 2}",
            "{\"b\": [1 2]}",
            "{\"b\": \"\\ud800x\"}",
            "{\"b\": \"\\q\"}",
            "{\"a\": tru}",
            "{\"a\": 4} x",
            "{\"a\": 5}",
        ];
        let (cols, bad) = decode(&["a"], &lines);
        assert_eq!(cols[0], vec![text("1"), text("5")]);
        let bad: Vec<usize> = bad.iter().map(|b| b.0).collect();
        assert_eq!(bad, (1..13).collect::<Vec<_>>());
        let (_, bad) = decode(&["a"], &lines[1..5]);
        assert_eq!(bad[0].1, "expected one record on the line, found 2");
        assert_eq!(bad[1].1, "the line ends inside its JSON value");
        assert_eq!(bad[2].1, "expected a JSON object at byte 1, found `3`");
        assert_eq!(bad[3].1, "`01` at byte 7 is not a JSON number");
        let (_, bad) = decode(&["a"], &["{\"a\": [1]}", "{\"a\": 1} x"]);
        assert_eq!(bad[0].1, "column `a`: expected a string, number or boolean at byte 7, found a list");
        assert_eq!(bad[1].1, "expected the end of the line at byte 10, found `x`");
    }

    #[test]
    fn agrees_with_serde_json_on_what_is_an_object() {
        let lines = [
            "{\"k\": -0}",
            "{\"k\": -}",
            "{\"k\": 1e5, \"l\": 1E-5}",
            "{\"k\": .5}",
            "{\"k\": +1}",
            "{\"k\": [[[[]]], {}, {\"x\": [null]}]}",
            "{\"k\": [,]}",
            "{\"k\": [1,]}",
            "{\"k\": {\"a\" 1}}",
            "{\"k\": {,}}",
            "{,}",
            "{\"k\": 1,}",
            "[1]",
            "null",
            "\"s\"",
            "{\"k\": \"\\u12\"}",
            "{\"k\": \"\\uDC00\"}",
            "{\"k\": nul}",
            "{\"k\": 2}}",
        ];
        for line in lines {
            let serde = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line).is_ok();
            // `k` is not wanted, so its value is only checked.
            let (_, bad) = decode(&["other"], &[line]);
            assert_eq!(bad.is_empty(), serde, "{line}: {bad:?}");
        }
    }

    fn json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just("a".to_string()),
                            Just("b".to_string()),
                            Just("zz".to_string()),
                            any::<String>()
                        ],
                        inner
                    ),
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn object() -> impl Strategy<Value = serde_json::Map<String, serde_json::Value>> {
        proptest::collection::vec(
            (
                prop_oneof![Just("a".to_string()), Just("b".to_string()), Just("é\"\\".to_string()), any::<String>()],
                json(),
            ),
            0..8,
        )
        .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        /// Any object serde_json writes decodes to the text of its wanted values, or is refused
        /// only for a list or object where text is wanted.
        #[test]
        fn objects_decode_to_the_text_of_their_values(obj in object()) {
            let line = serde_json::to_string(&obj).unwrap();
            let names = ["a", "b", "é\"\\"];
            let (cols, bad) = decode(&names, &[&line]);
            let nested = names.iter().any(|n| matches!(obj.get(*n), Some(serde_json::Value::Array(_) | serde_json::Value::Object(_))));
            prop_assert_eq!(bad.len(), usize::from(nested), "{}: {:?}", line, bad);
            if !nested {
                for (c, n) in names.iter().enumerate() {
                    let want = match obj.get(*n) {
                        None | Some(serde_json::Value::Null) => None,
                        Some(serde_json::Value::String(s)) => Some(s.clone()),
                        Some(v) => Some(v.to_string()),
                    };
                    prop_assert_eq!(&cols[c][0], &want, "{}", line);
                }
            }
        }

        /// A line changed at one byte is accepted exactly when serde_json accepts it as an
        /// object, and never panics.
        #[test]
        fn changed_lines_are_accepted_as_serde_json_accepts_them(
            obj in object(),
            at in any::<proptest::sample::Index>(),
            change in prop_oneof![
                Just(None),
                proptest::sample::select(b"{}[]\"\\,:0-.tn x\xff".to_vec()).prop_map(Some),
            ],
        ) {
            let mut line = serde_json::to_string(&obj).unwrap().into_bytes();
            let i = at.index(line.len());
            match change {
                None => { line.remove(i); }
                Some(b) => line[i] = b,
            }
            let serde = serde_json::from_slice::<serde_json::Value>(&line).is_ok_and(|v| v.is_object());
            let mut d = JsonLines::new(&["not wanted"]);
            let (_, bad) = d.decode(&line, std::iter::once(0..line.len())).unwrap();
            prop_assert_eq!(bad.is_empty(), serde, "{}: {:?}", String::from_utf8_lossy(&line), bad);
        }
    }

    #[test]
    fn hostile_lines_are_bad_records() {
        let deep = format!("{{\"x\": {}{}}}", "[".repeat(200_000), "]".repeat(200_000));
        let unclosed = format!("{{\"x\": {}", "[".repeat(200_000));
        let mut invalid = b"{\"a\": \"".to_vec();
        invalid.extend_from_slice(&[0xff, b'"', b'}']);
        let mut d = JsonLines::new(&["a"]);
        let buf = [deep.as_bytes(), unclosed.as_bytes(), &invalid].concat();
        let (a, b) = (deep.len(), deep.len() + unclosed.len());
        let (cols, bad) = d.decode(&buf, [0..a, a..b, b..buf.len()].into_iter()).unwrap();
        assert_eq!(cols[0].len(), 1);
        assert!(cols[0].is_null(0));
        assert_eq!(bad.iter().map(|b| b.0).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(bad[1].1, "the line is not UTF-8 (byte 8)");
    }
}
