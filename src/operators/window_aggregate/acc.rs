//! Window accumulators and their byte encoding in state.
//!
//! One [`Accs`] holds the running aggregates of one slice or session. Values that are not
//! numbers (min/max of strings, count distinct) are kept row-encoded (Arrow's order-preserving
//! row format), so they compare as bytes. Count distinct keeps a count per value, not just the
//! set, so that a value can later be retracted.
//!
//! Encoding: the number of accumulators (u32), then per accumulator a tag byte and its
//! fields, little-endian: integers as 8 bytes, floats as their bits, optional values behind a
//! presence byte, byte strings behind a u32 length, the distinct map as a u32 entry count and
//! then `(bytes, u64 count)` in value order.

use std::collections::BTreeMap;

use crate::state::backend::{StateError, StateResult};
use crate::state::codec::{Codec, WindowNs};

/// One running aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum Acc {
    /// `count(*)` or `count(x)`.
    Count(i64),
    /// `count(DISTINCT x)`: row-encoded value → rows seen with it.
    Distinct(BTreeMap<Vec<u8>, u64>),
    /// `sum` of integers.
    SumInt(Option<i64>),
    /// `sum` of floats or decimals.
    SumFloat(Option<f64>),
    /// `min` of integers.
    MinInt(Option<i64>),
    /// `max` of integers.
    MaxInt(Option<i64>),
    /// `min` of floats or decimals.
    MinFloat(Option<f64>),
    /// `max` of floats or decimals.
    MaxFloat(Option<f64>),
    /// `min` of other values, row-encoded.
    MinBytes(Option<Vec<u8>>),
    /// `max` of other values, row-encoded.
    MaxBytes(Option<Vec<u8>>),
    /// `avg`: sum and count.
    Avg(f64, i64),
}

/// The accumulators of one slice or session, one per aggregate of the spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Accs(pub Vec<Acc>);

impl Acc {
    /// Folds `other` (the same kind of accumulator) into `self`.
    pub fn merge(&mut self, other: &Acc) {
        match (self, other) {
            (Acc::Count(x), Acc::Count(y)) => *x = x.wrapping_add(*y),
            (Acc::Distinct(x), Acc::Distinct(y)) => {
                for (v, n) in y {
                    let c = x.entry(v.clone()).or_insert(0);
                    *c = c.saturating_add(*n);
                }
            }
            (Acc::SumInt(x), Acc::SumInt(y)) => *x = opt(*x, *y, i64::wrapping_add),
            (Acc::SumFloat(x), Acc::SumFloat(y)) => *x = opt(*x, *y, |a, b| a + b),
            (Acc::MinInt(x), Acc::MinInt(y)) => *x = opt(*x, *y, i64::min),
            (Acc::MaxInt(x), Acc::MaxInt(y)) => *x = opt(*x, *y, i64::max),
            (Acc::MinFloat(x), Acc::MinFloat(y)) => *x = opt(*x, *y, f64::min),
            (Acc::MaxFloat(x), Acc::MaxFloat(y)) => *x = opt(*x, *y, f64::max),
            (Acc::MinBytes(x), Acc::MinBytes(Some(y))) => min_bytes(x, y),
            (Acc::MaxBytes(x), Acc::MaxBytes(Some(y))) => max_bytes(x, y),
            (Acc::Avg(s, n), Acc::Avg(s2, n2)) => {
                *s += s2;
                *n = n.wrapping_add(*n2);
            }
            _ => {}
        }
    }
}

/// Keeps the smaller of `cur` and `v`.
pub fn min_bytes(cur: &mut Option<Vec<u8>>, v: &[u8]) {
    if cur.as_deref().is_none_or(|c| v < c) {
        *cur = Some(v.to_vec());
    }
}

/// Keeps the larger of `cur` and `v`.
pub fn max_bytes(cur: &mut Option<Vec<u8>>, v: &[u8]) {
    if cur.as_deref().is_none_or(|c| v > c) {
        *cur = Some(v.to_vec());
    }
}

