//! Codecs between typed state values and bytes. Namespace and map-key codecs preserve order
//! (byte order equals value order), so range scans visit windows and times in order.

use super::backend::{StateError, StateResult};

/// `v` as 8 bytes whose byte order is the numeric order (sign bit flipped, big-endian).
pub fn ordered_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

/// The inverse of [`ordered_i64`]; `None` unless `b` is 8 bytes.
pub fn from_ordered_i64(b: &[u8]) -> Option<i64> {
    let b: [u8; 8] = b.try_into().ok()?;
    Some((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
}

/// Encodes and decodes one type of state value or key.
pub trait Codec: Sized {
    /// A short name of the encoding, shown by `sluice plan` and kept in checkpoints.
    const NAME: &'static str;
    /// Appends the encoding of `self`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes a whole byte string.
    fn decode(b: &[u8]) -> StateResult<Self>;

    /// The encoding as a new vector.
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

fn short(what: &str) -> StateError {
    StateError::new(format!("a stored {what} is malformed"))
}

impl Codec for i64 {
    const NAME: &'static str = "i64 (ordered)";
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&ordered_i64(*self));
    }
    fn decode(b: &[u8]) -> StateResult<Self> {
        from_ordered_i64(b).ok_or_else(|| short("i64"))
    }
}

impl Codec for u64 {
    const NAME: &'static str = "u64 (big-endian)";
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn decode(b: &[u8]) -> StateResult<Self> {
        Ok(u64::from_be_bytes(b.try_into().map_err(|_| short("u64"))?))
    }
}

impl Codec for f64 {
    const NAME: &'static str = "f64";
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bits().to_be_bytes());
    }
    fn decode(b: &[u8]) -> StateResult<Self> {
        Ok(f64::from_bits(u64::from_be_bytes(b.try_into().map_err(|_| short("f64"))?)))
    }
}

impl Codec for Vec<u8> {
    const NAME: &'static str = "bytes";
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(b: &[u8]) -> StateResult<Self> {
        Ok(b.to_vec())
    }
}

impl Codec for String {
    const NAME: &'static str = "utf8";
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(b: &[u8]) -> StateResult<Self> {
        String::from_utf8(b.to_vec()).map_err(|_| short("string"))
    }
}

/// A window `[start, end)` as a namespace: 16 bytes, ordered by start, then end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowNs {
    /// Inclusive start, epoch milliseconds.
    pub start: i64,
    /// Exclusive end, epoch milliseconds.
    pub end: i64,
}

impl Codec for WindowNs {
    const NAME: &'static str = "window (start, end: ordered i64)";
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&ordered_i64(self.start));
        out.extend_from_slice(&ordered_i64(self.end));
    }
    fn decode(b: &[u8]) -> StateResult<Self> {
        if b.len() != 16 {
            return Err(short("window"));
        }
        let start = from_ordered_i64(&b[..8]).ok_or_else(|| short("window"))?;
        let end = from_ordered_i64(&b[8..]).ok_or_else(|| short("window"))?;
        Ok(WindowNs { start, end })
    }
}

/// No namespace.
impl Codec for () {
    const NAME: &'static str = "none";
    fn encode(&self, _: &mut Vec<u8>) {}
    fn decode(b: &[u8]) -> StateResult<Self> {
        if b.is_empty() { Ok(()) } else { Err(short("empty namespace")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_codecs_sort_like_their_values() {
        let mut values = vec![i64::MIN, -5, -1, 0, 1, 7, 1 << 40, i64::MAX];
        let mut bytes: Vec<[u8; 8]> = values.iter().map(|v| ordered_i64(*v)).collect();
        bytes.sort();
        values.sort();
        let back: Vec<i64> = bytes.iter().map(|b| from_ordered_i64(b).unwrap()).collect();
        assert_eq!(back, values);

        let mut windows =
            vec![WindowNs { start: 10, end: 20 }, WindowNs { start: -10, end: 0 }, WindowNs { start: 10, end: 15 }];
        let mut enc: Vec<Vec<u8>> = windows.iter().map(Codec::to_bytes).collect();
        enc.sort();
        windows.sort();
        let back: Vec<WindowNs> = enc.iter().map(|b| WindowNs::decode(b).unwrap()).collect();
        assert_eq!(back, windows);
    }

    #[test]
    fn malformed_bytes_are_errors() {
        assert!(i64::decode(&[1, 2, 3]).is_err());
        assert!(WindowNs::decode(&[0; 15]).is_err());
        assert!(String::decode(&[0xff]).is_err());
        assert!(<()>::decode(&[0]).is_err());
    }
}