fn opt<T: Copy>(a: Option<T>, b: Option<T>, f: impl Fn(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

impl Accs {
    /// Folds `other` into `self`, accumulator by accumulator.
    pub fn merge(&mut self, other: &Accs) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            a.merge(b);
        }
    }
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_opt_i64(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(v) => {
            out.push(1);
            put_i64(out, v);
        }
        None => out.push(0),
    }
}

fn put_opt_f64(out: &mut Vec<u8>, v: Option<f64>) {
    put_opt_i64(out, v.map(|v| v.to_bits() as i64));
}

fn put_bytes(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(v);
}

fn put_opt_bytes(out: &mut Vec<u8>, v: &Option<Vec<u8>>) {
    match v {
        Some(v) => {
            out.push(1);
            put_bytes(out, v);
        }
        None => out.push(0),
    }
}

struct Reader<'a>(&'a [u8]);

fn malformed() -> StateError {
    StateError::new("a stored window accumulator is malformed")
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> StateResult<&'a [u8]> {
        if self.0.len() < n {
            return Err(malformed());
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn u8(&mut self) -> StateResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> StateResult<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| malformed())?))
    }
    fn i64(&mut self) -> StateResult<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().map_err(|_| malformed())?))
    }
    fn opt_i64(&mut self) -> StateResult<Option<i64>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.i64()?)),
            _ => Err(malformed()),
        }
    }
    fn opt_f64(&mut self) -> StateResult<Option<f64>> {
        Ok(self.opt_i64()?.map(|b| f64::from_bits(b as u64)))
    }
    fn bytes(&mut self) -> StateResult<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn opt_bytes(&mut self) -> StateResult<Option<Vec<u8>>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.bytes()?)),
            _ => Err(malformed()),
        }
    }
}

impl Codec for Accs {
    const NAME: &'static str = "accumulators";

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        for a in &self.0 {
            match a {
                Acc::Count(n) => {
                    out.push(0);
                    put_i64(out, *n);
                }
                Acc::Distinct(m) => {
                    out.push(1);
                    out.extend_from_slice(&(m.len() as u32).to_le_bytes());
                    for (v, n) in m {
                        put_bytes(out, v);
                        out.extend_from_slice(&n.to_le_bytes());
                    }
                }
                Acc::SumInt(v) => {
                    out.push(2);
                    put_opt_i64(out, *v);
                }
                Acc::SumFloat(v) => {
                    out.push(3);
                    put_opt_f64(out, *v);
                }
                Acc::MinInt(v) => {
                    out.push(4);
                    put_opt_i64(out, *v);
                }
                Acc::MaxInt(v) => {
                    out.push(5);
                    put_opt_i64(out, *v);
                }
                Acc::MinFloat(v) => {
                    out.push(6);
                    put_opt_f64(out, *v);
                }
                Acc::MaxFloat(v) => {
                    out.push(7);
                    put_opt_f64(out, *v);
                }
                Acc::MinBytes(v) => {
                    out.push(8);
                    put_opt_bytes(out, v);
                }
                Acc::MaxBytes(v) => {
                    out.push(9);
                    put_opt_bytes(out, v);
                }
                Acc::Avg(s, n) => {
                    out.push(10);
                    put_i64(out, s.to_bits() as i64);
                    put_i64(out, *n);
                }
            }
        }
    }

    fn decode(b: &[u8]) -> StateResult<Self> {
        let mut r = Reader(b);
        let n = r.u32()? as usize;
        let mut accs = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            accs.push(match r.u8()? {
                0 => Acc::Count(r.i64()?),
                1 => {
                    let entries = r.u32()?;
                    let mut m = BTreeMap::new();
                    for _ in 0..entries {
                        let v = r.bytes()?;
                        m.insert(v, r.i64()? as u64);
                    }
                    Acc::Distinct(m)
                }
                2 => Acc::SumInt(r.opt_i64()?),
                3 => Acc::SumFloat(r.opt_f64()?),
                4 => Acc::MinInt(r.opt_i64()?),
                5 => Acc::MaxInt(r.opt_i64()?),
                6 => Acc::MinFloat(r.opt_f64()?),
                7 => Acc::MaxFloat(r.opt_f64()?),
                8 => Acc::MinBytes(r.opt_bytes()?),
                9 => Acc::MaxBytes(r.opt_bytes()?),
                10 => Acc::Avg(f64::from_bits(r.i64()? as u64), r.i64()?),
                _ => return Err(malformed()),
            });
        }
        if !r.0.is_empty() {
            return Err(malformed());
        }
        Ok(Accs(accs))
    }
}

/// The sessions of one key, by start, each with its accumulators: one stored value per key, so
/// a key's sessions are one read and one write, not a scan.
///
/// Encoding: the number of sessions (u32), then per session its window (16 bytes, as
/// [`WindowNs`]), the length of its accumulators (u32) and their encoding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionList(pub Vec<(WindowNs, Accs)>);

impl Codec for SessionList {
    const NAME: &'static str = "sessions (window, accumulators)";

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        let mut accs = Vec::new();
        for (w, a) in &self.0 {
            w.encode(out);
            accs.clear();
            a.encode(&mut accs);
            put_bytes(out, &accs);
        }
    }

    fn decode(b: &[u8]) -> StateResult<Self> {
        let mut r = Reader(b);
        let n = r.u32()? as usize;
        let mut sessions = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let w = WindowNs::decode(r.take(16)?)?;
            let len = r.u32()? as usize;
            sessions.push((w, Accs::decode(r.take(len)?)?));
        }
        if !r.0.is_empty() {
            return Err(malformed());
        }
        Ok(SessionList(sessions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Accs {
        Accs(vec![
            Acc::Count(-3),
            Acc::Distinct(BTreeMap::from([(b"a".to_vec(), 2), (b"bc".to_vec(), 1)])),
            Acc::SumInt(None),
            Acc::SumFloat(Some(1.5)),
            Acc::MinInt(Some(i64::MIN)),
            Acc::MaxInt(Some(i64::MAX)),
            Acc::MinFloat(Some(-0.0)),
            Acc::MaxFloat(None),
            Acc::MinBytes(Some(vec![])),
            Acc::MaxBytes(Some(vec![1, 2, 3])),
            Acc::Avg(2.25, 7),
        ])
    }

    #[test]
    fn session_lists_round_trip_and_refuse_damage() {
        let list = SessionList(vec![
            (WindowNs { start: -5, end: 10 }, sample()),
            (WindowNs { start: 20, end: 30 }, Accs(vec![Acc::Count(1)])),
        ]);
        let bytes = list.to_bytes();
        assert_eq!(SessionList::decode(&bytes).unwrap(), list);
        for cut in 0..bytes.len() {
            assert!(SessionList::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(SessionList::decode(&SessionList::default().to_bytes()).unwrap(), SessionList::default());
    }

    #[test]
    fn accumulators_round_trip_through_bytes() {
        let a = sample();
        assert_eq!(Accs::decode(&a.to_bytes()).unwrap(), a);
        assert_eq!(Accs::decode(&Accs(vec![]).to_bytes()).unwrap(), Accs(vec![]));
    }

    #[test]
    fn truncated_or_padded_accumulators_are_errors() {
        let bytes = sample().to_bytes();
        for cut in 0..bytes.len() {
            assert!(Accs::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Accs::decode(&long).is_err());
        let mut bad_tag = bytes;
        bad_tag[4] = 99;
        assert!(Accs::decode(&bad_tag).is_err());
    }

    #[test]
    fn distinct_merges_counts_per_value() {
        let mut a = Acc::Distinct(BTreeMap::from([(b"x".to_vec(), 2)]));
        a.merge(&Acc::Distinct(BTreeMap::from([(b"x".to_vec(), 3), (b"y".to_vec(), 1)])));
        assert_eq!(a, Acc::Distinct(BTreeMap::from([(b"x".to_vec(), 5), (b"y".to_vec(), 1)])));
        let mut m = Acc::MinBytes(None);
        m.merge(&Acc::MinBytes(Some(b"b".to_vec())));
        m.merge(&Acc::MinBytes(Some(b"a".to_vec())));
        m.merge(&Acc::MinBytes(None));
        assert_eq!(m, Acc::MinBytes(Some(b"a".to_vec())));
    }
}
